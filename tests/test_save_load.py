"""Whole models saved to one safetensors file (JSON spec + tensors) and loaded back.

The models are those of the tutorials, rebuilt here; a loaded model must give bit-identical
images, the same parameter names and the same dynamic parameters.
"""

from __future__ import annotations

import caskade as ck
import pytest
import torch

import skyfit
from skyfit._graph import node_paths, param_paths, short_names
from skyfit.errors import CorruptFileError, ModelFileError

f64 = dict(dtype=torch.float64)


def signature(model: ck.Module) -> tuple:
    """Every node's path and kind, each Param's state, and the dynamic parameters' names."""
    nodes = tuple((".".join(path), type(node).__name__,
                   getattr(node, "node_type", None)) for node, path in node_paths(model).items())
    dynamic = short_names(param_paths(model, model.dynamic_params))
    return nodes, tuple(dynamic)


def round_trip(model, tmp_path, name="model"):
    path = tmp_path / f"{name}.safetensors"
    skyfit.save_model(model, path)
    loaded = skyfit.load_model(path)
    assert type(loaded) is type(model)
    assert signature(loaded) == signature(model)
    return loaded


def assert_same_output(model, loaded, *args):
    with torch.no_grad():
        x = [p.value for p in model.dynamic_params]
        a = model(*args, x) if x else model(*args)
        b = loaded(*args, x) if x else loaded(*args)
    assert a.dtype == b.dtype and torch.equal(a, b)


# tutorial 01: a supernova on its host, one scene per epoch or one linked light curve
def supernova_scene(dynamic: bool):
    grid = skyfit.PixelGrid((50, 50), pixel_scale=0.04, supersample=3)
    times = torch.tensor([-8.0, -5.0, -2.0, 1.0, 4.0], **f64)
    host = skyfit.Sersic("host", x0=0.21, y0=0.17, q=0.65, phi=0.55, n=1.3, Re=0.28, flux=380.0)
    sn = skyfit.PointSource("sn", x0=-0.33, y0=-0.22)
    lc = skyfit.GaussianLightCurve("lightcurve", t0=-2.5, sigma=2.5, peak_flux=100.0)
    skyfit.link_flux_to_light_curve(sn, lc, times)
    scene = skyfit.Scene(grid, [host], skyfit.GaussianPSF("psf", sigma=0.06, size=15), [sn],
                         name="scene")
    if dynamic:
        host.to_dynamic(); sn.x0.to_dynamic(); sn.y0.to_dynamic(); lc.to_dynamic()  # noqa: E702
    return scene


@pytest.mark.parametrize("dynamic", [False, True])
def test_linked_light_curve_scene(dynamic, tmp_path):
    scene = supernova_scene(dynamic)
    loaded = round_trip(scene, tmp_path)
    assert_same_output(scene, loaded)
    assert loaded.point_sources[0].flux.pointer
    noise = skyfit.ReadPoissonNoise("noise", exposure_time=25.0, read_noise=5.0)
    data = noise.sample(scene(), generator=torch.Generator().manual_seed(0))
    likelihood = skyfit.GaussianLikelihood(scene, data, noise=noise, name="likelihood")
    loaded = round_trip(likelihood, tmp_path, "likelihood")
    assert torch.equal(loaded.data, likelihood.data)
    if dynamic:
        post, again = skyfit.Posterior(likelihood), skyfit.Posterior(loaded)
        assert again.names == post.names
        x = post.initial()
        assert torch.equal(again.log_prob(x), post.log_prob(x))


def test_image_stack_with_pointer_shared_position(tmp_path):
    grid = skyfit.PixelGrid((30, 30), pixel_scale=0.04, supersample=3)
    host = skyfit.Sersic("host", x0=0.21, y0=0.17, q=0.65, phi=0.55, n=1.3, Re=0.28, flux=380.0)
    psf = skyfit.GaussianPSF("psf", sigma=0.06, size=15)
    scenes, sns = [], []
    for i in range(3):
        s = skyfit.PointSource(f"sn{i}", x0=-0.33, y0=-0.22, flux=20.0 + i)
        s.flux.to_dynamic()
        if i == 0:
            s.x0.to_dynamic(); s.y0.to_dynamic()  # noqa: E702
        else:
            s.x0, s.y0 = sns[0].x0, sns[0].y0
        sns.append(s)
        scenes.append(skyfit.Scene(grid, [host], psf, [s], name=f"image{i}"))
    host.to_dynamic()
    stack = skyfit.ImageStack(scenes, name="stack")
    loaded = round_trip(stack, tmp_path)
    assert_same_output(stack, loaded)
    # one host and one position for every epoch, as before
    assert loaded.scenes[2].sources[0] is loaded.scenes[0].sources[0]
    sn0 = loaded.scenes[0].point_sources[0]
    sn0.x0.value = 0.1
    assert loaded.scenes[2].point_sources[0].x0.value.item() == 0.1


def test_photometry_likelihood(tmp_path):  # tutorial 02
    gen = torch.Generator().manual_seed(18)
    t_obs = torch.sort(torch.rand(14, generator=gen, **f64) * 40 - 20).values
    lc = skyfit.GaussianLightCurve("sn", t0=0.0, sigma=5.0, peak_flux=1.0)
    lc.to_dynamic()
    flux = lc.flux(t_obs).detach()
    likelihood = skyfit.PhotometryLikelihood(lc, t_obs, flux, torch.full_like(t_obs, 0.35))
    loaded = round_trip(likelihood, tmp_path)
    x = torch.tensor([0.5, 4.0, 1.2], **f64)
    assert torch.equal(skyfit.Posterior(loaded).log_prob(x),
                       skyfit.Posterior(likelihood).log_prob(x))


def strong_lens():  # tutorial 03
    grid = skyfit.PixelGrid((56, 56), pixel_scale=0.05, supersample=2)
    psf = skyfit.GaussianPSF("psf", sigma=0.05, size=9)
    sie = skyfit.SIE("sie", q=0.85, phi=0.5, theta_E=0.95)
    shear = skyfit.ExternalShear("shear", gamma1=0.01, gamma2=0.0)
    lens = skyfit.CompositeLens([sie, shear], name="lens")
    source = skyfit.Sersic("source", x0=0.0, y0=0.0, q=0.8, phi=0.3, n=1.5, Re=0.25, flux=15.0)
    image = skyfit.LensedImage(grid, lens, [source], psf=psf, name="image")
    for module in (sie, shear, source):
        module.to_dynamic()
    sie.x0.to_static()
    sie.y0.to_static()
    return image, grid, psf


def test_lensed_image_and_supernova(tmp_path):
    image, grid, psf = strong_lens()
    assert_same_output(image, round_trip(image, tmp_path, "image"))
    geometry = skyfit.LensGeometry("geometry", z_l=0.5, z_s=1.8)
    lightcurve = skyfit.GaussianLightCurve("lightcurve", t0=0.0, sigma=6.0, peak_flux=3.0)
    epochs = torch.tensor([0.0, 5.0, 12.0, 25.0], **f64)
    sn = skyfit.LensedSupernova(image.lens, geometry, lightcurve, epochs, x0=0.1, y0=0.04)
    loaded_sn = round_trip(sn, tmp_path, "sn")
    assert torch.equal(loaded_sn.time_delays(loaded_sn.images()), sn.time_delays(sn.images()))
    # a source built by another constructor (owned), reused in a new model
    movie = skyfit.LensedImage(grid, image.lens, [image.scene.sources[0].sources[0]], psf=psf,
                               point_sources=[sn])
    assert_same_output(movie, round_trip(movie, tmp_path, "movie"))


def test_lenses_with_derived_parameters(tmp_path):
    geometry = skyfit.LensGeometry("geometry", z_l=0.5, z_s=2.0)
    lenses = [skyfit.SIS.from_velocity_dispersion(250.0, geometry, name="sis"),
              skyfit.PointMass.from_mass(1e11, geometry, name="pm"),
              skyfit.NFW.from_m200c(1e13, 6.0, geometry, name="nfw")]
    lens = skyfit.CompositeLens(lenses, name="lens")
    lenses[0].sigma_v.to_dynamic()
    loaded = round_trip(lens, tmp_path)
    x = torch.linspace(-1, 1, 7, **f64)
    sigma_v = [torch.tensor(240.0, **f64)]
    assert torch.equal(torch.stack(loaded.deflection(x, x, sigma_v)),
                       torch.stack(lens.deflection(x, x, sigma_v)))
    assert loaded.lenses[2].Rs.pointer and loaded.lenses[1].theta_E.pointer


def test_neural_source_model(tmp_path):  # tutorial 04
    from skyfit.examples import lensed_galaxy_problem

    prob = lensed_galaxy_problem(skyfit.load_pretrained("galaxy32"), seed=0, theta_E=1.2,
                                 snr=30.0, free_source=("flux",))
    loaded = round_trip(prob.simulator, tmp_path)
    assert_same_output(prob.simulator, loaded)


def test_unregistered_classes_are_refused(tmp_path):
    class Line(ck.Module):
        def __init__(self, slope=1.0, name=None):
            super().__init__(name)
            self.slope = skyfit.Param("slope", slope)

    with pytest.raises(ModelFileError, match="not registered"):
        skyfit.save_model(Line(), tmp_path / "line.safetensors")
    skyfit.register_module(Line)
    skyfit.save_model(Line(2.0), tmp_path / "line.safetensors")
    assert skyfit.load_model(tmp_path / "line.safetensors").slope.value.item() == 2.0
    # a file naming a class nobody registered or allowed is refused before anything is built
    spec, tensors = skyfit.io.dump_model(Line(3.0))
    spec["nodes"]["Line"]["class"] = "os.system"
    with pytest.raises(ModelFileError, match="'os.system', which is not registered"):
        skyfit.io.build_model(spec, tensors)


def test_allow_list_imports_a_user_class(tmp_path):
    from skyfit.io.registry import _MODULES

    sersic_key = "skyfit.sources.sersic.Sersic"
    spec, tensors = skyfit.io.dump_model(skyfit.Sersic("s", Re=0.7))
    cls = _MODULES.pop(sersic_key)
    try:
        with pytest.raises(ModelFileError, match="allow="):
            skyfit.io.build_model(spec, tensors)
        assert skyfit.io.build_model(spec, tensors, allow=[sersic_key]).Re.value.item() == 0.7
    finally:
        _MODULES[sersic_key] = cls


def test_bad_files_raise_model_file_errors(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    with pytest.raises(ModelFileError, match="notes.txt"):
        skyfit.load_model(text)
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"a": torch.zeros(2)}, str(plain))
    with pytest.raises(ModelFileError, match="without a skyfit model spec"):
        skyfit.load_model(plain)


def test_damaged_model_file_is_refused(tmp_path):
    # a flipped byte in a tensor loaded as a wrong value (peak_flux 3 -> 3.0078): safetensors
    # checks only its header
    path = tmp_path / "lc.safetensors"
    skyfit.save_model(skyfit.GaussianLightCurve("sn", t0=1.0, sigma=2.0, peak_flux=3.0), path)
    assert skyfit.load_model(path).peak_flux.value.item() == 3.0
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x10
    (tmp_path / "bad.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match="bad.safetensors: checksum mismatch"):
        skyfit.load_model(tmp_path / "bad.safetensors")
