"""The diffscm experiment end to end on its smoke config (pipeline facts, not model quality)."""

import dataclasses
import json
import math

import numpy as np
import pytest

from jcausal.experiments import diffscm

pytestmark = pytest.mark.slow

# CLD = log(exp(a) + exp(b)) with a, b probabilities in [0, 1].
CLD_RANGE = (math.log(2.0), 1.0 + math.log(2.0))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    # XLA's optimisations stay on: since the trainings compile bare steps, running (not
    # compiling) dominates, and unoptimised conv programs ran several times slower (the whole
    # run measured 572 CPU-s with `jax_disable_most_optimizations`, 227 CPU-s without).
    out = tmp_path_factory.mktemp("diffscm")
    return out, diffscm.run(smoke=True, out=out, progress=False, parts=["cf", "morpho"])


def _finite_in(v, lo, hi):
    return np.isfinite(v) and lo - 1e-9 <= v <= hi + 1e-9


def test_sweep_and_table_are_in_range(smoke):
    out, m = smoke
    d = m["digits"]
    rows = d["sweep"]
    assert [r["s"] for r in rows] == list(diffscm.SMOKE.scales)
    for r in rows:
        assert _finite_in(r["cld"]["mean"], *CLD_RANGE)
        lo, hi = r["cld"]["ci95"]
        assert lo <= r["cld"]["mean"] <= hi
        assert r["im1"]["mean"] > 0 and r["im2"]["mean"] >= 0
        assert _finite_in(r["effectiveness"], 0, 1)
    best = d["best"]
    assert best["cld"] == min(r["cld"]["mean"] for r in rows)
    assert best["u_shaped"] == (0 < best["index"] < len(rows) - 1)
    for name, r in d["table1"]["rows"].items():
        assert _finite_in(r["cld"]["mean"], *CLD_RANGE), name
        assert r["cld"]["n"] == d["units"]
    # The table's Diff-SCM row is the sweep's row at the best s (same units, same targets).
    assert d["table1"]["rows"]["diff_scm"]["cld"]["mean"] == pytest.approx(best["cld"])
    assert "| Schut et al. |" in (out / "table1.md").read_text()


def test_s0_reconstructs_with_exact_inversion(smoke):
    _, m = smoke
    rec = m["digits"]["reconstruction_s0"]
    # Exact inversion makes generate(invert(x)) = x up to the fixed-point tolerance, whatever
    # the (barely trained) score model; the plain DDIM inversion does not.
    assert rec["exact"]["mean_abs_error"] < 2e-3
    assert rec["exact"]["mean_abs_error"] < rec["plain"]["mean_abs_error"]
    assert _finite_in(m["digits"]["interventional"]["oracle_accuracy"], 0, 1)


def test_morpho_table_and_outputs(smoke):
    out, m = smoke
    mo = m["morpho"]
    for name in ("diffusion", "vae"):
        s = mo[name]["summary"]
        assert np.isfinite(s["mae_vs_true"]) and 0 <= s["mae_vs_true"] <= 255
        assert all(_finite_in(v, 0, 1) for v in mo[name]["identity"].values())
        per = mo[name]["fidelity"]["per_intervention"]
        assert per["do(t=3)"]["target_t"] == pytest.approx(3.0)
        assert per["do(i=160)"]["target_i"] == pytest.approx(160.0)
    # The scale of least validation MAE among the config's, each of them tried.
    sel = mo["scale_selection_val_mae"]
    assert sorted(float(k) for k in sel) == sorted(diffscm.SMOKE.morpho_scales)
    assert sel[f"{mo['scale']:g}"] == min(sel.values())
    assert "| diffusion | do(t=1) |" in (out / "morpho_table.md").read_text()
    for fig in m["figures"]:
        assert (out / fig).stat().st_size > 1000, fig
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"]["digits"]["best"]["s"] == m["digits"]["best"]["s"]


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--parts"):
        diffscm.run(smoke=True, out=tmp_path / "a", parts=["bogus"])
    with pytest.raises(ValueError, match="fraction"):
        diffscm.run(config=dataclasses.replace(diffscm.SMOKE, fraction=0.0), out=tmp_path / "b")
    with pytest.raises(ValueError, match="scales"):
        diffscm.run(
            config=dataclasses.replace(diffscm.SMOKE, scales=(0.0, -1.0, 2.0)), out=tmp_path / "c"
        )
    with pytest.raises(ValueError, match="morpho_scales"):
        diffscm.run(config=dataclasses.replace(diffscm.SMOKE, morpho_scales=()), out=tmp_path / "e")
    with pytest.raises(ValueError, match="--data"):
        diffscm.run(smoke=True, out=tmp_path / "d", data="emnist")
