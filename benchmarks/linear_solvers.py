"""Which solver for a linear equilibrium ``x = A x + y``: jcausal's three against numpy and scipy.

Rows per size n (float64, the library's default tolerance rtol = 1e-10), dense Leontief-type and
block-regional matrices (spectral radius ~0.6) and a slow dense one (spectral radius 0.95):

- jcausal ``Anderson()``, ``Newton("lu")`` and ``Newton("gmres")`` through
  ``jcausal.fixed_point`` (jitted; compile time excluded, reported apart);
- peers in the same run: ``numpy.linalg.solve(I - A, y)``, ``scipy.sparse.linalg.gmres`` at the
  same tolerance, and a numpy fixed-point loop ``x <- A x + y``;
- the relative residual ``||x - A x - y|| / ||x||`` each reaches;
- at small n, one un-jitted ``fixed_point`` call (Python overhead included) against
  ``numpy.linalg.solve``.

Every timing is the median of ``--repeats`` runs, blocking on the result. Writes JSON.

    python benchmarks/linear_solvers.py                       # n = 50 ... 4000
    python benchmarks/linear_solvers.py --sizes 50 200 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)  # this script is a standalone process

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse.linalg as spla  # noqa: E402

from jcausal.solvers import Anderson, Newton, fixed_point  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _machine import machine_info  # noqa: E402

RTOL = 1e-10


def dense(n: int, rho: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Nonnegative skewed A (like an input-output table) scaled to spectral radius ``rho``."""
    rng = np.random.default_rng(seed)
    a = rng.random((n, n)) ** 4
    a *= rho / np.max(np.abs(np.linalg.eigvals(a))) if n <= 2000 else rho / a.sum(0).max()
    return a, rng.uniform(0.1, 1.0, n)


def block_regional(n: int, seed: int = 0, regions: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Dense blocks within each region, sparse trade between them; column sums <= 0.7."""
    rng = np.random.default_rng(seed)
    a = np.zeros((n, n))
    size = -(-n // regions)
    for r in range(regions):
        s = slice(r * size, min(n, (r + 1) * size))
        a[s, s] = rng.random(a[s, s].shape) ** 4
    trade = rng.random((n, n)) * (rng.random((n, n)) < 0.02)
    a += 0.1 * trade
    a *= rng.uniform(0.5, 0.7, n) / np.maximum(a.sum(0), 1e-12)
    return a, rng.uniform(0.1, 1.0, n)


def median_time(f, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def residual(a, y, x) -> float:
    x = np.asarray(x)
    return float(np.linalg.norm(x - a @ x - y) / np.linalg.norm(x))


def leontief_map(x, p):
    a, y = p
    return a @ x + y


def jax_row(name, solver, a, y, repeats):
    aj, yj = jnp.asarray(a), jnp.asarray(y)
    run = jax.jit(lambda a_, y_: fixed_point(leontief_map, jnp.zeros_like(y_), (a_, y_),
                                             solver=solver, throw=False))  # fmt: skip
    t0 = time.perf_counter()
    x, rep = jax.block_until_ready(run(aj, yj))
    compile_s = time.perf_counter() - t0
    seconds = median_time(lambda: jax.block_until_ready(run(aj, yj)), repeats)
    return {
        "solver": name,
        "seconds": seconds,
        "compile_seconds": compile_s,
        "residual": residual(a, y, x),
        "converged": bool(rep.converged),
        "steps": int(rep.num_steps),
    }


def numpy_rows(a, y, repeats):
    eye = np.eye(len(y))
    out = []
    x = np.linalg.solve(eye - a, y)
    t = median_time(lambda: np.linalg.solve(eye - a, y), repeats)
    out.append({"solver": "numpy LU", "seconds": t, "residual": residual(a, y, x)})

    m = eye - a

    def gmres():
        return spla.gmres(m, y, rtol=RTOL, atol=0.0, restart=20, maxiter=1000)[0]

    x = gmres()
    out.append({"solver": "scipy GMRES", "seconds": median_time(gmres, repeats),
                "residual": residual(a, y, x)})  # fmt: skip

    def loop():
        x = y.copy()
        for _ in range(100_000):
            new = a @ x + y
            if np.linalg.norm(new - x) <= RTOL * np.linalg.norm(new):
                return new
            x = new
        return x

    x = loop()
    out.append({"solver": "numpy fixed-point loop", "seconds": median_time(loop, repeats),
                "residual": residual(a, y, x)})  # fmt: skip
    return out


def case(kind: str, n: int, repeats: int) -> dict:
    a, y = {"dense": lambda: dense(n, 0.6), "dense rho=0.95": lambda: dense(n, 0.95),
            "block-regional": lambda: block_regional(n)}[kind]()  # fmt: skip
    rows = numpy_rows(a, y, repeats)
    solvers = {
        "jcausal Anderson": Anderson(),
        "jcausal Newton LU": Newton(linear_solver="lu"),
        "jcausal Newton GMRES": Newton(linear_solver="gmres"),
    }
    for name, solver in solvers.items():
        rows.append(jax_row(name, solver, a, y, repeats))
    peers = rows[:2]  # numpy LU and scipy GMRES
    best_peer = min(peers, key=lambda r: r["seconds"])
    ours = rows[3:]
    best = min(ours, key=lambda r: r["seconds"])
    return {
        "kind": kind,
        "n": n,
        "rows": rows,
        "fastest_jcausal": best["solver"],
        "speed_vs_best_peer": {r["solver"]: best_peer["seconds"] / r["seconds"] for r in ours},
        "residual_vs_best_peer": {
            r["solver"]: r["residual"] / max(min(p["residual"] for p in peers), 1e-300)
            for r in ours
        },
    }


def overhead(n: int, repeats: int) -> dict:
    """One un-jitted ``fixed_point`` call (default solver) vs ``numpy.linalg.solve``."""
    a, y = dense(n, 0.6)
    aj, yj = jnp.asarray(a), jnp.asarray(y)
    solver = Anderson()

    def call():
        return jax.block_until_ready(fixed_point(leontief_map, jnp.zeros_like(yj), (aj, yj),
                                                 solver=solver)[0])  # fmt: skip

    call()
    t = median_time(call, repeats)
    eye = np.eye(n)
    t_np = median_time(lambda: np.linalg.solve(eye - a, y), repeats)
    return {"n": n, "fixed_point_call_seconds": t, "numpy_solve_seconds": t_np,
            "ratio": t / t_np}  # fmt: skip


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[50, 200, 1000, 2000, 4000])
    p.add_argument("--kinds", nargs="+", default=["dense", "block-regional", "dense rho=0.95"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/linear_solvers.json")
    args = p.parse_args(argv)
    out = {
        "machine": machine_info("jax", "lineax", "numpy", "scipy"),
        "rtol": RTOL,
        "cases": [],
        "overhead": [],
    }
    for n in args.sizes:
        for kind in args.kinds:
            c = case(kind, n, args.repeats)
            out["cases"].append(c)
            speed = c["speed_vs_best_peer"][c["fastest_jcausal"]]
            print(f"n={n:5d} {kind:15s} fastest {c['fastest_jcausal']} {speed:.2f}x best peer",
                  "|", ", ".join(f"{r['solver']}: {r['seconds'] * 1e3:.2f} ms ({r['residual']:.1e})"
                                 for r in c["rows"]), flush=True)  # fmt: skip
        if n <= 200:
            o = overhead(n, args.repeats)
            out["overhead"].append(o)
            print(f"n={n}: fixed_point call {o['ratio']:.2f}x numpy.linalg.solve", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
