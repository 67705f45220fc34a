"""The checkpoint of a batched HMC/NUTS run: the loop state, the adaptation state, the draws so
far and the run's settings as plain tensors (``checkpoint.py`` adds the checksum and the data
fingerprint). ``load_state`` refuses a file of another kind, other settings or other data."""

from __future__ import annotations

import torch

from ..errors import DataMismatchError
from .checkpoint import load_checkpoint
from .mcmc import HMCState
from .mcmc.loop import Counters, LoopState, Trace, as_plain, from_plain

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "state_dict", "load_state"]

CHECKPOINT_FORMAT = "skyfit-hmc-checkpoint"
CHECKPOINT_VERSION = 2


def state_dict(run_, adaptation, state: LoopState, trace: Trace, elapsed: float) -> dict:
    n = max(0, state.iteration - run_.n_warmup)
    vg = run_.kernel.value_and_grad
    return dict(
        format=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION, config=run_.config(),
        iteration=state.iteration, stage=adaptation.stage(state.iteration),
        rng_state=state.rng_state,  # as at the end of the last finished iteration
        kernel_state=as_plain(state.kernel_state),
        adaptation_state=as_plain(state.adaptation_state),
        counters=dict(as_plain(state.counters), n_evals=vg.n_evals, n_calls=vg.n_calls,
                      n_nonfinite=vg.n_nonfinite),
        draws=trace.draws[:, :n], stats={k: v[:, :n] for k, v in trace.stats.items()},
        elapsed=elapsed, warmup_time=state.warmup_time)


def _check_format(run_, s: dict) -> None:
    if s.get("format") != CHECKPOINT_FORMAT or s.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{run_.checkpoint} is not a skyfit HMC/NUTS checkpoint (format "
                         f"{CHECKPOINT_FORMAT} version {CHECKPOINT_VERSION})")


def load_state(run_, adaptation, trace, generator, u) -> tuple[LoopState, float]:
    try:
        s = load_checkpoint(run_.checkpoint, expect_fingerprint=run_.fingerprint)
    except DataMismatchError:  # a checkpoint of another kind says so rather than "other data"
        _check_format(run_, load_checkpoint(run_.checkpoint))
        raise
    _check_format(run_, s)
    mine, theirs = run_.config(), s["config"]
    diff = {k: (theirs.get(k), mine[k]) for k in mine if theirs.get(k) != mine[k]}
    if diff:
        msg = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
        raise ValueError(
            f"cannot resume from {run_.checkpoint}: it was written with other settings "
            f"({msg}); call with the same settings, or resume=False to start afresh")
    dev = u.device
    z = torch.zeros(run_.n_chains, u.dim, dtype=u.dtype, device=dev)
    kernel_state = from_plain(HMCState(z, z[:, 0], z), s["kernel_state"], dev)
    a = from_plain(adaptation.empty(), s["adaptation_state"], dev)
    counters = dict(s["counters"])
    vg = run_.kernel.value_and_grad
    vg.n_evals, vg.n_calls = counters.pop("n_evals"), counters.pop("n_calls")
    vg.n_nonfinite = counters.pop("n_nonfinite")
    generator.set_state(s["rng_state"])
    trace.load(s["draws"].to(dev), {k: v.to(dev) for k, v in s["stats"].items()})
    state = LoopState(int(s["iteration"]), kernel_state, a, Counters(**counters),
                      s["rng_state"], s["warmup_time"])
    return state, float(s["elapsed"])
