"""The sub-pixel transposed convolution: lax.conv_transpose's values and gradients, flax's layer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from jcausal.nn import ConvTranspose, conv_transpose

DN = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}

# (spatial rank, kernel, stride, padding, input size): every phase layout the decomposition
# meets (kernel shorter than, equal to and longer than the stride), SAME (the sub-pixel
# path), VALID and explicit pairs (mostly the dilated fallback; one with an empty output),
# and 1-3 spatial axes.
CASES = [(2, k, s, "SAME", 5) for k in (1, 2, 3, 4, 5) for s in (1, 2, 3)] + [
    (2, 3, 2, "VALID", 5),
    (2, 2, 2, "VALID", 4),
    (2, 4, 2, "pairs", 5),
    (2, 5, 3, "pairs", 1),
    (1, 4, 2, "SAME", 1),
    (1, 5, 3, "SAME", 6),
    (1, 3, 2, "VALID", 5),
    (3, 3, 2, "SAME", 4),
    (3, 4, 2, "SAME", 3),
    (3, 2, 3, "VALID", 2),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_value_and_gradients_equal_lax_conv_transpose(case):
    nd, k, s, pad, n = case
    padding = [(2, 1)] * nd if pad == "pairs" else pad
    key = jax.random.key(0)
    x = jax.random.normal(key, (2, *(n,) * nd, 3), jnp.float64)
    w = jax.random.normal(jax.random.fold_in(key, 1), (k,) * nd + (3, 4), jnp.float64)

    def loss(conv):
        def f(x, w):
            y = conv(x, w)
            return jnp.sum(jnp.sin(y) * jnp.arange(y.size).reshape(y.shape) / max(y.size, 1))

        return jax.jit(jax.value_and_grad(f, (0, 1)))

    ours = loss(lambda x, w: conv_transpose(x, w, (s,) * nd, padding))
    ref = loss(lambda x, w: lax.conv_transpose(x, w, (s,) * nd, padding, dimension_numbers=DN[nd]))
    assert (
        conv_transpose(x, w, (s,) * nd, padding).shape
        == lax.conv_transpose(x, w, (s,) * nd, padding, dimension_numbers=DN[nd]).shape
    )
    (v1, g1), (v2, g2) = ours(x, w), ref(x, w)
    np.testing.assert_allclose(v1, v2, rtol=1e-12, atol=1e-12)
    for a, b in zip(g1, g2, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)


def _convolutions(jaxpr):
    """Every conv_general_dilated equation in a jaxpr, nested calls included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            found.append(eqn)
        for value in eqn.params.values():
            inner = getattr(value, "jaxpr", value)
            if hasattr(inner, "eqns"):
                found += _convolutions(inner)
    return found


def test_same_stride_two_skips_the_zeros_of_the_dilated_input():
    # The decoders' case (k = 4, s = 2, SAME) must take the sub-pixel path: one stride-1
    # convolution of the undilated input with 3 x 3 taps and s^2 * O output channels.
    x = jnp.ones((1, 7, 7, 5))
    w = jnp.ones((4, 4, 5, 2))
    convs = _convolutions(jax.make_jaxpr(lambda x, w: conv_transpose(x, w, (2, 2)))(x, w).jaxpr)
    assert len(convs) == 1
    (conv,) = convs
    assert tuple(conv.params["lhs_dilation"]) == (1, 1)
    assert tuple(conv.params["window_strides"]) == (1, 1)
    assert conv.invars[1].aval.shape == (3, 3, 5, 8)  # 3 x 3 taps, 4 phases x 2 channels
    assert conv.outvars[0].aval.shape == (1, 7, 7, 8)


@pytest.mark.parametrize("shape", [(7, 7, 5), (2, 7, 7, 5), (3, 2, 7, 7, 5)])
def test_layer_equals_flax_conv_transpose(shape):
    ours = ConvTranspose(5, 6, (4, 4), strides=(2, 2), padding="SAME", rngs=nnx.Rngs(3))
    flax = nnx.ConvTranspose(5, 6, (4, 4), strides=(2, 2), padding="SAME", rngs=nnx.Rngs(3))
    # same initialisation from the same streams, so checkpoints carry over
    np.testing.assert_array_equal(ours.kernel[...], flax.kernel[...])
    x = jax.random.normal(jax.random.key(1), shape)
    np.testing.assert_allclose(ours(x), flax(x), rtol=1e-5, atol=1e-5)
    assert ours(x).shape == flax(x).shape == (*shape[:-3], 14, 14, 6)
    state_ours = nnx.state(ours, nnx.Param)
    state_flax = nnx.state(flax, nnx.Param)
    assert jax.tree.structure(state_ours) == jax.tree.structure(state_flax)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"transpose_kernel": True},
        {"kernel_dilation": (2, 2)},
        {"padding": "CIRCULAR"},
        {"use_bias": False},
        {"mask": np.tril(np.ones((3, 3)))[:, :, None, None] * np.ones((1, 1, 2, 3))},
    ],
    ids=["transpose_kernel", "kernel_dilation", "circular", "no_bias", "mask"],
)
def test_layer_options_it_does_not_cover_are_flax_s(kwargs):
    ours = ConvTranspose(2, 3, (3, 3), strides=(2, 2), rngs=nnx.Rngs(0), **kwargs)
    flax = nnx.ConvTranspose(2, 3, (3, 3), strides=(2, 2), rngs=nnx.Rngs(0), **kwargs)
    x = jax.random.normal(jax.random.key(2), (2, 5, 5, 2))
    np.testing.assert_allclose(ours(x), flax(x), rtol=1e-5, atol=1e-5)


def test_bad_shapes_are_named():
    x = jnp.ones((1, 5, 5, 3))
    with pytest.raises(ValueError, match="x has 3 channels, the kernel expects 4"):
        conv_transpose(x, jnp.ones((4, 4, 4, 2)), (2, 2))
    with pytest.raises(ValueError, match="spatial axes"):
        conv_transpose(x, jnp.ones((4, 4, 3, 2)), (2,))
    with pytest.raises(ValueError, match="padding must be"):
        conv_transpose(x, jnp.ones((4, 4, 3, 2)), (2, 2), "FULL")
