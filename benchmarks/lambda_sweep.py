"""Benchmark the λ sweep of the GHG / employment design (eq. 5 of the Lie-interventions paper).

On a synthetic Exiobase-like region (200 sectors: nonnegative, sparse A with column sums in
[0.5, 0.7]; heavy-tailed GHG intensities; employment intensities), the whole sweep
(16 λ × 2000 Adam steps, every step solving the equilibrium and its adjoint) runs

* as **one** program: ``jax.vmap`` over λ inside ``jax.jit`` (``jcausal.economy.design.sweep``), and
* as a Python loop over λ of the same jitted single-λ optimisation
  (``sweep(..., vectorise=False)``).

Both are timed cold (compilation included) and warm (second call), and their optima compared.
Also timed: ``jcausal design`` end to end in a subprocess (imports, data, compile, run, plot).

    python benchmarks/lambda_sweep.py                 # 200 sectors, 16 λ, 2000 steps
    python benchmarks/lambda_sweep.py --quick         # tiny sizes, seconds
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # this script is a standalone process

import numpy as np  # noqa: E402

from jcausal.economy import design as ed  # noqa: E402
from jcausal.economy.leontief import IOModel  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "lambda_sweep.json"


def synthetic_region(n: int, seed: int = 0, density: float = 0.3) -> IOModel:
    """An Exiobase-like single-region economy of ``n`` sectors with GHG and employment rows.

    ``A``: nonnegative, about ``1 - density`` of the entries zero (plus a full diagonal),
    column sums uniform in [0.5, 0.7]. Final demand lognormal. GHG intensities lognormal with
    a heavy tail (a few sectors - power, cement, steel - emit most), employment intensities
    lognormal and independent of them.
    """
    rng = np.random.default_rng(seed)
    a = rng.random((n, n)) ** 3 * (rng.random((n, n)) < density)
    a[np.diag_indices(n)] += rng.uniform(0.05, 0.2, n)
    a *= rng.uniform(0.5, 0.7, n) / a.sum(0)
    y = rng.lognormal(0.0, 1.0, n)
    ghg = rng.lognormal(0.0, 2.0, n)
    employment = rng.lognormal(0.0, 0.7, n)
    return IOModel(
        a,
        y,
        S=np.stack([ghg, employment]),
        sectors=[f"sector{i:03d}" for i in range(n)],
        regions="synthetic",
        stressors=["GHG", "Employment"],
        stressor_units=["kg CO2-eq / M EUR", "persons / M EUR"],
    )


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench_sweep(n: int, n_lambdas: int, steps: int, lr: float) -> dict:
    model = synthetic_region(n)
    problem = ed.DesignProblem(model, "GHG", "Employment")
    lambdas = ed.auto_lambdas(problem, n_lambdas - 1)  # 0 plus a log grid: n_lambdas values
    G, E = float(problem.G), float(problem.E)

    def run(vectorise):
        return ed.sweep(problem, lambdas, steps=steps, lr=lr, vectorise=vectorise)

    vmapped, vmapped_cold = timed(lambda: run(True))
    _, vmapped_warm = timed(lambda: run(True))
    loop, loop_cold = timed(lambda: run(False))
    _, loop_warm = timed(lambda: run(False))
    ref = ed.analytic_front(problem, lambdas)
    loss = vmapped.ghg / G + lambdas * vmapped.deviation / E
    best = ref["ghg"] / G + lambdas * ref["deviation"] / E
    return {
        "sectors": n,
        "lambdas": len(lambdas),
        "steps": steps,
        "lr": lr,
        "vmapped_seconds_cold": vmapped_cold,
        "vmapped_seconds_warm": vmapped_warm,
        "loop_seconds_cold": loop_cold,
        "loop_seconds_warm": loop_warm,
        "loop_over_vmapped_warm": loop_warm / vmapped_warm,
        "loop_over_vmapped_cold": loop_cold / vmapped_cold,
        "max_rel_ghg_diff_vmapped_vs_loop": float(np.max(np.abs(vmapped.ghg - loop.ghg)) / G),
        "max_excess_loss_vs_analytic": float(np.max(loss - best)),
        "all_converged": bool(vmapped.converged.all() and loop.converged.all()),
    }


def bench_design(quick: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "jcausal.cli", "design", "--out", tmp, "--quiet"]
        if quick:
            cmd.append("--smoke")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        files = sorted(os.listdir(tmp))
    return {
        "command": "jcausal design --quiet" + (" --smoke" if quick else ""),
        "seconds": seconds,
        "returncode": proc.returncode,
        "files": files,
        "stderr_tail": proc.stderr[-500:],
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sectors", type=int, default=200)
    p.add_argument("--lambdas", type=int, default=16, help="number of λ values (0 included)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--quick", action="store_true", help="50 sectors, 4 λ, 200 steps, smoke design")
    p.add_argument("--no-design", action="store_true", help="skip the jcausal design timing")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    if args.quick:
        args.sectors, args.lambdas, args.steps, args.lr = 50, 4, 200, 0.1
    report = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "jax": jax.__version__,
            "device": str(jax.devices()[0]),
        },
        "quick": args.quick,
        "sweep": bench_sweep(args.sectors, args.lambdas, args.steps, args.lr),
    }
    if not args.no_design:
        report["design"] = bench_design(args.quick)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
