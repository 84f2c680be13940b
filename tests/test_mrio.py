"""Multi-regional design with trade (jcausal.economy.mrio) and the synthetic MRIO table."""

import jax
import numpy as np
import pytest

from jcausal.economy import design, io, mrio, spectral_radius
from jcausal.economy.synthetic import parse_shape, synthetic_mrio

LAMBDAS = [0.0, 0.3, 1.0, 3.0]
KW = dict(steps=300, lr=0.1)


@pytest.fixture(scope="module")
def table():
    system = io.load_test()
    return system, io.from_pymrio(system, None)


@pytest.fixture(scope="module")
def result(table):
    problem = mrio.MRIOProblem(table[1], "reg2", io.TEST_GHG, io.TEST_EMPLOYMENT)
    return problem, mrio.sweep(problem, LAMBDAS, **KW)


def test_zero_trade_reduces_to_the_domestic_design(table):
    system, full = table
    nt = mrio.without_trade(full)
    got = mrio.sweep(mrio.MRIOProblem(nt, "reg2", io.TEST_GHG, io.TEST_EMPLOYMENT), LAMBDAS, **KW)
    dom = design.DesignProblem(io.from_pymrio(system, "reg2"), io.TEST_GHG, io.TEST_EMPLOYMENT)
    ref = design.sweep(dom, LAMBDAS, **KW)
    # (to the solvers' tolerance: one solves 48 sectors, the other 8; relative to the totals)
    np.testing.assert_allclose(got.design.ghg, ref.ghg, rtol=0, atol=1e-9 * ref.ghg_ref)
    np.testing.assert_allclose(got.design.employment, ref.employment, rtol=0,
                               atol=1e-9 * ref.employment_ref)  # fmt: skip
    np.testing.assert_allclose(got.design.u, ref.u, atol=1e-6)
    # nothing abroad moves when there is no trade
    assert np.max(np.abs(got.leakage)) <= 1e-12 * got.ghg_ref_by_region.sum()


def test_leakage_accounting_and_independent_solve(table, result):
    _, full = table
    problem, res = result
    assert res.design.max_excess_loss < 0.01  # the closed-form optimum on the whole table
    assert res.converged.all()
    # GHG counted where it happens: domestic + abroad = global, and each term is independent
    np.testing.assert_allclose(res.domestic_change + res.leakage, res.global_change, rtol=1e-12)
    np.testing.assert_allclose(res.domestic_change, res.design.ghg - res.design.ghg_ref, rtol=1e-9)
    # the whole table's outputs against numpy: x = (I - diag(α) A)^{-1} diag(α) y
    A, y = np.asarray(full.A), np.asarray(full.y)
    idx = np.asarray(problem.index)
    c = np.asarray(full.intensity(io.TEST_GHG))
    for k in range(len(LAMBDAS)):
        alpha = np.ones(full.n)
        alpha[idx] = np.exp(res.design.u[k])
        x = np.linalg.solve(np.eye(full.n) - alpha[:, None] * A, alpha * y)
        np.testing.assert_allclose(res.x_all[k], x, rtol=1e-8, atol=1e-8 * x.max())
        np.testing.assert_allclose(res.global_change[k], c @ (x - np.asarray(full.x_observed)),
                                   rtol=0, atol=1e-8 * res.ghg_ref_by_region.sum())  # fmt: skip
    # closing the region's dirty sectors cuts the foreign production of their inputs too
    assert res.domestic_change[0] < 0 and res.leakage[0] < 0
    assert np.isfinite(res.leakage_share[0])


def test_bad_input(table):
    system, full = table
    with pytest.raises(ValueError, match="unknown region 'nowhere'.*reg1"):
        mrio.MRIOProblem(full, "nowhere", io.TEST_GHG, io.TEST_EMPLOYMENT)
    with pytest.raises(ValueError, match="needs a table of several regions"):
        mrio.MRIOProblem(io.from_pymrio(system, "reg1"), "reg1", io.TEST_GHG, io.TEST_EMPLOYMENT)
    with pytest.raises(ValueError, match="REGIONSxSECTORS"):
        parse_shape("49by200")
    with pytest.raises(ValueError, match="rho"):
        synthetic_mrio(2, 3, rho=1.2)


def test_synthetic_table_shape_radius_and_seed():
    m = synthetic_mrio(5, 12, seed=3, rho=0.55, trade_share=0.2)
    A = np.asarray(m.A)
    assert m.n == 60 and mrio.region_names(m)[:2] == ["R1", "R2"]
    assert abs(spectral_radius(A) - 0.55) < 1e-12  # exact by construction, checked by eig
    assert A.min() >= 0 and A.sum(0).max() < 1 and A.sum(0).min() < A.sum(0).max()
    reg = np.asarray(m.regions)
    same = reg[:, None] == reg[None, :]
    # block structure: the diagonal blocks hold most inputs, in units where columns sum to ρ
    assert 0.7 < A[same].sum() / A.sum() < 0.9
    x, y = np.asarray(m.x_observed), np.asarray(m.y)
    np.testing.assert_allclose(x, np.linalg.solve(np.eye(60) - A, y), rtol=1e-12)
    assert np.array_equal(np.asarray(synthetic_mrio(5, 12, seed=3).A), A)
    assert not np.array_equal(np.asarray(synthetic_mrio(5, 12, seed=4).A), A)
    # the design runs on it and reaches its optimum
    p = mrio.MRIOProblem(m, "R2", "GHG", "Employment")
    res = mrio.sweep(p, [0.0, 1.0], steps=300, lr=0.1)
    assert res.design.max_excess_loss < 0.01 and res.converged.all()
    assert jax.numpy.asarray(res.ghg_by_region).shape == (2, 5)


def test_case_sweeps_equal_separate_sweeps_and_share_the_table():
    """Regions (one table), years (two tables) and weightings as one grid == one by one."""
    from jcausal.economy import sweeps

    m1, m2 = synthetic_mrio(3, 4, seed=1), synthetic_mrio(3, 4, seed=2)
    kw, lams = dict(steps=20, lr=0.1), [0.0, 0.5, 4.0]
    regions = [mrio.MRIOProblem(m1, r, "GHG", "Employment") for r in ("R1", "R3")]
    grid = mrio.sweep_cases(regions, lams, **kw)
    one = mrio.sweep(regions[1], lams, **kw)
    assert np.max(np.abs(one.design.u)) > 0.1  # the runs moved
    assert np.max(np.abs(grid[1].design.u - one.design.u)) < 1e-12
    assert np.max(np.abs(grid[1].x_all - one.x_all)) < 1e-12 * np.abs(one.x_all).max()
    assert [g.region for g in grid] == ["R1", "R3"]
    # the table is held once; only the regions' positions and indicators are stacked
    cases = sweeps.stack(regions)
    assert cases.problem.model.A is regions[0].model.A and not cases.stacked[0]
    # years × weightings: tables stacked, per-case λ grids
    blocks = [mrio.domestic_block(m, "R2") for m in (m1, m2)]
    probs = [design.DesignProblem(b, {"GHG": 1.0, "Employment": w}, "Employment")
             for w in (0.0, 0.01) for b in blocks]  # fmt: skip
    per_case = np.asarray([lams, [0.0, 1.0, 2.0], lams, lams])
    got = sweeps.sweep_cases(probs, per_case, **kw)
    ref = design.sweep(probs[3], lams, **kw)
    assert np.max(np.abs(got[3].u - ref.u)) < 1e-12 and np.array_equal(got[1].lambdas, [0, 1, 2])
    assert np.max(np.abs(got[3].loss - ref.loss)) < 1e-12
    bad = [
        (lambda: sweeps.stack([regions[0], probs[0]]), "it is a DesignProblem"),
        (lambda: sweeps.stack([probs[0], design.DesignProblem(m1, "GHG", "Employment")]),
         "an array of shape (12, 12) stands where case 0 has (4, 4)"),
        (lambda: sweeps.sweep_cases(probs, np.ones((3, 2)), **kw), "one per case (4, L)"),
        (lambda: sweeps.sweep_cases(probs, lams, case_axis="sweep", **kw), "pass mesh= too"),
    ]  # fmt: skip
    for call, message in bad:
        with pytest.raises(ValueError) as err:
            call()
        assert message in str(err.value), str(err.value)


def test_bounded_design_on_the_whole_table(table):
    """Factors bounded by 2 on the whole table: the linear programme and the optimiser.

    Without trade the programme is the block's; with trade its optimum is an equilibrium with
    factors in [0, 2], and the optimiser reaches it.
    """
    system, full = table
    lams = [0.0, 1.0, 10.0]
    spec = (io.TEST_GHG, io.TEST_EMPLOYMENT)
    nt = mrio.MRIOProblem(mrio.without_trade(full), "reg2", *spec, bounded=True)
    block = design.DesignProblem(io.from_pymrio(system, "reg2"), *spec, bounded=True)
    a, b = mrio.bounded_front(nt, lams), design.bounded_front(block, lams)
    np.testing.assert_allclose(a["ghg"], b["ghg"], rtol=0, atol=1e-9 * float(block.G))
    p = mrio.MRIOProblem(full, "reg2", *spec, bounded=True)
    front = mrio.bounded_front(p, lams)
    xa = front["x_all"]
    demand = xa @ np.asarray(full.A).T + np.asarray(full.y)
    idx = np.asarray(p.index)
    rest = np.setdiff1d(np.arange(full.n), idx)
    np.testing.assert_allclose(xa[:, rest], demand[:, rest], rtol=1e-6)
    assert np.all(xa[:, idx] <= 2 * demand[:, idx] * (1 + 1e-7))
    res = mrio.sweep(p, lams, steps=300, lr=0.1)
    assert res.design.max_excess_loss < 1e-3 and res.converged.all()
    np.testing.assert_allclose(res.design.analytic_ghg, front["ghg"])
    # the factors stayed inside (0, 2)
    assert np.all(p.factor(res.design.u) < 2) and np.all(p.factor(res.design.u) > 0)
