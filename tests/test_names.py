"""Parameter names come from the module graph: the same in every process, distinct for unnamed
children of a container, and a checkpoint written by one process resumes in another."""

import json
import subprocess
import sys

import pytest
import torch

import skyfit

# Builds the models of these tests; run here and in fresh Python processes (no shared state)
MODELS = """
import torch, skyfit
from skyfit import (CompositeLens, ExternalShear, GaussianLikelihood, GaussianPSF, ImageStack,
                    LensedImage, PixelGrid, PointSource, Posterior, Scene, SIE, Sersic)

def stack_posterior():
    # two unnamed scenes, each with two unnamed Sersics and an unnamed point source
    grid, psf = PixelGrid((12, 12), 0.1), GaussianPSF(sigma=0.1, size=5)
    stack = ImageStack([Scene(grid, [Sersic(Re=0.3, flux=5.0), Sersic(x0=0.2, Re=0.2, flux=2.0)],
                              psf, [PointSource(x0=-0.1, flux=1.0 + i)]) for i in range(2)])
    data = stack().detach()
    for scene in stack.scenes:
        for source in scene.sources:
            source.flux.to_dynamic()
        scene.point_sources[0].flux.to_dynamic()
    return Posterior(GaussianLikelihood(stack, data, variance=torch.full_like(data, 0.01)))

def lensed_posterior():
    grid = PixelGrid((12, 12), 0.1)
    lens = CompositeLens([SIE(q=0.7, theta_E=0.4), ExternalShear(gamma1=0.02)])
    sim = LensedImage(grid, lens, [Sersic(Re=0.2, flux=3.0)], lens_light=[Sersic(flux=4.0)],
                      psf=GaussianPSF(sigma=0.1, size=5))
    data = sim().detach()
    sim.to_dynamic(children_only=False)
    return Posterior(GaussianLikelihood(sim, data, variance=torch.full_like(data, 0.01)))
"""


def _run(code: str) -> dict:
    """Run ``MODELS + code`` in a fresh interpreter; ``code`` prints one JSON line."""
    done = subprocess.run([sys.executable, "-c", MODELS + code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _models() -> dict:
    namespace = {}
    exec(MODELS, namespace)
    return namespace


NAMES = "import json\nprint(json.dumps({'stack': stack_posterior().names, " \
        "'lensed': lensed_posterior().names}))"


def test_names_are_the_same_in_two_processes_and_in_this_one():
    first, second = _run(NAMES), _run(NAMES)
    assert first == second
    models = _models()
    assert models["stack_posterior"]().names == first["stack"]
    assert models["lensed_posterior"]().names == first["lensed"]
    assert first["stack"] == [f"scenes.{i}.{p}.flux" for i in range(2)
                              for p in ("sources.0", "sources.1", "PointSource")]
    lensed = first["lensed"]
    assert len(set(lensed)) == len(lensed)
    assert {"SIE.theta_E", "ExternalShear.gamma1", "LensedSource.Sersic.flux",
            "Scene.Sersic.flux"} <= set(lensed)


def test_a_checkpoint_written_by_one_process_resumes_in_another(tmp_path):
    path = tmp_path / "nuts.pt"
    run = f"""
import json
post = stack_posterior()
out = skyfit.sample_nuts(post, init=post.initial(), n_chains=2, n_warmup=20, n_draws=10,
                         seed=3, max_tree_depth=3, checkpoint={str(path)!r}, checkpoint_every=5,
                         resume=RESUME, progress=False)
print(json.dumps({{"draws": out.draws.tolist(), "resumed": out.info.get("resumed_from")}}))
"""
    written = _run(run.replace("RESUME", "False"))
    assert written["resumed"] is None and path.exists()
    resumed = _run(run.replace("RESUME", "True"))  # refused before: "cannot resume ... names"
    assert resumed["resumed"] is not None
    assert resumed["draws"] == written["draws"]


def test_unnamed_children_of_scenes_and_stacks_get_distinct_names():
    grid = skyfit.PixelGrid((10, 10), 0.1)
    a, b = skyfit.Sersic(flux=2.0, Re=0.2), skyfit.Sersic(x0=0.3, flux=1.0, Re=0.3)
    scene = skyfit.Scene(grid, [a, b])
    # the two unnamed Sersics are both rendered: the image is the sum of each alone
    alone = skyfit.Scene(grid, [skyfit.Sersic(flux=2.0, Re=0.2)])() + \
        skyfit.Scene(grid, [skyfit.Sersic(x0=0.3, flux=1.0, Re=0.3)])()
    torch.testing.assert_close(scene(), alone, rtol=1e-12, atol=1e-12)
    assert scene.sources[0] is a and scene.sources[:] == [a, b] and scene.sources + [a] == [a, b, a]
    a.flux.to_dynamic()
    b.flux.to_dynamic()
    like = skyfit.GaussianLikelihood(scene, alone, variance=torch.ones(10, 10))
    post = skyfit.Posterior(like, priors={"sources.1.flux": torch.distributions.Normal(1.0, 1.0)})
    assert post.names == ["sources.0.flux", "sources.1.flux"]
    assert list(post.priors) == ["sources.1.flux"]
    assert post.unpack(torch.tensor([2.0, 1.0]))["sources.1.flux"].item() == 1.0

    stack = skyfit.ImageStack([skyfit.Scene(grid, [skyfit.Sersic()]) for _ in range(3)])
    assert stack().shape == (3, 10, 10)
    stack.to_dynamic(children_only=False)
    data = torch.zeros(3, 10, 10)
    post = skyfit.Posterior(skyfit.GaussianLikelihood(stack, data, variance=torch.ones_like(data)))
    assert len(set(post.names)) == post.dim
    assert [n for n in post.names if n.endswith(".flux")] == \
        ["scenes.0.Sersic.flux", "scenes.1.Sersic.flux", "scenes.2.Sersic.flux"]


def test_named_modules_keep_their_short_names_and_priors_accept_longer_paths():
    grid = skyfit.PixelGrid((10, 10), 0.1)
    epochs = [skyfit.Scene(grid, [skyfit.Sersic("host")], name=f"epoch{i}") for i in (1, 2)]
    stack = skyfit.ImageStack(epochs, name="stack")
    for scene in epochs:
        scene.sources[0].flux.to_dynamic()
    data = torch.zeros(2, 10, 10)
    like = skyfit.GaussianLikelihood(stack, data, variance=torch.ones_like(data))
    post = skyfit.Posterior(like, priors={"stack.epoch2.host.flux": torch.distributions.Normal(
        0.0, 1.0)})
    assert post.names == ["epoch1.host.flux", "epoch2.host.flux"]
    assert list(post.priors) == ["epoch2.host.flux"]
    with pytest.raises(KeyError, match="several parameters"):
        skyfit.Posterior(like, priors={"host.flux": torch.distributions.Normal(0.0, 1.0)})
    host = skyfit.Sersic("host")
    host.flux.to_dynamic()
    like = skyfit.GaussianLikelihood(skyfit.Scene(grid, [host]), torch.zeros(10, 10),
                                     variance=torch.ones(10, 10))
    one = skyfit.Posterior(like)
    assert one.names == ["host.flux"]
