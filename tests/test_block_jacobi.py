"""BlockJacobi: Anderson on the block-Jacobi preconditioned x = A x + b (numpy as reference)."""

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest

import jcausal as jc
from jcausal.solvers import RESULTS, Anderson, FixedPointError, fixed_point, linear_fixed_point
from jcausal.solvers.block_jacobi import diagonal_blocks


def regional(n=120, regions=6, trade=0.1, seed=0):
    """Dense blocks within regions, sparse trade between them; column sums 0.5-0.7."""
    rng = np.random.default_rng(seed)
    s = n // regions
    a = np.zeros((n, n))
    for r in range(regions):
        a[r * s : (r + 1) * s, r * s : (r + 1) * s] = rng.random((s, s)) ** 4
    a += trade * rng.random((n, n)) * (rng.random((n, n)) < 0.05)
    a *= rng.uniform(0.5, 0.7, n) / a.sum(0)
    return a, rng.uniform(0.1, 1.0, n), s


def test_blocks_are_the_diagonal_blocks():
    a = np.arange(36.0).reshape(6, 6)
    d = np.asarray(diagonal_blocks(jnp.asarray(a), 2))
    for i in range(3):
        np.testing.assert_array_equal(d[i], a[2 * i : 2 * i + 2, 2 * i : 2 * i + 2])


def test_solution_matches_numpy_with_fewer_products():
    a, b, s = regional()
    x, rep = linear_fixed_point(a, b, solver=jc.BlockJacobi(block_size=s))
    ref = np.linalg.solve(np.eye(len(b)) - a, b)
    np.testing.assert_allclose(x, ref, rtol=1e-9)
    assert rep.result == RESULTS.successful
    # the report is the true residual of x = A x + b
    true = np.linalg.norm(a @ np.asarray(x) + b - x) / np.linalg.norm(x)
    np.testing.assert_allclose(float(rep.relative_residual), true, rtol=1e-6)
    assert true <= 1e-10
    _, plain = linear_fixed_point(a, b, solver=Anderson(rtol=1e-10 / 30, history=8))
    assert int(rep.num_steps) < int(plain.num_steps) / 1.5


def test_gradients_are_the_adjoint_ones():
    a, b, s = regional(seed=1)
    g = np.random.default_rng(2).normal(size=len(b))

    @jax.jit
    def loss(a, b):
        return linear_fixed_point(a, b, solver=jc.BlockJacobi(block_size=s))[0] @ g

    da, db = jax.grad(loss, argnums=(0, 1))(a, b)
    m = np.eye(len(b)) - a
    x, lam = np.linalg.solve(m, b), np.linalg.solve(m.T, g)
    np.testing.assert_allclose(db, lam, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(da, np.outer(lam, x), rtol=1e-8, atol=1e-10)


def test_vmap_over_tables_and_demands():
    a, b, s = regional(n=60, regions=3)
    a2 = a * 0.9
    bs = np.stack([b, 2 * b + 0.1])
    solver = jc.BlockJacobi(block_size=s)
    xs, reps = jax.vmap(lambda a, b: linear_fixed_point(a, b, solver=solver))(np.stack([a, a2]), bs)
    for i, ai in enumerate((a, a2)):
        np.testing.assert_allclose(xs[i], np.linalg.solve(np.eye(60) - ai, bs[i]), rtol=1e-9)
    assert bool(jnp.all(reps.converged))


def test_float32():
    a, b, s = regional(n=60, regions=3)
    x, rep = linear_fixed_point(
        a.astype(np.float32), b.astype(np.float32), solver=jc.BlockJacobi(block_size=s)
    )
    assert x.dtype == jnp.float32 and bool(rep.converged)
    np.testing.assert_allclose(x, np.linalg.solve(np.eye(60) - a, b), rtol=1e-4)


def test_bad_configuration_and_input_are_named():
    a, b, s = regional(n=60, regions=3)
    with pytest.raises(ValueError, match="must divide the 60 unknowns"):
        linear_fixed_point(a, b, solver=jc.BlockJacobi(block_size=7))
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="block_size"):
            jc.BlockJacobi(block_size=bad)
    with pytest.raises(TypeError, match="block_size"):
        jc.BlockJacobi(20)  # block_size is keyword-only: 20 would be rtol
    with pytest.raises(TypeError, match="needs A as a matrix"):
        linear_fixed_point(lx.MatrixLinearOperator(jnp.asarray(a)), b,
                           solver=jc.BlockJacobi(block_size=s))  # fmt: skip
    with pytest.raises(TypeError, match="explicit matrix"):
        fixed_point(lambda x, p: 0.5 * x + p, jnp.zeros(3), jnp.ones(3),
                    solver=jc.BlockJacobi(block_size=1))  # fmt: skip
    nan_b = b.copy()
    nan_b[3] = np.nan
    _, rep = linear_fixed_point(a, nan_b, solver=jc.BlockJacobi(block_size=s), throw=False)
    assert rep.result == RESULTS.nonfinite_input


def test_singular_block_is_reported():
    a, b, s = regional(n=60, regions=3)
    a = a.copy()
    a[:s, :s] = 0.0
    a[0, 0] = 1.0  # I - D_0 has a zero row: singular
    _, rep = linear_fixed_point(a, b, solver=jc.BlockJacobi(block_size=s), throw=False)
    assert rep.result == RESULTS.singular and not bool(rep.converged)
    with pytest.raises(FixedPointError, match="singular"):
        linear_fixed_point(a, b, solver=jc.BlockJacobi(block_size=s))
    with pytest.raises(Exception, match="singular"):
        jax.jit(lambda a, b: linear_fixed_point(a, b, solver=jc.BlockJacobi(block_size=s))[0])(
            a, b
        ).block_until_ready()


def test_singular_table_is_not_converged():
    a, b, s = regional(n=60, regions=3, trade=1.0, seed=3)
    a = a / np.max(np.abs(np.linalg.eigvals(a)))  # spectral radius 1: I - A is singular
    _, rep = linear_fixed_point(
        a, b, solver=jc.BlockJacobi(block_size=s, max_steps=200), throw=False
    )
    assert not bool(rep.converged)
    assert rep.result != RESULTS.successful
