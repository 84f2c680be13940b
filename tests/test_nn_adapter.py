"""nn.Pure: randomness is explicit (a key per call), so dropout masks change between steps."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jcausal.nn import Pure
from jcausal.train import fit


class _Net(nnx.Module):
    def __init__(self, rngs):
        self.lin = nnx.Linear(16, 64, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)  # holds its own random stream

    def __call__(self, x):
        return self.drop(self.lin(x))


def _net():
    return Pure(_Net(nnx.Rngs(0, dropout=1)))


def _mask(net, x, key):
    return np.asarray(jax.jit(lambda p, x, k: p(x, key=k))(net, x, key) != 0)


def test_masks_differ_across_keys_and_repeat_for_equal_keys():
    net, x = _net(), jnp.ones((4, 16))
    a, b = _mask(net, x, jax.random.key(0)), _mask(net, x, jax.random.key(1))
    assert (a != b).any()
    np.testing.assert_array_equal(a, _mask(net, x, jax.random.key(0)))
    # Dropout at rate 0.5 keeps about half the units (256 draws: 5 sigma is +-0.16).
    assert 0.34 < a.mean() < 0.66
    # The kept units are scaled by 1 / (1 - rate): the eval network times 2.
    full = np.asarray(net.eval()(x))
    out = np.asarray(net(x, key=jax.random.key(0)))
    np.testing.assert_allclose(out[a], 2 * full[a], rtol=1e-6)


def test_call_without_key_that_draws_is_an_error_and_eval_is_deterministic():
    net, x = _net(), jnp.ones((2, 16))
    with pytest.raises(ValueError, match="drew random numbers .* no key was given"):
        jax.jit(lambda p, x: p(x))(net, x)
    ev = net.eval()
    y1, y2 = jax.jit(lambda p, x: p(x))(ev, x), ev(x)
    np.testing.assert_array_equal(y1, y2)
    assert (np.asarray(y1) != 0).all()  # no unit dropped
    # Back to training mode: draws again.
    assert (_mask(ev.train(), x, jax.random.key(3)) == 0).any()


def test_training_draws_a_new_mask_every_step():
    x = jnp.ones((8, 16))
    weights = jnp.arange(8 * 64.0).reshape(8, 64)

    def loss(net, batch, key):
        y = net(batch, key=key)
        pattern = jnp.sum((y != 0) * weights)  # identifies the mask
        return jnp.mean(y**2), {"pattern": pattern}

    _, hist = fit(loss, _net(), x, optimizer=optax.sgd(1e-3), steps=12, batch_size=8,
                  key=jax.random.key(0), log_every=1, progress=False)  # fmt: skip
    patterns = [r["pattern"] for r in hist.train]
    assert len(set(patterns)) == len(patterns) == 12


def test_equinox_network_gets_the_key():
    mlp = eqx.nn.Sequential([eqx.nn.Linear(3, 3, key=jax.random.key(0)), eqx.nn.Dropout(0.5)])
    x = jnp.ones(3)
    a = Pure(mlp)(x, key=jax.random.key(0))
    b = Pure(mlp)(x, key=jax.random.key(1))
    assert (np.asarray(a) != np.asarray(b)).any()
