"""Exceptions and warnings raised by skyfit: each says what was wrong, with which values."""

__all__ = [
    "SkyfitError",
    "ShapeError",
    "DataError",
    "ParameterRangeError",
    "ParameterVectorError",
    "LogDensityError",
    "CorruptFileError",
    "DataMismatchError",
    "HessianWarning",
    "ConvergenceWarning",
    "CompileFallbackWarning",
    "LogDensityWarning",
    "NoFreeParameterError",
]


class SkyfitError(Exception):
    """Base class of every skyfit exception."""


class ShapeError(SkyfitError, ValueError):
    """Arrays whose shapes do not fit together (data vs model, stamps vs network, ...)."""


class DataError(SkyfitError, ValueError):
    """Data that cannot be used as given: NaN or inf values, non-positive variances or errors."""


class ParameterRangeError(SkyfitError, ValueError):
    """A parameter value lies outside the ``valid`` range of its ``Param``."""


class ParameterVectorError(SkyfitError, ValueError):
    """A flat parameter vector of the wrong length or with non-finite entries."""


class LogDensityError(SkyfitError, RuntimeError):
    """A log-density that is NaN or +inf where it must be finite (for instance at a start point)."""


class CorruptFileError(SkyfitError, ValueError):
    """A file that is not what it should be: empty, truncated, of another kind, or changed since
    it was written (its checksum does not match). The message names the file and the mismatch."""


class DataMismatchError(SkyfitError, ValueError):
    """A file written for other data or another model than the one at hand (its fingerprint of
    data shapes, data hashes or parameter names differs), e.g. a checkpoint resumed on new data."""


class HessianWarning(UserWarning):
    """The Hessian at an optimum is not negative definite; the covariance was repaired."""


class ConvergenceWarning(UserWarning):
    """An optimiser or sampler stopped without meeting its convergence criterion."""


class LogDensityWarning(UserWarning):
    """The log-density was NaN or inf at some of the points a sampler or optimiser evaluated."""


class NoFreeParameterError(SkyfitError, ValueError):
    """A likelihood or log-density with no free parameter: there is nothing to fit."""


class ModelFileError(SkyfitError, ValueError):
    """A saved model or result cannot be written or read: an unregistered class, a value with no
    file form, a file that is not a skyfit model file."""


class UnitsError(SkyfitError, ValueError):
    """A Quantity's units cannot be converted to the units a parameter is declared in."""


class CompileFallbackWarning(UserWarning):
    """``torch.compile`` cannot be used here (e.g. no C++ compiler): evaluated eagerly instead."""
