"""Bad input gets a clear error that names the thing at fault."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jcausal as jc


def model():
    return jc.SCM(
        x=jc.Root(distrax.Normal(0.0, 1.0)),
        y=jc.Additive(lambda p, pa: 2 * pa["x"], None, distrax.Normal(0.0, 1.0), ["x"]),
        c=jc.GumbelMax(lambda p, pa: jnp.stack([0.0, pa["y"], -pa["y"]]), None, 3, ["y"]),
    )


def obs(n=4):
    return {
        "x": np.zeros(n),
        "y": np.ones(n),
        "c": np.array([0, 1, 2, 1][:n], dtype=np.int32),
    }


KEY = jax.random.key(0)


def test_cycle_names_its_nodes():
    f = lambda p, pa: sum(pa.values())
    n = distrax.Normal(0.0, 1.0)
    with pytest.raises(jc.CycleError) as err:
        jc.SCM(
            a=jc.Root(n),
            b=jc.Additive(f, None, n, ["a", "d"]),
            c=jc.Additive(f, None, n, ["b"]),
            d=jc.Additive(f, None, n, ["c"]),
        )
    msg = str(err.value)
    assert "b -> c -> d -> b" in msg
    assert set(err.value.cycle) == {"b", "c", "d"}
    assert isinstance(err.value, ValueError)
    with pytest.raises(jc.CycleError, match="'?s'? -> s|s -> s"):
        jc.SCM(s=jc.Additive(f, None, n, ["s"]))


def test_unknown_parent():
    with pytest.raises(ValueError, match="'y'.*'z'.*not a node"):
        jc.SCM(
            x=jc.Root(distrax.Normal(0.0, 1.0)),
            y=jc.Additive(lambda p, pa: pa["z"], None, distrax.Normal(0.0, 1.0), ["z"]),
        )


def test_not_a_mechanism():
    with pytest.raises(TypeError, match="'x'.*Mechanism"):
        jc.SCM(x=distrax.Normal(0.0, 1.0))


def test_unknown_node_in_observations():
    o = obs()
    o["w"] = np.zeros(4)
    with pytest.raises(ValueError, match="unknown node 'w'"):
        jc.counterfactual(model(), o, {"x": jc.Hard(1.0)}, KEY)


def test_missing_parent_in_observations():
    o = obs()
    del o["x"]
    with pytest.raises(ValueError, match="lack node 'x'.*parent of \\['y'\\]"):
        jc.counterfactual(model(), o, {"y": jc.Shift(1.0)}, KEY)
    with pytest.raises(ValueError, match="lack node 'x'"):
        jc.abduct(model(), o, KEY)
    with pytest.raises(ValueError, match="lack node 'x'"):
        jc.log_prob(model(), o)


def test_shape_mismatch():
    o = obs()
    o["y"] = np.ones((4, 2))
    with pytest.raises(ValueError, match="node 'y'.*shape \\(\\).*\\(2,\\)"):
        jc.counterfactual(model(), o, {"x": jc.Hard(1.0)}, KEY)
    o = obs()
    o["y"] = np.ones(3)
    with pytest.raises(ValueError, match="node 'y': 3 units observed, but 4"):
        jc.abduct(model(), o, KEY)
    o = obs()
    o["x"] = np.float64(1.0)
    with pytest.raises(ValueError, match="node 'x'.*leading unit axis"):
        jc.abduct(model(), o, KEY)


def test_dtype_mismatch():
    o = obs()
    o["c"] = np.array([0.0, 1.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="node 'c'.*integers"):
        jc.counterfactual(model(), o, {"x": jc.Hard(1.0)}, KEY)
    o = obs()
    o["x"] = np.array([0, 1, 2, 3])
    with pytest.raises(ValueError, match="node 'x'.*floating-point"):
        jc.abduct(model(), o, KEY)


def test_category_out_of_range():
    o = obs()
    o["c"] = np.array([0, 1, 3, 1], dtype=np.int32)
    with pytest.raises(ValueError, match="node 'c'.*out of range \\[0, 3\\).*>= 3"):
        jc.counterfactual(model(), o, {"x": jc.Hard(1.0)}, KEY)
    o["c"] = np.array([0, -1, 2, 1], dtype=np.int32)
    with pytest.raises(ValueError, match="node 'c'.*out of range"):
        jc.log_prob(model(), o)
    with pytest.raises(ValueError, match="node 'c'.*out of range"):
        jc.counterfactual(model(), obs(), {"c": jc.Hard(5)}, KEY)


def test_intervention_on_missing_node():
    with pytest.raises(ValueError, match="cannot intervene on 'q'"):
        jc.do(model(), {"q": jc.Hard(1.0)})
    with pytest.raises(ValueError, match="cannot intervene on 'q'"):
        jc.counterfactual(model(), obs(), {"q": jc.Hard(1.0)}, KEY)


def test_intervention_type_checks():
    with pytest.raises(ValueError, match="'c' is categorical: Shift"):
        jc.do(model(), {"c": jc.Shift(1.0)})
    with pytest.raises(TypeError, match="'x'.*Hard\\(1.0\\)"):
        jc.do(model(), {"x": 1.0})
    with pytest.raises(ValueError, match="node 'x': Hard value of shape \\(3,\\)"):
        jc.counterfactual(model(), obs(), {"x": jc.Hard(np.zeros(3))}, KEY)


def test_missing_key_for_stochastic_abduction():
    with pytest.raises(ValueError, match="node 'c'.*key=jax.random.key"):
        jc.counterfactual(model(), obs(), {"x": jc.Hard(1.0)})
    with pytest.raises(ValueError, match="node 'c'.*key"):
        jc.abduct(model(), obs())
    # Not needed when the categorical node is not downstream of the intervention.
    cf = jc.counterfactual(model(), obs(), {"c": jc.Hard(2)})
    np.testing.assert_array_equal(cf["c"], 2)


def test_counterfactual_needs_the_unintervened_model():
    m = jc.do(model(), {"x": jc.Hard(0.0)})
    with pytest.raises(ValueError, match="unintervened model.*\\['x'\\]"):
        jc.counterfactual(m, obs(), {"y": jc.Shift(1.0)}, KEY)


def test_log_prob_needs_tractable_mechanisms():
    scm = jc.SCM(
        x=jc.Root(distrax.Normal(0.0, 1.0)),
        y=jc.Amortized(
            lambda p, pa, u: pa["x"] + u,
            lambda p, x, pa: x - pa["x"],
            None,
            distrax.Normal(0.0, 1.0),
            ["x"],
            deterministic=True,
        ),
    )
    with pytest.raises(ValueError, match="Amortized has no tractable likelihood"):
        jc.log_prob(scm, {"x": np.zeros(2), "y": np.zeros(2)})


def test_bad_sample_size_and_key():
    with pytest.raises(ValueError, match="positive"):
        jc.sample(KEY, model(), 0)
    with pytest.raises(TypeError, match="jax.random key"):
        jc.sample(0, model(), 3)


def _double(p, pa):
    return 2 * pa["x"]


def test_deterministic_node_needs_an_equilibrium_model():
    # noise=None is the deterministic node of an EquilibriumSCM; an acyclic SCM used to fail
    # later with "'NoneType' object has no attribute 'sample'".
    y = jc.Additive(_double, None, None, ["x"])
    with pytest.raises(ValueError, match="node 'y': noise=None .* EquilibriumSCM"):
        jc.SCM(x=jc.Root(distrax.Normal(0.0, 1.0)), y=y)
    eq = jc.EquilibriumSCM(x=jc.Root(distrax.Normal(0.0, 1.0)), y=y)
    assert eq.deterministic == ("y",)


def test_equilibrium_noise_of_the_wrong_shape_is_named():
    from jcausal.economy import leontief_scm

    scm = leontief_scm(np.full((3, 3), 0.1), np.ones(3))
    with pytest.raises(ValueError, match=r"noise\['x'\] has shape \(3,\).*\[None\]"):
        jc.solve(scm, {"x": jnp.ones(3)})
    with pytest.raises(ValueError, match=r"noise\['x'\] must be an array"):
        jc.solve(scm, {"x": "1, 1, 1"})
    values, _ = jc.solve(scm, {"x": [[1.0, 1.0, 1.0]]})  # nested lists are arrays
    np.testing.assert_allclose(values["x"][0], np.linalg.solve(np.eye(3) - 0.1, np.ones(3)))


@pytest.mark.parametrize("make", [jc.Hard, jc.Shift, jc.Scale])
def test_non_numeric_intervention_values_are_named(make):
    with pytest.raises(TypeError, match=rf"{make.__name__}\(.*='a'\).*number"):
        make("a")
