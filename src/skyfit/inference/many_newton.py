"""The per-object derivatives behind ``fit_map_many``: value and gradient (L-BFGS), value,
gradient and exact Hessian (damped Newton), all objects in one ``torch.func.vmap`` call, in the
unconstrained coordinates the optimisers move in."""

from __future__ import annotations

import copy
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch

from ..errors import CompileFallbackWarning
from .batched import BatchedDensity
from .compiled import _guard_options, eager_seconds, missing_compiler, worth_compiling
from .transforms import UnconstrainedDensity

__all__ = ["value_and_grad_rows", "value_and_grad_groups", "value_grad_hessian_rows",
           "newton_objective", "lbfgs_objective", "CompiledGradient", "gradient_for",
           "in_threads"]


# points per vmapped call: the model's intermediate tensors of a few thousand points stay in
# the CPU's cache, where one call over all points streams every one of them through memory
# (measured on the Villar survey night: see benchmarks/RESULTS.md, many_fits)
GRADIENT_CHUNK = 4096
HESSIAN_CHUNK = 512  # objects per exact-Hessian call (dim backward passes each)
# gradient_for times the eager gradient on this many points and scales to all (a smaller
# chunk costs more per point, so the prediction errs towards compiling): timing all points
# cost two full gradient calls of every fit
PROBE_POINTS = 512
# rows per thread below which in_threads does not split: each thread's batched calls carry a
# fixed cost of their own
MIN_ROWS_PER_THREAD = 256
# an unsplit batch whose data hold fewer elements than this runs on one intra-op thread: its
# tensors are too small for torch's intra-op split to pay its synchronisation (the survey's
# light curves, benchmarks/RESULTS.md many_fits); a batch of images keeps torch's threads
SMALL_BATCH_ELEMENTS = 1 << 20


def _in_chunks(function, x: torch.Tensor, rows: torch.Tensor, chunk: int):
    """``function(x[i:j], rows[i:j])`` over chunks of ``chunk`` rows, outputs concatenated."""
    if x.shape[0] <= chunk:
        return function(x, rows)
    parts = [function(x[i:i + chunk], rows[i:i + chunk]) for i in range(0, x.shape[0], chunk)]
    return tuple(torch.cat(values) for values in zip(*parts))


def value_and_grad_rows(density: BatchedDensity, x: torch.Tensor, rows: torch.Tensor):
    """``log p`` ``(k,)`` and its gradient ``(k, dim)`` of objects ``rows`` at ``x (k, dim)``:
    ``vmap`` of the per-object ``grad_and_value`` (one vectorised backward pass inside the
    vmap, cheaper than autograd through the vmapped forward for small per-object graphs), in
    chunks of ``GRADIENT_CHUNK`` points."""
    evaluate = torch.func.vmap(torch.func.grad_and_value(density.object_log_prob))

    def chunk(x, rows):
        grad, logp = evaluate(x, density.rows_data(rows))
        return logp.detach(), grad.detach()

    return _in_chunks(chunk, x.detach(), rows, GRADIENT_CHUNK)


def value_and_grad_groups(density: BatchedDensity, x: torch.Tensor, rows: torch.Tensor):
    """As :func:`value_and_grad_rows` for ``m`` points of each object, ``x (k, m, dim)``:
    ``(k, m)`` values and ``(k, m, dim)`` gradients. A ``vmap`` over the points inside the
    ``vmap`` over objects, the data not batched over the points: each object's data are
    gathered, and whatever the model computes from its data alone (reciprocal errors, the
    normalisation) is evaluated, once for its ``m`` points (the ``dim + 1`` points of a
    difference Hessian)."""
    per_point = torch.func.vmap(torch.func.grad_and_value(density.object_log_prob),
                                in_dims=(0, None))
    evaluate = torch.func.vmap(per_point)
    objects_per_chunk = max(1, GRADIENT_CHUNK // x.shape[1])

    def chunk(x, rows):
        grad, logp = evaluate(x, density.rows_data(rows))
        return logp.detach(), grad.detach()

    return _in_chunks(chunk, x.detach(), rows, objects_per_chunk)


def _value_grad_hessian(log_prob):
    def one(x, data):
        def grad_with_aux(x):
            g, v = torch.func.grad_and_value(log_prob)(x, data)
            return g, (g, v)

        # reverse over reverse: for small per-object graphs dim vmapped backward passes cost
        # less than dim tangents pushed through the backward graph (forward over reverse);
        # the two agree to rounding (see benchmarks/RESULTS.md, many_fits)
        H, (g, v) = torch.func.jacrev(grad_with_aux, has_aux=True)(x)
        return v, g, 0.5 * (H + H.transpose(-1, -2))

    return torch.func.vmap(one)


def value_grad_hessian_rows(density: BatchedDensity, x: torch.Tensor, rows: torch.Tensor):
    """``log p`` ``(k,)``, gradient ``(k, dim)`` and exact Hessian ``(k, dim, dim)`` (reverse
    over reverse mode, symmetrised) of objects ``rows`` at ``x (k, dim)``, in one call. Unlike
    ``density.hessian_rows`` non-finite entries are returned, not raised (an optimiser's trial
    point may overflow: it is rejected)."""
    evaluate = _value_grad_hessian(density.object_log_prob)

    def chunk(x, rows):
        logp, grad, hessian = evaluate(x, density.rows_data(rows))
        return logp.detach(), grad.detach(), hessian.detach()

    return _in_chunks(chunk, x.detach(), rows, HESSIAN_CHUNK)


def _transform_derivatives(transform: UnconstrainedDensity, z: torch.Tensor):
    """``x(z)``, ``dx/dz`` and ``d2x/dz2`` of the elementwise transform, in closed form (a
    nested ``jvp`` through its ``torch.where`` branches costs more than the model's own
    derivatives): scaled sigmoid ``w s (1 - s)``, ``w s (1 - s)(1 - 2 s)``; ``lo + exp(z)``:
    ``exp(z)`` twice; ``hi - exp(z)``: ``-exp(z)`` twice; identity and periodic: 1, 0."""
    x = transform.to_constrained(z)
    lo, hi, both = transform._lo, transform._hi, transform._both
    width = torch.where(both, hi - lo, torch.ones_like(lo))
    s = torch.sigmoid(z)
    e = torch.exp(z)
    one = torch.ones_like(z)
    dx = torch.where(both, width * s * (1 - s), torch.where(
        transform._low_only, e, torch.where(transform._high_only, -e, one)))
    d2x = torch.where(both, dx * (1 - 2 * s), torch.where(
        transform._low_only | transform._high_only, dx, torch.zeros_like(z)))
    return x, dx, d2x


def _object_index(density: BatchedDensity, rows: torch.Tensor, objects: torch.Tensor | None):
    # the optimiser's row r is start r // N of object r % N (or object objects[r])
    return rows % density.n_objects if objects is None else objects[rows]


def lbfgs_objective(density: BatchedDensity, transform: UnconstrainedDensity,
                    objects: torch.Tensor | None = None, gradient=None):
    """``-log p(x(z))`` and its gradient in ``z`` for the batched L-BFGS (``takes_rows``): the
    optimiser moves freely in z and never leaves the support (no Jacobian term: the mode in x
    is wanted). A non-finite value gets a NaN gradient (the line search backs off).
    ``gradient(x, rows) -> (log p, grad)``: default :func:`value_and_grad_rows`, or a
    :class:`CompiledGradient`."""
    gradient = gradient or (lambda x, rows: value_and_grad_rows(density, x, rows))

    def objective(z: torch.Tensor, rows: torch.Tensor):
        which = _object_index(density, rows, objects)
        x, dx, _ = _transform_derivatives(transform, z.detach())
        logp, g = gradient(x, which)
        bad = ~torch.isfinite(logp)
        return -logp, torch.where(bad[:, None], torch.full_like(g, float("nan")), -g * dx)

    return objective


def newton_objective(density: BatchedDensity, transform: UnconstrainedDensity,
                     objects: torch.Tensor | None = None, hessian: str = "differences",
                     gradient=None):
    """``-log p(x(z))``, its gradient and Hessian in ``z``, for
    :func:`~skyfit.inference.optimizers.minimize_newton`.

    ``hessian="differences"``: forward differences of the exact gradient, all ``k (dim + 1)``
    points in one vmapped gradient evaluation (each object's points as one group,
    :func:`value_and_grad_groups`, unless a ``gradient`` is given; relative error ~1e-8, which
    leaves Newton's convergence as it is: the gradient, exact, decides where it ends);
    ``"exact"``: reverse over reverse mode through the chain rule of the elementwise transform
    (``H_z = J H_x J + diag(g_x x''(z))``, ``J = diag(x'(z))``), several times the cost for
    Villar's 8 parameters. ``gradient``: as for :func:`lbfgs_objective` (the differences only)."""
    if hessian not in ("differences", "exact"):
        raise ValueError(f"hessian must be 'differences' or 'exact', got {hessian!r}")

    def exact(z: torch.Tensor, rows: torch.Tensor):
        which = _object_index(density, rows, objects)
        x, dx, d2x = _transform_derivatives(transform, z.detach())
        logp, g, H = value_grad_hessian_rows(density, x, which)
        hess = -(H * dx[:, :, None] * dx[:, None, :]) - torch.diag_embed(g * d2x)
        return -logp, -g * dx, hess

    def differences(z: torch.Tensor, rows: torch.Tensor, need: torch.Tensor | None = None):
        # need: the rows whose Hessian is wanted (None: all); the others get zeros
        k, d = z.shape
        need = torch.ones(k, dtype=torch.bool, device=z.device) if need is None else need
        h = torch.finfo(z.dtype).eps ** 0.5 * z[need].abs().clamp(min=1.0)
        shifted = z[need][:, None, :] + torch.diag_embed(h)  # row j along j
        hess = torch.zeros(k, d, d, dtype=z.dtype, device=z.device)
        if gradient is None:  # eager: each object's dim + 1 points in one group
            f, g = torch.empty_like(z[:, 0]), torch.empty_like(z)
            if not bool(need.all()):
                f[~need], g[~need] = lbfgs_objective(density, transform, objects)(
                    z[~need], rows[~need])
            if not bool(need.any()):
                return f, g, hess
            f_group, g_group = _grouped_objective(
                torch.cat([z[need][:, None, :], shifted], 1), rows[need])
            f[need], g[need] = f_group[:, 0], g_group[:, 0]
            columns = (g_group[:, 1:] - g_group[:, :1]) / h[:, :, None]
        else:
            points = torch.cat([z, shifted.reshape(-1, d)])
            point_rows = torch.cat([rows, rows[need].repeat_interleave(d)])
            f, g = lbfgs_objective(density, transform, objects, gradient)(points, point_rows)
            columns = (g[k:].reshape(-1, d, d) - g[:k][need][:, None, :]) / h[:, :, None]
            f, g = f[:k], g[:k]
        hess[need] = 0.5 * (columns + columns.transpose(-1, -2))  # row j: d g / d z_j
        return f, g, hess

    def _grouped_objective(z: torch.Tensor, rows: torch.Tensor):
        # lbfgs_objective for groups of points of one object each, z (k, m, dim)
        which = _object_index(density, rows, objects)
        x, dx, _ = _transform_derivatives(transform, z.detach())
        logp, g = value_and_grad_groups(density, x, which)
        bad = ~torch.isfinite(logp)
        return -logp, torch.where(bad[..., None], torch.full_like(g, float("nan")), -g * dx)

    return differences if hessian == "differences" else exact


class CompiledGradient:
    """``log p`` and gradient of objects ``rows`` at ``x`` like :func:`value_and_grad_rows`,
    through ``torch.compile`` of the vmapped ``grad_and_value``.

    The compiled graph is specialised to its batch size (``vmap``'s batch dimension does not
    stay symbolic), so points go through in chunks of two fixed sizes, ``small`` for a few
    points and ``chunk`` otherwise, the last chunk padded with copies of the first point
    (results dropped): two compilations serve every call. Where the backend cannot compile it
    warns (:class:`~skyfit.errors.CompileFallbackWarning`) and evaluates eagerly.

    Attributes:
        info: ``compile_s`` (wall time of the first call of each size), ``n_compiles``,
            ``fallback`` (why it runs eagerly, or None).
    """

    def __init__(self, density: BatchedDensity, chunk: int = 4096, small: int = 256,
                 backend: str = "inductor"):
        self.density, self.sizes = density, (small, chunk)
        self.info = {"compile_s": 0.0, "n_compiles": 0,
                     "fallback": missing_compiler(density.device, backend)}
        self._eager = torch.func.vmap(torch.func.grad_and_value(density.object_log_prob))
        self._compiled = None if self.info["fallback"] else torch.compile(
            self._eager, backend=backend, dynamic=False, options=_guard_options())
        self._seen: set[int] = set()
        if self.info["fallback"]:
            self._fall_back(self.info["fallback"])

    def _fall_back(self, reason: str) -> None:
        self.info["fallback"], self._compiled = reason, None
        warnings.warn(CompileFallbackWarning(f"torch.compile is not used ({reason}): the "
                                             "gradients are evaluated eagerly"), stacklevel=3)

    def _call(self, x: torch.Tensor, data: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if self._compiled is None:
            return self._eager(x, data)
        if x.shape[0] in self._seen:
            return self._compiled(x, data)
        start = time.perf_counter()
        try:
            out = self._compiled(x, data)
        except Exception as error:  # the backend could not compile: evaluate eagerly
            if type(error).__name__ != "BackendCompilerFailed":
                raise
            self._fall_back(f"the backend failed: {error}")
            return self._eager(x, data)
        self.info["compile_s"] += time.perf_counter() - start
        self.info["n_compiles"] += 1
        self._seen.add(x.shape[0])
        return out

    def __call__(self, x: torch.Tensor, rows: torch.Tensor):
        k = x.shape[0]
        size = self.sizes[0] if k <= self.sizes[0] else self.sizes[1]
        pad = -k % size
        x = torch.cat([x.detach(), x[:1].detach().expand(pad, x.shape[1])])
        rows = torch.cat([rows, rows[:1].expand(pad)])
        grads, values = zip(*(self._call(x[i:i + size], self.density.rows_data(rows[i:i + size]))
                              for i in range(0, k + pad, size)))
        return torch.cat(values)[:k].detach(), torch.cat(grads)[:k].detach()


def gradient_for(density: BatchedDensity, compile_: bool | None, points: torch.Tensor,
                 n_calls: int):
    """The gradient function of a fit: eager, or :class:`CompiledGradient` if ``compile_`` is
    True, or if it is None and the eager gradients are predicted to take over
    ``WORTH_COMPILING_S`` seconds (one eager call on up to ``PROBE_POINTS`` of ``points``
    timed by :func:`~skyfit.inference.compiled.eager_seconds`, scaled to all of them, times
    ``n_calls``):
    a compilation of the vmapped gradient takes tens of seconds per size."""
    if compile_ is None:
        probe = points[:PROBE_POINTS]
        rows = torch.arange(probe.shape[0], device=points.device) % density.n_objects
        per_point = eager_seconds(lambda: value_and_grad_rows(density, probe, rows),
                                  points.device) \
            / probe.shape[0]
        compile_ = worth_compiling(per_point * points.shape[0], n_calls)
    return CompiledGradient(density) if compile_ else None  # None: the eager default


def in_threads(work, density: BatchedDensity, n_rows: int) -> list:
    """``work(density, rows)`` for contiguous shards ``rows`` of ``range(n_rows)``, one shard
    per torch intra-op thread, run concurrently in that many Python threads with one intra-op
    thread each (the thread count restored after); the results in shard order.

    Independent objects are split where they are independent, between whole fits: an intra-op
    split of each of a fit's many small tensor operations spends much of the second core on
    synchronisation. Each shard after the first gets its own deep copy of ``density`` (sharing
    its ``data`` tensors), so a density whose ``object_log_prob`` swaps its data into a model
    (:class:`~skyfit.survey.ManyObjects`) is not changed under another thread's evaluation.
    One shard (``work(density, arange(n_rows))`` in this thread) off the CPU (torch's threads
    as they are), on the CPU with one torch thread, below ``MIN_ROWS_PER_THREAD`` rows per
    thread, or for a density that cannot be deep-copied; a batch too small to split whose data
    hold under ``SMALL_BATCH_ELEMENTS`` elements runs with one intra-op thread (restored after),
    for the reason above. Each row's arithmetic does not depend on the shard it is in: the
    results equal one call over all rows."""
    shards = min(torch.get_num_threads(), n_rows // MIN_ROWS_PER_THREAD)
    everything = torch.arange(n_rows, device=density.device)
    if density.device.type != "cpu":
        return [work(density, everything)]
    threads = torch.get_num_threads()
    shared = {id(value): value for value in density.data.values()}
    try:
        copies = [density] + [copy.deepcopy(density, dict(shared)) for _ in range(shards - 1)]
    except (TypeError, copy.Error, RuntimeError):  # e.g. a lock or a generator: not copied
        return [work(density, everything)]  # on torch's threads, as they are

    def one_thread(copy_: BatchedDensity, rows: torch.Tensor):
        torch.set_num_threads(1)  # this thread's OpenMP setting too, not only the global one
        return work(copy_, rows)

    small = sum(value.numel() for value in density.data.values()) < SMALL_BATCH_ELEMENTS
    if shards < 2 and not small:
        return [work(density, everything)]
    torch.set_num_threads(1)
    try:
        if shards < 2:
            return [work(density, everything)]
        with ThreadPoolExecutor(shards) as pool:
            futures = [pool.submit(one_thread, copy_, rows) for copy_, rows in
                       zip(copies, torch.tensor_split(everything, shards))]
            return [future.result() for future in futures]
    finally:
        torch.set_num_threads(threads)
