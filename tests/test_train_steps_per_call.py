"""fit's default steps per compiled call: a bare step for convolutional networks on CPU."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jcausal.train import fit
from jcausal.train.step import bare_step_is_faster

KEY = jax.random.PRNGKey(0)


def _conv():
    return eqx.nn.Conv2d(1, 2, 3, padding=1, key=KEY)


def _run(model, x, **kw):
    calls = []

    def loss(m, batch, key):
        return jnp.mean(jax.vmap(m)(batch) ** 2)

    params, hist = fit(loss, model, x, optimizer=optax.sgd(1e-2), steps=12, batch_size=4,
                       key=KEY, log_every=6, progress=calls.append, **kw)  # fmt: skip
    return params, hist, calls


def test_rule():
    conv = eqx.filter(_conv(), eqx.is_inexact_array)
    assert bare_step_is_faster(conv, backend="cpu")
    assert not bare_step_is_faster(conv, backend="gpu")
    dense = eqx.filter(eqx.nn.MLP(3, 2, 8, 2, key=KEY), eqx.is_inexact_array)
    assert not bare_step_is_faster(dense, backend="cpu")


def test_conv_runs_bare_steps_with_the_same_result():
    x = jax.random.normal(KEY, (8, 1, 5, 5))
    auto, hist_auto, calls_auto = _run(_conv(), x)
    looped, hist_loop, calls_loop = _run(_conv(), x, steps_per_call=6)
    assert calls_auto == [1] * 12  # one compiled call per step
    assert calls_loop == [6, 6]
    # Grouping steps differently does not change the training.
    np.testing.assert_allclose(hist_auto.loss, hist_loop.loss, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(auto.weight, looped.weight, rtol=1e-6, atol=1e-12)


def test_dense_keeps_the_loop():
    mlp = eqx.nn.MLP(3, 2, 8, 1, key=KEY)
    _, _, calls = _run(mlp, jax.random.normal(KEY, (8, 3)))
    assert calls == [6, 6]
