"""Deep SCM sample quality and conditional figures: Fig. A.3 grid, ex-post prior, fidelity."""

import dataclasses

import jax
import numpy as np
import pytest

from jcausal.data import counterfactual_images, measure
from jcausal.deepscm import morpho
from jcausal.experiments import deepscm as experiment
from jcausal.experiments import deepscm_eval, deepscm_quality

# Untrained or barely trained small networks, called a few times: compilation is the time
# (tests/conftest.py, fast_compile).
pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.fixture(scope="module")
def units():
    train, _, test = experiment.load_splits(200, 8, 6)
    return train, test


@pytest.fixture(scope="module")
def models(units):
    train, _ = units
    return {
        kind: morpho.model(
            kind,
            jax.random.key(1),
            train,
            latent=4,
            width=8,
            condition="film",
            encoder_condition="film",
        )
        for kind in ("independent", "full")
    }


def test_units_carry_their_digit_labels(units):
    train, test = units
    from jcausal.data import load_mnist_5k

    digits, labels = load_mnist_5k("test")
    rows = {d.tobytes(): y for d, y in zip(digits, labels, strict=True)}
    assert [rows[d.tobytes()] for d in test["digit"]] == test["label"].tolist()
    assert train["label"].dtype == np.int64 and len(train["label"]) == 200


def test_conditional_grid_shares_z(models, tmp_path):
    drawn = deepscm_quality.plot_conditional_grid(jax.random.key(0), models, tmp_path / "a3.png")
    assert (tmp_path / "a3.png").stat().st_size > 10_000
    ind, full = drawn["independent"], drawn["full"]
    assert ind.shape == full.shape == (5, 5, 28, 28)
    # Fig. A.3: the independent model ignores (t, i), so one z gives one image everywhere ...
    np.testing.assert_array_equal(ind, np.broadcast_to(ind[0, 0], ind.shape))
    # ... while the full model's decoder sees the parents (even untrained).
    assert np.abs(full[0, 0] - full[-1, -1]).max() > 1.0


def test_ex_post_prior_matches_the_posterior_means(models, units):
    train, _ = units
    scm = models["full"]
    gmm = deepscm_quality.ex_post_prior(scm, train, n=200, components=10)
    assert gmm.n_components == 4  # 200 points: at most one component per 50
    image = scm.mechanisms["x"]
    mu = np.asarray(
        deepscm_quality._posterior_means(
            image,
            np.asarray(train["x"][:200], np.float32) + 0.5,
            {p: train[p][:200] for p in image.parents},
        )
    )
    np.testing.assert_allclose(gmm.means_.T @ gmm.weights_, mu.mean(0), atol=1e-3)
    s = deepscm_quality.samples(jax.random.key(3), scm, 7, gmm)
    assert s["x"].shape == (7, 28, 28) and np.all(np.isfinite(s["x"]))
    # The attributes still come from the SCM: the same key gives the same (t, i) either way.
    plain = deepscm_quality.samples(jax.random.split(jax.random.key(3))[0], scm, 7)
    np.testing.assert_allclose(s["t"], plain["t"], rtol=1e-6)


def test_fidelity_per_intervention_against_true_counterfactuals(units):
    _, test = units
    n = len(test["t"])
    t_new = np.full(n, 3.0)
    true = counterfactual_images(test["digit"], t_new, test["i"]).astype(float)
    cfs = {"do(t=3)": {"x": true, "t": t_new, "i": test["i"].astype(float)}}
    m = deepscm_eval.counterfactual_fidelity(cfs, test)["per_intervention"]["do(t=3)"]
    # A model whose counterfactuals are the true ones has no error against them.
    assert m["mae_vs_true"] == 0.0 and m["model_t"] == pytest.approx(m["true_t"])
    assert m["target_t"] == 3.0 and abs(m["true_t"] - 3.0) < 0.3
    assert m["factual_t"] == pytest.approx(float(np.mean(measure(test["x"])[0])))


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_checkpoints_must_be_a_positive_integer(bad, tmp_path):
    # Named before any data is touched (0 divided the steps by zero).
    cfg = dataclasses.replace(experiment.SMOKE, checkpoints=bad)
    with pytest.raises(ValueError, match="Config.checkpoints"):
        experiment.train("full", cfg, {}, {}, jax.random.key(0), tmp_path, progress=False)
