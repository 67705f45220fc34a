"""Batched No-U-Turn Sampler: multinomial NUTS with many chains in one tensor program.

Every chain builds its own tree, but all chains take their leapfrog steps together: one batched
log-density-and-gradient call per step for every chain still building. A chain whose tree is
finished waits (is masked) until the slowest chain of the transition is done; the fraction of
such idle chain-steps is the *lock-step waste* reported in ``NUTSInfo.lockstep_steps``.

The tree is doubled iteratively, leaf by leaf (no recursion); its U-turn checks are in
``termination.py``. Within a new subtree a proposal is
drawn multinomially (uniform progressive sampling); the subtree's proposal replaces the tree's
with probability ``min(1, w_new / w_old)`` (biased progressive sampling), as in Stan.

References:
    Hoffman & Gelman (2014), *The No-U-Turn Sampler*, https://arxiv.org/abs/1111.4246
    Betancourt (2017), *A Conceptual Introduction to Hamiltonian Monte Carlo*,
    https://arxiv.org/abs/1701.02434
    Phan, Pradhan & Jankowiak (2019), *Composable Effects for Flexible and Accelerated
    Probabilistic Programming in NumPyro*, https://arxiv.org/abs/1912.11554
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import NamedTuple

import torch

from .hmc import HMCState, KernelParams
from .integrators import MAX_DELTA_ENERGY
from .termination import MERGE_PICK, checkpoint_tables, merge_persists, subtree_turning

__all__ = ["NUTS", "NUTSInfo"]

# the per-chain tensors of a transition's working set, in one order (for compaction)
_WORKING = ("left", "right", "last", "proposal", "sub_proposal", "rho", "log_w", "sub_log_w",
            "sub_rho", "sub_first", "prev_pv", "ck", "depth", "leaf", "done", "diverging",
            "sum_metro", "n_steps", "dirs", "u_merge", "half_step", "h0")
_RESULTS = ("proposal", "depth", "n_steps", "diverging", "sum_metro")


class NUTSInfo(NamedTuple):
    """Per-chain facts of one NUTS transition, each ``(chain,)``, and the lock-step count.

    ``n_steps`` counts the leapfrog steps a chain needed; ``lockstep_steps`` the batched steps the
    transition took (the longest chain's count), so ``1 - n_steps.sum() / (chains *
    lockstep_steps)`` is the fraction of chain-steps spent waiting.
    """

    accept_prob: torch.Tensor
    diverging: torch.Tensor
    energy: torch.Tensor
    tree_depth: torch.Tensor
    n_steps: torch.Tensor
    lockstep_steps: int


class NUTS:
    """Batched multinomial NUTS kernel, BlackJAX style: ``init(position)``,
    ``step(generator, state, params)``.

    Arguments:
        value_and_grad: batched ``z (n, dim) -> (log p (n,), grad (n, dim))`` that never returns
            NaN (see :class:`~skyfit.inference.mcmc.integrators.ValueAndGrad`).
        max_tree_depth: at most ``2**max_tree_depth - 1`` leapfrog steps per transition (Stan: 10).
        max_delta_energy: an energy error above this is a divergence (Stan: 1000).

    Example:
        >>> import torch
        >>> from skyfit.inference import FunctionDensity
        >>> from skyfit.inference.mcmc import KernelParams, Metric, ValueAndGrad
        >>> vg = ValueAndGrad(FunctionDensity(lambda x: -0.5 * (x**2).sum(-1), 2))
        >>> kernel = NUTS(vg)
        >>> state = kernel.init(torch.zeros(3, 2, dtype=torch.float64))
        >>> g = torch.Generator().manual_seed(0)
        >>> eps = torch.full((3,), 0.5, dtype=torch.float64)
        >>> metric = Metric(torch.ones(3, 2, dtype=torch.float64))
        >>> state, info = kernel.step(g, state, KernelParams(eps, metric))
        >>> state.position.shape, bool((info.n_steps <= info.lockstep_steps).all())
        (torch.Size([3, 2]), True)
    """

    name = "nuts"
    stat_names = ("tree_depth", "diverging", "energy", "step_size", "accept_prob", "n_steps")

    def __init__(self, value_and_grad, max_tree_depth: int = 10,
                 max_delta_energy: float = MAX_DELTA_ENERGY):
        if int(max_tree_depth) < 1:
            raise ValueError(f"max_tree_depth must be at least 1, got {max_tree_depth}")
        self.value_and_grad = value_and_grad
        self.max_tree_depth = int(max_tree_depth)
        self.max_delta_energy = float(max_delta_energy)
        self._tables = {}

    def config(self) -> dict:
        """The settings a resumed run must share."""
        return dict(max_tree_depth=self.max_tree_depth)

    def init(self, position: torch.Tensor) -> HMCState:
        logp, grad = self.value_and_grad(position)
        return HMCState(position, logp, grad)

    # NUTS needs no warm-up of its own beyond the step size and metric
    def tuning_init(self, n_chains: int, dim: int, **kw) -> None:
        return None

    def tuning_update(self, tuning, position):
        return tuning

    def tuning_end_window(self, tuning, metric):
        return tuning

    def final_info(self, tuning) -> dict:
        return {}

    def _get_tables(self, device):
        if device not in self._tables:
            store, check, is_max = checkpoint_tables(self.max_tree_depth)
            pow2 = 2 ** torch.arange(self.max_tree_depth + 1)
            pick = torch.tensor(MERGE_PICK)
            self._tables[device] = tuple(t.to(device) for t in (store, check, is_max, pow2, pick))
        return self._tables[device]

    def step(self, generator: torch.Generator, state: HMCState,
             params: KernelParams) -> tuple[HMCState, NUTSInfo]:
        """One NUTS transition of every chain."""
        t = self._begin(generator, state, params)
        while True:
            active = ~t.done
            n_active = int(active.sum())
            if n_active == 0:
                break
            if n_active <= t.n_work // 2 and t.n_work >= 16:
                active = _compact(t, active, n_active)
            t.lockstep += 1
            new, p, forward, level, bad, div = self._leaf(t, generator, active, n_active)
            complete = active & ~bad & (t.leaf == t.pow2[t.depth])
            t.diverging = t.diverging | (active & div)
            t.done = t.done | bad
            if bool(complete.any()):
                self._merge(t, complete, new, p, forward, level)
        return _finish(t)

    def _begin(self, generator, state: HMCState, params: KernelParams) -> SimpleNamespace:
        """The working set of a transition: momenta, directions and merge draws of every level,
        and a tree of one leaf, the start."""
        z0, logp0, g0 = state
        C, D = z0.shape
        dev, kw = z0.device, dict(dtype=z0.dtype, device=z0.device)
        max_depth, metric = self.max_tree_depth, params.metric
        store_tab, check_tab, is_max_tab, pow2, pick = self._get_tables(dev)
        p0 = metric.sample_momentum(generator)
        v0 = metric.velocity(p0)
        h0 = 0.5 * (p0 * v0).sum(-1) - logp0
        dirs = torch.randint(0, 2, (C, max_depth), generator=generator, device=dev)
        dirs = dirs.to(z0.dtype) * 2 - 1
        u_merge = torch.rand((C, max_depth), generator=generator, **kw)
        # a point is packed as [z, p, grad, log p]: one `where` moves all of it
        start = torch.cat([z0, p0, g0, logp0[:, None]], 1)
        zeros_long = torch.zeros(C, dtype=torch.long, device=dev)
        zeros_bool = torch.zeros(C, dtype=torch.bool, device=dev)
        t = SimpleNamespace(
            D=D, C=C, max_depth=max_depth, tables=(store_tab, check_tab, is_max_tab), pow2=pow2,
            pick=pick, metric=metric, full_metric=metric,
            left=start, right=start, last=start, proposal=start, sub_proposal=start, rho=p0,
            log_w=torch.zeros(C, **kw), sub_log_w=torch.zeros(C, **kw),
            sub_rho=torch.zeros(C, D, **kw), sub_first=p0,
            prev_pv=torch.cat([p0, v0], 1),  # momentum and velocity of the previous leaf
            # checkpoints per level, growing with the deepest subtree (K levels at most)
            ck=torch.zeros(C, 1, 5 * D, **kw), n_levels=1,
            depth=zeros_long, leaf=zeros_long, done=zeros_bool, diverging=zeros_bool,
            sum_metro=torch.zeros(C, **kw), n_steps=zeros_long, dirs=dirs, u_merge=u_merge,
            half_step=0.5 * params.step_size, h0=h0, lockstep=0, n_work=C, rows=None)
        t.out = [getattr(t, k) for k in _RESULTS]
        _set_levels(t, 1)
        return t

    def value_and_grad_of(self, z, chains):
        """log p and gradient at ``z``, the points of chains ``chains`` (None: every chain, in
        order). A density that differs per chain (one object per chain, ``sample_nuts_many``)
        overrides this."""
        return self.value_and_grad(z)

    def _leaf(self, t, generator, active, n_active):
        """One leapfrog step of every chain still building (one batched call), uniform
        progressive sampling in the subtree, checkpoints and the subtrees' U-turn checks."""
        D = t.D
        starting = t.leaf == 0
        s2 = starting[:, None]
        level = t.depth.clamp(max=t.max_depth - 1)
        v = t.dirs.gather(1, level[:, None])
        forward = v > 0
        cur = torch.where(s2, torch.where(forward, t.right, t.left), t.last)
        h = t.half_step[:, None] * v
        p = torch.addcmul(cur[:, D:2 * D], h, cur[:, 2 * D:3 * D])
        z = torch.addcmul(cur[:, :D], 2 * h, t.metric.velocity(p))
        if n_active == t.n_work:
            logp, g = self.value_and_grad_of(z, t.rows)
        else:
            idx = active.nonzero().squeeze(1)
            chains = idx if t.rows is None else t.rows.index_select(0, idx)
            logp_a, g_a = self.value_and_grad_of(z.index_select(0, idx), chains)
            logp = cur[:, 3 * D].index_copy(0, idx, logp_a)
            g = cur[:, 2 * D:3 * D].index_copy(0, idx, g_a)
        p = torch.addcmul(p, h, g)
        new = torch.cat([z, p, g, logp[:, None]], 1)
        vn = t.metric.velocity(p)

        delta = torch.nan_to_num(0.5 * (p * vn).sum(-1) - logp - t.h0, nan=torch.inf)
        div = delta > self.max_delta_energy
        leaf_log_w = -delta
        t.sum_metro = t.sum_metro + torch.exp(leaf_log_w.clamp(max=0.0)) * active
        t.n_steps = t.n_steps + active
        u = torch.rand(t.n_work, generator=generator, dtype=z.dtype, device=z.device)
        new_sub_log_w = torch.where(starting, leaf_log_w,
                                    torch.logaddexp(t.sub_log_w, leaf_log_w))
        take = starting | (u < torch.exp(leaf_log_w - new_sub_log_w))
        t.sub_proposal = torch.where(take[:, None], new, t.sub_proposal)
        t.sub_log_w = new_sub_log_w
        t.sub_rho = torch.where(s2, p, t.sub_rho + p)
        t.sub_first = torch.where(s2, p, t.sub_first)

        # checkpoints (even leaves) and U-turn checks of the subtrees ending here (odd leaves)
        # (in place, and only the (chain, level) pairs concerned: a dense update and check
        # touch every level of every chain, though a leaf ends about one subtree on average)
        li = t.leaf.clamp(max=t.n_leaves - 1)
        here = torch.cat([p, t.sub_rho, t.prev_pv[:, :D], vn, t.prev_pv[:, D:]], 1)
        rows, levels = t.store_k.index_select(0, li).nonzero(as_tuple=True)
        t.ck.view(-1, t.ck.shape[-1]).index_copy_(0, rows * t.ck.shape[1] + levels,
                                                  here.index_select(0, rows))
        rows, levels = (t.check_k.index_select(0, li) & active[:, None]).nonzero(as_tuple=True)
        bad = div
        if len(rows):
            bad = div | subtree_turning(t.ck, here, t.sub_rho, vn, rows, levels,
                                        t.is_max_k[li.index_select(0, rows), levels])
        t.prev_pv = torch.cat([p, vn], 1)
        t.last = new
        t.leaf = t.leaf + active
        return new, p, forward, level, active & bad, div

    def _merge(self, t, complete, new, p, forward, level) -> None:
        """Merge each finished subtree into its tree (biased progressive sampling) and stop the
        chains whose merged tree turns or reaches the maximum depth."""
        D, c = t.D, complete[:, None]
        p_left, p_right = t.left[:, D:2 * D], t.right[:, D:2 * D]
        outer = torch.where(forward, p_left, p_right)
        inner = torch.where(forward, p_right, p_left)
        t.right = torch.where(c & forward, new, t.right)
        t.left = torch.where(c & ~forward, new, t.left)
        accept = t.u_merge.gather(1, level[:, None]).squeeze(1) < torch.exp(t.sub_log_w - t.log_w)
        t.proposal = torch.where((complete & accept)[:, None], t.sub_proposal, t.proposal)
        t.log_w = torch.where(complete, torch.logaddexp(t.log_w, t.sub_log_w), t.log_w)
        persist = merge_persists(t.metric.velocity, outer, p, inner, t.sub_first, t.rho,
                                 t.sub_rho, t.pick)
        t.rho = torch.where(c, t.rho + t.sub_rho, t.rho)
        t.depth = t.depth + complete
        t.leaf = torch.where(complete, 0, t.leaf)
        t.done = t.done | (complete & (~persist | (t.depth >= t.max_depth)))
        deepest = min(t.n_levels_max, int(torch.where(t.done, 0, t.depth).max()))
        if deepest > t.n_levels:  # subtrees this deep need more checkpoint levels
            t.ck = torch.cat([t.ck, t.ck.new_zeros(t.n_work, deepest - t.n_levels, 5 * D)], 1)
            _set_levels(t, deepest)


def _set_levels(t, n_levels: int) -> None:
    store_tab, check_tab, is_max_tab = t.tables
    t.n_leaves, t.n_levels_max = check_tab.shape
    t.n_levels = n_levels
    t.store_k, t.check_k, t.is_max_k = (x[:, :n_levels] for x in t.tables)


def _compact(t, active: torch.Tensor, n_active: int) -> torch.Tensor:
    """Drop finished chains from the working set once at most half of it is still building:
    ``rows`` maps working rows to chains, and results are flushed into full-size outputs."""
    res = [getattr(t, k) for k in _RESULTS]
    if t.rows is None:
        t.out = [r.clone() for r in res]
        t.rows = torch.arange(t.C, device=active.device)
    for o, r in zip(t.out, res):
        o.index_copy_(0, t.rows, r)
    keep = active.nonzero().squeeze(1)
    t.rows = t.rows.index_select(0, keep)
    for k in _WORKING:
        setattr(t, k, getattr(t, k).index_select(0, keep))
    t.metric = t.metric.select(keep)
    t.n_work = n_active
    return active.index_select(0, keep)


def _finish(t) -> tuple[HMCState, NUTSInfo]:
    D = t.D
    proposal, depth, n_steps, diverging, sum_metro = (getattr(t, k) for k in _RESULTS)
    metric = t.metric
    if t.rows is not None:
        for o, r in zip(t.out, (proposal, depth, n_steps, diverging, sum_metro)):
            o.index_copy_(0, t.rows, r)
        proposal, depth, n_steps, diverging, sum_metro = t.out
        metric = t.full_metric
    z, p, g, logp = (proposal[:, :D], proposal[:, D:2 * D], proposal[:, 2 * D:3 * D],
                     proposal[:, 3 * D])
    energy = metric.kinetic(p) - logp
    accept_prob = sum_metro / n_steps.clamp(min=1)
    info = NUTSInfo(accept_prob, diverging, energy, depth, n_steps, t.lockstep)
    return HMCState(z.contiguous(), logp.contiguous(), g.contiguous()), info
