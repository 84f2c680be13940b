"""The README's quickstart runs, the command line works, the built-in models are right."""

import json
import re
from pathlib import Path

import jax
import numpy as np
import pytest
from scipy.special import expit, logit

import jcausal as jc
from jcausal import examples
from jcausal.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_readme_quickstart_runs():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    ns: dict = {}
    for block in blocks:  # the examples build on each other
        exec(compile(block, "README.md", "exec"), ns)
    obs, cf, p_cf = ns["obs"], ns["cf"], ns["p_cf"]
    assert obs["x"].shape == (1_000_000,)
    assert cf["z"].shape == (100, 1000)
    np.testing.assert_allclose(np.asarray(p_cf).sum(1), 1.0, rtol=1e-6)
    # The economy example: the equilibrium is the Leontief solution and the descent helped.
    A, output = np.asarray(ns["A"]), ns["output"]
    np.testing.assert_allclose(output["x"][0], np.linalg.solve(np.eye(50) - A, np.ones(50)))
    assert bool(ns["report"].converged)
    assert ns["loss"](ns["u"]) < ns["loss"](jax.numpy.zeros(50))


def test_readme_commands_match_ci():
    first = (ROOT / "README.md").read_text().splitlines()[:5]
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = next(line for line in first if "pytest" in line)
    assert '-e ".[dev,bench,data,docs]"' in test_cmd and '-e ".[dev,bench,data,docs]"' in ci
    assert test_cmd.split("&& ")[-1].strip() in ci
    assert any("jcausal design" in line for line in first)


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert jc.__version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "--shift" in capsys.readouterr().out


def test_demo_json_is_a_correct_counterfactual(capsys):
    assert main(["demo", "--json", "--n", "5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["query"] == "exercise := Hard(2)"
    for unit in out["units"]:
        # Age is not a descendant of exercise: unchanged. Blood pressure moves by the exercise
        # coefficient (-6 mmHg per level) times the change in level.
        assert unit["age"]["counterfactual"] == unit["age"]["observed"]
        assert unit["exercise"]["counterfactual"] == 2
        d = 2 - unit["exercise"]["observed"]
        np.testing.assert_allclose(
            unit["bp"]["counterfactual"] - unit["bp"]["observed"], -6.0 * d, atol=1e-9
        )
        if d == 0:
            np.testing.assert_allclose(unit["risk"]["counterfactual"], unit["risk"]["observed"])


def test_demo_reports_bad_input(capsys):
    assert main(["demo", "--do", "nope=1"]) == 2
    assert "nope" in capsys.readouterr().out
    # Unreadable values: one line on stderr, exit 2 (they used to exit 1; NaN raised from
    # inside the compiled call with a traceback).
    for bad, word in [
        (["--do", "exercise=often"], "exercise.*often"),
        (["--do", "age"], "NODE=VALUE"),
        (["--do", "age=nan"], "finite"),
        (["--scale", "age=inf"], "finite"),
    ]:
        assert main(["demo", *bad]) == 2
        err = capsys.readouterr().err
        assert re.search(word, err) and "Traceback" not in err, err


def test_demo_table_prints(capsys):
    assert main(["demo", "--model", "morpho", "--n", "3", "--do", "t=4"]) == 0
    out = capsys.readouterr().out
    assert "Counterfactuals on the 'morpho' model" in out and "4.00" in out


def test_morpho_counterfactual_closed_form():
    """Deep SCM eq. 7: invert i's mechanism by hand and push the same noise through t' = 4."""
    scm = examples.morpho()
    obs = jc.sample(jax.random.key(0), scm, 500)
    t, i = np.asarray(obs["t"]), np.asarray(obs["i"])
    assert t.min() > 0.5 and 64 < i.min() and i.max() < 255
    np.testing.assert_allclose(t.mean(), 0.5 + 10 / 5, rtol=0.03)  # Gamma(10, rate 5) + 0.5
    e_i = (logit((i - 64) / 191) - 2 * t + 5) / 0.5
    cf = jc.counterfactual(scm, obs, {"t": jc.Hard(4.0)})
    np.testing.assert_allclose(cf["i"], 191 * expit(0.5 * e_i + 2 * 4.0 - 5) + 64, rtol=1e-9)


def test_health_model_shapes_and_log_prob_finite():
    scm = examples.health()
    obs = jc.sample(jax.random.key(1), scm, 1000)
    assert obs["exercise"].dtype == np.int32
    assert set(np.unique(obs["exercise"])) <= {0, 1, 2}
    risk = np.asarray(obs["risk"])
    assert 0 < risk.min() and risk.max() < 100
    assert np.all(np.isfinite(jc.log_prob(scm, obs)))


def test_experiment_dispatch(capsys):
    assert main(["experiment", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("equilibrium_accuracy", "ghg_employment", "rebound", "compartments", "deepscm"):
        assert name in out
    assert main(["experiment", "nope"]) == 2
    assert "unknown experiment 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "script", sorted((ROOT / "experiments").glob("*.py")), ids=lambda p: p.stem
)
def test_experiment_scripts_explain_themselves(script):
    # Every script in experiments/ runs its experiment's command line (here: --help).
    import runpy
    import sys

    argv = sys.argv
    sys.argv = [str(script), "--help"]
    try:
        with pytest.raises(SystemExit) as exit_:
            runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
    assert exit_.value.code == 0


def test_experiment_refuses_zero_steps(capsys, tmp_path):
    # It used to train for 0 steps and then evaluate untrained models for minutes.
    out = tmp_path / "never"
    assert main(["experiment", "deepscm", "--smoke", "--steps", "0", "--out", str(out)]) == 2
    assert "--steps must be a positive integer" in capsys.readouterr().err
    assert not out.exists()
