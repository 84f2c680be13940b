"""Equilibrium (cyclic) SCMs: closed forms, eq. 4 of the Lie paper, gradients, diagnostics."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jcausal as jc


def leontief(n=8, seed=0, scale=0.6):
    rng = np.random.default_rng(seed)
    A = rng.uniform(size=(n, n))
    A = A / A.sum(0) * rng.uniform(0.5, 0.7, size=n) * scale / 0.6
    return A


def economy(A, demand_loc=1.0):
    n = A.shape[0]
    return jc.EquilibriumSCM(
        x=jc.Additive(
            lambda p, pa: p @ pa["x"],
            jnp.asarray(A),
            distrax.Normal(jnp.full(n, demand_loc), 0.2),
            ["x"],
        )
    )


def test_self_loop_economy_matches_direct_solve():
    A = leontief()
    scm = economy(A)
    obs, noise = jc.sample(jax.random.key(0), scm, 5, return_noise=True)
    want = np.linalg.solve(np.eye(8) - A, np.asarray(noise["x"]).T).T
    np.testing.assert_allclose(obs["x"], want, rtol=1e-8)
    # Abduction recovers the final demand exactly: y = x - A x.
    u = jc.abduct(scm, obs)
    np.testing.assert_allclose(u["x"], noise["x"], atol=1e-8)


def test_counterfactual_scale_matches_closed_form():
    A = leontief()
    scm = economy(A)
    obs, noise = jc.sample(jax.random.key(1), scm, 3, return_noise=True)
    alpha = np.linspace(0.8, 1.2, 8)  # per-sector multiplicative intervention
    cf = jc.counterfactual(scm, obs, {"x": jc.Scale(alpha)})
    y = np.asarray(noise["x"])
    want = np.linalg.solve(np.eye(8) - alpha[:, None] * A, (alpha * y).T).T
    np.testing.assert_allclose(cf["x"], want, rtol=1e-8)


def test_solve_report_and_gradient_against_finite_differences():
    A = leontief(seed=2)
    scm = economy(A)
    noise = scm.sample_noise(jax.random.key(2), 2)
    _, report = jc.solve(scm, noise)
    assert bool(report.converged) and float(report.relative_residual) < 1e-9

    def total_output(log_alpha):
        s = jc.do(scm, {"x": jc.Scale(jnp.exp(log_alpha))})
        return jc.solve(s, noise)[0]["x"].sum()

    u = jnp.asarray(np.random.default_rng(3).normal(scale=0.1, size=8))
    g = jax.grad(total_output)(u)
    for i in [0, 5]:
        e = np.zeros(8)
        e[i] = 1e-6
        fd = (total_output(u + e) - total_output(u - e)) / 2e-6
        np.testing.assert_allclose(g[i], fd, rtol=1e-6)


def eq4_scm(alpha, beta, gamma):
    """x = tau; y = alpha x + beta z; z = gamma y (Lie paper, eq. 4, unintervened)."""
    zero = distrax.Deterministic(0.0)
    return jc.EquilibriumSCM(
        x=jc.Root(distrax.Uniform(0.5, 2.0)),
        y=jc.Additive(
            lambda p, pa: p[0] * pa["x"] + p[1] * pa["z"], (alpha, beta), zero, ["x", "z"]
        ),
        z=jc.Additive(lambda p, pa: p * pa["y"], gamma, zero, ["y"]),
    )


def test_motivating_example_eq4_invariance():
    """With u_z = 1 / u_y, z^(u)(theta) = z*(theta) for random theta and u (appendix C)."""
    rng = np.random.default_rng(4)
    for _ in range(5):
        alpha, beta, gamma = rng.uniform(0.2, 0.9, size=3)
        scm = eq4_scm(alpha, beta, gamma)
        obs = jc.sample(jax.random.key(int(rng.integers(1 << 30))), scm, 16)
        tau = np.asarray(obs["x"])
        z_star = gamma * alpha * tau / (1 - beta * gamma)
        np.testing.assert_allclose(obs["z"], z_star, rtol=1e-9)
        u_y = rng.uniform(0.7, 1.3)
        both = {"y": jc.Scale(u_y), "z": jc.Scale(1 / u_y)}
        cf = jc.counterfactual(scm, obs, both)
        np.testing.assert_allclose(cf["z"], z_star, rtol=1e-8)
        np.testing.assert_allclose(cf["y"], u_y * alpha * tau / (1 - beta * gamma), rtol=1e-8)
        # Without the compensation z moves.
        only_y = jc.counterfactual(scm, obs, {"y": jc.Scale(u_y)})
        z_moved = gamma * u_y * alpha * tau / (1 - u_y * beta * gamma)
        np.testing.assert_allclose(only_y["z"], z_moved, rtol=1e-8)
        assert np.all(np.abs(np.asarray(only_y["z"]) - z_star) > 1e-3 * np.abs(z_star))


def test_hard_intervention_on_a_cycle():
    scm = eq4_scm(0.5, 0.6, 0.7)
    obs = jc.sample(jax.random.key(5), scm, 10)
    cf = jc.counterfactual(scm, obs, {"z": jc.Hard(2.0)})
    np.testing.assert_allclose(cf["y"], 0.5 * np.asarray(obs["x"]) + 0.6 * 2.0, rtol=1e-10)
    np.testing.assert_array_equal(cf["z"], 2.0)
    np.testing.assert_array_equal(cf["x"], obs["x"])


def test_vmap_over_interventions_equals_loop():
    A = leontief(seed=6)
    scm = economy(A)
    obs = jc.sample(jax.random.key(6), scm, 2)
    alphas = jnp.linspace(0.8, 1.2, 5)
    f = lambda a: jc.counterfactual(scm, obs, {"x": jc.Scale(a)})["x"]
    batched = jax.vmap(f)(alphas)
    for i, a in enumerate(alphas):
        np.testing.assert_allclose(batched[i], f(a), rtol=1e-9)


def test_solvability_proposition_1():
    scm = eq4_scm(0.5, 0.6, 0.7)
    noise = scm.sample_noise(jax.random.key(7), 1)
    values, _ = jc.solve(scm, noise)
    rep = jc.solvability(scm, values, noise)
    J = np.array([[1, 0, 0], [-0.5, 1, -0.6], [0, -0.7, 1]])
    s = np.linalg.svd(J, compute_uv=False)
    assert bool(rep.locally_unique)
    np.testing.assert_allclose(rep.min_singular_value, s[-1], rtol=1e-10)
    np.testing.assert_allclose(rep.condition_number, s[0] / s[-1], rtol=1e-10)
    # beta * gamma = 1: y - beta z and z - gamma y are dependent, the equilibrium is not unique.
    bad = eq4_scm(0.0, 2.0, 0.5)
    vals = {"x": jnp.ones(1), "y": jnp.ones(1) * 2.0, "z": jnp.ones(1)}
    rep = jc.solvability(bad, vals, {k: jnp.zeros(1) for k in "xyz"} | {"x": jnp.ones(1)})
    assert not bool(rep.locally_unique)
    with pytest.raises(ValueError, match="not locally unique"):
        jc.solvability(bad, vals, {k: jnp.zeros(1) for k in "xyz"}, raise_if_singular=True)


def test_non_convergence_is_reported_not_returned():
    A = leontief(seed=8, scale=1.4)  # column sums > 1: spectral radius > 1
    assert np.max(np.abs(np.linalg.eigvals(A))) > 1
    # Forward iteration diverges on it.
    scm = jc.EquilibriumSCM(economy(A).mechanisms, solver=jc.Solver(method="forward"))
    noise = scm.sample_noise(jax.random.key(8), 1)
    _, report = jc.solve(scm, noise, strict=False)
    assert not bool(report.converged)
    with pytest.raises(Exception, match="(?i)converge"):
        jc.sample(jax.random.key(8), scm, 1)
    # x = x + 1 has no fixed point at all: Anderson reports it too.
    drift = jc.EquilibriumSCM(
        x=jc.Additive(lambda p, pa: pa["x"], None, distrax.Deterministic(1.0), ["x"])
    )
    _, report = jc.solve(drift, {"x": jnp.ones(3)}, strict=False)
    assert not bool(report.converged)
    assert float(report.relative_residual) > 1e-3
    with pytest.raises(Exception, match="(?i)converge"):
        jc.sample(jax.random.key(0), drift, 3)


def test_float32_equilibrium():
    A = leontief(seed=9).astype(np.float32)
    n = A.shape[0]
    scm = jc.EquilibriumSCM(
        x=jc.Additive(
            lambda p, pa: p @ pa["x"],
            jnp.asarray(A),
            distrax.Normal(jnp.ones(n, jnp.float32), jnp.float32(0.2)),
            ["x"],
        )
    )
    obs, noise = jc.sample(jax.random.key(9), scm, 4, return_noise=True)
    assert obs["x"].dtype == jnp.float32
    want = np.linalg.solve(np.eye(n) - A.astype(np.float64), np.asarray(noise["x"], float).T).T
    np.testing.assert_allclose(obs["x"], want, rtol=1e-5)


def test_equilibrium_errors():
    with pytest.raises(ValueError, match="'c' is categorical"):
        jc.EquilibriumSCM(
            x=jc.Root(distrax.Normal(0.0, 1.0)),
            c=jc.GumbelMax(lambda p, pa: jnp.stack([0.0, pa["x"]]), None, 2, ["x"]),
        )
    scm = eq4_scm(0.5, 0.6, 0.7)
    with pytest.raises(ValueError, match="acyclic"):
        jc.log_prob(scm, jc.sample(jax.random.key(0), scm, 2))
    with pytest.raises(ValueError, match="noise lacks nodes \\['z'\\]"):
        jc.solve(scm, {"x": jnp.ones(1), "y": jnp.zeros(1)})
    # An acyclic SCM still refuses the same cycle, naming it.
    with pytest.raises(jc.CycleError, match="y -> z -> y"):
        jc.SCM(eq4_scm(0.5, 0.6, 0.7).mechanisms)


def test_initialisation_selects_the_equilibrium():
    """x = 2 sigmoid(8 (x - 0.5)) - 0.5 + u has two stable equilibria; init picks one."""

    def f(p, pa):
        return 2.0 * jax.nn.sigmoid(p * (pa["x"] - 0.5)) - 0.5

    mech = jc.Additive(f, 8.0, distrax.Deterministic(0.0), ["x"])
    lo = jc.EquilibriumSCM(x=mech, init={"x": -0.5}, solver=jc.Solver(method="forward"))
    hi = jc.EquilibriumSCM(x=mech, init={"x": 1.5}, solver=jc.Solver(method="forward"))
    a = float(jc.sample(jax.random.key(0), lo, 1)["x"][0])
    b = float(jc.sample(jax.random.key(0), hi, 1)["x"][0])
    for v in (a, b):
        np.testing.assert_allclose(v, float(f(8.0, {"x": v})), atol=1e-8)
    assert a < 0 < 1 < b
