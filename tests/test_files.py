"""Files that cannot lie: a damaged, truncated, empty or foreign checkpoint or chain file, or a
checkpoint written for other data, raises an error naming the file instead of returning numbers.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from skyfit.errors import CorruptFileError, DataMismatchError
from skyfit.inference import FunctionDensity, Samples, sample_emcee, sample_nuts
from skyfit.inference.checkpoint import data_fingerprint, load_checkpoint, save_checkpoint


def _flip(path, offset: int, n: int = 8) -> None:
    """Invert ``n`` bytes of ``path`` from ``offset`` on."""
    blob = bytearray(path.read_bytes())
    for i in range(offset, min(offset + n, len(blob))):
        blob[i] ^= 0xFF
    path.write_bytes(bytes(blob))


def _truncate(path) -> None:
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])


STATE = {"iteration": 40, "draws": torch.linspace(-3.0, 3.0, 600).reshape(2, 100, 3)}


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "run.pt"
    save_checkpoint(path, STATE, fingerprint=data_fingerprint(["a", "b", "c"], data=torch.ones(5)))
    return path


def test_checkpoint_round_trip(checkpoint):
    state = load_checkpoint(checkpoint)
    assert state["iteration"] == 40 and torch.equal(state["draws"], STATE["draws"])


def test_checkpoint_with_flipped_bytes_anywhere_is_refused(checkpoint):
    size = checkpoint.stat().st_size
    original = checkpoint.read_bytes()
    for offset in range(0, size - 8, max(1, size // 40)):  # header, payload metadata and tensors
        checkpoint.write_bytes(original)
        _flip(checkpoint, offset)
        with pytest.raises(CorruptFileError, match=str(checkpoint.name)):
            load_checkpoint(checkpoint)


@pytest.mark.parametrize("damage, words", [
    (_truncate, "truncated"),
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_text("hello, I am a text file\n"), "text file"),
    (lambda p: torch.save(STATE, p), "zip archive"),
])
def test_damaged_or_foreign_checkpoint_is_refused(checkpoint, damage, words):
    damage(checkpoint)
    with pytest.raises(CorruptFileError, match=words) as error:
        load_checkpoint(checkpoint)
    assert str(checkpoint) in str(error.value)


def test_checkpoint_for_other_data_is_refused(checkpoint):
    same = data_fingerprint(["a", "b", "c"], data=torch.ones(5))
    assert load_checkpoint(checkpoint, expect_fingerprint=same)["iteration"] == 40
    one_changed = torch.ones(5).index_fill(0, torch.tensor([2]), 2.0)
    changed = data_fingerprint(["a", "b", "c"], data=one_changed)
    with pytest.raises(DataMismatchError, match=r"array 'data' sha256"):
        load_checkpoint(checkpoint, expect_fingerprint=changed)
    reshaped = data_fingerprint(["a", "b", "c"], data=torch.ones(6))
    with pytest.raises(DataMismatchError, match=r"array 'data' shape \[5\] vs now \[6\]"):
        load_checkpoint(checkpoint, expect_fingerprint=reshaped)
    renamed = data_fingerprint(["a", "b", "d"], data=torch.ones(5))
    with pytest.raises(DataMismatchError, match="parameter names"):
        load_checkpoint(checkpoint, expect_fingerprint=renamed)


# -- Samples (HDF5 chain files) --------------------------------------------------------------

@pytest.fixture
def chains(tmp_path):
    rng = np.random.default_rng(0)
    draws = rng.normal(size=(4, 250, 3))
    samples = Samples(draws=draws, names=["a", "b", "c"], log_density=-0.5 * (draws**2).sum(-1),
                      sampler="test", sample_stats={"diverging": np.zeros((4, 250), bool)},
                      info={"step_size": np.array([0.1, 0.2, 0.3, 0.4]), "note": "x"})
    path = tmp_path / "chains.h5"
    samples.save(path)
    return path, samples


def test_chain_file_with_flipped_draws_is_refused(chains):
    import h5py
    path, _ = chains
    with h5py.File(path, "r") as f:
        offset = f["draws"].id.get_offset()  # the draws' bytes in the file
    _flip(path, offset + 800)
    with pytest.raises(CorruptFileError, match="checksum mismatch") as error:
        Samples.load(path)
    assert str(path) in str(error.value)


def test_chain_file_never_returns_changed_numbers(chains):
    path, samples = chains
    original = path.read_bytes()
    for offset in range(0, len(original) - 8, len(original) // 60):
        path.write_bytes(original)
        _flip(path, offset)
        try:
            loaded = Samples.load(path)
        except CorruptFileError:
            continue
        # a flip in unused space of the HDF5 file changes nothing that is read
        np.testing.assert_array_equal(loaded.draws, samples.draws)
        np.testing.assert_array_equal(loaded.log_density, samples.log_density)


@pytest.mark.parametrize("damage, words", [
    (_truncate, "truncated or damaged"),
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_text("time,flux\n1,2\n"), "text file"),
])
def test_damaged_or_foreign_chain_file_is_refused(chains, damage, words):
    path, _ = chains
    damage(path)
    with pytest.raises(CorruptFileError, match=words) as error:
        Samples.load(path)
    assert str(path) in str(error.value)


# -- sampler checkpoints ---------------------------------------------------------------------

GAUSS = FunctionDensity(lambda x: -0.5 * (x**2).sum(-1), 2)


def test_empty_emcee_checkpoint_is_not_silently_restarted(tmp_path):
    path = tmp_path / "run.h5"
    path.write_bytes(b"")
    with pytest.raises(CorruptFileError, match="empty"):
        sample_emcee(GAUSS, init=torch.zeros(2), n_steps=20, n_burn=0, checkpoint=path,
                     resume=True, progress=False)
    path.write_text("not a chain\n")
    with pytest.raises(CorruptFileError, match="text file"):
        sample_emcee(GAUSS, init=torch.zeros(2), n_steps=20, n_burn=0, checkpoint=path,
                     resume=True, progress=False)


@pytest.mark.filterwarnings("ignore::skyfit.errors.ConvergenceWarning")
def test_damaged_emcee_checkpoint_is_refused_on_resume(tmp_path):
    import h5py
    path = tmp_path / "run.h5"
    kw = dict(init=torch.zeros(2), n_walkers=8, n_burn=0, checkpoint=path, progress=False)
    sample_emcee(GAUSS, n_steps=30, **kw)
    resumed = sample_emcee(GAUSS, n_steps=40, resume=True, **kw)  # an intact file resumes
    assert resumed.info["resumed"] and resumed.n_draws == 40
    with h5py.File(path, "r+") as f:  # the chain is chunked: change a stored value in place
        f["mcmc/chain"][5, 0, 0] += 1e-9
    with pytest.raises(CorruptFileError, match="chain's checksum"):
        sample_emcee(GAUSS, n_steps=50, resume=True, **kw)


@pytest.mark.parametrize("damage, words", [
    (lambda p: _flip(p, p.stat().st_size - 300), "checksum mismatch"),
    (_truncate, "truncated"),
    (lambda p: p.write_bytes(b""), "empty"),
])
def test_damaged_nuts_checkpoint_is_refused_on_resume(tmp_path, damage, words):
    path = tmp_path / "run.pt"
    kw = dict(init=torch.zeros(2), n_chains=2, n_warmup=20, n_draws=10, checkpoint=path,
              progress=False)
    sample_nuts(GAUSS, **kw)
    damage(path)
    with pytest.raises(CorruptFileError, match=words):
        sample_nuts(GAUSS, resume=True, **kw)


# -- resuming on other data: the samplers record the density's fingerprint -------------------

def _light_curve_posterior(flux_shift: float = 0.0, t_end: float = 5.0):
    from skyfit import GaussianLightCurve, PhotometryLikelihood, Posterior

    t = torch.linspace(-5.0, t_end, 11, dtype=torch.float64)
    lc = GaussianLightCurve(t0=0.0, sigma=2.0, peak_flux=1.0)
    flux = lc.flux(t).detach() + flux_shift
    lc.to_dynamic()
    return Posterior(PhotometryLikelihood(lc, t, flux, 0.1 * torch.ones(11)))


def test_posterior_fingerprint_covers_data_and_constants_not_fitted_values():
    post = _light_curve_posterior()
    fingerprint = post.fingerprint()
    assert fingerprint == _light_curve_posterior().fingerprint()  # the same problem built again
    post.set(torch.tensor([0.5, 1.5, 2.0], dtype=torch.float64))  # fitted values are not data
    assert post.fingerprint() == fingerprint
    data_keys = [k for k, v in fingerprint["arrays"].items() if v["shape"] == [11]]
    assert len(data_keys) >= 3  # times, flux and flux errors
    for other in (_light_curve_posterior(flux_shift=1e-12), _light_curve_posterior(t_end=5.5)):
        # one flux value changed in its last bits, or the observation times moved
        then, now = fingerprint["arrays"], other.fingerprint()["arrays"]
        assert sorted(then) == sorted(now)
        changed = [k for k in then if then[k]["sha256"] != now[k]["sha256"]]
        assert changed and set(changed) <= set(data_keys)


def _villar_posterior(**options):
    from skyfit import PhotometryLikelihood, Posterior
    from skyfit.lightcurves import Villar

    t = torch.linspace(-5.0, 60.0, 14, dtype=torch.float64)
    truth = dict(t0=0.0, A=10.0, beta=-0.1, gamma=20.0, tau_rise=2.0, tau_fall=20.0)
    flux = Villar(**truth).flux(t).detach()  # the same data for every blend
    lc = Villar(**truth, **options)
    lc.to_dynamic()
    return Posterior(PhotometryLikelihood(lc, t, flux, 0.1 * torch.ones(14)))


def test_posterior_fingerprint_covers_module_settings_that_change_the_density():
    # the plateau-end blend of Villar is a setting, not a Param: two posteriors that differ only
    # in it have different densities and must not share checkpoints
    x = _villar_posterior().initial()
    base, frac2, frac3, wide = (_villar_posterior(**o) for o in (
        {}, {"transition_fraction": 0.2}, {"transition_fraction": 0.3}, {"transition_width": 5.0}))
    assert len({float(p.log_prob(x)) for p in (base, frac2, frac3, wide)}) == 4
    prints = [p.fingerprint() for p in (base, frac2, frac3, wide)]
    for i in range(4):
        for j in range(i):
            assert prints[i] != prints[j]
    # the same model built again: the same fingerprint, and JSON keeps it equal
    again = _villar_posterior(transition_fraction=0.2).fingerprint()
    assert again == prints[1]
    assert json.loads(json.dumps(again)) == prints[1]
    assert prints[1]["settings"]["PhotometryLikelihood.Villar.transition_fraction"] == 0.2


@pytest.mark.filterwarnings("ignore::skyfit.errors.ConvergenceWarning")
@pytest.mark.filterwarnings("ignore::skyfit.errors.LogDensityWarning")  # a 4-step warm-up
def test_resuming_with_another_blend_is_refused(tmp_path):
    path = tmp_path / "run.pt"
    post = _villar_posterior(transition_fraction=0.2)
    sample_nuts(post, init=post.initial(), n_chains=1, n_warmup=4, n_draws=4,
                checkpoint=path, checkpoint_every=2, progress=False)
    changed = r"settings PhotometryLikelihood.Villar.transition_fraction: 0.2 vs now 0.3"
    with pytest.raises(DataMismatchError, match=changed):
        sample_nuts(_villar_posterior(transition_fraction=0.3), init=post.initial(),
                    n_chains=1, n_warmup=4, n_draws=4, checkpoint=path, resume=True,
                    progress=False)


@pytest.mark.filterwarnings("ignore::skyfit.errors.ConvergenceWarning")
@pytest.mark.parametrize("sampler", ["nuts", "emcee"])
def test_resuming_on_changed_data_is_refused_naming_the_file(tmp_path, sampler):
    post = _light_curve_posterior()
    init = torch.tensor([0.0, 2.0, 1.0], dtype=torch.float64)
    if sampler == "nuts":
        path = tmp_path / "run.pt"
        kw = dict(init=init, n_chains=2, n_warmup=20, n_draws=10, checkpoint=path, progress=False)
        run = sample_nuts
    else:
        path = tmp_path / "run.h5"
        kw = dict(init=init, n_walkers=8, n_burn=0, n_steps=20, checkpoint=path, progress=False)
        run = sample_emcee
    first = run(post, **kw)
    again = run(_light_curve_posterior(), resume=True, **kw)  # the same data, rebuilt: resumes
    np.testing.assert_array_equal(again.draws, first.draws)
    with pytest.raises(DataMismatchError, match=rf"{path.name}.*other data.*sha256") as error:
        run(_light_curve_posterior(flux_shift=1e-3), resume=True, **kw)
    assert str(path) in str(error.value) and "PhotometryLikelihood" in str(error.value)


def test_where_a_model_lives_is_not_one_of_its_settings():
    # a run on the GPU resumes on the CPU: a grid moved with .to() keeps its settings
    from skyfit.instruments import PixelGrid
    from skyfit.posterior import module_settings

    grid = PixelGrid((8, 8), 0.1)
    before = module_settings(grid)
    assert before["PixelGrid.pixel_scale"] == 0.1
    assert module_settings(grid.to("cpu", torch.float32)) == before


def test_a_file_without_settings_is_refused_naming_what_it_lacks(tmp_path):
    from skyfit.inference.checkpoint import check_fingerprint

    now = _villar_posterior(transition_fraction=0.2).fingerprint()
    older = {key: value for key, value in now.items() if key != "settings"}
    with pytest.raises(DataMismatchError, match=r"settings missing in the file \(written by an "
                                                r"older skyfit\)"):
        check_fingerprint(tmp_path / "run.pt", older, now)
