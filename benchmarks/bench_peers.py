"""skyfit's batched NUTS against emcee, NumPyro and Pyro as their experts run them.

Each row is the median of interleaved rounds (every round runs both samplers) of the ratio of
effective samples per wall second, ESS and R-hat by one estimator on both sides (``peers.py``).
skyfit's time includes its start (MAP + Laplace), warm-up and draws. emcee: a numpy log-density
vectorised over walkers (what an emcee user writes; checked equal to skyfit's), started from the
same Laplace draws (free for emcee), the best of three move sets by a pilot run (stretch,
DE + DE-snooker, DE + stretch) at 4x dim walkers, burn-in 5 tau and as many steps as the ESS
that NUTS reached in the same round needs. NumPyro and Pyro: the same model in their language at
NUTS's chain count, warm-up and draws, compile and warm-up timed.
"""

from __future__ import annotations

import harness
import numpy as np
import problems
import torch
from harness import Benchmark, median_of_rounds, spread
from peers import EmceeRun, laplace_walkers, run_emcee_to_ess, run_skyfit_nuts, skyfit_start

# skyfit's design point is many chains in one batched call (small models are bound by the
# per-call cost); emcee's ESS/s hardly depends on its run length past the burn-in, so it is
# asked for the ESS NUTS reached, capped at EMCEE_ESS_CAP to bound the run
NUTS_SETTINGS = dict(full=dict(n_chains=256, n_warmup=150, n_draws=200),
                     quick=dict(n_chains=32, n_warmup=50, n_draws=50))
EMCEE_ESS_CAP = dict(full=10000, quick=1000)


def _pick_moves(log_prob, lap, lower, upper, walkers, pilot) -> tuple[str, dict]:
    """emcee's move set with the lowest cost per effective draw (tau x seconds per step) in a
    pilot run of each; returns the name and the pilot numbers."""
    cost = {}
    for moves in ("stretch", "de_snooker", "de_stretch"):
        run = EmceeRun(log_prob, laplace_walkers(lap, walkers, lower, upper, 1), moves, 1)
        run.run(pilot)
        cost[moves] = (run.tau(), run.wall / run.steps)
    best = min(cost, key=lambda m: cost[m][0] * cost[m][1])
    return best, {f"pilot_tau_{m}": round(c[0], 1) for m, c in cost.items()}


def _check_numpy(density, log_prob):
    try:  # a Posterior has a natural start; a bare FunctionDensity does not
        x = density.initial()
    except NotImplementedError:
        x = torch.arange(density.dim, dtype=torch.float64)
    x = torch.stack([x, x * 1.01 + 0.01])
    if not np.allclose(density(x).numpy(), log_prob(x.numpy()), rtol=1e-10, atol=1e-10):
        raise RuntimeError("the numpy log-density differs from skyfit's")


def nuts_vs_emcee(density, log_prob, quick: bool):
    _check_numpy(density, log_prob)
    settings = NUTS_SETTINGS["quick" if quick else "full"]
    lower, upper = density.lower.numpy(), density.upper.numpy()
    walkers = 4 * density.dim
    lap = skyfit_start(density)
    moves, pilot = _pick_moves(log_prob, lap, lower, upper, walkers, 200 if quick else 500)

    def measure(i):
        n = run_skyfit_nuts(density, seed=i, **settings)
        goal = min(n["ess"], EMCEE_ESS_CAP["quick" if quick else "full"])
        e = run_emcee_to_ess(log_prob, n["lap"], lower, upper, goal, walkers, moves, seed=i)
        return dict(nuts=n, emcee=e, ratio=(n["ess"] / n["wall"]) / (e["ess"] / e["wall"]))

    n_rounds = 2 if quick else harness.ROUNDS
    value, r, rounds = median_of_rounds(measure, n_rounds, lambda r: r["ratio"])
    n, e = r["nuts"], r["emcee"]
    return value, dict(
        spread=spread(rounds, lambda r: r["ratio"]),
        nuts_ess=round(n["ess"]), nuts_wall_s=round(n["wall"], 2), nuts_start_s=round(
            n["start_s"], 2), nuts_rhat=round(n["rhat"], 4), nuts_chains=n["chains"],
        nuts_warmup=n["warmup"], nuts_draws=n["draws"], nuts_divergent=n["divergent"],
        emcee_ess=round(e["ess"]), emcee_wall_s=round(e["wall"], 2),
        emcee_rhat=round(e["rhat"], 4), emcee_walkers=e["walkers"], emcee_moves=e["moves"],
        emcee_tau=round(e["tau"], 1), emcee_burn=e["burn"], emcee_steps=e["steps"],
        emcee_ess_from_tau=round(e["ess_from_tau"]), emcee_acceptance=round(
            e["acceptance"], 3), **pilot)


def nuts_vs_emcee_bump(quick: bool):
    post = problems.bump()
    return nuts_vs_emcee(post, problems.bump_numpy(post), quick)


def nuts_vs_emcee_gauss10(quick: bool):
    return nuts_vs_emcee(problems.gauss10(), problems.gauss10_numpy(), quick)


PEER_SETTINGS = dict(full=dict(n_chains=4, n_warmup=500, n_draws=500),
                     quick=dict(n_chains=2, n_warmup=100, n_draws=100))


def _nuts_vs_peer(peer, quick: bool):
    post = problems.bump()
    settings = PEER_SETTINGS["quick" if quick else "full"]
    names = [n.split(".")[1] for n in post.names]
    bounds = {n: (post.lower[i].item(), post.upper[i].item()) for i, n in enumerate(names)}
    like = post.likelihood
    args = (like.model.t, like.data, problems.BUMP_SIGMA, bounds)
    if peer.__name__ == "run_numpyro_bump":
        args = tuple(a.numpy() if isinstance(a, torch.Tensor) else a for a in args)

    def measure(i):
        n = run_skyfit_nuts(post, seed=i, **settings)
        p = peer(*args, seed=i, **settings)
        return dict(nuts=n, peer=p, ratio=(n["ess"] / n["wall"]) / (p["ess"] / p["wall"]))

    n_rounds = 2 if quick else harness.ROUNDS
    value, r, rounds = median_of_rounds(measure, n_rounds, lambda r: r["ratio"])
    n, p = r["nuts"], r["peer"]
    return value, dict(
        spread=spread(rounds, lambda r: r["ratio"]), chains=settings["n_chains"],
        warmup=settings["n_warmup"], draws=settings["n_draws"],
        nuts_ess=round(n["ess"]), nuts_wall_s=round(n["wall"], 2),
        nuts_rhat=round(n["rhat"], 4), nuts_divergent=n["divergent"],
        peer_ess=round(p["ess"]), peer_wall_s=round(p["wall"], 2), peer_rhat=round(p["rhat"], 4),
        **({"peer_divergent": p["divergent"]} if "divergent" in p else {}))


def nuts_vs_numpyro_bump(quick: bool):
    from peers import run_numpyro_bump

    return _nuts_vs_peer(run_numpyro_bump, quick)


def nuts_vs_pyro_bump(quick: bool):
    from peers import run_pyro_bump

    return _nuts_vs_peer(run_pyro_bump, quick)



BENCHMARKS = [
    Benchmark("nuts_vs_emcee_bump", "ess_per_s_ratio", ">=", 2, nuts_vs_emcee_bump,
              "NUTS (256 chains, Laplace start timed) vs emcee on a numpy log-prob (4x dim "
              "walkers, best move set, 5 tau burn-in, same ESS up to 1e4), bump + line, 5 params"),
    Benchmark("nuts_vs_emcee_gauss10", "ess_per_s_ratio", ">=", 2, nuts_vs_emcee_gauss10,
              "NUTS (256 chains, dense mass, Laplace start timed) vs emcee on a numpy log-prob "
              "(4x dim walkers, best move set, 5 tau burn-in, same ESS up to 1e4), 10-D AR(0.9) "
              "Gaussian"),
    Benchmark("nuts_vs_numpyro_bump", "ess_per_s_ratio", ">=", 1, nuts_vs_numpyro_bump,
              "NUTS vs NumPyro NUTS (JAX CPU, vectorized chains, dense mass), 4 chains x 500 "
              "warm-up + 500 draws each, compile and Laplace start timed, bump + line"),
    Benchmark("nuts_vs_pyro_bump", "ess_per_s_ratio", ">=", 1, nuts_vs_pyro_bump,
              "NUTS vs Pyro NUTS (jit_compile, dense mass), 4 chains x 500 warm-up + 500 "
              "draws each, JIT and Laplace start timed, bump + line"),
]
