"""Input checks that hold everywhere (issue 10 section 5), and more.

Also interventions on part of a vector node, and the recompilation warning.
"""

import warnings

import distrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jcausal as jc
from jcausal.scm import RecompileWarning

KEY = jax.random.key(0)


def _logits(p, pa):
    return p * pa["a"]


def categorical():
    """``a ~ N(0, 1)``, ``z | a`` Gumbel-max over K = 3, ``y = z + noise``."""
    return jc.SCM(
        a=jc.Root(distrax.Normal(0.0, 1.0)),
        z=jc.GumbelMax(_logits, jnp.array([0.0, 1.0, -1.0]), 3, ["a"]),
        y=jc.Additive(lambda p, pa: p * pa["z"], 1.0, distrax.Normal(0.0, 0.1), ["z"]),
    )


def test_out_of_range_category_raises_under_jit_and_vmap():
    scm = categorical()
    obs = jc.sample(KEY, scm, 4)
    bad = {**obs, "z": obs["z"].at[1].set(5)}
    with pytest.raises(ValueError, match="node 'z'.*out of range \\[0, 3\\).*>= 3"):
        jc.log_prob(scm, bad)
    # Old code: finite log_prob under jit (the check ran only on concrete values).
    with pytest.raises(Exception, match="node 'z'.*out of range"):
        jax.block_until_ready(jax.jit(lambda o: jc.log_prob(scm, o))(bad))
    stacked = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), obs, bad)
    with pytest.raises(Exception, match="node 'z'.*out of range"):
        jax.block_until_ready(jax.vmap(lambda o: jc.log_prob(scm, o))(stacked))
    neg = {**obs, "z": obs["z"].at[0].set(-1)}
    with pytest.raises(ValueError, match="node 'z'.*negative"):
        jc.abduct(scm, neg, KEY)


def test_hard_out_of_range_category_is_refused_in_do():
    scm = categorical()
    with pytest.raises(ValueError, match="node 'z'.*Hard\\(7\\).*out of range"):
        jc.do(scm, {"z": jc.Hard(7)})
    with pytest.raises(ValueError, match="node 'z'.*not an integer"):
        jc.do(scm, {"z": jc.Hard(1.5)})
    jc.do(scm, {"z": jc.Hard(2)})  # a category is fine
    # A value known only under the user's jit is checked when it runs.
    obs = jc.sample(KEY, scm, 3)

    def cf(v):
        return jc.counterfactual(scm, obs, {"z": jc.Hard(v)}, KEY)["y"]

    assert jax.jit(cf)(jnp.asarray(2)).shape == (3,)
    with pytest.raises(Exception, match="node 'z'.*Hard value out of support"):
        jax.block_until_ready(jax.jit(cf)(jnp.asarray(7)))


def test_nan_parent_of_gumbel_max_is_an_error_not_category_0():
    scm = categorical()
    obs = jc.sample(KEY, scm, 3)
    bad = {**obs, "a": obs["a"].at[0].set(jnp.nan)}
    # Old code: z = 0 for the NaN unit, silently.
    with pytest.raises(ValueError, match="GumbelMax.*NaN"):
        jc.counterfactual(scm, bad, {"a": jc.Shift(0.1)}, KEY)
    with pytest.raises(Exception, match="GumbelMax.*NaN"):
        nan_root = jc.do(scm, {"a": jc.Hard(jnp.nan)})
        jax.block_until_ready(jc.sample(KEY, nan_root, 2)["z"])


def test_log_prob_under_hard_is_minus_inf_off_the_intervened_value():
    scm = categorical()
    obs = jc.sample(KEY, scm, 6)
    obs["z"] = jnp.array([1, 2, 1, 0, 1, 1], jnp.int32)
    lp = jc.log_prob(jc.do(scm, {"z": jc.Hard(1)}), obs, per_node=True)
    np.testing.assert_array_equal(np.isneginf(lp["z"]), [False, True, False, True, False, False])
    np.testing.assert_array_equal(np.asarray(lp["z"])[[0, 2, 4, 5]], 0.0)
    # The children still use the observed value.
    want = jc.log_prob(scm, obs, per_node=True)["y"]
    np.testing.assert_allclose(lp["y"], want)


def test_parents_as_a_bare_string_is_refused():
    with pytest.raises(TypeError, match="string 'xy'.*\\('xy',\\).*\\['x', 'y'\\]"):
        jc.Additive(lambda p, pa: pa["xy"], None, distrax.Normal(0.0, 1.0), "xy")
    with pytest.raises(TypeError, match="string"):
        jc.GumbelMax(_logits, 1.0, 2, parents="a")
    # A tuple of one name is the way to say it.
    m = jc.Additive(lambda p, pa: pa["xy"], None, distrax.Normal(0.0, 1.0), ("xy",))
    assert m.parents == ("xy",)


@pytest.mark.parametrize("n", [2.7, 2.0, "3", True, 0, -1])
def test_sample_refuses_non_integer_counts(n):
    with pytest.raises(ValueError, match="n must be a positive integer"):
        jc.sample(KEY, categorical(), n)


def test_sample_accepts_numpy_integers():
    assert jc.sample(KEY, categorical(), np.int64(3))["z"].shape == (3,)


def test_abduct_num_samples_matches_counterfactual_draws():
    scm = categorical()
    obs = jc.sample(KEY, scm, 5)
    noise = jc.abduct(scm, obs, KEY, num_samples=4)
    assert noise["z"].shape == (4, 5, 3) and noise["a"].shape == (4, 5)
    # Draw s of abduct is the noise that draw s of counterfactual pushes forward.
    cf = jc.counterfactual(scm, obs, {"a": jc.Shift(0.5)}, KEY, num_samples=4)
    mech = scm.mechanisms["z"]
    for s in range(4):
        z = jax.vmap(mech.forward)({"a": obs["a"] + 0.5}, noise["z"][s])
        np.testing.assert_array_equal(z, cf["z"][s])
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        jc.abduct(scm, obs, KEY, num_samples=0)
    with pytest.raises(ValueError, match="node 'z'.*key"):
        jc.abduct(scm, obs)


# ----------------------------------------------------------------------------------------------
# index: interventions on some components of a vector node


def vector_model():
    w = jnp.array([[1.0, 0.5], [0.0, 2.0], [-1.0, 1.0]])
    return jc.SCM(
        x=jc.Root(distrax.Normal(jnp.zeros(2), 1.0)),
        y=jc.Additive(lambda p, pa: p @ pa["x"], w, distrax.Normal(jnp.zeros(3), 0.3), ["x"]),
    )


def test_index_on_hard_shift_scale_touches_only_the_components():
    scm = vector_model()
    obs = jc.sample(KEY, scm, 4)
    y = np.asarray(obs["y"])
    cf = jc.counterfactual(scm, obs, {"y": jc.Hard([7.0, 8.0], index=[0, 2])})["y"]
    np.testing.assert_array_equal(cf[:, 1], y[:, 1])
    np.testing.assert_array_equal(cf[:, [0, 2]], np.broadcast_to([7.0, 8.0], (4, 2)))
    cf = jc.counterfactual(scm, obs, {"y": jc.Shift(1.5, index=[-1])})["y"]
    np.testing.assert_allclose(cf[:, 2], y[:, 2] + 1.5)
    np.testing.assert_array_equal(cf[:, :2], y[:, :2])
    per_unit = jnp.arange(4.0)[:, None]
    cf = jc.counterfactual(scm, obs, {"y": jc.Scale(per_unit, index=[1])})["y"]
    np.testing.assert_allclose(cf[:, 1], y[:, 1] * np.arange(4.0))
    np.testing.assert_array_equal(cf[:, [0, 2]], y[:, [0, 2]])
    # Sampling under a partial hard intervention keeps the mechanism's other components.
    s = jc.sample(KEY, jc.do(scm, {"y": jc.Hard(0.0, index=[1])}), 5)
    assert np.all(np.asarray(s["y"][:, 1]) == 0.0) and np.all(np.asarray(s["y"][:, 0]) != 0.0)
    # log_prob under a partial Shift is the change of variables on those components.
    lp = jc.log_prob(jc.do(scm, {"y": jc.Shift(1.5, index=[2])}), obs, per_node=True)["y"]
    moved = {**obs, "y": jnp.asarray(obs["y"]).at[:, 2].add(-1.5)}
    np.testing.assert_allclose(lp, jc.log_prob(scm, moved, per_node=True)["y"], rtol=1e-10)


def test_index_errors_are_named():
    scm = vector_model()
    obs = jc.sample(KEY, scm, 2)
    with pytest.raises(ValueError, match="node 'y': Shift index \\[3\\] out of range"):
        jc.counterfactual(scm, obs, {"y": jc.Shift(1.0, index=[0, 3])})
    with pytest.raises(ValueError, match="Hard index has repeated entries"):
        jc.Hard(1.0, index=[1, 1])
    with pytest.raises(ValueError, match="node 'x'.*scalar per unit"):
        scalar = jc.SCM(x=jc.Root(distrax.Normal(0.0, 1.0)))
        jc.counterfactual(scalar, {"x": jnp.zeros(2)}, {"x": jc.Shift(1.0, index=[0])})


# ----------------------------------------------------------------------------------------------
# recompilation


def _fresh_model():
    # A new lambda on every call: a new static argument each time.
    return jc.SCM(
        x=jc.Root(distrax.Normal(0.0, 1.0)),
        y=jc.Additive(lambda p, pa: p * pa["x"], 2.0, distrax.Normal(0.0, 1.0), ["x"]),
    )


def _scale(p, pa):
    return p * pa["x"]


def test_recompiling_for_fresh_lambdas_warns_naming_the_node():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for k in range(4):
            jc.sample(jax.random.key(k), _fresh_model(), 3)
    msgs = [str(w.message) for w in caught if issubclass(w.category, RecompileWarning)]
    assert len(msgs) == 1, msgs
    assert "node 'y'" in msgs[0] and "<lambda>" in msgs[0] and "module level" in msgs[0]


def test_module_level_functions_do_not_recompile_or_warn():
    def model(a):
        return jc.SCM(
            x=jc.Root(distrax.Normal(0.0, 1.0)),
            y=jc.Additive(_scale, a, distrax.Normal(0.0, 1.0), ["x"]),
        )

    with warnings.catch_warnings():
        warnings.simplefilter("error", RecompileWarning)
        for k in range(5):
            jc.sample(jax.random.key(k), model(float(k)), 3)


def test_value_checks_keep_grad_and_jit():
    scm = categorical()
    obs = jc.sample(KEY, scm, 5)
    g = eqx.filter_grad(lambda m: jnp.sum(jc.log_prob(m, obs)))(scm)
    assert np.all(np.isfinite(np.asarray(g.mechanisms["z"].params)))


def test_retrace_watch_for_filter_jit_functions():
    """The same warning for functions jitted with eqx.filter_jit (e.g. an equilibrium solve)."""
    from jcausal.scm._jit import warn_on_retrace

    @eqx.filter_jit
    @warn_on_retrace
    def total(scm, x):
        return jax.vmap(scm.mechanisms["y"].forward)({"x": x}, x)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(4):
            total(_fresh_model(), jnp.ones(3))
        stable = jc.SCM(
            x=jc.Root(distrax.Normal(0.0, 1.0)),
            y=jc.Additive(_scale, 2.0, distrax.Normal(0.0, 1.0), ["x"]),
        )
        for _ in range(4):
            total(stable, jnp.ones(3))
    msgs = [str(w.message) for w in caught if issubclass(w.category, RecompileWarning)]
    assert len(msgs) == 1 and "jc.total" in msgs[0] and "node 'y'" in msgs[0], msgs


def test_solve_warns_when_fresh_lambdas_recompile_it():
    def make():
        return jc.EquilibriumSCM(
            x=jc.Additive(lambda p, pa: 0.5 * pa["y"], None, distrax.Normal(0.0, 1.0), ["y"]),
            y=jc.Additive(lambda p, pa: 0.3 * pa["x"], None, distrax.Normal(0.0, 1.0), ["x"]),
        )

    noise = {"x": jnp.ones(3), "y": jnp.ones(3)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(4):
            jc.solve(make(), noise)
    msgs = [str(w.message) for w in caught if issubclass(w.category, RecompileWarning)]
    assert len(msgs) == 1 and "jc.solve" in msgs[0] and "node 'x'" in msgs[0], msgs
