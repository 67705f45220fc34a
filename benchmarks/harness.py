"""Shared pieces of the benchmark suite: a benchmark is a name, a metric, a target and a function.

Each ``bench_*.py`` file in this folder defines ``BENCHMARKS = [Benchmark(...), ...]``. The function
takes ``quick: bool`` and returns ``(value, details)``: the metric (a ratio against a baseline run
in the same process) and a dict of the raw numbers behind it, recorded in RESULTS.md.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable
from dataclasses import dataclass

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


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
