"""The score UNet and the noise-conditioned classifier: shapes, per-image independence, dropout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jcausal.nn import NoisyClassifier, Pure, UNet

# Building a network (flax's eager initialisation compiles each small op) and one call per
# shape: compilation is the time, so XLA's optimisations are off (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("fast_compile")


def _perturbed(net, seed=0):
    """A network whose zero-initialised layers are nonzero (as after training)."""
    state = nnx.state(net, nnx.Param)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [
        x + 0.05 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys, strict=True)
    ]
    nnx.update(net, jax.tree_util.tree_unflatten(treedef, leaves))
    return net


@pytest.fixture(scope="module")
def unet():
    return Pure(_perturbed(UNet(base=8, rngs=nnx.Rngs(0))))


@jax.jit
def _call(net, x, t):
    return net(x, t)


@jax.jit
def _call_key(net, x, t, key):
    return net(x, t, key=key)


def _images(n, shape=(28, 28, 1), seed=1):
    return jax.random.normal(jax.random.key(seed), (n, *shape))


def test_unet_shapes_and_per_image_independence(unet):
    net = unet.eval()
    x, t = _images(3), jnp.array([0, 500, 999])
    out = _call(net, x, t)
    assert out.shape == x.shape
    # One image (the engine vmaps per unit) gives the same as its row of a batch: no batch
    # statistics mix units.
    one = _call(net, x[1], 500)
    np.testing.assert_allclose(one, out[1], rtol=1e-4, atol=1e-5)
    vm = jax.jit(jax.vmap(lambda n, x, t: n(x, t), in_axes=(None, 0, 0)))(net, x, t)
    np.testing.assert_allclose(vm, out, rtol=1e-4, atol=1e-5)
    # The diffusion time is an input that matters.
    assert float(jnp.max(jnp.abs(_call(net, x[1], 10) - one))) > 1e-3


def test_unet_odd_sizes_and_channels_untrained_is_zero():
    # 13 -> 7 -> 4 on the way down; the up path resizes back to each skip's exact size.
    net = Pure(UNet(in_channels=2, base=8, mults=(1, 2, 2), rngs=nnx.Rngs(1))).eval()
    out = _call(net, _images(2, (13, 13, 2)), jnp.array([3, 4]))
    assert out.shape == (2, 13, 13, 2)
    # The output convolution starts at zero: an untrained network predicts eps = 0.
    assert float(jnp.max(jnp.abs(out))) == 0.0


def test_class_conditional_unet_needs_y():
    net = Pure(_perturbed(UNet(base=8, num_classes=10, dropout=0.0, rngs=nnx.Rngs(3))))
    x = _images(2)
    call = jax.jit(lambda n, y: n(x, 5, y=y))
    a, b = call(net, jnp.array([1, 1])), call(net, jnp.array([1, 2]))
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5)
    assert float(jnp.max(jnp.abs(a[1] - b[1]))) > 1e-4
    with pytest.raises(ValueError, match="pass y"):
        net(x, 5)


def test_dropout_takes_an_explicit_key(unet):
    x, t = _images(2), jnp.array([100, 200])
    k1, k2 = jax.random.key(10), jax.random.key(11)
    # Inside jit, where a module-held rng stream would replay one mask on every call.
    a, b, c = _call_key(unet, x, t, k1), _call_key(unet, x, t, k1), _call_key(unet, x, t, k2)
    np.testing.assert_array_equal(a, b)
    assert float(jnp.max(jnp.abs(a - c))) > 1e-4
    with pytest.raises(ValueError, match="no key was given"):
        _call(unet, x, t)
    # Evaluation mode is deterministic and differs from a dropped-out call.
    e = _call(unet.eval(), x, t)
    assert float(jnp.max(jnp.abs(e - a))) > 1e-4


def test_noisy_classifier_logits_and_regression():
    clf = Pure(_perturbed(NoisyClassifier(10, base=8, rngs=nnx.Rngs(4))))
    x = _images(3)
    logits = _call(clf, x, jnp.array([1, 2, 3]))
    assert logits.shape == (3, 10)
    np.testing.assert_allclose(_call(clf, x[2], 3), logits[2], rtol=1e-4, atol=1e-5)
    reg = Pure(NoisyClassifier(out_dim=2, base=8, rngs=nnx.Rngs(5)))
    assert _call(reg, x, 0).shape == (3, 2)
    with pytest.raises(ValueError, match="num_classes"):
        NoisyClassifier(None, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="multiple of 8"):
        UNet(base=12, rngs=nnx.Rngs(0))
