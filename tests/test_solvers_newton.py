"""Newton's method with direct and Krylov linear solves (jcausal.solvers.Newton)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jcausal as jc
from jcausal.solvers import RESULTS, FixedPointError, Newton, fixed_point

KINDS = ["lu", "gmres", "bicgstab"]


def _leontief(n=30, rho=0.8, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.random((n, n)) ** 2
    a *= rho / np.max(np.abs(np.linalg.eigvals(a)))
    return a, rng.uniform(0.5, 1.5, n)


def _map(x, p):
    a, y = p
    return a @ x + y


@pytest.mark.parametrize("kind", KINDS)
def test_affine_map_is_solved_in_one_step_with_exact_gradients(kind):
    a, y = _leontief()
    ref = np.linalg.solve(np.eye(len(y)) - a, y)
    solver = Newton(linear_solver=kind)
    x, rep = fixed_point(_map, jnp.zeros_like(y), (jnp.asarray(a), jnp.asarray(y)), solver=solver)
    assert rep.result == RESULTS.successful and int(rep.num_steps) == 2  # start + solution
    np.testing.assert_allclose(x, ref, rtol=1e-9)

    # d sum(x) / dA = w x^T with w = (I - A)^{-T} 1 (closed form), and d/dy = w.
    def total(a_, y_):
        return jnp.sum(fixed_point(_map, jnp.zeros_like(y_), (a_, y_), solver=solver)[0])

    ga, gy = jax.grad(total, argnums=(0, 1))(jnp.asarray(a), jnp.asarray(y))
    w = np.linalg.solve((np.eye(len(y)) - a).T, np.ones(len(y)))
    np.testing.assert_allclose(ga, np.outer(w, ref), rtol=1e-8)
    np.testing.assert_allclose(gy, w, rtol=1e-8)


@pytest.mark.parametrize("kind", KINDS)
def test_nonlinear_map_converges_like_anderson_and_batches(kind):
    rng = np.random.default_rng(1)
    w = jnp.asarray(rng.normal(size=(20, 20)) * 0.15)

    def f(x, b):
        return jnp.tanh(w @ x + b)

    b = jnp.asarray(rng.normal(size=(5, 20)))
    solve = jax.vmap(
        lambda b_: fixed_point(f, jnp.zeros(20), b_, solver=Newton(linear_solver=kind))
    )
    x, rep = jax.jit(solve)(b)
    ref, _ = jax.vmap(lambda b_: fixed_point(f, jnp.zeros(20), b_, solver=jc.Anderson()))(b)
    assert bool(jnp.all(rep.converged))
    np.testing.assert_allclose(x, ref, atol=1e-8)
    np.testing.assert_allclose(x, jnp.tanh(x @ w.T + b), atol=1e-9)
    assert int(jnp.max(rep.num_steps)) < 10  # quadratic convergence: few steps


def test_singular_system_is_a_failure_not_a_number():
    a = np.array([[1.0, 0.0], [0.0, 0.5]])  # I - A singular: x0 = x0 + 1 has no solution
    y = np.array([1.0, 1.0])
    p = (jnp.asarray(a), jnp.asarray(y))
    _, rep = fixed_point(_map, jnp.zeros(2), p, solver=Newton(), throw=False)
    assert rep.result != RESULTS.successful
    with pytest.raises(FixedPointError):
        fixed_point(_map, jnp.zeros(2), p, solver=Newton())


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="linear_solver must be one of"):
        Newton(linear_solver="qr")
    with pytest.raises(ValueError, match="restart must be a positive integer"):
        Newton(restart=0)
    with pytest.raises(ValueError, match="max_steps"):
        Newton(max_steps=0)


def test_models_take_a_newton_solver_and_agree_with_anderson():
    from jcausal.economy import IOModel

    a, y = _leontief(12, 0.7, seed=3)
    u = jnp.linspace(-0.3, 0.2, 12)
    xs = {}
    for name, solver in {
        "anderson": jc.Anderson(),
        "newton": Newton(linear_solver="gmres"),
    }.items():
        model = IOModel(a, y, solver=solver)
        x, rep = model.solve(u)
        assert bool(rep.converged)
        g = jax.grad(lambda u_: jnp.sum(model.solve(u_)[0]))(u)
        xs[name] = (np.asarray(x), np.asarray(g))
    np.testing.assert_allclose(xs["newton"][0], xs["anderson"][0], rtol=1e-9)
    np.testing.assert_allclose(xs["newton"][1], xs["anderson"][1], rtol=1e-7)
