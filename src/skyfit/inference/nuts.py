"""Batched No-U-Turn Sampler: multinomial NUTS with many chains in one tensor program.

Every chain builds its own tree, but all chains take their leapfrog steps together: one batched
log-density-and-gradient call per step for every chain still building. A chain whose tree is
finished waits (is masked) until the slowest chain of the transition is done; the fraction of
such idle chain-steps is the *lock-step waste* reported in ``NUTSInfo.lockstep_steps``.

The tree is doubled iteratively, leaf by leaf (no recursion): the U-turn checks of the subtrees
that end at a leaf use O(log n) checkpoints of momenta and momentum sums (Phan et al. 2019), and
include Stan's extra checks across each merge of two subtrees. Within a new subtree a proposal is
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

from typing import NamedTuple

import torch

from .hmc import MAX_DELTA_ENERGY, HMCState, Metric

__all__ = ["NUTS", "NUTSInfo"]


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


def _popcount(x: torch.Tensor, bits: int) -> torch.Tensor:
    return sum(((x >> b) & 1) for b in range(bits))


def _checkpoint_tables(max_tree_depth: int):
    """For each leaf index of a subtree: which checkpoint level it stores (even leaves) and which
    levels its U-turn checks span (odd leaves end 1 or more subtrees: sizes 2, 4, ...)."""
    n_leaves = 2 ** (max_tree_depth - 1)
    levels = max(max_tree_depth - 1, 1)
    leaf = torch.arange(n_leaves)
    idx_max = _popcount(leaf >> 1, max_tree_depth)
    trailing_ones = torch.zeros_like(leaf)
    still = torch.ones_like(leaf, dtype=torch.bool)
    for b in range(max_tree_depth):
        still = still & (((leaf >> b) & 1) == 1)
        trailing_ones += still.long()
    idx_min = idx_max - trailing_ones + 1
    k = torch.arange(levels)[None, :]
    store = ((leaf % 2) == 0)[:, None] & (k == idx_max[:, None])
    check = (k >= idx_min[:, None]) & (k <= idx_max[:, None])
    is_max = k == idx_max[:, None]
    return store, check, is_max


class NUTS:
    """Batched multinomial NUTS kernel, BlackJAX style: ``init(position)``, ``step(...)``.

    Arguments:
        value_and_grad: batched ``z (n, dim) -> (log p (n,), grad (n, dim))`` that never returns
            NaN (see :class:`~skyfit.inference.hmc.ValueAndGrad`).
        max_tree_depth: at most ``2**max_tree_depth - 1`` leapfrog steps per transition (Stan: 10).
        max_delta_energy: an energy error above this is a divergence (Stan: 1000).

    Example:
        >>> import torch
        >>> from skyfit.inference import FunctionDensity
        >>> from skyfit.inference.hmc import Metric, ValueAndGrad
        >>> vg = ValueAndGrad(FunctionDensity(lambda x: -0.5 * (x**2).sum(-1), 2))
        >>> kernel = NUTS(vg)
        >>> state = kernel.init(torch.zeros(3, 2, dtype=torch.float64))
        >>> g = torch.Generator().manual_seed(0)
        >>> eps = torch.full((3,), 0.5, dtype=torch.float64)
        >>> state, info = kernel.step(g, state, eps, Metric(torch.ones(3, 2, dtype=torch.float64)))
        >>> state.position.shape, bool((info.n_steps <= info.lockstep_steps).all())
        (torch.Size([3, 2]), True)
    """

    def __init__(self, value_and_grad, max_tree_depth: int = 10,
                 max_delta_energy: float = MAX_DELTA_ENERGY):
        if int(max_tree_depth) < 1:
            raise ValueError(f"max_tree_depth must be at least 1, got {max_tree_depth}")
        self.value_and_grad = value_and_grad
        self.max_tree_depth = int(max_tree_depth)
        self.max_delta_energy = float(max_delta_energy)
        self._tables = {}

    def init(self, position: torch.Tensor) -> HMCState:
        logp, grad = self.value_and_grad(position)
        return HMCState(position, logp, grad)

    def _get_tables(self, device):
        if device not in self._tables:
            store, check, is_max = _checkpoint_tables(self.max_tree_depth)
            pow2 = 2 ** torch.arange(self.max_tree_depth + 1)
            pick = torch.tensor([0, 1, 0, 3, 2, 1])  # (outer, last, outer, first, inner, last)
            self._tables[device] = tuple(t.to(device) for t in (store, check, is_max, pow2, pick))
        return self._tables[device]

    def step(self, generator: torch.Generator, state: HMCState, step_size: torch.Tensor,
             metric: Metric) -> tuple[HMCState, NUTSInfo]:
        """One NUTS transition of every chain; ``step_size (chain,)``."""
        z0, logp0, g0 = state
        C, D = z0.shape
        dtype, dev = z0.dtype, z0.device
        max_depth = self.max_tree_depth
        store_tab, check_tab, is_max_tab, pow2, pick = self._get_tables(dev)
        n_leaves, K = check_tab.shape
        vg, velocity, full_metric = self.value_and_grad, metric.velocity, metric
        kw = dict(dtype=dtype, device=dev)

        p0 = metric.sample_momentum(generator)
        v0 = velocity(p0)
        h0 = 0.5 * (p0 * v0).sum(-1) - logp0
        dirs = torch.randint(0, 2, (C, max_depth), generator=generator, device=dev)
        dirs = dirs.to(dtype) * 2 - 1
        u_merge = torch.rand((C, max_depth), generator=generator, **kw)
        half_step = 0.5 * step_size

        # a point is packed as [z, p, grad, log p]: one `where` moves all of it
        start_point = torch.cat([z0, p0, g0, logp0[:, None]], 1)
        left = right = last = proposal = sub_proposal = start_point
        rho = p0
        log_w = torch.zeros(C, **kw)
        sub_log_w = torch.zeros(C, **kw)
        sub_rho = torch.zeros(C, D, **kw)
        sub_first = p0
        prev_pv = torch.cat([p0, v0], 1)  # momentum and velocity of the previous leaf
        # checkpoints per level: [momentum r, momentum sum S, previous leaf's r, M^-1 r,
        # M^-1 (previous r)]
        ck = torch.zeros(C, 1, 5 * D, **kw)  # grows with the deepest subtree (K levels at most)
        n_levels = 1
        store_k, check_k, is_max_k = store_tab[:, :1], check_tab[:, :1], is_max_tab[:, :1]
        depth = torch.zeros(C, dtype=torch.long, device=dev)
        leaf = torch.zeros(C, dtype=torch.long, device=dev)
        done = torch.zeros(C, dtype=torch.bool, device=dev)
        diverging = torch.zeros(C, dtype=torch.bool, device=dev)
        sum_metro = torch.zeros(C, **kw)
        n_steps = torch.zeros(C, dtype=torch.long, device=dev)
        lockstep = 0
        # finished chains leave the working set once at most half of it is still building:
        # `rows` maps working rows to chains; results are flushed into the full-size outputs
        n_work, rows = C, None
        out = [proposal, depth, n_steps, diverging, sum_metro]

        while True:
            active = ~done
            n_active = int(active.sum())
            if n_active == 0:
                break
            if n_active <= n_work // 2 and n_work >= 16:
                res = (proposal, depth, n_steps, diverging, sum_metro)
                if rows is None:
                    out = [r.clone() for r in res]
                    rows = torch.arange(C, device=dev)
                for o, r in zip(out, res):
                    o.index_copy_(0, rows, r)
                keep = active.nonzero().squeeze(1)
                rows = rows.index_select(0, keep)
                (left, right, last, proposal, sub_proposal, rho, log_w, sub_log_w, sub_rho,
                 sub_first, prev_pv, ck, depth, leaf, done, diverging, sum_metro, n_steps, dirs,
                 u_merge, half_step, h0, active) = (
                    t.index_select(0, keep) for t in (
                        left, right, last, proposal, sub_proposal, rho, log_w, sub_log_w,
                        sub_rho, sub_first, prev_pv, ck, depth, leaf, done, diverging, sum_metro,
                        n_steps, dirs, u_merge, half_step, h0, active))
                metric = metric.select(keep)
                velocity = metric.velocity
                n_work = n_active
            lockstep += 1
            starting = leaf == 0
            s2 = starting[:, None]
            level = depth.clamp(max=max_depth - 1)
            v = dirs.gather(1, level[:, None])
            forward = v > 0
            cur = torch.where(s2, torch.where(forward, right, left), last)

            # leapfrog, one batched call for the chains still building
            h = half_step[:, None] * v
            p = torch.addcmul(cur[:, D:2 * D], h, cur[:, 2 * D:3 * D])
            z = torch.addcmul(cur[:, :D], 2 * h, velocity(p))
            if n_active == n_work:
                logp, g = vg(z)
            else:
                idx = active.nonzero().squeeze(1)
                logp_a, g_a = vg(z.index_select(0, idx))
                logp = cur[:, 3 * D].index_copy(0, idx, logp_a)
                g = cur[:, 2 * D:3 * D].index_copy(0, idx, g_a)
            p = torch.addcmul(p, h, g)
            new = torch.cat([z, p, g, logp[:, None]], 1)
            vn = velocity(p)

            delta = torch.nan_to_num(0.5 * (p * vn).sum(-1) - logp - h0, nan=torch.inf)
            div = delta > self.max_delta_energy
            leaf_log_w = -delta
            sum_metro = sum_metro + torch.exp(leaf_log_w.clamp(max=0.0)) * active
            n_steps = n_steps + active

            # uniform progressive sampling inside the subtree being built
            u = torch.rand(n_work, generator=generator, **kw)
            new_sub_log_w = torch.where(starting, leaf_log_w,
                                        torch.logaddexp(sub_log_w, leaf_log_w))
            take = starting | (u < torch.exp(leaf_log_w - new_sub_log_w))
            sub_proposal = torch.where(take[:, None], new, sub_proposal)
            sub_log_w = new_sub_log_w
            sub_rho = torch.where(s2, p, sub_rho + p)
            sub_first = torch.where(s2, p, sub_first)

            # checkpoints (even leaves) and U-turn checks of the subtrees ending here (odd leaves)
            li = leaf.clamp(max=n_leaves - 1)
            here = torch.cat([p, sub_rho, prev_pv[:, :D], vn, prev_pv[:, D:]], 1)[:, None]
            ck = torch.where(store_k.index_select(0, li)[..., None], here, ck)
            check = check_k.index_select(0, li)
            turning = None
            if bool((check & active[:, None]).any()):
                # b: the first leaf of the right half of each checked subtree
                b = torch.where(is_max_k.index_select(0, li)[..., None], here, ck.roll(-1, 1))
                r_a, s_a, v_a = ck[..., :D], ck[..., D:2 * D], ck[..., 3 * D:4 * D]
                r_b, s_b, prev_b = b[..., :D], b[..., D:2 * D], b[..., 2 * D:3 * D]
                v_b, v_bm1 = b[..., 3 * D:4 * D], b[..., 4 * D:]
                t = r_a - s_a
                rho_all = t + sub_rho[:, None]  # the whole subtree [a, n]
                rho_left = t + s_b  # left half plus the first leaf of the right half
                rho_right = (prev_b + r_b - s_b) + sub_rho[:, None]  # last of left plus right
                v_n = vn[:, None].expand_as(v_a)
                vels = torch.cat([v_a, v_n, v_a, v_b, v_bm1, v_n], 1)
                rhos = torch.cat([rho_all, rho_all, rho_left, rho_left, rho_right, rho_right], 1)
                persist = ((vels * rhos).sum(-1) > 0).view(n_work, 6, n_levels).all(1)
                turning = (check & ~persist).any(-1)
            prev_pv = torch.cat([p, vn], 1)
            last = new
            leaf = leaf + active

            bad = div if turning is None else div | turning
            bad = active & bad
            complete = active & ~bad & (leaf == pow2[depth])
            diverging = diverging | (active & div)
            done = done | bad
            if bool(complete.any()):
                # merge the finished subtree into the tree (biased progressive sampling)
                c = complete[:, None]
                p_left, p_right = left[:, D:2 * D], right[:, D:2 * D]
                outer = torch.where(forward, p_left, p_right)
                inner = torch.where(forward, p_right, p_left)
                right = torch.where(c & forward, new, right)
                left = torch.where(c & ~forward, new, left)
                accept = u_merge.gather(1, level[:, None]).squeeze(1) < torch.exp(sub_log_w - log_w)
                proposal = torch.where((complete & accept)[:, None], sub_proposal, proposal)
                log_w = torch.where(complete, torch.logaddexp(log_w, sub_log_w), log_w)
                rho_tree = rho + sub_rho
                vel = velocity(torch.stack([outer, p, inner, sub_first], 1))
                rhos = torch.stack([rho_tree, rho_tree, rho + sub_first, rho + sub_first,
                                    inner + sub_rho, inner + sub_rho], 1)
                persist = ((vel.index_select(1, pick) * rhos).sum(-1) > 0).all(-1)
                rho = torch.where(c, rho_tree, rho)
                depth = depth + complete
                leaf = torch.where(complete, 0, leaf)
                done = done | (complete & (~persist | (depth >= max_depth)))
                deepest = min(K, int(torch.where(done, 0, depth).max()))
                if deepest > n_levels:  # subtrees this deep need more checkpoint levels
                    ck = torch.cat([ck, ck.new_zeros(n_work, deepest - n_levels, 5 * D)], 1)
                    n_levels = deepest
                    store_k, check_k, is_max_k = (
                        t[:, :n_levels] for t in (store_tab, check_tab, is_max_tab))

        if rows is not None:
            for o, r in zip(out, (proposal, depth, n_steps, diverging, sum_metro)):
                o.index_copy_(0, rows, r)
            proposal, depth, n_steps, diverging, sum_metro = out
            metric = full_metric
        z, p, g, logp = (proposal[:, :D], proposal[:, D:2 * D], proposal[:, 2 * D:3 * D],
                         proposal[:, 3 * D])
        energy = metric.kinetic(p) - logp
        accept_prob = sum_metro / n_steps.clamp(min=1)
        info = NUTSInfo(accept_prob, diverging, energy, depth, n_steps, lockstep)
        return HMCState(z.contiguous(), logp.contiguous(), g.contiguous()), info
