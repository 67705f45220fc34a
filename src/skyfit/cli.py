"""Command line: ``skyfit demo [--out DIR] [--seed N]`` (also ``python -m skyfit demo``)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="skyfit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="simulate and fit the supernova light-curve problem")
    demo.add_argument("--out", default="skyfit-demo", help="output folder (default skyfit-demo/)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the mock data")
    demo.add_argument("--quiet", action="store_true", help="no progress output")
    demo.add_argument("--samplers", choices=["full", "quick", "none"], default="full",
                      help="posterior sampling after the fits: full (default), quick, none")
    args = parser.parse_args(argv)
    if args.command == "demo":
        import matplotlib

        matplotlib.use("Agg")
        from .examples.demo import run_demo

        samplers = None if args.samplers == "none" else args.samplers
        summary = run_demo(args.out, seed=args.seed, progress=not args.quiet, samplers=samplers)
        return 0 if summary["converged"] else 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
