"""Run skyfit's benchmarks: ``python benchmarks/run.py [--quick] [NAME ...]``.

Prints one line per benchmark,
``BENCH <name> <metric>=<value> [spread=<min>..<max>] target=<op><value> ok|ok?|short``
(``ok?``: the median of the rounds meets the target but their spread crosses it), and updates
``benchmarks/RESULTS.md`` with the numbers behind each ratio.
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

import harness  # noqa: E402
from harness import Benchmark  # noqa: E402


def discover() -> list[Benchmark]:
    found = []
    for path in sorted(HERE.glob("bench_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        # registered under its name, so worker processes (spawn) can unpickle its functions
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        found.extend(getattr(module, "BENCHMARKS", []))
    return found


def update_results(rows: list[dict], quick: bool, known: set[str]) -> None:
    """Write RESULTS.md: this run's rows over the previous ones; rows of benchmarks that no
    longer exist (renamed or replaced) are dropped."""
    path = HERE / "RESULTS.md"
    previous = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.startswith("<!-- row "):
                row = json.loads(line[len("<!-- row ") : -len(" -->")])
                if row["name"] in known:
                    previous[row["name"]] = row
    for row in rows:
        previous[row["name"]] = row
    import torch

    lines = [
        "# Benchmark results",
        "",
        "Written by `python benchmarks/run.py` (each row keeps the mode and date of its last run).",
        "Every metric is a ratio against a baseline run in the same process on the same machine",
        "(or an absolute measure where it says so); timed rows are the median of interleaved",
        "rounds, their lowest and highest round in `spread`; `ok?`: the median meets the target,",
        "the spread crosses it (or, where the row says so, too few trials to show the target).",
        "The baseline of each row is described in its `baseline` column.",
        "",
        "| benchmark | metric | value | spread | target | status | mode | date | baseline | "
        "details |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in sorted(previous):
        r = previous[name]
        details = "; ".join(f"{k}={v}" for k, v in r["details"].items() if k != "spread")
        lo_hi = r["details"].get("spread")
        spread = f"{lo_hi[0]:.3g}..{lo_hi[1]:.3g}" if lo_hi else "-"
        lines.append(
            f"| {name} | {r['metric']} | {r['value']:.3g} | {spread} | {r['op']}{r['target']:g} "
            f"| {r['status']} | {r['mode']} | {r['date']} | {r.get('baseline', '')} | "
            f"{details} |"
        )
    missing = sorted(known - set(previous))
    if missing:  # a benchmark with no row yet (new, or its row dropped when its baseline changed)
        lines += ["", "Not run yet: " + ", ".join(f"`{n}`" for n in missing) + "."]
    lines += ["", f"Machine of the last run: {platform.platform()}, "
              f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads.", ""]
    lines += [f"<!-- row {json.dumps(previous[n])} -->" for n in sorted(previous)]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and two rounds: a check that everything runs")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"interleaved rounds of every timed benchmark (default "
                             f"{harness.ROUNDS}, {harness.LONG_ROUNDS} for time-to-result)")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    args = parser.parse_args(argv)
    if args.rounds is not None:  # read by the benchmarks when they run
        harness.ROUNDS = harness.LONG_ROUNDS = args.rounds
    benches = discover()
    known = {b.name for b in benches}
    if args.names:
        unknown = set(args.names) - {b.name for b in benches}
        if unknown:
            parser.error(f"unknown benchmarks {sorted(unknown)}; have {[b.name for b in benches]}")
        benches = [b for b in benches if b.name in args.names]
    rows = []
    import torch

    threads = torch.get_num_threads()
    for b in benches:
        # each row starts on the machine's threads: a row that times one core (set_num_threads(1))
        # must not leave the rows after it on one core
        torch.set_num_threads(threads)
        try:
            value, details = b.fn(args.quick)
        except Exception as exc:  # a failing benchmark is reported, the others still run
            traceback.print_exc()
            print(f"BENCH {b.name} {b.metric}=nan target={b.op}{b.target:g} short", flush=True)
            # its row says so: an old "ok" must not survive a run that failed
            rows.append(dict(name=b.name, metric=b.metric, value=float("nan"), op=b.op,
                             target=b.target, status="error", baseline=b.description,
                             mode="quick" if args.quick else "full",
                             date=datetime.date.today().isoformat(),
                             details={"error": f"{type(exc).__name__}: {exc}"[:200]}))
            continue
        lo_hi = details.get("spread")
        status = b.status(value, lo_hi)
        shown = f" spread={lo_hi[0]:.3g}..{lo_hi[1]:.3g}" if lo_hi else ""
        print(f"BENCH {b.name} {b.metric}={value:.3g}{shown} target={b.op}{b.target:g} {status}",
              flush=True)
        rows.append(dict(name=b.name, metric=b.metric, value=float(value), op=b.op,
                         target=b.target, status=status, baseline=b.description,
                         mode="quick" if args.quick else "full",
                         date=datetime.date.today().isoformat(),
                         details={k: (round(v, 4) if isinstance(v, float) else v)
                                  for k, v in details.items()}))
    if rows and not args.no_write:
        update_results(rows, args.quick, known)
    return 0


if __name__ == "__main__":
    sys.exit(main())
