"""Run skyfit's benchmarks: ``python benchmarks/run.py [--quick] [NAME ...]``.

Prints one line per benchmark, ``BENCH <name> <metric>=<value> target=<op><value> ok|short``,
and updates ``benchmarks/RESULTS.md`` with the numbers behind each ratio.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import platform
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Benchmark  # noqa: E402


def discover() -> list[Benchmark]:
    found = []
    for path in sorted(HERE.glob("bench_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        found.extend(getattr(module, "BENCHMARKS", []))
    return found


def update_results(rows: list[dict], quick: bool) -> None:
    path = HERE / "RESULTS.md"
    previous = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.startswith("<!-- row "):
                row = json.loads(line[len("<!-- row ") : -len(" -->")])
                previous[row["name"]] = row
    for row in rows:
        previous[row["name"]] = row
    import torch

    lines = [
        "# Benchmark results",
        "",
        "Written by `python benchmarks/run.py` (each row keeps the mode and date of its last run).",
        "Every metric is a ratio against a baseline run in the same process on the same machine.",
        "",
        "| benchmark | metric | value | target | status | mode | date | details |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in sorted(previous):
        r = previous[name]
        details = "; ".join(f"{k}={v}" for k, v in r["details"].items())
        lines.append(
            f"| {name} | {r['metric']} | {r['value']:.3g} | {r['op']}{r['target']:g} | "
            f"{r['status']} | {r['mode']} | {r['date']} | {details} |"
        )
    lines += ["", f"Machine of the last run: {platform.platform()}, "
              f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads.", ""]
    lines += [f"<!-- row {json.dumps(previous[n])} -->" for n in sorted(previous)]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: all in under a minute")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    args = parser.parse_args(argv)
    benches = discover()
    if args.names:
        unknown = set(args.names) - {b.name for b in benches}
        if unknown:
            parser.error(f"unknown benchmarks {sorted(unknown)}; have {[b.name for b in benches]}")
        benches = [b for b in benches if b.name in args.names]
    rows = []
    for b in benches:
        try:
            value, details = b.fn(args.quick)
        except Exception as exc:  # a failing benchmark is reported, the others still run
            traceback.print_exc()
            print(f"BENCH {b.name} {b.metric}=nan target={b.op}{b.target:g} short", flush=True)
            # its row says so: an old "ok" must not survive a run that failed
            rows.append(dict(name=b.name, metric=b.metric, value=float("nan"), op=b.op,
                             target=b.target, status="error",
                             mode="quick" if args.quick else "full",
                             date=datetime.date.today().isoformat(),
                             details={"error": f"{type(exc).__name__}: {exc}"[:200]}))
            continue
        status = "ok" if b.passes(value) else "short"
        print(f"BENCH {b.name} {b.metric}={value:.3g} target={b.op}{b.target:g} {status}",
              flush=True)
        rows.append(dict(name=b.name, metric=b.metric, value=float(value), op=b.op,
                         target=b.target, status=status, mode="quick" if args.quick else "full",
                         date=datetime.date.today().isoformat(),
                         details={k: (round(v, 4) if isinstance(v, float) else v)
                                  for k, v in details.items()}))
    if rows and not args.no_write:
        update_results(rows, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
