"""A λ-conditioned policy under a constraint: it must hold at every λ, not on average."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jcausal as jc
from jcausal import policy as jp

LAMS = np.array([0.25, 1.0, 4.0])


def _budget(lam):
    # Budget b(λ) = 1 + log2(λ)/4: 0.5, 1.0, 1.5 on LAMS (mean 1).
    return 1.0 + 0.25 * jnp.log2(lam)


def _outcome(v, th, lam):
    return -lam[0] * v["t"]  # reward λ per unit of dose: more dose is always better


def _constraint(v, th, lam):
    return v["t"] - _budget(lam[0])


def _no_effect(p, pa):
    return 0.0 * pa["x"]


def _setup():
    scm = jc.SCM(
        x=jc.Root(distrax.Normal(0.0, 1.0)),
        t=jc.Additive(_no_effect, None, distrax.Normal(0.0, 1.0), ["x"]),
    )
    obs = jc.sample(jax.random.key(0), scm, 4)
    problem = jp.Problem(scm, _outcome, constraint=_constraint)
    pol = jp.Policy([jp.Action("t", "hard", jp.Box(0.0, 2.0))], 0, 1, key=jax.random.key(1),
                    width=8, depth=1, lambda_range=(0.25, 4.0), log_lambda=True)  # fmt: skip
    return problem, pol, problem.prepare(obs)


def test_constraint_holds_at_every_lambda_not_on_average():
    # The average-constraint optimum (max Σ λ t s.t. mean t <= mean b, t in [0, 2]) is
    # t = (0, 1, 2): it breaks the budget 1.5 at λ = 4 by 0.5. The per-λ optimum is t = b(λ),
    # with KKT multipliers ν(λ) = λ (d(-λ t)/dt + ν = 0).
    t_avg = np.array([0.0, 1.0, 2.0])
    assert t_avg.mean() <= np.mean(_budget(LAMS)) and t_avg[2] - _budget(4.0) == 0.5
    problem, pol, data = _setup()
    tol = 2e-3
    pol, info = jp.train(problem, pol, data, steps=1600, key=jax.random.key(2), lr=3e-2,
                         lambdas=jp.Grid(LAMS), constraint=jp.AugmentedLagrangian(tol=tol,
                         rho=10.0, rounds=8))  # fmt: skip
    t = np.asarray(pol.parameters(None, LAMS[:, None], 3)["t"][:, 0])
    assert info.feasible and info.violations.shape == (3,)
    assert np.all(t - np.asarray(_budget(LAMS)) <= tol), t
    np.testing.assert_allclose(t, _budget(LAMS), atol=0.02)
    np.testing.assert_allclose(info.multiplier, LAMS, rtol=0.1)


def test_penalty_is_per_lambda_sample():
    # Penalty w/2 max(0, t - b)² per λ: the penalised optimum is t = b(λ) + λ/w at each λ
    # (an average penalty would instead move dose from small to large λ).
    problem, pol, data = _setup()
    w = 40.0
    pol, _ = jp.train(problem, pol, data, steps=800, key=jax.random.key(3), lr=3e-2,
                       lambdas=jp.LogUniform(0.25, 4.0), num_lambdas=16,
                       constraint=jp.Penalty(w))  # fmt: skip
    t = np.asarray(pol.parameters(None, LAMS[:, None], 3)["t"][:, 0])
    np.testing.assert_allclose(t, _budget(LAMS) + LAMS / w, atol=0.03)


def test_per_lambda_constraint_bad_input():
    problem, pol, data = _setup()
    with pytest.raises(ValueError, match="every λ"):
        jp.train(problem, pol, data, steps=2, key=jax.random.key(0),
                 lambdas=jp.LogUniform(0.25, 4.0))  # fmt: skip
    with pytest.raises(ValueError, match="Grid holds 3"):
        jp.train(problem, pol, data, steps=2, key=jax.random.key(0), lambdas=jp.Grid(LAMS),
                 num_lambdas=4)  # fmt: skip
    with pytest.raises(ValueError, match="2 entries each"):
        jp.train(problem, pol, data, steps=2, key=jax.random.key(0),
                 lambdas=jp.Grid(np.ones((3, 2))))  # fmt: skip
    for bad in ([], [[[1.0]]], [1.0, np.nan]):
        with pytest.raises(ValueError, match="Grid needs"):
            jp.Grid(bad)


def test_a_passed_check_is_remembered_a_failed_one_is_not(monkeypatch):
    # A check traces the model (eval_shape); train and evolve call it every time, so a passed
    # one is remembered per signature (structure, shapes, dtypes) and a failed one re-raises.
    from jcausal.policy import problem as problem_module

    problem_module._CHECKED.clear()
    problem, pol, data = _setup()
    traced = []
    real = jax.eval_shape
    monkeypatch.setattr(jax, "eval_shape", lambda *a, **k: traced.append(1) or real(*a, **k))
    problem.check(pol, data)
    first = len(traced)
    problem.check(pol, data)
    assert first > 0 and len(traced) == first
    # Same structure, other numbers: still remembered; another shape of data: checked again.
    problem.check(pol, jax.tree_util.tree_map(lambda x: x + 1.0, data))
    assert len(traced) == first
    problem.check(pol, jax.tree_util.tree_map(lambda x: x[:2], data))
    assert len(traced) > first
    bad = jp.Policy([jp.Action("t", "hard", jp.Box(0.0, 2.0))], 3, 1, key=jax.random.key(1))
    for _ in range(2):
        with pytest.raises(ValueError, match="reads 3"):
            problem.check(bad, data)
