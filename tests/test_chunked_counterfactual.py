"""counterfactual(..., chunk_size=c): the same answer as one pass, chunk by chunk."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jcausal as jc


def _f(p, pa):
    return jnp.tanh(p * pa["x"]) + 0.5 * pa["x"]


def _g(p, pa):
    return p @ jnp.stack([pa["x"], pa["y"]])


def _logits(p, pa):
    return p * jnp.stack([0.0, pa["y"], pa["z"]])


def _chain():  # module-level functions: one compilation per shape for the whole file
    return jc.SCM(
        x=jc.Root(distrax.Normal(0.0, 1.0)),
        y=jc.Additive(_f, 1.5, distrax.Normal(0.0, 1.0), ["x"]),
        z=jc.Additive(_g, jnp.array([0.3, -0.7]), distrax.Normal(0.0, 0.5), ["x", "y"]),
        c=jc.GumbelMax(_logits, 1.0, 3, ["y", "z"]),
    )


# 7 does not divide 100 (the last chunk overlaps), 100 is one chunk, 1 the extreme.
@pytest.mark.parametrize("chunk", [1, 7, 100])
def test_chunked_equals_unchunked_exactly(chunk):
    scm = _chain()
    obs = jc.sample(jax.random.key(0), scm, 100)
    key = jax.random.key(1)
    shift = jnp.linspace(-1.0, 1.0, 100)  # one value per unit: travels with its unit
    for iv in ({"x": jc.Shift(1.0)}, {"x": jc.Shift(shift)}, {"y": jc.Hard(shift)}):
        ref = jc.counterfactual(scm, obs, iv, key=key)
        out = jc.counterfactual(scm, obs, iv, key=key, chunk_size=chunk)
        for node in scm.order:
            np.testing.assert_array_equal(out[node], ref[node], err_msg=node)
    # Monte Carlo draws over the Gumbel-max posterior: the same draws, chunked or not.
    ref = jc.counterfactual(scm, obs, {"y": jc.Shift(0.5)}, key=key, num_samples=3)
    out = jc.counterfactual(scm, obs, {"y": jc.Shift(0.5)}, key=key, num_samples=3,
                            chunk_size=chunk)  # fmt: skip
    for node in scm.order:
        np.testing.assert_array_equal(out[node], ref[node], err_msg=node)


def test_chunked_values_are_the_closed_form():
    scm = _chain()
    obs = jc.sample(jax.random.key(0), scm, 50)
    cf = jc.counterfactual(scm, obs, {"x": jc.Shift(1.0)}, key=jax.random.key(2), chunk_size=8)
    x, y = np.asarray(obs["x"]), np.asarray(obs["y"])
    u_y = y - (np.tanh(1.5 * x) + 0.5 * x)
    x1 = x + 1.0
    np.testing.assert_allclose(cf["x"], x1, rtol=1e-12)
    np.testing.assert_allclose(cf["y"], np.tanh(1.5 * x1) + 0.5 * x1 + u_y, rtol=1e-12)


def test_bad_chunk_size_is_named():
    scm = _chain()
    obs = jc.sample(jax.random.key(0), scm, 10)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
            jc.counterfactual(scm, obs, {"x": jc.Shift(1.0)}, key=jax.random.key(1),
                              chunk_size=bad)  # fmt: skip
    eq = jc.EquilibriumSCM(
        a=jc.Additive(lambda p, pa: p * pa["b"], 0.5, distrax.Normal(0.0, 1.0), ["b"]),
        b=jc.Additive(lambda p, pa: p * pa["a"], 0.5, distrax.Normal(0.0, 1.0), ["a"]),
    )
    o = jc.sample(jax.random.key(0), eq, 10)
    with pytest.raises(ValueError, match="acyclic"):
        jc.counterfactual(eq, o, {"a": jc.Shift(1.0)}, chunk_size=4)
    # NaN observations are still caught, chunked or not (never a silent NaN row).
    bad_obs = dict(obs, c=obs["c"].at[3].set(7))
    with pytest.raises(ValueError, match="node 'c'"):
        jc.counterfactual(scm, bad_obs, {"x": jc.Shift(1.0)}, key=jax.random.key(1),
                          chunk_size=4)  # fmt: skip
