"""Cold start: ``import jcausal``, ``jcausal --help``, and ``jcausal design`` with the cache.

Each row is a fresh Python process: wall time and CPU time (user + sys of the child, which
a loaded machine inflates far less), medians of ``--repeats``:

- ``import jax`` (the floor) and ``import jcausal`` (lazy: no JAX until a name is used);
- ``jcausal --help``;
- ``jcausal design ...`` three times with the persistent compilation cache in a fresh folder:
  the first run compiles and fills the cache, the second reads it; and once with the cache
  turned off (``--no-compile-cache``), to show what the cache saves.

    nice python benchmarks/cold_start.py --repeats 3
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

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _machine import machine_info

DESIGN = ["design", "--region", "reg3", "--lambdas", "0.1,1", "--steps", "200"]


CPU: dict[str, list[float]] = {}  # CPU seconds of each row's runs


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(argv: list[str], env: dict[str, str], cwd: str, name: str = "") -> float:
    """Wall seconds of one run of ``argv``; its CPU seconds are appended to ``CPU[name]``."""
    c, t = _children_cpu(), time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t
    CPU.setdefault(name, []).append(_children_cpu() - c)
    return wall


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/cold_start.json")
    args = p.parse_args(argv)
    py = sys.executable
    env = dict(os.environ)
    env.pop("JCAUSAL_COMPILE_CACHE", None)
    out: dict = {"machine": machine_info("jax"), "load_average": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        rows = {
            "import jax": [py, "-c", "import jax"],
            "import jcausal": [py, "-c", "import jcausal"],
            "jcausal --help": [py, "-m", "jcausal.cli", "--help"],
        }
        for name, cmd in rows.items():
            times = [run(cmd, env, tmp, name) for _ in range(args.repeats)]
            out[name] = float(np.median(times))
            out[f"{name}, CPU"] = float(np.median(CPU[name]))
            print(f"{name:32s} {out[name]:.2f} s (CPU {out[f'{name}, CPU']:.2f} s)", flush=True)
        design = {}
        for r in range(args.repeats):
            cache = os.path.join(tmp, f"cache{r}")
            e = dict(env, JCAUSAL_COMPILE_CACHE=cache)
            res = os.path.join(tmp, f"res{r}")
            cmd = [py, "-m", "jcausal.cli", *DESIGN, "--out"]
            first = run([*cmd, res + "a"], e, tmp, "first")  # empty cache: compiles, writes
            second = run([*cmd, res + "b"], e, tmp, "second")  # reads the programs back
            off = run([py, "-m", "jcausal.cli", "--no-compile-cache", *DESIGN, "--out",
                       res + "c"], e, tmp, "no cache")  # fmt: skip
            for k, v in (("first", first), ("second", second), ("no cache", off)):
                design.setdefault(k, []).append(v)
        for k, v in design.items():
            out[f"design, {k}"] = float(np.median(v))
            out[f"design, {k}, CPU"] = float(np.median(CPU[k]))
            print(f"{'jcausal design, ' + k:32s} {out[f'design, {k}']:.2f} s "
                  f"(CPU {out[f'design, {k}, CPU']:.2f} s)", flush=True)  # fmt: skip
        out["design second / first"] = out["design, second"] / out["design, first"]
        out["design second / first, CPU"] = out["design, second, CPU"] / out["design, first, CPU"]
        print(f"second / first run: {out['design second / first']:.2f} "
              f"(CPU {out['design second / first, CPU']:.2f})")  # fmt: skip
    out["command"] = " ".join(["jcausal", *DESIGN])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
