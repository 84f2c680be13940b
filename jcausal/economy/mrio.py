"""Multi-regional intervention design with trade: eq. 5 on one region, solved on the whole table.

The paper (Besserve & Schölkopf, UAI 2022, Sec. 5) designs each country on its *domestic block*
``A_rr`` and neglects cross-country flows (:func:`jcausal.economy.io.from_pymrio` with a region;
:mod:`jcausal.economy.design`). Here the equilibrium is the **whole** multi-regional table

    x_i := α_i (A x + y)_i  for the sectors i of the chosen region,   x_j = (A x + y)_j  elsewhere,

so closing a domestic sector also cuts the foreign production of its imported inputs, and a
kept sector whose domestic customers closed still serves its foreign customers. The objective
is the region's own (territorial) eq. 5, ``c_r·x_r / G*_r + λ ||e_r - e*_r||_1 / E*_r``: what a
national policy would minimise. GHG and employment are then counted **where they happen**:
:class:`MRIOResult` has the change of every region, the domestic change, the change abroad
(the *leakage*: positive when emissions move abroad) and the global change, which is their
sum.

The optimum is still the closed form of :func:`jcausal.economy.design.analytic_front` on the
region's ``c_r, r_r, x*_r``: any positive ``x_r`` is reached (foreign outputs follow from
``x_F = (I - A_FF)^{-1} (A_Fr x_r + y_F) > 0``, then ``α_r = x_r / (A x + y)_r``), and the loss
depends on ``x_r`` only. So :func:`jcausal.economy.design.sweep` runs it unchanged (one
compiled λ sweep, implicit gradients through the whole table) and checks it against the
optimum. The Leontief model has no substitution between suppliers: foreign emissions change
only through the supply chains (fewer imported inputs where a sector closes, more where a kept
sector's factor grows); leakage through relocated production would need a trade model.

With the trade coefficients zeroed (:func:`without_trade`) the region is its domestic block of
:func:`~jcausal.economy.io.from_pymrio` (same ``A_rr``, same closure ``y = x - A_rr x``) and
the design is the paper's; ``tests/test_mrio.py`` checks this.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from .. import parallel
from .design import DesignResult, _indicator
from .leontief import IOModel, StressorSpec, unknown_name_message


def region_names(model: IOModel) -> list[str]:
    """The regions of a model, in table order."""
    return list(dict.fromkeys(model.regions))


def region_index(model: IOModel, region: str) -> np.ndarray:
    """Positions ``(S,)`` of ``region``'s sectors in the model.

    Raises:
        ValueError: an unknown region (listing the model's regions), or a one-region model.
    """
    regs = region_names(model)
    if len(regs) < 2:
        raise ValueError(
            "a multi-regional design needs a table of several regions; this model has "
            f"{regs or ['(unnamed)']} (build the full table: io.from_pymrio(system, None))"
        )
    if str(region) not in regs:
        raise ValueError(unknown_name_message("region", region, regs))
    return np.flatnonzero(np.asarray(model.regions) == str(region))


def without_trade(model: IOModel) -> IOModel:
    """The table with every trade coefficient ``A_rs`` (``r != s``) set to zero.

    Final demand is re-closed as ``y = x - A_bd x`` so that the table's output stays the
    equilibrium (imported inputs dropped, exports held fixed as demand): each region is then
    exactly its domestic block of :func:`~jcausal.economy.io.from_pymrio`.

    Args:
        model: a multi-regional model.

    Returns:
        The block-diagonal model (same labels and stressors).
    """
    reg = np.asarray(model.regions)
    A = np.where(reg[:, None] == reg[None, :], np.asarray(model.A, np.float64), 0.0)
    x = np.asarray(model.x_observed, np.float64)
    y = x - A @ x
    y = np.where(np.abs(y) <= 1e-12 * np.max(np.abs(x), initial=0.0), 0.0, y)
    return IOModel(
        A,
        y,
        x_observed=x,
        S=model.S,
        sectors=model.sectors,
        regions=model.regions,
        stressors=model.stressors,
        stressor_units=model.stressor_units,
        extensions=model.extensions,
        stressor_keys=model.stressor_keys,
        solver=model.solver,
        dtype=model.A.dtype,
        allow_negative_demand=True,
        reproduction_error=model.reproduction_error,
        note=model.note + "; trade coefficients zeroed (y re-closed as x - A_bd x)",
    )


def domestic_block(model: IOModel, region: str) -> IOModel:
    """The region's domestic block, closed as :func:`~jcausal.economy.io.from_pymrio` does.

    ``A_rr``, ``x_r``, ``S[:, r]`` and ``y_r = x_r - A_rr x_r`` (the region's final demand,
    exports and intermediate exports, held fixed): the paper's model of one country, for any
    multi-regional :class:`IOModel` (e.g. a synthetic one).

    Raises:
        ValueError: an unknown region.
    """
    idx = region_index(model, region)
    A = np.asarray(model.A, np.float64)[np.ix_(idx, idx)]
    x = np.asarray(model.x_observed, np.float64)[idx]
    y = x - A @ x
    y = np.where(np.abs(y) <= 1e-12 * np.max(np.abs(x), initial=0.0), 0.0, y)
    return IOModel(
        A,
        y,
        x_observed=x,
        S=np.asarray(model.S)[:, idx],
        sectors=[model.sectors[i] for i in idx],
        regions=[model.regions[i] for i in idx],
        stressors=model.stressors,
        stressor_units=model.stressor_units,
        extensions=model.extensions,
        stressor_keys=model.stressor_keys,
        solver=model.solver,
        dtype=model.A.dtype,
        allow_negative_demand=True,
        note=f"domestic block of region {region!r} (cross-country flows neglected)",
    )


class MRIOProblem(eqx.Module):
    """Eq. 5 of one region, solved on the whole multi-regional table.

    Duck-compatible with :class:`~jcausal.economy.design.DesignProblem` (the same
    :func:`~jcausal.economy.design.sweep`, :func:`~jcausal.economy.design.analytic_front` and
    :func:`~jcausal.economy.design.sector_table` apply): ``c``, ``r``, ``x_ref``, ``G``, ``E``
    are the region's; ``u`` ``(S,)`` acts on the region's ``S`` sectors.

    Attributes:
        model: the whole table (``N`` sectors).
        index: ``(S,)`` positions of the region's sectors in the table.
        c_all: ``(N,)`` GHG per unit output of every sector.
        r_all: ``(N,)`` employment per unit output of every sector.
        x_all_ref: ``(N,)`` the table's output.
        c: ``(S,)``, r: ``(S,)``, x_ref: ``(S,)``: the region's parts.
        G: the region's reference GHG; E: its reference employment.
        region: the region's name.
    """

    model: IOModel
    index: Int[Array, " S"]
    c_all: Float[Array, " N"]
    r_all: Float[Array, " N"]
    x_all_ref: Float[Array, " N"]
    c: Float[Array, " S"]
    r: Float[Array, " S"]
    x_ref: Float[Array, " S"]
    G: Float[Array, ""]
    E: Float[Array, ""]
    region: str = eqx.field(static=True)
    labels: tuple[str, ...] = eqx.field(static=True)
    bounded: bool = eqx.field(static=True, default=False)

    def __init__(
        self,
        model: IOModel,
        region: str,
        ghg: StressorSpec,
        employment: StressorSpec,
        *,
        bounded: bool = False,
    ):
        """Build the problem and check the indicators.

        Args:
            model: the whole multi-regional table (e.g. ``io.from_pymrio(system, None)`` or
                :func:`~jcausal.economy.synthetic.synthetic_mrio`).
            region: the region whose sectors are intervened on.
            ghg: the GHG indicator (a row name, ``{row: weight}`` or weights).
            employment: the employment indicator, likewise.
            bounded: the paper's factors ``α = 2·sigmoid(u)`` in ``(0, 2)`` on the region's
                sectors (default ``α = exp(u)``); the optimum is then the linear programme
                of :func:`bounded_front` on the whole table.

        Raises:
            ValueError: an unknown region, or an indicator refused by
                :class:`~jcausal.economy.design.DesignProblem`'s checks (unknown or non-finite
                rows, negative intensities, a zero reference total in the region).
        """
        idx = region_index(model, region)
        self.region = str(region)
        self.model = eqx.tree_at(
            lambda m: m.reproduction_error, model, np.asarray(model.reproduction_error, float)
        )
        self.index = jnp.asarray(idx, jnp.int32)
        self.c_all = _indicator(model, ghg, "GHG")
        self.r_all = _indicator(model, employment, "employment")
        self.x_all_ref = model.x_observed
        self.c, self.r = self.c_all[idx], self.r_all[idx]
        self.x_ref = model.x_observed[idx]
        self.G = self.c @ self.x_ref
        self.E = self.r @ self.x_ref
        self.labels = tuple(model.labels[i] for i in idx)
        if not isinstance(bounded, bool | np.bool_):
            raise ValueError(f"bounded must be True or False, got {bounded!r}")
        self.bounded = bool(bounded)
        for total, name, spec in ((self.G, "GHG", ghg), (self.E, "employment", employment)):
            if not (np.isfinite(float(total)) and float(total) > 0):
                raise ValueError(
                    f"the {name} indicator {spec!r} totals {float(total):.3g} in region "
                    f"{region!r}; it must be a positive finite number to be cut or preserved"
                )

    def log_factor(self, u: Float[Array, "*batch S"]) -> Float[Array, "*batch S"]:
        """``log α(u)``: ``u``, or ``log 2 + log sigmoid(u)`` when :attr:`bounded`."""
        if self.bounded:
            return jnp.log(jnp.asarray(2.0, u.dtype)) + jax.nn.log_sigmoid(u)
        return u

    def factor(self, u: Float[ArrayLike, "*batch S"]) -> np.ndarray:
        """The intervention's factors ``α(u)`` (numpy), ``exp(u)`` or ``2·sigmoid(u)``."""
        u = np.asarray(u)
        if not self.bounded:
            return np.exp(u)
        from scipy import special

        return 2.0 * special.expit(u)

    def optimum(self, lambdas: Float[ArrayLike, " L"]) -> dict[str, np.ndarray]:
        """The infimum of the region's eq. 5 (used by ``analytic_front``): :func:`bounded_front`.

        Only for :attr:`bounded` problems; the unbounded optimum is the closed form on the
        region's own intensities (see the module docstring).
        """
        return bounded_front(self, lambdas)

    def solve_all(self, u: Float[Array, " S"]) -> tuple[Float[Array, " N"], Bool[Array, ""]]:
        """The whole table's output ``(N,)`` under ``u`` on the region, and convergence."""
        full = jnp.zeros(self.x_all_ref.shape, u.dtype).at[self.index].set(self.log_factor(u))
        x, report = self.model.solve(full, strict=False)
        return x, report.converged

    def terms(
        self, u: Float[Array, " S"]
    ) -> tuple[Float[Array, ""], Float[Array, ""], Float[Array, " S"], Bool[Array, ""]]:
        """``(GHG_r / G*, ||e_r - e*_r||_1 / E*, x_r(u), converged)`` for one ``u`` ``(S,)``."""
        x, ok = self.solve_all(u)
        xr = x[self.index]
        ghg = self.c @ xr / self.G
        dev = jnp.sum(jnp.abs(self.r * (xr - self.x_ref))) / self.E
        return ghg, dev, xr, ok

    def loss(self, u: Float[Array, " S"], lam: Float[Array, ""]) -> tuple[Array, tuple]:
        """Eq. 5 of the region (normalised) and ``(ghg, dev, converged)``."""
        ghg, dev, _, ok = self.terms(u)
        return ghg + lam * dev, (ghg, dev, ok)


def bounded_front(
    problem: MRIOProblem, lambdas: Float[ArrayLike, " L"], bound: float = 2.0
) -> dict[str, np.ndarray]:
    """The infimum of the region's eq. 5 over factors ``α_r`` in ``(0, bound)``, on the table.

    Every output ``x >= 0`` of the whole table with ``x_i <= bound · (A x + y)_i`` on the
    region's sectors and ``x_j = (A x + y)_j`` elsewhere is the equilibrium of factors
    ``α_i = x_i / (A x + y)_i`` in ``[0, bound]`` (the closure: the edges are infima), so the
    region's eq. 5 is the linear programme

        min  c_r·x_r / G* + λ Σ r_i t_i / E*
        s.t. |x_i - x*_i| <= t_i (i in r),  (I - bound·A)_r x <= bound·y_r,
             (I - A)_F x = y_F (the other regions),  x >= 0,

    solved with scipy's HiGHS in the variables ``x / x*``. With the trade coefficients zeroed
    (:func:`without_trade`) it is :func:`jcausal.economy.design.bounded_front` of the region's
    block (``tests/test_mrio.py``). Dense: for tables of a few thousand sectors at most.

    Args:
        problem: the region and indicators on the table.
        lambdas: ``(L,)`` weights.
        bound: the largest factor (the paper's 2).

    Returns:
        As :func:`jcausal.economy.design.analytic_front`, on the region's sectors
        (``"x"`` ``(L, S)``), plus ``"x_all"`` ``(L, N)`` the whole table's outputs.

    Raises:
        RuntimeError: HiGHS did not solve a programme (its message is named).
    """
    from scipy import optimize  # on first use: `import jcausal` stays light

    A, y = np.asarray(problem.model.A, float), np.asarray(problem.model.y, float)
    x_all = np.asarray(problem.x_all_ref, float)
    idx = np.asarray(problem.index)
    c, r, x_ref = (np.asarray(v, float) for v in (problem.c, problem.r, problem.x_ref))
    G, E = float(problem.G), float(problem.E)
    N, S = A.shape[0], idx.size
    s = np.where(x_all > 0, x_all, 1.0)  # x = s z: every variable of order one
    M = (np.eye(N) - A) * (s[None, :] / s[:, None])  # rows scaled by 1/s_i too
    inside = np.zeros(N, bool)
    inside[idx] = True
    pick = np.eye(N)[idx]  # (S, N): z_r
    eye_s = np.eye(S)
    Mb = (np.eye(N) - bound * A)[idx] * (s[None, :] / s[idx][:, None])
    a_ub = np.vstack([
        np.hstack([pick, -eye_s]),
        np.hstack([-pick, -eye_s]),
        np.hstack([Mb, np.zeros((S, S))]),
    ])  # fmt: skip
    z_ref = x_ref / s[idx]
    b_ub = np.concatenate([z_ref, -z_ref, bound * y[idx] / s[idx]])
    a_eq = np.hstack([M[~inside], np.zeros((N - S, S))])
    b_eq = y[~inside] / s[~inside]
    xs = []
    for lam in np.asarray(lambdas, float):
        cost = np.concatenate([np.zeros(N), lam * r * s[idx] / E])
        cost[idx] = c * s[idx] / G
        res = optimize.linprog(cost, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq,
                               bounds=(0, None), method="highs")  # fmt: skip
        if res.status != 0:
            raise RuntimeError(
                f"the linear programme of the bounded design of {problem.region!r} at λ = "
                f"{lam:.4g} was not solved: {res.message}"
            )
        xs.append(s * res.x[:N])
    xa = np.asarray(xs).reshape(-1, N)
    x = xa[:, idx]
    return {
        "ghg": x @ c,
        "employment": x @ r,
        "deviation": np.abs(x - x_ref[None, :]) @ r,
        "cut": x < 1e-9 * x_ref[None, :],
        "x": x,
        "x_all": xa,
    }


@eqx.filter_jit
def _outputs(cases, u: Array) -> tuple[Array, Array]:
    # (cases: a jcausal.economy.sweeps.Cases; u (C, L, S)) -> x (C, L, N), converged (C, L)
    return cases.map("solve_all", u)


@dataclasses.dataclass
class MRIOResult:
    """A region's designed front with GHG and employment counted where they happen.

    ``L`` values of λ, ``R`` regions, ``N`` sectors of the table.

    Attributes:
        design: the region's front (:class:`~jcausal.economy.design.DesignResult`; its
            ``x`` are the region's outputs, its ``ghg`` / ``employment`` the region's totals).
        region: the designed region.
        regions: ``R`` region names, in table order.
        x_all: ``(L, N)`` the whole table's output under each design.
        ghg_by_region: ``(L, R)`` GHG of each region, in the indicator's unit.
        ghg_ref_by_region: ``(R,)`` each region's unintervened GHG.
        employment_by_region: ``(L, R)`` employment of each region.
        employment_ref_by_region: ``(R,)`` its reference.
        domestic_change: ``(L,)`` GHG change in the region (negative: a cut).
        leakage: ``(L,)`` GHG change in every other region together (positive: emissions
            moved abroad).
        global_change: ``(L,)`` GHG change of the world, ``c·(x - x*)`` over all sectors.
        converged: ``(L,)`` every solve of the run and of the evaluation converged.
    """

    design: DesignResult
    region: str
    regions: list[str]
    x_all: np.ndarray
    ghg_by_region: np.ndarray
    ghg_ref_by_region: np.ndarray
    employment_by_region: np.ndarray
    employment_ref_by_region: np.ndarray
    domestic_change: np.ndarray
    leakage: np.ndarray
    global_change: np.ndarray
    converged: np.ndarray

    @property
    def leakage_share(self) -> np.ndarray:
        """``(L,)`` leakage as a fraction of the domestic cut (``nan`` where nothing is cut)."""
        cut = -self.domestic_change
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(cut > 1e-12 * np.abs(self.ghg_ref_by_region).sum(), self.leakage / cut,
                            np.nan)  # fmt: skip


def by_region(values: Float[ArrayLike, "*batch N"], regions: Sequence[str]) -> np.ndarray:
    """Sum ``(..., N)`` per-sector values into ``(..., R)`` per-region totals (table order)."""
    names = list(dict.fromkeys(regions))
    code = np.asarray([names.index(r) for r in regions])
    v = np.asarray(values, np.float64)
    out = np.zeros((*v.shape[:-1], len(names)))
    for k in range(len(names)):
        out[..., k] = v[..., code == k].sum(-1)
    return out


def sweep(
    problem: MRIOProblem,
    lambdas: Float[ArrayLike, " L"],
    *,
    steps: int,
    lr: float,
    mesh: Mesh | int | None = None,
    progress: Callable[[int], None] | None = None,
) -> MRIOResult:
    """Minimise the region's eq. 5 for every λ on the whole table; count GHG where it happens.

    Args:
        problem: the region and indicators on the multi-regional table.
        lambdas: ``(L,)`` weights of employment preservation (>= 0).
        steps: Adam steps per λ.
        lr: initial Adam step (a log-factor; cosine-decayed).
        mesh: a device mesh with a ``"sweep"`` axis (:func:`jcausal.parallel.sweep_mesh`):
            λ split over it, the table replicated (or its rows split over a ``"rows"`` axis);
            or a device count (placement of :func:`jcausal.economy.sharding.auto_mesh`).
        progress: called with the number of steps just done.

    Returns:
        The front with per-region accounting. Check ``result.design`` with
        :meth:`~jcausal.economy.design.DesignResult.check`.

    Raises:
        ValueError: bad λ / steps / lr, or a mesh that cannot split the λ (see
            :func:`jcausal.economy.sharding.place_grid`).
    """
    (result,) = sweep_cases([problem], lambdas, steps=steps, lr=lr, mesh=mesh,
                            progress=progress)  # fmt: skip
    return result


def sweep_cases(
    problems: Sequence[MRIOProblem],
    lambdas: Float[ArrayLike, "*C L"],
    *,
    steps: int,
    lr: float,
    mesh: Mesh | int | None = None,
    case_axis: str | None = None,
    lambda_axis: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[MRIOResult]:
    """:func:`sweep` for several regions (or stressor weightings) of one table, as one program.

    The table is shared by the cases (held once, see :mod:`jcausal.economy.sweeps`); only the
    regions' positions and indicators are stacked.

    Args:
        problems: ``C`` problems on one table with regions of equal sector counts (e.g.
            ``[MRIOProblem(model, r, ghg, employment) for r in regions]``).
        lambdas: ``(L,)`` for every case or ``(C, L)``.
        steps: Adam steps.
        lr: initial Adam step.
        mesh: a device mesh (see :func:`jcausal.economy.sweeps.sweep_cases`).
        case_axis: the mesh axis the cases (regions) are split over, or ``None``.
        lambda_axis: the mesh axis the λ are split over (neither given: read from the mesh,
            see :func:`jcausal.economy.sweeps.default_axes`).
        progress: called with the number of steps just done.

    Returns:
        One :class:`MRIOResult` per case, in order.

    Raises:
        ValueError: as :func:`jcausal.economy.sweeps.sweep_cases`.
    """
    from . import sweeps
    from .sharding import place_grid

    problems = list(problems)
    kw = dict(case_axis=case_axis, lambda_axis=lambda_axis, progress=progress)
    designs, cases, placed = sweeps.run_cases(
        problems, lambdas, steps=steps, lr=lr, mesh=mesh, **kw
    )
    dtype = problems[0].x_all_ref.dtype
    u = jnp.asarray(np.stack([d.u for d in designs]), dtype)
    if placed["mesh"] is not None:  # (the tables are already there: only u moves)
        lam = jnp.asarray(np.stack([d.lambdas for d in designs]), dtype)
        cases, u, _ = place_grid(cases, u, lam, **placed)
    x_alls, oks = parallel.to_host(_outputs(cases, u))
    return [_account(p, d, x, ok) for p, d, x, ok in zip(problems, designs, x_alls, oks,
                                                         strict=True)]  # fmt: skip


def _account(problem: MRIOProblem, res: DesignResult, x_all: np.ndarray, ok: np.ndarray):
    regs = region_names(problem.model)
    c_all, r_all = np.asarray(problem.c_all, float), np.asarray(problem.r_all, float)
    x_ref = np.asarray(problem.x_all_ref, float)
    ghg = by_region(c_all * x_all, problem.model.regions)
    ghg_ref = by_region(c_all * x_ref, problem.model.regions)
    k = regs.index(problem.region)
    change = ghg - ghg_ref[None]
    return MRIOResult(
        design=res,
        region=problem.region,
        regions=regs,
        x_all=np.asarray(x_all),
        ghg_by_region=ghg,
        ghg_ref_by_region=ghg_ref,
        employment_by_region=by_region(r_all * x_all, problem.model.regions),
        employment_ref_by_region=by_region(r_all * x_ref, problem.model.regions),
        domestic_change=change[:, k],
        leakage=change.sum(1) - change[:, k],
        global_change=(x_all - x_ref[None]) @ c_all,
        converged=np.asarray(res.converged) & np.asarray(ok),
    )


__all__ = [
    "MRIOProblem",
    "MRIOResult",
    "bounded_front",
    "by_region",
    "domestic_block",
    "region_index",
    "region_names",
    "sweep",
    "sweep_cases",
    "without_trade",
]
