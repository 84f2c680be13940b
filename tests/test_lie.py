"""Lie groups (axioms, exp/log) and Lie interventions against closed forms and other engines."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

import jcausal as jc
from jcausal.lie import SO, Lie, LieGroup, Multiplicative, Translation, distributed
from jcausal.scm import EquilibriumSCM

# ----------------------------------------------------------------------------------------------
# a user-defined group: the affine group of the line, copied from the LieGroup docstring


class Affine1D(LieGroup):
    @property
    def param_shape(self):
        return (2,)

    @property
    def element_shape(self):
        return (2,)

    def identity(self, dtype=None):
        return jnp.array([1.0, 0.0], dtype=dtype)

    def compose(self, g, h):
        return jnp.stack([g[0] * h[0], g[0] * h[1] + g[1]])

    def inverse(self, g):
        return jnp.stack([1.0 / g[0], -g[1] / g[0]])

    def exp(self, u):
        s, t = u[0], u[1]
        small = jnp.abs(s) < 1e-8
        safe = jnp.where(small, 1.0, s)
        rate = jnp.where(small, 1.0 + s / 2, jnp.expm1(safe) / safe)
        return jnp.stack([jnp.exp(s), t * rate])

    def act(self, g, x):
        return g[0] * x + g[1]


# ----------------------------------------------------------------------------------------------
# group axioms


GROUPS = {
    "mult3": (Multiplicative(3), (3,)),
    "mult_scalar_on_vector": (Multiplicative(), (4,)),
    "trans2x2": (Translation((2, 2)), (2, 2)),
    "so2": (SO(2), (2,)),
    "so3": (SO(3), (3,)),
    "so3_stack": (SO(3), (5, 3)),
    "so4": (SO(4), (4,)),
    "so5": (SO(5), (5,)),
    "affine": (Affine1D(), (3,)),
}


def _residuals(group, u1, u2, u3, x):
    """Worst violation of each axiom (all should be ~0)."""
    g, h, k = group.exp(u1), group.exp(u2), group.exp(u3)
    e = group.identity(u1.dtype)
    err = lambda a, b: jnp.max(jnp.abs(a - b))
    out = {
        "left identity": err(group.compose(e, g), g),
        "right identity": err(group.compose(g, e), g),
        "associativity": err(
            group.compose(group.compose(g, h), k), group.compose(g, group.compose(h, k))
        ),
        "right inverse": err(group.compose(g, group.inverse(g)), e),
        "left inverse": err(group.compose(group.inverse(g), g), e),
        "exp(0)": err(group.exp(jnp.zeros_like(u1)), e),
        "action identity": err(group.act(e, x), x),
        "compatibility": err(group.act(g, group.act(h, x)), group.act(group.compose(g, h), x)),
        "action shape": jnp.asarray(0.0 if group.act(g, x).shape == x.shape else 1.0),
    }
    dtypes = {g.dtype, group.act(g, x).dtype, group.compose(g, h).dtype, group.inverse(g).dtype}
    if not isinstance(group, Affine1D):
        out["log(exp(u))"] = err(group.log(g), u1)
        dtypes.add(group.log(g).dtype)
    # Group operations stay in the parameters' precision (no silent float64 promotion).
    out["dtype"] = jnp.asarray(0.0 if dtypes == {u1.dtype} else 1.0)
    out["element shape"] = jnp.asarray(0.0 if g.shape == group.element_shape else 1.0)
    if isinstance(group, SO):
        out["orthogonal"] = err(g @ g.T, jnp.eye(group.n, dtype=g.dtype))
        out["det"] = jnp.abs(jnp.linalg.det(g) - 1)
    return out


_JITTED = {}


def _check_axioms(name, dtype, data):
    group, xshape = GROUPS[name]
    if (name, dtype) not in _JITTED:
        _JITTED[name, dtype] = jax.jit(lambda *a: _residuals(group, *a))
    p = group.dim
    # Near the identity: entries in [-0.9, 0.9] keep every SO(n <= 5) angle below π.
    vec = st.lists(st.floats(-0.9, 0.9), min_size=p, max_size=p)
    us = [jnp.asarray(np.reshape(data.draw(vec), group.param_shape), dtype=dtype) for _ in range(3)]
    size = int(np.prod(xshape))
    x = data.draw(st.lists(st.floats(-5, 5), min_size=size, max_size=size))
    x = jnp.asarray(np.reshape(x, xshape), dtype=dtype)
    res = _JITTED[name, dtype](*us, x)
    tol = 1e-4 if dtype == jnp.float32 else 1e-10
    for axiom, r in res.items():
        assert float(r) <= tol, f"{name} ({dtype.__name__}): {axiom} violated by {float(r)}"


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("name", list(GROUPS))
@given(data=st.data())
def test_group_axioms(name, dtype, data):
    _check_axioms(name, dtype, data)


def test_so2_and_so3_conventions():
    c, s = np.cos(0.3), np.sin(0.3)
    np.testing.assert_allclose(SO(2).exp(jnp.array([0.3])), [[c, -s], [s, c]], atol=1e-15)
    # SO(3): u is the rotation vector; rotating about z by 0.3 is the SO(2) block.
    r = SO(3).exp(jnp.array([0.0, 0.0, 0.3]))
    np.testing.assert_allclose(r, [[c, -s, 0], [s, c, 0], [0, 0, 1]], atol=1e-15)
    w = jnp.array([0.2, -0.4, 0.7])
    v = jnp.array([1.0, 2.0, -0.5])
    np.testing.assert_allclose(SO(3).hat(w) @ v, np.cross(w, v), atol=1e-15)
    np.testing.assert_allclose(SO(4).vee(SO(4).hat(jnp.arange(6.0))), np.arange(6.0))


_SO3_ROUNDTRIP = jax.jit(lambda u: SO(3).log(SO(3).exp(u)))


@pytest.mark.parametrize("delta", [1e-2, 1e-7, 0.0])
def test_so3_log_near_pi(delta):
    axis = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    u = (np.pi - delta) * axis
    got = np.asarray(_SO3_ROUNDTRIP(jnp.asarray(u)))
    if delta == 0.0:  # at π both ±π·axis are logarithms
        assert min(np.abs(got - u).max(), np.abs(got + u).max()) < 1e-10
    else:
        np.testing.assert_allclose(got, u, atol=1e-10)


def test_so4_log_far_from_identity():
    # Angles π - 1e-3 and 0.5 in two planes of a random orthonormal basis.
    q = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))[0]
    a = q @ np.asarray(SO(4).hat(jnp.array([np.pi - 1e-3, 0, 0, 0, 0, 0.5]))) @ q.T
    r = jax.scipy.linalg.expm(jnp.asarray(a))
    got = jax.jit(SO(4).log)(r)
    np.testing.assert_allclose(SO(4).hat(got), a, atol=1e-11)


def test_so_log_is_differentiable_at_identity():
    for group in [SO(2), SO(3), SO(4)]:
        jac = jax.jit(jax.jacfwd(lambda u, g=group: g.log(g.exp(u))))(jnp.zeros(group.param_shape))
        np.testing.assert_allclose(jac, np.eye(group.dim), atol=1e-8)


def test_group_constructor_errors():
    with pytest.raises(ValueError, match="n >= 2"):
        SO(1)
    with pytest.raises(ValueError, match="positive sizes"):
        Multiplicative(0)
    with pytest.raises(ValueError, match="shape"):
        SO(3).hat(jnp.zeros(2))


# ----------------------------------------------------------------------------------------------
# Lie interventions in a linear-Gaussian SCM: x (3,) -> y (3,) -> z ()

W = np.array([[0.5, -1.0, 0.2], [1.5, 0.3, -0.7], [-0.4, 0.8, 1.1]])
V = np.array([0.7, -1.2, 0.4])
SY, SZ = 0.1, 0.2


def linear_scm():
    return jc.SCM(
        x=jc.Root(distrax.Normal(jnp.zeros(3), 1.0)),
        y=jc.Additive(lambda p, pa: p @ pa["x"], W, distrax.Normal(jnp.zeros(3), SY), ["x"]),
        z=jc.Additive(lambda p, pa: p @ pa["y"], V, distrax.Normal(0.0, SZ), ["y"]),
    )


@pytest.fixture(scope="module")
def lin():
    scm = linear_scm()
    obs = jc.sample(jax.random.key(1), scm, 50)
    return scm, {k: np.asarray(v) for k, v in obs.items()}


U = np.array([0.3, -0.5, 0.1])


def test_multiplicative_counterfactual_equals_scale_and_closed_form(lin):
    scm, obs = lin
    cf = jc.counterfactual(scm, obs, {"y": Lie(Multiplicative(3), U)})
    ref = jc.counterfactual(scm, obs, {"y": jc.Scale(np.exp(U))})
    y_cf = np.exp(U) * obs["y"]
    np.testing.assert_array_equal(cf["x"], obs["x"])
    np.testing.assert_allclose(cf["y"], y_cf, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(cf["z"], obs["z"] + (y_cf - obs["y"]) @ V, atol=1e-12)
    for k in cf:
        np.testing.assert_allclose(cf[k], ref[k], rtol=1e-14, atol=1e-14)


def test_translation_counterfactual_equals_shift(lin):
    scm, obs = lin
    cf = jc.counterfactual(scm, obs, {"y": Lie(Translation(3), U)})
    ref = jc.counterfactual(scm, obs, {"y": jc.Shift(U)})
    np.testing.assert_allclose(cf["y"], obs["y"] + U, atol=1e-14)
    np.testing.assert_allclose(cf["z"], obs["z"] + U @ V, atol=1e-12)
    for k in cf:
        np.testing.assert_allclose(cf[k], ref[k], atol=1e-14)


def test_rotation_counterfactual_closed_form(lin):
    scm, obs = lin
    cf = jc.counterfactual(scm, obs, {"y": Lie(SO(3), U)})
    r = np.asarray(SO(3).exp(jnp.asarray(U)))
    y_cf = obs["y"] @ r.T
    np.testing.assert_allclose(cf["y"], y_cf, atol=1e-12)
    np.testing.assert_allclose(cf["z"], obs["z"] + (y_cf - obs["y"]) @ V, atol=1e-12)


def test_index_subset_leaves_other_components_unchanged(lin):
    scm, obs = lin
    u2 = np.array([0.4, -0.9])
    for index in ([0, 2], [-3, -1]):  # negative indices name the same components
        cf = jc.counterfactual(scm, obs, {"y": Lie(Multiplicative(2), u2, index=index)})
        np.testing.assert_array_equal(cf["y"][:, 1], obs["y"][:, 1])
        np.testing.assert_allclose(cf["y"][:, [0, 2]], np.exp(u2) * obs["y"][:, [0, 2]])
    # Rotating two components of a three-vector (SO(2) on a subset).
    cf = jc.counterfactual(scm, obs, {"y": Lie(SO(2), [0.7], index=[2, 0])})
    np.testing.assert_array_equal(cf["y"][:, 1], obs["y"][:, 1])
    r = np.asarray(SO(2).exp(jnp.array([0.7])))
    np.testing.assert_allclose(cf["y"][:, [2, 0]], obs["y"][:, [2, 0]] @ r.T, atol=1e-14)


@pytest.mark.parametrize(
    "group", [Multiplicative(3), Multiplicative(), Translation(3), SO(3), Affine1D()]
)
def test_zero_parameters_give_back_observations(lin, group):
    scm, obs = lin
    cf = jc.counterfactual(scm, obs, {"y": Lie(group, jnp.zeros(group.param_shape))})
    np.testing.assert_array_equal(cf["y"], obs["y"])
    np.testing.assert_allclose(cf["z"], obs["z"], atol=1e-13)


def test_per_unit_parameters(lin):
    scm, obs = lin
    n = obs["x"].shape[0]
    us = np.random.default_rng(0).normal(size=(n, 3)) * 0.3
    cf = jc.counterfactual(scm, obs, {"y": Lie(Multiplicative(3), us)})
    np.testing.assert_allclose(cf["y"], np.exp(us) * obs["y"], rtol=1e-14)
    # Per-unit rotations: vmapped exp, one rotation per unit.
    cf = jc.counterfactual(scm, obs, {"y": Lie(SO(3), us)})
    for i in [0, 7, n - 1]:
        r = np.asarray(SO(3).exp(jnp.asarray(us[i])))
        np.testing.assert_allclose(cf["y"][i], r @ obs["y"][i], atol=1e-12)
    # A scalar group with a per-unit factor (n,) scales every component of the unit.
    cf = jc.counterfactual(scm, obs, {"y": Lie(Multiplicative(), us[:, 0])})
    np.testing.assert_allclose(cf["y"], np.exp(us[:, :1]) * obs["y"], rtol=1e-14)


def _cf_loss(scm, obs, group):
    def loss(u):
        cf = jc.counterfactual(scm, obs, {"y": Lie(group, u)})
        return jnp.mean(cf["z"] ** 2) + jnp.mean(cf["y"][:, 0] ** 3)

    return loss


@pytest.mark.parametrize("group", [Multiplicative(3), Translation(3), SO(3)])
def test_gradient_matches_finite_differences(lin, group):
    scm, obs = lin
    loss = _cf_loss(scm, obs, group)
    u0 = jnp.asarray(U)
    grad = jax.grad(loss)(u0)
    h = 1e-6
    fd = [(loss(u0 + h * e) - loss(u0 - h * e)) / (2 * h) for e in jnp.eye(3)]
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def test_vmap_over_parameters_equals_loop(lin):
    scm, obs = lin
    us = jnp.asarray(np.random.default_rng(2).normal(size=(4, 3)) * 0.5)
    for group in [Multiplicative(3), SO(3)]:

        def run(u, group=group):
            return jc.counterfactual(scm, obs, {"y": Lie(group, u)})

        batched = jax.vmap(run)(us)
        for i in range(us.shape[0]):
            one = run(us[i])
            for k in one:
                np.testing.assert_allclose(batched[k][i], one[k], rtol=1e-12, atol=1e-12)


def test_jit_and_grad_through_sampling():
    scm = linear_scm()

    @jax.jit
    def mean_z(u):
        s = jc.sample(jax.random.key(3), jc.do(scm, {"y": Lie(Multiplicative(3), u)}), 200)
        return jnp.mean(s["z"])

    g = jax.grad(mean_z)(jnp.zeros(3))
    # Same noise for every u: d mean(z)/du_k at u = 0 is mean(v_k y_k).
    s = jc.sample(jax.random.key(3), scm, 200)
    np.testing.assert_allclose(g, np.mean(np.asarray(s["y"]) * V, axis=0), rtol=1e-10)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_float32_model_keeps_its_dtype(dtype):
    scm = jc.SCM(
        x=jc.Root(distrax.Normal(jnp.zeros(3, jnp.float32), jnp.float32(1.0))),
        y=jc.Additive(
            lambda p, pa: p @ pa["x"],
            jnp.asarray(W, jnp.float32),
            distrax.Normal(jnp.zeros(3, jnp.float32), jnp.float32(SY)),
            ["x"],
        ),
    )
    obs = jc.sample(jax.random.key(0), scm, 10)
    assert obs["y"].dtype == jnp.float32
    cf = jc.counterfactual(scm, obs, {"y": Lie(Multiplicative(3), jnp.asarray(U, dtype))})
    assert cf["y"].dtype == jnp.float32
    np.testing.assert_allclose(cf["y"], np.exp(U) * np.asarray(obs["y"]), rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# log_prob


def _gaussian_lp(obs, y_mean, y_sd):
    lx = stats.norm.logpdf(obs["x"]).sum(1)
    ly = stats.norm.logpdf(obs["y"], y_mean, y_sd).sum(1)
    return lx + ly


def test_log_prob_multiplicative_matches_scipy():
    scm = linear_scm()
    iv = Lie(Multiplicative(3), U)
    obs = jc.sample(jax.random.key(4), jc.do(scm, {"y": iv}), 40)
    obs = {k: np.asarray(v) for k, v in obs.items()}
    got = jc.log_prob(jc.do(scm, {"y": iv}), obs, per_node=True)
    # y | x ~ N(e^u * W x, (e^u * sy)^2) componentwise.
    mean = np.exp(U) * (obs["x"] @ W.T)
    want = _gaussian_lp(obs, mean, np.exp(U) * SY)
    np.testing.assert_allclose(got["x"] + got["y"], want, rtol=1e-12)
    np.testing.assert_allclose(got["z"], stats.norm.logpdf(obs["z"], obs["y"] @ V, SZ))
    ref = jc.log_prob(jc.do(scm, {"y": jc.Scale(np.exp(U))}), obs)
    np.testing.assert_allclose(got["x"] + got["y"] + got["z"], ref, rtol=1e-12)


def test_log_prob_multiplicative_index_and_per_unit():
    scm = linear_scm()
    n = 30
    us = np.random.default_rng(5).normal(size=(n, 2)) * 0.4
    iv = Lie(Multiplicative(2), us, index=[1, 2])
    obs = jc.sample(jax.random.key(5), jc.do(scm, {"y": iv}), n)
    obs = {k: np.asarray(v) for k, v in obs.items()}
    got = jc.log_prob(jc.do(scm, {"y": iv}), obs, per_node=True)
    scale = np.concatenate([np.ones((n, 1)), np.exp(us)], axis=1)
    want = _gaussian_lp(obs, scale * (obs["x"] @ W.T), scale * SY)
    np.testing.assert_allclose(got["x"] + got["y"], want, rtol=1e-12)


def test_log_prob_translation_and_rotation_match_scipy():
    scm = linear_scm()
    iv = Lie(Translation(3), U)
    obs = jc.sample(jax.random.key(6), jc.do(scm, {"y": iv}), 40)
    obs = {k: np.asarray(v) for k, v in obs.items()}
    got = jc.log_prob(jc.do(scm, {"y": iv}), obs, per_node=True)
    want = _gaussian_lp(obs, obs["x"] @ W.T + U, SY)
    np.testing.assert_allclose(got["x"] + got["y"], want, rtol=1e-12)
    # A rotation of isotropic noise: y | x ~ N(R W x, sy^2 I).
    iv = Lie(SO(3), U)
    got = jc.log_prob(jc.do(scm, {"y": iv}), obs, per_node=True)
    r = np.asarray(SO(3).exp(jnp.asarray(U)))
    want = _gaussian_lp(obs, obs["x"] @ (r @ W).T, SY)
    np.testing.assert_allclose(got["x"] + got["y"], want, rtol=1e-12)


def test_log_prob_without_log_det_raises(lin):
    scm, obs = lin
    m = jc.do(scm, {"z": Lie(Affine1D(), [0.1, 0.2])})
    with pytest.raises(ValueError, match="log_det_jacobian.*Affine1D"):
        jc.log_prob(m, obs)
    # Sampling and counterfactuals work for the user's group all the same.
    cf = jc.counterfactual(scm, obs, {"z": Lie(Affine1D(), [0.1, 0.2])})
    a, b = np.asarray(Affine1D().exp(jnp.array([0.1, 0.2])))
    np.testing.assert_allclose(cf["z"], a * obs["z"] + b, atol=1e-14)


# ----------------------------------------------------------------------------------------------
# errors


def test_intervention_errors(lin):
    scm, obs = lin
    with pytest.raises(ValueError, match="'y'.*cannot act"):
        jc.counterfactual(scm, obs, {"y": Lie(Multiplicative(4), jnp.zeros(4))})
    with pytest.raises(ValueError, match="'y'.*cannot act"):
        jc.counterfactual(scm, obs, {"y": Lie(SO(2), [0.1])})
    with pytest.raises(ValueError, match="'y'.*out of range"):
        jc.counterfactual(scm, obs, {"y": Lie(Multiplicative(2), [0.1, 0.2], index=[0, 3])})
    with pytest.raises(ValueError, match="'y'.*twice"):
        jc.counterfactual(scm, obs, {"y": Lie(Multiplicative(2), [0.1, 0.2], index=[0, -3])})
    with pytest.raises(ValueError, match="repeated"):
        Lie(Multiplicative(2), [0.1, 0.2], index=[1, 1])
    with pytest.raises(ValueError, match="'z'.*scalar"):
        jc.counterfactual(scm, obs, {"z": Lie(Multiplicative(), 0.1, index=[0])})
    with pytest.raises(ValueError, match="'y'.*Lie parameters.*does not broadcast"):
        jc.counterfactual(scm, obs, {"y": Lie(Multiplicative(3), jnp.zeros((7, 3)))})
    with pytest.raises(ValueError, match="too many axes"):
        jc.do(scm, {"y": Lie(Multiplicative(3), jnp.zeros((2, 2, 3)))})
    with pytest.raises(TypeError, match="LieGroup"):
        Lie(Multiplicative, 0.1)


def test_lie_refuses_categorical_node():
    scm = jc.SCM(
        c=jc.GumbelMax(lambda p, pa: p, jnp.zeros(3), 3),
    )
    with pytest.raises(ValueError, match="'c' is categorical"):
        jc.do(scm, {"c": Lie(Multiplicative(), 0.1)})


# ----------------------------------------------------------------------------------------------
# distributed interventions at equilibrium (the paper's example, eq. 4)

ALPHA, BETA, GAMMA = 0.5, 0.4, 0.8


def eq4_scm():
    return EquilibriumSCM(
        x=jc.Root(distrax.Uniform(0.5, 1.5)),
        y=jc.Additive(
            lambda p, pa: p["a"] * pa["x"] + p["b"] * pa["z"],
            {"a": ALPHA, "b": BETA},
            distrax.Normal(0.0, 0.0),
            ["x", "z"],
        ),
        z=jc.Additive(lambda p, pa: p * pa["y"], GAMMA, distrax.Normal(0.0, 0.0), ["y"]),
    )


def _eq4_closed_form(tau, uy, uz):
    # y = uy (a x + b z), z = uz g y  =>  y = uy a x / (1 - uy uz b g)
    y = uy * ALPHA * tau / (1 - uy * uz * BETA * GAMMA)
    return y, uz * GAMMA * y


def test_distributed_builds_one_lie_per_node():
    ivs = distributed(Multiplicative(), {"y": 0.1, "z": -0.2})
    assert set(ivs) == {"y", "z"} and all(isinstance(v, Lie) for v in ivs.values())
    np.testing.assert_allclose(ivs["z"].u, -0.2)
    ivs = distributed(
        {"a": Multiplicative(2), "b": Translation()}, {"a": [0.1, 0.2], "b": 1.0}, {"a": [0, 3]}
    )
    assert ivs["a"].index == (0, 3) and ivs["b"].index is None
    assert isinstance(ivs["b"].group, Translation)
    with pytest.raises(ValueError, match="no group given for node 'b'"):
        distributed({"a": Multiplicative()}, {"a": 0.1, "b": 0.2})
    with pytest.raises(ValueError, match="without parameters"):
        distributed(Multiplicative(), {"a": 0.1}, {"b": [0]})


def test_distributed_multiplicative_at_equilibrium_and_its_gradient():
    scm = eq4_scm()
    obs = jc.sample(jax.random.key(7), scm, 20)
    tau = np.asarray(obs["x"])
    y0, _ = _eq4_closed_form(tau, 1.0, 1.0)
    np.testing.assert_allclose(obs["y"], y0, rtol=1e-8)

    def run(u):
        ivs = distributed(Multiplicative(), {"y": u[0], "z": u[1]})
        return jc.counterfactual(scm, obs, ivs)

    u = jnp.array([0.2, -0.3])
    cf = run(u)
    y, z = _eq4_closed_form(tau, np.exp(0.2), np.exp(-0.3))
    np.testing.assert_allclose(cf["y"], y, rtol=1e-8)
    np.testing.assert_allclose(cf["z"], z, rtol=1e-8)
    np.testing.assert_array_equal(cf["x"], obs["x"])

    # Proposition 2: the intervened equilibrium is smooth in u; implicit gradients agree with
    # the derivative of the closed form.
    grad = jax.grad(lambda u: jnp.sum(run(u)["y"]))(u)

    def closed(u):
        return np.sum(_eq4_closed_form(tau, np.exp(u[0]), np.exp(u[1]))[0])

    h = 1e-6
    fd = [(closed(u + h * e) - closed(u - h * e)) / (2 * h) for e in np.eye(2)]
    np.testing.assert_allclose(grad, fd, rtol=1e-6)
