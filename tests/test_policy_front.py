"""jcausal.policy.front: eq. 5 as a policy problem, one region or several stacked."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jcausal import policy as jp
from jcausal.economy import design as ed
from jcausal.economy import io as eio
from jcausal.policy import front


@pytest.fixture(scope="module")
def designs():
    return [ed.DesignProblem(eio.load(r), eio.TEST_GHG, eio.TEST_EMPLOYMENT, bounded=True)
            for r in ("reg1", "reg2", "reg3")]  # fmt: skip


def test_identity_policy_excess_is_the_exact_gap(designs):
    d = designs[0]
    grid = ed.auto_lambdas(d, 4)
    problem, data = front.front_problem(d)
    pol = front.front_policy(d, grid, key=jax.random.key(0))
    # α = 1 everywhere: eq. 5 is GHG/G* = 1 at every λ, the excess 1 - the exact optimum.
    ref = ed.bounded_front(d, grid)
    best = ref["ghg"] / float(d.G) + grid * ref["deviation"] / float(d.E)
    np.testing.assert_allclose(front.front_excess(d, pol, problem, data, grid), 1 - best, atol=1e-9)


def test_stacked_regions_match_each_region_alone(designs):
    stacked, data = front.regions_problem(designs)
    grid = np.concatenate([ed.auto_lambdas(d, 4) for d in designs])
    pol = front.front_policy(designs[0], grid, key=jax.random.key(1), features=data["features"])
    # A policy away from the identity, so that the regions' answers differ.
    w = jax.random.normal(jax.random.key(2), pol.net.layers[-1].weight.shape)
    pol = eqx.tree_at(lambda p: p.net.layers[-1].weight, pol, w)
    for lam in (0.0, 0.7, 20.0):
        f, _, ok = stacked.terms(pol, data, jnp.array([[lam]]))
        assert bool(ok)
        for i, d in enumerate(designs):
            single, data_i = front.front_problem(d)
            data_i = dict(data_i, features=data["features"][i][None])
            fi, _, _ = single.terms(pol, data_i, jnp.array([[lam]]))
            np.testing.assert_allclose(f[i], fi[0], rtol=1e-10)
    assert len(set(np.round(np.asarray(f), 8))) == len(designs)


def test_front_refuses_bad_input(designs):
    unbounded = ed.DesignProblem(eio.load("reg1"), eio.TEST_GHG, eio.TEST_EMPLOYMENT)
    with pytest.raises(ValueError, match="bounded=True"):
        front.front_problem(unbounded)
    p1, _ = front.front_problem(designs[0])
    other = jp.Problem(p1.scm, lambda v, th, lam, k: 0.0, constants=p1.constants)
    with pytest.raises(ValueError, match="share one structure"):
        jp.Stacked([p1, other])
    stacked, data = front.regions_problem(designs)
    with pytest.raises(ValueError, match="features must have shape"):
        stacked.prepare([{"x": d.model.x_observed[None]} for d in designs], data["features"][:2])
