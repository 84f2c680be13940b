"""Tests for `jcausal.solvers`: accuracy vs LU, implicit gradients, batching, failure reports.

Precision is set per test with the `jax.enable_x64` context manager (never globally), so that
float32 tests really run in float32 and other test files are unaffected.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jcausal.solvers import (
    RESULTS,
    Anderson,
    FixedPointError,
    FixedPointReport,
    Forward,
    fixed_point,
    relative_residual,
)

SOLVERS = {"anderson": Anderson, "forward": Forward}
CASES = list(SOLVERS)


def leontief(n, seed=0, dtype=np.float64):
    """Nonnegative A with column sums in [0.5, 0.7] (spectral radius <= 0.7), y > 0."""
    rng = np.random.default_rng(seed)
    a = rng.random((n, n))
    a *= rng.uniform(0.5, 0.7, n) / a.sum(0)
    y = rng.uniform(0.1, 1.0, n)
    return a.astype(dtype), y.astype(dtype)


def linear_map(x, p):
    a, y = p
    return a @ x + y


def rel_err(x, ref):
    x = np.asarray(x, np.float64)
    return np.linalg.norm(x - ref) / np.linalg.norm(ref)


@pytest.mark.parametrize("kind", CASES)
def test_linear_matches_lu_float64(kind):
    with jax.enable_x64(True):
        a, y = leontief(120, seed=1)
        ref = np.linalg.solve(np.eye(120) - a, y)
        solve = jax.jit(
            lambda p: fixed_point(linear_map, jnp.zeros(120), p, solver=SOLVERS[kind](rtol=1e-13))
        )
        x, rep = solve((jnp.asarray(a), jnp.asarray(y)))
        assert x.dtype == jnp.float64
        assert isinstance(rep, FixedPointReport)
        assert bool(rep.converged)
        # converged means ||x - f(x)|| <= rtol ||x|| + atol (default atol 1e-12).
        assert float(rep.relative_residual) <= 1e-13 + 1e-12 / float(jnp.linalg.norm(x))
        assert rel_err(x, ref) < 1e-10
        # The report describes the returned point exactly.
        direct = relative_residual(linear_map, x, (jnp.asarray(a), jnp.asarray(y)))
        assert float(direct) == pytest.approx(float(rep.relative_residual), rel=1e-3, abs=1e-15)


@pytest.mark.parametrize("kind", CASES)
def test_linear_matches_lu_float32(kind):
    with jax.enable_x64(False):
        a, y = leontief(150, seed=2, dtype=np.float32)
        ref = np.linalg.solve(np.eye(150) - a.astype(np.float64), y.astype(np.float64))
        x, rep = jax.jit(
            lambda p: fixed_point(
                linear_map,
                jnp.zeros(150, jnp.float32),
                p,
                solver=SOLVERS[kind](rtol=1e-6),
            )
        )((jnp.asarray(a), jnp.asarray(y)))
        assert x.dtype == jnp.float32
        assert rep.relative_residual.dtype == jnp.float32
        assert bool(rep.converged)
        assert rel_err(x, ref) < 1e-5


def test_solvers_agree_and_beta():
    with jax.enable_x64(True):
        a, y = leontief(100, seed=3)
        p = (jnp.asarray(a), jnp.asarray(y))
        sols = {}
        for name, solver in (
            ("anderson", Anderson(rtol=1e-12)),
            ("anderson beta=2", Anderson(beta=2.0, rtol=1e-12)),
            ("forward", Forward(rtol=1e-12)),
        ):
            x, rep = fixed_point(linear_map, jnp.zeros(100), p, solver=solver)
            assert bool(rep.converged), name
            sols[name] = np.asarray(x)
        base = sols["anderson"]
        for key, x in sols.items():
            assert rel_err(x, base) < 1e-10, key
        # Anderson must beat plain forward iteration on this problem.
        _, rep_fwd = fixed_point(linear_map, jnp.zeros(100), p, solver=Forward(rtol=1e-12))
        _, rep_and = fixed_point(linear_map, jnp.zeros(100), p, solver=Anderson(rtol=1e-12))
        assert int(rep_and.num_steps) < int(rep_fwd.num_steps) / 2


@pytest.mark.parametrize("kind", CASES)
def test_implicit_gradients(kind):
    n = 40
    with jax.enable_x64(True):
        a_np, y_np = leontief(n, seed=4)
        a, y = jnp.asarray(a_np), jnp.asarray(y_np)
        w = jnp.asarray(np.random.default_rng(5).standard_normal(n))

        def loss(a, y):
            x, _ = fixed_point(linear_map, jnp.zeros(n), (a, y), solver=SOLVERS[kind](rtol=1e-13))
            return w @ jnp.sin(x)

        def loss_lu(a, y):
            return w @ jnp.sin(jnp.linalg.solve(jnp.eye(n) - a, y))

        ga, gy = jax.jit(jax.grad(loss, argnums=(0, 1)))(a, y)
        ra, ry = jax.grad(loss_lu, argnums=(0, 1))(a, y)
        assert rel_err(ga, np.asarray(ra)) < 1e-9
        assert rel_err(gy, np.asarray(ry)) < 1e-9

        # Central finite differences along random directions.
        rng = np.random.default_rng(6)
        h = 1e-5
        for _ in range(2):
            da = jnp.asarray(rng.standard_normal((n, n)) * a_np)
            dy = jnp.asarray(rng.standard_normal(n))
            fd = (loss(a + h * da, y + h * dy) - loss(a - h * da, y - h * dy)) / (2 * h)
            an = jnp.vdot(ga, da) + jnp.vdot(gy, dy)
            assert float(fd) == pytest.approx(float(an), rel=1e-6)


def test_gradients_closure_and_x0():
    n = 30
    with jax.enable_x64(True):
        a, y = map(jnp.asarray, leontief(n, seed=7))

        def scaled(s):
            # `s` is closed over (a tracer under grad), not passed as params.
            x, _ = fixed_point(
                lambda x, _: s * (a @ x) + y, jnp.zeros(n), None, solver=Anderson(rtol=1e-13)
            )
            return x.sum()

        ref = jax.grad(lambda s: jnp.linalg.solve(jnp.eye(n) - s * a, y).sum())(0.9)
        assert float(jax.grad(scaled)(0.9)) == pytest.approx(float(ref), rel=1e-9)

        g0 = jax.grad(lambda x0: fixed_point(linear_map, x0, (a, y))[0].sum())(jnp.ones(n))
        assert np.all(np.asarray(g0) == 0)


def test_vmap_matches_loop():
    n, b = 60, 5
    with jax.enable_x64(True):
        a, _ = leontief(n, seed=8)
        a = jnp.asarray(a)
        ys = jnp.asarray(np.random.default_rng(9).uniform(0.1, 1.0, (b, n)))
        solve = jax.jit(
            lambda y: fixed_point(linear_map, jnp.zeros(n), (a, y), solver=Anderson(rtol=1e-12))
        )
        xs, reps = jax.vmap(solve)(ys)
        assert xs.shape == (b, n)
        assert reps.num_steps.shape == (b,) and reps.converged.shape == (b,)
        assert bool(reps.converged.all())
        for i in range(b):
            x_i, _ = solve(ys[i])
            assert rel_err(xs[i], np.asarray(x_i)) < 1e-11
        ref = np.linalg.solve(np.eye(n) - np.asarray(a), np.asarray(ys).T).T
        assert rel_err(xs, ref) < 1e-10
        # Batched gradients (per-example) agree with the LU ones.
        grads = jax.vmap(jax.grad(lambda y: solve(y)[0].sum()))(ys)
        ref_g = np.linalg.solve(np.eye(n) - np.asarray(a).T, np.ones(n))
        assert rel_err(grads, np.broadcast_to(ref_g, (b, n))) < 1e-10


@pytest.mark.parametrize("method,max_steps", [("anderson", 16), ("forward", 150)])
def test_vmap_members_stop_like_single_solves(method, max_steps):
    """Under vmap each member takes exactly the steps of its own unbatched solve."""
    n = 40
    with jax.enable_x64(True):
        a, y = map(jnp.asarray, leontief(n, seed=13))
        # Spectral radius ~0.6 * scale: members need different step counts (Anderson 13, 8, 14,
        # 6 and 18; forward 52, 14, 137, 9 and never), so the last one runs out of max_steps.
        scales = jnp.asarray([1.0, 0.2, 1.4, 0.05, 2.5])

        def solve(s):
            return fixed_point(
                linear_map,
                jnp.zeros(n),
                (s * a, y),
                solver=SOLVERS[method](rtol=1e-12, max_steps=max_steps),
                throw=False,
            )

        xs, reps = jax.jit(jax.vmap(solve))(scales)
        steps = [int(s) for s in reps.num_steps]
        assert len(set(steps)) >= 3, steps
        assert [bool(c) for c in reps.converged] == [True, True, True, True, False]
        # The last member (spectral radius ~1.5) runs out of steps (Anderson) or is stopped
        # as diverged (forward iteration grows geometrically).
        last = RESULTS.max_steps_reached if method == "anderson" else RESULTS.diverged
        assert bool((reps.result == last)[-1])
        assert steps[-1] == max_steps if method == "anderson" else steps[-1] < max_steps
        for i, s in enumerate(scales):
            x_i, rep_i = jax.jit(solve)(s)
            assert int(rep_i.num_steps) == steps[i]
            assert bool(rep_i.converged) == bool(reps.converged[i])
            assert int(rep_i.result._value) == int(reps.result._value[i])
            assert float(reps.relative_residual[i]) == pytest.approx(
                float(rep_i.relative_residual), rel=1e-6
            )
            if i < 4:
                ref = np.linalg.solve(np.eye(n) - float(s) * np.asarray(a), np.asarray(y))
                assert rel_err(xs[i], ref) < 1e-10
                assert rel_err(xs[i], np.asarray(x_i)) < 1e-13


def test_vmap_closures_nesting_and_batched_x0():
    n = 25
    with jax.enable_x64(True):
        a, y = map(jnp.asarray, leontief(n, seed=14))
        lu = lambda rhs: np.linalg.solve(np.eye(n) - np.asarray(a), np.asarray(rhs))

        # `fn` closes over a batched *integer* index (not hoisted by jax.closure_convert).
        def bump(i):
            return fixed_point(lambda x, _: a @ x + y.at[i].add(1.0), jnp.zeros(n), None)[0]

        xs = jax.vmap(bump)(jnp.arange(3))
        for i in range(3):
            assert rel_err(xs[i], lu(y.at[i].add(1.0))) < 1e-9

        # vmap of vmap, and a batch of initial guesses with shared parameters.
        ys = jnp.asarray(np.random.default_rng(15).uniform(0.1, 1.0, (3, 2, n)))
        xs, reps = jax.vmap(jax.vmap(lambda y: fixed_point(linear_map, jnp.zeros(n), (a, y))))(ys)
        assert reps.num_steps.shape == (3, 2) and bool(reps.converged.all())
        assert rel_err(xs.reshape(6, n), lu(ys.reshape(6, n).T).T) < 1e-9
        x0s = jnp.asarray(np.random.default_rng(16).uniform(0.0, 5.0, (4, n)))
        xs, reps = jax.vmap(lambda x0: fixed_point(linear_map, x0, (a, y)))(x0s)
        assert bool(reps.converged.all())
        assert rel_err(xs, np.broadcast_to(lu(y), (4, n))) < 1e-9


@pytest.mark.parametrize("kind", ["anderson"])
def test_float32_iterations_like_float64(kind):
    n = 200
    steps = {}
    for x64, dtype in ((True, np.float64), (False, np.float32)):
        with jax.enable_x64(x64):
            a, y = leontief(n, seed=10, dtype=dtype)
            x, rep = fixed_point(
                linear_map,
                jnp.zeros(n, dtype),
                (jnp.asarray(a), jnp.asarray(y)),
                solver=SOLVERS[kind](rtol=1e-5),
            )
            assert x.dtype == dtype
            assert bool(rep.converged)
            steps[dtype] = int(rep.num_steps)
    assert steps[np.float32] <= 1.5 * steps[np.float64] + 1, steps


@pytest.mark.parametrize("kind", ["anderson"])
def test_nonconvergent_map_is_reported(kind):
    n = 50
    with jax.enable_x64(True):
        a, y = leontief(n, seed=11)
        p = (jnp.asarray(3.0 * a), jnp.asarray(y))  # spectral radius ~1.8 > 1
        # Forward iteration grows geometrically: stopped as diverged, long before max_steps.
        _, rep = fixed_point(linear_map, jnp.zeros(n), p, solver=Forward(), throw=False)
        assert not bool(rep.converged)
        assert rep.result == RESULTS.diverged
        assert float(rep.growth) > 1e6 and int(rep.num_steps) < 100
        # Anderson with too few steps.
        solver = SOLVERS[kind](max_steps=3)
        _, rep = fixed_point(linear_map, jnp.zeros(n), p, solver=solver, throw=False)
        assert not bool(rep.converged) and float(rep.relative_residual) > 1e-3
        assert rep.result == RESULTS.max_steps_reached and int(rep.num_steps) == 3

        throwing = jax.jit(lambda p: fixed_point(linear_map, jnp.zeros(n), p, solver=solver))
        with pytest.raises(Exception, match=r"relative residual .* is 1e.* above the tolerance"):
            jax.block_until_ready(throwing(p))
        # Outside jit the error is a FixedPointError with the numbers.
        with pytest.raises(FixedPointError, match=r"^fixed_point did not converge: after 3 "):
            fixed_point(linear_map, jnp.zeros(n), p, solver=solver)
        # A contractive problem passes through untouched.
        _, rep = jax.jit(lambda p: fixed_point(linear_map, jnp.zeros(n), p))(
            (jnp.asarray(a), jnp.asarray(y))
        )
        assert bool(rep.converged) and rep.result == RESULTS.successful


@pytest.mark.parametrize("kind", CASES)
def test_divergence_to_inf_is_not_silent(kind):
    n = 20
    with jax.enable_x64(False):
        a, _ = leontief(n, seed=12, dtype=np.float32)
        # x = exp(P x) + 1 has no fixed point here and overflows within a few steps. (With a
        # milder P = 3 A Anderson may wander chaotically for hundreds of steps before, or
        # without, overflowing, which would test rounding luck rather than the stop rule.)
        blowup = lambda x, p: jnp.exp(p @ x) + 1.0
        # The divergence threshold is set out of reach to test the overflow rule itself.
        solver = SOLVERS[kind](divergence=1e30)
        _, rep = fixed_point(blowup, jnp.zeros(n), jnp.asarray(10 * a), solver=solver, throw=False)
        assert not bool(rep.converged)
        assert rep.result == RESULTS.nonfinite
        assert np.isinf(float(rep.relative_residual))
        assert int(rep.num_steps) < 500  # stops once non-finite, does not burn max_steps
        with pytest.raises(Exception, match="overflowed to inf/NaN"):
            jax.block_until_ready(
                jax.jit(lambda p: fixed_point(blowup, jnp.zeros(n), p, solver=solver))(
                    jnp.asarray(10 * a)
                )
            )
        # With the default threshold the growth is caught before the overflow.
        _, rep = fixed_point(blowup, jnp.zeros(n), jnp.asarray(10 * a), throw=False)
        assert rep.result in (RESULTS.diverged, RESULTS.nonfinite)


def test_pytree_and_zero_solution():
    with jax.enable_x64(True):
        fn = lambda d, c: {"a": 0.5 * d["b"] + c, "b": 0.5 * d["a"]}
        x, rep = fixed_point(fn, {"a": jnp.zeros(3), "b": jnp.zeros(3)}, 1.0)
        assert bool(rep.converged)
        np.testing.assert_allclose(x["a"], 4 / 3, rtol=1e-9)
        np.testing.assert_allclose(x["b"], 2 / 3, rtol=1e-9)
        g = jax.grad(
            lambda c: fixed_point(fn, {"a": jnp.zeros(3), "b": jnp.zeros(3)}, c)[0]["a"].sum()
        )(1.0)
        assert float(g) == pytest.approx(3 * 4 / 3, rel=1e-8)
        # x* = 0: the relative test alone could never pass, the atol guard lets it converge.
        x, rep = fixed_point(lambda x, _: 0.5 * x, jnp.ones(4), None, solver=Forward())
        assert bool(rep.converged) and float(jnp.abs(x).max()) < 1e-11


def test_bad_arguments():
    with pytest.raises(TypeError, match="solver must be a jcausal solver object"):
        fixed_point(linear_map, jnp.zeros(2), None, solver="anderson")
    with pytest.raises(ValueError, match="history"):
        Anderson(history=1)
    with pytest.raises(ValueError, match="max_steps"):
        Forward(max_steps=0)
    with pytest.raises(ValueError, match="divergence"):
        Anderson(divergence=0.5)


def _affine(x, a):
    return a @ x + 1.0


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_no_solution_is_never_converged_under_jit_or_vmap(dtype):
    # I - A singular (A = ones/3): x = A x + 1 has no solution. The iterate grows until
    # ||x - f(x)|| is small relative to ||x|| (float64) or is lost to rounding, x + 1 == x
    # (float32: the residual is exactly 0); neither is convergence.
    a = jnp.ones((3, 3), dtype) / 3
    x0 = jnp.zeros(3, dtype)
    _, rep = jax.jit(lambda a: fixed_point(_affine, x0, a, throw=False))(a)
    assert not bool(rep.converged), (rep.result, rep.growth)
    _, rep = jax.vmap(lambda a: fixed_point(_affine, x0, a, throw=False))(jnp.stack([a, a / 2]))
    assert rep.converged.tolist() == [False, True]
    with pytest.raises(FixedPointError):
        fixed_point(_affine, x0, a)


@pytest.mark.parametrize(
    "kwargs", [{"max_steps": 2.5}, {"beta": float("nan")}, {"rtol": float("inf")}, {"beta": 0.0}]
)
def test_solver_settings_are_checked_when_built(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        Anderson(**kwargs)
    with pytest.raises(ValueError, match=name):
        Forward(**kwargs)
