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

Every timing is the best of ``--repeats`` runs, blocking on the result. Writes JSON.

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
import scipy.linalg  # noqa: E402
import scipy.sparse.linalg as spla  # noqa: E402

import jcausal as jc  # noqa: E402
from jcausal.solvers import Anderson, Auto, Newton, fixed_point, linear_fixed_point  # noqa: E402

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


#: Medians of the last timings, by call (``median_time`` returns the minimum).
MEDIANS: list[float] = []


def median_time(f, repeats: int) -> float:
    """Best of ``repeats`` calls, in seconds (the median goes to ``MEDIANS``).

    On a shared, loaded machine the minimum is the cost of the call itself; the median is
    mostly how long the process waited for a core.
    """
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    MEDIANS.append(float(np.median(times)))
    return float(np.min(times))


def with_median(row: dict) -> dict:
    """``row`` with ``median_seconds``: the median of the timing that gave its ``seconds``."""
    return row | {"median_seconds": MEDIANS[-1]}


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
        "median_seconds": MEDIANS[-1],
        "compile_seconds": compile_s,
        "residual": residual(a, y, x),
        "converged": bool(rep.converged),
        "steps": int(rep.num_steps),
    }


def linear_row(name, solver, a, y, w, repeats, grad=True):
    """``linear_fixed_point`` (the matrix given explicitly): solve, and solve + gradient."""
    aj, yj, wj = jnp.asarray(a), jnp.asarray(y), jnp.asarray(w)
    run = jax.jit(lambda a_, y_: linear_fixed_point(a_, y_, solver=solver, throw=False))
    t0 = time.perf_counter()
    x, rep = jax.block_until_ready(run(aj, yj))
    compile_s = time.perf_counter() - t0
    row = {
        "solver": name,
        "seconds": median_time(lambda: jax.block_until_ready(run(aj, yj)), repeats),
        "median_seconds": MEDIANS[-1],
        "compile_seconds": compile_s,
        "residual": residual(a, y, x),
        "converged": bool(rep.converged),
        "steps": int(rep.num_steps),
    }
    if grad:
        vg = jax.jit(jax.grad(lambda a_, y_: wj @ linear_fixed_point(a_, y_, solver=solver)[0],
                              argnums=(0, 1)))  # fmt: skip
        jax.block_until_ready(vg(aj, yj))
        row["grad_seconds"] = median_time(lambda: jax.block_until_ready(vg(aj, yj)), repeats)
    return row


def lu_grad_seconds(a, y, w, repeats):
    """numpy/scipy: one LU, the solve and the adjoint solve, dL/dA = g x^T (the peer)."""
    eye = np.eye(len(y))

    def lu_grad():
        lu = scipy.linalg.lu_factor(eye - a, check_finite=False)
        x = scipy.linalg.lu_solve(lu, y, check_finite=False)
        g = scipy.linalg.lu_solve(lu, w, trans=1, check_finite=False)
        return np.outer(g, x), g

    return median_time(lu_grad, repeats)


def intervention_grad(a, y, w, repeats, lu_repeats) -> dict:
    """Solve + gradient with respect to an intervention ``u``: ``x = diag(exp u) (A x + y)``.

    What a design differentiates (``IOModel.solve(u)``; the ``dL/dA`` rows above ask for the
    n x n cotangent itself). Rows: ``IOModel.solve(u)`` from the table's observed output (its
    default start: the unintervened equilibrium) and from ``y`` (a cold start), and
    ``linear_fixed_point`` given the intervened matrix ``diag(exp u) A`` explicitly (which
    forms it, n^2 values, and differentiates through its n x n cotangent). The peer: numpy's
    LU of ``I - diag(exp u) A``, the solve, the adjoint solve ``g`` and ``dL/du = g * x``.
    The gradients' relative errors against the peer's go to the JSON.
    """
    from jcausal.economy import IOModel

    n = len(y)
    u = 0.05 * np.random.default_rng(2).standard_normal(n)
    aj, yj, wj, uj = (jnp.asarray(v) for v in (a, y, w, u))
    # The table's observed output: the unintervened equilibrium (solved to 1e-12 here).
    x_obs = np.asarray(linear_fixed_point(aj, yj)[0])
    model = IOModel(a, y, x_observed=x_obs)
    eye = np.eye(n)

    def peer():
        d = np.exp(u)
        lu = scipy.linalg.lu_factor(eye - d[:, None] * a, check_finite=False)
        x = scipy.linalg.lu_solve(lu, d * y, check_finite=False)
        g = scipy.linalg.lu_solve(lu, w, trans=1, check_finite=False)
        return g * x  # dL/du_i = g_i exp(u_i) (A x + y)_i = g_i x_i

    ref = peer()
    out = {"numpy_lu_seconds": median_time(peer, lu_repeats)}
    out["numpy_lu_median_seconds"] = MEDIANS[-1]
    calls = {
        "IOModel.solve(u)": lambda u_: wj @ model.solve(u_)[0],
        "IOModel.solve(u, x0=y)": lambda u_: wj @ model.solve(u_, x0=yj)[0],
        "linear_fixed_point(diag(exp u) A)": lambda u_: (
            wj @ linear_fixed_point(jnp.exp(u_)[:, None] * aj, jnp.exp(u_) * yj)[0]
        ),
    }
    for name, loss in calls.items():
        grad = jax.jit(jax.grad(loss))
        g = np.asarray(jax.block_until_ready(grad(uj)))
        t = median_time(lambda gr=grad: jax.block_until_ready(gr(uj)), repeats)
        out[name] = {
            "seconds": t,
            "median_seconds": MEDIANS[-1],
            "speed_vs_numpy_lu": out["numpy_lu_seconds"] / t,
            "grad_relative_error": float(np.linalg.norm(g - ref) / np.linalg.norm(ref)),
        }
    return out


def numpy_rows(a, y, repeats):
    eye = np.eye(len(y))
    out = []
    x = np.linalg.solve(eye - a, y)
    t = median_time(lambda: np.linalg.solve(eye - a, y), repeats)
    out.append(with_median({"solver": "numpy LU", "seconds": t, "residual": residual(a, y, x)}))

    m = eye - a

    def gmres():
        return spla.gmres(m, y, rtol=RTOL, atol=0.0, restart=20, maxiter=1000)[0]

    x = gmres()
    out.append(with_median({"solver": "scipy GMRES", "seconds": median_time(gmres, repeats),
                            "residual": residual(a, y, x)}))  # fmt: skip

    def loop():
        x = y.copy()
        for _ in range(100_000):
            new = a @ x + y
            if np.linalg.norm(new - x) <= RTOL * np.linalg.norm(new):
                return new
            x = new
        return x

    x = loop()
    out.append(with_median({"solver": "numpy fixed-point loop",
                            "seconds": median_time(loop, repeats),
                            "residual": residual(a, y, x)}))  # fmt: skip
    return out


def case(kind: str, n: int, repeats: int, fixed_point_rows: bool = True) -> dict:
    a, y = {"dense": lambda: dense(n, 0.6), "dense rho=0.95": lambda: dense(n, 0.95),
            "block-regional": lambda: block_regional(n)}[kind]()  # fmt: skip
    # Dense LU at n = 9800 takes a minute on this machine: time it once there.
    rows = numpy_rows(a, y, repeats if n <= 4000 else 1)
    w = np.random.default_rng(1).standard_normal(n)
    lu_grad = lu_grad_seconds(a, y, w, max(1, repeats if n <= 4000 else 1))
    grad_u = intervention_grad(a, y, w, repeats, max(1, repeats if n <= 4000 else 1))
    # The matrix given explicitly (linear_fixed_point): Auto (the default), LU, BiCGStab.
    rows.append(linear_row("jcausal Auto", Auto(), a, y, w, repeats))
    if n <= 4000:
        rows.append(linear_row("jcausal LU", Newton(linear_solver="lu"), a, y, w, repeats))
    rows.append(linear_row("jcausal BiCGStab", Newton(linear_solver="bicgstab"), a, y, w,
                           repeats, grad=False))  # fmt: skip
    rows.append(linear_row("jcausal GMRES", Newton(linear_solver="gmres"), a, y, w,
                           repeats, grad=False))  # fmt: skip
    # The map given as a function (fixed_point): Anderson and Newton-GMRES; Newton-LU forms
    # the Jacobian by n JVPs (small n only).
    solvers = {"jcausal Anderson (fixed_point)": Anderson()} if fixed_point_rows else {}
    if n <= 4000 and fixed_point_rows:
        solvers["jcausal Newton GMRES (fixed_point)"] = Newton(linear_solver="gmres")
    if n <= 1000 and fixed_point_rows:
        solvers["jcausal Newton LU (fixed_point)"] = Newton(linear_solver="lu")
    for name, solver in solvers.items():
        rows.append(jax_row(name, solver, a, y, repeats))
    # Floors of an iterative solve + gradient: one product with A in XLA, and forming the
    # gradient dL/dA = g x^T (n^2 values written to fresh memory, as numpy's np.outer does).
    aj, yj = jnp.asarray(a), jnp.asarray(y)
    product, outer = jax.jit(lambda a_, x_: a_ @ x_), jax.jit(jnp.outer)
    reps = max(repeats, 3)
    floors = {}
    for name, call in (("xla_product_seconds", lambda: product(aj, yj)),
                       ("xla_outer_seconds", lambda: outer(yj, yj)),
                       ("numpy_product_seconds", lambda: a @ y)):  # fmt: skip
        jax.block_until_ready(call())
        floors[name] = median_time(lambda c=call: jax.block_until_ready(c()), reps)
    peers = rows[:2]  # numpy LU and scipy GMRES
    best_peer = min(peers, key=lambda r: r["seconds"])
    ours = rows[3:]
    best = min(ours, key=lambda r: r["seconds"])
    auto = rows[3]
    peer_res = max(min(p["residual"] for p in peers), 1e-300)
    return {
        "kind": kind,
        "n": n,
        "load_average": os.getloadavg(),
        "rows": rows,
        "numpy_lu_grad_seconds": lu_grad,
        "intervention_grad": grad_u,
        "floors": floors,
        "fastest_jcausal": best["solver"],
        "speed_vs_best_peer": {r["solver"]: best_peer["seconds"] / r["seconds"] for r in ours},
        "residual_vs_best_peer": {r["solver"]: r["residual"] / peer_res for r in ours},
        "auto": {
            "speed_vs_best_peer": best_peer["seconds"] / auto["seconds"],
            # The same ratio of medians (each call's median over the repeats).
            "median_speed_vs_best_peer": min(p["median_seconds"] for p in peers)
            / auto["median_seconds"],
            "best_peer": best_peer["solver"],
            "residual_vs_best_peer": auto["residual"] / peer_res,
            # The fastest peer's residual (scipy's GMRES from n ~ 500 on).
            "residual_vs_fastest_peer": auto["residual"] / max(best_peer["residual"], 1e-300),
            "grad_speed_vs_lu_grad": lu_grad / auto["grad_seconds"],
        },
    }


def intermediate(a, pa):  # module level: one compilation
    return a @ pa["x"]


def overhead(n: int, repeats: int) -> dict:
    """Un-jitted calls, Python overhead included, vs ``numpy.linalg.solve(I - A, y)``.

    ``fixed_point`` (Anderson), ``linear_fixed_point`` (Auto: LU at this size),
    ``IOModel.solve`` and ``jc.solve`` on the README's one-node ``EquilibriumSCM``.
    """
    import distrax

    from jcausal.economy import IOModel

    a, y = dense(n, 0.6)
    aj, yj = jnp.asarray(a), jnp.asarray(y)
    model = IOModel(a, y)
    economy = jc.EquilibriumSCM(
        x=jc.Additive(intermediate, aj, distrax.Deterministic(jnp.ones(n)), ["x"]),
        solver=jc.Anderson(rtol=1e-10, max_steps=500),
    )
    # The same model with jc.Auto(): its map is affine (read from its jaxpr) and small, so
    # it is solved by the LU of its Jacobian.
    economy_auto = jc.EquilibriumSCM(
        x=jc.Additive(intermediate, aj, distrax.Deterministic(jnp.ones(n)), ["x"]),
        solver=jc.Auto(),
    )
    demand = {"x": yj[None]}
    calls = {
        "fixed_point (Anderson)": lambda: fixed_point(
            leontief_map, jnp.zeros_like(yj), (aj, yj), solver=Anderson()
        )[0],
        "linear_fixed_point (Auto)": lambda: linear_fixed_point(aj, yj)[0],
        "IOModel.solve (Auto)": lambda: model.solve()[0],
        "jc.solve (EquilibriumSCM, Anderson)": lambda: jc.solve(economy, demand)[0]["x"],
        "jc.solve (EquilibriumSCM, Auto)": lambda: jc.solve(economy_auto, demand)[0]["x"],
    }
    x_auto = np.asarray(calls["jc.solve (EquilibriumSCM, Auto)"]()[0])
    x_ref = np.linalg.solve(np.eye(n) - a, y)
    auto_error = float(np.max(np.abs(x_auto - x_ref)) / np.max(np.abs(x_ref)))
    # The floor of any call that returns a jax array and a report: XLA's LU program alone,
    # host LAPACK (the LU and solve a host path would run), the numpy -> jax conversion of the
    # result and building the report (an equinox module).
    bare = jax.jit(lambda a_, y_: jnp.linalg.solve(jnp.eye(n, dtype=a_.dtype) - a_, y_))

    def checked(a_, y_):  # the LU solve and the residual any report needs
        x = jnp.linalg.solve(jnp.eye(n, dtype=a_.dtype) - a_, y_)
        r = a_ @ x + y_ - x
        return x, jnp.sqrt(r @ r), jnp.sqrt(x @ x)

    def reported(a_, y_):  # ... returned with a FixedPointReport, as linear_fixed_point does
        x, r, xn = checked(a_, y_)
        ok = r <= RTOL * xn
        result = jc.RESULTS.where(ok, jc.RESULTS.successful, jc.RESULTS.max_steps_reached)
        rep = jc.FixedPointReport(num_steps=jnp.asarray(2, jnp.int32), relative_residual=r / xn,
                                  growth=xn, result=result, converged=ok)  # fmt: skip
        return x, rep

    checked_jit, reported_jit = jax.jit(checked), jax.jit(reported)
    noop = jax.jit(lambda a_, y_: y_)
    eye = np.eye(n)
    m = eye - a
    getrf, getrs = scipy.linalg.get_lapack_funcs(("getrf", "getrs"), (a,))

    def host():  # LAPACK on the host and the residual, numpy in and out (no jax array)
        lu, piv, _ = getrf(eye - a, overwrite_a=True)
        x, _ = getrs(lu, piv, y)
        r = a @ x + y - x
        return x, np.sqrt(r @ r), np.sqrt(x @ x)

    one, three, yes = jnp.asarray(1.0), jnp.asarray(3, jnp.int32), jnp.asarray(True)
    calls |= {
        "floor: jit dispatch of a no-op": lambda: noop(aj, yj),
        "floor: jit(jnp.linalg.solve(I - A, y)) (XLA's LU)": lambda: bare(aj, yj),
        "floor: XLA's LU + residual norms": lambda: checked_jit(aj, yj),
        "floor: XLA's LU + residual + FixedPointReport": lambda: reported_jit(aj, yj),
        "floor: host getrf + getrs + residual (numpy out)": host,
        "floor: scipy getrf + getrs": lambda: scipy.linalg.lu_solve(
            scipy.linalg.lu_factor(m, check_finite=False), y, check_finite=False
        ),
        "floor: jnp.asarray(numpy result)": lambda: jnp.asarray(y),
        "floor: FixedPointReport(...)": lambda: jc.FixedPointReport(
            num_steps=three,
            relative_residual=one,
            growth=one,
            result=jc.RESULTS.successful,
            converged=yes,
        ),
    }
    calls = {"numpy.linalg.solve": lambda: np.linalg.solve(eye - a, y), **calls}
    for call in calls.values():
        jax.block_until_ready(call())
    # Round-robin, best of blocks of 20 calls: a microsecond timing drifts with the machine.
    best = dict.fromkeys(calls, np.inf)
    for _ in range(max(repeats, 50) // 5):
        for name, call in calls.items():
            t = median_time(lambda c=call: jax.block_until_ready(c()), 20)
            best[name] = min(best[name], t)
    out = {"n": n, "numpy_solve_seconds": best.pop("numpy.linalg.solve"),
           "jc.solve (Auto) max relative error vs numpy": auto_error}  # fmt: skip
    for name, t in best.items():
        out[name] = {"seconds": t, "ratio_to_numpy": t / out["numpy_solve_seconds"]}
    return out


def intervened(x, p):
    a, u, y = p
    # diag(exp u) (A x + y) without forming diag(exp u) A: under vmap A stays shared and the
    # 64 matrix-vector products become one matrix-matrix product.
    return jnp.exp(u) * (a @ x + y)


def batch(n: int, repeats: int, size: int = 64) -> dict:
    """64 row-scaling interventions ``x = diag(exp u) (A x + y)``: vmap vs a loop vs 64 LUs.

    The vmapped ``fixed_point`` (Anderson; the matrix stays shared, see ``intervened``) from
    zero and warm-started from the unintervened equilibrium, against the warm-started loop of
    single jitted calls and 64 ``numpy.linalg.solve``. (``linear_fixed_point`` on a batch of
    intervened matrices would materialise 64 of them: the map form is the one for batches.)
    """
    a, y = dense(n, 0.6)
    u = 0.05 * np.random.default_rng(2).standard_normal((size, n))
    aj, yj, uj = jnp.asarray(a), jnp.asarray(y), jnp.asarray(u)
    x_star = jnp.asarray(np.linalg.solve(np.eye(n) - a, y))

    def one(u_, x0):
        return fixed_point(intervened, x0, (aj, u_, yj), solver=Anderson(), throw=False)

    single = jax.jit(one)
    batched = jax.jit(jax.vmap(one, in_axes=(0, None)))
    zeros = jnp.zeros(n)
    _, rep = jax.block_until_ready(batched(uj, zeros))
    xw, repw = jax.block_until_ready(batched(uj, x_star))
    jax.block_until_ready(single(uj[0], x_star))
    eye = np.eye(n)

    def lu():
        return [np.linalg.solve(eye - np.exp(u[i])[:, None] * a, np.exp(u[i]) * y)
                for i in range(size)]  # fmt: skip

    ref = lu()
    err = max(float(np.linalg.norm(xw[i] - ref[i]) / np.linalg.norm(ref[i])) for i in range(size))
    reps = max(repeats, 10)  # best of: a loaded machine's pauses are not the cost
    t_cold = median_time(lambda: jax.block_until_ready(batched(uj, zeros)), reps)
    t_warm = median_time(lambda: jax.block_until_ready(batched(uj, x_star)), reps)
    t_loop = median_time(
        lambda: jax.block_until_ready([single(uj[i], x_star) for i in range(size)]), reps
    )
    t_lu = median_time(lu, 2)
    return {
        "n": n,
        "batch": size,
        "load_average": os.getloadavg(),
        "vmap_cold_seconds": t_cold,
        "vmap_warm_seconds": t_warm,
        "loop_warm_seconds": t_loop,
        "numpy_lu_seconds": t_lu,
        "steps_cold_max": int(np.max(rep.num_steps)),
        "steps_warm_max": int(np.max(repw.num_steps)),
        "all_converged": bool(np.all(rep.converged) and np.all(repw.converged)),
        "max_error_vs_lu": err,
        "warm_vs_loop": t_loop / t_warm,
        "warm_vs_numpy_lu": t_lu / t_warm,
        "cold_vs_numpy_lu": t_lu / t_cold,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[50, 200, 1000, 2000, 4000])
    p.add_argument("--kinds", nargs="+", default=["dense", "block-regional", "dense rho=0.95"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch-sizes", type=int, nargs="*", default=[1000])
    p.add_argument(
        "--skip-fixed-point",
        action="store_true",
        help="only the linear_fixed_point rows and the peers (not fixed_point's)",
    )
    p.add_argument("--out", default="benchmarks/results/linear_solvers.json")
    args = p.parse_args(argv)
    out = {
        "machine": machine_info("jax", "lineax", "numpy", "scipy"),
        # numpy's and scipy's BLAS threads (unset: one per core, as XLA's)
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "load_average_start": os.getloadavg(),
        "rtol": RTOL,
        "cases": [],
        "overhead": [],
        "batches": [],
    }
    for n in args.sizes:
        for kind in args.kinds:
            c = case(kind, n, args.repeats, not args.skip_fixed_point)
            out["cases"].append(c)
            speed = c["speed_vs_best_peer"][c["fastest_jcausal"]]
            print(f"n={n:5d} {kind:15s} fastest {c['fastest_jcausal']} {speed:.2f}x best peer",
                  "|", ", ".join(f"{r['solver']}: {r['seconds'] * 1e3:.2f} ms ({r['residual']:.1e})"
                                 for r in c["rows"]), flush=True)  # fmt: skip
            a = c["auto"]
            print(f"    Auto: {a['speed_vs_best_peer']:.2f}x best peer's speed (medians "
                  f"{a['median_speed_vs_best_peer']:.2f}x), residual "
                  f"{a['residual_vs_fastest_peer']:.2g}x its ({a['residual_vs_best_peer']:.2g}x"
                  f" the smallest), solve+grad "
                  f"{a['grad_speed_vs_lu_grad']:.1f}x LU+grad", flush=True)  # fmt: skip
            gu = c["intervention_grad"]
            print("    dL/du: " + ", ".join(
                f"{k} {v['speed_vs_numpy_lu']:.1f}x LU ({v['seconds'] * 1e3:.1f} ms, err "
                f"{v['grad_relative_error']:.1e})" for k, v in gu.items() if isinstance(v, dict))
                + f"; numpy LU {gu['numpy_lu_seconds'] * 1e3:.1f} ms", flush=True)  # fmt: skip
        if n <= 200:
            o = overhead(n, args.repeats)
            out["overhead"].append(o)
            print(f"n={n}: calls vs numpy.linalg.solve: " + ", ".join(
                f"{k} {v['ratio_to_numpy']:.2f}x" for k, v in o.items() if isinstance(v, dict)),
                flush=True)  # fmt: skip
    for n in args.batch_sizes:
        b = batch(n, args.repeats)
        out["batches"].append(b)
        print(f"batch n={n}: 64 interventions, vmap warm {b['vmap_warm_seconds'] * 1e3:.1f} ms "
              f"(cold {b['vmap_cold_seconds'] * 1e3:.1f}), loop {b['loop_warm_seconds'] * 1e3:.1f}"
              f" ms, 64 LU {b['numpy_lu_seconds'] * 1e3:.0f} ms: {b['warm_vs_loop']:.1f}x loop, "
              f"{b['warm_vs_numpy_lu']:.0f}x LU; steps {b['steps_warm_max']} warm / "
              f"{b['steps_cold_max']} cold, err {b['max_error_vs_lu']:.1e}",
              flush=True)  # fmt: skip
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
