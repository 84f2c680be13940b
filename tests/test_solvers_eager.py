"""``fixed_point`` called outside jit: one compilation per map, not one per call."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jcausal.solvers import Anderson, FixedPointError, Newton, fixed_point

TRACES = []


def _map(x, p):
    TRACES.append(1)  # runs only while jax traces the map
    a, y = p
    return a @ x + y


def _system(n=8, rho=0.5, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.random((n, n))
    return jnp.asarray(a * rho / a.sum(0).max()), jnp.asarray(rng.random(n))


@pytest.mark.parametrize("solver", [Anderson(), Newton()])
def test_repeated_eager_calls_do_not_retrace(solver):
    a, y = _system()
    fixed_point(_map, jnp.zeros(8), (a, y), solver=solver)
    first = len(TRACES)
    for seed in range(1, 4):  # new values, same shapes: the compiled program is reused
        a, y = _system(seed=seed)
        x, _ = fixed_point(_map, jnp.zeros(8), (a, y), solver=solver)
        np.testing.assert_allclose(x, np.linalg.solve(np.eye(8) - a, y), rtol=1e-9)
    assert len(TRACES) == first


def test_eager_failure_still_raises_fixed_point_error():
    a = jnp.eye(2)  # x = x + y has no solution
    with pytest.raises(FixedPointError):
        fixed_point(_map, jnp.zeros(2), (a, jnp.ones(2)))
    _, rep = fixed_point(_map, jnp.zeros(2), (a, jnp.ones(2)), throw=False)
    assert not bool(rep.converged)


def test_map_closing_over_a_tracer_keeps_its_gradient():
    a, y = _system()

    def total(scale):
        def f(x, _):  # closes over the traced `scale`
            return scale * (a @ x) + y

        return jnp.sum(fixed_point(f, jnp.zeros(8), None)[0])

    g = jax.grad(total)(1.0)
    eps = 1e-6
    fd = (total(1.0 + eps) - total(1.0 - eps)) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-6)
