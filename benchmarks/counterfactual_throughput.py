"""Counterfactual throughput: jcausal's generic engine vs. a hand-written JAX kernel vs. DoWhy.

What is measured
----------------
A five-node additive-noise chain, in float64::

    X1 = N1
    Xk = f(X_{k-1}) + Nk,   f(x) = tanh(1.5 x) + 0.5 x,   k = 2..5,   Nk ~ N(0, 1)

and the counterfactual ``do(X2 := X2 + 1)`` for every observed unit: a shift of +1 on X2 that
keeps X2's own noise, so ``X2' = X2 + 1`` and X3..X5 are recomputed from their abducted noises
``Nk = Xk - f(X_{k-1})``. X1 is not a descendant of X2 and is returned unchanged.

Three implementations answer the same query for the same N observations:

1. ``jcausal``: the public ``jc.counterfactual(scm, obs, {"X2": jc.Shift(1.0)})`` on a generic
   ``jc.SCM`` (a Python wrapper with input checks around one ``eqx.filter_jit``-compiled call),
   called exactly as a user would call it;
2. ``hand-written``: ``jax.jit(jax.vmap(unit))`` of the five equations written out by hand
   (abduct N3..N5 on the observations, then recompute): the speed limit for a generic engine;
3. ``DoWhy``: ``gcm.counterfactual_samples`` on an ``InvertibleStructuralCausalModel`` whose
   non-root nodes are ``AdditiveNoiseModel`` mechanisms whose prediction model computes the
   exact, known ``f`` (nothing is learned: ``gcm.fit`` only records the parents and is run once,
   untimed, on 100 rows, since every distribution has fixed parameters).

A fourth, diagnostic row, ``jcausal (in jax.jit)``, calls the same public ``jc.counterfactual``
inside a user's ``jax.jit``: its compiled body is jcausal's, but it skips jcausal's per-call
Python work (validation, ``eqx.filter_jit`` argument flattening), so the gap between it and
row 1 is jcausal's dispatch overhead, and the gap between it and row 2 the cost of the compiled
code itself. Like the hand-written kernel it returns X2..X5 only (X1 is unchanged). It is not
part of the targets.

All implementations must agree (max abs difference over all five nodes <= 1e-5; asserted,
before timing). Times are per call and wall-clock, with each call's outputs made ready
(``jax.block_until_ready``; DoWhy is synchronous). Inputs are prepared once and untimed: JAX
arrays (from ``jc.sample``) for the JAX rows and a pandas DataFrame for DoWhy; the intervention
objects (``jc.Shift(1.0)``, DoWhy's ``lambda x: x + 1``) are also built once. For every method
and size the first call is timed on its own and reported as ``first call`` (for the JAX rows
it includes tracing and XLA compilation; ``compile ~`` is first call minus the median). Then
each method is warmed up, a batch size is chosen so a batch lasts at least ``--min-batch-time``
seconds, and ``--repeats`` batches are timed round-robin across methods (so slow drifts of the
machine affect every method alike); the reported time is the median per-call time over
batches, and throughput is ``N / time`` in counterfactual units per second.

Targets (at N = 1e5): jcausal >= 5x DoWhy's throughput, and hand-written/jcausal <= 1.3.

DoWhy is skipped at a size when its extrapolated (or measured) single-call time exceeds
``--dowhy-budget`` seconds; its number of repeats is reduced so its total time there stays
within that budget. Either is recorded as a note in the JSON.

How to run
----------
From the repository root::

    python benchmarks/counterfactual_throughput.py            # N = 1e3, 1e5, 1e6
    python benchmarks/counterfactual_throughput.py --quick    # smoke test, < 30 s
    python benchmarks/counterfactual_throughput.py --sizes 1e4,1e5 --repeats 21 --out r.json

It needs the ``bench`` extra (``dowhy``, ``pandas``, ``networkx``) and scipy. Results are
printed as a table and written to ``--out`` (default
``benchmarks/results/counterfactual_throughput.json``) with the machine and library versions.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

jax.config.update("jax_enable_x64", True)

import distrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _machine import load_average, machine_info  # noqa: E402 (benchmarks/ is on sys.path)

import jcausal as jc  # noqa: E402

try:
    import networkx as nx
    import pandas as pd
    import scipy
    import scipy.stats
    from dowhy import gcm
except ImportError as err:  # pragma: no cover - depends on the environment
    raise SystemExit(
        f"this benchmark needs DoWhy, pandas, networkx and scipy ({err}); "
        "install them with: pip install 'jcausal[bench]' scipy"
    ) from err

NODES = ("X1", "X2", "X3", "X4", "X5")
SHIFT = 1.0
TOLERANCE = 1e-5
TARGET_N = 100_000
TARGET_SPEEDUP_VS_DOWHY = 5.0  # jcausal throughput / DoWhy throughput must be >= this
TARGET_HAND_OVER_JCAUSAL = 1.3  # hand-written throughput / jcausal throughput must be <= this
DEFAULT_SIZES = (1_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 100_000)
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "counterfactual_throughput.json"

JCAUSAL = "jcausal"
JCAUSAL_IN_JIT = "jcausal (in jax.jit)"
HAND = "hand-written"
DOWHY = "DoWhy"
METHODS = (JCAUSAL, JCAUSAL_IN_JIT, HAND, DOWHY)


# ----------------------------------------------------------------------------------------------
# the model, three times


def f_jax(x):
    """The structural function of every non-root node, ``tanh(1.5 x) + 0.5 x``."""
    return jnp.tanh(1.5 * x) + 0.5 * x


def f_numpy(x: np.ndarray) -> np.ndarray:
    """``f`` in NumPy, for DoWhy."""
    return np.tanh(1.5 * x) + 0.5 * x


def _chain_mechanism(parent: str) -> jc.Additive:
    return jc.Additive(
        lambda params, pa: f_jax(pa[parent]), None, distrax.Normal(0.0, 1.0), parents=(parent,)
    )


def build_jcausal_scm() -> jc.SCM:
    """The chain as a generic jcausal SCM (root X1, additive-noise X2..X5)."""
    mechanisms = {"X1": jc.Root(distrax.Normal(0.0, 1.0))}
    for parent, node in itertools.pairwise(NODES):
        mechanisms[node] = _chain_mechanism(parent)
    return jc.SCM(mechanisms)


def build_hand_written() -> Callable[[dict[str, jax.Array]], dict[str, jax.Array]]:
    """``jax.jit(jax.vmap(unit))`` of the counterfactual, written out for this one chain.

    Returns the recomputed nodes X2..X5 (X1 is unchanged and not copied).
    """

    def unit(x: dict[str, jax.Array]) -> dict[str, jax.Array]:
        x2 = x["X2"] + SHIFT  # X2 keeps its noise: f(X1) + N2 + 1 = X2 + 1
        x3 = f_jax(x2) + (x["X3"] - f_jax(x["X2"]))
        x4 = f_jax(x3) + (x["X4"] - f_jax(x["X3"]))
        x5 = f_jax(x4) + (x["X5"] - f_jax(x["X4"]))
        return {"X2": x2, "X3": x3, "X4": x4, "X5": x5}

    return jax.jit(jax.vmap(unit))


class KnownFunction(gcm.ml.PredictionModel):
    """A DoWhy prediction model that computes the known ``f`` instead of learning it."""

    def fit(self, X: np.ndarray, Y: np.ndarray) -> None:
        """Nothing to learn."""

    def predict(self, X: np.ndarray) -> np.ndarray:
        # X is (n, 1) (one parent); DoWhy needs a 2-D (n, 1) result as well.
        return f_numpy(X)

    def clone(self) -> KnownFunction:
        return KnownFunction()


def build_dowhy_scm(data: pd.DataFrame) -> gcm.InvertibleStructuralCausalModel:
    """The chain as a DoWhy invertible SCM, with fixed N(0, 1) distributions and the exact ``f``.

    ``gcm.fit`` is still required by DoWhy (it records each node's parents); with fixed
    distribution parameters and :class:`KnownFunction` it learns nothing, so it runs on a few rows.
    """
    graph = nx.DiGraph(list(itertools.pairwise(NODES)))
    scm = gcm.InvertibleStructuralCausalModel(graph)
    scm.set_causal_mechanism("X1", gcm.ScipyDistribution(scipy.stats.norm, loc=0.0, scale=1.0))
    for node in NODES[1:]:
        noise = gcm.ScipyDistribution(scipy.stats.norm, loc=0.0, scale=1.0)
        scm.set_causal_mechanism(node, gcm.AdditiveNoiseModel(KnownFunction(), noise))
    gcm.fit(scm, data.head(100))
    return scm


# ----------------------------------------------------------------------------------------------
# timing


def _block(out: Any) -> Any:
    return jax.block_until_ready(out)


def time_first_call(call: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time of one call (outputs made ready), and its outputs."""
    t0 = time.perf_counter()
    out = call()
    return time.perf_counter() - t0, out


def calibrate(call: Callable[[], Any], min_batch_time: float, warmups: int) -> int:
    """Warm up, then pick how many calls make a batch of at least ``min_batch_time`` seconds."""
    t = math.inf
    for _ in range(max(1, warmups)):
        t0 = time.perf_counter()
        call()
        t = min(t, time.perf_counter() - t0)
    return max(1, min(100_000, math.ceil(min_batch_time / max(t, 1e-9))))


def time_batch(call: Callable[[], Any], number: int) -> float:
    """Mean wall time per call over ``number`` consecutive calls."""
    t0 = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - t0) / number


def summarise(n: int, per_call: list[float]) -> dict[str, float]:
    med = statistics.median(per_call)
    q25, q75 = (float(q) for q in np.percentile(per_call, [25, 75]))
    return {
        "time_median_s": med,
        "time_min_s": min(per_call),
        "time_q25_s": q25,
        "time_q75_s": q75,
        "throughput_median": n / med,
        "throughput_best": n / min(per_call),
    }


# ----------------------------------------------------------------------------------------------
# one problem size


def max_abs_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in NODES)


def run_size(
    n: int,
    *,
    scm: jc.SCM,
    hand: Callable,
    repeats: int,
    min_batch_time: float,
    warmups: int,
    dowhy_budget: float,
    dowhy_seconds_per_unit: float | None,
    seed: int,
) -> tuple[dict[str, Any], float | None]:
    """Check and time every method at size ``n``. Returns the results and DoWhy's s/unit."""
    notes: list[str] = []
    obs = _block(jc.sample(jax.random.key(seed), scm, n))
    obs_np = {k: np.asarray(v) for k, v in obs.items()}
    frame = pd.DataFrame(obs_np, columns=list(NODES))
    dowhy_scm = build_dowhy_scm(frame)

    interventions = {"X2": jc.Shift(SHIFT)}
    dowhy_interventions = {"X2": lambda x: x + SHIFT}
    delta = jnp.asarray(SHIFT)

    @jax.jit
    def jcausal_in_jit(observations, d):
        # Like the hand-written kernel, return only the recomputed nodes: an unchanged X1
        # returned from a jit would be copied, which the public call does not do.
        cf = jc.counterfactual(scm, observations, {"X2": jc.Shift(d)})
        return {k: v for k, v in cf.items() if k != "X1"}

    calls: dict[str, Callable[[], Any]] = {
        JCAUSAL: lambda: _block(jc.counterfactual(scm, obs, interventions)),
        JCAUSAL_IN_JIT: lambda: _block(jcausal_in_jit(obs, delta)),
        HAND: lambda: _block(hand(obs)),
        DOWHY: lambda: gcm.counterfactual_samples(
            dowhy_scm, dowhy_interventions, observed_data=frame
        ),
    }
    reps = dict.fromkeys(calls, repeats)

    # DoWhy may be too slow at large N: extrapolate from the previous size before running it.
    if dowhy_seconds_per_unit is not None and dowhy_seconds_per_unit * n > dowhy_budget:
        est = dowhy_seconds_per_unit * n
        notes.append(
            f"DoWhy skipped at N={n}: one call extrapolates to {est:.1f} s "
            f"(> budget {dowhy_budget:.0f} s)"
        )
        del calls[DOWHY]

    # First calls (compile time for JAX), and the correctness check on their outputs.
    first: dict[str, float] = {}
    outputs: dict[str, dict[str, np.ndarray]] = {}
    for name, call in calls.items():
        first[name], out = time_first_call(call)
        if name in (HAND, JCAUSAL_IN_JIT):
            out = {"X1": obs["X1"], **out}
        if name == DOWHY:
            outputs[name] = {k: out[k].to_numpy() for k in NODES}
        else:
            outputs[name] = {k: np.asarray(out[k]) for k in NODES}
        for k in NODES:
            got = outputs[name][k]
            if got.dtype != np.float64 or got.shape != (n,):
                raise AssertionError(
                    f"{name}: node {k} is {got.dtype}{got.shape}, not float64({n},)"
                )

    diffs: dict[str, float] = {}
    names = list(outputs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            diffs[f"{a} vs {b}"] = max_abs_diff(outputs[a], outputs[b])
    diffs["X2' - (X2 + 1), jcausal"] = float(
        np.max(np.abs(outputs[JCAUSAL]["X2"] - (obs_np["X2"] + SHIFT)))
    )
    worst = max(diffs.values())
    print(f"N={n:>9,}: max |difference| between methods = {worst:.3g}")
    for pair, d in diffs.items():
        print(f"    {pair:<40} {d:.3g}")
    if not worst <= TOLERANCE:  # also catches NaN
        raise AssertionError(f"methods disagree at N={n} (tolerance {TOLERANCE}): {diffs}")

    if DOWHY in calls:
        if first[DOWHY] > dowhy_budget:
            notes.append(
                f"DoWhy at N={n}: first call took {first[DOWHY]:.1f} s (> budget "
                f"{dowhy_budget:.0f} s); not repeated, its single call is reported"
            )
            reps[DOWHY] = 0
        else:
            fit = max(1, int(dowhy_budget // max(first[DOWHY], 1e-9)) - warmups)
            if fit < repeats:
                notes.append(
                    f"DoWhy at N={n}: {fit} repeats instead of {repeats} to stay within "
                    f"{dowhy_budget:.0f} s"
                )
                reps[DOWHY] = fit

    # Calibrate batch sizes, then time batches round-robin across methods.
    number = {
        name: calibrate(call, min_batch_time, warmups) for name, call in calls.items() if reps[name]
    }
    per_call: dict[str, list[float]] = {name: [] for name in number}
    for r in range(max(reps.values())):
        for name in number:
            if r < reps[name]:
                per_call[name].append(time_batch(calls[name], number[name]))

    methods: dict[str, Any] = {}
    for name in calls:
        times = per_call.get(name) or [first[name]]
        stats = summarise(n, times)
        methods[name] = {
            **stats,
            "first_call_s": first[name],
            "compile_s_estimate": max(0.0, first[name] - stats["time_median_s"])
            if name != DOWHY
            else None,
            "calls_per_batch": number.get(name, 1),
            "batches": len(per_call.get(name) or []),
            "per_call_times_s": times,
        }

    ratios: dict[str, float | None] = {
        "jcausal_over_dowhy": None,
        "hand_over_jcausal": methods[HAND]["throughput_median"]
        / methods[JCAUSAL]["throughput_median"],
        "hand_over_jcausal_in_jit": methods[HAND]["throughput_median"]
        / methods[JCAUSAL_IN_JIT]["throughput_median"],
        "jcausal_in_jit_over_jcausal": methods[JCAUSAL_IN_JIT]["throughput_median"]
        / methods[JCAUSAL]["throughput_median"],
    }
    if DOWHY in methods:
        ratios["jcausal_over_dowhy"] = (
            methods[JCAUSAL]["throughput_median"] / methods[DOWHY]["throughput_median"]
        )
        dowhy_seconds_per_unit = methods[DOWHY]["time_median_s"] / n

    result = {
        "n": n,
        "methods": methods,
        "ratios": ratios,
        "max_abs_diff": diffs,
        "tolerance": TOLERANCE,
        "notes": notes,
    }
    return result, dowhy_seconds_per_unit


# ----------------------------------------------------------------------------------------------
# reporting


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def print_table(results: list[dict[str, Any]]) -> None:
    head = (
        f"{'N':>9}  {'method':<21} {'first call':>10} {'compile ~':>10} "
        f"{'median/call':>12} {'IQR/median':>10} {'units/s':>15} {'best units/s':>15}"
    )
    print()
    print(head)
    print("-" * len(head))
    for res in results:
        n = res["n"]
        for name in METHODS:
            m = res["methods"].get(name)
            if m is None:
                print(f"{n:>9,}  {name:<21} {'skipped':>10}")
                continue
            compile_s = m["compile_s_estimate"]
            iqr = (m["time_q75_s"] - m["time_q25_s"]) / m["time_median_s"]
            print(
                f"{n:>9,}  {name:<21} {m['first_call_s']:>9.4f}s "
                f"{'' if compile_s is None else f'{compile_s:.4f}s':>10} "
                f"{m['time_median_s'] * 1e3:>10.3f}ms {iqr:>10.1%} "
                f"{_fmt_rate(m['throughput_median']):>15} {_fmt_rate(m['throughput_best']):>15}"
            )
        r = res["ratios"]
        cd = r["jcausal_over_dowhy"]
        print(
            f"{'':>9}  ratios: jcausal/DoWhy = {'n/a' if cd is None else f'{cd:.1f}x'}, "
            f"hand/jcausal = {r['hand_over_jcausal']:.2f}, "
            f"hand/jcausal(in jit) = {r['hand_over_jcausal_in_jit']:.2f}, "
            f"jcausal(in jit)/jcausal = {r['jcausal_in_jit_over_jcausal']:.2f}"
        )
        for note in res["notes"]:
            print(f"{'':>9}  note: {note}")
    print()


def evaluate_targets(results: list[dict[str, Any]]) -> dict[str, Any]:
    at = next((r for r in results if r["n"] == TARGET_N), None)
    if at is None:
        return {"n": TARGET_N, "evaluated": False, "reason": f"N={TARGET_N} was not run"}
    speedup = at["ratios"]["jcausal_over_dowhy"]
    hand = at["ratios"]["hand_over_jcausal"]
    return {
        "n": TARGET_N,
        "evaluated": True,
        "jcausal_over_dowhy": {
            "value": speedup,
            "target": f">= {TARGET_SPEEDUP_VS_DOWHY}",
            "met": None if speedup is None else speedup >= TARGET_SPEEDUP_VS_DOWHY,
        },
        "hand_over_jcausal": {
            "value": hand,
            "target": f"<= {TARGET_HAND_OVER_JCAUSAL}",
            "met": hand <= TARGET_HAND_OVER_JCAUSAL,
        },
    }


def print_targets(targets: dict[str, Any]) -> None:
    if not targets["evaluated"]:
        print(f"targets: not evaluated ({targets['reason']})")
        return
    print(f"targets at N = {targets['n']:,}:")
    for key, label in (
        ("jcausal_over_dowhy", "jcausal / DoWhy throughput"),
        ("hand_over_jcausal", "hand-written / jcausal throughput"),
    ):
        t = targets[key]
        value = "n/a" if t["value"] is None else f"{t['value']:.2f}"
        verdict = {True: "MET", False: "MISSED", None: "n/a"}[t["met"]]
        print(f"  {label:<36} {value:>8}  (target {t['target']}): {verdict}")


# ----------------------------------------------------------------------------------------------
# command line


def _size(text: str) -> int:
    n = int(float(text))
    if n < 1 or n != float(text):
        raise argparse.ArgumentTypeError(f"not a positive whole number of units: {text!r}")
    return n


def _fmt_sizes(sizes) -> str:
    return ",".join(
        f"1e{round(math.log10(n))}" if 10 ** round(math.log10(n)) == n else str(n) for n in sizes
    )


def _sizes(text: str) -> list[int]:
    return [_size(s) for s in text.split(",") if s.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Throughput of counterfactuals do(X2 := X2 + 1) on a 5-node tanh chain (float64): "
            "jcausal vs. a hand-written jax.jit(jax.vmap(...)) vs. DoWhy gcm."
        ),
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=None,
        help="comma-separated numbers of observations, e.g. 1e3,1e5,1e6 "
        f"(default {_fmt_sizes(DEFAULT_SIZES)}; --quick: {_fmt_sizes(QUICK_SIZES)})",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed batches per method (default 15; --quick 3)"
    )
    parser.add_argument(
        "--min-batch-time",
        type=float,
        default=None,
        help="seconds each timed batch lasts at least (default 0.2; --quick 0.02)",
    )
    parser.add_argument(
        "--warmups", type=int, default=2, help="untimed calls before timing (default 2)"
    )
    parser.add_argument(
        "--dowhy-budget",
        type=float,
        default=120.0,
        help="seconds DoWhy may take at one size; beyond it DoWhy is skipped or repeated less "
        "(default 120)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the observations (default 0)")
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="JSON results file (default benchmarks/results/counterfactual_throughput.json; "
        "its directory is created)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and few repeats: a smoke test (< 30 s)"
    )
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = list(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 15
    if args.min_batch_time is None:
        args.min_batch_time = 0.02 if args.quick else 0.2
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    gcm.config.disable_progress_bars()
    info = machine_info("equinox", "distrax", "dowhy", "pandas", "scipy", "networkx")
    print(
        f"jax {info['versions']['jax']} ({info['jax_backend']}, x64={info['jax_enable_x64']}), "
        f"{info['cpu_count']} CPUs, dowhy {info['versions']['dowhy']}, "
        f"jcausal {info['versions']['jcausal']}"
    )
    print(f"sizes {args.sizes}, {args.repeats} repeats, batches >= {args.min_batch_time} s")

    scm = build_jcausal_scm()
    hand = build_hand_written()
    _block(jnp.zeros(1) + 1)  # initialise the JAX backend outside every timed first call

    load_start = load_average()
    if load_start is not None and load_start > 0.5:
        print(
            f"warning: 1-minute load average is {load_start:.2f} before starting; other "
            "processes may disturb the timings"
        )
    t_start = time.perf_counter()
    results = []
    dowhy_spu = None
    for n in sorted(args.sizes):
        res, dowhy_spu = run_size(
            n,
            scm=scm,
            hand=hand,
            repeats=args.repeats,
            min_batch_time=args.min_batch_time,
            warmups=args.warmups,
            dowhy_budget=args.dowhy_budget,
            dowhy_seconds_per_unit=dowhy_spu,
            seed=args.seed,
        )
        results.append(res)

    print_table(results)
    targets = evaluate_targets(results)
    print_targets(targets)

    report = {
        "benchmark": "counterfactual_throughput",
        "description": (
            "do(X2 := X2 + 1) counterfactuals on the chain X1 = N1, "
            "Xk = tanh(1.5 X_{k-1}) + 0.5 X_{k-1} + Nk (k = 2..5), float64; throughput in "
            "counterfactual units per second (median over timed batches)"
        ),
        "methods": {
            JCAUSAL: "jc.counterfactual(scm, obs, {'X2': jc.Shift(1.0)}) (public call)",
            JCAUSAL_IN_JIT: "the same public call inside a user's jax.jit (diagnostic only)",
            HAND: "jax.jit(jax.vmap(unit)) of the five equations written by hand",
            DOWHY: "gcm.counterfactual_samples on an InvertibleStructuralCausalModel with "
            "AdditiveNoiseModel(known f) (single-threaded NumPy + pandas)",
        },
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": info,
        "results": results,
        "targets": targets,
        "wall_time_s": time.perf_counter() - t_start,
        "load_average_1min": {"start": load_start, "end": load_average()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
