"""Price model, demand curves and the rebound equilibrium (jcausal.economy)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import root

import jcausal as jc
from jcausal.economy.demand import ConstantElasticity, Logistic
from jcausal.economy.prices import price_scm, spectral_radius, unit_prices
from jcausal.economy.rebound import efficiency, rebound_model

A3 = np.array([[0.0, 0.1, 0.0], [0.5, 0.0, 0.0], [0.1, 0.2, 0.0]])


def test_price_equilibrium_matches_numpy_solve():
    rng = np.random.default_rng(0)
    A = rng.uniform(0, 1, (6, 6)) * (rng.random((6, 6)) < 0.6)
    A = A / A.sum(0).max() * 0.8
    va = rng.uniform(0.1, 1.0, 6)
    expected = np.linalg.solve(np.eye(6) - A.T, va)
    np.testing.assert_allclose(unit_prices(A, va), expected, rtol=1e-12)
    scm, noise = price_scm(A, va)
    values, report = jc.solve(scm, noise)
    assert bool(report.converged)
    np.testing.assert_allclose(values["price"][0], expected, rtol=1e-9)


def test_logistic_matches_closed_form_and_finite_differences():
    curve = Logistic.paper()
    p = np.linspace(0.0, 1.2, 13)
    np.testing.assert_allclose(curve(p), 1.42 / (np.exp(10 * (p / 0.4 - 1)) + 1), rtol=1e-12)
    h = 1e-6
    fd = (np.asarray(curve(p + h)) - np.asarray(curve(p - h))) / (2 * h)
    np.testing.assert_allclose(curve.derivative(p), fd, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(curve(0.4), 0.71, rtol=1e-12)  # half the saturation level


def test_constant_elasticity_closed_form_and_derivative():
    curve = ConstantElasticity(scale=jnp.array([2.0, 1.0]), elasticity=jnp.array([0.5, 1.5]))
    p = np.array([0.7, 1.9])
    np.testing.assert_allclose(curve(p), [2.0 * 0.7**-0.5, 1.9**-1.5], rtol=1e-12)
    h = 1e-6
    fd = (np.asarray(curve(p + h)) - np.asarray(curve(p - h))) / (2 * h)
    np.testing.assert_allclose(curve.derivative(p), fd, rtol=1e-7)
    np.testing.assert_allclose(curve.price_elasticity(p), [-0.5, -1.5], rtol=1e-10)


def _residual_numpy(z, A, beta, energy, target):
    d = A.shape[0]
    p, x = z[:d], z[d:]
    va = np.zeros(d)
    va[energy] = beta
    y = 1.42 / (np.exp(10 * (p / 0.4 - 1)) + 1)
    return np.concatenate([p - A.T @ p - va, x - A @ x - y])


@pytest.mark.parametrize("alpha", [1.0, 0.6])
def test_rebound_equilibrium_solves_both_equations_and_matches_scipy(alpha):
    scm, noise = rebound_model(A3, Logistic.paper(), energy=1, target=0)
    if alpha != 1.0:
        scm = jc.do(scm, efficiency(np.log(alpha)))
    values, report = jc.solve(scm, noise)
    assert bool(report.converged)
    A = A3.copy()
    A[1, 0] *= alpha
    z = np.concatenate([values["price"][0], values["output"][0]])
    assert np.max(np.abs(_residual_numpy(z, A, 1.0, 1, 0))) < 1e-9
    ref = root(_residual_numpy, np.zeros(6), args=(A, 1.0, 1, 0), tol=1e-13)
    assert ref.success
    np.testing.assert_allclose(z, ref.x, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(values["energy"][0], ref.x[3 + 1], rtol=1e-8)


def test_efficiency_backfires_and_implicit_gradient_matches_finite_differences():
    scm, noise = rebound_model(A3, Logistic.paper(), energy=1, target=0)

    def energy(u):
        return jc.solve(jc.do(scm, efficiency(u)), noise)[0]["energy"][0]

    base = float(energy(0.0))
    u = float(np.log(0.6))
    assert float(energy(u)) > base  # backfire: 40 % more efficient, more energy used
    g = float(jax.grad(energy)(u))
    h = 1e-5
    fd = (float(energy(u + h)) - float(energy(u - h))) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-6)
    # Backfire is not monotone: at alpha = 0.6 demand is nearly saturated, so a further
    # efficiency gain (u down) now lowers energy use a little.
    assert g > 0


def test_error_cases():
    with pytest.raises(ValueError, match="negative technical coefficients"):
        unit_prices(np.array([[0.1, -0.2], [0.3, 0.1]]), np.ones(2))
    big = np.array([[0.5, 0.6], [0.7, 0.5]])
    rho = spectral_radius(big)
    assert rho >= 1
    with pytest.raises(ValueError, match=f"spectral radius of A is {rho:.6g}"):
        rebound_model(big, Logistic.paper(), energy=1, target=0)
    with pytest.raises(ValueError, match="spectral radius"):
        price_scm(big, np.ones(2))
    with pytest.raises(ValueError, match="uses no energy"):
        rebound_model(A3, Logistic.paper(), energy=1, target=2)
    with pytest.raises(ValueError, match="out of range"):
        rebound_model(A3, Logistic.paper(), energy=3, target=0)
    with pytest.raises(ValueError, match="steepness must be finite and positive"):
        Logistic(1.0, 0.4, -1.0)
    with pytest.raises(ValueError, match="value_added has"):
        unit_prices(A3, np.ones(4))


# --- the two value-added conventions (paper's text vs the authors' code) ------------------------


def _closed_form(a_et_scale, kind, beta=1.0):
    """numpy: prices p = (I - Ãᵀ)⁻¹ v (v = βδ_e or βÃᵀδ_e), y = d(p), x = (I - Ã)⁻¹ y."""
    A = A3.copy()
    A[1, 0] *= a_et_scale
    v = beta * (np.eye(3)[1] if kind == "energy_output" else A[1])
    p = np.linalg.solve(np.eye(3) - A.T, v)
    y = 1.42 / (np.exp(10 * (p / 0.4 - 1)) + 1)
    return p, y, np.linalg.solve(np.eye(3) - A, y)


@pytest.mark.parametrize("kind", ["energy_output", "energy_input"])
@pytest.mark.parametrize("alpha", [1.0, 0.6])
def test_value_added_conventions_match_closed_form(kind, alpha):
    scm, noise = rebound_model(A3, Logistic.paper(), energy=1, target=0, value_added=kind)
    if alpha != 1.0:
        scm = jc.do(scm, efficiency(np.log(alpha)))
    values, report = jc.solve(scm, noise)
    assert bool(report.converged)
    p, y, x = _closed_form(alpha, kind)
    np.testing.assert_allclose(values["price"][0], p, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(values["demand"][0], y, rtol=1e-8)
    np.testing.assert_allclose(values["output"][0], x, rtol=1e-8)
    np.testing.assert_allclose(values["target_demand"][0], y[0], rtol=1e-8)


def test_value_added_conventions_differ_only_through_energy():
    """Same target price and demand, very different energy (the Fig. 4 discrepancy)."""
    (p_t, y_t, x_t), (p_c, y_c, x_c) = (
        _closed_form(1.0, "energy_output"),
        _closed_form(1.0, "energy_input"),
    )
    # The target price is 0.5/(1 - 0.05) under both; energy's price is ~1 (text) vs ~0.05 (code).
    np.testing.assert_allclose([p_t[0], p_c[0]], 0.5 / 0.95, rtol=1e-12)
    assert 1.0 < p_t[1] < 1.1 and 0.04 < p_c[1] < 0.06
    assert y_t[1] < 1e-6 and y_c[1] > 1.4  # energy's final demand: ~1e-7 vs near saturation
    assert x_c[1] / x_t[1] > 30  # total energy ~50x higher under the code's equation
    # Backfire at alpha = 0.6: ~13x under the text, ~1.2x under the code.
    for kind, lo, hi in (("energy_output", 12.0, 14.0), ("energy_input", 1.15, 1.25)):
        ratio = _closed_form(0.6, kind)[2][1] / _closed_form(1.0, kind)[2][1]
        assert lo < ratio < hi, (kind, ratio)


def test_value_added_helper_and_price_scm():
    from jcausal.economy.prices import value_added

    np.testing.assert_allclose(value_added(A3, 1, "energy_output", 2.0), [0.0, 2.0, 0.0])
    np.testing.assert_allclose(value_added(A3, 1, "energy_input", 2.0), 2.0 * A3[1])
    v = value_added(A3, 1, "energy_input")
    scm, noise = price_scm(A3, v)
    values, _ = jc.solve(scm, noise)
    np.testing.assert_allclose(values["price"][0], _closed_form(1.0, "energy_input")[0], rtol=1e-9)
    with pytest.raises(ValueError, match="unknown value_added 'code'"):
        value_added(A3, 1, "code")
    with pytest.raises(ValueError, match="unknown value_added"):
        rebound_model(A3, Logistic.paper(), energy=1, target=0, value_added="text")
    with pytest.raises(ValueError, match="out of range"):
        value_added(A3, 3)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="energy_price must be a finite positive"):
            rebound_model(A3, Logistic.paper(), energy=1, target=0, energy_price=bad)


def test_energy_input_gradient_matches_finite_differences():
    """Implicit gradient of energy in u under the code's equation, against central differences.

    There the value added follows the intervened intensity; also checked on the closed form.
    """
    scm, noise = rebound_model(A3, Logistic.paper(), energy=1, target=0, value_added="energy_input")

    def energy(u):
        return jc.solve(jc.do(scm, efficiency(u)), noise)[0]["energy"][0]

    u = float(np.log(0.6))
    np.testing.assert_allclose(float(energy(u)), _closed_form(0.6, "energy_input")[2][1], rtol=1e-8)
    g = float(jax.grad(energy)(u))
    h = 1e-5
    fd = (float(energy(u + h)) - float(energy(u - h))) / (2 * h)
    cf = (
        _closed_form(np.exp(u + h), "energy_input")[2][1]
        - _closed_form(np.exp(u - h), "energy_input")[2][1]
    ) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-6)
    np.testing.assert_allclose(g, cf, rtol=1e-6)
