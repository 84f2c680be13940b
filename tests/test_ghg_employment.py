"""GHG / employment intervention design (eq. 5): closed-form optimum, front shape, CLI."""

import csv
import json

import exiobase_like
import jax.numpy as jnp
import numpy as np
import pymrio
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


# ----------------------------------------------------------------------------------------------
# The paper's bounded parameterisation α = 2·sigmoid(u) (issue 12 §3)


def test_linear_programme_without_bound_is_the_closed_form(problem, lambdas):
    # Two independent routes to the unbounded infimum: the greedy closed form and HiGHS.
    greedy = ed.analytic_front(problem, lambdas)
    lp = ed.bounded_front(problem, lambdas, bound=None)
    for key in ("ghg", "employment", "deviation"):
        np.testing.assert_allclose(lp[key], greedy[key], rtol=1e-7, atol=1e-9 * greedy[key].max())
    np.testing.assert_array_equal(lp["cut"], greedy["cut"])


def test_bounded_factors_and_default_parameterisation(problem):
    assert problem.bounded is False
    u = np.array([-40.0, -1.0, 0.0, 1.0, 30.0])
    np.testing.assert_allclose(problem.factor(u), np.exp(u))
    bounded = ed.DesignProblem(problem.model, "emission_type1", "Value Added", bounded=True)
    a = bounded.factor(u)
    np.testing.assert_allclose(a, 2 / (1 + np.exp(-u)), rtol=1e-12)
    assert a[2] == 1.0 and 0 < a[0] < 1e-16 and a[-1] < 2
    # the log-factor fed to the equilibrium is exact where sectors close (no log(0))
    np.testing.assert_allclose(bounded.log_factor(jnp.asarray(u)), np.log(a), rtol=1e-12)
    with pytest.raises(ValueError, match="bounded must be True or False"):
        ed.DesignProblem(problem.model, "emission_type1", "Value Added", bounded="yes")


def test_bounded_sweep_where_the_bound_is_slack(problem, lambdas):
    # On pymrio's reg1 no sector sells half its output domestically: the bound never binds,
    # the bounded optimum is the unbounded one and the bounded optimiser reaches it.
    bounded = ed.DesignProblem(problem.model, "emission_type1", "Value Added", bounded=True)
    lp = ed.analytic_front(bounded, lambdas)
    greedy = ed.analytic_front(problem, lambdas)
    np.testing.assert_allclose(lp["ghg"], greedy["ghg"], rtol=1e-7, atol=1e-6)
    res = ed.sweep(bounded, lambdas, steps=STEPS, lr=LR)
    assert res.converged.all() and res.max_excess_loss < 5e-3
    assert np.all(res.excess_loss > -1e-7)  # the programme's value is never beaten
    assert np.all(bounded.factor(res.u) < 2)


@pytest.fixture(scope="module")
def exio_archive(tmp_path_factory):
    # An Exiobase-3-shaped archive written by pymrio (real names, made-up numbers).
    return exiobase_like.write_archive(tmp_path_factory.mktemp("exiobase"), 2018)


@pytest.fixture(scope="module")
def germany(exio_archive):
    return eio.from_pymrio(eio.load_exiobase(exio_archive), "DE")


def test_the_papers_rows_on_an_exiobase_shaped_archive(exio_archive, germany):
    prob = ed.DesignProblem(germany, eio.PAPER_GHG, eio.PAPER_EMPLOYMENT)
    # Against pymrio's own parse of the archive: the sectors' (not households') emissions
    system = pymrio.parse_exiobase3(exio_archive)
    F = system.satellite.F.loc[:, "DE"]
    ghg = F.loc["CO2 - combustion - air"] + 25 * F.loc["CH4 - combustion - air"]
    ghg += 298 * F.loc["N2O - combustion - air"]
    assert float(prob.G) == pytest.approx(ghg.sum(), rel=1e-9)
    assert float(prob.E) == pytest.approx(
        F.loc[exiobase_like.EMPLOYMENT_ROWS].sum().sum(), rel=1e-9
    )
    # ... which leave out methane from agriculture and mining (in the impacts' GWP100 total)
    gwp = system.impacts.F.loc[exiobase_like.IMPACT_GHG, "DE"].sum()
    assert float(prob.G) < 0.9 * gwp
    assert set(eio.PAPER_EMPLOYMENT) == set(exiobase_like.EMPLOYMENT_ROWS)
    assert germany.unit(eio.PAPER_EMPLOYMENT) == "1000 p" and germany.unit(eio.PAPER_GHG) == "kg"
    assert germany.reproduction_error < 1e-9


def test_unbounded_optimum_is_bang_bang_and_the_bound_cannot_compensate(germany):
    labels = list(germany.sectors)
    mine, coal = labels.index("Anthracite"), labels.index("Electricity by coal")
    lams = np.array([1.5, 8.8])  # coal power is closed, coal mining (many jobs) is kept
    free = ed.DesignProblem(germany, eio.PAPER_GHG, eio.PAPER_EMPLOYMENT)
    capped = ed.DesignProblem(germany, eio.PAPER_GHG, eio.PAPER_EMPLOYMENT, bounded=True)
    x_ref = np.asarray(free.x_ref)
    A, y = np.asarray(germany.A), np.asarray(germany.y)

    rf = ed.sweep(free, lams, steps=STEPS, lr=LR)
    z = rf.x / x_ref
    assert rf.converged.all() and rf.max_excess_loss < 5e-3
    # bang-bang: every sector closed or kept as it was
    assert np.all((z < 0.01) | (np.abs(z - 1) < 0.01)), z
    assert np.all(z[:, coal] < 0.01) and np.all(np.abs(z[:, mine] - 1) < 0.01)
    # Coal power bought 70 % of the mine's output: keeping the mine takes α = x* / (A x + y),
    # computed here from the table, far above 2.
    need = x_ref[mine] / (A @ rf.x.T + y[:, None])[mine]
    alpha = free.factor(rf.u)[:, mine]
    np.testing.assert_allclose(alpha, need, rtol=0.02)
    assert np.all(alpha > 3)

    rc = ed.sweep(capped, lams, steps=STEPS, lr=LR)
    zc = rc.x / x_ref
    assert rc.converged.all() and rc.max_excess_loss < 5e-3
    # The bounded factor saturates just under 2 and the mine shrinks to 2 (A x + y) ≈ x*/2.
    a_c = capped.factor(rc.u)[:, mine]
    assert np.all(a_c < 2) and np.all(a_c > 1.9)
    np.testing.assert_allclose(rc.x[:, mine], a_c * (A @ rc.x.T + y[:, None])[mine], rtol=1e-6)
    assert np.all(zc[:, mine] < 0.6) and np.all(zc[:, coal] < 0.01)
    # The linear programme (HiGHS) says the same, and the bound costs loss.
    lp = ed.analytic_front(capped, lams)
    np.testing.assert_allclose(zc[:, mine], lp["x"][:, mine] / x_ref[mine], atol=0.02)
    G, E = float(free.G), float(free.E)
    best_free = rf.analytic_ghg / G + lams * ed.analytic_front(free, lams)["deviation"] / E
    best_capped = lp["ghg"] / G + lams * lp["deviation"] / E
    assert np.all(best_capped > best_free + 1e-3)


def _paper_ghg(system, region):
    F = system.satellite.F.loc[:, region]
    rows = ["CO2 - combustion - air", "CH4 - combustion - air", "N2O - combustion - air"]
    return sum(w * F.loc[r].sum() for r, w in zip(rows, (1, 25, 298), strict=True))


def test_design_command_on_one_archive_with_the_bound(exio_archive, tmp_path):
    out = tmp_path / "one"
    ghg = "CO2 - combustion - air=1,CH4 - combustion - air=25,N2O - combustion - air=298"
    emp = [f"--employment={r}" for r in exiobase_like.EMPLOYMENT_ROWS]
    args = ["--exiobase", str(exio_archive), "--region", "DE", "--bounded", "--ghg", ghg, *emp]
    args += ["--lambdas", "1.5,8.8", "--steps", "300", "--lr", "0.1", "--top", "3", "--drops"]
    assert design.main([*args, "--out", str(out), "--quiet"]) == 0
    front = json.loads((out / "front.json").read_text())
    de = front["regions"]["DE 2018"]
    assert (de["region"], de["year"]) == ("DE", "2018")
    assert front["factors"].startswith("alpha = 2 sigmoid(u)")
    assert front["units"] == {"ghg": "kg", "employment": "1000 p"}
    assert de["reference"]["ghg"] == pytest.approx(
        _paper_ghg(pymrio.parse_exiobase3(exio_archive), "DE"), rel=1e-9
    )
    rows = list(csv.DictReader((out / "sectors.csv").open()))
    assert rows and all(r["year"] == "2018" for r in rows)
    mine = [r for r in rows if r["sector"] == "Anthracite"]
    # the coal mine loses half its jobs: its factor is capped just under 2
    assert len(mine) == 1 and 1.9 < float(mine[0]["factor"]) < 2
    assert float(mine[0]["employment_change_pct"]) == pytest.approx(-50, abs=3)


def test_paper_command_overlays_years(tmp_path, capsys):
    from jcausal import cli
    from jcausal.experiments import ghg_employment as exp

    folder = tmp_path / "exiobase"
    folder.mkdir()
    for year in (2016, 2017, 2018):  # --paper --smoke takes 2017-2018
        exiobase_like.write_archive(folder, year)
    out = tmp_path / "paper"
    argv = ["--exiobase", str(folder), "--paper", "--smoke", "--lambdas", "0,1.5"]
    argv += ["--steps", "150"]
    metrics = exp.main([*argv, "--out", str(out)])
    front = list(csv.DictReader((out / "front.csv").open()))
    assert {(r["region"], r["year"]) for r in front} == {
        (reg, y) for reg in ("FR", "DE") for y in ("2017", "2018")
    }
    assert len(front) == 4 * 2
    doc = json.loads((out / "front.json").read_text())
    assert doc["ghg"] == eio.PAPER_GHG and doc["employment"] == eio.PAPER_EMPLOYMENT
    for year in ("2017", "2018"):
        system = pymrio.parse_exiobase3(folder / f"IOT_{year}_pxp.zip")
        for reg in ("FR", "DE"):
            ref = doc["regions"][f"{reg} {year}"]["reference"]
            assert ref["ghg"] == pytest.approx(_paper_ghg(system, reg), rel=1e-9)
            F = system.satellite.F.loc[exiobase_like.EMPLOYMENT_ROWS, reg]
            assert ref["employment"] == pytest.approx(F.to_numpy().sum(), rel=1e-9)
    # the table: at most six sectors per country and year, all losing jobs, largest drop first
    table = list(csv.DictReader((out / "sectors.csv").open()))
    for reg in ("FR", "DE"):
        for year in ("2017", "2018"):
            drops = [
                float(r["employment_change"])
                for r in table
                if (r["region"], r["year"]) == (reg, year)
            ]
            assert 0 < len(drops) <= 6 and all(d < 0 for d in drops) and drops == sorted(drops)
    assert all(0 < float(r["factor"]) < 2 for r in table)
    cfg = json.loads((out / "metrics.json").read_text())["config"]
    assert cfg["bounded"] and cfg["years"] == ["2017", "2018"] and cfg["regions"] == ["FR", "DE"]
    assert set(metrics["regions"]) == {"FR 2017", "FR 2018", "DE 2017", "DE 2018"}
    assert (out / "trade_off.png").stat().st_size > 0
    # the paper's rows exist only in Exiobase: --paper without archives is refused
    rc = cli.main(["experiment", "ghg_employment", "--paper", "--out", str(tmp_path / "x")])
    assert rc == 2 and "--paper needs --exiobase DIR" in capsys.readouterr().err
    rc = cli.main(["experiment", "ghg_employment", *argv[:3], "--years", "2012-2018"])
    # (the years are checked before any archive is read)
    assert rc == 2 and "no Exiobase archive for 2012, 2013, 2014, 2015" in capsys.readouterr().err
