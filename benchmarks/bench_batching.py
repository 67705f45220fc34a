"""Batched multi-epoch Scene against an ImageStack of linked per-epoch Scenes (skyfit's two
ways of writing the joint supernova model; both render the host), value+gradient."""

from __future__ import annotations

import harness
import problems
import torch
from harness import Benchmark, best_times, median_of_rounds, spread


def batched_vs_stack(quick: bool):
    data = problems.supernova_data(0)
    batched, stack = problems.joint(data), problems.linked_epoch_stack(data)
    xb = batched.initial()
    vals = batched.unpack(xb)
    xs = torch.zeros(stack.dim, dtype=torch.float64)  # the same point in the stack's order
    for i, name in enumerate(stack.names):
        module, key = name.split(".")
        if module == "host":
            xs[i] = vals[name]
        elif key == "flux":
            xs[i] = vals["sn.flux"][int(module[2:])]
        else:
            xs[i] = vals[f"sn.{key}"]
    if not torch.allclose(batched(xb), stack(xs), rtol=1e-12):
        raise RuntimeError("stack and batched models disagree")
    repeat, number = (3, 3) if quick else (5, 10)
    fns = {"b": lambda: batched.value_and_grad(xb), "s": lambda: stack.value_and_grad(xs),
           "bv": lambda: batched(xb), "sv": lambda: stack(xs)}
    ratio = lambda r: r["s"] / r["b"]  # noqa: E731
    value, t, rounds = median_of_rounds(lambda _: best_times(fns, repeat, number),
                                        2 if quick else harness.ROUNDS, ratio)
    n = len(data.times)
    return value, dict(spread=spread(rounds, ratio), batched_ms=round(1e3 * t["b"], 3),
                       stack_ms=round(1e3 * t["s"], 3),
                       value_only_ratio=round(t["sv"] / t["bv"], 3), n_epochs=n,
                       batched_over_one_epoch=round(t["b"] / (t["s"] / n), 3))


BENCHMARKS = [
    Benchmark("batched_vs_stack", "speedup", ">=", 5, batched_vs_stack,
              "batched multi-epoch Scene vs an ImageStack of linked per-epoch Scenes "
              "(skyfit vs skyfit: the cost of writing epochs one Scene each), value+gradient"),
]
