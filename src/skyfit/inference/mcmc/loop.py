"""The one MCMC loop: warm-up then sampling for any kernel, with callbacks.

A kernel has ``step(generator, state, params) -> (state, info)`` and ``stat_names``; a warm-up
(e.g. :class:`~skyfit.inference.adaptation.WindowAdaptation`) has ``step(iteration, state,
kernel_state, accept_prob, generator)`` and ``params``-giving ``metric``. The loop keeps every
state in one :class:`LoopState` of NamedTuples and only replaces it when an iteration has
finished, so an iteration is all or nothing: an interrupt (Ctrl-C, an exception) leaves the
last finished state, from which a checkpoint resumes exactly. Callbacks see each finished
iteration: a progress bar, checkpoints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from .hmc import KernelParams

__all__ = ["Counters", "LoopState", "Trace", "Callback", "ProgressBar", "Checkpointer", "run",
           "as_plain", "from_plain"]


class Counters(NamedTuple):
    """Batched chain-steps taken (``lockstep``: chains x the slowest chain's steps; ``useful``:
    the steps chains needed), for the whole run and for sampling, and warm-up divergences."""

    lockstep: int = 0
    useful: int = 0
    lockstep_sampling: int = 0
    useful_sampling: int = 0
    divergent_warmup: int = 0


class LoopState(NamedTuple):
    """Everything that changes from one iteration to the next."""

    iteration: int
    kernel_state: Any
    adaptation_state: Any
    counters: Counters
    rng_state: torch.Tensor  # the generator's state at the end of this iteration
    warmup_time: float | None


class Trace:
    """Draws ``(chain, draw, dim)`` and per-draw statistics of the sampling phase."""

    def __init__(self, n_chains: int, n_draws: int, dim: int, stat_names: Sequence[str], **kw):
        self.stat_names = tuple(stat_names)
        self.draws = torch.zeros(n_chains, n_draws, dim, **kw)
        self.stats = {k: torch.zeros(n_chains, n_draws, **kw) for k in self.stat_names}
        self.stats["log_density_unconstrained"] = torch.zeros(n_chains, n_draws, **kw)

    def record(self, j: int, kernel_state, info: NamedTuple, step_size: torch.Tensor) -> None:
        self.draws[:, j] = kernel_state.position
        self.stats["log_density_unconstrained"][:, j] = kernel_state.log_density
        facts = info._asdict()
        for k in self.stat_names:
            self.stats[k][:, j] = step_size if k == "step_size" else facts[k]

    def load(self, draws: torch.Tensor, stats: dict) -> None:
        n = draws.shape[1]
        self.draws[:, :n] = draws
        for k, v in stats.items():
            self.stats[k][:, :n] = v


class Callback:
    """Hooks of the loop; each default does nothing."""

    def on_start(self, state: LoopState) -> None: ...

    def on_iteration(self, state: LoopState, info: NamedTuple) -> None: ...

    def on_end(self, state: LoopState) -> None: ...


class ProgressBar(Callback):
    """A ``tqdm.auto`` bar labelled with the sampler and phase; every 25 iterations it shows
    the median step size and the divergences among the kept draws."""

    def __init__(self, label: str, n_warmup: int, n_total: int, trace: Trace, enabled: bool):
        self.label, self.n_warmup, self.n_total = label, n_warmup, n_total
        self.trace, self.enabled, self.bar = trace, enabled, None

    def on_start(self, state: LoopState) -> None:
        from tqdm.auto import tqdm

        phase = "warm-up" if state.iteration < self.n_warmup else "sampling"
        self.bar = tqdm(total=self.n_total, initial=state.iteration, disable=not self.enabled,
                        desc=f"{self.label} {phase}", unit="it", dynamic_ncols=True)

    def on_iteration(self, state: LoopState, info: NamedTuple) -> None:
        if state.iteration == self.n_warmup:
            self.bar.set_description(f"{self.label} sampling")
        self.bar.update(1)
        if state.iteration % 25 == 0:
            n_done = max(0, state.iteration - self.n_warmup)
            n_div = int(self.trace.stats["diverging"][:, :n_done].sum())
            step = state.adaptation_state.step_size.median().item()
            self.bar.set_postfix(step=f"{step:.3g}", div=n_div, refresh=False)

    def on_end(self, state: LoopState) -> None:
        if self.bar is not None:
            self.bar.close()


class Checkpointer(Callback):
    """Calls ``save(state)`` every ``every`` iterations (not after the last: the caller saves
    the final state once, interrupted or not)."""

    def __init__(self, save: Callable[[LoopState], None], every: int, n_total: int):
        self.save, self.every, self.n_total = save, int(every), n_total

    def on_iteration(self, state: LoopState, info: NamedTuple) -> None:
        if state.iteration % self.every == 0 and state.iteration < self.n_total:
            self.save(state)


def _iterate(kernel, adaptation, state: LoopState, trace: Trace, generator, n_warmup: int,
             clock: Callable[[], float]) -> tuple[LoopState, NamedTuple]:
    """One iteration; returns the next state without changing ``state``."""
    it, c = state.iteration, state.counters
    a = state.adaptation_state
    params = KernelParams(a.step_size, adaptation.metric(a.inv_mass), a.tuning)
    kernel_state, info = kernel.step(generator, state.kernel_state, params)
    n_chains = kernel_state.position.shape[0]
    steps, lock = int(info.n_steps.sum()), info.lockstep_steps * n_chains
    if it < n_warmup:
        c = c._replace(lockstep=c.lockstep + lock, useful=c.useful + steps,
                       divergent_warmup=c.divergent_warmup + int(info.diverging.sum()))
        a = adaptation.step(it, a, kernel_state, info.accept_prob, generator)
    else:
        c = c._replace(lockstep=c.lockstep + lock, useful=c.useful + steps,
                       lockstep_sampling=c.lockstep_sampling + lock,
                       useful_sampling=c.useful_sampling + steps)
        trace.record(it - n_warmup, kernel_state, info, a.step_size)
    warmup_time = clock() if it + 1 == n_warmup else state.warmup_time
    return LoopState(it + 1, kernel_state, a, c, generator.get_state(), warmup_time), info


def run(kernel, adaptation, state: LoopState, trace: Trace, generator: torch.Generator,
        n_warmup: int, n_draws: int, callbacks: Sequence[Callback] = (),
        clock: Callable[[], float] = time.perf_counter) -> tuple[LoopState, BaseException | None]:
    """Run from ``state`` to ``n_warmup + n_draws`` iterations; returns the last finished state
    and the exception (``KeyboardInterrupt`` included) that stopped the run early, if any."""
    n_total = n_warmup + n_draws
    error = None
    for cb in callbacks:
        cb.on_start(state)
    try:
        while state.iteration < n_total:
            state, info = _iterate(kernel, adaptation, state, trace, generator, n_warmup, clock)
            for cb in callbacks:
                cb.on_iteration(state, info)
    except (KeyboardInterrupt, Exception) as exc:
        error = exc
    finally:
        for cb in callbacks:
            cb.on_end(state)
    return state, error


def _is_state(value) -> bool:
    # every tuple in a loop state is a NamedTuple state
    return isinstance(value, tuple) and type(value) is not tuple


def as_plain(value):
    """NamedTuples as nested dicts of their fields (for a checkpoint); other values as they
    are."""
    if _is_state(value):
        return {k: as_plain(v) for k, v in value._asdict().items()}
    return value


def from_plain(template, value, device):
    """Rebuild ``value`` (from :func:`as_plain`) with the structure of ``template``; tensors
    moved to ``device``."""
    if _is_state(template):
        return type(template)(**{k: from_plain(getattr(template, k), value[k], device)
                                 for k in template._fields})
    if isinstance(value, dict):  # a field that is None in the template, a NamedTuple here
        raise ValueError("checkpoint structure does not match this sampler's state")
    return value.to(device) if isinstance(value, torch.Tensor) else value
