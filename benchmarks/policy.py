"""Time to a given regret: gradient-based vs gradient-free policy search on the economy.

The task is section 2 of issue 19: one λ-conditioned policy ``λ -> α(λ)`` (bounded factors
``α = 2·sigmoid(z)`` on every sector of the pymrio test table's region ``reg1``) for the whole
GHG–employment front. Regret = mean over the design's λ grid of the objective both methods
minimise (eq. 5 weighted by ``1 / (1 + λ)``) minus its exact infimum (HiGHS): the mean of
:func:`jcausal.policy.front.front_excess` ``/ (1 + λ)``.

* gradient: :func:`jcausal.policy.train` (Adam through the implicit equilibrium layer, λ drawn
  log-uniformly, 32 per step); runs of 25, 50, 100, ... steps (a fresh schedule each) until one
  ends at or below the target; that run is timed cold (with compilation) and warm (again, the
  compiled program reused);
* gradient-free: :func:`jcausal.policy.evolve` (evosax SNES, the same network and weighted
  objective on the λ grid), one run; warm time to the target = generations needed × the cost
  of a generation (the run's time less its compilation, per generation), cold = the run's
  whole time pro rata (compilation spread over the generations: in its favour).

The target is the regret the gradient-free run ends at (``--target`` overrides), so both reach
it. Reported: each method's time to the target and their ratio (the issue's target: gradient
>= 10x faster). Times are of one run on one machine: compare the ratio only.

    python benchmarks/policy.py            # 16-unit network, 1500 SNES generations
    python benchmarks/policy.py --quick    # small, about a minute
"""

import argparse
import json
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # this script is a standalone process

import equinox as eqx  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402

from jcausal import policy as jp  # noqa: E402
from jcausal.economy import design as ed  # noqa: E402
from jcausal.economy import io as eio  # noqa: E402
from jcausal.policy import front  # noqa: E402
from jcausal.results import to_jsonable  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "policy.json"


def setup(region: str, grid_size: int, width: int, seed: int):
    model = eio.load(region)
    dp = ed.DesignProblem(model, eio.TEST_GHG, eio.TEST_EMPLOYMENT, bounded=True)
    grid = ed.auto_lambdas(dp, grid_size)
    problem, data = front.front_problem(dp)
    pol = front.front_policy(dp, grid, key=jax.random.key(seed), width=width)
    return dp, grid, problem, data, pol


def regret(dp, pol, problem, data, grid) -> float:
    # The excess of the objective both methods minimise (eq. 5 weighted by 1 / (1 + λ)).
    return float(np.mean(front.front_excess(dp, pol, problem, data, grid) / (1 + grid)))


def gradient_runs(dp, grid, problem, data, pol0, target, start, most, seed):
    """Runs of start, 2 start, ... steps until one ends at or below the target.

    The run that reaches it is run again with the same optimiser object: ``fit`` reuses the
    compiled program, so the second run's time excludes compilation (``seconds_warm``).
    """
    lo, hi = pol0.lambda_range
    rows, steps = [], start

    def once(steps, tx):
        t0 = time.perf_counter()
        pol, _ = jp.train(problem, pol0, data, steps=steps, key=jax.random.key(seed + 1),
                          lambdas=jp.LogUniform(lo / 3, hi * 3, zero=0.1), num_lambdas=32,
                          optimizer=tx)  # fmt: skip
        return pol, time.perf_counter() - t0

    while steps <= most:
        tx = optax.adam(optax.cosine_decay_schedule(1e-2, steps, alpha=1e-2), b2=0.9)
        pol, cold = once(steps, tx)
        r = regret(dp, pol, problem, data, grid)
        row = {"steps": steps, "seconds_cold": cold, "regret": r}
        rows.append(row)
        if r <= target:
            _, row["seconds_warm"] = once(steps, tx)
            print(f"gradient {steps:6d} steps  cold {cold:7.2f} s  warm "
                  f"{row['seconds_warm']:7.2f} s  regret {r:.4g}", flush=True)  # fmt: skip
            return rows, cold, row["seconds_warm"]
        print(f"gradient {steps:6d} steps  cold {cold:7.2f} s  regret {r:.4g}", flush=True)
        steps *= 2
    return rows, float("nan"), float("nan")


def snes_run(problem, data, pol0, grid, gens, every, population, seed):
    """One SNES run; the best-so-far policy every ``every`` generations."""
    t0 = time.perf_counter()
    _, res = jp.evolve(problem, pol0, data, generations=gens, key=jax.random.key(seed + 2),
                       population=population, sigma=0.1, lambdas=grid,
                       record_every=every)  # fmt: skip
    return res, time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    p.add_argument("--region", default="reg1")
    p.add_argument("--width", type=int, default=16, help="hidden units of the policy network")
    p.add_argument("--generations", type=int, default=None)
    p.add_argument("--population", type=int, default=64)
    p.add_argument("--target", type=float, default=None, help="regret to reach")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(OUT))
    a = p.parse_args(argv)
    gens = a.generations or (200 if a.quick else 1500)
    grid_size = 6 if a.quick else 12
    dp, grid, problem, data, pol0 = setup(a.region, grid_size, a.width, a.seed)
    identity = regret(dp, pol0, problem, data, grid)
    every = max(1, gens // 20)
    gens = every * (gens // every)
    res, t_es = snes_run(problem, data, pol0, grid, gens, every, a.population, a.seed)
    per_gen = (t_es - res.compile_seconds) / gens  # setup, compilation excluded
    curve = [(int(g), regret(dp, res.policy_at(i), problem, data, grid))
             for i, g in enumerate(res.recorded)]  # fmt: skip
    for g, r in curve:
        print(f"SNES     {g:6d} gens   warm {per_gen * g:8.2f} s  regret {r:.4g}", flush=True)
    target = a.target if a.target is not None else min(r for _, r in curve)
    g_hit = next((g for g, r in curve if r <= target), None)
    es_cold = t_es * g_hit / gens if g_hit is not None else float("nan")
    es_warm = per_gen * g_hit if g_hit is not None else float("nan")
    rows, grad_cold, grad_warm = gradient_runs(dp, grid, problem, data, pol0, target,
                                               25, 3200 if a.quick else 12800, a.seed)  # fmt: skip
    params = int(ravel_pytree(eqx.partition(pol0, pol0.trainable())[0])[0].size)
    report = {
        "machine": machine_info("jax", "evosax", "optax"),
        "task": {"region": a.region, "lambdas": grid, "width": a.width, "parameters": params},
        "identity_regret": identity,
        "target_regret": target,
        "snes": {"generations": gens, "population": a.population, "seconds": t_es,
                 "seconds_per_generation": per_gen, "curve": curve,
                 "generations_to_target": g_hit, "seconds_to_target_cold": es_cold,
                 "seconds_to_target_warm": es_warm, "best_regret": min(r for _, r in curve)},
        "gradient": {"runs": rows, "seconds_to_target_cold": grad_cold,
                     "seconds_to_target_warm": grad_warm},
        "speedup_warm": es_warm / grad_warm,
        "speedup_cold": es_cold / grad_cold,
    }  # fmt: skip
    print(f"target regret {target:.4g} (identity {identity:.3g}): SNES {es_warm:.2f} s warm "
          f"({es_cold:.2f} cold), gradient {grad_warm:.2f} s warm ({grad_cold:.2f} cold); "
          f"ratio {es_warm / grad_warm:.1f}x warm, {es_cold / grad_cold:.1f}x cold")  # fmt: skip
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(to_jsonable(report), indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
