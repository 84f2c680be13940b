"""benchmarks/scaling.py --big --quick: the MRIO step and its numpy/scipy LU peer agree."""

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_big_mrio_step_agrees_with_numpy_lu(tmp_path):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("scaling", BENCH / "scaling.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "scaling.json"
    mod.main(["--quick", "--big", "--repeats", "1", "--out", str(out)])
    big = json.loads(out.read_text())["big"]
    assert big["sectors"] == 100 and big["jax"]["converged"]
    # the whole-table equilibrium and the implicit gradient of eq. 5 against scipy's LU
    assert big["x_rel_diff"] < 1e-8
    assert big["grad_rel_diff"] < 1e-8
