"""Every public @forward method of every skyfit module takes its inputs by position, with static
Params and with dynamic ones (the parameter vector by ``params=``), and gives what a call by
keyword gives. Modules are found from the subpackages' ``__all__``, so new ones are covered."""

import dataclasses
import importlib
import inspect

import caskade as ck
import pytest
import torch

import skyfit
from skyfit._forward import forward

f64 = torch.float64
PACKAGES = ("sources", "lenses", "lightcurves", "instruments", "scenes", "likelihoods")


def _grid():
    return skyfit.PixelGrid((8, 8), 0.1)


def _gaussian_kernel():
    r = torch.arange(-2, 3, dtype=f64)
    k = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / 2)
    return k / k.sum()


def _vae_source():
    from skyfit.generative import load_pretrained
    model = load_pretrained("galaxy32")
    return skyfit.VAESource(model, latent_value=torch.full((model.latent_dim,), 0.2), scale=0.02)


def _scene():
    return skyfit.Scene(_grid(), [skyfit.Sersic(Re=0.2)], skyfit.GaussianPSF(sigma=0.1, size=5),
                        [skyfit.PointSource(x0=0.1)])


# Modules that need arguments (the others are built with their defaults); light curves with two
# bands, so that `flux(t, band)` is tested with the band by position
FACTORIES = {
    "Pixelated": lambda: skyfit.Pixelated(values=torch.rand(5, 5, dtype=f64,
                                                            generator=torch.Generator()
                                                            .manual_seed(0))),
    "VAESource": _vae_source,
    "CompositeLens": lambda: skyfit.CompositeLens([skyfit.SIE(),
                                                   skyfit.ExternalShear(gamma1=0.05)]),
    "LensedPointSource": lambda: skyfit.LensedPointSource(skyfit.SIE(q=0.8), skyfit.LensGeometry(),
                                                          x0=0.05, y0=0.02),
    "LensedSupernova": lambda: skyfit.LensedSupernova(
        skyfit.SIS(), skyfit.LensGeometry(), skyfit.GaussianLightCurve(peak_flux=2.0),
        torch.tensor([-1.0, 0.0, 1.0], dtype=f64), x0=0.05),
    "GaussianLightCurve": lambda: skyfit.GaussianLightCurve(peak_flux=[1.0, 2.0], bands="gr"),
    "Bazin": lambda: skyfit.Bazin(A=[1.0, 2.0], bands="gr"),
    "Villar": lambda: skyfit.Villar(A=[1.0, 2.0], bands="gr"),
    "PixelatedPSF": lambda: skyfit.PixelatedPSF(kernel=_gaussian_kernel()),
    "Scene": _scene,
    "ImageStack": lambda: skyfit.ImageStack([_scene(), _scene()]),
    "LensedSource": lambda: skyfit.LensedSource(skyfit.SIS(), [skyfit.Sersic()]),
    "LensedImage": lambda: skyfit.LensedImage(_grid(), skyfit.SIE(), [skyfit.Sersic(Re=0.2)],
                                              psf=skyfit.GaussianPSF(size=5)),
    "GaussianLikelihood": lambda: skyfit.GaussianLikelihood(_scene(), torch.ones(8, 8),
                                                            variance=torch.ones(8, 8)),
    "PoissonLikelihood": lambda: skyfit.PoissonLikelihood(_scene(), torch.ones(8, 8)),
    "NonCentredPopulation": lambda: skyfit.lightcurves.NonCentredPopulation(
        "pop", 3, mu=0.5, tau=0.2, eta=[0.1, -0.3, 0.2]),
    "PhotometryLikelihood": lambda: skyfit.PhotometryLikelihood(
        skyfit.GaussianLightCurve(), torch.linspace(-5, 5, 4, dtype=f64), torch.ones(4),
        torch.ones(4)),
}

_XY = torch.tensor([[0.3, -0.2], [0.5, 0.9]], dtype=f64)

# A value for each input name (called with the module)
INPUTS = {
    "x": lambda m: _XY, "y": lambda m: _XY.T.contiguous() - 0.1,
    "beta_x": lambda m: torch.tensor(0.05, dtype=f64),
    "beta_y": lambda m: torch.tensor(-0.02, dtype=f64),
    "t": lambda m: torch.linspace(-5.0, 5.0, 4, dtype=f64),
    "band": lambda m: torch.tensor([0, 1, 1, 0]),
    "z": lambda m: torch.tensor(0.5, dtype=f64), "z1": lambda m: torch.tensor(0.3, dtype=f64),
    "z2": lambda m: torch.tensor(1.5, dtype=f64), "z_l": lambda m: torch.tensor(0.5, dtype=f64),
    "z_s": lambda m: torch.tensor(2.0, dtype=f64),
    "fermat": lambda m: torch.tensor(0.1, dtype=f64),
    "mass": lambda m: torch.tensor(1e11, dtype=f64),
    "sigma_v": lambda m: torch.tensor(200.0, dtype=f64),
    "m200c": lambda m: torch.tensor(1e13, dtype=f64),
    "concentration": lambda m: torch.tensor(5.0, dtype=f64),
    "model": lambda m: torch.full((8, 8), 3.0, dtype=f64),
    "generator": lambda m: torch.Generator().manual_seed(0),
    "pixel_scale": lambda m: 0.1, "dtype": lambda m: f64, "grid": lambda m: _grid(),
    "x0": lambda m: torch.tensor(0.1, dtype=f64), "y0": lambda m: torch.tensor(-0.1, dtype=f64),
    "flux": lambda m: torch.tensor(2.0, dtype=f64),
    "stamp": lambda m: m.stamp(),
    "images": lambda m: m.images(),
    "i": lambda m: 1,
}


def _module_classes() -> dict:
    classes = {}
    for package in PACKAGES:
        namespace = importlib.import_module(f"skyfit.{package}")
        for name in namespace.__all__:
            obj = getattr(namespace, name)
            if inspect.isclass(obj) and issubclass(obj, ck.Module):
                classes[name] = obj
    # base classes (ThinLens, LightCurve, ...) are tested through their subclasses
    return {name: cls for name, cls in classes.items()
            if not any(other is not cls and issubclass(other, cls) for other in classes.values())}


# the wrapper function that skyfit's @forward puts around every method (other decorators, such
# as torch.no_grad, wrap too, so `__wrapped__` alone does not tell)
_FORWARD_CODE = forward(lambda self: None).__code__


def _forward_methods(cls) -> list[str]:
    out = []
    for name in dir(cls):
        if name.startswith("_") and name != "__call__":
            continue
        attr = inspect.getattr_static(cls, name)
        if inspect.isfunction(attr) and attr.__code__ is _FORWARD_CODE:
            out.append(name)
    return out


CASES = [(name, method) for name, cls in _module_classes().items()
         for method in _forward_methods(cls)]


def test_the_enumeration_finds_the_modules():
    names = {name for name, _ in CASES}
    assert {"Sersic", "SIE", "CompositeLens", "GaussianLightCurve", "Scene", "LensedImage",
            "GaussianPSF", "ReadPoissonNoise", "GaussianLikelihood", "LensGeometry"} <= names
    assert len(CASES) > 80


def _inputs(module: ck.Module, method: str) -> list[str]:
    """The method's inputs (arguments that are not Params of the module) to pass, in order."""
    names = []
    arguments = list(inspect.signature(getattr(type(module), method)).parameters.values())[1:]
    for arg in arguments:
        if isinstance(module.children.get(arg.name), ck.Param):
            continue
        if arg.name not in INPUTS:
            assert arg.default is not inspect.Parameter.empty, \
                f"add a value for input {arg.name!r} of {type(module).__name__}.{method}"
            break  # later inputs could not be given by position
        names.append(arg.name)
    return names


def _leaves(value):
    if torch.is_tensor(value):
        yield value
    elif isinstance(value, (int, float)):
        yield torch.tensor(float(value), dtype=f64)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _leaves(item)
    elif dataclasses.is_dataclass(value):
        for field in dataclasses.fields(value):
            yield from _leaves(getattr(value, field.name))
    elif value is not None:
        raise TypeError(f"cannot compare a {type(value).__name__}")


def _assert_same(a, b, what: str):
    la, lb = list(_leaves(a)), list(_leaves(b))
    assert len(la) == len(lb), what
    for u, v in zip(la, lb):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12, msg=what)


@pytest.mark.parametrize("name,method", CASES, ids=[f"{n}.{m}" for n, m in CASES])
def test_inputs_by_position_with_static_and_dynamic_params(name, method):
    module = FACTORIES[name]() if name in FACTORIES else getattr(skyfit, name)()
    inputs = _inputs(module, method)
    call = getattr(module, method)

    def args():
        return [INPUTS[n](module) for n in inputs]

    expected = call(**dict(zip(inputs, args())))
    _assert_same(call(*args()), expected, f"{name}.{method} static, by position")
    module.to_dynamic(children_only=False)
    vector = module.get_values()
    assert vector.numel() > 0
    _assert_same(call(*args(), params=vector), expected, f"{name}.{method} params=")
    _assert_same(call(**dict(zip(inputs, args())), params=vector), expected,
                 f"{name}.{method} params=, inputs by keyword")
    _assert_same(call(*args()), expected, f"{name}.{method} dynamic, current values")


def test_the_calls_that_were_traps_and_a_clear_error_for_too_many_arguments():
    x, y = torch.tensor([0.8], dtype=f64), torch.tensor([0.4], dtype=f64)
    lens = skyfit.SIE(q=0.7, phi=0.3, theta_E=1.2)
    static = lens.deflection(x, y)
    lens.to_dynamic()
    for a, b in zip(lens.deflection(x, y), static):  # y was read as the parameter vector
        assert torch.equal(a, b)
    lc = skyfit.GaussianLightCurve(peak_flux=[1.0, 3.0], bands="gr")
    lc.to_dynamic()
    t = torch.zeros(2, dtype=f64)
    assert lc.flux(t, 1).tolist() == [3.0, 3.0]  # the band was read as the parameter vector
    # one argument beyond the inputs is the parameter vector, as caskade reads it
    v = lc.get_values().clone()
    v[5] = 5.0  # peak_flux of band r (after t0 and sigma, two bands each)
    assert lc.flux(t, 1, v).tolist() == [5.0, 5.0] == lc.flux(t, 1, params=v).tolist()
    with pytest.raises(TypeError, match=r"takes 2 positional input\(s\) \('t', 'band'\)"):
        lc.flux(t, 1, v, v)
    with pytest.raises(TypeError, match="multiple values for argument 't'"):
        lc.flux(t, t=t)
