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


def test_int_and_float_settings_agree_but_values_do_not():
    # optax turns some int constants into floats on first use: 100 and 100.0 are one setting.
    params = jnp.ones(3)

    def adam(steps):
        return optax.adam(optax.cosine_decay_schedule(1e-3, decay_steps=steps))

    f_int = optimizer_fingerprint(adam(100), adam(100).init(params))
    f_float = optimizer_fingerprint(adam(100.0), adam(100.0).init(params))
    assert f_int["settings"] != f_float["settings"]  # the raw fingerprints do differ
    assert describe_optimizer_change(f_int, f_float) is None
    changed = describe_optimizer_change(
        f_int, optimizer_fingerprint(adam(200), adam(200).init(params))
    )
    assert "settings differ" in changed
