"""jcausal.policy: bounds, identity, closed-form optima, constraints, the peer, bad input."""

import os
import subprocess
import sys
import textwrap

import distrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jcausal as jc
from jcausal import examples
from jcausal import policy as jp
from jcausal.economy import IOModel


def _linear_gaussian():
    # x -> t -> y, x -> y; additive Gaussian noise.
    return jc.SCM(
        x=jc.Root(distrax.Normal(0.0, 1.0)),
        t=jc.Additive(lambda p, pa: 0.5 * pa["x"], None, distrax.Normal(0.0, 1.0), ["x"]),
        y=jc.Additive(
            lambda p, pa: 1.0 * pa["x"] + 2.0 * pa["t"], None, distrax.Normal(0.0, 0.5), ["x", "t"]
        ),
    )


def test_identity_policy_reproduces_the_observations_counterfactual():
    scm = examples.treatment()
    obs = jc.sample(jax.random.key(0), scm, 64)
    problem = jp.Problem(scm, lambda v, th, lam: -v["y"], ["x"])
    pol = jp.Policy([jp.Action("t", "shift", jp.Box(-1.0, 1.0))], 2, key=jax.random.key(1))
    data = problem.prepare(obs)
    theta = pol.parameters(data["features"])
    np.testing.assert_array_equal(theta["t"], 0.0)
    cf = jc.counterfactual(scm, obs, pol.interventions(scm, theta))
    f, _, ok = problem.terms(pol, data, None)
    np.testing.assert_allclose(cf["y"], obs["y"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(-f, obs["y"], rtol=0, atol=1e-5)
    assert bool(ok)


def test_identity_policy_on_an_equilibrium_model():
    # Scale in (0, 2) starts at alpha = 1 (the paper's 2 sigmoid(0)): the table's equilibrium.
    A = np.array([[0.1, 0.2, 0.0], [0.05, 0.1, 0.3], [0.2, 0.0, 0.1]])
    model = IOModel(A, [1.0, 2.0, 1.5])
    scm = model.scm()
    obs = {"x": model.x_observed[None]}
    problem = jp.Problem(scm, lambda v, th, lam: jnp.sum(v["x"]))
    pol = jp.Policy([jp.Action("x", "scale", jp.Box(0.0, 2.0), size=3)], key=jax.random.key(0))
    data = problem.prepare(obs)
    f, _, ok = problem.terms(pol, data, None)
    assert bool(ok)
    np.testing.assert_allclose(f, model.x_observed.sum(), rtol=1e-5)
    # ... and a non-identity factor moves it as the closed form says: x = (I - aA)^-1 a y.
    alpha = np.array([0.5, 1.5, 1.0])
    net = eqx.tree_at(
        lambda m: m.layers[-1].bias, pol.net, jnp.asarray(np.log(alpha / (2 - alpha)))
    )
    pol2 = eqx.tree_at(lambda p: p.net, pol, net)
    f2, _, _ = problem.terms(pol2, data, None)
    x = np.linalg.solve(np.eye(3) - alpha[:, None] * A, alpha * np.asarray(model.y))
    np.testing.assert_allclose(f2, x.sum(), rtol=1e-4)


def test_linear_gaussian_quadratic_matches_the_closed_form():
    scm = _linear_gaussian()
    obs = jc.sample(jax.random.key(0), scm, 512)
    rho, target = 0.5, 1.0

    def outcome(v, th, lam):
        return (v["y"] - target) ** 2 + rho * th["t"][0] ** 2

    problem = jp.Problem(scm, outcome, ["x"])
    pol = jp.Policy([jp.Action("t", "shift")], 1, key=jax.random.key(1), depth=0)
    data = problem.prepare(obs)
    pol, info = jp.train(problem, pol, data, steps=600, key=jax.random.key(2), lr=0.1)
    # y_cf = y + 2 delta with delta = w x + b: least squares in (w, b), closed form.
    x, y = np.asarray(obs["x"], float), np.asarray(obs["y"], float)
    X = np.stack([x, np.ones_like(x)], 1)
    r = y - target
    w = np.linalg.solve((4 + rho) * X.T @ X, -2 * X.T @ r)
    delta = pol.parameters(data["features"])["t"][:, 0]
    np.testing.assert_allclose(delta, X @ w, atol=2e-3)
    assert info.feasible and info.steps == 600


@pytest.mark.parametrize("box", [jp.Box(0.0, 2.0), jp.Box(-1.0, 3.0), jp.Box(lower=0.5),
                                 jp.Box(upper=-2.0)])  # fmt: skip
def test_bounds_never_violated_even_at_extreme_inputs(box):
    z = jnp.array([-1e30, -1e4, -50.0, -1.0, 0.0, 1.0, 50.0, 1e4, 1e30, jnp.inf, -jnp.inf])
    v = np.asarray(box(z))
    assert np.all(v >= box.lower) and np.all(v <= box.upper), v
    pol = jp.Policy([jp.Action("t", "hard", jp.Box(0.0, 2.0))], 2, key=jax.random.key(0))
    # Huge weights and huge covariates: still inside.
    big = jax.tree_util.tree_map(lambda a: a * 1e6 + 1e3 if eqx.is_inexact_array(a) else a, pol)
    feats = jnp.array([[1e12, -1e12], [0.0, 0.0], [-3e8, 5.0]])
    t = np.asarray(big.parameters(feats)["t"])
    assert np.all((t >= 0.0) & (t <= 2.0)), t


def test_box_inverse_roundtrip():
    for box, v in ((jp.Box(0.0, 2.0), 1.0), (jp.Box(lower=1.0), 3.0), (jp.Box(upper=0.0), -0.2)):
        np.testing.assert_allclose(box(box.inverse(v)), v, rtol=1e-6)


def test_budget_with_augmented_lagrangian_near_the_oracle():
    scm = examples.treatment()
    obs = jc.sample(jax.random.key(0), scm, 400)
    budget = 0.5
    problem = jp.Problem(
        scm, lambda v, th, lam: -v["y"], ["x"], constraint=lambda v, th, lam: v["t"] - budget
    )
    pol = jp.Policy([jp.Action("t", "hard", jp.Box(0.0, 2.0))], 2, key=jax.random.key(1))
    data = problem.prepare(obs)
    tol = 5e-3
    pol, info = jp.train(problem, pol, data, steps=1200, key=jax.random.key(2), lr=2e-2,
                         constraint=jp.AugmentedLagrangian(rho=10.0, tol=tol))  # fmt: skip
    d = pol.parameters(data["features"])["t"][:, 0]
    assert info.feasible and float(d.mean()) <= budget + tol
    oracle = examples.treatment_oracle(scm, obs["x"], budget)
    assert abs(float(oracle.mean()) - budget) < 1e-6

    def value(dose):
        return float(jc.counterfactual(scm, obs, {"t": jc.Hard(dose)})["y"].mean())

    gain = value(oracle) - value(jnp.zeros(400))
    regret = value(oracle) - value(d)
    assert gain > 0.5
    assert regret < 0.02 * gain, (regret, gain)
    # The multiplier is the oracle's KKT multiplier of the budget, 2 kappa (tau - 2 kappa d).
    assert info.multiplier > 0


def test_evolve_finds_the_best_constant_dose():
    pytest.importorskip("evosax")
    scm = examples.treatment()
    obs = jc.sample(jax.random.key(0), scm, 256)
    problem = jp.Problem(scm, lambda v, th, lam: -v["y"])
    pol = jp.Policy([jp.Action("t", "hard", jp.Box(0.0, 2.0))], key=jax.random.key(1), depth=0)
    data = problem.prepare(obs)
    best, res = jp.evolve(problem, pol, data, generations=60, key=jax.random.key(2),
                          population=16, sigma=0.5)  # fmt: skip
    p = scm.mechanisms["y"].params
    tau = 1.0 + 0.8 * np.tanh(2 * np.asarray(obs["x"][:, 0])) + 0.4 * np.asarray(obs["x"][:, 1])
    d_const = np.clip(tau.mean() / (2 * float(p["kappa"])), 0, 2)
    d = np.asarray(best.parameters(None, n=1)["t"])
    np.testing.assert_allclose(d, d_const, atol=1e-2)
    assert np.all(np.diff(res.best_fitness) <= 1e-7)  # best-so-far never worsens


# ---------------------------------------------------------------------------------------------
# bad input


def test_bad_input_raises_named_value_errors():
    scm = examples.treatment()
    obs = jc.sample(jax.random.key(0), scm, 8)
    act = jp.Action("t", "hard", jp.Box(0.0, 2.0))
    with pytest.raises(ValueError, match="lower must be smaller than upper"):
        jp.Box(2.0, 1.0)
    with pytest.raises(ValueError, match="lower must be smaller than upper"):
        jp.Box(1.0, 1.0)
    with pytest.raises(ValueError, match="NaN"):
        jp.Box(float("nan"), 1.0)
    with pytest.raises(ValueError, match=r"actions need \(1,\) outputs"):
        jp.Policy([act], 2, key=jax.random.key(0), net=eqx.nn.Linear(2, 3, key=jax.random.key(0)))
    pol = jp.Policy([act], 2, key=jax.random.key(0))
    vec = jp.Problem(scm, lambda v, th, lam: jnp.stack([v["y"], v["t"]]), ["x"])
    with pytest.raises(ValueError, match="outcome must return a scalar per unit"):
        jp.train(vec, pol, vec.prepare(obs), steps=1, key=jax.random.key(0))
    problem = jp.Problem(scm, lambda v, th, lam: -v["y"], ["x"])
    bad = dict(obs, x=obs["x"].at[3, 1].set(jnp.nan))
    with pytest.raises(ValueError, match=r"covariates \['x'\] contain NaN"):
        problem.prepare(bad)
    with pytest.raises(ValueError, match="policy covariates contain NaN"):
        pol.parameters(bad["x"])
    with pytest.raises(ValueError, match="descend from them"):
        jp.train(jp.Problem(scm, lambda v, th, lam: -v["y"], ["y"]),
                 jp.Policy([act], 1, key=jax.random.key(0)), None, steps=1,
                 key=jax.random.key(0))  # fmt: skip
    with pytest.raises(ValueError, match="needs bounds"):
        jp.Action("t", "hard")
    with pytest.raises(ValueError, match="unknown node"):
        problem.check(jp.Policy([jp.Action("z", "shift")], 2, key=jax.random.key(0)))
    with pytest.raises(ValueError, match="policy reads trade-off weights"):
        jp.train(problem, jp.Policy([act], 2, 1, key=jax.random.key(0)), problem.prepare(obs),
                 steps=1, key=jax.random.key(0))  # fmt: skip


def test_population_level_matches_the_conditional_closed_form():
    # Interventional objective: fresh units every step. E[y | x] = 2 x, so the best shift of t
    # given x minimises E(2x + 2 delta - T)^2 + rho delta^2: delta = -2(2x - T)/(4 + rho).
    scm = _linear_gaussian()
    rho, target = 0.5, 1.0
    problem = jp.Problem(scm, lambda v, th, lam: (v["y"] - target) ** 2 + rho * th["t"][0] ** 2,
                         ["x"], level="population")  # fmt: skip
    pol = jp.Policy([jp.Action("t", "shift")], 1, key=jax.random.key(0), depth=0)
    pol, _ = jp.train(problem, pol, None, steps=600, key=jax.random.key(1), lr=0.05,
                      batch_size=512)  # fmt: skip
    x = jnp.linspace(-2, 2, 5)[:, None]
    np.testing.assert_allclose(pol.parameters(x)["t"][:, 0], -2 * (2 * x[:, 0] - target) / 4.5,
                               atol=0.05)  # fmt: skip


def test_lie_and_soft_actions():
    # Lie (multiplicative group) on an economy equals Scale by exp(u).
    A = np.array([[0.1, 0.2, 0.0], [0.05, 0.1, 0.3], [0.2, 0.0, 0.1]])
    model = IOModel(A, [1.0, 2.0, 1.5])
    problem = jp.Problem(model.scm(), lambda v, th, lam: jnp.sum(v["x"]))
    data = problem.prepare({"x": model.x_observed[None]})
    pol = jp.Policy([jp.Action("x", "lie", jp.Box(-1.0, 1.0), group=jc.Multiplicative(3))],
                    key=jax.random.key(0))  # fmt: skip
    u = np.array([-0.5, 0.3, 0.1])
    z = np.log((u + 1) / (1 - u))  # Box(-1, 1) inverse
    pol = eqx.tree_at(lambda p: p.net.layers[-1].bias, pol, jnp.asarray(z))
    f, _, _ = problem.terms(pol, data, None)
    a = np.exp(u)
    x = np.linalg.solve(np.eye(3) - a[:, None] * A, a * np.asarray(model.y))
    np.testing.assert_allclose(f, x.sum(), rtol=1e-6)
    # Soft: a new mechanism of the parents, its output clipped to the bounds.
    scm = _linear_gaussian()
    obs = jc.sample(jax.random.key(1), scm, 16)
    soft = jp.Action("t", "soft", jp.Box(-1.0, 1.0), size=2,
                     fn=lambda th, pa, u: th[0] * pa["x"] + th[1] + u)  # fmt: skip
    problem = jp.Problem(scm, lambda v, th, lam: v["y"] ** 2)
    pol = jp.Policy([soft], key=jax.random.key(2))
    pol = eqx.tree_at(lambda p: p.net.layers[-1].bias, pol, jnp.array([100.0, 0.0]))
    data = problem.prepare(obs)
    params = pol.parameters(None, n=16)
    theta = params["t"]
    cf = jc.counterfactual(scm, obs, pol.interventions(scm, params))
    assert np.all(np.abs(np.asarray(cf["t"])) <= 1.0)
    u_t = obs["t"] - 0.5 * obs["x"]
    np.testing.assert_allclose(
        cf["t"], np.clip(np.asarray(theta[0, 0]) * obs["x"] + theta[0, 1] + u_t, -1, 1), atol=1e-6
    )
    with pytest.raises(ValueError, match="soft action"):
        jp.Policy([soft], 1, key=jax.random.key(0))


def test_training_checkpoints_and_resumes(tmp_path):
    scm = _linear_gaussian()
    obs = jc.sample(jax.random.key(0), scm, 64)
    problem = jp.Problem(scm, lambda v, th, lam: (v["y"] - 1.0) ** 2, ["x"])
    data = problem.prepare(obs)
    pol = jp.Policy([jp.Action("t", "shift", jp.Box(-2.0, 2.0))], 1, key=jax.random.key(1), width=4)
    kw = dict(steps=60, key=jax.random.key(2), lr=0.05)
    plain, _ = jp.train(problem, pol, data, **kw)
    saved, _ = jp.train(problem, pol, data, checkpoint_dir=str(tmp_path), **kw)
    # A second call finds the final checkpoint and returns the same policy without training.
    again, info = jp.train(problem, pol, data, checkpoint_dir=str(tmp_path), **kw)
    assert info.histories[0].start_step == 60
    for a, b in ((plain, saved), (saved, again)):
        np.testing.assert_array_equal(a.net.layers[-1].weight, b.net.layers[-1].weight)


def test_sharded_training_and_peer_bad_input():
    scm = _linear_gaussian()
    obs = jc.sample(jax.random.key(0), scm, 64)
    problem = jp.Problem(scm, lambda v, th, lam: (v["y"] - 1.0) ** 2, ["x"])
    data = problem.prepare(obs)
    pol = jp.Policy([jp.Action("t", "shift", jp.Box(-2.0, 2.0))], 1, key=jax.random.key(1), width=4)
    kw = dict(steps=30, key=jax.random.key(2), lr=0.05, batch_size=32)
    mesh = jax.make_mesh((len(jax.devices()),), ("data",))
    plain, _ = jp.train(problem, pol, data, **kw)
    sharded, _ = jp.train(problem, pol, data, sharding=mesh, **kw)
    np.testing.assert_allclose(plain.net.layers[-1].weight, sharded.net.layers[-1].weight,
                               rtol=1e-6, atol=1e-9)  # fmt: skip
    with pytest.raises(ValueError, match="strategy must be one of"):
        jp.evolve(problem, pol, data, generations=2, key=jax.random.key(0), strategy="nope")
    with pytest.raises(ValueError, match="generations must be an integer"):
        jp.evolve(problem, pol, data, generations=1, key=jax.random.key(0))
    lam_pol = jp.Policy([jp.Action("t", "shift")], 1, 1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="trade-off weights contain NaN"):
        lam_pol.parameters(obs["x"][:, None], jnp.full((64, 1), jnp.nan))


SHARDED = textwrap.dedent(
    """
    import sys
    import jax, jax.numpy as jnp, numpy as np, equinox as eqx, distrax
    import jcausal as jc
    from jcausal import policy as jp

    jpt = sys.modules["jcausal.policy.train"]  # the module (its name is also the function's)

    assert jax.device_count() == 2, jax.devices()
    specs = []
    inner = jpt._policy_loss

    def spy(params, batch, key):  # records how fit hands the units' batch to the loss
        specs.append(str(jax.typeof(jax.tree.leaves(batch)[0]).sharding.spec))
        return inner(params, batch, key)

    jpt._policy_loss = spy
    scm = jc.SCM(
        x=jc.Root(distrax.Normal(0.0, 1.0)),
        t=jc.Additive(lambda p, pa: 0.5 * pa["x"], None, distrax.Normal(0.0, 1.0), ["x"]),
        y=jc.Additive(lambda p, pa: pa["x"] + 2.0 * pa["t"], None, distrax.Normal(0.0, 0.5),
                      ["x", "t"]),
    )
    obs = jc.sample(jax.random.key(0), scm, 64)
    # Batched over units and over lambda: the target of y is lambda.
    problem = jp.Problem(scm, lambda v, th, lam: (v["y"] - lam[0]) ** 2, ["x"])
    data = problem.prepare(obs)
    pol = jp.Policy([jp.Action("t", "shift", jp.Box(-2.0, 2.0))], 1, 1, key=jax.random.key(1),
                    width=4)
    kw = dict(steps=20, key=jax.random.key(2), lr=0.05, batch_size=32,
              lambdas=jp.Uniform(0.0, 2.0), num_lambdas=4)
    plain, _ = jp.train(problem, pol, data, **kw)
    sharded, _ = jp.train(problem, pol, data, sharding=jax.make_mesh((2,), ("data",)), **kw)
    a = jax.tree.leaves(eqx.filter(plain, eqx.is_inexact_array))
    b = jax.tree.leaves(eqx.filter(sharded, eqx.is_inexact_array))
    p0 = jax.tree.leaves(eqx.filter(pol, eqx.is_inexact_array))
    diff = max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(a, b))
    moved = max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(a, p0))
    print(repr((diff, moved, specs[-1])))
    """
)


def test_sharded_over_two_fake_devices_matches_one_device(tmp_path):
    # Units split over a 2-device mesh (XLA's fake host devices), λ batched on each: the
    # trained policy is the one-device policy, and the loss did see a split batch.
    script = tmp_path / "sharded_policy.py"
    script.write_text(SHARDED)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    res = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    diff, moved, spec = eval(res.stdout.strip().splitlines()[-1])
    assert "data" in spec, spec
    assert moved > 1e-2
    assert diff < 1e-6


def test_nan_guard_names_the_step_through_train():
    # fit's NaN guard reaches the policy user: a non-finite outcome stops training by name.
    scm = _linear_gaussian()
    obs = jc.sample(jax.random.key(0), scm, 16)
    problem = jp.Problem(scm, lambda v, th, lam: jnp.log(v["y"] - 100.0), ["x"])
    pol = jp.Policy([jp.Action("t", "shift", jp.Box(-1.0, 1.0))], 1, key=jax.random.key(1))
    with pytest.raises(FloatingPointError, match=r"non-finite value at step 0 .*'outcome' = .*nan"):
        jp.train(problem, pol, problem.prepare(obs), steps=3, key=jax.random.key(2))


def test_hard_on_a_categorical_node_is_refused_by_name():
    # Bounds make sense on continuous nodes only: health's exercise is categorical (Gumbel-max).
    scm = examples.health()
    problem = jp.Problem(scm, lambda v, th, lam: v["risk"])
    pol = jp.Policy([jp.Action("exercise", "hard", jp.Box(0.0, 2.0))], key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"Action\('exercise', 'hard'\): the node is categorical"):
        problem.check(pol)


def test_evolve_solves_a_non_differentiable_objective_the_gradient_cannot():
    pytest.importorskip("evosax")
    # Reward only doses within 0.1 of 1.5: a step function, zero gradient almost everywhere.
    scm = examples.treatment()
    obs = jc.sample(jax.random.key(0), scm, 32)
    problem = jp.Problem(scm, lambda v, th, lam: jnp.where(jnp.abs(v["t"] - 1.5) < 0.1, 0.0, 1.0))
    pol = jp.Policy([jp.Action("t", "hard", jp.Box(0.0, 2.0))], key=jax.random.key(1), depth=0)
    data = problem.prepare(obs)
    start = float(pol.parameters(None, n=1)["t"][0, 0])
    assert abs(start - 1.5) > 0.1
    by_grad, _ = jp.train(problem, pol, data, steps=20, key=jax.random.key(2), lr=0.1)
    assert float(by_grad.parameters(None, n=1)["t"][0, 0]) == pytest.approx(start, abs=1e-9)
    best, res = jp.evolve(problem, pol, data, generations=30, key=jax.random.key(3),
                          population=16, sigma=1.0)  # fmt: skip
    assert abs(float(best.parameters(None, n=1)["t"][0, 0]) - 1.5) < 0.1
    assert float(res.best_fitness[-1]) == 0.0


def test_augmented_lagrangian_resumes_from_its_rounds_checkpoints(tmp_path):
    # An interrupted run (rounds 1 and 2 lost) resumes: round 0 is restored, not retrained,
    # the multiplier follows from it, and the result is the uninterrupted run's.
    import shutil

    scm = examples.treatment()
    obs = jc.sample(jax.random.key(0), scm, 64)
    problem = jp.Problem(
        scm, lambda v, th, lam: -v["y"], ["x"], constraint=lambda v, th, lam: v["t"] - 0.5
    )
    pol = jp.Policy([jp.Action("t", "hard", jp.Box(0.0, 2.0))], 2, key=jax.random.key(1), width=4)
    data = problem.prepare(obs)
    kw = dict(steps=60, key=jax.random.key(2), lr=2e-2,
              constraint=jp.AugmentedLagrangian(rho=10.0, tol=1e-12, rounds=3))  # fmt: skip
    full, info_full = jp.train(problem, pol, data, checkpoint_dir=str(tmp_path), **kw)
    assert len(info_full.histories) == 3
    for r in (1, 2):
        shutil.rmtree(tmp_path / f"round_{r}")
    again, info = jp.train(problem, pol, data, checkpoint_dir=str(tmp_path), **kw)
    assert [h.start_step for h in info.histories] == [20, 0, 0]
    np.testing.assert_allclose(info.multiplier, info_full.multiplier, rtol=1e-6)
    np.testing.assert_allclose(again.net.layers[-1].weight, full.net.layers[-1].weight, rtol=1e-5)


def test_population_level_on_an_equilibrium_model():
    # Fresh units drawn from the equilibrium SCM (its demand y is fixed: every unit is the
    # table's economy), then the policy's factors: x = (I - aA)^-1 a y, as unit level.
    A = np.array([[0.1, 0.2, 0.0], [0.05, 0.1, 0.3], [0.2, 0.0, 0.1]])
    model = IOModel(A, [1.0, 2.0, 1.5])
    problem = jp.Problem(model.scm(), lambda v, th, lam: jnp.sum(v["x"]), level="population")
    pol = jp.Policy([jp.Action("x", "scale", jp.Box(0.0, 2.0), size=3)], key=jax.random.key(0))
    alpha = np.array([0.5, 1.5, 1.0])
    pol = eqx.tree_at(
        lambda p: p.net.layers[-1].bias, pol, jnp.asarray(np.log(alpha / (2 - alpha)))
    )
    data = problem.draw(jax.random.key(1), 4)
    np.testing.assert_allclose(data["obs"]["x"], np.tile(model.x_observed, (4, 1)), rtol=1e-5)
    f, _, ok = problem.terms(pol, data, None)
    x = np.linalg.solve(np.eye(3) - alpha[:, None] * A, alpha * np.asarray(model.y))
    assert bool(ok)
    np.testing.assert_allclose(f, np.full(4, x.sum()), rtol=1e-4)
