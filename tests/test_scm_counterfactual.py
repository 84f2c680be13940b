"""Counterfactuals, sampling, abduction and likelihoods against closed forms and invariants."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

import jcausal as jc

# ----------------------------------------------------------------------------------------------
# a linear-Gaussian model with known closed forms: x -> y -> z, x -> z

A, B, C = 1.7, -0.8, 0.6
SX, SY, SZ = 1.0, 0.5, 0.3


def linear_scm():
    return jc.SCM(
        x=jc.Root(distrax.Normal(0.0, SX)),
        y=jc.Additive(lambda p, pa: p["a"] * pa["x"], {"a": A}, distrax.Normal(0.0, SY), ["x"]),
        z=jc.Additive(
            lambda p, pa: p["b"] * pa["y"] + p["c"] * pa["x"],
            {"b": B, "c": C},
            distrax.Normal(0.0, SZ),
            ["x", "y"],
        ),
    )


@pytest.fixture(scope="module")
def lin():
    scm = linear_scm()
    obs = jc.sample(jax.random.key(0), scm, 200)
    return scm, {k: np.asarray(v) for k, v in obs.items()}


def test_linear_gaussian_hard_matches_closed_form(lin):
    scm, obs = lin
    xs = np.linspace(-2, 2, obs["x"].shape[0])  # one value per unit
    cf = jc.counterfactual(scm, obs, {"x": jc.Hard(xs)})
    y_cf = obs["y"] + A * (xs - obs["x"])
    z_cf = obs["z"] + B * (y_cf - obs["y"]) + C * (xs - obs["x"])
    np.testing.assert_allclose(cf["x"], xs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cf["y"], y_cf, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cf["z"], z_cf, rtol=0, atol=1e-12)


def test_linear_gaussian_shift_and_scale_match_closed_form(lin):
    scm, obs = lin
    cf = jc.counterfactual(scm, obs, {"y": jc.Shift(0.75)})
    assert cf["x"] is obs["x"] or np.array_equal(cf["x"], obs["x"])
    np.testing.assert_allclose(cf["y"], obs["y"] + 0.75, atol=1e-12)
    np.testing.assert_allclose(cf["z"], obs["z"] + B * 0.75, atol=1e-12)

    cf = jc.counterfactual(scm, obs, {"y": jc.Scale(2.5)})
    np.testing.assert_allclose(cf["y"], 2.5 * obs["y"], atol=1e-12)
    np.testing.assert_allclose(cf["z"], obs["z"] + B * 1.5 * obs["y"], atol=1e-12)


def test_soft_intervention_keeps_the_units_noise(lin):
    scm, obs = lin
    # New mechanism y := 3 x^2 + u_y, with u_y the unit's abducted noise.
    soft = jc.Soft(lambda p, pa, u: p * pa["x"] ** 2 + u, 3.0)
    cf = jc.counterfactual(scm, obs, {"y": soft})
    u_y = obs["y"] - A * obs["x"]
    np.testing.assert_allclose(cf["y"], 3.0 * obs["x"] ** 2 + u_y, atol=1e-12)
    np.testing.assert_allclose(cf["z"], obs["z"] + B * (cf["y"] - obs["y"]), atol=1e-12)


def test_non_descendants_come_back_exactly(lin):
    scm, obs = lin
    cf = jc.counterfactual(scm, obs, {"z": jc.Shift(1.0)})
    np.testing.assert_array_equal(cf["x"], obs["x"])
    np.testing.assert_array_equal(cf["y"], obs["y"])


def test_log_prob_linear_gaussian_matches_scipy(lin):
    scm, obs = lin
    # Joint covariance of (x, y, z) from the structural equations.
    M = np.array([[1, 0, 0], [A, 1, 0], [C + B * A, B, 1]])
    cov = M @ np.diag([SX**2, SY**2, SZ**2]) @ M.T
    data = np.stack([obs["x"], obs["y"], obs["z"]], axis=1)
    want = stats.multivariate_normal(np.zeros(3), cov).logpdf(data)
    np.testing.assert_allclose(jc.log_prob(scm, obs), want, rtol=1e-10)
    # Under do(y := y + d): y = a x + u_y + d.
    lp = jc.log_prob(jc.do(scm, {"y": jc.Shift(0.4)}), obs)
    want_y = stats.norm(A * obs["x"] + 0.4, SY).logpdf(obs["y"])
    want_x = stats.norm(0, SX).logpdf(obs["x"])
    want_z = stats.norm(B * obs["y"] + C * obs["x"], SZ).logpdf(obs["z"])
    np.testing.assert_allclose(lp, want_x + want_y + want_z, rtol=1e-10)
    # Under do(y := 2 y): density of y is N(2 a x, (2 s_y)^2).
    lp = jc.log_prob(jc.do(scm, {"y": jc.Scale(2.0)}), obs, per_node=True)
    np.testing.assert_allclose(lp["y"], stats.norm(2 * A * obs["x"], 2 * SY).logpdf(obs["y"]))
    # Hard: truncated factorisation drops the intervened factor for units observed at the
    # intervened value; any other observed value is impossible under do(y := 0): -inf.
    at_zero = {**obs, "y": jnp.asarray(obs["y"]).at[::2].set(0.0)}
    lp = jc.log_prob(jc.do(scm, {"y": jc.Hard(0.0)}), at_zero, per_node=True)
    np.testing.assert_array_equal(lp["y"][::2], 0.0)
    assert np.all(np.isneginf(np.asarray(lp["y"][1::2])))


def test_vector_node_with_matrix_mechanism():
    rng = np.random.default_rng(3)
    W = rng.normal(size=(2, 3))
    scm = jc.SCM(
        x=jc.Root(distrax.Normal(jnp.zeros(3), 1.0)),
        y=jc.Additive(lambda p, pa: p @ pa["x"], W, distrax.Normal(jnp.zeros(2), 0.1), ["x"]),
    )
    obs = jc.sample(jax.random.key(1), scm, 50)
    assert obs["x"].shape == (50, 3) and obs["y"].shape == (50, 2)
    new_x = rng.normal(size=(50, 3))
    cf = jc.counterfactual(scm, obs, {"x": jc.Hard(new_x)})
    np.testing.assert_allclose(cf["y"], obs["y"] + (new_x - obs["x"]) @ W.T, atol=1e-12)
    # One value for all units broadcasts; a per-unit value with a trailing 1 broadcasts too.
    cf = jc.counterfactual(scm, obs, {"x": jc.Shift(jnp.arange(50.0)[:, None])})
    np.testing.assert_allclose(cf["x"], obs["x"] + np.arange(50.0)[:, None])


def test_image_shaped_node_roundtrip():
    scm = jc.SCM(
        t=jc.Root(distrax.Normal(0.0, 1.0)),
        img=jc.Invertible(
            lambda p, pa: distrax.ScalarAffine(shift=pa["t"] * p, scale=jnp.exp(0.2 * pa["t"])),
            jnp.linspace(0, 1, 16).reshape(4, 4),
            distrax.Normal(jnp.zeros((4, 4)), 1.0),
            ["t"],
        ),
    )
    obs, noise = jc.sample(jax.random.key(2), scm, 8, return_noise=True)
    assert obs["img"].shape == (8, 4, 4)
    u = jc.abduct(scm, obs)
    np.testing.assert_allclose(u["img"], noise["img"], atol=1e-12)
    cf = jc.counterfactual(scm, obs, {"t": jc.Hard(1.0)})
    grid = np.linspace(0, 1, 16).reshape(4, 4)
    want = grid * 1.0 + np.exp(0.2) * np.asarray(noise["img"])
    np.testing.assert_allclose(cf["img"], want, atol=1e-12)


def test_invertible_log_prob_by_change_of_variables():
    scm = jc.SCM(
        x=jc.Root(distrax.Normal(0.0, 1.0)),
        y=jc.Invertible(
            lambda p, pa: distrax.Chain(
                [distrax.Lambda(jnp.sinh), distrax.ScalarAffine(shift=pa["x"], scale=p)]
            ),
            0.7,
            distrax.Normal(0.0, 1.0),
            ["x"],
        ),
    )
    obs = jc.sample(jax.random.key(3), scm, 100)
    x, y = np.asarray(obs["x"]), np.asarray(obs["y"])
    # y = sinh(0.7 u + x): u = (arcsinh(y) - x) / 0.7, |du/dy| = 1 / (0.7 sqrt(1 + y^2)).
    u = (np.arcsinh(y) - x) / 0.7
    want = stats.norm.logpdf(x) + stats.norm.logpdf(u) - np.log(0.7 * np.sqrt(1 + y**2))
    np.testing.assert_allclose(jc.log_prob(scm, obs), want, rtol=1e-9)


def test_amortized_with_exact_encoder_matches_additive(lin):
    scm, obs = lin
    mech = jc.Amortized(
        fn=lambda p, pa, u: p * pa["x"] + u,
        encoder=lambda p, x, pa: x - p * pa["x"],
        params=A,
        noise=distrax.Normal(0.0, SY),
        parents=["x"],
        deterministic=True,
    )
    scm2 = jc.SCM(x=scm.mechanisms["x"], y=mech, z=scm.mechanisms["z"])
    a = jc.counterfactual(scm, obs, {"x": jc.Shift(1.0)})
    b = jc.counterfactual(scm2, obs, {"x": jc.Shift(1.0)})
    for k in obs:
        np.testing.assert_allclose(a[k], b[k], atol=1e-12)


def test_amortized_stochastic_encoder_monte_carlo(lin):
    scm, obs = lin
    # Encoder returns the exact posterior N(x - a x, tiny): the MC counterfactual concentrates.
    mech = jc.Amortized(
        fn=lambda p, pa, u: p * pa["x"] + u,
        encoder=lambda p, x, pa: distrax.Normal(x - p * pa["x"], 0.01),
        params=A,
        noise=distrax.Normal(0.0, SY),
        parents=["x"],
    )
    scm2 = jc.SCM(x=scm.mechanisms["x"], y=mech)
    small = {"x": obs["x"], "y": obs["y"]}
    with pytest.raises(ValueError, match="'y'.*key"):
        jc.counterfactual(scm2, small, {"x": jc.Shift(1.0)})
    cf = jc.counterfactual(scm2, small, {"x": jc.Shift(1.0)}, jax.random.key(0), num_samples=400)
    assert cf["y"].shape == (400, 200)
    np.testing.assert_allclose(cf["y"].mean(0), obs["y"] + A, atol=0.005)
    np.testing.assert_allclose(cf["y"].std(0), 0.01, rtol=0.2)


def test_abduct_then_predict_reproduces_sample():
    scm = linear_scm()
    obs, noise = jc.sample(jax.random.key(4), scm, 64, return_noise=True)
    u = jc.abduct(scm, obs)
    for k in obs:
        np.testing.assert_allclose(u[k], noise[k], atol=1e-12)


# ----------------------------------------------------------------------------------------------
# interventions and the observational distribution


def test_do_leaves_non_descendants_unchanged():
    scm = linear_scm()
    n = 20_000
    obs = jc.sample(jax.random.key(10), scm, n)
    intv = jc.sample(jax.random.key(11), jc.do(scm, {"y": jc.Hard(3.0)}), n)
    # x is not a descendant of y: its distribution must not move (two-sample KS, fixed seed).
    assert stats.ks_2samp(np.asarray(obs["x"]), np.asarray(intv["x"])).pvalue > 0.01
    # z is: its mean moves from 0 to 3 b (closed form) and the KS test sees it.
    assert stats.ks_2samp(np.asarray(obs["z"]), np.asarray(intv["z"])).pvalue < 1e-10
    np.testing.assert_allclose(np.mean(intv["z"]), 3.0 * B, atol=4 * np.sqrt(C**2 + SZ**2 / n))
    np.testing.assert_array_equal(intv["y"], 3.0)
    # With the same key the non-descendants are the very same draws.
    same = jc.sample(jax.random.key(10), jc.do(scm, {"y": jc.Hard(3.0)}), n)
    np.testing.assert_array_equal(same["x"], obs["x"])


def test_do_returns_a_new_model():
    scm = linear_scm()
    new = jc.do(scm, {"y": jc.Shift(1.0)})
    assert scm.interventions == {}
    assert set(new.interventions) == {"y"}
    newer = jc.do(new, {"z": jc.Hard(0.0)})
    assert set(newer.interventions) == {"y", "z"}


# ----------------------------------------------------------------------------------------------
# transformations: jit, vmap, grad


def _nonlinear_chain(k=5):
    f = lambda p, pa, name: jnp.tanh(1.5 * pa[name]) + 0.5 * pa[name]
    mechs = {"X1": jc.Root(distrax.Normal(0.0, 1.0))}
    for i in range(2, k + 1):
        prev = f"X{i - 1}"
        mechs[f"X{i}"] = jc.Additive(
            lambda p, pa, prev=prev: f(p, pa, prev), None, distrax.Normal(0.0, 1.0), [prev]
        )
    return jc.SCM(mechs)


def test_gradient_wrt_shift_matches_finite_difference():
    scm = _nonlinear_chain()
    obs = jc.sample(jax.random.key(5), scm, 32)

    def outcome(d):
        return jnp.sum(jc.counterfactual(scm, obs, {"X2": jc.Shift(d)})["X5"] ** 2)

    for d in [-0.7, 0.0, 1.3]:
        g = jax.grad(outcome)(d)
        h = 1e-5
        fd = (outcome(d + h) - outcome(d - h)) / (2 * h)
        np.testing.assert_allclose(g, fd, rtol=1e-6)
    # Per-unit shifts: the gradient is a vector, checked coordinate by coordinate.
    deltas = jnp.linspace(-1, 1, 32)
    g = jax.grad(outcome)(deltas)
    e = np.zeros(32)
    e[7] = 1e-5
    fd = (outcome(deltas + e) - outcome(deltas - e)) / 2e-5
    np.testing.assert_allclose(g[7], fd, rtol=1e-6)


def test_gradient_wrt_mechanism_parameters():
    scm = linear_scm()
    obs = jc.sample(jax.random.key(6), scm, 16)

    def outcome(b):
        m = scm.mechanisms["z"]
        z = jc.Additive(m.fn, {"b": b, "c": C}, m.noise, m.parents)
        s = jc.SCM(x=scm.mechanisms["x"], y=scm.mechanisms["y"], z=z)
        return jnp.sum(jc.counterfactual(s, obs, {"y": jc.Shift(2.0)})["z"])

    # Abduction and prediction use the same b: z' = z + b (y' - y) = z + 2 b, so d/db = 2 n.
    np.testing.assert_allclose(jax.grad(outcome)(B), 2.0 * 16, rtol=1e-12)


def test_vmap_over_a_batch_of_interventions_equals_a_loop():
    scm = _nonlinear_chain()
    obs = jc.sample(jax.random.key(7), scm, 100)
    deltas = jnp.linspace(-2, 2, 9)
    batched = jax.vmap(lambda d: jc.counterfactual(scm, obs, {"X2": jc.Shift(d)}))(deltas)
    for i, d in enumerate(deltas):
        one = jc.counterfactual(scm, obs, {"X2": jc.Shift(d)})
        for k in one:
            np.testing.assert_allclose(batched[k][i], one[k], atol=1e-12)


def test_counterfactual_under_user_jit():
    scm = _nonlinear_chain()
    obs = jc.sample(jax.random.key(8), scm, 10)

    @jax.jit
    def f(obs, d):
        return jc.counterfactual(scm, obs, {"X3": jc.Hard(d)})["X5"]

    eager = jc.counterfactual(scm, obs, {"X3": jc.Hard(0.5)})["X5"]
    np.testing.assert_allclose(f(obs, 0.5), eager, atol=1e-12)


def test_hand_written_chain_agrees():
    scm = _nonlinear_chain()
    obs = {k: np.asarray(v) for k, v in jc.sample(jax.random.key(9), scm, 100).items()}
    cf = jc.counterfactual(scm, obs, {"X2": jc.Shift(1.0)})
    f = lambda x: np.tanh(1.5 * x) + 0.5 * x
    x = {"X1": obs["X1"], "X2": obs["X2"] + 1.0}
    for i in range(3, 6):
        u = obs[f"X{i}"] - f(obs[f"X{i - 1}"])
        x[f"X{i}"] = f(x[f"X{i - 1}"]) + u
    for k in x:
        np.testing.assert_allclose(cf[k], x[k], atol=1e-12)


# ----------------------------------------------------------------------------------------------
# property: an identity intervention returns the observations, for random models and data


@st.composite
def random_models(draw):
    k = draw(st.integers(2, 5))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    mechs = {}
    kinds = {}
    for i in range(k):
        name = f"v{i}"
        pa = tuple(f"v{j}" for j in range(i) if rng.random() < 0.5)
        cont = tuple(p for p in pa if kinds[p] != "cat")
        kind = draw(st.sampled_from(["add", "inv", "cat"])) if i else "root"
        w = jnp.asarray(rng.normal(size=len(pa)))

        def lin(p, pa_, pa=pa):
            return sum((p[j] * pa_[q] for j, q in enumerate(pa)), start=jnp.asarray(0.0))

        if kind == "root":
            mechs[name] = jc.Root(distrax.Normal(0.0, 1.0))
        elif kind == "add":
            mechs[name] = jc.Additive(
                lambda p, pa_, lin=lin: jnp.tanh(lin(p, pa_)), w, distrax.Normal(0.0, 1.0), pa
            )
        elif kind == "inv":
            mechs[name] = jc.Invertible(
                lambda p, pa_, lin=lin: distrax.ScalarAffine(
                    shift=lin(p, pa_), scale=jnp.exp(0.3 * jnp.tanh(lin(p, pa_)))
                ),
                w,
                distrax.Normal(0.0, 1.0),
                pa,
            )
        else:
            W = jnp.asarray(rng.normal(size=(3, len(pa))))
            mechs[name] = jc.GumbelMax(
                lambda p, pa_, pa=pa: jnp.stack(
                    [sum((p[c, j] * pa_[q] for j, q in enumerate(pa)), start=0.0) for c in range(3)]
                ),
                W,
                3,
                pa,
            )
        del cont
        kinds[name] = kind
    n = draw(st.integers(1, 20))
    obs = {}
    for name, kind in kinds.items():
        if kind == "cat":
            obs[name] = rng.integers(0, 3, size=n).astype(np.int32)
        else:
            obs[name] = rng.normal(scale=3.0, size=n)
    return jc.SCM(mechs), obs, kinds


@given(random_models(), st.sampled_from(["shift0", "scale1", "empty"]))
def test_identity_intervention_returns_observations(model, how):
    scm, obs, kinds = model
    root = scm.order[0]
    iv = {"shift0": {root: jc.Shift(0.0)}, "scale1": {root: jc.Scale(1.0)}, "empty": {}}[how]
    cf = jc.counterfactual(scm, obs, iv, jax.random.key(0))
    for name, kind in kinds.items():
        if kind == "cat":
            np.testing.assert_array_equal(cf[name], obs[name])
        else:
            np.testing.assert_allclose(cf[name], obs[name], rtol=1e-9, atol=1e-9)


def test_joint_interventions_on_a_node_and_its_parent(lin):
    """When a shifted node's parent also moves, the node is recomputed from its noise."""
    scm, obs = lin
    cf = jc.counterfactual(scm, obs, {"x": jc.Shift(1.0), "y": jc.Shift(0.5)})
    np.testing.assert_allclose(cf["x"], obs["x"] + 1.0, atol=1e-12)
    np.testing.assert_allclose(cf["y"], obs["y"] + A * 1.0 + 0.5, atol=1e-12)
    np.testing.assert_allclose(cf["z"], obs["z"] + B * (A + 0.5) + C * 1.0, atol=1e-12)
    # A shift on a node whose parents keep their values is exact: x' = x + delta bit for bit.
    cf = jc.counterfactual(scm, obs, {"y": jc.Shift(0.5)})
    np.testing.assert_array_equal(cf["y"], obs["y"] + 0.5)
