"""One start resolver for every algorithm: each accepted form of ``init`` and each error."""

import math

import numpy as np
import pytest
import torch

from skyfit.errors import LogDensityError, ParameterRangeError, ParameterVectorError
from skyfit.inference import (
    FunctionDensity,
    GaussianApproximation,
    Samples,
    as_start,
    fit_map,
    init_to_feasible,
    init_to_initial,
    init_to_sample,
    init_to_uniform,
    init_to_value,
    laplace,
    resolve_start,
)
from skyfit.inference.initialization import RandomSource, resolve_gaussian, resolve_point

F64 = dict(dtype=torch.float64)


def bounded(initial=None):
    """N((1, 0), diag(0.04, 1)) on a in [0, 2], b unbounded."""
    return FunctionDensity(lambda x: -0.5 * ((x[..., 0] - 1) ** 2 / 0.04 + x[..., 1] ** 2),
                           ["a", "b"], lower=[0.0, -torch.inf], upper=[2.0, torch.inf],
                           initial=initial)


def random(seed=0):
    return RandomSource.from_torch(torch.Generator().manual_seed(seed), torch.float64, "cpu")


def test_a_vector_and_a_named_dict_give_the_same_point():
    d = bounded()
    x = resolve_point(d, torch.tensor([1.5, -2.0], **F64))
    assert x.tolist() == [1.5, -2.0]
    assert resolve_point(d, {"b": -2.0, "a": 1.5}).tolist() == [1.5, -2.0]
    assert resolve_point(d, init_to_value({"a": 1.5, "b": -2.0})).tolist() == [1.5, -2.0]


def test_a_ball_is_spread_by_scale_in_the_unconstrained_space():
    d = bounded()
    z, cov = resolve_start(d, torch.tensor([1.0, 3.0], **F64), 4000, random(), scale=0.1)
    assert cov is None and z.shape == (4000, 2)
    # a = 1 is logit(1/2) = 0 in the unconstrained space, b is unbounded: the ball is N(., 0.1^2)
    np.testing.assert_allclose(z.mean(0).numpy(), [0.0, 3.0], atol=0.01)
    np.testing.assert_allclose(z.std(0).numpy(), [0.1, 0.1], rtol=0.05)
    x, _ = resolve_start(d, torch.tensor([1.0, 3.0], **F64), 3, random(), "constrained")
    assert (x == torch.tensor([1.0, 3.0], **F64)).all()  # no scale: the point itself


def test_explicit_starts_are_used_as_given_and_fix_their_number():
    d = bounded()
    starts = torch.tensor([[0.5, 0.0], [1.5, 1.0], [1.0, -1.0]], **F64)
    x, _ = resolve_start(d, starts, 3, random(), "constrained", scale=0.5)
    assert torch.equal(x, starts)
    assert init_to_value(starts).n_points == 3
    with pytest.raises(ParameterVectorError, match=r"one start per chain \(4, 2\)"):
        resolve_start(d, starts, 4, random())


def test_initial_is_the_default_and_a_density_without_one_says_what_to_pass():
    d = bounded(initial=[0.5, 1.0])
    assert resolve_point(d, None).tolist() == [0.5, 1.0]
    assert resolve_point(d, init_to_initial()).tolist() == [0.5, 1.0]
    with pytest.raises(NotImplementedError, match=r"no initial\(\).*init_to_feasible"):
        resolve_point(bounded(), None)


def test_feasible_and_uniform_starts_lie_in_the_support():
    d = bounded()
    assert resolve_point(d, init_to_feasible()).tolist() == [1.0, 0.0]  # middle of [0, 2]; 0
    x, _ = resolve_start(d, init_to_uniform(2.0), 5000, random(), "constrained")
    z = torch.logit(x[:, 0] / 2)
    assert (x[:, 0] > 0).all() and (x[:, 0] < 2).all()
    assert z.min() > -2 and z.max() < 2 and z.std() == pytest.approx(4 / 12**0.5, rel=0.05)


def test_a_laplace_result_gives_draws_inside_the_bounds_and_an_unconstrained_metric():
    d = bounded()
    lap = laplace(d, torch.tensor([1.0, 0.0], **F64))
    assert lap.space == "constrained"
    x, cov = resolve_start(d, lap, 2000, random(), "constrained")
    assert (x[:, 0] > 0).all() and (x[:, 0] < 2).all()
    np.testing.assert_allclose(x.std(0).numpy(), [0.2, 1.0], rtol=0.06)
    # z = logit(a / 2) has dz/da = 2 at a = 1: var_z(a) = 4 * 0.04; b is unbounded
    np.testing.assert_allclose(cov.diagonal().numpy(), [0.16, 1.0], rtol=1e-8)
    mean, cov_g = resolve_gaussian(d, lap)
    assert mean.tolist() == [0.0, 0.0] and torch.allclose(cov_g, cov)


def test_an_unconstrained_gaussian_is_used_in_its_own_space():
    d = bounded()
    g = GaussianApproximation(torch.zeros(2, **F64), torch.diag(torch.tensor([0.25, 4.0], **F64)),
                              d.names, space="unconstrained")
    z, cov = resolve_start(d, init_to_sample(g), 4000, random())
    np.testing.assert_allclose(z.std(0).numpy(), [0.5, 2.0], rtol=0.05)
    assert torch.equal(cov, g.covariance)


def test_a_map_result_and_samples_convert_explicitly():
    d = bounded()
    fit = fit_map(d, torch.tensor([0.5, 1.0], **F64))
    assert torch.equal(resolve_point(d, fit), fit.x)
    draws = np.stack([np.full((10, 2), [0.5 + 0.1 * c, 0.1 * c]) for c in range(3)])
    draws[:, :, 1] += np.linspace(-1, 1, 10)
    s = Samples(draws=draws, names=d.names, log_density=np.zeros((3, 10)), sampler="test")
    x, cov = resolve_start(d, as_start(s), 5, random(), "constrained")
    # the last draw of each chain, repeated for the fourth and fifth chain
    np.testing.assert_allclose(x.numpy(), draws[[0, 1, 2, 0, 1], -1])
    assert cov.shape == (2, 2) and torch.isfinite(cov).all()
    with pytest.raises(TypeError, match="as_start takes"):
        as_start(torch.zeros(2))


def test_wrong_shapes_names_and_values_are_clear_errors():
    d = bounded()
    with pytest.raises(ParameterVectorError, match="expected 2"):
        resolve_point(d, torch.zeros(3))
    with pytest.raises(ParameterVectorError,
                       match=r"unknown or ambiguous names \['c'\], missing names \['b'\]"):
        resolve_point(d, {"a": 1.0, "c": 2.0})
    with pytest.raises(ParameterRangeError, match=r"a=3 not in \[0, 2\]"):
        resolve_point(d, torch.tensor([3.0, 0.0]))
    with pytest.raises(ParameterRangeError, match=r"point 1 of 2: a=-1 not in \[0, 2\]"):
        resolve_start(d, torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), 2)
    with pytest.raises(ParameterVectorError, match="NaN"):
        resolve_point(d, torch.tensor([1.0, float("nan")]))
    with pytest.raises(TypeError, match="is not a start"):
        resolve_point(d, object())
    log = FunctionDensity(lambda x: torch.log(x[..., 0] - 1.0), ["w"])
    with pytest.raises(LogDensityError, match=r"log-density is nan at the start point \(w=0\.5\)"):
        resolve_point(log, torch.tensor([0.5]))


def test_start_dicts_take_unique_name_ends_and_angles_outside_their_period():
    # the rule of priors: a name or the one name ending with ".key"; an angle given outside
    # its period is the same angle, moved into it
    d = FunctionDensity(lambda x: -(x**2).sum(-1), ["lens.phi", "shear.gamma_1", "src.gamma_1"],
                        lower=[0.0, -1.0, -1.0], upper=[math.pi, 1.0, 1.0],
                        periodic=["lens.phi"])
    x = resolve_point(d, {"phi": -0.3, "shear.gamma_1": 0.1, "src.gamma_1": 0.2})
    assert torch.allclose(x, torch.tensor([math.pi - 0.3, 0.1, 0.2], dtype=x.dtype))
    assert resolve_point(d, torch.tensor([0.6 + math.pi, 0.0, 0.0]))[0] == pytest.approx(0.6)
    with pytest.raises(ParameterVectorError, match=r"ambiguous names \['gamma_1'\]"):
        resolve_point(d, {"phi": 0.1, "gamma_1": 0.1, "src.gamma_1": 0.2})
    with pytest.raises(ParameterVectorError, match="two keys name one parameter"):
        resolve_point(d, {"phi": 0.1, "lens.phi": 0.1, "shear.gamma_1": 0.0,
                          "src.gamma_1": 0.2})
    with pytest.raises(ParameterRangeError, match="gamma_1"):
        resolve_point(d, {"phi": 0.1, "shear.gamma_1": 3.0, "src.gamma_1": 0.2})


def test_wrapping_an_angle_never_lands_on_the_excluded_upper_bound():
    from skyfit.inference.circular import wrap_periodic

    lower = torch.zeros(1, dtype=torch.float32)
    upper = torch.full((1,), math.pi, dtype=torch.float32)
    periodic = torch.ones(1, dtype=torch.bool)
    for value in (-1e-9, -1e-30, math.pi, -math.pi, 7.0):
        wrapped = float(wrap_periodic(torch.tensor([value], dtype=torch.float32), periodic,
                                      lower, upper))
        assert 0.0 <= wrapped < float(upper)
