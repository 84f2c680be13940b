"""The two counterfactual baselines on toy problems with known answers."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jcausal import baselines as jb
from jcausal import metrics as jm


def _strips(classes):
    """Images with row strip 2k..2k+1 lit for class k (a trivially separable toy set)."""
    classes = np.asarray(classes)
    x = np.zeros((len(classes), 28, 28, 1), np.float32)
    for i, k in enumerate(classes):
        x[i, 2 * k : 2 * k + 2, :, 0] = 1.0
    return x


class StripClassifier(eqx.Module):
    """Logits = scale * mean brightness of each class's strip (one image (28, 28, 1))."""

    scale: float = 20.0

    def __call__(self, x):
        rows = x[:20, :, 0].reshape(10, 2, 28).mean(axis=(1, 2))
        return self.scale * rows


class Scale(eqx.Module):
    a: float

    def __call__(self, x):
        return self.a * x


class Flat(eqx.Module):
    a: float

    def __call__(self, x):
        return self.a * x.reshape(-1)


# ---------------------------------------------------------------------------------------------
# Van Looveren & Klaise


def test_prototype_solves_a_separable_objective_in_closed_form():
    # c = 0: the objective is, pixel by pixel, beta|d| + d^2 + w (d - r)^2 + g (x0 + d)^2 with
    # w = theta a^2 (encoder a x, prototype a q, r = q - x0) and g = gamma (1 - b)^2 (AE b x):
    # minimiser d* = soft(w r - g x0, beta / 2) / (1 + w + g), then clipped to [0, 1].
    rng = np.random.default_rng(0)
    x0 = rng.uniform(0, 1, (2, 28, 28, 1)).astype(np.float32)
    q = rng.uniform(0, 1, (10, 28, 28, 1)).astype(np.float32)
    a, b, theta, gamma, beta = 0.2, 0.5, 100.0, 1.0, 0.1
    protos = jnp.asarray(a * q.reshape(10, -1))
    method = jb.Prototype(c=0.0, beta=beta, gamma=gamma, theta=theta, kappa=0.5,
                          max_iterations=400)  # fmt: skip
    # A flat classifier never puts the target ahead by kappa: the last iterate is returned.
    flat = StripClassifier(scale=0.0)
    t = np.array([3, 8])
    res = jb.prototype_counterfactuals(flat, Scale(b), Flat(a), protos, x0, t, method)
    assert not np.any(np.asarray(res.found))
    w, g = theta * a**2, gamma * (1 - b) ** 2
    x0d = x0.astype(np.float64)
    r = q[t].astype(np.float64) - x0d
    u = w * r - g * x0d
    d = np.sign(u) * np.maximum(np.abs(u) - beta / 2, 0) / (1 + w + g)
    want = np.clip(x0d + d, 0, 1)
    np.testing.assert_allclose(np.asarray(res.x_cf), want, atol=2e-4)
    # The objective (with the L1 term) went down, to the optimum's value.
    loss = np.asarray(res.loss)
    opt = (beta * np.abs(want - x0d) + (want - x0d) ** 2 + w * (want - q[t]) ** 2
           + g * want**2).sum(axis=(1, 2, 3))  # fmt: skip
    np.testing.assert_allclose(loss[:, -1], opt, rtol=1e-4)
    assert np.all(loss[:, -1] < loss[:, 0])


def test_prototype_reaches_the_target_on_a_toy_classifier():
    y_f = np.array([0, 4, 9, 2])
    y_cf = np.array([5, 1, 3, 2 + 5])
    x0 = _strips(y_f)
    clf = StripClassifier()
    protos = jnp.asarray(0.2 * _strips(np.arange(10)).reshape(10, -1))  # encoder 0.2 x
    method = jb.Prototype(max_iterations=300)
    res = jb.prototype_counterfactuals(clf, Scale(1.0), Flat(0.2), protos, x0, y_cf, method)
    assert np.all(np.asarray(res.found))
    pred = np.asarray(jax.vmap(clf)(res.x_cf)).argmax(-1)
    np.testing.assert_array_equal(pred, y_cf)
    loss = np.asarray(res.loss)
    assert np.all(loss[:, -10:].mean(1) < 0.5 * loss[:, 0])
    # The counterfactual keeps to the two strips involved: other pixels barely move.
    moved = np.abs(np.asarray(res.x_cf) - x0)[..., 0]
    for i in range(4):
        mask = np.ones((28, 28), bool)
        mask[2 * y_f[i] : 2 * y_f[i] + 2] = mask[2 * y_cf[i] : 2 * y_cf[i] + 2] = False
        assert moved[i][mask].max() < 1e-6
    assert np.all((np.asarray(res.x_cf) >= 0) & (np.asarray(res.x_cf) <= 1))


def test_class_prototypes_are_class_means():
    x = _strips([0, 0, 1, 1, *range(2, 10)])
    x[1] *= 0.5
    p = jb.class_prototypes(Flat(1.0), x, [0, 0, 1, 1, *range(2, 10)])
    np.testing.assert_allclose(np.asarray(p[0]), 0.75 * x[0].reshape(-1), rtol=1e-6)
    with pytest.raises(ValueError, match="no images"):
        jb.class_prototypes(Flat(1.0), x[:4], [0, 0, 1, 1])


# ---------------------------------------------------------------------------------------------
# Schut et al.


class LinearEnsemble(eqx.Module):
    """M linear-softmax members ``W_m x``; ``log_probs`` = log of the averaged probabilities."""

    w: jax.Array  # (M, K, D)

    def log_probs(self, x):
        lp = jax.nn.log_softmax(self.w @ x.reshape(-1), axis=-1)
        return jax.nn.logsumexp(lp, axis=0) - jnp.log(self.w.shape[0])


def _toy_ensemble(members=3, seed=0):
    rng = np.random.default_rng(seed)
    base = StripClassifier()
    eye = jax.vmap(lambda v: base(v.reshape(28, 28, 1)))(jnp.eye(784)).T  # (10, 784)
    w = np.asarray(eye)[None] * rng.uniform(0.8, 1.2, (members, 1, 1))
    return LinearEnsemble(jnp.asarray(w + 0.01 * rng.normal(size=w.shape)))


def test_saliency_first_step_is_the_most_salient_pixel():
    ens = _toy_ensemble()
    x0 = _strips([2])
    t = 6
    res = jb.saliency_counterfactuals(ens, x0, [t], jb.Saliency(max_iterations=1))
    # The gradient of log pbar_t in closed form: mean_m p_mt (W_mt - sum_k p_mk W_mk) / pbar_t.
    w = np.asarray(ens.w, np.float64)
    logits = w @ x0.reshape(-1)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    grad = np.mean(p[:, t, None] * (w[:, t] - np.einsum("mk,mkd->md", p, w)), 0) / p[:, t].mean()
    i = int(np.argmax(np.abs(grad)))
    diff = (np.asarray(res.x_cf) - x0).reshape(-1)
    assert np.count_nonzero(diff) == 1 and diff[i] == pytest.approx(0.2 * np.sign(grad[i]))
    assert int(res.iterations) == 1 and int(res.changes[0]) == 1


def test_saliency_reaches_the_target_with_confidence():
    ens = _toy_ensemble()
    y_f = np.array([0, 3, 7])
    y_cf = np.array([9, 5, 1])
    x0 = _strips(y_f)
    res = jb.saliency_counterfactuals(ens, x0, y_cf)
    assert np.all(np.asarray(res.found))
    lp = jax.vmap(ens.log_probs)(res.x_cf)
    np.testing.assert_array_equal(np.asarray(lp).argmax(-1), y_cf)
    assert np.all(np.exp(np.asarray(lp)[np.arange(3), y_cf]) >= 0.99)
    # Moves of 1/5 from binary images: every pixel stays on the 0.2 grid in [0, 1].
    v = np.asarray(res.x_cf)
    np.testing.assert_allclose(v * 5, np.round(v * 5), atol=1e-5)
    assert np.all(np.asarray(res.changes) > 0) and int(res.iterations) < 5000


def test_trained_ensemble_flips_with_saliency():
    # A real (small) ensemble trained with fit on the toy strips, then the search on it.
    classes = np.repeat(np.arange(10), 8)
    rng = np.random.default_rng(1)
    x = np.clip(_strips(classes) + rng.uniform(0, 0.2, (80, 28, 28, 1)), 0, 1).astype(np.float32)
    ens = jm.train_ensemble(x, classes, key=jax.random.key(0), members=3, hidden=32, steps=60,
                            batch_size=40)  # fmt: skip
    acc = np.mean(np.asarray(jax.vmap(ens.probs)(x)).argmax(-1) == classes)
    assert acc == 1.0
    ent = np.asarray(jm.predictive_entropy(ens, x))
    assert np.all(ent >= 0) and np.all(ent <= np.log(10))
    res = jb.saliency_counterfactuals(ens, x[:3], [5, 6, 7], jb.Saliency(confidence=0.9))
    assert np.all(np.asarray(res.found))


# ---------------------------------------------------------------------------------------------
# bad input


def test_bad_input_is_named():
    ens = _toy_ensemble()
    x = _strips([1, 2])
    protos = jnp.zeros((10, 784))
    clf = StripClassifier()
    with pytest.raises(ValueError, match=r"x must be \(N, 28, 28, 1\)"):
        jb.saliency_counterfactuals(ens, x[..., 0], [3, 4])
    with pytest.raises(ValueError, match="y_cf must be classes in 0..9"):
        jb.saliency_counterfactuals(ens, x, [3, 10])
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="x contain NaN"):
        jb.prototype_counterfactuals(clf, Scale(1.0), Flat(1.0), protos, bad, [3, 4])
    with pytest.raises(ValueError, match="y_cf must be classes in 0..9"):
        jb.prototype_counterfactuals(clf, Scale(1.0), Flat(1.0), protos, x, [-1, 4])
    with pytest.raises(ValueError, match="prototypes must be a finite"):
        jb.prototype_counterfactuals(clf, Scale(1.0), Flat(1.0), protos[0], x, [3, 4])
    with pytest.raises(ValueError, match="Prototype.beta"):
        jb.Prototype(beta=-0.1)
    with pytest.raises(ValueError, match="Saliency.confidence"):
        jb.Saliency(confidence=1.5)
    with pytest.raises(ValueError, match="Saliency.n_changes"):
        jb.Saliency(n_changes=0)
