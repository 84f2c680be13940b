"""A resumed run in a new process recognises its optimiser (Deep SCM resume, issue 10 §4)."""

import equinox as eqx
import jax.numpy as jnp
import optax

from jcausal.train.checkpoint import describe_optimizer_change, optimizer_fingerprint


def _module_with_a_static_function():
    # A fresh function object each call: like flax nnx modules, whose static fields hold
    # functions (promote_dtype, dot_general) printed with a per-process memory address.
    def promote_dtype(x):
        return x

    class Layer(eqx.Module):
        w: jnp.ndarray
        fn: object = eqx.field(static=True)

    return Layer(jnp.ones(3), promote_dtype)


def test_fingerprint_ignores_memory_addresses():
    tx = optax.adam(1e-3)
    a, b = _module_with_a_static_function(), _module_with_a_static_function()
    fa = optimizer_fingerprint(tx, tx.init(a))
    fb = optimizer_fingerprint(tx, tx.init(b))
    assert " at 0x" not in fa["structure"]
    assert describe_optimizer_change(fa, fb) is None
    # a checkpoint written before addresses were dropped still matches
    old = dict(fa, structure=fa["structure"].replace("promote_dtype", "promote_dtype at 0x7f00"))
    assert describe_optimizer_change(old, fb) is None
    # a different optimiser is still told apart
    sgd = optax.sgd(1e-3)
    assert "different structure" in describe_optimizer_change(
        fa, optimizer_fingerprint(sgd, sgd.init(b))
    )
