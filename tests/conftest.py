"""Shared test settings: one torch thread per test worker (xdist runs two workers on two cores;
more threads than cores makes small tensor programs many times slower)."""

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

torch.set_num_threads(1)
