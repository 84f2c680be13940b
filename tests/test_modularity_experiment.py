"""The modularity experiment end to end on a tiny config (pipeline facts, not model quality)."""

import dataclasses
import json
import math

import jax
import numpy as np
import pytest

from jcausal.experiments import modularity

pytestmark = pytest.mark.slow

TINY = dataclasses.replace(
    modularity.SMOKE,
    steps=5,
    influence_pairs=8,
    table_pairs=4,
    classifier_steps=5,
    grid_pairs=2,
    max_rank=3,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    # The run's time is compilation; XLA's backend optimisations cost more than they save here.
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        out = tmp_path_factory.mktemp("modularity")
        # The scenes part (--scenes) is left out: it would double the test's compilation time
        # (the suite is at its time limit); its object mask is tested in test_modularity.py.
        yield out, modularity.run(config=TINY, out=out)
    finally:
        jax.config.update("jax_disable_most_optimizations", before)


def _in(v, lo, hi):
    return np.isfinite(v) and lo - 1e-9 <= v <= hi + 1e-9


def test_files_and_metrics_json(tiny):
    out, m = tiny
    expected = [f"{kind}_{layer}.png" for layer in modularity.LAYERS
                for kind in ("influence", "hybrids")]  # fmt: skip
    assert m["figures"] == expected
    for name in expected:
        assert (out / name).stat().st_size > 1000, name
    record = json.loads((out / "metrics.json").read_text())
    assert record["config"]["influence_pairs"] == 8 and record["metrics"]["figures"] == expected


def test_digit_layers_are_in_range(tiny):
    _, m = tiny
    for layer in modularity.LAYERS:
        d = m["layers"][layer]
        r, c = d["rank"], d["channels"]
        assert c == TINY.width and 1 <= r <= TINY.max_rank
        assert all(-1 <= a < r for a in d["assignment"]) and len(d["assignment"]) == c
        assert d["unassigned"] == sum(a < 0 for a in d["assignment"])
        assert all(_in(p, 0, 1) for p in d["purity"])
        shares = d["module_influence_share"]
        assert len(shares) == r and all(_in(s, 0, 1) for s in shares) and sum(shares) <= 1 + 1e-9
        assert all(_in(e, 0, 1) for e in d["explained"].values())
        for a in modularity.ATTRIBUTES:
            assert len(d["transfer"][a]) == r
            assert all(np.isfinite(t) for t in d["transfer"][a]), (layer, a)
        s = d["summary"]["score"]
        assert math.isnan(s) or _in(s, 1 / r - 1e-9, 1)  # a share of the best module
        p = d["probe"]
        assert _in(p["entropy"], 0, math.log(10)) and _in(p["entropy_sources"], 0, math.log(10))
        assert _in(p["receiver_agreement"], 0, 1) and _in(p["donor_agreement"], 0, 1)


def test_bad_config_and_steps_are_refused(tmp_path):
    with pytest.raises(ValueError, match="Config"):
        modularity.run(config={"steps": 5}, out=tmp_path)
    with pytest.raises(ValueError, match="--steps"):
        modularity.run(config=TINY, steps=0, out=tmp_path)
    with pytest.raises(ValueError, match="--scene-steps"):
        modularity.run(config=TINY, scene_steps=2.5, digits=False, out=tmp_path)
