"""benchmarks/scaling.py --big --quick: the MRIO step and its numpy/scipy LU peer agree."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _bench():
    """benchmarks/scaling.py as a module (it imports its sibling ``_machine``)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("scaling", BENCH / "scaling.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_big_mrio_step_agrees_with_numpy_lu(tmp_path):
    mod = _bench()
    out = tmp_path / "scaling.json"
    mod.main(["--quick", "--big", "--repeats", "1", "--out", str(out)])
    big = json.loads(out.read_text())["big"]
    assert big["sectors"] == 100 and big["jax"]["converged"]
    # the whole-table equilibrium and the implicit gradient of eq. 5 against scipy's LU
    assert big["x_rel_diff"] < 1e-8
    assert big["grad_rel_diff"] < 1e-8


def test_weak_scaling_divides_by_the_work(tmp_path):
    """--weak: k devices do k times the one-device work, and the overhead is t_k / (k t_1)."""
    mod = _bench()
    out = tmp_path / "weak.json"
    mod.main(["--quick", "--weak", "--devices", "1,2", "--only", "counterfactual",
              "--repeats", "1", "--out", str(out)])  # fmt: skip
    dev = json.loads(out.read_text())["devices"]
    assert dev["scaling"] == "weak" and dev["units"] == 4096 // 8
    one, two = dev["rows"]
    assert (one["work"], two["work"]) == (1, 2)
    for key in ("counterfactual_s", "counterfactual_cpu_s"):
        ratio = two[key] / (2 * one[key])
        assert abs(two[key[:-2] + "_vs_1"] - ratio) < 1e-12
    assert abs(dev["overhead"]["counterfactual"]["cpu"] - two["counterfactual_cpu_vs_1"]) < 1e-12


def test_bad_arguments_are_named(capsys):
    mod = _bench()
    bad = [
        (["--devices", "0"], "--devices"),
        (["--devices", "1,x"], "--devices"),
        (["--weak-batch", "0"], "--weak-batch"),
        (["--repeats", "0"], "--repeats"),
    ]
    for argv, name in bad:
        with pytest.raises(SystemExit):
            mod.main(["--quick", *argv])
        assert name in capsys.readouterr().err
    # A batch that does not split over a device count fails before any worker starts.
    with pytest.raises(SystemExit):
        mod.main(["--train-batch", "100", "--devices", "1,8", "--only", "train"])
    assert "--train-batch 100" in capsys.readouterr().err
