"""GHG / employment intervention design (eq. 5): closed-form optimum, front shape, CLI."""

import csv
import json

import numpy as np
import pytest

from jcausal import design
from jcausal.economy import design as ed
from jcausal.economy import io as eio

STEPS, LR = 300, 0.1  # the smoke configuration


@pytest.fixture(scope="module")
def problem():
    return ed.DesignProblem(eio.load("reg1"), "emission_type1", "Value Added")


@pytest.fixture(scope="module")
def lambdas(problem):
    return ed.auto_lambdas(problem, 7)  # 0 and 7 log-spaced values


@pytest.fixture(scope="module")
def result(problem, lambdas):
    return ed.sweep(problem, lambdas, steps=STEPS, lr=LR)


def test_sweep_reaches_the_analytic_optimum(problem, lambdas, result):
    G, E = float(problem.G), float(problem.E)
    ref = ed.analytic_front(problem, lambdas)
    loss = result.ghg / G + lambdas * result.deviation / E
    best = ref["ghg"] / G + lambdas * ref["deviation"] / E
    # The analytic value is the infimum: never beaten, and reached within 5e-3 (measured
    # ~2e-3 with these 300 steps).
    assert np.all(loss >= best - 1e-9)
    assert np.max(loss - best) < 5e-3
    assert result.converged.all()
    # sanity of the closed form: λ = 0 shuts everything, the largest λ keeps everything
    assert ref["cut"][0].all() and not ref["cut"][-1].any()


def test_front_is_monotone(result):
    # λ = 0 cuts emissions the most (to under 1 % of the reference)
    assert np.argmin(result.ghg) == 0
    assert result.ghg[0] < 0.01 * result.ghg[-1]
    # Increasing λ never increases the employment deviation nor decreases emissions, up to
    # an optimisation tolerance of 1e-3 of the reference totals.
    E = np.abs(result.employment[-1])
    assert np.all(np.diff(result.deviation) <= 1e-3 * E)
    assert np.all(np.diff(result.ghg) >= -1e-3 * result.ghg[-1])
    # the largest λ leaves the economy as it was
    np.testing.assert_allclose(result.ghg[-1], result.ghg.max(), rtol=1e-3)


def test_vmapped_sweep_equals_single_lambda_loop(problem, lambdas, result):
    pick = [2, 5]
    loop = ed.sweep(problem, lambdas[pick], steps=STEPS, lr=LR, vectorise=False)
    # Same optimiser, same data: identical up to rounding (ℓ1 kinks can amplify rounding
    # into differences of the order of the final step, 1e-4 in u).
    np.testing.assert_allclose(loop.u, result.u[pick], atol=1e-3)
    np.testing.assert_allclose(loop.ghg, result.ghg[pick], rtol=1e-4)
    np.testing.assert_allclose(loop.employment, result.employment[pick], rtol=1e-4)


def test_parse_rows():
    assert design.parse_rows("emission_type1=1,emission_type2=25") == {
        "emission_type1": 1.0,
        "emission_type2": 25.0,
    }
    long = "GHG emissions (GWP100) | baseline (CML, 2001) | GWP100 (IPCC, 2007)"
    assert design.parse_rows(f"{long}=1") == {long: 1.0}
    assert design.parse_rows(["a", "b=2"]) == {"a": 1.0, "b": 2.0}
    with pytest.raises(ValueError, match="NAME=WEIGHT"):
        design.parse_rows("a=1,b=x")


def test_design_command_smoke(tmp_path, capsys):
    out = tmp_path / "design"
    rc = design.main(
        [
            "--smoke",
            "--region",
            "reg2",
            "--ghg",
            "emission_type1=1,emission_type2=25",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    for name in ["trade_off.png", "front.csv", "front.json", "sectors.csv", "metrics.json"]:
        assert (out / name).stat().st_size > 0
    rows = list(csv.DictReader((out / "front.csv").open()))
    assert len(rows) == 1 + design.SMOKE.n_lambdas
    assert float(rows[0]["lambda"]) == 0.0 and float(rows[0]["ghg_change_pct"]) < -99
    # the front's totals are the model's: the reference GHG is the weighted pymrio sum
    io = eio.load_test()
    F = io.emissions.F.loc[:, "reg2"]
    g_ref = F.iloc[0].sum() + 25 * F.iloc[1].sum()
    front = json.loads((out / "front.json").read_text())
    assert front["regions"]["reg2"]["reference"]["ghg"] == pytest.approx(g_ref, rel=1e-9)
    assert "value added" in front["employment_note"]
    marked = [r for r in rows if r["marked"] == "True"]
    assert len(marked) == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["steps"] == design.SMOKE.steps
    assert metrics["metrics"]["regions"]["reg2"]["max_excess_loss"] < 5e-3
    sectors = list(csv.DictReader((out / "sectors.csv").open()))
    changes = [abs(float(r["employment_change"])) for r in sectors]
    assert changes == sorted(changes, reverse=True)


def test_design_command_bad_input_exits_2(tmp_path, capsys):
    assert design.main(["--smoke", "--region", "atlantis", "--out", str(tmp_path)]) == 2
    assert "reg1" in capsys.readouterr().err
    assert design.main(["--smoke", "--ghg", "CO2=1", "--out", str(tmp_path)]) == 2
    assert "emission_type1" in capsys.readouterr().err


def test_float32_sweep_reaches_the_optimum():
    import jax.numpy as jnp

    prob = ed.DesignProblem(eio.load("reg4", dtype="float32"), "emission_type1", "Value Added")
    assert prob.model.A.dtype == jnp.float32
    lams = np.array([0.0, 0.5, 5.0, 50.0])
    res = ed.sweep(prob, lams, steps=STEPS, lr=LR)
    G, E = float(prob.G), float(prob.E)
    ref = ed.analytic_front(prob, lams)
    excess = res.ghg / G + lams * res.deviation / E - (ref["ghg"] / G + lams * ref["deviation"] / E)
    assert res.x.dtype == np.float32 and res.converged.all()
    assert np.all(excess > -1e-4) and np.max(excess) < 1e-2
