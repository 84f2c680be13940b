"""linear_fixed_point: x = A x + b with the matrix given, checked against numpy and differences."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest

import jcausal as jc
from jcausal.solvers import RESULTS, Auto, FixedPointError, Newton, linear_fixed_point


def _rel(x, ref):
    return float(np.linalg.norm(np.asarray(x) - ref) / np.linalg.norm(ref))


SOLVERS = {
    "auto": None,
    "lu": Newton(linear_solver="lu"),
    "gmres": Newton(linear_solver="gmres"),
    "bicgstab": Newton(linear_solver="bicgstab"),
    "anderson": jc.Anderson(),
}


def _system(n=40, rho=0.8, seed=0, blocks=False):
    rng = np.random.default_rng(seed)
    a = rng.random((n, n)) ** 3
    if blocks:  # regional blocks, sparse trade between them
        region = np.arange(n) // 10
        a *= np.where(region[:, None] == region[None, :], 1.0, rng.random((n, n)) < 0.05)
    a *= rho / np.max(np.abs(np.linalg.eigvals(a)))
    return a, rng.uniform(0.5, 1.5, n)


@pytest.mark.parametrize("name", list(SOLVERS))
@pytest.mark.parametrize("blocks", [False, True])
def test_values_and_gradients_match_numpy_and_differences(name, blocks):
    a, y = _system(blocks=blocks)
    n = len(y)
    solver = SOLVERS[name]
    ref = np.linalg.solve(np.eye(n) - a, y)
    x, rep = linear_fixed_point(a, y, solver=solver)
    assert rep.result == RESULTS.successful
    assert float(rep.relative_residual) <= 1e-10
    np.testing.assert_allclose(x, ref, rtol=1e-9)

    w = jnp.asarray(np.random.default_rng(3).standard_normal(n))

    def loss(a_, y_):
        return w @ linear_fixed_point(a_, y_, solver=solver)[0]

    ga, gy = jax.grad(loss, argnums=(0, 1))(jnp.asarray(a), jnp.asarray(y))
    # Closed form: g = (I - A)^{-T} w, dL/dA = g x^T, dL/dy = g ...
    g = np.linalg.solve((np.eye(n) - a).T, np.asarray(w))
    assert _rel(gy, g) <= 1e-9
    assert _rel(ga, np.outer(g, ref)) <= 1e-9
    # ... and a central difference along a random direction (independent of the formula).
    rng = np.random.default_rng(4)
    da, dy = rng.standard_normal(a.shape) * 0.01, rng.standard_normal(n)
    h = 1e-5

    def ref_loss(t):
        return float(np.asarray(w) @ np.linalg.solve(np.eye(n) - a - t * da, y + t * dy))

    fd = (ref_loss(h) - ref_loss(-h)) / (2 * h)
    np.testing.assert_allclose(float(jnp.sum(ga * da) + gy @ dy), fd, rtol=1e-6)


def test_batches_jit_and_float32():
    a, y = _system(n=30)
    rng = np.random.default_rng(1)
    u = 0.05 * rng.standard_normal((6, 30))
    # A batch of row-scaling interventions A_u = diag(exp u) A, b_u = exp(u) y.
    A = jnp.exp(u)[:, :, None] * a
    b = jnp.exp(u) * y
    x, rep = jax.jit(jax.vmap(lambda A_, b_: linear_fixed_point(A_, b_)))(A, b)
    for i in range(6):
        np.testing.assert_allclose(x[i], np.linalg.solve(np.eye(30) - A[i], b[i]), rtol=1e-10)
    assert bool(jnp.all(rep.converged)) and rep.num_steps.shape == (6,)
    # float32 in, float32 out, to float32 accuracy
    x32, rep32 = linear_fixed_point(a.astype(np.float32), y.astype(np.float32))
    assert x32.dtype == jnp.float32 and bool(rep32.converged)
    np.testing.assert_allclose(x32, np.linalg.solve(np.eye(30) - a, y), rtol=1e-5)


def test_auto_factorises_small_maps_and_iterates_large_ones():
    a, y = _system(n=30)
    small = linear_fixed_point(a, y, solver=Auto(direct_max=30))[1]
    large = linear_fixed_point(a, y, solver=Auto(direct_max=29))[1]
    assert int(small.num_steps) == 3  # start, the LU solution, its refinement
    assert int(large.num_steps) > 3  # Anderson's iterations
    # A map given as a function, affine (read from its jaxpr) and small: the LU of its
    # Jacobian (start, solution, refinement), with gradients; nonlinear: Anderson, exactly as
    # without Auto.
    ref = np.linalg.solve(np.eye(30) - a, y)
    x, rep = jc.fixed_point(lambda x, p: p[0] @ x + p[1], jnp.zeros(30), (a, y), solver=Auto())
    assert int(rep.num_steps) == 3 and float(rep.relative_residual) < 1e-14
    np.testing.assert_allclose(x, ref, rtol=1e-13)
    w = np.random.default_rng(3).standard_normal(30)
    ga, gy = jax.jit(jax.grad(
        lambda a_, y_: jnp.asarray(w) @ jc.fixed_point(
            lambda x, p: p[0] @ x + p[1], jnp.zeros(30), (a_, y_), solver=Auto())[0],
        argnums=(0, 1),
    ))(a, y)  # fmt: skip
    g = np.linalg.solve(np.eye(30) - a.T, w)
    np.testing.assert_allclose(gy, g, rtol=1e-12)
    np.testing.assert_allclose(ga, np.outer(g, ref), rtol=1e-12, atol=1e-14)
    fn = lambda x, p: jnp.tanh(p[0] @ x) + p[1]
    x, rep = jc.fixed_point(fn, jnp.zeros(30), (a, y), solver=Auto())
    ref_x, ref_rep = jc.fixed_point(fn, jnp.zeros(30), (a, y), solver=jc.Anderson())
    np.testing.assert_array_equal(x, ref_x)
    assert int(rep.num_steps) == int(ref_rep.num_steps) > 3


def test_affine_maps_are_recognised_and_nothing_else():
    from jcausal.solvers.affine import is_affine

    x, a, c = jnp.ones(4), jnp.eye(4), jnp.arange(4.0)
    affine = (
        lambda x, p: p[0] @ x + p[1],
        lambda x, p: (2.0 * x[::-1] - x / 3.0 + jnp.where(p[1] > 1, x, -x)).at[0].set(1.0),
        lambda x, p: jnp.concatenate([x[:2], jnp.sum(x)[None], p[1][:1]]) @ p[0],
        lambda x, p: jax.jit(lambda v: p[0].T @ v)(x) - p[1],
    )
    nonlinear = (
        lambda x, p: jnp.tanh(x) + p[1],
        lambda x, p: x * x,
        lambda x, p: p[1] / x,
        lambda x, p: jnp.where(x > 0, x, 0.0),
        lambda x, p: x**2,
        lambda x, p: jnp.abs(x),
        lambda x, p: p[0][jnp.argmax(x)],
        lambda x, p: jax.jit(lambda v: jnp.exp(v))(x),
    )
    assert all(is_affine(f, x, (a, c)) for f in affine)
    assert not any(is_affine(f, x, (a, c)) for f in nonlinear)


def test_auto_aims_below_rtol_on_large_matrices_and_is_judged_by_rtol():
    a, y = _system(n=110)  # above DIRECT_MAX: Anderson
    ref = np.linalg.solve(np.eye(110) - a, y)
    x, rep = linear_fixed_point(a, y)
    assert float(rep.relative_residual) <= 1e-10 / jc.solvers.AUTO_MARGIN
    np.testing.assert_allclose(x, ref, rtol=1e-11)
    # Below LU_LEVEL_MAX the residual is within 10x of numpy's LU's (and tiny).
    res = [np.linalg.norm(v - a @ v - y) / np.linalg.norm(v) for v in (np.asarray(x), ref)]
    assert res[0] <= max(10 * res[1], 1e-15), res
    k = int(linear_fixed_point(a, y, solver=jc.Anderson())[1].num_steps)
    # With Anderson's budget for rtol = 1e-10, the tighter aim is not reached, rtol is.
    tight = jc.Anderson(rtol=1e-10 / jc.solvers.AUTO_MARGIN, max_steps=k)
    assert linear_fixed_point(a, y, solver=tight, throw=False)[1].result != RESULTS.successful
    for call in (linear_fixed_point, jax.jit(linear_fixed_point, static_argnames="solver")):
        x, rep = call(a, y, solver=Auto(max_steps=k))
        assert rep.result == RESULTS.successful and int(rep.num_steps) == k
        assert 1e-10 / jc.solvers.AUTO_MARGIN < float(rep.relative_residual) <= 1e-10
    # From krylov_min on: GMRES (its own stopping rule, no margin), values and gradients.
    gmres = Auto(krylov_min=110)
    assert gmres.choose(110, linear=True).linear_solver == "gmres"
    x, rep = linear_fixed_point(a, y, solver=gmres)
    assert bool(rep.converged) and float(rep.relative_residual) <= 1e-10
    np.testing.assert_allclose(x, ref, rtol=1e-9)
    w = np.random.default_rng(5).standard_normal(110)
    gy = jax.grad(lambda y_: jnp.asarray(w) @ linear_fixed_point(a, y_, solver=gmres)[0])(y)
    np.testing.assert_allclose(gy, np.linalg.solve(np.eye(110) - a.T, w), rtol=1e-8)
    # float32 keeps its own tolerance (1e-5): a hundred times less is below its rounding.
    x32, rep32 = linear_fixed_point(a.astype(np.float32), y.astype(np.float32))
    assert bool(rep32.converged) and float(rep32.relative_residual) <= 1e-5
    np.testing.assert_allclose(x32, ref, rtol=1e-4)


def test_linear_operator_and_warm_start():
    a, y = _system(n=25)
    ref = np.linalg.solve(np.eye(25) - a, y)
    op = lx.MatrixLinearOperator(jnp.asarray(a))
    x, rep = linear_fixed_point(op, y)
    np.testing.assert_allclose(x, ref, rtol=1e-9)
    # Starting at the solution: no work for an iterative solver, zero gradient w.r.t. x0.
    x, rep = linear_fixed_point(a, y, ref, solver=jc.Anderson())
    assert int(rep.num_steps) == 1
    gx0 = jax.grad(lambda x0: linear_fixed_point(a, y, x0)[0].sum())(jnp.asarray(ref) + 1.0)
    np.testing.assert_array_equal(gx0, 0.0)


def test_unstable_but_nonsingular_system_gets_its_unique_solution():
    # Spectral radius 1.5: Picard iteration diverges (and says so); the LU gives the exact
    # solution (as Anderson's extrapolation does on this 2 x 2 system).
    a = np.array([[1.5, 0.0], [0.2, 0.3]])
    y = np.array([1.0, 1.0])
    x, rep = linear_fixed_point(a, y, solver=Newton(linear_solver="lu"))
    np.testing.assert_allclose(x, np.linalg.solve(np.eye(2) - a, y), rtol=1e-12)
    _, rep = linear_fixed_point(a, y, solver=jc.Forward(), throw=False)
    assert rep.result == RESULTS.diverged


@pytest.mark.parametrize("name", ["auto", "gmres"])
def test_singular_system_is_a_named_error(name):
    a = np.array([[1.0, 0.0], [0.3, 0.5]])  # I - A singular: x_0 = x_0 + 1 has no solution
    y = np.array([1.0, 1.0])
    solver = SOLVERS[name]
    _, rep = linear_fixed_point(a, y, solver=solver, throw=False)
    assert rep.result != RESULTS.successful
    if name == "auto":
        assert rep.result == RESULTS.singular
    with pytest.raises(FixedPointError, match="singular" if name == "auto" else "converge"):
        linear_fixed_point(a, y, solver=solver)
    # Under jit the same sentence comes from equinox's runtime error.
    with pytest.raises(Exception, match="singular" if name == "auto" else "did not converge"):
        eqx.filter_jit(lambda a_: linear_fixed_point(a_, jnp.asarray(y), solver=solver))(
            jnp.asarray(a)
        )


def test_bad_input_is_named():
    a, y = _system(n=5)
    with pytest.raises(ValueError, match="square"):
        linear_fixed_point(a[:, :4], y)
    with pytest.raises(ValueError, match=r"b must have shape \(5,\)"):
        linear_fixed_point(a, y[:4])
    with pytest.raises(ValueError, match="x0 must have shape"):
        linear_fixed_point(a, y, np.zeros(3))
    with pytest.raises(ValueError, match="A must be an array .* not rectangular"):
        linear_fixed_point([[0.1, 0.2], [0.3]], [1.0, 2.0])
    with pytest.raises(TypeError, match="solver object"):
        linear_fixed_point(a, y, solver="lu")
    with pytest.raises(ValueError, match="direct_max"):
        Auto(direct_max=2.5)
    with pytest.raises(ValueError, match="krylov_min"):
        Auto(krylov_min="1000")
    for bad_a, bad_y in [(np.where(np.eye(5) > 0, np.nan, a), y), (a, np.r_[y[:4], np.inf])]:
        for solver in (None, jc.Anderson()):
            _, rep = linear_fixed_point(bad_a, bad_y, solver=solver, throw=False)
            assert rep.result == RESULTS.nonfinite_input
            with pytest.raises(FixedPointError, match="NaN or inf"):
                linear_fixed_point(bad_a, bad_y, solver=solver)


def test_warm_start_at_the_solution_is_converged():
    # Starting at the exact solution leaves a residual at rounding level that cannot shrink:
    # a direct solve must still call it converged (an iterative rule would not).
    a, y = _system(n=20)
    ref = np.linalg.solve(np.eye(20) - a, y)
    for x0 in (ref, np.linalg.solve(np.eye(20) - a, y) * (1 + 1e-15)):
        x, rep = linear_fixed_point(a, y, x0, solver=Newton(linear_solver="lu"))
        assert rep.result == RESULTS.successful
        np.testing.assert_allclose(x, ref, rtol=1e-13)


def test_auto_margin_is_in_the_forward_solve_only_and_iterations_start_at_b():
    a, y = _system(n=110)  # above DIRECT_MAX: Anderson, aiming at an LU's residual
    f64 = jnp.dtype(jnp.float64)
    solver, judge = jc.solvers.linear._pick_new(Auto(), 110, f64, False)
    assert solver.rtol == jc.solvers.LU_LEVEL_EPS * np.finfo(np.float64).eps and judge == 1e-10
    # Above LU_LEVEL_MAX: AUTO_MARGIN below rtol (GMRES's residual, not an LU's).
    big, judge = jc.solvers.linear._pick_new(Auto(), jc.solvers.LU_LEVEL_MAX + 1, f64, False)
    assert big.rtol == 1e-10 / jc.solvers.AUTO_MARGIN and judge == 1e-10
    adjoint = solver.adjoint()
    assert type(adjoint) is jc.Anderson and (adjoint.rtol, adjoint.atol) == (1e-10, 0.0)
    # The gradient is still the closed form to the tolerance asked for.
    w = np.random.default_rng(6).standard_normal(110)
    gy = jax.grad(lambda y_: jnp.asarray(w) @ linear_fixed_point(a, y_)[0])(jnp.asarray(y))
    assert _rel(gy, np.linalg.solve(np.eye(110) - a.T, w)) <= 1e-8
    # No guess: the iteration starts at b = f(0), the same run as x0 = b and one product
    # fewer than from zero.
    s = jc.Anderson()
    x, rep = linear_fixed_point(a, y, solver=s)
    xb, repb = linear_fixed_point(a, y, y, solver=s)
    _, rep0 = linear_fixed_point(a, y, np.zeros(110), solver=s)
    np.testing.assert_array_equal(x, xb)
    assert int(rep.num_steps) == int(repb.num_steps) < int(rep0.num_steps)


@pytest.mark.parametrize("solver", [None, jc.Anderson(), jc.Forward(max_steps=2000)])
def test_eager_iterative_calls_match_the_traced_path(solver):
    # Eagerly an iterative solve runs one cached compiled program; under a user's jit it is
    # traced: same iterates, so the same answer and report, for arrays and for nested lists.
    a, y = _system(n=110, rho=0.6)  # above DIRECT_MAX: Auto iterates
    x, rep = linear_fixed_point(a, y, solver=solver)
    xj, repj = jax.jit(lambda a_, y_: linear_fixed_point(a_, y_, solver=solver))(a, y)
    np.testing.assert_allclose(x, xj, rtol=1e-13)
    assert int(rep.num_steps) == int(repj.num_steps) and rep.result == repj.result
    np.testing.assert_allclose(x, np.linalg.solve(np.eye(110) - a, y), rtol=1e-9)
    xl, _ = linear_fixed_point(a.tolist(), y.tolist(), y.tolist(), solver=solver)
    xw, _ = linear_fixed_point(a, y, y, solver=solver)
    np.testing.assert_array_equal(xl, xw)
    # A failure raises the solver's sentence (here: too few steps for the tolerance).
    small, ys = a[:50, :50], y[:50]  # nested lists on the direct (LU) path too
    np.testing.assert_array_equal(
        linear_fixed_point(small.tolist(), ys.tolist())[0], linear_fixed_point(small, ys)[0]
    )
    few = jc.Anderson(max_steps=3) if solver is None else dataclasses.replace(solver, max_steps=3)
    with pytest.raises(FixedPointError, match="max_steps"):
        linear_fixed_point(a, y, solver=few)
