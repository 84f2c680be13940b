"""Counterfactuals at any N: time per unit of chunked vs one-pass evaluation, and numpy.

The five-node additive chain of ``counterfactual_throughput.py`` (``Xk = f(X_{k-1}) + Nk``,
``f(x) = tanh(1.5 x) + 0.5 x``) and ``do(X2 := X2 + 1)`` for every unit, at N = 1e5, 1e6, 1e7,
float64. Rows, in the same run, round-robin:

- ``jcausal``: ``jc.counterfactual(scm, obs, iv)`` (one pass over all N units);
- ``jcausal chunked``: the same with ``chunk_size=C`` (default 2**15 units);
- ``hand-written``: ``jax.jit(jax.vmap(unit))`` of the equations (one pass);
- ``numpy``: the same equations vectorised with numpy (what a user writes without JAX).

Reported: ns per unit (best of the repeats), the ratio to the row's own time at the smallest
N (flat = 1.0), and the compiled program's temporary memory
(``memory_analysis().temp_size_in_bytes``: the intermediates). Outputs are checked equal
(chunked == one pass exactly; numpy within 1e-12), and the minor page faults per call
(``ru_minflt``). Run with few repeats on a shared machine:

    nice python benchmarks/chunked_counterfactuals.py --sizes 1e5 1e6 1e7 --repeats 5

XLA's CPU buffers come from glibc's malloc on XLA's worker threads, which serves blocks above
32 MB (64 MB from a thread's arena, whatever the settings) from fresh ``mmap`` pages: every
call at N = 1e7 takes one page fault per 4 KB of its 320 MB of outputs. Two settings of
``GLIBC_TUNABLES`` (read when the process starts; ``--glibc-variants`` runs the benchmark
once per setting, in the same run):

- ``hugetlb``: ``glibc.malloc.hugetlb=1``, transparent huge pages, 2 MB per fault;
- ``heap``: one arena, no mmap, no trimming, no tcache/fastbins
  (``arena_max=1:mmap_max=0:trim_threshold=4294967295:tcache_count=0:mxfast=0``): freed
  buffers are reused, no faults. (``mallopt`` from inside Python cannot do this: XLA's aligned
  allocations leave small remainders in the thread cache that keep a freed block from
  merging, so the heap grew by one output per call: measured, not shipped.)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import jax

jax.config.update("jax_enable_x64", True)  # this script is a standalone process

import distrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jcausal as jc  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _machine import machine_info  # noqa: E402

NODES = ("X1", "X2", "X3", "X4", "X5")


def build_scm() -> jc.SCM:
    mechs = {"X1": jc.Root(distrax.Normal(0.0, 1.0))}
    for k in range(2, 6):
        parent = f"X{k - 1}"
        mechs[f"X{k}"] = jc.Additive(_parent_fn, None, distrax.Normal(0.0, 1.0), [parent])
    return jc.SCM(mechs)


def _parent_fn(_, pa):
    (x,) = pa.values()
    return jnp.tanh(1.5 * x) + 0.5 * x


def hand_written():
    def g(x):
        return jnp.tanh(1.5 * x) + 0.5 * x

    def unit(o):
        n3, n4, n5 = o["X3"] - g(o["X2"]), o["X4"] - g(o["X3"]), o["X5"] - g(o["X4"])
        x2 = o["X2"] + 1.0
        x3 = g(x2) + n3
        x4 = g(x3) + n4
        return {"X2": x2, "X3": x3, "X4": x4, "X5": g(x4) + n5}

    return jax.jit(jax.vmap(unit))


def numpy_cf(o):
    def g(x):
        return np.tanh(1.5 * x) + 0.5 * x

    n3, n4, n5 = o["X3"] - g(o["X2"]), o["X4"] - g(o["X3"]), o["X5"] - g(o["X4"])
    x2 = o["X2"] + 1.0
    x3 = g(x2) + n3
    x4 = g(x3) + n4
    return {"X1": o["X1"], "X2": x2, "X3": x3, "X4": x4, "X5": g(x4) + n5}


def best_of(call, repeats: int) -> float:
    """Best of ``repeats`` calls (at least 5), seconds, blocking on the result."""
    times = []
    for _ in range(max(repeats, 5)):
        t = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - t)
    return min(times)


def temp_bytes(fn, *args) -> int | None:
    try:
        return int(jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes)
    except Exception:  # memory analysis is optional per backend
        return None


GLIBC_VARIANTS = {
    "default": None,
    "hugetlb": "glibc.malloc.hugetlb=1",
    "heap": "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
    "glibc.malloc.trim_threshold=4294967295:glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0",
}


def variants(args) -> dict:
    """One process per ``GLIBC_TUNABLES`` setting, one after the other; rows keyed by name."""
    out = {"machine": machine_info("jax", "numpy"), "variants": {}}
    for name, tunables in GLIBC_VARIANTS.items():
        env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
        if tunables:
            env["GLIBC_TUNABLES"] = tunables
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "out.json")
            cmd = [sys.executable, os.path.abspath(__file__), "--sizes", *map(str, args.sizes),
                   "--chunk", str(args.chunk), "--repeats", str(args.repeats),
                   "--out", path]  # fmt: skip
            print(f"--- {name}: GLIBC_TUNABLES={tunables}", flush=True)
            subprocess.run(cmd, env=env, check=True)
            with open(path) as f:
                out["variants"][name] = json.load(f)["rows"]
    for name, rows in out["variants"].items():
        print(f"{name:8s} " + ", ".join(
            f"N={r['n']:.0e}: one pass {r['jcausal']['ns_per_unit']:.1f} ns/unit "
            f"({r['vs_smallest_n']['jcausal']:.2f}x), numpy/one pass "
            f"{r['numpy']['best_s'] / r['jcausal']['best_s']:.1f}x" for r in rows))  # fmt: skip
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=float, nargs="+", default=[1e5, 1e6, 1e7])
    p.add_argument("--chunk", type=int, default=2**15)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--glibc-variants",
        action="store_true",
        help="run once per GLIBC_TUNABLES setting (subprocesses), same JSON",
    )
    p.add_argument("--out", default="benchmarks/results/chunked_counterfactuals.json")
    args = p.parse_args(argv)
    if args.glibc_variants:
        return variants(args)
    scm = build_scm()
    iv = {"X2": jc.Shift(1.0)}
    hand = hand_written()
    rows = []
    for size in args.sizes:
        n = int(size)
        obs = jax.block_until_ready(jc.sample(jax.random.key(0), scm, n))
        obs_np = {k: np.asarray(v) for k, v in obs.items()}
        calls = {
            "jcausal": lambda: jc.counterfactual(scm, obs, iv),
            "jcausal chunked": lambda: jc.counterfactual(scm, obs, iv, chunk_size=args.chunk),
            "hand-written": lambda: hand(obs),
            "numpy": lambda: numpy_cf(obs_np),
        }
        outs = {k: jax.block_until_ready(c()) for k, c in calls.items()}  # compile, check
        for node in NODES[1:]:
            np.testing.assert_array_equal(outs["jcausal chunked"][node], outs["jcausal"][node])
            np.testing.assert_allclose(outs["numpy"][node], outs["jcausal"][node], atol=1e-12)
            np.testing.assert_allclose(
                outs["hand-written"][node], outs["jcausal"][node], atol=1e-12
            )
        times = {k: [] for k in calls}
        faults = {k: [] for k in calls}
        for _ in range(args.repeats):
            for k, c in calls.items():  # round-robin: drifts of the machine hit every row
                f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                t = time.perf_counter()
                jax.block_until_ready(c())
                times[k].append(time.perf_counter() - t)
                faults[k].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
        row = {"n": n, "chunk_size": args.chunk, "load_average": os.getloadavg(),
               "glibc_tunables": os.environ.get("GLIBC_TUNABLES")}  # fmt: skip
        for k, ts in times.items():
            # Best of the repeats: on a shared machine the rest is waiting for a core. Minor
            # page faults per call: one per 4 KB of fresh output buffer unless huge pages.
            row[k] = {"best_s": float(np.min(ts)), "ns_per_unit": 1e9 * np.min(ts) / n,
                      "minflt_per_call": int(np.median(faults[k]))}  # fmt: skip
        # The floor per element of the chain's costliest operation, tanh (6 per unit):
        # numpy's (SIMD, into a preallocated buffer) and XLA's (one fused elementwise kernel).
        x, buf, tanh = obs_np["X2"], np.empty(n), jax.jit(jnp.tanh)
        jax.block_until_ready(tanh(obs["X2"]))
        row["tanh_ns_per_element"] = {
            "numpy": 1e9 * best_of(lambda: np.tanh(x, out=buf), args.repeats) / n,
            "xla": 1e9 * best_of(lambda: tanh(obs["X2"]), args.repeats) / n,
        }
        row["temp_bytes"] = {
            "jcausal": temp_bytes(lambda o: jc.counterfactual(scm, o, iv), obs),
            "jcausal chunked": temp_bytes(
                lambda o: jc.counterfactual(scm, o, iv, chunk_size=args.chunk), obs
            ),
        }
        rows.append(row)
        print(
            f"N={n:>10,}  "
            + "  ".join(f"{k}: {row[k]['ns_per_unit']:.2f} ns/unit" for k in calls)
            + f"  | tanh ns/element numpy {row['tanh_ns_per_element']['numpy']:.2f}, XLA "
            f"{row['tanh_ns_per_element']['xla']:.2f}"
            + f"  | temp bytes {row['temp_bytes']}  load {row['load_average'][0]:.1f}",
            flush=True,
        )
    base = rows[0]
    for row in rows:
        row["vs_smallest_n"] = {
            k: row[k]["ns_per_unit"] / base[k]["ns_per_unit"]
            for k in ("jcausal", "jcausal chunked", "hand-written", "numpy")
        }
        row["numpy_over_chunked"] = row["numpy"]["best_s"] / row["jcausal chunked"]["best_s"]
        row["numpy_over_one_pass"] = row["numpy"]["best_s"] / row["jcausal"]["best_s"]
        print(
            f"N={row['n']:>10,}  per unit vs N={base['n']:,}: "
            + ", ".join(f"{k} {v:.2f}x" for k, v in row["vs_smallest_n"].items())
            + f" | numpy / chunked = {row['numpy_over_chunked']:.1f}x"
        )
    out = {"machine": machine_info("jax", "numpy"), "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    return out


if __name__ == "__main__":
    main()
