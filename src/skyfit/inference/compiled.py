"""A log-density whose batched value and gradient run through ``torch.compile``."""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Callable

import torch

from ..errors import CompileFallbackWarning, ParameterVectorError
from .density import LogDensity
from .transforms import UnconstrainedDensity

__all__ = ["CompiledDensity", "compile", "compile_if_worth", "missing_compiler", "eager_seconds",
           "worth_compiling"]

# sample_nuts / sample_hmc with compile=None compile when the eager gradients of the run are
# predicted to take longer than this: compiling the supernova example's value and gradient takes
# tens of seconds to minutes per batch shape, a 4-chain NUTS run uses 3 shapes (1, 2, 4 chains),
# and a compiled call saves a fraction of an eager one (the compiled_vs_eager benchmark)
WORTH_COMPILING_S = 300.0
GRADIENTS_PER_ITERATION = 16  # NUTS at tree depth 4, a typical depth of a well-adapted run


def missing_compiler(device: torch.device, backend: str = "inductor") -> str | None:
    """Why ``backend`` cannot compile for ``device`` here (a sentence), or None if it can.

    Inductor writes C++ for CPU tensors: it needs a C++ compiler (``$CXX``, ``g++``, ``c++``
    or ``clang++`` on the PATH)."""
    if backend != "inductor" or torch.device(device).type != "cpu":
        return None
    names = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
    if any(name and shutil.which(name) for name in names):
        return None
    return "no C++ compiler on the PATH (set $CXX or install g++) for torch.compile on CPU"


def _guard_options() -> dict | None:
    # dynamo re-checks its guards before every call: for a caskade model, several hundred
    # attribute, identity and dict checks over the whole graph, a large share of a compiled
    # call of a small model. Only the tensor guards are kept (dtype, shape, device of the
    # parameter vector, the data and the static Param values, which are read afresh on every
    # call); the rest of the model (its structure, which Params are dynamic, Python numbers such
    # as a PSF's size) is taken as it was at the first call of a shape.
    try:
        from torch.compiler import keep_tensor_guards_unsafe  # torch >= 2.8
    except ImportError:
        return None
    return {"guard_filter_fn": keep_tensor_guards_unsafe}


def _bucket(n: int) -> int:
    # batches are padded to the next power of two: log2(n_chains) + 1 compiled shapes serve
    # every subset of chains a NUTS step evaluates, instead of one compile per subset size
    return 1 << max(0, n - 1).bit_length()


class CompiledDensity(LogDensity):
    """``density`` with ``log_prob`` and ``value_and_grad`` compiled by ``torch.compile``.

    The log-density is compiled as a function of the flat vector (for a Posterior: the
    parameter vector handed to the caskade model with caskade's public call), with
    ``dynamic=False``: one compiled graph per input shape. A single point ``(dim,)`` is one
    shape; a batch ``(..., dim)`` is flattened to ``(n, dim)`` and padded (with copies of its
    first point, results dropped) to the next power of two, so a sampler's changing subsets of
    chains reuse a few compiled shapes. Gradients come from the compiled backward graph.

    Tensors are read afresh on every call (the data, static Param values set after compiling);
    anything else about the model is fixed when a shape is first compiled: compile again after
    changing its structure (a Param made static or dynamic, a module replaced).

    Where the backend cannot compile (no C++ compiler for CPU, or the backend fails on the
    first call of a shape) it warns with :class:`~skyfit.errors.CompileFallbackWarning` and
    evaluates ``density`` eagerly. Second derivatives (:func:`~skyfit.inference.laplace`'s
    Hessian) are taken on the eager ``density``.

    Attributes:
        eager_density: the density compiled.
        info: ``compile_s`` (wall time of the first call of each new shape, compilation
            included), ``n_compiles`` (shapes compiled), ``shapes``, ``fallback`` (why it runs
            eagerly, or None).

    A model's own methods (``unpack``, ``paths``, ...) are those of ``eager_density``.

    Example:
        >>> import torch
        >>> from skyfit.inference import FunctionDensity
        >>> d = compile(FunctionDensity(lambda x: -0.5 * (x**2).sum(-1), 2), backend="eager")
        >>> d.value_and_grad(torch.ones(3, 2))[1]
        tensor([[-1., -1.],
                [-1., -1.],
                [-1., -1.]], dtype=torch.float64)
        >>> d.info["n_compiles"]
        1
    """

    def __init__(self, density: LogDensity, backend: str = "inductor", mode: str | None = None):
        self.eager_density = density
        self.names, self.lower, self.upper = density.names, density.lower, density.upper
        self.info = {"compile_s": 0.0, "n_compiles": 0, "shapes": [], "backend": backend,
                     "fallback": missing_compiler(density.device, backend)}
        self._seen = set()
        self._compiled = None
        if self.info["fallback"] is not None:
            self._fall_back(self.info["fallback"])
        else:
            self._compiled = torch.compile(self._rows_log_prob, backend=backend, mode=mode,
                                           dynamic=False, options=_guard_options())

    @property
    def periodic(self) -> torch.Tensor:
        """The eager density's periodic mask."""
        return self.eager_density.periodic

    @property
    def units(self) -> dict[str, str]:
        """The eager density's ``{name: units}``."""
        return self.eager_density.units

    def initial(self) -> torch.Tensor:
        """The eager density's start point."""
        return self.eager_density.initial()

    def set(self, x) -> None:
        """Set the eager density's model to ``x`` (where it has a model)."""
        self.eager_density.set(x)

    def _fall_back(self, reason: str) -> None:
        self.info["fallback"] = reason
        self._compiled = None
        warnings.warn(CompileFallbackWarning(f"torch.compile is not used ({reason}): the "
                                             "log-density is evaluated eagerly"), stacklevel=3)

    def _rows_log_prob(self, rows: torch.Tensor) -> torch.Tensor:
        # the traced function: one point without a batch axis (no vmap), else the batch
        if rows.shape[0] == 1:
            return self.eager_density.log_prob(rows[0])[None]
        return self.eager_density.log_prob(rows)

    def _rows(self, x) -> tuple[torch.Tensor, int]:
        x = torch.as_tensor(x, dtype=self.dtype, device=self.device)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ParameterVectorError(f"parameter vector has trailing length "
                                       f"{tuple(x.shape)[-1:] or 0}, expected {self.dim}: "
                                       f"{self.names}")
        rows = x.reshape(-1, self.dim)
        n = rows.shape[0]
        size = _bucket(n)
        if size > n:
            rows = torch.cat([rows, rows[:1].detach().expand(size - n, self.dim)])
        return rows, n

    def _first_call(self, key, call):
        # the first call of a shape (and grad mode) compiles: its wall time is compile_s
        if key in self._seen or self._compiled is None:
            return call()
        start = time.perf_counter()
        try:
            result = call()
        except Exception as error:  # the backend could not compile: evaluate eagerly
            if type(error).__name__ != "BackendCompilerFailed":
                raise
            self._fall_back(f"the {self.info['backend']} backend failed: {error}")
            return call()
        self.info["compile_s"] += time.perf_counter() - start
        self.info["n_compiles"] += 1
        self.info["shapes"].append(key)
        self._seen.add(key)
        return result

    def _evaluate(self, rows: torch.Tensor) -> torch.Tensor:
        if self._compiled is None:
            return self._rows_log_prob(rows)
        return self._compiled(rows)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x)`` for ``x (..., dim)`` through the compiled graph of its (bucketed) shape."""
        x = torch.as_tensor(x, dtype=self.dtype, device=self.device)
        rows, n = self._rows(x)
        key = (tuple(rows.shape), torch.is_grad_enabled() and rows.requires_grad)
        return self._first_call(key, lambda: self._evaluate(rows))[:n].reshape(x.shape[:-1])

    def value_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log p(x), grad log p(x))`` for ``x (..., dim)``, the gradient from the compiled
        backward graph."""
        x = torch.as_tensor(x, dtype=self.dtype, device=self.device)
        rows, n = self._rows(x.detach())

        def call():
            with torch.enable_grad():
                leaf = rows.detach().requires_grad_(True)
                logp = self._evaluate(leaf)
                if not logp.requires_grad:
                    return logp.detach(), torch.zeros_like(leaf)
                (grad,) = torch.autograd.grad(logp.sum(), leaf, allow_unused=True)
            return logp.detach(), torch.zeros_like(leaf) if grad is None else grad

        logp, grad = self._first_call((tuple(rows.shape), "value_and_grad"), call)
        return logp[:n].reshape(x.shape[:-1]), grad[:n].reshape(x.shape)


def compile(density: LogDensity, backend: str = "inductor",
            mode: str | None = None) -> CompiledDensity:
    """``density`` with its value and gradient compiled by ``torch.compile`` (see
    :class:`CompiledDensity`); pass the result to ``fit_map``, ``laplace``, ``fit_vi`` or the
    samplers in place of ``density``.

    Arguments:
        density: any :class:`~skyfit.LogDensity` (a Posterior, a FunctionDensity, ...).
        backend, mode: ``torch.compile``'s; ``backend="eager"`` traces without generating code
            (a check that the model traces, and no C++ compiler needed).

    Example:
        >>> import torch
        >>> from skyfit.inference import FunctionDensity
        >>> d = compile(FunctionDensity(lambda x: -(x**2).sum(-1), 1), backend="eager")
        >>> d(torch.tensor([2.0])).item()
        -4.0
    """
    if isinstance(density, CompiledDensity):
        return density
    return CompiledDensity(density, backend, mode)


def eager_seconds(call: Callable[[], object], device: torch.device | str | None = None) -> float:
    """This thread's CPU seconds for a second ``call()`` (the first pays one-off costs).

    The probe of every ``compile=None`` decision (:func:`compile_if_worth`,
    :func:`~skyfit.inference.many_newton.gradient_for`, the chains of
    :func:`~skyfit.inference.sample_nuts_many`). CPU time, not the wall's: on a busy machine
    the wall time of a probe grew tenfold and turned a 10 s eager fit into a compilation of
    tens of seconds. The calling thread's time only: an operation torch splits across intra-op
    threads counts its share on this thread, so a probe under-predicts such runs rather than
    compiling for them (the small operations of a fit rarely split).

    On a CUDA ``device`` the call's kernels run after it returns, so this thread's CPU time
    would measure their launch only: there the probe waits for the device before and after the
    second call (``torch.cuda.synchronize``) and reads the wall clock."""
    call()
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        call()
        torch.cuda.synchronize(device)
        return time.perf_counter() - start
    start = time.thread_time()
    call()
    return time.thread_time() - start


def worth_compiling(seconds_per_call: float, n_calls: float) -> bool:
    """Whether ``n_calls`` eager calls of ``seconds_per_call`` take over ``WORTH_COMPILING_S``."""
    return seconds_per_call * n_calls > WORTH_COMPILING_S


def compile_if_worth(density: LogDensity, compile_: bool | None, n_iterations: int,
                     n_chains: int) -> LogDensity:
    """``compile(density)`` if ``compile_`` is True, or if it is None and the run's eager
    gradients are predicted to take over ``WORTH_COMPILING_S`` seconds: one batched eager
    value-and-gradient of ``n_chains`` points (:func:`eager_seconds`), times
    ``GRADIENTS_PER_ITERATION * n_iterations``. ``density`` as it is otherwise."""
    if compile_ is False or isinstance(density, CompiledDensity):
        return density
    if compile_ is None:
        zeros = torch.zeros(n_chains, density.dim, dtype=density.dtype, device=density.device)
        probe = UnconstrainedDensity(density).to_constrained(zeros)  # inside the bounds
        seconds = eager_seconds(lambda: density.value_and_grad(probe), density.device)
        if not worth_compiling(seconds, GRADIENTS_PER_ITERATION * n_iterations):
            return density
    return CompiledDensity(density)
