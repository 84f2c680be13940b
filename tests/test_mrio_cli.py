"""`jcausal design --mrio` / `--synthetic-mrio`: outputs, leakage columns, bad input; cases."""

import csv
import json

import numpy as np

from jcausal import design
from jcausal.design import main
from jcausal.economy import design as ed
from jcausal.economy import io as eio


def test_design_mrio_writes_leakage(tmp_path, capsys):
    out = tmp_path / "mrio"
    args = ["--mrio", "--smoke", "--region", "reg2", "--lambdas", "0,1,10", "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    files = {p.name for p in out.iterdir()}
    assert {"trade_off.png", "leakage.png", "front.csv", "front.json", "metrics.json"} <= files
    rows = list(csv.DictReader((out / "front.csv").open()))
    assert [float(r["lambda"]) for r in rows] == [0.0, 1.0, 10.0]
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]["regions"]["reg2"]
    by_region = metrics["ghg_change_by_region_at_marked"]
    k = [r["marked"] for r in rows].index("True")
    # the per-region bars: reg2's bar is the domestic change, the others sum to the leakage
    leak = sum(v for r, v in by_region.items() if r != "reg2")
    assert np.isclose(leak, float(rows[k]["leakage"]), rtol=1e-9)
    dom = float(rows[k]["ghg"]) - metrics["reference_ghg"]
    assert np.isclose(by_region["reg2"], dom, rtol=1e-9)
    # same front as the domestic-block design, to the optimiser's tolerance
    for r in rows:
        assert abs(float(r["ghg_change_pct"]) - float(r["domestic_block_ghg_change_pct"])) < 1.0


def test_design_synthetic_mrio_and_bad_input(tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["--synthetic-mrio", "3x6", "--smoke", "--lambdas", "0,1", "--region", "R2",
                 "--quiet", "--out", str(out)]) == 0  # fmt: skip
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["metrics"]["sectors_in_table"] == 18
    capsys.readouterr()
    bad = [
        (["--mrio", "--region", "nowhere"], "unknown region 'nowhere'"),
        (["--synthetic-mrio", "3by6"], "REGIONSxSECTORS"),
        (["--synthetic-mrio", "3x6", "--exiobase", str(tmp_path)], "cannot go with --exiobase"),
        (["--mrio", "--devices", "0"], "--devices must be a positive whole number"),
    ]
    for extra, message in bad:
        code = main([*extra, "--smoke", "--quiet", "--out", str(tmp_path / "bad")])
        err = capsys.readouterr().err
        assert code == 2 and message in err, (extra, err)
    assert not (tmp_path / "bad").exists()


def test_weightings_and_regions_are_cases_of_one_sweep(tmp_path, capsys):
    """--weighting × --region: one front per case, each equal to its own library sweep."""
    out = tmp_path / "w"
    ws = [
        "--weighting",
        "one:emission_type1=1",
        "--weighting",
        "mix:emission_type1=1,emission_type2=25",
    ]
    args = [
        *["--smoke", "--lambdas", "0,1,10", "--quiet"],
        *ws,
        "--region",
        "reg1,reg2",
        "--devices",
        "1",
        "--shard",
        "cases",
    ]
    assert design.main([*args, "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "front.csv").open()))
    assert len(rows) == 2 * 2 * 3 and {r["weighting"] for r in rows} == {"one", "mix"}
    mix = [float(r["ghg"]) for r in rows if r["region"] == "reg2" and r["weighting"] == "mix"]
    problem = ed.DesignProblem(eio.from_pymrio(eio.load_test(), "reg2"),
                               {"emission_type1": 1.0, "emission_type2": 25.0},
                               eio.TEST_EMPLOYMENT)  # fmt: skip
    ref = ed.sweep(problem, [0.0, 1.0, 10.0], steps=design.SMOKE.steps, lr=design.SMOKE.lr)
    np.testing.assert_allclose(mix, ref.ghg, rtol=1e-9)
    capsys.readouterr()
    bad = [
        *["--smoke", "--lambdas", "0,1,10", "--quiet"],
        "--weighting",
        "a:no such row=1",
        "--out",
        str(tmp_path / "bad"),
    ]
    assert design.main(bad) == 2 and "no such row" in capsys.readouterr().err


def test_mrio_years_are_cases_of_one_sweep(tmp_path, capsys):
    """--mrio over two years: one front per region × year, each on its own year's table."""
    import exiobase_like
    import pytest

    folder = tmp_path / "exiobase"
    folder.mkdir()
    for year in (2017, 2018):
        exiobase_like.write_archive(folder, year)
    out = tmp_path / "years"
    args = ["--mrio", "--exiobase", str(folder), "--region", "DE", "--smoke", "--lambdas", "0,2"]
    assert main([*args, "--quiet", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "front.csv").open()))
    assert [(r["region"], r["year"]) for r in rows] == [("DE", "2017")] * 2 + [("DE", "2018")] * 2
    doc = json.loads((out / "metrics.json").read_text())["metrics"]["regions"]
    assert set(doc) == {"DE 2017", "DE 2018"} and doc["DE 2018"]["year"] == "2018"
    # each case was designed on its own year's table: the reference GHG is that table's, the
    # front passed the run's check against that table's closed-form optimum, and trade moves
    # emissions abroad (the leakage column is not zeros)
    for year in (2017, 2018):
        F = exiobase_like.system(year).impacts.F.loc[eio.EXIOBASE_GHG, "DE"]
        assert doc[f"DE {year}"]["reference_ghg"] == pytest.approx(F.to_numpy().sum(), rel=1e-9)
        assert doc[f"DE {year}"]["max_excess_loss"] < design.SMOKE.max_excess
    assert all(float(r["leakage"]) != 0 for r in rows if float(r["lambda"]) == 0)
    # the years are different tables (coal power shrinks from one year to the next)
    assert doc["DE 2017"]["reference_ghg"] != doc["DE 2018"]["reference_ghg"]
    assert (out / "leakage.png").stat().st_size > 0 and (out / "trade_off.png").stat().st_size > 0
