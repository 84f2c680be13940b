"""``jcausal design`` / ``jcausal experiment`` against bad input, reruns and Ctrl-C (issue 10)."""

import glob
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jcausal import cli, design
from jcausal.economy import design as ed
from jcausal.economy import io as eio
from jcausal.economy.leontief import IOModel
from jcausal.results import MARKER

FAST = ["--smoke", "--lambdas", "0,1,10", "--quiet"]


def _no_partials(parent):
    return not [p for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


@pytest.fixture
def no_compute(monkeypatch):
    """Fail the test if the command gets as far as computing."""

    def boom(*args, **kwargs):
        raise AssertionError("the command started computing before refusing its input")

    monkeypatch.setattr(design, "run", boom)


# ----------------------------------------------------------------------------------------------
# §5: option values are named errors before any work


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--target", "0"], "--target"),
        (["--target", "1.5"], "--target"),
        (["--target", "-0.1"], "--target"),
        (["--top", "0"], "--top"),
        (["--top", "-3"], "--top"),
        (["--lambdas", "0,inf,1"], "--lambdas"),
        (["--lambdas", "nan"], "--lambdas"),
        (["--lambdas", "-1"], "--lambdas"),
        (["--region", ""], "--region"),
        (["--region", " , "], "--region"),
        (["--steps", "0"], "--steps"),
        (["--steps", "-5"], "--steps"),
        (["--lr", "inf"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--lr", "0"], "--lr"),
        (["--n-lambdas", "0"], "--n-lambdas"),
        (["--ghg", "emission_type1=1e400"], "finite"),
        (["--max-excess", "0"], "--max-excess"),
        (["--years", "2018"], "--years selects Exiobase archives"),
        (["--years", "2018-2012", "--exiobase", "."], "--years '2018-2012' is an empty range"),
        (["--years", "20x8", "--exiobase", "."], "cannot read years"),
        (["--weighting", "nolabel"], "--weighting 'nolabel' needs a label"),
        (["--weighting", "a:emission_type1=1", "--weighting", "a:x=1"], "'a' is given twice"),
        (["--weighting", "a:emission_type1=1", "--ghg", "x=1"], "cannot go with --ghg"),
        (["--weighting", "a:emission_type1=1", "--mrio"], "not available with --mrio"),
    ],
)
def test_bad_option_values_exit_2_before_any_work(tmp_path, capsys, no_compute, args, names):
    out = tmp_path / "out"
    assert design.main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert names in err and "Traceback" not in err
    assert len(err.splitlines()) == 1  # one line saying what to do
    assert not out.exists() and _no_partials(tmp_path)


def test_experiment_reports_value_errors_without_traceback(tmp_path, capsys):
    out = tmp_path / "e"
    rc = cli.main(["experiment", "ghg_employment", "--smoke", "--steps", "0", "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--steps must be a positive" in err and "Traceback" not in err
    assert not out.exists() and _no_partials(tmp_path)


# ----------------------------------------------------------------------------------------------
# §5: stressor rows


def _model(S, stressors=("GHG", "jobs")):
    A = np.array([[0.1, 0.2, 0.0], [0.1, 0.1, 0.3], [0.0, 0.2, 0.1]])
    return IOModel(A, [1.0, 2.0, 1.5], S=S, sectors=["coal", "steel", "care"], stressors=stressors)


def test_nan_negative_and_overflowing_rows_are_refused():
    good = np.array([[3.0, 1.0, 0.1], [1.0, 2.0, 5.0]])
    ed.DesignProblem(_model(good), "GHG", "jobs")  # fine
    nan = good.copy()
    nan[0, 1] = np.nan
    with pytest.raises(ValueError, match=r"GHG rows \['GHG'\] have NaN.*'steel'"):
        ed.DesignProblem(_model(nan), "GHG", "jobs")
    neg = good.copy()
    neg[0, 2] = -0.5
    with pytest.raises(ValueError, match=r"GHG indicator 'GHG' is negative for sectors 'care'"):
        ed.DesignProblem(_model(neg), "GHG", "jobs")
    neg_jobs = good.copy()
    neg_jobs[1] = -neg_jobs[1]
    with pytest.raises(ValueError, match=r"employment indicator 'jobs' is negative"):
        ed.DesignProblem(_model(neg_jobs), "GHG", "jobs")
    with pytest.raises(ValueError, match="non-finite weight"):
        ed.DesignProblem(_model(good), {"GHG": float("inf")}, "jobs")
    with pytest.raises(ValueError, match="overflows"):
        ed.DesignProblem(_model(good), {"GHG": 1e308, "jobs": 1e308}, "jobs")
    # A NaN in a row the indicators do not name does not matter.
    other = np.vstack([good, [np.nan, 0.0, 0.0]])
    p = ed.DesignProblem(_model(other, ("GHG", "jobs", "water")), "GHG", "jobs")
    assert np.isfinite(float(p.G)) and np.isfinite(float(p.E))


def test_a_gap_in_a_pymrio_table_is_not_read_as_zero():
    system = eio.load_test()
    F = system.emissions.F
    col = F.columns[F.columns.get_level_values(0) == "reg1"][2]  # a sector with output
    F.loc[F.index[0], col] = np.nan
    model = eio.from_pymrio(system, "reg1")
    with pytest.raises(ValueError, match=rf"have NaN or infinite coefficients.*'{col[1]}'"):
        ed.DesignProblem(model, "emission_type1", "Value Added")
    # the other row is untouched and usable
    ed.DesignProblem(model, "emission_type2", "Value Added")


# ----------------------------------------------------------------------------------------------
# §5: a diverged optimisation fails; §4: outputs never half-written or silently replaced


def _previous_run(out, **files):
    out.mkdir()
    (out / MARKER).write_text("")
    for name, text in files.items():
        (out / name).write_text(text)


def test_diverged_design_fails_and_leaves_out_as_it_was(tmp_path, capsys):
    out = tmp_path / "out"
    _previous_run(out, **{"front.csv": "the first run's front\n"})
    rc = design.main([*FAST, "--lr", "1e6", "--out", str(out), "--overwrite"])
    assert rc == design.EXIT_DIVERGED
    err = capsys.readouterr().err
    assert "did not reach the optimum" in err and "lower the step size" in err
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "front.csv"]
    assert (out / "front.csv").read_text() == "the first run's front\n"
    assert _no_partials(tmp_path)


def test_library_check_flags_divergence():
    prob = ed.DesignProblem(eio.load("reg1"), "emission_type1", "Value Added")
    res = ed.sweep(prob, [0.0, 5.0], steps=50, lr=1e6)
    assert not res.max_excess_loss <= ed.MAX_EXCESS_LOSS
    with pytest.raises(ed.DesignDiverged, match="did not reach the optimum"):
        res.check()


def test_second_run_is_refused_and_overwrite_replaces(tmp_path, capsys, no_compute):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    assert design.main([*FAST, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already holds results (metrics.json)" in err and "--overwrite" in err
    assert (out / "metrics.json").read_text() == "{}"
    # a file, or a folder under a file, cannot receive results: refused before computing
    (tmp_path / "f").write_text("")
    for bad in (tmp_path / "f", tmp_path / "f" / "sub"):
        assert design.main([*FAST, "--out", str(bad)]) == 2
        assert "--out" in capsys.readouterr().err


def test_overwrite_replaces_the_whole_folder(tmp_path):
    out = tmp_path / "out"
    _previous_run(out, **{"stale.txt": "from an older run"})
    assert design.main([*FAST, "--out", str(out), "--overwrite"]) == 0
    names = sorted(p.name for p in out.iterdir())
    expected = ["front.csv", "front.json", "metrics.json", "sectors.csv", "trade_off.png"]
    assert names == [MARKER, *expected]
    front = json.loads((out / "front.json").read_text())
    assert [p["lambda"] for p in front["regions"]["reg1"]["points"]] == [0.0, 1.0, 10.0]
    assert _no_partials(tmp_path)


# ----------------------------------------------------------------------------------------------
# Ctrl-C and chunking by time


def test_prime_step_count_runs_in_few_chunks():
    prob = ed.DesignProblem(eio.load("reg1"), "emission_type1", "Value Added")
    chunks = []
    res = ed.sweep(prob, [0.0, 1.0], steps=1009, lr=0.1, progress=chunks.append)
    assert sum(chunks) == 1009 and res.steps == 1009
    assert len(chunks) < 60  # by steps/20 divisors this was 1009 one-step chunks
    # more than MAX_HISTORY steps: every second loss is kept (steps 2, 4, ..., 1008)
    assert res.loss_stride == 2 and res.loss.shape == (2, 504) and res.final_loss.shape == (2,)
    np.testing.assert_allclose(res.final_loss, res.loss[:, -1], rtol=1e-3)


def test_ctrl_c_stops_a_huge_run_cleanly(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "jcausal.cli", "design", "--steps", "1000000000"]
    proc = subprocess.Popen(
        [*cmd, "--out", str(out), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell may start background jobs with SIGINT ignored; the user's terminal does not
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    t0 = time.monotonic()
    while not glob.glob(str(tmp_path / ".out.partial-*")) and time.monotonic() - t0 < 300:
        time.sleep(0.2)
    time.sleep(15)  # into the optimisation (compiled by now on most machines)
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    t1 = time.monotonic()
    try:
        _, err = proc.communicate(timeout=120)
    finally:  # never leave a billion-step run behind
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert time.monotonic() - t1 < 90  # at worst: a compilation in progress finishes first
    assert "interrupted" in err and "Traceback" not in err
    assert not out.exists() and _no_partials(tmp_path)


def test_import_jcausal_leaves_pandas_pymrio_and_x64_alone():
    code = (
        "import sys, jax, jcausal; "
        "print(sorted(m for m in ('pandas', 'pymrio', 'matplotlib') if m in sys.modules), "
        "jax.config.jax_enable_x64)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["[]", "False"]


def test_an_empty_region_name_is_refused(capsys):
    from jcausal.design import main as design_main

    assert design_main(["--region", "reg1,,reg2", "--out", "/nonexistent/never-written"]) == 2
    assert "empty name" in capsys.readouterr().err
