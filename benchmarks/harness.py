"""Shared pieces of the benchmark suite: a benchmark is a name, a metric, a target and a function.

Each ``bench_*.py`` file in this folder defines ``BENCHMARKS = [Benchmark(...), ...]``. The function
takes ``quick: bool`` and returns ``(value, details)``: the metric (a ratio against a baseline run
in the same process) and a dict of the raw numbers behind it, recorded in RESULTS.md. A timed
benchmark is the median of at least ``ROUNDS`` interleaved rounds and puts the lowest and highest
round's metric in ``details["spread"]``: a median that meets its target while the spread crosses
it is reported ``ok?`` (not settled by this run), one that misses it ``short``.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable
from dataclasses import dataclass

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
ROUNDS = 5  # interleaved rounds of every timed benchmark (full mode; run.py --rounds)
# rounds of the minutes-long time-to-result row: five would take ~half of the suite's 25 min
LONG_ROUNDS = 3


@dataclass
class Benchmark:
    name: str
    metric: str
    op: str
    target: float
    fn: Callable[[bool], tuple[float, dict]]
    description: str = ""

    def passes(self, value: float) -> bool:
        return OPS[self.op](value, self.target)

    def status(self, value: float, spread=None) -> str:
        """``ok``, ``ok?`` (the median passes, the spread of the rounds crosses the target) or
        ``short``."""
        if not self.passes(value):
            return "short"
        if spread is not None and not all(self.passes(v) for v in spread):
            return "ok?"
        return "ok"


def median_of_rounds(measure: Callable[[int], dict], n_rounds: int,
                     metric: Callable[[dict], float]) -> tuple[float, dict, list[dict]]:
    """Run ``measure(round_index)`` ``n_rounds`` times (each round runs every side of the
    comparison, so that a change in the machine's speed hits them alike) and return the median
    ``metric``, the round that gave it (its numbers go in the details) and all rounds. The
    details should carry ``spread=[min, max]`` of the metric over the rounds."""
    rounds = [measure(i) for i in range(n_rounds)]
    values = sorted(metric(r) for r in rounds)
    mid = values[len(values) // 2]
    chosen = min(rounds, key=lambda r: abs(metric(r) - mid))
    return mid, chosen, rounds


def spread(rounds: list[dict], metric: Callable[[dict], float]) -> list[float]:
    values = [metric(r) for r in rounds]
    return [round(min(values), 4), round(max(values), 4)]


def best_times(fns: dict[str, Callable[[], object]], repeat: int = 5,
               number: int = 1) -> dict[str, float]:
    """Best wall time (seconds per call) of each function: ``number`` calls per try, ``repeat``
    tries after one warm-up call. The tries of the functions are interleaved, so that a change in
    the machine's speed during the run (other tenants, frequency) hits each of them alike."""
    for fn in fns.values():
        fn()  # warm up (allocations, caches)
    best = {name: float("inf") for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t = time.perf_counter()
            for _ in range(number):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t) / number)
    return best
