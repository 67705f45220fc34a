"""NUTS for many chains out of step: a chain whose tree is finished starts its next transition
at once instead of waiting for the slowest chain of the batch.

The lock-step loop (:func:`~skyfit.inference.sampling._sample` with the batched
:class:`~skyfit.inference.mcmc.NUTS`) makes one batched call per leapfrog step of the deepest
tree of *any* chain, every iteration: with thousands of chains some chain is in a deep tree at
almost every iteration (a transient of its step-size adaptation, a curved posterior), so the run
makes ``iterations x max tree size`` calls. Here every chain keeps its own iteration count and
warm-up schedule, and the run makes about ``max over chains of its total leapfrog steps`` calls
(Radul et al. 2020 batch NUTS across iterations the same way). Each call still evaluates only
the chains that are building.

Warm-up per chain, Stan's schedule on the chain's own iteration count: dual averaging of the
step size, and at the end of each slow window the inverse mass matrix becomes the window's
(co)variance, shrunk towards the start metric (``prior``, with weight ``10 * dim`` draws) or,
without one, Stan's regularised estimate; then, as in Stan and :func:`~skyfit.sample_nuts`, a
new step size is searched by doubling/halving from the current one under the new metric (a few
batched calls of only the chains ending a window) and dual averaging restarts from it. A chain
thus follows exactly :func:`~skyfit.sample_nuts`' warm-up: a run of one chain is that sampler
draw for draw (a test), and many chains out of step are independent copies of it.

References:
    Radul, Patton, Maclaurin, Hoffman & Saurous (2020), *Automatically batching
    control-intensive programs for modern accelerators*, https://arxiv.org/abs/1910.11141
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import torch

from .adaptation import DualAveraging, find_reasonable_step_size, warmup_windows
from .adaptation.welford import WelfordCovariance, WelfordState
from .adaptation.window_adaptation import DualAveragingState
from .mcmc.hmc import HMCState, KernelParams
from .mcmc.metrics import Metric
from .mcmc.nuts import _WORKING, NUTS

__all__ = ["run_unsynced"]

_STATS = ("tree_depth", "diverging", "energy", "step_size", "accept_prob", "n_steps")


def _schedule(n_warmup: int, device) -> SimpleNamespace:
    """Per warm-up iteration: in a slow window, and the last iteration of one."""
    in_window = torch.zeros(max(n_warmup, 1), dtype=torch.bool, device=device)
    window_end = torch.zeros_like(in_window)
    for start, end in warmup_windows(n_warmup):
        in_window[start:end] = True
        window_end[end - 1] = True
    return SimpleNamespace(in_window=in_window, window_end=window_end)


class _ChainAdaptation:
    """Per-chain dual averaging and window (co)variance estimates, each chain on its own
    iteration count; updates touch only the chains ``idx`` that just finished a transition."""

    def __init__(self, step_size, inv_mass, prior, target_accept: float):
        self.da = DualAveraging(target_accept)
        self.step_size, self.inv_mass, self.prior = step_size, inv_mass, prior
        self.mu = torch.log(10 * step_size)
        self.counter = torch.zeros_like(step_size)
        self.s_bar, self.x_bar = torch.zeros_like(step_size), torch.zeros_like(step_size)
        C, D = inv_mass.shape[:2]
        # each chain's window estimate, with its own count (a (C,) tensor)
        self.welford = WelfordCovariance(C, D, dense=inv_mass.ndim == 3, dtype=inv_mass.dtype,
                                         device=inv_mass.device)
        self.window = SimpleNamespace(count=torch.zeros_like(step_size),
                                      mean=self.welford.init().mean, m2=torch.zeros_like(inv_mass))
        self.prior_count = 10.0 * D

    def learn(self, idx, accept_prob):
        """Dual averaging of chains ``idx`` (Stan's constants, per-chain counters)."""
        state = self.da.update(DualAveragingState(
            self.step_size[idx], self.mu[idx], self.counter[idx], self.s_bar[idx],
            self.x_bar[idx]), accept_prob)
        self.step_size[idx], self.counter[idx] = state.step_size, state.counter
        self.s_bar[idx], self.x_bar[idx] = state.s_bar, state.x_bar

    def observe(self, idx, z):
        """Welford update of chains ``idx`` with their new positions ``z``."""
        w = self.window
        state = self.welford.update(WelfordState(w.count[idx], w.mean[idx], w.m2[idx]), z)
        w.count[idx], w.mean[idx], w.m2[idx] = state

    def end_window(self, idx, rows, metric: Metric, search) -> None:
        """Chains ``idx`` (rows ``rows`` of the working set) end a slow window: new inverse
        mass (also in the working set's ``metric``, in place), estimates reset, a step size
        searched by ``search(idx, rows, metric of rows, step sizes)`` and dual averaging
        restarted from it."""
        w = self.window
        window = WelfordState(w.count[idx], w.mean[idx], w.m2[idx])
        prior = None if self.prior is None else self.prior[idx]
        new = self.welford.inverse_mass(window, prior, self.prior_count)
        self.inv_mass[idx] = new
        metric.inv_mass[rows] = new
        if self.welford.dense:
            metric.chol[rows] = torch.linalg.cholesky(new)
        else:
            metric.inv_sqrt[rows] = new.sqrt()
        w.count[idx], w.mean[idx], w.m2[idx] = 0.0, 0.0, 0.0
        self.step_size[idx] = search(idx, rows, metric.select(rows), self.step_size[idx])
        self.mu[idx] = torch.log(10 * self.step_size[idx])
        self.counter[idx], self.s_bar[idx], self.x_bar[idx] = 0.0, 0.0, 0.0

    def finish(self, idx):
        """Chains ``idx`` end warm-up: the averaged step size from now on."""
        averaged = self.counter[idx] > 0
        self.step_size[idx] = torch.where(averaged, torch.exp(self.x_bar[idx]),
                                          self.step_size[idx])


def _restart(kernel: NUTS, t, generator, idx, z, logp, grad, step_size) -> None:
    """Fresh trees for rows ``idx`` of the working set ``t`` from the given points."""
    metric = t.metric.select(idx)
    fresh = kernel._begin(generator, HMCState(z, logp, grad), KernelParams(step_size, metric))
    working, begun = vars(t), vars(fresh)  # SimpleNamespaces with the fields of _WORKING
    for key in _WORKING:
        if key != "ck":
            working[key].index_copy_(0, idx, begun[key])


def _finished(t, idx):
    """The transition results of rows ``idx`` of the working set: (z, log p, grad), accept
    statistic, depth, steps, divergence, energy."""
    D = t.D
    proposal = t.proposal.index_select(0, idx)
    z, p, g, logp = proposal[:, :D], proposal[:, D:2 * D], proposal[:, 2 * D:3 * D], \
        proposal[:, 3 * D]
    n_steps = t.n_steps.index_select(0, idx)
    accept = t.sum_metro.index_select(0, idx) / n_steps.clamp(min=1)
    energy = t.metric.select(idx).kinetic(p) - logp
    return (z, logp, g, accept, t.depth.index_select(0, idx), n_steps,
            t.diverging.index_select(0, idx), energy)


def run_unsynced(kernel: NUTS, z, inv_mass, prior, generator, n_warmup: int, n_draws: int,
                 target_accept: float = 0.8, progress: bool = False) -> SimpleNamespace:
    """NUTS on every chain of ``kernel`` from ``z (C, D)`` (unconstrained, finite log p),
    ``inv_mass`` ``(C, D[, D])`` the first metric, ``prior`` the window estimates' prior (or
    None). Returns ``draws (C, n_draws, D)`` (unconstrained), ``stats`` (each ``(C, n_draws)``),
    ``step_size``, ``inv_mass`` and ``n_calls``."""
    start = time.perf_counter()
    C, D = z.shape
    kw = dict(dtype=z.dtype, device=z.device)
    logp, grad = kernel.value_and_grad(z)
    metric = Metric(inv_mass.clone())
    step = find_reasonable_step_size(kernel.value_and_grad, metric, z, logp, grad,
                                     torch.ones(C, **kw), generator)
    adapt = _ChainAdaptation(step, metric.inv_mass, prior, target_accept)
    schedule = _schedule(n_warmup, z.device)
    out = SimpleNamespace(draws=torch.zeros(C, n_draws, D, **kw),
                          stats={k: torch.zeros(C, n_draws, **kw) for k in _STATS})
    out.stats["log_density_unconstrained"] = torch.zeros(C, n_draws, **kw)
    t = kernel._begin(generator, HMCState(z, logp, grad), KernelParams(adapt.step_size, metric))
    iteration = torch.zeros(C, dtype=torch.long, device=z.device)
    n_total = n_warmup + n_draws
    bar = _progress(progress, C * n_total)
    n_running = C  # rows of the working set with transitions still to run
    while not bool(t.done.all()):
        active = ~t.done
        new, p, forward, level, bad, div = kernel._leaf(t, generator, active, int(active.sum()))
        complete = active & ~bad & (t.leaf == t.pow2[t.depth])
        t.diverging = t.diverging | (active & div)
        t.done = t.done | bad
        if bool(complete.any()):
            kernel._merge(t, complete, new, p, forward, level)
        rows = (t.done & active).nonzero().flatten()
        if len(rows):
            idx = rows if t.rows is None else t.rows[rows]  # their chains
            search = _step_size_search(kernel, generator, t)
            z_i, logp_i, g_i = _advance(t, rows, idx, iteration, adapt, schedule, out,
                                        n_warmup, search)
            iteration[idx] += 1
            bar.update(len(idx))
            going_on = iteration[idx] < n_total
            if bool(going_on.any()):
                _restart(kernel, t, generator, rows[going_on], z_i[going_on],
                         logp_i[going_on], g_i[going_on], adapt.step_size[idx[going_on]])
            n_running -= len(rows) - int(going_on.sum())
            if 0 < n_running <= t.n_work // 2 and t.n_work >= 16:
                _drop_finished(t)
    bar.close()
    out.step_size, out.inv_mass = adapt.step_size, adapt.inv_mass
    out.wall_time = time.perf_counter() - start
    return out


def _drop_finished(t) -> None:
    """Drop the chains that have run all their transitions (the done rows: every other
    finished tree was restarted) from the working set ``t``: in the run's tail a few chains
    still build, and the bookkeeping of every leapfrog step is over the working set.
    ``t.rows`` maps its rows to chains. Each chain's transitions are unchanged; only which of
    the generator's uniform numbers each chain's leaves receive changes (one per working row
    and leaf), so the draws are the same in distribution."""
    keep = (~t.done).nonzero().flatten()
    working = vars(t)  # a SimpleNamespace with the fields of _WORKING
    for key in _WORKING:
        working[key] = working[key].index_select(0, keep)
    t.metric = t.metric.select(keep)
    t.rows = keep if t.rows is None else t.rows.index_select(0, keep)
    t.n_work = len(keep)


def _step_size_search(kernel: NUTS, generator, t):
    """Stan's step-size search for chains that end a window, from their finished transitions'
    points: ``search(chains, rows, metric, step_size)`` (``rows``: theirs in ``t``)."""
    def search(chains, rows, metric, step_size):
        z, logp, g = _finished(t, rows)[:3]
        return find_reasonable_step_size(lambda x: kernel.value_and_grad_of(x, chains), metric,
                                         z, logp, g, step_size, generator)
    return search


def _advance(t, rows, idx, iteration, adapt, schedule, out, n_warmup, search):
    """Chains ``idx`` (rows ``rows`` of ``t``) finished a transition: warm-up learns from it,
    or it is recorded. Returns their new points ``(z, log p, grad)``, where their next
    transitions start."""
    z, logp, g, accept, depth, n_steps, diverging, energy = _finished(t, rows)
    it = iteration[idx]
    warm = it < n_warmup
    if bool(warm.any()):
        w, it_w = idx[warm], it[warm]
        adapt.learn(w, accept[warm])
        in_window = schedule.in_window[it_w]
        if bool(in_window.any()):
            adapt.observe(w[in_window], z[warm][in_window])
        ending = schedule.window_end[it_w]
        if bool(ending.any()):
            adapt.end_window(w[ending], rows[warm][ending], t.metric, search)
        last = it_w == n_warmup - 1
        if bool(last.any()):
            adapt.finish(w[last])
    if not bool(warm.all()):
        keep = ~warm
        s, j = idx[keep], it[keep] - n_warmup
        out.draws[s, j] = z[keep]
        out.stats["log_density_unconstrained"][s, j] = logp[keep]
        facts = dict(tree_depth=depth, diverging=diverging, energy=energy,
                     step_size=adapt.step_size[idx], accept_prob=accept, n_steps=n_steps)
        for k, v in facts.items():
            out.stats[k][s, j] = v[keep].to(out.draws.dtype)
    return z, logp, g


def _progress(enabled: bool, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc="NUTS (chains out of step)",
                unit="transition", dynamic_ncols=True)


def as_numpy_stats(stats: dict) -> dict:
    """The per-draw statistics as numpy arrays of the types :class:`Samples` uses."""
    converted = {}
    for k, v in stats.items():
        v = v.cpu().numpy()
        converted[k] = (v.astype(bool) if k == "diverging" else
                        v.astype(np.int64) if k in ("tree_depth", "n_steps") else v)
    return converted

