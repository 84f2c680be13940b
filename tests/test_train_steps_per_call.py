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


def _grad_jaxpr(conv, x, w):
    return jax.make_jaxpr(jax.grad(lambda x, w: jnp.sum(conv(x, w) ** 2), argnums=(0, 1)))(x, w)


def test_slow_convolutions_are_read_from_the_step():
    from jax import lax

    from jcausal.nn import conv_general_dilated
    from jcausal.train.step import loop_slow_convolutions

    x, w = jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 4))
    dims = ("NHWC", "HWIO", "NHWC")

    def plain(x, w):
        return lax.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=dims)

    def fast(x, w):
        return conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=dims)

    # The forward convolution is channel-last; JAX's own input and kernel gradients are not.
    assert loop_slow_convolutions(jax.make_jaxpr(plain)(x, w)) == 0
    assert loop_slow_convolutions(_grad_jaxpr(plain, x, w)) == 2
    # jcausal's convolution writes both gradients channel-last (also when nested in a jit).
    assert loop_slow_convolutions(_grad_jaxpr(fast, x, w)) == 0
    assert loop_slow_convolutions(_grad_jaxpr(jax.jit(plain), x, w)) == 2
    # The rule given the step: bare on CPU only with a slow convolution in it.
    conv = {"w": w}
    assert bare_step_is_faster(conv, backend="cpu", step=_grad_jaxpr(plain, x, w))
    assert not bare_step_is_faster(conv, backend="cpu", step=_grad_jaxpr(fast, x, w))
    assert not bare_step_is_faster(conv, backend="gpu", step=_grad_jaxpr(plain, x, w))
    # Channel-first (equinox) is slow forward already.
    assert loop_slow_convolutions(jax.make_jaxpr(_conv())(jnp.ones((1, 6, 6)))) == 1


def _flax_conv(fast: bool):
    from flax import nnx

    from jcausal.nn import conv_general_dilated

    kw = {"conv_general_dilated": conv_general_dilated} if fast else {}
    return nnx.Conv(1, 2, (3, 3), padding=1, rngs=nnx.Rngs(0), **kw)


def _run_flax(fast: bool, **kw):
    from flax import nnx

    model = _flax_conv(fast)
    graph, params = nnx.split(model)
    calls = []

    def loss(p, batch, key):
        return jnp.mean(nnx.merge(graph, p)(batch) ** 2)

    x = jax.random.normal(KEY, (8, 5, 5, 1))
    out, hist = fit(loss, params, x, optimizer=optax.sgd(1e-2), steps=12, batch_size=4,
                    key=KEY, log_every=6, progress=calls.append, **kw)  # fmt: skip
    return out, hist, calls


def test_fast_convolutions_keep_the_loop_on_cpu():
    if jax.default_backend() != "cpu":
        return
    _, _, calls = _run_flax(fast=False)
    assert calls == [1] * 12  # JAX's gradients of nnx.Conv: one bare step per call
    fast, hist, calls = _run_flax(fast=True)
    assert calls == [6, 6]  # every convolution channel-last: the compiled loop
    bare, hist_bare, _ = _run_flax(fast=True, steps_per_call=1)
    np.testing.assert_allclose(hist.loss, hist_bare.loss, rtol=1e-6, atol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(fast), jax.tree_util.tree_leaves(bare), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12)


def test_one_dimensional_convolutions_are_checked_too():
    # A 1-D kernel is 3-D: the pre-filter must still read the step's convolutions.
    from flax import nnx

    from jcausal.nn import conv_general_dilated

    if jax.default_backend() != "cpu":
        return
    conv = eqx.filter(eqx.nn.Conv1d(2, 3, 3, key=KEY), eqx.is_inexact_array)
    assert bare_step_is_faster(conv, backend="cpu")  # (no step given: the pre-filter alone)

    def run(fast):
        kw = {"conv_general_dilated": conv_general_dilated} if fast else {}
        graph, params = nnx.split(nnx.Conv(2, 3, (3,), rngs=nnx.Rngs(0), **kw))
        calls = []

        def loss(p, batch, key):
            return jnp.mean(nnx.merge(graph, p)(batch) ** 2)

        x = jax.random.normal(KEY, (8, 7, 2))
        out, _ = fit(loss, params, x, optimizer=optax.sgd(1e-2), steps=12, batch_size=4,
                     key=KEY, log_every=6, progress=calls.append)  # fmt: skip
        return out, calls

    slow, calls = run(fast=False)
    assert calls == [1] * 12  # JAX's gradient of a 1-D nnx.Conv: one bare step per call
    fast, calls = run(fast=True)
    assert calls == [6, 6]
    for a, b in zip(jax.tree_util.tree_leaves(slow), jax.tree_util.tree_leaves(fast), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
