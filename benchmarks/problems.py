"""The problems the benchmarks time: the supernova example of ``skyfit.examples.supernova`` (the
numbers in RESULTS.md are about it, so the benchmarks build it from there, not from a copy)."""

from __future__ import annotations

import torch

from skyfit.examples.supernova import (
    HOST_TRUTH,
    SN_TRUTH,
    linked_epoch_stack,
    simulate_supernova,
    supernova_light_curve_model,
)

__all__ = ["HOST_TRUTH", "SN_TRUTH", "linked_epoch_stack", "simulate_supernova",
           "supernova_light_curve_model", "supernova_problem"]


def supernova_problem(seed: int = 0):
    """``(posterior, truth_vector)`` of the light-curve image model on seeded mock data."""
    data = simulate_supernova(seed)
    post, _ = supernova_light_curve_model(data)
    truth = torch.tensor([data.truth[n] for n in post.names], dtype=post.dtype)
    return post, truth
