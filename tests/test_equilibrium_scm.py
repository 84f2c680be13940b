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
    """The system x = tau; y = alpha x + beta z; z = gamma y (Lie paper, eq. 4, unintervened)."""
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
    scm = jc.EquilibriumSCM(economy(A).mechanisms, solver=jc.Forward())
    noise = scm.sample_noise(jax.random.key(8), 1)
    _, report = jc.solve(scm, noise, throw=False)
    assert not bool(report.converged)
    with pytest.raises(Exception, match="(?i)converge"):
        jc.sample(jax.random.key(8), scm, 1)
    # x = x + 1 has no fixed point at all: Anderson reports it too.
    drift = jc.EquilibriumSCM(
        x=jc.Additive(lambda p, pa: pa["x"], None, distrax.Deterministic(1.0), ["x"])
    )
    _, report = jc.solve(drift, {"x": jnp.ones(3)}, throw=False)
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
    """The map x = 2 sigmoid(8 (x - 0.5)) - 0.5 + u has two stable equilibria; init picks one."""

    def f(p, pa):
        return 2.0 * jax.nn.sigmoid(p * (pa["x"] - 0.5)) - 0.5

    mech = jc.Additive(f, 8.0, distrax.Deterministic(0.0), ["x"])
    lo = jc.EquilibriumSCM(x=mech, init={"x": -0.5}, solver=jc.Forward())
    hi = jc.EquilibriumSCM(x=mech, init={"x": 1.5}, solver=jc.Forward())
    a = float(jc.sample(jax.random.key(0), lo, 1)["x"][0])
    b = float(jc.sample(jax.random.key(0), hi, 1)["x"][0])
    for v in (a, b):
        np.testing.assert_allclose(v, float(f(8.0, {"x": v})), atol=1e-8)
    assert a < 0 < 1 < b


# ----------------------------------------------------------------------------------------------
# Failures are reported, with a result code and the solver's message (issue 10, section 2).


def singular_economy(n=6, seed=10):
    """The economy x = A x + y with column-stochastic A, which has no solution for y > 0.

    I - A is singular: 1^T x = 1^T A x + 1^T y forces 1^T y = 0.
    """
    rng = np.random.default_rng(seed)
    A = rng.uniform(size=(n, n))
    return A / A.sum(0)


@pytest.mark.parametrize(
    "solver,result",
    [
        (jc.Anderson(), jc.RESULTS.diverged),
        (jc.Forward(), jc.RESULTS.max_steps_reached),
    ],
)
def test_singular_system_is_not_converged(solver, result):
    scm = jc.EquilibriumSCM(economy(singular_economy()).mechanisms, solver=solver)
    noise = {"x": jnp.ones((1, 6))}
    # Before: converged=True with x ~ -5e10 (jaxopt +9e10), a residual small only relatively.
    _, report = jc.solve(scm, noise, throw=False)
    assert not bool(report.converged)
    assert bool(report.result == result)
    with pytest.raises(jc.FixedPointError, match=r"^fixed_point did not converge"):
        jc.solve(scm, noise)
    # sample and counterfactual compile the solve: the error still starts with its sentence.
    with pytest.raises(jc.FixedPointError, match=r"^fixed_point did not converge"):
        jc.sample(jax.random.key(0), scm, 1)
    # A counterfactual that makes the economy singular: column sums 0.6, scaled by 1 / 0.6.
    ok = jc.EquilibriumSCM(economy(0.6 * singular_economy()).mechanisms, solver=solver)
    obs = jc.sample(jax.random.key(1), ok, 2)
    with pytest.raises(jc.FixedPointError, match=r"^fixed_point did not converge"):
        jc.counterfactual(ok, obs, {"x": jc.Scale(1 / 0.6)})


def test_failure_message_is_the_first_line_under_vmap_and_jit():
    scm = jc.EquilibriumSCM(economy(singular_economy()).mechanisms)
    noises = jnp.ones((3, 1, 6))
    # vmap of jc.solve: one error for the batch, the solver's sentence first.
    with pytest.raises(jc.FixedPointError) as err:
        jax.vmap(lambda u: jc.solve(scm, {"x": u}))(noises)
    assert str(err.value).startswith("fixed_point did not converge: the iteration diverged")
    assert "CpuCallback" not in str(err.value) and "Above is the stack" not in str(err.value)
    # Per-member codes without throwing.
    _, reps = jax.vmap(lambda u: jc.solve(scm, {"x": u}, throw=False))(noises)
    assert bool(jnp.all(reps.result == jc.RESULTS.diverged))
    # Inside a user's jax.jit equinox can only raise through XLA; the message is in the text
    # and `solver_message` recovers it.
    with pytest.raises(Exception) as err:
        jax.block_until_ready(jax.jit(lambda u: jc.solve(scm, {"x": u})[0])(noises[0]))
    msg = jc.solvers.solver_message(err.value)
    assert msg is not None and msg.startswith("fixed_point did not converge: the iteration")


def test_nan_input_is_reported_as_nan():
    A = leontief(seed=11)
    noise = {"x": jnp.ones((1, 8))}
    bad = economy(jnp.asarray(A).at[2, 3].set(jnp.nan))
    _, report = jc.solve(bad, noise, throw=False)
    assert bool(report.result == jc.RESULTS.nonfinite_input)
    with pytest.raises(jc.FixedPointError, match="NaN or inf in the input") as err:
        jc.solve(bad, noise)
    assert "max_steps" not in str(err.value).split(".")[0]
    # NaN in observations: the counterfactual says NaN, not "raise max_steps".
    scm = economy(A)
    obs = jc.sample(jax.random.key(3), scm, 2)
    obs = {"x": obs["x"].at[1, 0].set(jnp.nan)}
    with pytest.raises(jc.FixedPointError, match="^fixed_point did not converge: NaN or inf in"):
        jc.counterfactual(scm, obs, {"x": jc.Scale(0.9)})


def test_deterministic_nodes_need_no_noise():
    """noise=None makes an Additive node deterministic (eq. 4 without Normal(0, 0))."""
    alpha, beta, gamma = 0.5, 0.6, 0.7
    scm = jc.EquilibriumSCM(
        x=jc.Root(distrax.Uniform(0.5, 2.0)),
        y=jc.Additive(
            lambda p, pa: p[0] * pa["x"] + p[1] * pa["z"], (alpha, beta), None, ["x", "z"]
        ),
        z=jc.Additive(lambda p, pa: p * pa["y"], gamma, None, ["y"]),
    )
    assert scm.deterministic == ("y", "z")
    obs, noise = jc.sample(jax.random.key(12), scm, 5, return_noise=True)
    np.testing.assert_array_equal(noise["y"], 0.0)
    tau = np.asarray(obs["x"])
    np.testing.assert_allclose(obs["z"], gamma * alpha * tau / (1 - beta * gamma), rtol=1e-9)
    cf = jc.counterfactual(scm, obs, {"y": jc.Scale(1.2)})
    want = gamma * 1.2 * alpha * tau / (1 - 1.2 * beta * gamma)
    np.testing.assert_allclose(cf["z"], want, rtol=1e-8)
    assert scm.node_shapes()["y"].shape == ()
    # Vector deterministic node in a self-loop: its shape comes from init.
    A = leontief(seed=13)
    loop = jc.EquilibriumSCM(
        y=jc.Root(distrax.Normal(jnp.ones(8), 0.1)),
        x=jc.Additive(lambda p, pa: p @ pa["x"] + pa["y"], jnp.asarray(A), None, ["x", "y"]),
        init={"x": jnp.zeros(8)},
    )
    obs, noise = jc.sample(jax.random.key(14), loop, 3, return_noise=True)
    want = np.linalg.solve(np.eye(8) - A, np.asarray(noise["y"]).T).T
    np.testing.assert_allclose(obs["x"], want, rtol=1e-8)
    with pytest.raises(ValueError, match="init=\\{'x'"):
        jc.EquilibriumSCM(
            x=jc.Additive(lambda p, pa: p @ pa["x"], jnp.asarray(A), None, ["x"])
        ).sample_noise(jax.random.key(0), 1)
    with pytest.raises(ValueError, match="only Additive mechanisms may omit their noise"):
        jc.EquilibriumSCM(
            x=jc.Invertible(lambda p, pa: distrax.Lambda(lambda u: u), None, None, [])
        )


def test_residual_jacobian_is_identity_minus_a():
    A = leontief(seed=15)
    scm = economy(A)
    noise = scm.sample_noise(jax.random.key(15), 2)
    values, _ = jc.solve(scm, noise)
    J, index = jc.scm.residual_jacobian(scm, values, noise)
    # Two units are independent blocks of I - A (units are the leading axis of x).
    want = np.kron(np.eye(2), np.eye(8) - A)
    np.testing.assert_allclose(J, want, atol=1e-12)
    np.testing.assert_array_equal(index["x"], np.arange(16))
