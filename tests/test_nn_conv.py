"""The loop-friendly convolution: same values and gradients as lax's, channel-last backward."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jcausal.nn.conv import conv_general_dilated

DN = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}

CASES = [
    # (spatial rank, kernel, stride, padding, input dilation, kernel dilation)
    (2, 3, 1, "SAME", 1, 1),
    (2, 3, 2, ((1, 1), (1, 1)), 1, 1),  # the UNet's downsampling
    (2, 4, 2, ((1, 1), (1, 1)), 1, 1),  # the MNIST encoder's
    (2, 3, 3, ((0, 1), (1, 0)), 2, 2),  # stride 3 not dividing the dilated input
    (2, 4, 1, ((2, 1), (1, 2)), 2, 1),  # a transposed convolution's input dilation
    (2, 3, 1, ((2, 0), (0, 1)), 1, 2),  # asymmetric padding, atrous kernel
    (1, 5, 3, "SAME", 1, 1),
    (3, 3, 2, "SAME", 1, 1),
]


@pytest.mark.parametrize("case", CASES)
def test_value_and_gradients_equal_lax(case):
    nd, k, stride, pad, ld, rd = case
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (2, *(7,) * nd, 3))
    w = jax.random.normal(jax.random.fold_in(key, 1), (k,) * nd + (3, 4))

    def loss(conv):
        def f(x, w):
            y = conv(x, w, (stride,) * nd, pad, (ld,) * nd, (rd,) * nd, DN[nd])
            return jnp.sum(jnp.sin(y) * jnp.arange(y.size).reshape(y.shape) / y.size)

        return jax.value_and_grad(f, (0, 1))

    want = loss(lax.conv_general_dilated)(x, w)
    got = loss(conv_general_dilated)(x, w)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)


def test_other_layouts_take_lax_path():
    x = jnp.ones((2, 3, 6, 6))
    w = jnp.ones((4, 3, 3, 3))
    want = jax.grad(lambda x: lax.conv_general_dilated(x, w, (1, 1), "SAME").sum())
    got = jax.grad(lambda x: conv_general_dilated(x, w, (1, 1), "SAME").sum())
    np.testing.assert_allclose(got(x), want(x))
    with pytest.raises(ValueError, match="String padding"):
        conv_general_dilated(
            jnp.ones((1, 5, 5, 1)), jnp.ones((3, 3, 1, 1)), (1, 1), "SAME", (2, 2), None, DN[2]
        )


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's layout passes")
def test_backward_convolutions_stay_channel_last_inside_a_loop():
    """Inside a while loop lax's backward convs keep non-canonical labels (slow on CPU)."""
    w1 = jnp.ones((3, 3, 1, 4)) * 0.1
    w2 = jnp.ones((3, 3, 4, 4)) * 0.1

    def labels(conv):
        def net(x, ws):
            h = jnp.tanh(conv(x, ws[0], (1, 1), "SAME", None, None, DN[2]))
            return jnp.sum(conv(h, ws[1], (2, 2), ((1, 1), (1, 1)), None, None, DN[2]) ** 2)

        def loop(ws, x):
            step = lambda i, ws: jax.tree.map(
                lambda a, g: a - 1e-3 * g, ws, jax.grad(net, 1)(x, ws)
            )
            return lax.fori_loop(0, 3, step, ws)

        hlo = jax.jit(loop).lower((w1, w2), jnp.ones((2, 8, 8, 1))).compile().as_text()
        return re.findall(r"dim_labels=([^,\s]+)", hlo)

    ours = labels(conv_general_dilated)
    assert len(ours) >= 5 and set(ours) == {"b01f_01io->b01f"}, ours
    # The reason this module exists; if XLA learns to canonicalise inside loops, this fails
    # and the custom VJP can go.
    assert set(labels(lax.conv_general_dilated)) != {"b01f_01io->b01f"}
