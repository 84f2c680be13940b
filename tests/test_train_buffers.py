"""Buffers in `fit`: leaves the loss updates without a gradient (running statistics, EMA codes)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jcausal.train import Buffer, buffer, fit, unfreeze

KW = dict(batch_size=16, key=jax.random.key(0), progress=False, log_every=5)


def _data():
    return np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32) + 2.0


def _running_mean(p, batch, key):
    new = {**p, "mean": 0.9 * p["mean"] + 0.1 * jnp.mean(batch, 0)}
    # The buffer also enters the loss: its gradient must be stopped, so `w` alone is trained.
    loss = jnp.mean((batch - p["w"]) ** 2) + jnp.sum(p["mean"] ** 2)
    return loss, {}, new


def _reference(steps):
    """The buffer's recursion in numpy over the same batches as fit (epoch permutations)."""
    data = _data()
    data_key = jax.random.split(jax.random.key(0), 3)[0]
    ref = np.zeros(3)
    for s in range(steps):
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(data_key, s // 4), 64))
        batch = data[perm[(s % 4) * 16 : (s % 4 + 1) * 16]]
        ref = 0.9 * ref + 0.1 * batch.mean(0)
    return ref


def test_buffer_follows_the_loss_and_the_optimiser_never_moves_it():
    params = {"w": jnp.zeros(3), "mean": buffer(jnp.zeros(3))}
    out, _ = fit(_running_mean, params, _data(), optimizer=optax.adamw(0.1, weight_decay=0.5),
                 steps=12, **KW)  # fmt: skip
    assert isinstance(out["mean"], Buffer)
    np.testing.assert_allclose(out["mean"].value, _reference(12), rtol=1e-5)
    # w sees only its own gradient (the buffer's term in the loss has none): plain fit agrees.
    alone, _ = fit(lambda p, b, k: jnp.mean((b - p["w"]) ** 2), {"w": jnp.zeros(3)}, _data(),
                   optimizer=optax.adamw(0.1, weight_decay=0.5), steps=12, **KW)  # fmt: skip
    np.testing.assert_allclose(out["w"], alone["w"], rtol=1e-6)


def test_buffer_without_an_update_stays_put_under_weight_decay():
    params = {"w": jnp.zeros(3), "mean": buffer(jnp.ones(3))}
    out, _ = fit(lambda p, b, k: jnp.mean((b - p["w"]) ** 2) + jnp.sum(p["mean"]), params,
                 _data(), optimizer=optax.adamw(0.1, weight_decay=0.5), steps=10, **KW)  # fmt: skip
    np.testing.assert_array_equal(out["mean"].value, np.ones(3))


def test_buffer_resumes_bit_identically(tmp_path):
    params = {"w": jnp.zeros(3), "mean": buffer(jnp.zeros(3))}
    kw = dict(optimizer=optax.adam(0.1), checkpoint_dir=tmp_path, checkpoint_every=5, **KW)
    fit(_running_mean, params, _data(), steps=10, **kw)
    resumed, h = fit(_running_mean, params, _data(), steps=20, **kw)
    assert h.start_step == 10
    straight, _ = fit(_running_mean, params, _data(), steps=20, optimizer=optax.adam(0.1), **KW)
    leaves = jax.tree_util.tree_leaves
    for a, b in zip(leaves(resumed), leaves(straight), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(unfreeze(resumed)["mean"], _reference(20), rtol=1e-5)


def test_nan_in_a_buffer_update_stops_the_run():
    params = {"w": jnp.zeros(3), "mean": buffer(jnp.zeros(3))}

    def loss(p, b, k):
        return jnp.mean((b - p["w"]) ** 2), {}, {**p, "mean": p["mean"] + jnp.nan}

    with pytest.raises(FloatingPointError, match="step"):
        fit(loss, params, _data(), optimizer=optax.adam(0.1), steps=5, **KW)


def test_bad_buffer_use_is_named():
    data = _data()
    opt = optax.adam(0.1)
    plain = {"w": jnp.zeros(3), "mean": jnp.zeros(3)}
    with pytest.raises(ValueError, match="no parameter is marked as a buffer"):
        fit(_running_mean, plain, data, optimizer=opt, steps=2, **KW)
    marked = {"w": jnp.zeros(3), "mean": buffer(jnp.zeros(3))}
    with pytest.raises(ValueError, match="structure of the parameters"):
        fit(lambda p, b, k: (jnp.sum(p["w"] ** 2), {}, {"w": p["w"]}), marked, data,
            optimizer=opt, steps=2, **KW)  # fmt: skip
    with pytest.raises(ValueError, match="must keep it"):
        fit(lambda p, b, k: (jnp.sum(p["w"] ** 2), {}, {**p, "mean": jnp.zeros(4)}), marked,
            data, optimizer=opt, steps=2, **KW)  # fmt: skip
    counter = {"w": jnp.zeros(3), "n": buffer(jnp.zeros((), jnp.int32))}
    with pytest.raises(ValueError, match="float arrays"):
        fit(lambda p, b, k: jnp.sum(p["w"] ** 2), counter, data, optimizer=opt, steps=2, **KW)
    with pytest.raises(ValueError, match="tuple of length 4"):
        fit(lambda p, b, k: (jnp.sum(p["w"] ** 2), {}, p, p), marked, data, optimizer=opt,
            steps=2, **KW)  # fmt: skip
