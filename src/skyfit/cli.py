"""Command line: ``skyfit demo [--out DIR] [--seed N]`` (also ``python -m skyfit demo``) and
``skyfit lightcurve FILE [--model villar|bazin|gaussian] [--shared t0 ...] [--mag] [--out DIR]``
(``--vega``, ``--redshift``, NUTS options: ``skyfit lightcurve -h``)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from ._version import __version__

    parser = argparse.ArgumentParser(
        prog="skyfit", description="skyfit: differentiable forward models for astronomy and the "
        "inference that fits them. Run 'skyfit demo' for a complete fit (also 'python -m skyfit')."
    )
    parser.add_argument("--version", action="version", version=f"skyfit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="simulate and fit the supernova light-curve problem")
    demo.add_argument("--out", default="skyfit-demo", help="output folder (default skyfit-demo/)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the mock data")
    demo.add_argument("--quiet", action="store_true", help="no progress output")
    demo.add_argument("--samplers", choices=["full", "quick", "none"], default="full",
                      help="posterior sampling after the fits: full (default), quick, none")
    _add_lightcurve_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "lightcurve":
        from .data.photometry import checked_redshift
        from .lightcurve_fit import check_fit_options, fit_photometry, read_photometry

        try:  # options the model cannot use are usage errors, reported before any fit
            check_fit_options(args.model, not args.no_nuts, args.transition_fraction,
                              args.anchored, args.target_accept, args.shared)
            vega_offsets = _vega_offsets(args.vega)
            columns = _pairs(args.columns, "--columns", "ROLE=COLUMN")
            checked_redshift(args.redshift)
            # so is a table that cannot be read as asked: a message, not a traceback
            read_photometry(args.file, args.mag, args.zero_point, args.redshift, vega_offsets,
                            columns)
        except (ValueError, KeyError, OSError) as error:
            parser.error(error.args[0] if isinstance(error, KeyError) else str(error))
        summary = fit_photometry(args.file, model=args.model, shared=args.shared, mag=args.mag,
                                 out=args.out, nuts=not args.no_nuts, n_warmup=args.warmup,
                                 n_draws=args.draws, zero_point=args.zero_point,
                                 progress=not args.quiet,
                                 transition_fraction=args.transition_fraction,
                                 anchored=args.anchored, target_accept=args.target_accept,
                                 redshift=args.redshift, vega_offsets=vega_offsets,
                                 columns=columns, jitter=args.jitter)
        return 0 if summary["converged"] else 1
    if args.command == "demo":
        import matplotlib

        matplotlib.use("Agg")
        from .examples.demo import run_demo

        samplers = None if args.samplers == "none" else args.samplers
        summary = run_demo(args.out, seed=args.seed, progress=not args.quiet, samplers=samplers)
        return 0 if summary["converged"] else 1
    return 2


def _add_lightcurve_parser(sub) -> None:
    fit = sub.add_parser("lightcurve", help="fit a photometry table (CSV/ECSV/FITS): multi-start "
                         "MAP, Laplace, NUTS; writes lightcurve.png and summary.json")
    fit.add_argument("file", help="table with columns mjd, band, flux, flux_err (or mag, mag_err)"
                     " [, upper_limit, limit]")
    fit.add_argument("--model", choices=["villar", "bazin", "gaussian"], default="bazin")
    fit.add_argument("--shared", nargs="*", default=None,
                     help="parameters shared by all bands (default: t0 and tau_rise for bazin; "
                     "t0, tau_rise, gamma and beta for villar; t0 for gaussian)")
    fit.add_argument("--mag", action="store_true", help="fit in magnitudes (default: flux)")
    fit.add_argument("--jitter", action="store_true",
                     help="fit an extra scatter per band, added to the errors in quadrature "
                     "(when chi2/dof says the errors are too small for the model)")
    fit.add_argument("--zero-point", type=float, default=25.0,
                     help="AB magnitude of unit flux (default 25)")
    fit.add_argument("--out", default="skyfit-lightcurve", help="output folder")
    fit.add_argument("--no-nuts", action="store_true", help="MAP and Laplace only")
    fit.add_argument("--warmup", type=int, default=500, help="NUTS warm-up per chain")
    fit.add_argument("--draws", type=int, default=500, help="NUTS draws per chain")
    fit.add_argument("--quiet", action="store_true", help="no progress output")
    fit.add_argument("--transition-fraction", type=float, default=None,
                     help="villar: plateau-end blend as this fraction of tau_fall (default: 3 "
                     "days)")
    fit.add_argument("--anchored", action="store_true",
                     help="villar: NUTS in anchored coordinates (fluxes at fixed times)")
    fit.add_argument("--target-accept", type=float, default=0.8,
                     help="NUTS step-size target (default 0.8)")
    fit.add_argument("--redshift", type=float, default=None,
                     help="the source's redshift: time scales fitted in the rest frame")
    fit.add_argument("--columns", nargs="+", default=None, metavar="ROLE=COLUMN",
                     help="the table's column names, e.g. time=MJD band=filter "
                     "flux_err=fluxerr (roles: time band flux flux_err mag mag_err "
                     "upper_limit limit system zp)")
    fit.add_argument("--vega", nargs="+", default=None, metavar="BAND=OFFSET",
                     help="magnitudes are Vega, with these m_AB - m_Vega per band, or "
                     "'blanton-roweis-2007' for that paper's Johnson-Cousins/2MASS table")


def _vega_offsets(values: list[str] | None) -> dict[str, float] | None:
    """``--vega``'s ``BAND=OFFSET`` pairs (or the named table) as ``{band: m_AB - m_Vega}``."""
    if values is None:
        return None
    if values == ["blanton-roweis-2007"]:
        from .data import AB_MINUS_VEGA_BLANTON_ROWEIS_2007

        return dict(AB_MINUS_VEGA_BLANTON_ROWEIS_2007)
    offsets = {}
    for value in values:
        band, _, offset = value.partition("=")
        try:
            offsets[band] = float(offset)
        except ValueError:
            raise ValueError(f"--vega takes BAND=OFFSET pairs (m_AB - m_Vega in mag) or "
                             f"'blanton-roweis-2007', got {value!r}") from None
        if not band:
            raise ValueError(f"--vega: no band name in {value!r}")
    return offsets


def _pairs(values: list[str] | None, option: str, form: str) -> dict[str, str] | None:
    """``KEY=VALUE`` arguments of ``option`` as a dict (None stays None)."""
    if values is None:
        return None
    pairs = {}
    for value in values:
        key, equals, item = value.partition("=")
        if not key or not equals:
            raise ValueError(f"{option} takes {form} pairs, got {value!r}")
        pairs[key] = item
    return pairs


if __name__ == "__main__":
    sys.exit(main())
