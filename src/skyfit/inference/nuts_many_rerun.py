"""Sampling again only the objects whose chains did not converge, with more transitions.

In a batch of many objects the hard ones are few and known after one run: their R-hat says
so. Sampling the whole batch longer pays for every easy object again; this samples the others
only, from what the first run learned about each (its draws' mean and covariance: the start and
first metric), and merges them back into one table.
"""

from __future__ import annotations

import torch

from .batched import BatchedDensity
from .many_results import ManyResult
from .nuts_many import sample_nuts_many

__all__ = ["resample_unconverged"]


def resample_unconverged(density: BatchedDensity, result: ManyResult, rows=None,
                         thin: int = 4, n_warmup: int = 300, seed: int = 1,
                         target_accept: float = 0.8, max_tree_depth: int = 10,
                         mass: str | None = None, progress: bool = False,
                         compile: bool | None = None) -> ManyResult:  # noqa: A002
    """Samples objects ``rows`` of a :func:`~skyfit.inference.sample_nuts_many` result again,
    ``thin`` times longer, and returns the result with their rows replaced.

    Each object sampled again is a new run of :func:`~skyfit.inference.sample_nuts_many` on
    that object alone (in one batch with the others sampled again): its chains start at draws of
    a Gaussian with the first run's posterior mean and sample covariance, which is also their
    first metric, warm up for ``n_warmup`` iterations and then run ``thin x`` the first run's
    draws, keeping every ``thin``-th, so the merged result keeps one ``draws`` array
    ``(N, chains, draws, dim)``. R-hat, ESS, means and covariances of those objects are of the
    new run's kept draws (the first run's draws are not pooled with them: its chains are what
    failed to mix); divergences are those of the new run. Objects not in ``rows`` keep their
    rows, bit for bit.

    Call it again on its own result for what is still not converged (a new ``seed`` each time;
    objects sampled twice keep their ``sampled_again`` mark): each pass samples fewer, harder
    objects for longer. On a simulated 256-object survey night (``benchmarks/bench_many_nuts.py``)
    passes with ``thin`` 4, 4 and 8 took the converged objects from 152 to 208, 230 and 247.

    Arguments:
        density: the :class:`~skyfit.inference.BatchedDensity` that ``result`` sampled.
        result: a ManyResult of :func:`~skyfit.inference.sample_nuts_many` (with draws).
        rows: the objects to sample again: indices or a boolean mask (default: the objects not
            converged, max R-hat >= 1.01).
        thin: transitions per kept draw in the new runs (``thin * draws`` transitions).
        mass: ``"diag"`` or ``"dense"``; default the first run's (read off its
            ``extra["inv_mass"]``), else dense.
        n_warmup, seed, target_accept, max_tree_depth, progress, compile: of the new runs, as
            :func:`~skyfit.inference.sample_nuts_many`'s.

    Returns:
        :class:`ManyResult`: ``result`` with the rows sampled again replaced;
        ``extra["sampled_again"]`` ``(N,)`` marks them, their ``extra["n_gradient_evals"]``
        count both runs' gradients (what the object cost in all), ``extra["n_batched_steps"]``,
        ``extra["compile_s"]`` and ``wall_time`` are both runs' totals. Each object sampled
        again has a warning saying so, with its first run's R-hat and divergences. Objects
        whose first run's mean is not finite (draws that overflowed: an improper posterior) are
        not sampled again (longer chains only drift further) and get a warning saying so. With
        no rows to sample, ``result`` itself.

    Example:
        >>> import torch
        >>> from skyfit.inference import BatchedDensity, sample_nuts_many
        >>> class Normals(BatchedDensity):  # object n: x ~ N(mu_n, 1)
        ...     names = ["x"]
        ...     lower, upper = torch.tensor([-torch.inf]), torch.tensor([torch.inf])
        ...     def __init__(self, mu):
        ...         self.data = {"mu": mu}
        ...     def object_log_prob(self, x, data):
        ...         return -0.5 * ((x - data["mu"]) ** 2).sum()
        >>> d = Normals(torch.tensor([[-5.0], [0.0], [5.0]]))
        >>> first = sample_nuts_many(d, d.data["mu"], n_chains=2, n_warmup=50, n_draws=50)
        >>> again = resample_unconverged(d, first, rows=[1], thin=2, n_warmup=50)
        >>> again.extra["sampled_again"].tolist(), again.draws.shape
        ([False, True, False], (3, 2, 50, 1))
    """
    if result.draws is None:
        raise ValueError("resample_unconverged needs a sampled result with draws (of "
                         "sample_nuts_many); this one has none")
    if len(result) != density.n_objects:
        raise ValueError(f"the result has {len(result)} objects but the density "
                         f"{density.n_objects}: pass the density that was sampled")
    rows = ~result.converged.cpu().bool() if rows is None else rows
    index = result.object_indices(rows).unique()  # sorted, each object once
    # draws that overflowed (an improper posterior the chains drift along) give no start and
    # no metric, and longer chains only drift further: such objects keep their rows
    drifted = ~torch.isfinite(result.x[index].cpu()).all(1)
    skipped, index = index[drifted], index[~drifted]
    if len(index) == 0:
        return _with_skipped(result, skipped)
    first = result.subset(index)
    if mass is None:
        inv_mass = result.extra.get("inv_mass")
        mass = "diag" if inv_mass is not None and inv_mass.ndim == 3 else "dense"
    n_chains, n_draws = result.draws.shape[1], result.draws.shape[2]
    again = sample_nuts_many(density.subset(index.to(density.device)), first, n_chains,
                             n_warmup, n_draws, seed, target_accept, max_tree_depth,
                             mass=mass, progress=progress, compile=compile, thin=thin)
    # marked: sampled again now or by an earlier call (a result can be passed back in)
    marked = result.extra.get("sampled_again", torch.zeros(len(result), dtype=torch.bool))
    marked = marked.clone()
    marked[index] = True
    again.extra["sampled_again"] = torch.ones(len(index), dtype=torch.bool)
    if "n_gradient_evals" in again.extra and "n_gradient_evals" in result.extra:
        again.extra["n_gradient_evals"] = (again.extra["n_gradient_evals"]
                                           + result.extra["n_gradient_evals"][index])
    for i, j in enumerate(index.tolist()):
        again.warnings[i].insert(0, _note(result, j, thin))
    merged = result.with_rows(index, again)  # a copy: result itself is left as it was
    merged.extra["sampled_again"] = marked
    for key in ("n_batched_steps", "compile_s"):
        if key in result.extra and key in again.extra:
            merged.extra[key] = result.extra[key] + again.extra[key]
    merged.wall_time = result.wall_time + again.wall_time
    return _with_skipped(merged, skipped)


def _with_skipped(result: ManyResult, skipped: torch.Tensor) -> ManyResult:
    """``result`` (a copy, if any object is skipped) with a warning on each object not sampled
    again for its non-finite mean."""
    if len(skipped) == 0:
        return result
    result = result.subset(torch.arange(len(result)))
    for j in skipped.tolist():
        result.warnings[j].append("nuts: not sampled again: the first run's draws are not "
                                  "finite (an improper posterior?); give its parameters a "
                                  "proper prior or bounds")
    return result


def _note(result: ManyResult, j: int, thin: int) -> str:
    """The warning that says object ``j`` was sampled again, and why."""
    rhat = "" if result.rhat is None else f"max R-hat {float(result.rhat[j].max()):.3f}"
    divergent = result.extra.get("n_divergent")
    divergent = "" if divergent is None else f", {int(divergent[j])} divergent"
    return (f"nuts: sampled again with {thin}x the transitions, every {thin}th kept (first "
            f"run: {rhat}{divergent})")

