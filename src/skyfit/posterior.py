"""Posterior: likelihood + priors as a log-density of one flat parameter vector."""

from __future__ import annotations

import math
from collections.abc import Mapping

import caskade as ck
import torch
from torch.distributions import Distribution

from ._display import Table, format_value
from ._forward import forward
from ._graph import ModuleList, data_arrays, node_paths, param_paths, short_names
from .errors import NoFreeParameterError, ParameterVectorError
from .inference.checkpoint import data_fingerprint
from .inference.circular import wrap_periodic
from .inference.density import LogDensity
from .priors import GroupedPriors, default_prior_log_prob, param_bounds

__all__ = ["Posterior"]


class _Joint(ck.Module):
    # Holds the likelihood so that likelihood and module-level prior terms (any module in the
    # graph defining a @forward `log_prior()`, e.g. a VAE source's latent prior) are evaluated in
    # one caskade context from one parameter vector.
    def __init__(self, likelihood: ck.Module):
        super().__init__("posterior")
        self.likelihood = likelihood
        # linked by position: unnamed modules of one class do not collide (the link also fixes
        # caskade's order of the parameters, which checkpoints and fitted vectors rely on)
        self.prior_modules = ModuleList([
            node for node in likelihood.topological_ordering()
            if isinstance(node, ck.Module) and callable(getattr(node, "log_prior", None))
        ], name="prior_modules")

    @forward
    def __call__(self):
        total = self.likelihood()
        for module in self.prior_modules:
            total = total + module.log_prior()
        return total


class Posterior(LogDensity):
    """``log p(x | data) = log L(x) + log prior(x)`` for the flat vector ``x`` of dynamic Params.

    The vector follows caskade's ``get_values()`` order of the likelihood graph's dynamic
    parameters. Bounds come from each Param's ``valid``; outside them the log-density is ``-inf``.

    Names (:attr:`names`, ``"name[i]"`` for the entries of a vector Param) are read off the
    module graph, so the same model gets the same names in every process. Each Param has a
    path from the likelihood: one segment per module, its name, or, when a sibling module has
    the same name, the key it is linked under (``sources.1`` for element 1 of a container).
    A Param's name is the shortest suffix of its path, at least ``module.param``, that no other
    parameter's path ends with: ``"Sersic.flux"`` while one Sersic is free,
    ``"sources.0.flux"`` and ``"sources.1.flux"`` for two unnamed Sersics of one Scene,
    ``"scenes.0.Sersic.flux"`` for the Sersic of the first of two unnamed Scenes of an
    ``ImageStack``, ``"epoch1.host.flux"`` when they are named. :attr:`paths` maps each name to
    its full path.

    Priors: ``priors={param_or_name: torch.distributions.Distribution}``, keyed by the Param, its
    name, or any dotted end of its path that is unique (``"ImageStack.scenes.1.Sersic.flux"``);
    a Param without one
    gets the default: uniform within ``valid`` when both bounds are finite, otherwise flat
    (improper; say so in a paper, or give a prior). Modules may also add their own prior term by
    defining a ``@forward log_prior()`` (used by :class:`~skyfit.VAESource`).

    A batch ``x (..., dim)`` is evaluated in one call (``torch.vmap`` over the model).

    Example:
        >>> import torch
        >>> from skyfit import GaussianLightCurve, PhotometryLikelihood, Posterior
        >>> lc = GaussianLightCurve(t0=0.0, sigma=2.0, peak_flux=1.0)
        >>> t = torch.linspace(-5, 5, 11, dtype=torch.float64)
        >>> flux = lc.flux(t).detach()  # noiseless data, made before the Params become dynamic
        >>> lc.to_dynamic()
        >>> post = Posterior(PhotometryLikelihood(lc, t, flux, 0.1 * torch.ones(11)))
        >>> post.names
        ['GaussianLightCurve.t0', 'GaussianLightCurve.sigma', 'GaussianLightCurve.peak_flux']
        >>> x = torch.tensor([0.0, 2.0, 1.0], dtype=torch.float64)
        >>> round(post(x).item(), 4)  # the truth: only -1/2 sum log(2 pi 0.1^2), flat priors
        15.2201
    """

    def __init__(self, likelihood: ck.Module, priors: Mapping | None = None,
                 dtype: torch.dtype = torch.float64, device=None):
        self.likelihood = likelihood
        self.joint = _Joint(likelihood)
        params = list(self.joint.dynamic_params)
        if not params:
            raise NoFreeParameterError("the likelihood graph has no dynamic parameters to infer: "
                                       "call .to_dynamic() on the modules or Params to fit")
        if len(self.joint.dynamic_param_groups) > 1:
            raise ValueError(f"the dynamic parameters are in several caskade groups "
                             f"{list(self.joint.dynamic_param_groups)}; a Posterior takes one "
                             f"flat vector: put them in one group")
        self.params = params
        self.names, self.slices, lowers, uppers = [], {}, [], []
        paths = param_paths(likelihood, params)
        self.paths = dict(zip(short_names(paths), paths))  # name -> path segments (a tuple)
        pos = 0
        for p, label in zip(params, self.paths):
            shape = tuple(p.shape)
            size = max(1, math.prod(shape))
            lo, hi = param_bounds(p, dtype, device)
            lowers.append(lo.reshape(-1))
            uppers.append(hi.reshape(-1))
            if shape == ():
                self.names.append(label)
            else:
                self.names += [f"{label}[{i}]" for i in range(size)]
            self.slices[label] = (slice(pos, pos + size), shape, p)
            pos += size
        self.lower = torch.cat(lowers)
        self.upper = torch.cat(uppers)
        # entries of Params declared cyclic=True (angles) wrap around their bounds
        self._periodic = torch.cat([torch.full((max(1, math.prod(p.shape)),), bool(p.cyclic),
                                               device=self.lower.device) for p in params])
        self.priors = {}
        for key, dist in (priors or {}).items():
            label = self._resolve(key)
            if not isinstance(dist, Distribution):
                raise TypeError(f"prior for {label} must be a torch Distribution, got {type(dist)}")
            dist._validate_args = False  # support is handled here: outside it log p = -inf
            self.priors[label] = dist
        # the default priors (uniform within valid, or flat) are constant inside the bounds:
        # their sum is computed once instead of per parameter block at every evaluation
        self._default_log_prior = sum(
            float(default_prior_log_prob(torch.zeros(shape, dtype=dtype, device=device),
                                         self.lower[sl].reshape(shape),
                                         self.upper[sl].reshape(shape)))
            for label, (sl, shape, _) in self.slices.items() if label not in self.priors)

    @property
    def units(self) -> dict[str, str]:
        """``{name: units}`` of each entry of ``x`` (the Params' declared unit strings)."""
        return {name: getattr(p, "units", None) or "" for label, (_, shape, p) in
                self.slices.items() for name in self.names_of(label, shape)}

    def fingerprint(self) -> dict:
        """Names, bounds and the shape, dtype and SHA-256 of every data array and constant of
        the likelihood graph (module tensors such as ``data``/``variance``, static Params such
        as observation times), every module's settings (public attributes holding plain
        numbers, strings or collections of them, e.g. a light curve's ``transition_fraction``
        or a likelihood's ``space``: options that change the density without being Params),
        plus the priors' types and parameters: a checkpoint written with it cannot be resumed
        on other data or another model."""
        arrays = {f"prior.{label}.{k}": v for label, dist in self.priors.items()
                  for k, v in vars(dist).items() if isinstance(v, torch.Tensor)}
        fingerprint = data_fingerprint(self.names, lower=self.lower, upper=self.upper,
                                       **data_arrays(self.likelihood), **arrays)
        fingerprint["settings"] = module_settings(self.likelihood)
        fingerprint["priors"] = {label: type(d).__name__ for label, d in self.priors.items()}
        return fingerprint

    def names_of(self, label: str, shape: tuple) -> list[str]:
        """The entry names of the Param ``label`` of ``shape``."""
        return [label] if shape == () else [f"{label}[{i}]" for i in range(math.prod(shape))]

    def __repr__(self) -> str:
        return str(self._table())

    def _repr_html_(self) -> str:
        return self._table().html()

    def _table(self) -> Table:
        rows = []
        for label, (sl, shape, p) in self.slices.items():
            lo, hi = float(self.lower[sl].min()), float(self.upper[sl].max())
            # the default prior is uniform only where both bounds are finite (flat otherwise,
            # default_prior_log_prob); a one-sided valid range still bounds the flat prior
            bounds = f"[{format_value(lo)}, {format_value(hi)}]"
            default = "flat" if lo == -math.inf and hi == math.inf else \
                f"flat on {bounds}" if math.isinf(lo) or math.isinf(hi) else f"uniform on {bounds}"
            prior = type(self.priors[label]).__name__ if label in self.priors else default
            rows.append((label, "x".join(map(str, shape)) or "scalar",
                         getattr(p, "units", None) or "", prior))
        return Table(f"Posterior: dim {self.dim}, {len(self.slices)} parameters",
                     ["parameter", "shape", "units", "prior"], rows)

    def _resolve(self, key) -> str:
        # a Param, its name, or any suffix of its path that no other parameter's path ends with
        for label, (_, _, p) in self.slices.items():
            if key is p or key == label:
                return label
        if isinstance(key, str):
            matches = [label for label, path in self.paths.items()
                       if f".{'.'.join(path)}".endswith(f".{key}")]
            if len(matches) == 1:
                return matches[0]
            if matches:
                raise KeyError(f"prior given for {key!r}, which names several parameters "
                               f"{matches}: use one of these names")
        raise KeyError(f"prior given for {key!r}, which is not a dynamic parameter; "
                       f"parameters are {list(self.slices)}")

    @property
    def periodic(self) -> torch.Tensor:
        """``(dim,)`` mask of the entries whose Param is declared ``cyclic=True``."""
        return self._periodic

    # -- values ---------------------------------------------------------------------------
    def initial(self) -> torch.Tensor:
        """The current values of the dynamic Params as a flat vector (a starting point); the
        values of ``cyclic`` Params (angles) are wrapped into their range (a position angle of
        ``-0.3`` starts a Param valid on ``[0, pi)`` at ``pi - 0.3``, the same ellipse)."""
        x = self.joint.get_values()
        x = torch.as_tensor(x, dtype=self.dtype, device=self.device).reshape(-1)
        if x.shape[-1] != self.dim:
            raise ParameterVectorError("some dynamic parameters have no value; set them first")
        x = wrap_periodic(x, self._periodic, self.lower, self.upper)
        self.check_inside(x)
        return x

    def set(self, x) -> None:
        """Write ``x`` into the model's dynamic Params (they stay dynamic)."""
        x = self.as_tensor(x)
        self.check_inside(x)
        self.joint.set_values(x.detach())

    def unpack(self, x) -> dict[str, torch.Tensor]:
        """``{"module.param": value}`` with each Param's own shape."""
        x = self.as_tensor(x)
        return {label: x[..., sl].reshape(x.shape[:-1] + shape)
                for label, (sl, shape, _) in self.slices.items()}

    # -- density --------------------------------------------------------------------------
    def log_prior(self, x: torch.Tensor) -> torch.Tensor:
        """Log prior of Param-level priors (not module terms) for ``x (..., dim)``."""
        grouped = self.__dict__.get("_grouped_priors")
        if grouped is None or not grouped.built_for(self.priors):
            # built again if the priors were replaced after construction
            grouped = self._grouped_priors = GroupedPriors(self.priors, self.slices)
        return grouped(x) + self._default_log_prior

    def _param_values(self, x: torch.Tensor) -> list[torch.Tensor]:
        # One value per Param, handed to caskade as a sequence: scalars come from one unbind
        # (one autograd node for all of them) instead of caskade's slice + view per Param, which
        # for a dozen parameters cost as much as the model's own small operations
        entries = x.unbind(-1)
        return [entries[sl.start] if shape == () else x[..., sl].reshape(x.shape[:-1] + shape)
                for sl, shape, _ in self.slices.values()]

    def _joint_of_vector(self, x: torch.Tensor) -> torch.Tensor:
        return self.joint(self._param_values(x))  # caskade fills the dynamic Params in order

    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """Log-likelihood (plus module prior terms) for ``x (..., dim)``."""
        if x.ndim == 1:
            return self._joint_of_vector(x)
        flat = x.reshape(-1, self.dim)
        return torch.vmap(self._joint_of_vector)(flat).reshape(x.shape[:-1])

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x | data)`` for ``x`` of shape ``(..., dim)``: ``-inf`` outside the bounds,
        otherwise log-likelihood + log-prior, all points in one call."""
        x = torch.as_tensor(x, dtype=self.dtype, device=self.device)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ParameterVectorError(f"parameter vector has trailing length "
                                       f"{tuple(x.shape)[-1:] or 0}, expected {self.dim}: "
                                       f"{self.names}")
        inside = ((x >= self.lower) & (x <= self.upper)).all(-1)
        total = self.log_likelihood(x) + self.log_prior(x)
        return torch.where(inside, total, torch.full_like(total, -math.inf))


# caskade's own bookkeeping on every Module (parameter lists, description, meta, the
# subgraph options it sets on use), not settings; nor where a module's tensors live (a run on
# the GPU resumes on the CPU: the data fingerprint ignores the device too)
_NOT_SETTINGS = (frozenset(vars(ck.Module("settings_probe")))
                 | {"subgraph_kwargs", "device", "dtype"})


def module_settings(root: ck.Node) -> dict:
    """JSON-ready settings of every module below ``root``, keyed ``path.attr``: its public
    attributes whose values are plain (None, bool, int, float, str, or tuples, lists, sets and
    str-keyed dicts of those; sets sorted), except caskade's own and ``device``/``dtype``.
    Tensors and Params are left to :func:`~skyfit._graph.data_arrays`; other objects (child
    modules, data containers) are not settings.

    Example:
        >>> from skyfit.lightcurves import Villar
        >>> module_settings(Villar(transition_fraction=0.2))["Villar.transition_fraction"]
        0.2
    """
    out = {}
    for node, path in node_paths(root).items():
        if not isinstance(node, ck.Module):
            continue
        for attr, value in vars(node).items():
            if attr.startswith("_") or attr in _NOT_SETTINGS:
                continue
            plain = _plain(value)
            if plain is not _NOT_PLAIN:
                out[".".join(path + (attr,))] = plain
    return out


_NOT_PLAIN = object()


def _plain(value):
    """``value`` as JSON-ready plain data, or ``_NOT_PLAIN``."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # JSON has no nan/inf that compare equal after a round trip
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (set, frozenset)):
        items = [_plain(v) for v in value]
        if any(v is _NOT_PLAIN for v in items):
            return _NOT_PLAIN
        return sorted(items, key=repr)
    if isinstance(value, (tuple, list)):
        items = [_plain(v) for v in value]
        return _NOT_PLAIN if any(v is _NOT_PLAIN for v in items) else items
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        items = {k: _plain(v) for k, v in value.items()}
        return _NOT_PLAIN if any(v is _NOT_PLAIN for v in items.values()) else items
    return _NOT_PLAIN
