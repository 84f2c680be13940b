"""The benchmark scripts run (tiny sizes) and their implementations agree with their peers.

Timings are not asserted here (no timed unit tests); the figures come from the full runs.
"""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"

# Tiny sizes, one repeat: the time is compilation, so it is compiled without XLA's
# optimisations (tests/conftest.py, fast_compile); the agreements asserted are unchanged.
pytestmark = pytest.mark.usefixtures("fast_compile")


def load(name):
    # The scripts import their shared helpers (benchmarks/_machine.py) as top-level modules, as
    # they do when run as `python benchmarks/NAME.py`.
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_counterfactual_throughput_agrees_with_dowhy(tmp_path):
    pytest.importorskip("dowhy")
    bench = load("counterfactual_throughput")
    out = tmp_path / "cf.json"
    bench.main(["--quick", "--sizes", "1e3", "--repeats", "1", "--out", str(out)])
    report = json.loads(out.read_text())
    (res,) = report["results"]
    # jcausal, a hand-written jitted vmap and DoWhy's gcm give the same counterfactuals.
    assert max(res["max_abs_diff"].values()) < 1e-10


def test_equilibrium_benchmark_matches_lu(tmp_path):
    bench = load("equilibrium")
    out = tmp_path / "eq.json"
    bench.main(
        [
            "--quick",
            "--sizes",
            "200",
            "--dtypes",
            "float64",
            "--batch-sizes",
            "--hard-sizes",
            "--out",
            str(out),
        ]
    )
    rows = json.loads(out.read_text())["solves"]
    assert rows and all(r["converged"] for r in rows)
    # The library's rtol (1e-10) on the residual; solution and gradient follow closely.
    assert max(r["error_vs_lu"] for r in rows) < 1e-5
    assert max(r["grad_A_error_vs_lu"] for r in rows) < 1e-4


def test_flows_benchmark_matches_flowjax(tmp_path):
    pytest.importorskip("flowjax")
    bench = load("flows")
    out = tmp_path / "flows.json"
    bench.main(
        ["--batches", "64", "--repeats", "1", "--widths", "--skip", "zuko", "--out", str(out),
         "--mechanisms", "thickness", "intensity_affine"]
    )  # fmt: skip
    checks = json.loads(out.read_text())["flow_checks"]
    for mech in ("thickness", "intensity_affine"):
        c = checks[mech]
        # Same architecture and copied parameters: the log-densities agree (float32 rounding),
        # and both integrate to one on a grid.
        assert c["matched_parameters"] and c["max_abs_diff_flowjax"] < 1e-4
        for lib in ("jcausal", "flowjax"):
            assert all(abs(z - 1) < 1e-4 for z in c["normaliser"][lib])


def test_diffusion_benchmark_engine_matches_hand_written(tmp_path):
    bench = load("diffusion")
    out = tmp_path / "diffusion.json"
    report = bench.main(["--quick", "--no-train", "--no-exact", "--out", str(out)])
    # Alg. 1 through jc.counterfactual equals the hand-written batched program.
    assert report["max_abs_diff_engine_vs_hand"] < 1e-4
    assert 0 < report["bare"]["network_share_jcausal"]
    # Exact inversion reconstructs the analytic model; plain inversion does not.
    rec = report["reconstruction_analytic"]
    assert all(r["exact_max_abs"] < 1e-4 < r["plain_max_abs"] for r in rec)
    assert json.loads(out.read_text())["config"]["quick"]


def test_linear_solver_and_chunked_benchmarks_run(tmp_path):
    # Tiny sizes: the scripts run end to end and their rows agree with numpy (asserted inside
    # the chunked script: chunked == one pass exactly, numpy within 1e-12).
    bench = load("linear_solvers")
    out = bench.main(["--sizes", "20", "--kinds", "dense", "--repeats", "1", "--batch-sizes",
                      "30", "--out", str(tmp_path / "ls.json")])  # fmt: skip
    (case,) = out["cases"]
    assert all(r["residual"] < 1e-9 for r in case["rows"])
    # dL/du of an intervention: every jcausal form agrees with numpy's LU + adjoint.
    grads = [v for v in case["intervention_grad"].values() if isinstance(v, dict)]
    assert len(grads) == 3 and all(g["grad_relative_error"] < 1e-7 for g in grads), grads
    # The floors of a small solve's call are timed with it (n <= 200).
    (over,) = out["overhead"]
    assert over["floor: XLA's LU + residual + FixedPointReport"]["seconds"] > 0
    # jc.solve with Auto on the one-node economy: the LU of its Jacobian, numpy's answer.
    assert over["jc.solve (Auto) max relative error vs numpy"] < 1e-13
    assert out["batches"][0]["all_converged"] and out["batches"][0]["max_error_vs_lu"] < 1e-9
    chunked = load("chunked_counterfactuals")
    out = chunked.main(["--sizes", "1000", "3000", "--chunk", "700", "--repeats", "1",
                        "--out", str(tmp_path / "ch.json")])  # fmt: skip
    assert [r["n"] for r in out["rows"]] == [1000, 3000]


def test_policy_benchmark_runs_and_its_regrets_agree(tmp_path):
    # Tiny sweep (one configuration each, 10 generations, 10 steps, 4 grid λ): the structure of
    # the report, finite regrets, and the script's own checks (SNES's fitness minus the exact
    # infimum is the regret computed independently by front_excess; timed calls end at or below
    # the target) hold.
    pytest.importorskip("evosax")
    bench = load("policy")
    out = tmp_path / "policy.json"
    report = bench.main(["--populations", "8", "--sigmas", "0.1", "--generations", "10",
                         "--lrs", "3e-2", "--max-steps", "10", "--no-sampled", "--repeats", "1",
                         "--grid-size", "3", "--out", str(out)])  # fmt: skip
    saved = json.loads(out.read_text())
    assert saved["target_regret"] == pytest.approx(report["target_regret"])
    (es,), (gr,) = saved["snes"], saved["gradient"]
    target = saved["target_regret"]
    # The target is SNES's best; both reach it; the start (identity) is worse.
    assert target == pytest.approx(es["best_regret"])
    assert 0 < target < saved["identity_regret"]
    assert es["curve_check_max_abs"] < 1e-8
    assert len(gr["curve"]) == 10 and all(math.isfinite(r) for r in gr["curve"])
    timed = saved["timed"]
    for side in ("snes", "gradient"):
        assert all(math.isfinite(r) and r <= target * (1 + 1e-9) for r in timed[side]["regret"])
        assert all(t > 0 for t in timed[side]["seconds_warm"])
    assert timed["gradient"]["steps"] == gr["steps_to_target"] >= 1
    assert timed["snes"]["generations"] == es["generations_to_target"]
    for k in ("speedup_warm_min", "speedup_warm_median", "speedup_cold_median"):
        assert math.isfinite(saved[k]) and saved[k] > 0
