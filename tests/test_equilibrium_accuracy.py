"""Fig. 3a: the authors' solver protocol as a configuration of our Anderson, and Exiobase input.

The authors' routine (github.com/mbesserve/lie-inter, code/deepeq.py) is re-written below from
its description in numpy, independently of our solver: bordered least-squares system with an
absolute ridge, first move x_1 = f(x_0), ring buffer of m points, stop at
||F - X|| / (1e-5 + ||F||) < tol.
"""

from __future__ import annotations

import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from jcausal.experiments import equilibrium_accuracy as ea
from jcausal.solvers import Anderson, fixed_point


@pytest.fixture(autouse=True)
def _x64():
    was = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", was)


def numpy_anderson(f, x0, m=5, lam=1e-4, max_iter=200, tol=1e-12, beta=1.0):
    """The reference routine, in numpy: returns (last evaluated point, evaluations)."""
    X = np.zeros((m, x0.size))
    F = np.zeros((m, x0.size))
    X[0], F[0] = x0, f(x0)
    X[1], F[1] = F[0], f(F[0])
    k = 1
    for k in range(2, max_iter):
        h = min(k, m)
        G = F[:h] - X[:h]
        H = np.zeros((h + 1, h + 1))
        H[0, 1:] = H[1:, 0] = 1
        H[1:, 1:] = G @ G.T + lam * np.eye(h)
        alpha = np.linalg.solve(H, np.eye(h + 1)[0])[1:]
        X[k % m] = beta * alpha @ F[:h] + (1 - beta) * alpha @ X[:h]
        F[k % m] = f(X[k % m])
        if np.linalg.norm(F[k % m] - X[k % m]) / (1e-5 + np.linalg.norm(F[k % m])) < tol:
            break
    return X[k % m], k + 1


def numpy_forward(f, x0, max_iter=200, tol=1e-12):
    """The reference forward iteration; returns f of its last iterate."""
    f0 = f(x0)
    for _ in range(max_iter):
        x, f0 = f0, f(f0)
        if np.linalg.norm(f0 - x) / (1e-5 + np.linalg.norm(f0)) < tol:
            break
    return f0


def _system(seed, n, sums, scale):
    rng = np.random.default_rng(seed)
    return ea.exiobase_like(rng, n, sums), rng.lognormal(0.0, 1.0, n) * scale


@pytest.mark.parametrize("beta", [1.0, 2.0])
@pytest.mark.parametrize(("sums", "scale"), [((0.85, 0.99), 1.0), ((0.5, 0.9), 1e4)])
def test_authors_protocol_reproduces_their_iterates(beta, sums, scale):
    A, y = _system(3, 12, sums, scale)
    f = lambda x: A @ x + y
    args = (jnp.asarray(A), jnp.asarray(y))
    for budget in (2, 3, 6, 25, 200):
        want, evals = numpy_anderson(f, np.zeros(12), max_iter=budget, beta=beta)
        solver, post = ea.solver_for("anderson", beta, budget, protocol="authors")
        assert post == 1
        x, rep = fixed_point(
            lambda v, p: p[0] @ v + p[1], jnp.zeros(12), args, solver=solver, throw=False
        )
        np.testing.assert_allclose(np.asarray(x), want, rtol=1e-11, atol=0)
        assert int(rep.num_steps) == max(evals, 2 if budget >= 2 else 1)
    # The well-conditioned system meets tol = 1e-12 before max_iter: the stopping rule is
    # exercised (at the same evaluation as the reference, asserted above).
    assert evals < 200 or sums[1] > 0.9


def test_default_anderson_is_not_the_authors_one():
    # beta = 2 from zero: ours mixes the very first move, theirs takes x_1 = f(x_0).
    A, y = _system(4, 8, (0.5, 0.9), 1.0)
    args = (jnp.asarray(A), jnp.asarray(y))
    fn = lambda v, p: p[0] @ v + p[1]
    ours, _ = fixed_point(
        fn, jnp.zeros(8), args, solver=Anderson(beta=2.0, max_steps=2), throw=False
    )
    np.testing.assert_allclose(np.asarray(ours), 2 * y)
    auth, _ = fixed_point(
        fn, jnp.zeros(8), args, solver=Anderson(beta=2.0, max_steps=2, first_beta=1.0), throw=False
    )
    np.testing.assert_allclose(np.asarray(auth), y)


def test_absolute_ridge_flattens_the_weights_once_residuals_are_small():
    # With ||r||^2 << ridge the weights are ~uniform: mixing two points averages them.
    A, y = _system(5, 6, (0.5, 0.9), 1e-6)
    args = (jnp.asarray(A), jnp.asarray(y))
    fn = lambda v, p: p[0] @ v + p[1]
    s = Anderson(
        max_steps=3,
        ridge=1.0,
        ridge_kind="absolute",
        first_beta=1.0,
        rtol=0.0,
        atol=0.0,
        divergence=float("inf"),
    )
    x, _ = fixed_point(fn, jnp.zeros(6), args, solver=s, throw=False)
    x1 = y
    g = 0.5 * (x1 + (A @ x1 + y))  # average of y_0 + r_0 = f(0) = y and y_1 + r_1 = f(y)
    np.testing.assert_allclose(np.asarray(x), g, rtol=1e-9)


@pytest.mark.parametrize(
    "bad",
    [
        dict(ridge_kind="abs"),
        dict(first_beta=0.0),
        dict(first_beta=float("nan")),
        dict(first_beta=True),
    ],
)
def test_bad_authors_options_are_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        Anderson(**bad)


def test_relative_errors_match_the_reference_layer_output():
    # The error is measured where the reference layer returns: f after the solver (f twice
    # after forward iteration, whose routine returns f of its last iterate).
    A, y = _system(6, 10, (0.85, 0.99), 1.0)
    f = lambda x: A @ x + y

    def rel(x):
        return np.linalg.norm(x - f(x)) / np.linalg.norm(x)

    for budget in (5, 20):
        fw = numpy_forward(f, np.zeros(10), max_iter=budget)
        got, _ = ea.relative_errors(
            A[None], y[None], method="forward", beta=1.0, budget=budget, protocol="authors"
        )
        np.testing.assert_allclose(got[0], rel(f(fw)), rtol=1e-8)
        for beta in (1.0, 2.0):
            xa, _ = numpy_anderson(f, np.zeros(10), max_iter=budget, beta=beta)
            got, evals = ea.relative_errors(
                A[None], y[None], method="anderson", beta=beta, budget=budget, protocol="authors"
            )
            np.testing.assert_allclose(got[0], rel(f(xa)), rtol=1e-8)
            assert evals[0] == budget + 1


def test_our_protocol_is_scale_free_the_authors_is_not():
    # Final demand x1e4 (M EUR-like units): our relative ridge gives the same relative errors,
    # the authors' absolute ridge 1e-4 stalls beta = 1 much later (at a smaller error).
    rng = np.random.default_rng(7)
    As = np.stack([ea.exiobase_like(rng, 30, (0.85, 0.99)) for _ in range(3)])
    ys = rng.lognormal(0.0, 1.0, (3, 30))
    kw = dict(method="anderson", beta=1.0)
    ours1, _ = ea.relative_errors(As, ys, budget=20, **kw)
    ours2, _ = ea.relative_errors(As, 1e4 * ys, budget=20, **kw)
    assert ours1.min() > 1e-12  # not at the rounding floor: the comparison means something
    np.testing.assert_allclose(ours2, ours1, rtol=1e-6)
    auth1, _ = ea.relative_errors(As, ys, budget=200, protocol="authors", **kw)
    auth2, _ = ea.relative_errors(As, 1e4 * ys, budget=200, protocol="authors", **kw)
    assert np.all(auth2 < 1e-2 * auth1)


def test_claims_verdicts():
    block = {
        "sizes": [5, 20, 50, 100, 200],
        "forward": {"mean": [1e-10, 1e-9, 1e-8, 1e-7, 1e-6]},
        "anderson_beta1": {"mean": [1e-9, 1e-8, 1e-8, 1e-6, 1e-9]},
        "anderson_beta2": {"mean": [1e-8, 1e-15, 1e-9, 1e-9, 1e-10]},
    }
    c = ea.claims(block)
    assert c["C1"]["verdict"] == "partly (1/2)" and c["C1"]["holds_at"] == [5]
    assert c["C2"]["verdict"] == "holds" and c["C2"]["judged"] == [100, 200]
    assert c["C3"]["verdict"] == "partly (2/5)" and c["C3"]["holds_at"] == [20, 100]
    floor = {k: ({"mean": [1e-16, 2e-16]} if k != "sizes" else [5, 10]) for k in block}
    assert ea.claims(floor)["C1"]["verdict"] == "tie"
    assert ea.claims(floor)["C2"]["verdict"] == "n/a"


# --------------------------------------------------------------------------------------------
# Exiobase: an archive shaped like Exiobase 3 (its country codes), written by pymrio itself.

SECTORS = [f"sector {i}" for i in range(6)]
REGIONS = ["FR", "DE", "IT", "US", "GB", "WA"]


def _archive(tmp_path, regions=REGIONS, fr_demand_from=0):
    import pymrio

    rng = np.random.default_rng(0)
    idx = pd.MultiIndex.from_product([regions, SECTORS], names=["region", "sector"])
    cats = ["Final consumption expenditure by households", "Gross fixed capital formation"]
    cols = pd.MultiIndex.from_product([regions, cats], names=["region", "category"])
    Z = pd.DataFrame(rng.lognormal(3, 1, (len(idx), len(idx))), idx, idx)
    Y = pd.DataFrame(rng.lognormal(6, 1, (len(idx), len(cols))), idx, cols)
    for sector in SECTORS[:fr_demand_from]:
        Y.loc[("FR", sector), "FR"] = 0.0
    io = pymrio.IOSystem(Z=Z, Y=Y, unit=pd.DataFrame({"unit": "M.EUR"}, index=idx))
    io.calc_all()
    folder = tmp_path / "exio"
    io.save_all(folder)
    arc = tmp_path / "IOT_test_pxp.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        for p in sorted(folder.rglob("*")):
            zf.write(p, p.relative_to(folder).as_posix())
    x = Z.to_numpy().sum(1) + Y.to_numpy().sum(1)
    return arc, Z.to_numpy() / x[None, :], Y.to_numpy()


def test_exiobase_blocks_are_the_countries_leading_blocks(tmp_path):
    arc, A, Y = _archive(tmp_path)
    blocks = ea.exiobase_blocks([arc, arc], (3, 6))
    As, ys = blocks[3]
    assert As.shape == (10, 3, 3) and ys.shape == (10, 3)
    for i, r in enumerate(ea.EXIOBASE_REGIONS):
        k = REGIONS.index(r)
        rows = slice(6 * k, 6 * k + 6)
        # A_rr from Z / x, and the region's own final demand Y[r, r] summed over categories.
        np.testing.assert_allclose(As[i], A[rows, rows][:3, :3], rtol=1e-6)
        np.testing.assert_allclose(ys[i], Y[rows, 2 * k : 2 * k + 2].sum(1)[:3], rtol=1e-6)
    np.testing.assert_array_equal(blocks[6][0][5:], blocks[6][0][:5])  # second archive


def test_exiobase_bad_input_is_named(tmp_path):
    arc, _, _ = _archive(tmp_path, regions=["FR", "DE", "WA"])
    with pytest.raises(ValueError, match=r"region 'IT' is not in .*FR, DE, WA"):
        ea.exiobase_blocks([arc], (3,))
    arc2, _, _ = _archive(tmp_path / "b")
    with pytest.raises(ValueError, match=r"has 6 sectors, asked for n = 7.*pxp"):
        ea.exiobase_blocks([arc2], (7,))
    with pytest.raises(ValueError, match="not-there"):
        ea.exiobase_blocks([tmp_path / "not-there.zip"], (3,))
    # No domestic final demand for FR's first 3 products: x* = 0, the error is 0 / 0.
    arc3, _, _ = _archive(tmp_path / "c", fr_demand_from=3)
    with pytest.raises(ValueError, match=r"'FR' .* no domestic final demand for its first 3"):
        ea.exiobase_blocks([arc3], (3, 6))
    assert ea.exiobase_blocks([arc3], (4,))[4][1][0, 3] > 0


def test_experiment_with_exiobase(tmp_path):
    arc, _, _ = _archive(tmp_path)
    cfg = ea.Config(pymrio_sizes=(4,), sizes=(5,), exiobase_sizes=(3, 6), draws=1, budgets=(20,))
    m = ea.run(out=tmp_path / "out", exiobase=[arc], config=cfg)
    for protocol in ("ours", "authors"):
        res = m["results"][protocol]["budget_20"]["exiobase"]
        assert res["sizes"] == [3, 6]
        assert all(np.isfinite(res[k]["mean"]).all() for k in m["methods"])
        assert set(m["claims"][protocol]["budget_20"]["exiobase"]) == {"C1", "C2", "C3"}
    assert (tmp_path / "out" / "fig3a_budget20.png").exists()
    # The command line refuses a missing archive before any work.
    with pytest.raises(ValueError, match="missing.zip"):
        ea.main(["--exiobase", str(tmp_path / "missing.zip"), "--out", str(tmp_path / "o2")])
    assert not (tmp_path / "o2").exists()
