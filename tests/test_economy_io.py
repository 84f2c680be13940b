"""Leontief model and pymrio adapter against pymrio's own accounts and closed forms."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jcausal as jc
from jcausal.economy import io as eio
from jcausal.economy.leontief import IOModel, spectral_radius


@pytest.fixture(scope="module")
def system():
    io = eio.load_test()
    io.calc_all()  # pymrio's reference: x, A, L, S, D_pba, D_cba, ...
    return io


@pytest.fixture(scope="module")
def full(system):
    return eio.from_pymrio(eio.load_test(), None)


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_full_mrio_equilibrium_matches_pymrio(system, full):
    x, report = full.solve(x0=jnp.zeros(full.n))  # from zero, not from the observed x
    assert bool(report.converged)
    assert rel(x, system.x["indout"]) < 1e-8
    # pymrio's Leontief inverse applied to total final demand
    assert rel(x, system.L.to_numpy() @ system.Y.to_numpy().sum(1)) < 1e-8
    assert full.reproduction_error < 1e-8
    assert full.labels[0] == "reg1:food"
    # the model's SCM is the same equilibrium (the same solver on both sides: the default
    # solver factorises I - A in `solve` and iterates on the SCM's map)
    iterated = eqx.tree_at(lambda m: m.solver, full, jc.Anderson())
    x_it, _ = iterated.solve(x0=jnp.zeros(full.n))
    values, _ = jc.solve(iterated.scm(), {"x": full.y[None]}, init={"x": jnp.zeros((1, full.n))})
    np.testing.assert_allclose(values["x"][0], x_it, rtol=1e-9)
    assert rel(x, x_it) < 1e-9


@pytest.mark.parametrize("region", ["reg1", "reg2", "reg3", "reg4", "reg5", "reg6"])
def test_block_equilibrium_and_accounts(system, region):
    m = eio.from_pymrio(eio.load_test(), region)
    x, report = m.solve(x0=jnp.zeros(m.n))
    assert bool(report.converged)
    assert rel(x, system.x.loc[region, "indout"]) < 1e-8
    assert m.reproduction_error < 1e-8
    np.testing.assert_allclose(m.A, system.A.loc[region, region].to_numpy(), rtol=0, atol=0)
    # The closing demand is all final demand for the region's products plus its intermediate
    # exports, computed here from pymrio's Z and Y.
    others = [r for r in system.get_regions() if r != region]
    expected_y = system.Y.loc[region].to_numpy().sum(1) + system.Z.loc[
        region, others
    ].to_numpy().sum(1)
    np.testing.assert_allclose(m.y, expected_y, rtol=1e-9)
    # production-based stressor accounts of the region (pymrio's D_pba excludes final users)
    for row in ["emission_type1", "emission_type2"]:
        key = (row, "air" if row == "emission_type1" else "water")
        per_sector = system.emissions.D_pba.loc[key, region].to_numpy()
        np.testing.assert_allclose(m.stressor(row, x, by_sector=True), per_sector, rtol=1e-8)
        reg_total = system.emissions.D_pba_reg.loc[key, region]
        reg_total -= system.emissions.F_Y.loc[key, region].sum()
        np.testing.assert_allclose(m.stressor(row, x), reg_total, rtol=1e-8)
    va = system.factor_inputs.F.loc["Value Added", region].to_numpy()
    np.testing.assert_allclose(m.stressor("Value Added", x, by_sector=True), va, rtol=1e-8)


def test_full_stressor_totals_and_ghg_weights(system, full):
    x, _ = full.solve(x0=jnp.zeros(full.n))
    F = system.emissions.F
    # s = S x equals the table's F, and, for the world, the consumption-based total
    for key in F.index:
        np.testing.assert_allclose(full.stressor(key[0], x), F.loc[key].sum(), rtol=1e-8)
        np.testing.assert_allclose(
            full.stressor(key[0], x), system.emissions.D_cba.loc[key].sum(), rtol=1e-8
        )
    w = {"emission_type1": 1.0, "emission_type2": 25.0}
    hand = F.iloc[0].to_numpy() * 1.0 + F.iloc[1].to_numpy() * 25.0
    # (at the table's x: this checks the weighting, the solve is checked above)
    xo = full.x_observed
    np.testing.assert_allclose(full.stressor(w, xo, by_sector=True), hand, rtol=1e-12)
    np.testing.assert_allclose(full.stressor(w, x), hand.sum(), rtol=1e-8)
    # names with their compartment, and extension-qualified names, select the same rows
    assert full.row(("emission_type1", "air")) == full.row("emission_type1")
    assert full.row("factor_inputs:Value Added") == full.row("Value Added")
    assert full.unit(w) == "kg"


def test_lie_intervention_closed_form_and_gradient():
    m = eio.load("reg3")
    u = jnp.asarray(np.linspace(-0.4, 0.2, m.n))
    g = np.exp(np.asarray(u))
    A, y = np.asarray(m.A), np.asarray(m.y)
    # x = diag(g) (A x + y)  <=>  (I - diag(g) A) x = g * y
    expected = np.linalg.solve(np.eye(m.n) - g[:, None] * A, g * y)
    x, _ = m.solve(u)
    np.testing.assert_allclose(x, expected, rtol=1e-9)
    # implicit gradient of total emissions vs dx/du = (I - D A)^{-1} diag(x)
    c = np.asarray(m.intensity("emission_type1"))
    grad = jax.grad(lambda v: m.stressor("emission_type1", m.solve(v)[0]))(u)
    J = np.linalg.solve(np.eye(m.n) - g[:, None] * A, np.diag(expected))
    np.testing.assert_allclose(grad, c @ J, rtol=1e-7)


def test_unknown_region_and_stressor_list_names(full):
    with pytest.raises(ValueError, match=r"unknown region 'atlantis'.*'reg1'.*'reg6'"):
        eio.from_pymrio(eio.load_test(), "atlantis")
    with pytest.raises(ValueError, match=r"unknown stressor row 'CO2'.*'emission_type1'"):
        full.intensity({"CO2": 1.0})
    with pytest.raises(ValueError, match="Value Added"):
        full.stressor("Employment", full.x_observed)


def test_spectral_radius_at_least_one_is_refused():
    A = np.array([[0.5, 0.7], [0.7, 0.5]])  # radius 1.2
    assert spectral_radius(A) == pytest.approx(1.2)
    with pytest.raises(ValueError, match=r"spectral radius of A is 1\.2 .*Hawkins-Simon"):
        IOModel(A, [1.0, 1.0])
    # column sums above 1 but radius below 1 is fine (the bound is not the test)
    B = np.array([[0.1, 0.9], [0.05, 0.1]])
    assert spectral_radius(B) < 1
    x, _ = IOModel(B, [1.0, 2.0]).solve()
    np.testing.assert_allclose(x, np.linalg.solve(np.eye(2) - B, [1.0, 2.0]), rtol=1e-9)


def test_negative_or_nan_demand_is_refused():
    A = np.array([[0.1, 0.2], [0.3, 0.1]])
    with pytest.raises(ValueError, match=r"negative for sectors 'steel'"):
        IOModel(A, [1.0, -0.5], sectors=["wheat", "steel"])
    with pytest.raises(ValueError, match=r"NaN or infinite for sectors 'wheat'"):
        IOModel(A, [np.nan, 1.0], sectors=["wheat", "steel"])
    m = IOModel(A, [1.0, -0.1], allow_negative_demand=True)
    np.testing.assert_allclose(m.x_observed, np.linalg.solve(np.eye(2) - A, [1.0, -0.1]))


def test_unproductive_intervention_is_not_converged():
    """Scaling every sector by 1.8 pushes the spectral radius above 1 (issue 10, section 2)."""
    rng = np.random.default_rng(3)
    A = rng.uniform(size=(5, 5))
    A = A / A.sum(0) * 0.7  # column sums 0.7: radius 0.7, times 1.8 is 1.26
    y = rng.uniform(0.5, 1.0, 5)
    m = IOModel(A, y)
    # Before: converged=True with negative outputs (the linear system's solution).
    x, report = m.solve(np.full(5, np.log(1.8)), throw=False)
    assert np.any(np.asarray(x) < 0)
    assert not bool(report.converged)
    assert bool(report.result == jc.RESULTS.infeasible)
    with pytest.raises(
        jc.FixedPointError, match=r"^the equilibrium has negative values of \['x'\]"
    ):
        m.solve(np.full(5, np.log(1.8)))
    scm = jc.do(m.scm(), {"x": jc.Scale(1.8)})
    with pytest.raises(jc.FixedPointError, match="spectral radius >= 1"):
        jc.solve(scm, {"x": m.y[None]})
    with pytest.raises(jc.FixedPointError, match="^the equilibrium has negative values"):
        jc.sample(jax.random.key(0), scm, 1)
    with pytest.raises(jc.FixedPointError, match="^the equilibrium has negative values"):
        jc.counterfactual(m.scm(), {"x": m.x_observed[None]}, {"x": jc.Scale(1.8)})
    # vmap over interventions: the bad member is flagged, the good one is not.
    us = jnp.asarray([np.zeros(5), np.full(5, np.log(1.8))])
    _, reps = jax.vmap(lambda u: m.solve(u, throw=False))(us)
    assert [bool(c) for c in reps.converged] == [True, False]
    with pytest.raises(jc.FixedPointError, match="negative values"):
        jax.vmap(lambda u: m.solve(u))(us)
    # A milder intervention (radius 0.7 * 1.3 < 1) is fine and matches LU.
    x, report = m.solve(np.full(5, np.log(1.3)))
    np.testing.assert_allclose(x, np.linalg.solve(np.eye(5) - 1.3 * A, 1.3 * y), rtol=1e-9)
