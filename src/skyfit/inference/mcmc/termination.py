"""U-turn termination of NUTS trees built leaf by leaf, with O(log n) checkpoints.

The U-turn checks of the subtrees that end at a leaf use checkpoints of momenta and momentum
sums (Phan et al. 2019) and include Stan's extra checks across each merge of two subtrees. A
checkpoint row per level holds ``[momentum r, momentum sum S, previous leaf's r, M^-1 r,
M^-1 (previous r)]``.

References:
    Phan, Pradhan & Jankowiak (2019), *Composable Effects for Flexible and Accelerated
    Probabilistic Programming in NumPyro*, https://arxiv.org/abs/1912.11554
    Betancourt (2017), *A Conceptual Introduction to Hamiltonian Monte Carlo*,
    https://arxiv.org/abs/1701.02434
"""

from __future__ import annotations

import torch

__all__ = ["checkpoint_tables", "subtree_turning", "merge_persists", "MERGE_PICK"]

# which velocity of (outer, last, inner, first of the new subtree) meets which momentum sum in
# the checks across a merge: (outer, last, outer, first, inner, last)
MERGE_PICK = (0, 1, 0, 3, 2, 1)


def _popcount(x: torch.Tensor, bits: int) -> torch.Tensor:
    return sum(((x >> b) & 1) for b in range(bits))


def checkpoint_tables(max_tree_depth: int):
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


def subtree_turning(ck: torch.Tensor, here: torch.Tensor, sub_rho: torch.Tensor,
                    vn: torch.Tensor, rows: torch.Tensor, levels: torch.Tensor,
                    is_max: torch.Tensor) -> torch.Tensor:
    """Whether any subtree ending at the new leaf makes a U-turn, ``(chain,)``.

    ``ck (chain, levels, 5 dim)``: the checkpoints; ``here (chain, 5 dim)``: the new leaf's row;
    ``sub_rho``: the momentum sum of the subtree being built; ``vn``: the new leaf's velocity;
    ``rows``, ``levels``: the checks to make, one per (chain, checkpoint level) pair (a leaf's
    checks span the levels of the subtrees that end there); ``is_max``: per pair, whether it
    is the chain's deepest checked level. Only these pairs are computed: about one check per
    leaf on average (an odd leaf ends about 2 subtrees, an even leaf none), against the
    ``levels`` of every chain a dense check would span.
    """
    D, n_levels = vn.shape[-1], ck.shape[1]
    flat = ck.view(-1, ck.shape[-1])  # (chain x level, 5 dim): one index_select per pick
    a = flat.index_select(0, rows * n_levels + levels)
    # b: the first leaf of the right half of each checked subtree (the next level's
    # checkpoint, or the new leaf for the deepest)
    b = torch.where(is_max[:, None], here.index_select(0, rows),
                    flat.index_select(0, rows * n_levels + (levels + 1) % n_levels))
    r_a, s_a, v_a = a[:, :D], a[:, D:2 * D], a[:, 3 * D:4 * D]
    r_b, s_b, prev_b = b[:, :D], b[:, D:2 * D], b[:, 2 * D:3 * D]
    v_b, v_bm1 = b[:, 3 * D:4 * D], b[:, 4 * D:]
    sub = sub_rho.index_select(0, rows)
    t = r_a - s_a
    rho_all = t + sub  # the whole subtree [a, n]
    rho_left = t + s_b  # left half plus the first leaf of the right half
    rho_right = (prev_b + r_b - s_b) + sub  # last of left plus right
    v_n = vn.index_select(0, rows)
    vels = torch.stack([v_a, v_n, v_a, v_b, v_bm1, v_n], 1)
    rhos = torch.stack([rho_all, rho_all, rho_left, rho_left, rho_right, rho_right], 1)
    persist = ((vels * rhos).sum(-1) > 0).all(1)
    turning = torch.zeros(ck.shape[0], dtype=torch.bool, device=ck.device)
    return turning.index_fill_(0, rows[~persist], True)


def merge_persists(velocity, outer, p, inner, sub_first, rho, sub_rho, pick) -> torch.Tensor:
    """Whether the tree merged from the old tree (momentum sum ``rho``, ``outer`` / ``inner``
    end momenta) and the new subtree (``sub_rho``, first / last momenta ``sub_first`` / ``p``)
    keeps going: the whole tree's check and Stan's two extra checks across the merge."""
    rho_tree = rho + sub_rho
    vel = velocity(torch.stack([outer, p, inner, sub_first], 1))
    rhos = torch.stack([rho_tree, rho_tree, rho + sub_first, rho + sub_first,
                        inner + sub_rho, inner + sub_rho], 1)
    return ((vel.index_select(1, pick) * rhos).sum(-1) > 0).all(-1)
