"""Pytree activations of Stages and the diffusion UNet cut into stages (jcausal.modularity)."""

import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jcausal.modularity import Stages, hybridise, hybrids, unet_stages
from jcausal.nn import Pure, UNet

T = 7.0


def _random_unet(seed: int, **kw) -> Pure:
    """A UNet with random weights everywhere.

    Its own initialisation zeroes the last convolutions (an untrained UNet predicts 0). Built
    from shapes only: eager flax initialisation is slow on CPU (one compiled op per leaf).
    """
    graphdef, state = nnx.split(nnx.eval_shape(lambda: UNet(1, base=8, rngs=nnx.Rngs(0), **kw)))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return jax.random.key(0)
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            return np.zeros(leaf.shape, leaf.dtype)
        fan = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 25
        mean = 1.0 if "scale" in jax.tree_util.keystr(path) else 0.0
        return (mean + rng.normal(size=leaf.shape) / np.sqrt(fan)).astype(leaf.dtype)

    return Pure(nnx.merge(graphdef, jax.tree_util.tree_map_with_path(fill, state)))


@pytest.fixture(scope="module")
def unet():
    return _random_unet(5, mults=(1, 2), num_res=1, dropout=0.0)


@pytest.fixture(scope="module")
def images():
    return jax.random.normal(jax.random.key(1), (2, 10, 10, 1))


def test_unet_stages_compose_to_the_network(unet, images):
    st = unet_stages(unet, T)
    assert st.names == (
        "in", "d0.0", "d0.down", "d1.0", "mid", "u1.0", "u1.1", "u1.up", "u0.0", "u0.1", "out"
    )  # fmt: skip
    np.testing.assert_allclose(
        jax.jit(jax.vmap(st))(images),
        jax.jit(lambda x: unet.eval()(x, T))(images),
        rtol=1e-5,
        atol=1e-5,
    )
    acts = jax.eval_shape(st.activations, images[0])
    assert acts["mid"]["h"].shape == (5, 5, 16) and len(acts["mid"]["skips"]) == 4
    assert acts["u0.1"]["skips"] == () and acts["out"].shape == (10, 10, 1)
    assert st.channels(images[0], "mid") == 16
    # with skips=True the pending skips' channels count too: 16 + 8 + 8 + 8 + 16 at "mid"
    assert unet_stages(unet, T, skips=True).channels(images[0], "mid") == 56


LAYERS = ("in", "mid", "u1.1", "u0.1")  # pending skips: 0, 4, 2, 0


def test_empty_set_is_receiver_full_cut_is_donor(unet, images):
    x1, x2 = images, images[::-1]
    # skips=True differs only where skips are pending
    cases = [(layer, False) for layer in LAYERS] + [("mid", True), ("u1.1", True)]
    sts = {skips: unet_stages(unet, T, skips=skips) for skips in (False, True)}

    @jax.jit
    def run(a, b):  # every case in one compiled call; hybrids batches pairs and channel sets
        out = {}
        for layer, skips in cases:
            c = sts[skips].channels(a[0], layer)
            masks = np.arange(2)[:, None] > np.zeros(c)  # no channel, every channel
            out[layer, skips] = hybrids(sts[skips], a, b, layer, masks)
        return out, jax.vmap(sts[False])(a)

    out, g = run(x1, x2)
    for (layer, skips), h in out.items():
        assert h.shape == (2, 2, 10, 10, 1)
        np.testing.assert_allclose(h[:, 0], g, rtol=1e-5, atol=1e-5)  # no channel: G(z1)
        if skips or layer in ("in", "u0.1"):  # a cut of the network: the donor's output
            np.testing.assert_allclose(h[:, 1], g[::-1], rtol=1e-5, atol=1e-5)
        else:  # h from the donor, earlier activations (pending skips) from the receiver
            assert float(jnp.max(jnp.abs(h[:, 1] - g[::-1]))) > 1e-3


class _Fixed(nnx.Module):
    """Stands in for the UNet's middle block: outputs a fixed activation."""

    def __init__(self, h):
        self.h = nnx.Variable(h)

    def __call__(self, h, emb):
        return self.h[...][None]


def test_all_channels_of_mid_is_the_networks_own_counterfactual(unet, images):
    st = unet_stages(unet, T)
    masks = np.eye(16, dtype=bool)[[0, 7]]

    @jax.jit
    def run(x1, x2):
        h2 = st.upto(x2, "mid")["h"]
        # Independent of the stage code: the network's own forward pass with its middle
        # block replaced by one that outputs the donor's middle activation.
        net = unet.eval().module
        net.encoder.mid = _Fixed(h2)
        full = hybridise(st, x1, x2, "mid", np.ones(16, bool))
        return Pure(net)(x1, T), full, hybridise(st, x1, x2, "mid", masks), st(x1)

    expected, full, single, g1 = run(*images)
    np.testing.assert_allclose(full, expected, rtol=1e-5, atol=1e-5)
    for h in single:  # one channel from the donor: neither source
        assert 1e-5 < float(jnp.max(jnp.abs(h - g1)))
        assert 1e-5 < float(jnp.max(jnp.abs(h - expected)))


def test_unet_stages_refuse_bad_input(unet, images):
    with pytest.raises(ValueError, match="needs a jcausal.nn.UNet"):
        unet_stages(jnp.sin, T)
    with pytest.raises(ValueError, match="scalar"):
        unet_stages(unet, jnp.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="unconditional"):
        unet_stages(unet, T, y=3)
    cond = _random_unet(1, mults=(1,), num_res=1, num_classes=4)
    with pytest.raises(ValueError, match="class-conditional"):
        unet_stages(cond, T)
    with pytest.raises(ValueError, match="not a class"):
        unet_stages(cond, T, y=4)
    with pytest.raises(ValueError, match="one integer"):
        unet_stages(cond, T, y=[1, 2])
    with pytest.raises(ValueError, match=r"one image \(H, W, 1\)"):
        unet_stages(unet, T)(images)  # a batch: use hybrids / vmap
    st = unet_stages(cond, T, y=2)
    x = images[0]
    np.testing.assert_allclose(
        jax.jit(lambda a: st(a))(x),
        jax.jit(lambda a: cond.eval()(a, T, 2))(x),
        rtol=1e-5,
        atol=1e-5,
    )
    with pytest.raises(ValueError, match=r"\[16\] out of range.*16 channels"):
        hybridise(unet_stages(unet, T), x, x, "mid", [16])


class _Pair(typing.NamedTuple):
    a: jax.Array
    b: jax.Array


def test_pytree_activations_hybridise_only_the_selected_arrays():
    # Layer "ab" outputs a named tuple; only "a" (3 channels) is hybridised, "b" rides along.
    st = Stages(
        [
            ("ab", lambda z: _Pair(jnp.tanh(z[:3]), z[3:] ** 2), "a"),
            ("out", lambda p: jnp.concatenate([p.a * 2.0, p.b])),
        ]
    )
    z1, z2 = jnp.arange(5.0), -jnp.arange(5.0) - 1.0
    assert st.channels(z1, "ab") == 3
    h = hybridise(st, z1, z2, "ab", [1])
    expected = jnp.array([0.0, 2 * jnp.tanh(-2.0), 2 * jnp.tanh(2.0), 9.0, 16.0])
    np.testing.assert_allclose(h, expected, rtol=1e-6)
    both = Stages([("ab", st.fns[0], ("b", "a")), ("out", st.fns[1])])
    h = hybridise(both, z1, z2, "ab", [0, 2])  # b's channel 0 and a's channel 0
    np.testing.assert_allclose(h, [2 * jnp.tanh(-1.0), 2 * jnp.tanh(1.0), 2 * jnp.tanh(2.0),
                                   16.0, 16.0], rtol=1e-6)  # fmt: skip
    with pytest.raises(ValueError, match="no entry 'c'"):
        Stages([("ab", st.fns[0], "c"), ("out", st.fns[1])]).channels(z1, "ab")
    with pytest.raises(ValueError, match="not an array with a channel axis"):
        Stages([("ab", st.fns[0]), ("out", st.fns[1])]).channels(z1, "ab")
    with pytest.raises(ValueError, match="select must be a key"):
        Stages([("ab", st.fns[0], ()), ("out", st.fns[1])])
