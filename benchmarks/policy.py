"""Time to a given regret: gradient-based vs gradient-free policy search on the economy.

The task is section 2 of issue 19: one λ-conditioned policy ``λ -> α(λ)`` (bounded factors
``α = 2·sigmoid(z)`` on every sector of the pymrio test table's region ``reg1``, a 16-unit
network) for the whole GHG–employment front.

**Objective and regret.** Both methods minimise the same deterministic function of the
network's weights ``w``: the mean over the design's λ grid of eq. 5 weighted by ``1 / (1 + λ)``
(:func:`jcausal.policy.front.front_problem`). Its regret is that mean minus its exact infimum
``C`` (HiGHS, :func:`jcausal.economy.design.analytic_front`), i.e. the mean of
:func:`jcausal.policy.front.front_excess` ``/ (1 + λ)``. The gradient path also runs
once on λ drawn log-uniformly (32 per step, the amortised front's training): a different
objective, reported for reference, not used for the ratios.

**Curves.** SNES (:func:`jcausal.policy.evolve`): regret of the best-so-far weights after every
generation = its best fitness minus ``C`` (the fitness *is* the objective; checked against an
independent evaluation at 20 points). Gradient (:func:`jcausal.policy.train`, Adam at a constant
step size on the grid, :class:`jcausal.policy.Grid`): regret after every step, evaluated by
``fit``'s evaluation hook in a search run. Both have the prefix property (a run of ``N`` steps
or generations is exactly the first ``N`` of a longer one with the same key), so the first
step ``N*`` / generation ``G*`` at which a curve reaches the target ``T`` is what a run needs.

**Time to the regret T (warm).** The wall time of one call that ends at regret <= T:
``jp.train(..., steps=N*)`` and ``jp.evolve(..., generations=G*)``, everything a user waits for
once the programs are compiled (Python setup included). Compilation is excluded and reported
separately: the gradient call is run once untimed (``fit`` then reuses its compiled program),
and ``evolve``'s own compile time (it compiles on every call) is subtracted from its wall
time. Each is repeated (``--repeats``): min and median are reported, and their ratio, SNES /
gradient (the issue's target: >= 10). The ended regrets of the timed calls are checked <= T.

**Configurations.** Each method is swept (SNES: the initial scale ``std_init`` at population
64, including evosax's default 1.0, then the population at the best scale, 22 = 4 + floor(3 ln
d) being the SNES paper's default for ``d`` = 440 weights; evosax's defaults otherwise: step 1
for the mean and SNES's ``(3 + ln d) / (5 sqrt d)`` for the scale; gradient: Adam's step
size). The best configuration of each (the least estimated time to T, chosen in hindsight) is
timed. ``T`` is the best regret any SNES configuration reaches in its generations
(``--target`` overrides). Ratios at 2T and 4T are estimated from the curves: a compiled call's
fixed cost (measured) plus steps (generations) x the warm cost of one.

Timings are of one shared machine: compare the ratios only (measured in the same run).

    python benchmarks/policy.py            # full sweep, 1500 SNES generations
    python benchmarks/policy.py --quick    # small, about a minute of CPU
"""

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # this script is a standalone process

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
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


def floats(s: str) -> list[float]:
    return [float(v) for v in s.split(",") if v]


def ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v]


class Task:
    """The policy problem, the grid and the exact infimum ``C`` of the objective."""

    def __init__(self, region: str, grid_size: int, width: int, seed: int):
        model = eio.load(region)
        self.dp = ed.DesignProblem(model, eio.TEST_GHG, eio.TEST_EMPLOYMENT, bounded=True)
        self.grid = np.asarray(ed.auto_lambdas(self.dp, grid_size), float)
        self.problem, self.data = front.front_problem(self.dp)
        self.pol0 = front.front_policy(self.dp, self.grid, key=jax.random.key(seed), width=width)
        ref = ed.analytic_front(self.dp, self.grid)
        best = ref["ghg"] / float(self.dp.G) + self.grid * ref["deviation"] / float(self.dp.E)
        self.C = float(np.mean(best / (1 + self.grid)))
        self.G = jnp.asarray(self.grid)[:, None]

    def regret(self, pol) -> float:
        """Independent of the training code: front_excess (HiGHS) at each grid λ."""
        ex = front.front_excess(self.dp, pol, self.problem, self.data, self.grid)
        return float(np.mean(ex / (1 + self.grid)))


def _regret_eval(task):
    problem, data, C = task.problem, task.data, task.C

    def eval_fn(params, grid, key):
        pol = params["policy"]
        f, _, ok = jax.vmap(lambda lam: problem.terms(pol, data, lam[None]))(grid)
        return {"regret": jnp.where(ok.all(), jnp.mean(f) - C, jnp.inf)}

    return eval_fn


def first_hit(curve: np.ndarray, target: float) -> int | None:
    """1-based index of the first entry <= target (None if never)."""
    hit = np.flatnonzero(curve <= target)
    return int(hit[0]) + 1 if hit.size else None


def grad_kwargs(task, mode, lr):
    lo, hi = task.pol0.lambda_range
    if mode == "grid":
        lam = {"lambdas": jp.Grid(task.grid)}
    else:  # the amortised front's training: λ drawn over a wider range, 0 one time in ten
        lam = {"lambdas": jp.LogUniform(lo / 3, hi * 3, zero=0.1), "num_lambdas": 32}
    # Constant step size: a run of N steps is the first N of a longer one (prefix property).
    return {"optimizer": optax.adam(lr, b2=0.9), **lam}


def grad_train(task, kw, steps, seed, **extra):
    t0 = time.perf_counter()
    pol, _ = jp.train(task.problem, task.pol0, task.data, steps=steps,
                      key=jax.random.key(seed + 1), **kw, **extra)  # fmt: skip
    jax.block_until_ready(pol)
    return pol, time.perf_counter() - t0


def snes_curve(task, population, sigma, gens, seed):
    every = max(1, gens // 20)
    gens = every * (gens // every)
    _, res = jp.evolve(task.problem, task.pol0, task.data, generations=gens,
                       key=jax.random.key(seed + 2), population=population, sigma=sigma,
                       lambdas=task.grid, record_every=every)  # fmt: skip
    curve = np.asarray(res.best_fitness, float) - task.C
    # The fitness is the objective: its best-so-far minus C is the regret (checked).
    check = max(abs(task.regret(res.policy_at(i)) - curve[g - 1])
                for i, g in enumerate(res.recorded))  # fmt: skip
    return curve, res, check


def median(xs):
    return float(statistics.median(xs))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sweep (about a minute of CPU)")
    p.add_argument("--region", default="reg1")
    p.add_argument("--width", type=int, default=16, help="hidden units of the policy network")
    p.add_argument("--grid-size", type=int, default=None, help="λ grid (auto_lambdas)")
    p.add_argument("--generations", type=int, default=None, help="SNES generations per run")
    p.add_argument("--populations", type=ints, default=None, help="SNES populations, e.g. 22,64")
    p.add_argument("--sigmas", type=floats, default=None, help="SNES std_init values")
    p.add_argument("--lrs", type=floats, default=None, help="Adam step sizes")
    p.add_argument("--max-steps", type=int, default=None, help="gradient search-run steps")
    p.add_argument("--no-sampled", action="store_true", help="skip the sampled-λ gradient run")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats of each call")
    p.add_argument("--target", type=float, default=None, help="regret to reach")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(OUT))
    a = p.parse_args(argv)
    q = a.quick
    gens = a.generations or (200 if q else 1500)
    pops = a.populations or ([22, 64] if q else [22, 64, 128, 256])
    sigmas = a.sigmas or ([0.03, 0.1] if q else [0.01, 0.03, 0.1, 0.3, 1.0])
    lrs = a.lrs or ([1e-2, 3e-2] if q else [3e-3, 1e-2, 3e-2])
    max_steps = a.max_steps or (150 if q else 400)
    repeats = a.repeats or 3
    task = Task(a.region, a.grid_size or (6 if q else 12), a.width, a.seed)
    identity = task.regret(task.pol0)
    params = int(ravel_pytree(eqx.partition(task.pol0, task.pol0.trainable())[0])[0].size)
    print(f"{a.region}: {params} weights, {task.grid.size} grid λ, identity regret "
          f"{identity:.4g}", flush=True)  # fmt: skip

    # ---- SNES sweep: std_init at population 64 (or the first), then populations at the best
    snes = []

    def run_snes(pop, sigma):
        curve, res, check = snes_curve(task, pop, sigma, gens, a.seed)
        per_gen = (res.seconds - res.compile_seconds) / res.generations
        snes.append({"population": pop, "sigma": sigma, "generations": res.generations,
                     "curve": curve, "seconds_per_generation": per_gen,
                     "compile_seconds": res.compile_seconds, "best_regret": float(curve[-1]),
                     "curve_check_max_abs": check})  # fmt: skip
        print(f"SNES pop {pop:4d} std_init {sigma:5.2f}: best regret {curve[-1]:.4g} after "
              f"{res.generations} gens ({per_gen * 1e3:.2f} ms/gen warm, compile "
              f"{res.compile_seconds:.1f} s; curve check {check:.1e})", flush=True)  # fmt: skip
        if check > 1e-8:
            raise AssertionError(f"SNES fitness is not the regret: {check}")

    center = 64 if 64 in pops else pops[0]
    for sigma in sigmas:
        run_snes(center, sigma)
    best_sigma = min(snes, key=lambda r: r["best_regret"])["sigma"]
    for pop in pops:
        if pop != center:
            run_snes(pop, best_sigma)

    # ---- gradient sweep: search runs with the regret after every step
    grads = []
    modes = [("grid", lr) for lr in lrs] + ([] if a.no_sampled else [("sampled", 1e-2)])
    for mode, lr in modes:
        kw = grad_kwargs(task, mode, lr)
        t0 = time.perf_counter()
        pol, info = jp.train(task.problem, task.pol0, task.data, steps=max_steps,
                             key=jax.random.key(a.seed + 1), eval_data=task.G,
                             eval_fn=_regret_eval(task), eval_every=1, **kw)  # fmt: skip
        search = time.perf_counter() - t0
        curve = np.array([r["regret"] for r in info.histories[0].eval], float)
        if curve.size != max_steps:
            raise AssertionError(f"expected {max_steps} evaluations, got {curve.size}")
        check = abs(task.regret(pol) - curve[-1])
        if check > 1e-8:
            raise AssertionError(f"the search run's regret disagrees with front_excess: {check}")
        # Warm per-step cost: a run of max_steps reusing the search run's compiled program.
        _, warm = grad_train(task, kw, max_steps, a.seed)
        grads.append({"mode": mode, "lr": lr, "steps": max_steps, "curve": curve,
                      "seconds_per_step": warm / max_steps, "search_seconds": search,
                      "best_regret": float(curve.min()),
                      "final_regret": float(curve[-1])})  # fmt: skip
        print(f"gradient {mode:7s} lr {lr:6.0e}: regret {curve[-1]:.4g} after {max_steps} steps "
              f"(min {curve.min():.4g}; {warm / max_steps * 1e3:.2f} ms/step warm incl. call "
              "overhead)", flush=True)  # fmt: skip

    target = a.target if a.target is not None else min(r["best_regret"] for r in snes)

    def estimate(rows, t, unit, call=0.0):
        # A call's fixed cost plus the steps (generations) to t times the warm cost of one.
        out = []
        for r in rows:
            n = first_hit(r["curve"], t)
            out.append(math.inf if n is None else call + n * r[unit])
        return out

    # ---- the best configuration of each (least steps x per-step cost to T), timed at T
    es_est = estimate(snes, target, "seconds_per_generation")
    gr_rows = [g for g in grads if g["mode"] == "grid"]
    gr_est = estimate(gr_rows, target, "seconds_per_step")
    if not (np.isfinite(min(es_est)) and np.isfinite(min(gr_est))):
        raise SystemExit(f"target {target:.4g} not reached by both methods; raise --max-steps "
                         "or --generations, or pass --target")  # fmt: skip
    best_es, best_gr = snes[int(np.argmin(es_est))], gr_rows[int(np.argmin(gr_est))]
    g_star, n_star = first_hit(best_es["curve"], target), first_hit(best_gr["curve"], target)

    es_warm, es_compile, es_regret = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _, res = jp.evolve(task.problem, task.pol0, task.data, generations=max(2, g_star),
                           key=jax.random.key(a.seed + 2), population=best_es["population"],
                           sigma=best_es["sigma"], lambdas=task.grid)  # fmt: skip
        wall = time.perf_counter() - t0
        es_warm.append(wall - res.compile_seconds)
        es_compile.append(res.compile_seconds)
        es_regret.append(float(res.best_fitness[-1]) - task.C)
    kw = grad_kwargs(task, "grid", best_gr["lr"])
    _, first = grad_train(task, kw, n_star, a.seed)  # compiles (the program for n_star steps)
    gr_warm, gr_regret = [], []
    for _ in range(repeats):
        pol, t = grad_train(task, kw, n_star, a.seed)
        gr_warm.append(t)
        gr_regret.append(task.regret(pol))
    if max(es_regret) > target * (1 + 1e-9) or max(gr_regret) > target * (1 + 1e-9):
        raise AssertionError(f"a timed call ended above the target: {es_regret}, {gr_regret}")
    gr_compile = first - min(gr_warm)

    # ---- a compiled call's fixed cost (Python setup, dispatch, results to the host): a warm
    # 1-step train call; a 2-generation evolve call less its compilation and 2 generations
    grad_train(task, kw, 1, a.seed)  # compiles the 1-step program
    call_gr = median([grad_train(task, kw, 1, a.seed)[1] for _ in range(repeats)])
    call_es = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _, res = jp.evolve(task.problem, task.pol0, task.data, generations=2,
                           key=jax.random.key(a.seed + 2), population=best_es["population"],
                           sigma=best_es["sigma"], lambdas=task.grid)  # fmt: skip
        call_es.append(time.perf_counter() - t0 - res.compile_seconds
                       - 2 * best_es["seconds_per_generation"])  # fmt: skip
    call_es = max(0.0, median(call_es))
    for rows, unit, call, count in ((snes, "seconds_per_generation", call_es, "generations"),
                                    (grads, "seconds_per_step", call_gr, "steps")):  # fmt: skip
        for r in rows:  # per-step costs without the call's fixed cost
            r[unit + "_net"] = max(0.0, r[unit] - call / r[count])

    # ---- ratios at 4T and 2T estimated from the curves
    easier = []
    for t in (4 * target, 2 * target):
        es = min(estimate(snes, t, "seconds_per_generation_net", call_es))
        gr = min(estimate(gr_rows, t, "seconds_per_step_net", call_gr))
        easier.append({"target": t, "snes_seconds": es, "gradient_seconds": gr,
                       "ratio": es / gr})  # fmt: skip
    ratio_min, ratio_med = min(es_warm) / min(gr_warm), median(es_warm) / median(gr_warm)
    cold = (median(es_compile) + median(es_warm)) / (gr_compile + median(gr_warm))

    report = {
        "machine": machine_info("jax", "evosax", "optax"),
        "task": {"region": a.region, "lambdas": task.grid, "width": a.width,
                 "parameters": params, "infimum": task.C},
        "identity_regret": identity,
        "target_regret": target,
        "snes": [{k: v for k, v in r.items() if k != "curve"} | {
            "generations_to_target": first_hit(r["curve"], target),
            "curve_every_10": r["curve"][9::10]} for r in snes],
        "gradient": [{k: v for k, v in r.items() if k != "curve"} | {
            "steps_to_target": first_hit(r["curve"], target), "curve": r["curve"]}
            for r in grads],
        "timed": {
            "repeats": repeats,
            "snes": {"population": best_es["population"], "sigma": best_es["sigma"],
                     "generations": g_star, "seconds_warm": es_warm,
                     "seconds_compile": es_compile, "regret": es_regret},
            "gradient": {"lr": best_gr["lr"], "steps": n_star, "seconds_warm": gr_warm,
                         "seconds_compile": gr_compile, "regret": gr_regret},
        },
        "call_overhead_seconds": {"gradient": call_gr, "snes": call_es},
        "speedup_warm_min": ratio_min,
        "speedup_warm_median": ratio_med,
        "speedup_cold_median": cold,
        "easier_targets": easier,
    }  # fmt: skip
    print(f"target regret {target:.4g} (identity {identity:.3g}); {repeats} repeats")
    print(f"  SNES pop {best_es['population']} std_init {best_es['sigma']}: {g_star} generations,"
          f" warm {min(es_warm):.3f} s min / {median(es_warm):.3f} s median, compile "
          f"{median(es_compile):.1f} s")  # fmt: skip
    print(f"  gradient Adam lr {best_gr['lr']:g} on the grid: {n_star} steps, warm "
          f"{min(gr_warm):.3f} s min / {median(gr_warm):.3f} s median, compile "
          f"{gr_compile:.1f} s")  # fmt: skip
    print(f"  fixed cost of a compiled call: train {call_gr * 1e3:.1f} ms, evolve "
          f"{call_es * 1e3:.1f} ms")  # fmt: skip
    print(f"  SNES / gradient: {ratio_min:.1f}x (min), {ratio_med:.1f}x (median) warm; "
          f"{cold:.2f}x counting compilation")  # fmt: skip
    for e in easier:
        print(f"  at {e['target']:.4g}: SNES {e['snes_seconds']:.3f} s, gradient "
              f"{e['gradient_seconds']:.3f} s (estimated): {e['ratio']:.1f}x")  # fmt: skip
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(to_jsonable(report), indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
