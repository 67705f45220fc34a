"""Photometry tables: every input form gives the same data and likelihood; errors name the rows."""

import math

import numpy as np
import pytest
import torch

from skyfit import GaussianLightCurve, PhotometryLikelihood
from skyfit.data import AB_MINUS_VEGA_BLANTON_ROWEIS_2007, Photometry, load_example
from skyfit.errors import DataError

ROWS = dict(
    mjd=[59000.25, 59001.5, 59003.0, 59004.0, 59006.5, 59010.0],
    band=["g", "r", "g", "r", "g", "r"],
    flux=[10.0, 12.0, 30.0, 25.0, 14.0, 0.0],
    flux_err=[1.0, 1.5, 2.0, 1.0, 1.0, 2.0],
    upper_limit=[False, False, False, False, False, True],
    limit=[math.nan, math.nan, math.nan, math.nan, math.nan, 6.0],
)


def _log_likelihood(phot: Photometry) -> float:
    lc = GaussianLightCurve(t0=3.0, sigma=2.5, peak_flux=[28.0, 24.0], bands=("g", "r"))
    return PhotometryLikelihood(lc, phot).__call__().item()


def test_tables_csv_ecsv_and_lists_give_identical_likelihoods(tmp_path):
    pd = pytest.importorskip("pandas")
    astropy_table = pytest.importorskip("astropy.table")
    reference = _log_likelihood(Photometry.from_table(ROWS))
    frame = pd.DataFrame(ROWS)
    table = astropy_table.Table(ROWS)
    frame.to_csv(tmp_path / "lc.csv", index=False)
    table.write(tmp_path / "lc.ecsv")
    shuffled = frame.iloc[::-1]  # a non-default index: values must be taken by position
    forms = {
        "DataFrame": Photometry.from_table(frame),
        "Table": Photometry.from_table(table),
        "CSV": Photometry.read(tmp_path / "lc.csv"),
        "ECSV": Photometry.read(tmp_path / "lc.ecsv"),
        "filtered Series": Photometry(shuffled["mjd"], shuffled["band"], shuffled["flux"],
                                      shuffled["flux_err"], upper_limit=shuffled["upper_limit"],
                                      limit=shuffled["limit"], bands=("g", "r")),
        "numpy + Column": Photometry(np.array(ROWS["mjd"]), np.array(ROWS["band"]),
                                     table["flux"], table["flux_err"],
                                     upper_limit=np.array(ROWS["upper_limit"]),
                                     limit=table["limit"]),
    }
    for label, phot in forms.items():
        assert _log_likelihood(phot) == pytest.approx(reference, rel=1e-12, abs=1e-12), label
        assert phot.reference == 59000.0 and phot.time.dtype == torch.float64, label


def test_times_are_reported_relative_to_a_stored_reference():
    phot = Photometry.from_table(ROWS)
    assert phot.reference == 59000.0
    assert phot.time.tolist() == pytest.approx([0.25, 1.5, 3.0, 4.0, 6.5, 10.0])
    assert phot.mjd == pytest.approx(ROWS["mjd"], abs=1e-9)
    assert "MJD 59000" in repr(phot)
    small = Photometry([0.0, 5.0], ["g", "g"], flux=[1.0, 2.0], flux_err=[0.1, 0.1])
    assert small.reference == 0.0 and small.time.tolist() == [0.0, 5.0]


def test_magnitudes_become_fluxes_of_the_zero_point_with_vega_offsets():
    phot = Photometry([0.0, 1.0], ["B", "V"], mag=[25.0, 22.5], mag_err=[0.1, 0.02],
                      system="Vega", vega_offsets=AB_MINUS_VEGA_BLANTON_ROWEIS_2007)
    # m_AB = m_Vega + (AB - Vega): B 24.91, V 22.52; flux = 10^(-0.4 (m_AB - 25))
    assert phot.flux.tolist() == pytest.approx([10 ** (0.4 * 0.09), 10 ** (-0.4 * -2.48)])
    assert phot.flux_err[0].item() == pytest.approx(phot.flux[0].item() * 0.1 * math.log(10) / 2.5)
    assert phot.mag.tolist() == pytest.approx([24.91, 22.52])
    with pytest.raises(ValueError, match="vega_offsets"):
        Photometry([0.0], ["B"], mag=[20.0], mag_err=[0.1], system="Vega")
    with pytest.raises(ValueError, match=r"\['u'\]"):
        Photometry([0.0], ["u"], mag=[20.0], mag_err=[0.1], system="Vega",
                   vega_offsets=AB_MINUS_VEGA_BLANTON_ROWEIS_2007)


def test_non_detections_from_a_flag_or_from_a_limit_without_flux():
    flagged = Photometry([0.0, 1.0], mag=[20.0, 22.0], mag_err=[0.1, math.nan],
                         upper_limit=[False, True])
    assert flagged.upper_limit.tolist() == [False, True]
    assert flagged.limit[1].item() == pytest.approx(10 ** (-0.4 * (22.0 - 25.0)))
    # no error given: the limit is taken as 5 sigma
    assert flagged.flux_err[1].item() == pytest.approx(flagged.limit[1].item() / 5)
    by_limit = Photometry([0.0, 1.0], flux=[3.0, math.nan], flux_err=[0.5, 1.0],
                          limit=[math.nan, 4.0])
    assert by_limit.upper_limit.tolist() == [False, True]
    assert by_limit.limit[1].item() == 4.0 and by_limit.flux_err[1].item() == 1.0


def test_bad_tables_raise_errors_that_name_rows_and_distinct_bands():
    with pytest.raises(DataError, match="empty"):
        Photometry([], [], flux=[], flux_err=[])
    with pytest.raises(DataError, match=r"time is NaN.*\[1\]"):
        Photometry([0.0, math.nan], flux=[1.0, 1.0], flux_err=[1.0, 1.0])
    with pytest.raises(DataError, match=r"flux is NaN.*\[0\].*upper_limit"):
        Photometry([0.0, 1.0], flux=[math.nan, 1.0], flux_err=[1.0, 1.0])
    with pytest.raises(DataError, match=r"flux_err must be positive.*\[1\]"):
        Photometry([0.0, 1.0], flux=[1.0, 1.0], flux_err=[1.0, 0.0])
    names = ["g"] * 50 + ["y"] * 47
    with pytest.raises(DataError) as err:
        Photometry(np.arange(97.0), names, flux=np.ones(97), flux_err=np.ones(97),
                   bands=("g", "r"))
    assert "['y'] (47 rows)" in str(err.value)


def test_shipped_examples_are_a_supernova_and_a_tidal_disruption_event():
    sn, tde = load_example("LSQ12dlf"), load_example("PS1-10jh")
    assert (len(sn), sn.bands) == (97, ("U", "B", "V", "R", "I"))
    assert (len(tde), int(tde.upper_limit.sum())) == (176, 66)
    # the brightest V point, 18.78 Vega, is 18.80 AB
    v = torch.tensor([b == "V" for b in sn.band_names()])
    assert sn.mag[v].min().item() == pytest.approx(18.78 + 0.02)


def test_a_system_column_converts_only_its_vega_rows(tmp_path):
    # catalogues that mix instruments (Open Astronomy Catalog entries, mosfit's fixtures) give
    # each row its system: Swift UVOT in Vega next to Pan-STARRS in AB. The column used to be
    # ignored, every row read as AB (UVOT UVM2 then 1.7 mag too faint)
    path = tmp_path / "mixed.csv"
    path.write_text("mjd,band,mag,mag_err,system\n57000.0,g,20.0,0.1,AB\n57000.0,UVM2,20.0,0.1,"
                    "Vega\n57001.0,UVM2,20.5,0.1,vega\n57001.0,g,20.5,0.1,\n")
    phot = Photometry.read(path, vega_offsets={"UVM2": 1.69})
    assert phot.mag.tolist() == pytest.approx([20.0, 21.69, 22.19, 20.5])
    assert phot.system == "mixed"
    # empty cells take the system keyword; a Vega band needs an offset, an AB band does not
    as_vega = Photometry.read(path, system="Vega", vega_offsets={"UVM2": 1.69, "g": -0.1})
    assert as_vega.mag.tolist() == pytest.approx([20.0, 21.69, 22.19, 20.4])
    with pytest.raises(ValueError, match=r"no entry for band\(s\) \['UVM2'\]"):
        Photometry.read(path, vega_offsets={"g": 0.0})
    ignored = Photometry.read(path, columns={"system": None})  # the role can be switched off
    assert ignored.mag.tolist() == pytest.approx([20.0, 20.0, 20.5, 20.5])
    path.write_text("mjd,band,mag,mag_err,system\n57000.0,g,20.0,0.1,ST\n")
    with pytest.raises(DataError, match=r"'AB' or 'Vega' in every row; got \['st'\].*"
                                         r"columns=\{'system': None\}"):
        Photometry.read(path)  # a column of other systems (ST, PS1): the way out is said
    assert Photometry.read(path, columns={"system": None}).system == "AB"


def test_a_missing_error_column_is_named_not_reported_as_bad_values():
    # sncosmo's tables call it fluxerr: every row was reported as a non-positive flux_err
    rows = {"mjd": [1.0, 2.0], "band": ["g", "g"], "flux": [1.0, 2.0], "fluxerr": [0.1, 0.1]}
    with pytest.raises(KeyError, match=r"no flux_err column 'flux_err'.*fluxerr"):
        Photometry.from_table(rows)
    phot = Photometry.from_table(rows, columns={"flux_err": "fluxerr"})
    assert phot.flux_err.tolist() == [0.1, 0.1]


def test_julian_dates_given_as_mjd_are_flagged():
    with pytest.warns(UserWarning, match="Julian Dates, not MJDs"):
        phot = Photometry([2452816.54, 2452820.0], flux=[1.0, 2.0], flux_err=[0.1, 0.1])
    assert phot.reference == 2452816.0  # kept as given, not guessed
    assert "since MJD 2452816," in repr(phot)  # was "MJD 2.45282e+06": 6 digits


def test_a_zp_column_rescales_each_rows_fluxes_to_the_zero_point(tmp_path):
    # sncosmo's flux tables (time, band, flux, fluxerr, zp, zpsys): SNLS 03D4ag's g fluxes
    # are counts of zero point 27.04, its i fluxes of 26.32. The zp column was ignored, the
    # counts read as fluxes of zero point 25 (g 2 mag too bright, i 1.3 mag)
    path = tmp_path / "sncosmo.csv"
    path.write_text("time,band,flux,fluxerr,zp,zpsys\n52816.54,g,213.41892,1.4266,27.036167,ab\n"
                    "52824.55,i,97.506371,1.1592,26.321667,ab\n")
    phot = Photometry.read(path, columns={"time": "time", "flux_err": "fluxerr",
                                          "system": "zpsys"})
    expected = [27.036167 - 2.5 * math.log10(213.41892), 26.321667 - 2.5 * math.log10(97.506371)]
    assert phot.mag.tolist() == pytest.approx(expected, abs=1e-9)
    assert phot.flux_err[0].item() == pytest.approx(1.4266 * 10 ** (-0.4 * 2.036167))
    same = Photometry.read(path, columns={"time": "time", "flux_err": "fluxerr",
                                          "system": "zpsys"}, zero_point=27.5)
    assert same.mag.tolist() == pytest.approx(expected, abs=1e-9)
    with pytest.raises(ValueError, match="magnitudes need none"):
        Photometry([0.0], mag=[20.0], mag_err=[0.1], zp=[25.0])


def test_rows_listed_twice_are_flagged():
    # merged catalogues repeat a measurement; each copy was fitted as a new one, silently
    rows = dict(ROWS, mjd=ROWS["mjd"] + ROWS["mjd"][:2], band=ROWS["band"] + ROWS["band"][:2],
                flux=ROWS["flux"] + ROWS["flux"][:2], flux_err=ROWS["flux_err"] +
                ROWS["flux_err"][:2], upper_limit=ROWS["upper_limit"] + [False, False],
                limit=ROWS["limit"] + [math.nan, math.nan])
    with pytest.warns(UserWarning, match="2 rows repeat another row"):
        Photometry.from_table(rows)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Photometry.from_table(ROWS)  # same time in two bands, or two limits: no warning
        Photometry([1.0, 1.0], ["g", "r"], flux=[1.0, 1.0], flux_err=[0.1, 0.1])


def test_vega_offsets_without_vega_rows_warn_that_they_are_not_used():
    # the offsets were dropped silently: the magnitudes stayed Vega, read as AB
    with pytest.warns(UserWarning, match="no row is in Vega magnitudes"):
        phot = Photometry([0.0], ["B"], mag=[20.0], mag_err=[0.1],
                          vega_offsets=AB_MINUS_VEGA_BLANTON_ROWEIS_2007)
    assert phot.mag.tolist() == [20.0]


def test_text_flags_and_numbers_in_a_fits_table_are_read_like_csv_ones(tmp_path):
    # a CSV with upper_limit True/False read by astropy and written to FITS keeps the flags as
    # bytes: b"True" was read as not True, so every limit was a detection without an error
    table = pytest.importorskip("astropy.table")
    rows = table.Table(dict(mjd=[57000.0, 57001.0, 57002.0], band=["g", "g", "g"],
                            mag=["20.0", "21.5", "20.5"], mag_err=["0.1", "", "0.1"],
                            upper_limit=["False", "True", "False"]))
    rows.write(tmp_path / "lc.fits")
    phot = Photometry.read(tmp_path / "lc.fits")
    assert phot.upper_limit.tolist() == [False, True, False]
    assert phot.limit_mag[1].item() == pytest.approx(21.5)


def test_a_cell_that_is_not_a_number_is_named_with_its_column_and_row():
    # literature tables write limits as "<5" or ">21.5", some times as ISO dates: the error was
    # Python's "could not convert string to float: '<5'", with no column or row
    rows = dict(mjd=["53000", "53002", "53003"], band=["g"] * 3, flux=["10", "20", "<5"],
                flux_err=["1", "1", "1"])
    with pytest.raises(DataError, match=r"the flux column holds '<5' in row 2.*upper_limit"):
        Photometry.from_table(rows)
    with pytest.raises(DataError, match=r"the time column holds '2004-07-10T12:00' in row 0"):
        Photometry.from_table(dict(rows, mjd=["2004-07-10T12:00", "53002", "53003"],
                                   flux=["10", "20", "5"]))
