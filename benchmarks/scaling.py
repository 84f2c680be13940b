"""Scaling over devices, and the full-size multi-regional design against numpy's LU.

Part 1, **device scaling** (strong scaling: the same work on 1, 2, 4, 8 devices). Each device
count runs in its own process (on CPU, ``--xla_force_host_platform_device_count=k`` fakes ``k``
devices on the machine's cores); the workloads are

(a) counterfactuals of the ``health`` example (``--units``, default 10^7) with units sharded
    (``jcausal.parallel.shard_units``);
(b) Adam steps (solve + implicit gradient, through ``fit``) of a 64-λ sweep on a
    2,000-sector synthetic MRIO (10 regions × 200), λ split over the devices with the table
    replicated (``sweep``), or the table's rows split over the devices (``rows``;
    ``jcausal.parallel.sweep_mesh(k, rows=k)``), or as the library places it by default for
    a device count (``auto``: ``mrio.sweep(..., mesh=k)``, see
    ``jcausal.economy.sharding.auto_layout``). ``--mrio 10x200,5x200,2x200`` runs (b) on
    several table sizes (the λ-split / rows-split crossover);
(b') 50 products ``A @ X`` with the sweep's λ columns split over the devices, each device
    multiplying the whole ``A`` by its own columns (what the fixed points of (b) do every
    iteration), under ``shard_map``: no collective; it isolates the cost of every device
    streaming its own copy of ``A`` (``--only matmul``);
(b'') the same products with ``A``'s rows split over the devices, as the rows-split sweep
    runs them (``--only rowmatmul``): 50 × ``x <- A_rows @ all_gather(x)`` (the fixed point's
    product) and 50 × ``g <- psum_scatter(g_rows @ A_rows)`` (the adjoint's ``A^T g``), and
    the adjoint's product with a full ``psum`` (all-reduce) and a slice instead, under
    ``shard_map``: the floor of the rows split's products and collectives;
(c) a data-parallel training step (``fit(..., sharding=mesh)``) of the Morpho-MNIST Deep SCM
    (``jcausal.deepscm.morpho``, the ``full`` graph, the experiment's defaults: width 16, FiLM
    conditioning, 4 ELBO particles) at a batch of ``--train-batch`` (default 128: 16 per
    device on 8; ``--train-batch 64``, the experiment's batch, leaves each device 8 units,
    see below) on made-up 28×28 images. On
    one device the step is also timed at the batch each of 8 devices gets (batch / 8): 8 × that
    step / the whole step is the floor of the 8-device overhead when every device does that
    whole step, optimiser update included (``floor_cpu`` of ``train_replicated_step``).
    ``fit`` splits the optimiser state and update over the devices by default
    (``shard_optimizer``, ZeRO-1); ``train_replicated`` is the same step with every device
    updating every parameter (``shard_optimizer=False``; on one device the two are one
    program).

**Weak scaling** (``--weak``): each device keeps the same share of the work, so ``k`` devices
do ``k`` times the work of one: (a) ``--units / 8`` units per device (10^7 on 8 devices),
(b) 8 λ per device on the same table (64 on 8), (c) a batch of ``--weak-batch`` (default 64,
the experiment's batch) per device (512 on 8). On fake CPU devices the figure is CPU time on
``k`` devices over ``k`` times the CPU time on 1 (1.0: no overhead; target <= 1.3); on GPUs /
TPUs the efficiency ``t_1 / t_k``. Strong scaling of (c) at batch 64 leaves each of 8 devices
a batch of 8, whose step costs more per unit than a batch of 64 on any hardware (on this CPU
8 such steps cost 1.1-1.4x one batch-64 step with no sharding at all, the ``floor_cpu``), so
the default strong batch is 128 (16 per device, floor ~0.9); weak scaling is the
data-parallel cost itself, at the batch a user gives each accelerator.

Each figure is the best of ``--repeats`` whole calls (a 4-step sweep) divided by their steps,
after a first call that compiles; a training step of (c) is the marginal cost of a step,
``(t_40 - t_10) / 30`` from the best 10-step and 40-step calls of ``fit`` (``train_*_step``),
with what a call pays once (placing the parameters and optimiser state on the devices:
``*_setup``) and the 10-step call / 10 (``*_call10``) next to it; CPU time (user + sys of the worker
process) is recorded next to the wall time.

On fake CPU devices sharing the same cores nothing can get faster: the figure to hold is the
**overhead**, CPU time on the most devices / on 1 (target <= 1.3), reported per workload under
``"overhead"`` with whether it meets the target. On GPUs / TPUs the same script reports the
efficiency ``t_1 / (k t_k)``.

Part 2, **the full 9,800-sector MRIO** (``--big``: 49 regions × 200 products, Exiobase's size,
:func:`jcausal.economy.synthetic_mrio`): one step of a 24-λ design of one region, i.e. 24
equilibrium solves on the whole table and their implicit gradients, against the same with
numpy/scipy: per λ an LU of ``I - diag(α) A`` (9,800², a new matrix for every λ), a solve and
the adjoint solve. The numpy side is measured on ``--lu`` λ and scaled to 24 (each λ is the
same work). Each side runs in its own process so that its peak memory (``ru_maxrss``) is its
own. Run it once, with ``nice``: it takes minutes and several GB.

    python benchmarks/scaling.py --quick          # tiny sizes, seconds (the test runs this)
    nice -n 10 python benchmarks/scaling.py       # part 1 at 1, 2, 4, 8 devices
    nice -n 10 python benchmarks/scaling.py --weak  # part 1, weak scaling
    nice -n 10 python benchmarks/scaling.py --big # part 2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results" / "scaling.json"


def _best(f, repeats: int, cpu: dict | None = None, key: str = "") -> float:
    """Best wall time of ``repeats`` calls; ``cpu[key]`` gets that call's CPU time.

    CPU time is user + sys of all threads: on fake devices sharing the cores it is the work
    done, less sensitive to other processes' load than the wall time.
    """
    best, best_cpu = float("inf"), float("nan")
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        f()
        wall = time.perf_counter() - t
        if wall < best:
            best, best_cpu = wall, time.process_time() - c
    if cpu is not None:
        cpu[key] = best_cpu
    return best


WORKLOADS = ("counterfactual", "sweep", "rows", "auto", "matmul", "rowmatmul", "train")
#: The overhead to hold on fake CPU devices (time on 8 / time on 1), and part 2's speed-up.
OVERHEAD_TARGET = 1.3
SPEEDUP_TARGET = 20.0


def worker(devices: int, units: int, sizes: list[tuple[int, int]], lambdas: int, batch: int,
           repeats: int, only: tuple[str, ...] = WORKLOADS,
           strong: bool = True) -> dict:  # fmt: skip
    """Part 1 on ``devices`` devices (this process was started with that many).

    Keys of the sweeps on the first table size are ``sweep_step_s`` ...; on the others
    ``sweep_n<sectors>_step_s`` ....
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    import jcausal as jc
    from jcausal import examples, parallel
    from jcausal.economy import mrio, synthetic_mrio
    from jcausal.train import fit

    assert len(jax.devices()) == devices, jax.devices()
    out: dict = {"devices": devices}
    cpu: dict = {}
    # (a) counterfactuals
    if "counterfactual" in only:
        scm = examples.health()
        obs = jc.sample(jax.random.key(0), scm, units)
        obs = parallel.shard_units(obs, parallel.unit_mesh(devices))
        iv = {"age": jc.Shift(-10.0)}

        def cf():
            jax.block_until_ready(jc.counterfactual(scm, obs, iv, jax.random.key(1)))

        cf()
        out["counterfactual_s"] = _best(cf, repeats, cpu, "counterfactual_cpu_s")
    # (b) Adam steps of a λ sweep on an MRIO: λ split, the table replicated ("sweep"), the
    # table's rows split over every device ("rows": each device streams 1/k of A), or the
    # library's default placement for a device count ("auto")
    from jcausal.economy import sharding

    lams = np.geomspace(0.01, 100, lambdas)
    for i, sectors in enumerate(sizes):
        m = synthetic_mrio(*sectors, seed=0)
        p = mrio.MRIOProblem(m, m.regions[0], "GHG", "Employment")
        tag = "" if i == 0 else f"_n{m.n}"
        for name, mesh in (("sweep", parallel.sweep_mesh(devices)),
                           ("rows", parallel.sweep_mesh(devices, rows=devices)),
                           ("auto", devices)):  # fmt: skip
            if name not in only:
                continue
            if name == "auto":
                out[f"auto{tag}_layout"] = sharding.auto_mesh(m.n, lambdas, devices)[1]
            key = f"{name}{tag}_step"
            mrio.sweep(p, lams, steps=4, lr=0.05, mesh=mesh)  # compiles (fit caches it)
            t = _best(lambda mesh=mesh, p=p: mrio.sweep(p, lams, steps=4, lr=0.05, mesh=mesh),
                      repeats, cpu, f"{key}_cpu_s")  # fmt: skip
            out[f"{key}_s"] = t / 4  # whole calls (with their final evaluation) / steps
            cpu[f"{key}_cpu_s"] /= 4
        if i == 0:
            first = m  # (the table of (b'))
    m = first
    # (b') what the λ split costs in itself: 50 products A @ X of the table with the sweep's
    # λ columns, each device multiplying the whole A by its own columns (as the sweep's
    # fixed points do every iteration), no collective
    if "matmul" in only:
        from jax.sharding import PartitionSpec as P

        mesh = parallel.sweep_mesh(devices)
        a = parallel.replicate(m.A, mesh)
        x = parallel.shard_sweep(jnp.ones((lambdas, m.A.shape[0])), mesh)

        @jax.jit
        def products(a, x):
            def local(a, x):
                return jax.lax.fori_loop(0, 50, lambda i, v: (v @ a.T) * 0.5 + 0.5, x)

            return jax.shard_map(local, mesh=mesh, in_specs=(P(), P("sweep")),
                                 out_specs=P("sweep"))(a, x)  # fmt: skip

        jax.block_until_ready(products(a, x))
        t = _best(lambda: jax.block_until_ready(products(a, x)), repeats, cpu, "matmul_cpu_s")
        out["matmul_s"] = t / 50
        cpu["matmul_cpu_s"] /= 50
    # (b'') the rows split's products: A's rows split, the iterate gathered every product
    # (forward) or the partial products reduced and scattered (adjoint, A^T g = g @ A)
    if "rowmatmul" in only:
        from jax.sharding import PartitionSpec as P

        rmesh = parallel.sweep_mesh(devices, rows=devices)
        a = parallel.split_rows(m.A, rmesh)
        n = m.A.shape[0]
        x = jax.device_put(
            jnp.ones((lambdas, n)), jax.sharding.NamedSharding(rmesh, P(None, "rows"))
        )

        def rows_program(kind):
            def local(a, x):
                def forward(i, v):
                    full = jax.lax.all_gather(v, "rows", axis=1, tiled=True)
                    return (full @ a.T) * 0.5 + 0.5

                def adjoint(i, g):
                    if kind == "scatter":
                        part = jax.lax.psum_scatter(g @ a, "rows", scatter_dimension=1,
                                                    tiled=True)  # fmt: skip
                    else:  # all-reduce, then this device's columns
                        k = jax.lax.axis_index("rows")
                        part = jax.lax.dynamic_slice_in_dim(
                            jax.lax.psum(g @ a, "rows"), k * g.shape[1], g.shape[1], 1
                        )
                    return part * 0.5 + 0.5

                return jax.lax.fori_loop(0, 50, forward if kind == "forward" else adjoint, x)

            return jax.jit(jax.shard_map(local, mesh=rmesh, in_specs=(P("rows", None),
                                         P(None, "rows")), out_specs=P(None, "rows")))  # fmt: skip

        for kind in ("forward", "scatter", "allreduce"):
            prog = rows_program(kind)
            jax.block_until_ready(prog(a, x))
            key = f"rowmatmul_{kind}"
            t = _best(lambda prog=prog: jax.block_until_ready(prog(a, x)), repeats, cpu,
                      f"{key}_cpu_s")  # fmt: skip
            out[f"{key}_s"] = t / 50
            cpu[f"{key}_cpu_s"] /= 50
    # (c) a data-parallel training step of the Deep SCM (the deepscm experiment's settings)
    if "train" in only:
        from jcausal.deepscm import morpho
        from jcausal.experiments.deepscm import Config

        cfg = Config()
        rng = np.random.default_rng(0)
        n = batch * 4
        # (dtypes as the experiment's data: float32 attributes, uint8 images)
        data = {"t": rng.lognormal(1.0, 0.3, n).astype(np.float32),
                "i": rng.uniform(60.0, 250.0, n).astype(np.float32),
                "x": rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)}  # fmt: skip
        scm = morpho.model("full", jax.random.key(0), data, latent=cfg.latent,
                           width=cfg.width, condition=cfg.condition,
                           encoder_condition=cfg.encoder_condition)  # fmt: skip
        kw = dict(optimizer=morpho.optimizer(cfg.flow_lr, cfg.net_lr), batch_size=batch,
                  key=jax.random.key(1), progress=False,
                  sharding=parallel.unit_mesh(devices), log_every=10)  # fmt: skip
        loss = morpho.loss_fn(cfg.particles)

        def timed(key: str, **over) -> None:
            # A training step is the marginal cost of one more step: calls of 10 and of 40
            # steps, (t_40 - t_10) / 30. What every call of `fit` pays once (placing the
            # parameters and the optimiser state on the devices, the first batch's
            # permutation, reading the losses back) is reported apart (`_setup`), and the
            # older figure, 10-step calls / 10, as `_call10`.
            args = dict(kw, **over)
            best, c = {}, {}
            for steps in (10, 40):

                def call(steps=steps):
                    fit(loss, scm, data, steps=steps, **args)

                call()  # compiles; later calls reuse the program
                best[steps] = _best(call, repeats, c, str(steps))
            out[f"{key}_s"] = (best[40] - best[10]) / 30
            cpu[f"{key}_cpu_s"] = (c["40"] - c["10"]) / 30
            out[f"{key}_call10_s"] = best[10] / 10
            cpu[f"{key}_call10_cpu_s"] = c["10"] / 10
            out[f"{key}_setup_s"] = best[10] - 10 * out[f"{key}_s"]
            cpu[f"{key}_setup_cpu_s"] = c["10"] - 10 * cpu[f"{key}_cpu_s"]

        timed("train_step")
        if strong:  # (weak scaling: the default step only; the rest costs minutes at 8 x 64)
            timed("train_replicated_step", shard_optimizer=False)
        if strong and devices == 1 and batch % 8 == 0:
            # the step each of 8 devices does (batch / 8), here on one device: the floor
            timed(f"train_b{batch // 8}_step", batch_size=batch // 8)
    return out | cpu


def big_jax(regions: int, sectors: int, lambdas: int, repeats: int) -> dict:
    """Part 2, jcausal: one step (24 solves + implicit gradients) on the whole table."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import equinox as eqx
    import jax.numpy as jnp
    import numpy as np

    from jcausal.economy import mrio, synthetic_mrio

    t = time.perf_counter()
    m = synthetic_mrio(regions, sectors, seed=0)
    build = time.perf_counter() - t
    p = mrio.MRIOProblem(m, m.regions[0], "GHG", "Employment")
    lams = jnp.asarray(np.geomspace(0.01, 100, lambdas))

    @eqx.filter_jit
    def step(problem, u):
        def total(u):
            loss, (_, _, ok) = jax.vmap(problem.loss)(u, lams)
            return jnp.sum(loss), ok

        return jax.value_and_grad(total, has_aux=True)(u)

    u = jnp.asarray(np.random.default_rng(0).normal(0, 0.3, (lambdas, sectors)))
    t = time.perf_counter()
    (val, ok), g = jax.block_until_ready(step(p, u))
    first = time.perf_counter() - t
    cpu: dict = {}
    warm = _best(lambda: jax.block_until_ready(step(p, u)), repeats, cpu, "step_cpu_s")
    # the first λ's solution, for the check against numpy
    x0, _ = eqx.filter_jit(lambda prob, v: prob.solve_all(v))(p, u[0])
    return {
        "build_table_s": build,
        "step_first_call_s": first,
        "step_s": warm,
        "step_cpu_s": cpu["step_cpu_s"],
        "converged": bool(np.all(np.asarray(ok))),
        "loss": float(val),
        "grad_norm": float(jnp.linalg.norm(g)),
        "x_first": np.asarray(x0).tolist(),
        "grad_first": np.asarray(g[0]).tolist(),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def big_numpy(regions: int, sectors: int, lambdas: int, measured: int) -> dict:
    """Part 2, numpy/scipy: LU of ``I - diag(α) A`` per λ, solve and adjoint solve."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np
    from scipy import linalg

    from jcausal.economy import synthetic_mrio

    m = synthetic_mrio(regions, sectors, seed=0)
    idx = np.flatnonzero(np.asarray(m.regions) == m.regions[0])
    A, y = np.asarray(m.A), np.asarray(m.y)
    c, r = np.asarray(m.S)[0], np.asarray(m.S)[1]
    x_ref = np.asarray(m.x_observed)
    G, E = c[idx] @ x_ref[idx], r[idx] @ x_ref[idx]
    lams = np.geomspace(0.01, 100, lambdas)
    u = np.random.default_rng(0).normal(0, 0.3, (lambdas, sectors))
    del m
    n = A.shape[0]
    times, cpus, first = [], [], None
    for k in range(measured):
        t, t_cpu = time.perf_counter(), time.process_time()
        alpha = np.ones(n)
        alpha[idx] = np.exp(u[k])
        M = np.eye(n) - alpha[:, None] * A
        lu = linalg.lu_factor(M, overwrite_a=True, check_finite=False)
        x = linalg.lu_solve(lu, alpha * y, check_finite=False)
        # d loss / d x on the region, then the adjoint solve and the chain rule to u
        dldx = np.zeros(n)
        dldx[idx] = c[idx] / G + lams[k] * r[idx] * np.sign(x[idx] - x_ref[idx]) / E
        w = linalg.lu_solve(lu, dldx, trans=1, check_finite=False)
        grad = (w * (A @ x + y))[idx] * alpha[idx]
        times.append(time.perf_counter() - t)
        cpus.append(time.process_time() - t_cpu)
        if k == 0:
            first = (x, grad)
        del lu
    return {
        "lu_solve_grad_s_per_lambda": float(np.median(times)),
        "measured_lambdas": measured,
        "step_s_24": float(np.median(times)) * lambdas,
        "step_cpu_s_24": float(np.median(cpus)) * lambdas,
        "x_first": first[0].tolist(),
        "grad_first": first[1].tolist(),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def _child(args: list[str], devices: int | None = None, timeout: float = 7200,
           xla_flags: str = "") -> dict:  # fmt: skip
    env = dict(os.environ)
    if devices is not None:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} {xla_flags}"
    res = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True,
                         text=True, timeout=timeout)  # fmt: skip
    if res.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; write ``--out`` (JSON) and return the report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    ap.add_argument("--big", action="store_true", help="part 2: the 9,800-sector MRIO")
    ap.add_argument("--devices", default="1,2,4,8", help="device counts of part 1")
    ap.add_argument("--units", type=float, default=1e7, help="counterfactual units (a)")
    ap.add_argument("--mrio", default="10x200", help="table sizes RxS of (b), comma-separated")
    ap.add_argument(
        "--train-batch",
        type=int,
        default=128,
        help="Deep SCM batch of (c), split over the devices (64 is the experiment's batch)",
    )
    ap.add_argument(
        "--weak",
        action="store_true",
        help="weak scaling: per device --units/8 units, 8 λ and a batch of --weak-batch",
    )
    ap.add_argument("--weak-batch", type=int, default=64, help="Deep SCM batch per device (--weak)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--lu", type=int, default=2, help="λ measured on the numpy side (part 2)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument(
        "--only",
        default=",".join(WORKLOADS),
        help=f"workloads of part 1, comma-separated (of {', '.join(WORKLOADS)})",
    )
    ap.add_argument(
        "--xla-flags",
        default="",
        help="more XLA_FLAGS for the part-1 workers, e.g. --xla_cpu_multi_thread_eigen=false",
    )
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        devs = [int(d) for d in args.devices.split(",")]
    except ValueError:
        devs = []
    if not devs or min(devs) < 1:
        ap.error(f"--devices must be positive whole numbers, comma-separated, got {args.devices!r}")
    for name in ("units", "train_batch", "weak_batch", "repeats", "lu"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    bad = [d for d in devs if args.train_batch % d]
    if bad and not (args.quick or args.weak) and "train" in args.only.split(","):
        ap.error(
            f"--train-batch {args.train_batch} does not split evenly over {bad[0]} devices; "
            "give a multiple of every --devices count (e.g. 128 for 1,2,4,8)"
        )
    if args.worker is not None:
        kind, *rest = args.worker.split(":")
        vals = [int(v) for v in rest]
        if kind == "devices":
            only = tuple(args.only.split(","))
            sizes = [tuple(int(v) for v in rs.split("x")) for rs in args.mrio.split(",")]
            out = worker(
                vals[0], vals[1], sizes, vals[2], vals[3], vals[4], only, *map(bool, vals[5:])
            )
        elif kind == "jax":
            out = big_jax(*vals)
        else:
            out = big_numpy(*vals)
        print(json.dumps(out))
        return out

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _machine import load_average, machine_info

    report: dict = {"machine": machine_info("scipy"), "load_before": load_average()}
    if args.big:
        R, S, L = (4, 25, 24) if args.quick else (49, 200, 24)
        jx = _child(["--worker", f"jax:{R}:{S}:{L}:{args.repeats}"])
        npy = _child(["--worker", f"numpy:{R}:{S}:{L}:{args.lu}"])
        import numpy as np

        xj, xn = np.asarray(jx.pop("x_first")), np.asarray(npy.pop("x_first"))
        gj, gn = np.asarray(jx.pop("grad_first")), np.asarray(npy.pop("grad_first"))
        report["big"] = {
            "sectors": R * S,
            "lambdas": L,
            "jax": jx,
            "numpy": npy,
            "speedup": npy["step_s_24"] / jx["step_s"],
            "speedup_cpu": npy["step_cpu_s_24"] / jx["step_cpu_s"],
            "speedup_target": SPEEDUP_TARGET,
            "speedup_met": npy["step_cpu_s_24"] / jx["step_cpu_s"] >= SPEEDUP_TARGET,
            "x_rel_diff": float(np.max(np.abs(xj - xn)) / np.max(np.abs(xn))),
            "grad_rel_diff": float(np.max(np.abs(gj - gn)) / np.max(np.abs(gn))),
        }
    else:
        units = 4096 if args.quick else int(args.units)
        sizes = "2x8" if args.quick else args.mrio
        L = 8 if args.quick else 64
        batch = 16 if args.quick else args.train_batch
        worker_args = ["--only", args.only, "--mrio", sizes]
        if args.weak:  # the work per device: a 1/8 share of the strong workload, (c) its batch
            units, L = max(units // 8, 1), max(L // 8, 1)
            batch = 4 if args.quick else args.weak_batch
        rows = []
        for k in devs:
            w = k if args.weak else 1  # how many times the one-device work this run does
            spec = (
                f"devices:{k}:{units * w}:{L * w}:{batch * w}:{args.repeats}:{int(not args.weak)}"
            )
            row = _child(["--worker", spec, *worker_args], k, xla_flags=args.xla_flags)
            rows.append(dict(row, work=w))
        base = rows[0]
        for row in rows:
            # strong: t_k / t_1; weak: t_k / (k t_1), the time of k times the work
            ratio = row["work"] / base["work"]
            for key in [k for k in base if k.endswith("_s") and k in row]:
                row[key[:-2] + "_vs_1"] = row[key] / (ratio * base[key])
        last = rows[-1]
        overhead = {
            key[: -len("_cpu_vs_1")]: {
                "devices": last["devices"],
                "cpu": last[key],
                "wall": last[key.replace("_cpu_vs_1", "_vs_1")],
                "target": OVERHEAD_TARGET,
                "met": last[key] <= OVERHEAD_TARGET,
            }
            for key in last
            if key.endswith("_cpu_vs_1")
            and len(rows) > 1
            and not key.startswith("matmul")
            and not key.startswith("rowmatmul")
            and "_setup" not in key  # once per call of fit, not per step: no target
        }
        floor = [k for k in base if re.fullmatch(r"train_b\d+_step_cpu_s", k)]
        if floor and "train_replicated_step" in overhead and not args.weak:
            # 8 devices each doing the whole step at batch / 8 (every parameter updated on
            # every device) cannot cost less than this; the split optimiser divides the update
            overhead["train_replicated_step"]["floor_cpu"] = (
                8 * base[floor[0]] / base["train_step_cpu_s"]
            )
        report["devices"] = {"scaling": "weak" if args.weak else "strong",
                             "xla_flags": args.xla_flags, "units": units, "mrio": sizes,
                             "lambdas": L, "batch": batch, "rows": rows,
                             "overhead": overhead}  # fmt: skip
        if args.weak:  # sizes per device
            report["devices"]["per_device"] = True
    report["load_after"] = load_average()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=2))
    return report


if __name__ == "__main__":
    main()
