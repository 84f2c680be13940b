"""Designing interventions on an economy: emission cuts vs preserved employment.

(Over 500 lines: the problem, its optimisation, the result's check against the analytic
optimum and the front it is checked against are one method, explained below.)

An :class:`~jcausal.economy.leontief.IOModel` is intervened on with a multiplicative Lie
intervention on *every* sector, ``x_i := exp(u_i) (A x + y)_i``, and ``u`` minimises (eq. 5 of
Besserve & Schölkopf, UAI 2022, normalised)

    L(u; λ) = c·x(u) / G* + λ ||e(u) - e*||_1 / E*

where ``c`` ``(n,)`` is the GHG intensity of each sector (a weighted sum of named stressor
rows, e.g. GWP100 weights), ``e(u) = r ⊙ x(u)`` the employment of each sector (``r`` a named
employment row), ``e* = r ⊙ x*`` the unintervened employment, and ``G* = c·x*``, ``E* = Σ e*``
the reference totals. Both terms are dimensionless fractions of the reference, so one λ grid
means the same across regions and units (the paper's unnormalised eq. 5 differs by a rescaling
of λ).

Usage from a script::

    from jcausal.economy import io, design
    model = io.load("reg1")
    result = design.design(model, ghg="emission_type1", employment="Value Added",
                           lambdas=[0.0, 1.0, 10.0], steps=1000)
    result.ghg, result.employment          # the front: one point per λ
    result.excess_loss                     # distance to the analytic optimum (see below)

The whole λ sweep is **one** compiled program, trained by :func:`jcausal.train.fit` like every
model of the library: ``jax.vmap`` over λ of eq. 5 (summed over λ; each ``u_l`` enters one
term and Adam is elementwise, so each λ follows exactly the updates of its own run), through
the implicit equilibrium layer (``IOModel.solve``). ``fit`` runs a dynamic number of steps
per compiled call, about a quarter of a second each: a progress bar moves and Ctrl-C stops a
run of any length promptly, without recompiling; and it reuses the compiled program across
calls (the one-λ-at-a-time baseline compiles once).

What the optimum is. Since ``(A x + y)_i > 0``, any positive output ``x`` is reached by
``u_i = log(x_i / (A x + y)_i)``, so eq. 5 is, in terms of ``x``, separable and linear: sector
``i`` is shut down (``x_i -> 0``) when its emission share per employment share,
``(c_i / G*) / (r_i / E*)``, exceeds λ, and kept exactly at ``x*_i`` otherwise. The front of
(employment, emissions) is therefore the greedy front that closes sectors in decreasing order of
that ratio; :func:`analytic_front` computes it and :attr:`DesignResult.excess_loss` is the gap
of the optimiser to it (``x_i -> 0`` is an infimum: Adam with a cosine-decayed step drives
``u_i`` to about ``-lr · steps / 2``). This needs ``c >= 0`` and ``r >= 0``, which
:class:`DesignProblem` checks. The unbounded optimum is thus *bang-bang*: every sector is
closed or kept as it is, and the factors that keep a sector whose customers closed grow without
bound.

The paper's parameterisation (``DesignProblem(..., bounded=True)``, ``jcausal design
--bounded``) is ``α_i = 2·sigmoid(u_i)`` in ``(0, 2)``: a sector can at most double its
activity relative to its demand, ``x_i <= 2 (A x + y)_i``. A sector that sells more than half
its output to sectors that close would need ``α_i > 2`` to stay at ``x*_i``; it cannot, and
shrinks with them. The optimum is then the linear programme of :func:`bounded_front` (solved
by scipy's HiGHS), against which :attr:`DesignResult.excess_loss` is measured. ``u = 0`` is
``α = 1`` (no intervention) in both parameterisations.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Bool, Float

from .leontief import IOModel, StressorSpec

#: Most steps in one compiled call (fit shortens calls to ~0.25 s; this bounds its buffers).
MAX_CALL = 4096
#: Largest number of loss values kept per λ (the history is thinned beyond it).
MAX_HISTORY = 1000
#: Default largest accepted :attr:`DesignResult.excess_loss` (dimensionless, see there).
MAX_EXCESS_LOSS = 0.01


def _describe(labels: tuple[str, ...], mask: np.ndarray, limit: int = 6) -> str:
    names = [labels[i] for i in np.flatnonzero(mask)]
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _indicator(model: IOModel, spec: StressorSpec, what: str) -> Float[Array, " n"]:
    """``w @ S`` over the rows the indicator names (a NaN in another row must not spread)."""
    w = np.asarray(model.weights(spec), np.float64)
    if not np.all(np.isfinite(w)):
        raise ValueError(
            f"the {what} indicator {spec!r} has a non-finite weight; weights must be finite "
            "numbers (e.g. GWP100: CH4=25, N2O=298)"
        )
    rows = np.flatnonzero(w)
    S = np.asarray(model.S, np.float64)[rows]
    with np.errstate(over="ignore", invalid="ignore"):
        c = w[rows] @ S
    bad = ~np.isfinite(S).all(0)
    if bad.any():
        names = [model.stressors[i] for i in rows[~np.isfinite(S).all(1)]]
        raise ValueError(
            f"the {what} rows {names} have NaN or infinite coefficients for sectors "
            f"{_describe(model.labels, bad)}; the table is incomplete there (a missing value "
            "is not zero): fix the rows or name other ones"
        )
    if not np.all(np.isfinite(c)):
        raise ValueError(
            f"the {what} indicator {spec!r} overflows (weights times coefficients are not "
            "finite numbers); use smaller weights"
        )
    neg = c < 0
    if neg.any():
        why = (
            "a sector with negative emissions would be grown without bound, past the economy's "
            "productive limit"
            if what == "GHG"
            else "a negative employment makes its changes and percentages meaningless"
        )
        raise ValueError(
            f"the {what} indicator {spec!r} is negative for sectors "
            f"{_describe(model.labels, neg)} (smallest {c.min():.4g}); the design needs "
            f"nonnegative {what} per unit of output ({why}): name nonnegative rows"
        )
    return jnp.asarray(c, model.S.dtype)


class DesignProblem(eqx.Module):
    """Eq. 5 for one model: GHG intensity ``c``, employment intensity ``r``, references.

    Attributes:
        model: the economy.
        c: ``(n,)`` GHG per unit output (>= 0), in the GHG indicator's unit per currency unit.
        r: ``(n,)`` employment per unit output (>= 0).
        x_ref: ``(n,)`` unintervened output (the table's).
        G: reference total GHG ``c @ x_ref`` (> 0).
        E: reference total employment ``r @ x_ref`` (> 0).
    """

    model: IOModel
    c: Float[Array, " n"]
    r: Float[Array, " n"]
    x_ref: Float[Array, " n"]
    G: Float[Array, ""]
    E: Float[Array, ""]
    bounded: bool = eqx.field(static=True)

    def __init__(
        self,
        model: IOModel,
        ghg: StressorSpec,
        employment: StressorSpec,
        *,
        bounded: bool = False,
    ):
        """Build the problem and check the indicators.

        Args:
            model: the economy.
            ghg: the GHG indicator: a row name, ``{row: weight}`` or ``k`` weights.
            employment: the employment indicator, likewise.
            bounded: the paper's parameterisation ``α = 2·sigmoid(u)`` in ``(0, 2)`` instead
                of ``α = exp(u)`` in ``(0, ∞)`` (see the module docstring).

        Raises:
            ValueError: an unknown row (listing the rows), a non-finite weight or coefficient
                of a named row, a negative indicator, or a zero reference total.
        """
        if not isinstance(bounded, bool | np.bool_):
            raise ValueError(f"bounded must be True or False, got {bounded!r}")
        self.bounded = bool(bounded)
        # The model's reproduction error is a Python float, hence static under jit: one
        # compiled sweep per table. Held as a 0-d array (the same number), the sweeps of one
        # region over several years share their compiled program.
        self.model = eqx.tree_at(
            lambda m: m.reproduction_error, model, np.asarray(model.reproduction_error, float)
        )
        self.c = _indicator(model, ghg, "GHG")
        self.r = _indicator(model, employment, "employment")
        self.x_ref = model.x_observed
        self.G = self.c @ self.x_ref
        self.E = self.r @ self.x_ref
        for total, name, spec in ((self.G, "GHG", ghg), (self.E, "employment", employment)):
            if not (np.isfinite(float(total)) and float(total) > 0):
                raise ValueError(
                    f"the {name} indicator {spec!r} totals {float(total):.3g} in this model; it "
                    "must be a positive finite number to be cut or preserved"
                )

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels of the designed sectors (the model's)."""
        return self.model.labels

    def log_factor(self, u: Float[Array, "*batch n"]) -> Float[Array, "*batch n"]:
        """``log α(u)``: ``u`` itself, or ``log 2 + log sigmoid(u)`` when :attr:`bounded`."""
        if self.bounded:
            # log-sigmoid, not log(sigmoid): exact for u -> -inf, where sectors are closed.
            return jnp.log(jnp.asarray(2.0, u.dtype)) + jax.nn.log_sigmoid(u)
        return u

    def factor(self, u: Float[ArrayLike, "*batch n"]) -> np.ndarray:
        """The intervention's factors ``α(u)`` (numpy), ``exp(u)`` or ``2·sigmoid(u)``."""
        u = np.asarray(u)
        if not self.bounded:
            return np.exp(u)
        from scipy import special  # on first use: `import jcausal` stays light

        return 2.0 * special.expit(u)

    def terms(
        self, u: Float[Array, " n"]
    ) -> tuple[Float[Array, ""], Float[Array, ""], Float[Array, " n"], Bool[Array, ""]]:
        """``(GHG / G*, ||e - e*||_1 / E*, x(u), converged)`` for one ``u`` ``(n,)``."""
        x, report = self.model.solve(self.log_factor(u), strict=False)
        ghg = self.c @ x / self.G
        dev = jnp.sum(jnp.abs(self.r * (x - self.x_ref))) / self.E
        return ghg, dev, x, report.converged

    def loss(self, u: Float[Array, " n"], lam: Float[Array, ""]) -> tuple[Array, tuple]:
        """Eq. 5 (normalised) and ``(ghg, dev, converged)``."""
        ghg, dev, _, ok = self.terms(u)
        return ghg + lam * dev, (ghg, dev, ok)


@functools.lru_cache(maxsize=32)
def _optimizer(steps: int, lr: float) -> optax.GradientTransformation:
    # Cached: the transformation's functions are part of the compiled program's static key.
    # The ℓ1 term has kinks at e = e*; decaying the step to lr/1000 settles the iterates there.
    # b2 = 0.9 (not 0.999): the gradient of a sector being shut down shrinks like x_i, and a
    # short second-moment memory keeps Adam's normalised step from stalling; on the pymrio
    # test regions this cuts the excess loss over the analytic optimum ~10x at equal steps.
    schedule = optax.cosine_decay_schedule(lr, steps, alpha=1e-3)
    return optax.chain(optax.zero_nans(), optax.adam(schedule, b2=0.9))


@dataclasses.dataclass
class DesignResult:
    """A designed front: one optimised intervention per λ (numpy arrays).

    ``L`` values of λ, ``n`` sectors, ``H`` recorded losses per λ.

    Attributes:
        lambdas: ``(L,)`` weights of employment preservation.
        u: ``(L, n)`` parameters of the intervention ``x_i := α(u_i) (A x + y)_i``: the
            log-factors (``α = exp u``) or, bounded, ``α = 2·sigmoid(u)``
            (:meth:`DesignProblem.factor` gives ``α``).
        x: ``(L, n)`` equilibrium output under ``u``, in the table's currency.
        ghg: ``(L,)`` total GHG, in the GHG indicator's unit.
        employment: ``(L,)`` total employment, in the employment indicator's unit.
        deviation: ``(L,)`` ``||e - e*||_1``, in the employment indicator's unit.
        ghg_ref: reference (unintervened) total GHG ``G*``.
        employment_ref: reference total employment ``E*``.
        analytic_ghg: ``(L,)`` total GHG of the analytic optimum (:func:`analytic_front`).
        analytic_employment: ``(L,)`` its total employment.
        excess_loss: ``(L,)`` eq. 5 at ``u`` minus its analytic infimum (dimensionless, a
            fraction of the reference; 0 is optimal, NaN means the run diverged).
        loss: ``(L, H)`` loss every ``loss_stride`` steps (every step up to 1000 steps).
        loss_stride: steps between two recorded losses.
        final_loss: ``(L,)`` loss at the last step.
        converged: ``(L,)`` every equilibrium solve of the run met its tolerance.
        steps: Adam steps per λ.
        seconds: wall time (compilation included).
    """

    lambdas: np.ndarray
    u: np.ndarray
    x: np.ndarray
    ghg: np.ndarray
    employment: np.ndarray
    deviation: np.ndarray
    ghg_ref: float
    employment_ref: float
    analytic_ghg: np.ndarray
    analytic_employment: np.ndarray
    excess_loss: np.ndarray
    loss: np.ndarray
    loss_stride: int
    final_loss: np.ndarray
    converged: np.ndarray
    steps: int
    seconds: float

    @property
    def max_excess_loss(self) -> float:
        """Largest :attr:`excess_loss` over λ (``nan`` if any is not finite)."""
        e = self.excess_loss
        return float(np.max(e)) if np.all(np.isfinite(e)) else float("nan")

    def check(self, max_excess_loss: float = MAX_EXCESS_LOSS) -> DesignResult:
        """Raise unless the optimisation reached the analytic optimum within a tolerance.

        Args:
            max_excess_loss: largest accepted :attr:`excess_loss` (dimensionless).

        Returns:
            ``self``.

        Raises:
            DesignDiverged: an excess loss above ``max_excess_loss`` or not finite.
        """
        worst = self.max_excess_loss
        if not worst <= max_excess_loss:
            i = int(np.nanargmax(np.where(np.isfinite(self.excess_loss), self.excess_loss, np.inf)))
            raise DesignDiverged(
                f"the design optimisation did not reach the optimum: its loss exceeds the "
                f"analytic optimum of eq. 5 by {self.excess_loss[i]:.3g} at λ = "
                f"{self.lambdas[i]:.4g} (accepted: {max_excess_loss:g}; a good run is of order "
                "1e-3); lower the step size (lr) or raise the number of steps"
            )
        return self


class DesignDiverged(ValueError):
    """The optimisation ended far from the analytic optimum (see :meth:`DesignResult.check`)."""


def _check_run(lam: np.ndarray, steps: Any, lr: Any) -> None:
    if lam.ndim != 1 or lam.size == 0 or not np.all(np.isfinite(lam)) or not np.all(lam >= 0):
        raise ValueError(
            f"lambdas must be a non-empty 1-D array of finite values >= 0, got {lam.tolist()}"
        )
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")


def sweep(
    problem: DesignProblem,
    lambdas: Float[ArrayLike, " L"],
    *,
    steps: int,
    lr: float,
    vectorise: bool = True,
    progress: Callable[[int], None] | None = None,
    mesh: jax.sharding.Mesh | int | None = None,
) -> DesignResult:
    """Minimise eq. 5 for every λ, from ``u = 0``, with Adam (cosine-decayed step).

    Args:
        problem: the model and indicators.
        lambdas: ``(L,)`` weights of employment preservation (dimensionless, finite, >= 0).
        steps: Adam steps per λ (a positive integer).
        lr: initial step size, in units of ``u`` (log-factors); decays to ``lr / 1000``.
        vectorise: one ``jax.vmap``-ed program for all λ (default), or a Python loop over λ of
            the same jitted single-λ program (the baseline of ``benchmarks/lambda_sweep.py``).
        progress: called with the number of steps just done (for a progress bar).
        mesh: a device mesh with a ``"sweep"`` axis (:func:`jcausal.parallel.sweep_mesh`):
            the λ are split over it and the table replicated, or split by rows over a
            ``"rows"`` axis (:mod:`jcausal.economy.sharding`); equal to one device's run. A
            device count takes :func:`jcausal.economy.sharding.auto_mesh`'s placement.

    Returns:
        The front, with its distance to the analytic optimum. Check it with
        :meth:`DesignResult.check` (a too large step size diverges).

    Raises:
        ValueError: bad ``lambdas``, ``steps`` or ``lr``; a mesh without a ``"sweep"`` axis
            or whose size does not divide the number of λ; ``mesh`` with ``vectorise=False``.
    """
    from . import sweeps  # (the grid of cases × λ; this sweep is its one case)

    lam_np = np.asarray(lambdas, np.float64)
    _check_run(lam_np, steps, lr)
    if mesh is not None and not vectorise:
        raise ValueError("mesh= splits the vectorised sweep; it cannot go with vectorise=False")
    if vectorise:
        (result,) = sweeps.sweep_cases(
            [problem], lam_np, steps=steps, lr=lr, progress=progress, mesh=mesh
        )
        return result
    t0 = time.perf_counter()
    cases = sweeps.stack([problem])
    kw = dict(steps=int(steps), lr=lr, progress=progress, mesh=None, case_axis=None,
              lambda_axis=None)  # fmt: skip
    runs = [sweeps.optimise(cases, lam_np[None, i : i + 1], **kw) for i in range(lam_np.size)]
    # (u (1, L, n), converged (1, L), history (H, 1, L), last loss (1, L)): λ axes joined
    parts = zip(*runs, strict=True)
    u, ok, hist, last = (jnp.concatenate(z, ax) for z, ax in zip(parts, (1, 1, 2, 1), strict=True))
    return sweeps.results([problem], cases, lam_np[None], (u, ok, hist, last), steps=int(steps),
                          t0=t0)[0]  # fmt: skip


def analytic_front(
    problem: DesignProblem, lambdas: Float[ArrayLike, " L"]
) -> dict[str, np.ndarray]:
    """The infimum of eq. 5 for each λ (see the module docstring), without the optimiser.

    Unbounded (``α = exp(u)``): in closed form, sector ``i`` is shut down when
    ``c_i / G* > λ r_i / E*`` and kept at ``x*_i`` otherwise (ties kept). Bounded
    (``α = 2·sigmoid(u)``, :attr:`DesignProblem.bounded`): the linear programme of
    :func:`bounded_front`.

    Args:
        problem: the model and indicators (``c, r >= 0``, checked by :class:`DesignProblem`).
        lambdas: ``(L,)`` weights.

    Returns:
        ``{"ghg", "employment", "deviation"}`` totals ``(L,)`` in the indicators' units,
        ``"cut"`` ``(L, n)`` booleans (sector closed) and ``"x"`` ``(L, n)`` the outputs.
    """
    if problem.bounded:
        # (a problem on a larger table, e.g. mrio.MRIOProblem, knows its own programme)
        optimum = getattr(problem, "optimum", None)
        return optimum(lambdas) if optimum is not None else bounded_front(problem, lambdas)
    c, r = np.asarray(problem.c, float), np.asarray(problem.r, float)
    x = np.asarray(problem.x_ref, float)
    G, E = float(problem.G), float(problem.E)
    lam = np.asarray(lambdas, float)[:, None]
    cut = c[None, :] / G > lam * r[None, :] / E
    kept = np.where(cut, 0.0, x[None, :])
    return {
        "ghg": kept @ c,
        "employment": kept @ r,
        "deviation": np.where(cut, r * x, 0.0).sum(1),
        "cut": cut,
        "x": kept,
    }


def bounded_front(
    problem: DesignProblem, lambdas: Float[ArrayLike, " L"], bound: float | None = 2.0
) -> dict[str, np.ndarray]:
    """The infimum of eq. 5 over factors ``α_i`` in ``(0, bound)``, as a linear programme.

    Every output ``x >= 0`` with ``x_i <= bound · (A x + y)_i`` is the equilibrium of factors
    ``α_i = x_i / (A x + y)_i`` in ``[0, bound]`` (the closure of the open range: its edges are
    infima, approached as ``u -> ±∞``), so eq. 5 becomes the linear programme

        min  c·x / G* + λ Σ r_i t_i / E*
        s.t. |x_i - x*_i| <= t_i,   (I - bound·A) x <= bound·y,   x >= 0,

    solved with scipy's HiGHS in the variables ``x_i / x*_i``. A sector whose customers are
    closed cannot be kept at ``x*_i`` once it would need ``α_i > bound``: its constraint binds.
    ``bound=None`` drops the constraint and gives back the closed form of :func:`analytic_front`
    (an independent check of it).

    Args:
        problem: the model and indicators.
        lambdas: ``(L,)`` weights.
        bound: the largest factor (the paper's ``2``), or ``None`` for no bound.

    Returns:
        As :func:`analytic_front`; ``"cut"`` marks outputs below ``1e-9 x*_i``.

    Raises:
        RuntimeError: HiGHS did not solve a programme (its message is named).
    """
    from scipy import optimize  # on first use: `import jcausal` stays light

    c, r = np.asarray(problem.c, float), np.asarray(problem.r, float)
    x_ref = np.asarray(problem.x_ref, float)
    A, y = np.asarray(problem.model.A, float), np.asarray(problem.model.y, float)
    G, E = float(problem.G), float(problem.E)
    n = x_ref.shape[0]
    s = np.where(x_ref > 0, x_ref, 1.0)  # x = s z: every variable of order one
    z_ref = x_ref / s
    eye = np.eye(n)
    rows = [np.hstack([eye, -eye]), np.hstack([-eye, -eye])]
    rhs = [z_ref, -z_ref]
    if bound is not None:
        rows.append(np.hstack([(eye - bound * A) * (s[None, :] / s[:, None]), np.zeros((n, n))]))
        rhs.append(bound * y / s)
    a_ub, b_ub = np.vstack(rows), np.concatenate(rhs)
    xs = []
    for lam in np.asarray(lambdas, float):
        cost = np.concatenate([c * s / G, lam * r * s / E])
        res = optimize.linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=(0, None), method="highs")
        if res.status != 0:
            raise RuntimeError(
                f"the linear programme of the bounded design at λ = {lam:.4g} was not solved: "
                f"{res.message}"
            )
        xs.append(s * res.x[:n])
    x = np.asarray(xs).reshape(-1, n)
    return {
        "ghg": x @ c,
        "employment": x @ r,
        "deviation": np.abs(x - x_ref[None, :]) @ r,
        "cut": x < 1e-9 * x_ref[None, :],
        "x": x,
    }


def auto_lambdas(problem: DesignProblem, n: int, include_zero: bool = True) -> np.ndarray:
    """A log grid of ``n`` λ spanning the sectors' emission-share / employment-share ratios.

    The grid runs from the smallest ratio / 3 to the largest × 3, so it covers every sector's
    switch point of :func:`analytic_front`; ``include_zero`` prepends λ = 0.

    Args:
        problem: the design problem (its indicators give the ratios).
        n: number of positive λ.
        include_zero: prepend λ = 0.

    Returns:
        ``(n,)`` or ``(n + 1,)`` values.
    """
    c, r = np.asarray(problem.c, float), np.asarray(problem.r, float)
    x = np.asarray(problem.x_ref, float)
    share_c = c * x / float(problem.G)
    share_r = r * x / float(problem.E)
    ok = (share_c > 0) & (share_r > 0)
    if not ok.any():
        grid = np.geomspace(1e-2, 1e2, n)
    else:
        ratio = share_c[ok] / share_r[ok]
        grid = np.geomspace(ratio.min() / 3, ratio.max() * 3, n)
    return np.concatenate([[0.0], grid]) if include_zero else grid


def sector_table(
    problem: DesignProblem, result: DesignResult, index: int, top: int, *, drops: bool = False
) -> list[dict[str, float | str]]:
    """The ``top`` sectors with the largest employment change at front point ``index``.

    Args:
        problem: the design problem that produced ``result``.
        result: the swept front.
        index: which λ of the front.
        top: number of sectors listed.
        drops: list the largest employment *drops* (most negative first; the paper's table;
            fewer rows if fewer sectors lose over 0.1 % of their jobs) instead of the largest
            changes of either sign.

    Returns:
        Rows ``{"sector", "factor" (α), "output_change_pct", "employment_change"
        (indicator unit), "employment_change_pct", "ghg_change" (indicator unit)}``.
    """
    labels = problem.labels
    x_ref = np.asarray(problem.x_ref, float)
    c, r = np.asarray(problem.c, float), np.asarray(problem.r, float)
    x = result.x[index]
    alpha = problem.factor(result.u[index])
    de = r * (x - x_ref)
    if drops:  # (a change under 0.1 % of the sector's jobs is the optimiser's tolerance)
        order = [i for i in np.argsort(de, kind="stable")[:top] if de[i] < -1e-3 * r[i] * x_ref[i]]
    else:
        order = np.argsort(-np.abs(de))[:top]
    rows = []
    for i in order:
        rows.append(
            {
                "sector": labels[i],
                "factor": float(alpha[i]),
                "output_change_pct": float(100 * (x[i] / x_ref[i] - 1)) if x_ref[i] else 0.0,
                "employment_change": float(de[i]),
                "employment_change_pct": float(100 * de[i] / (r[i] * x_ref[i]))
                if r[i] * x_ref[i]
                else 0.0,
                "ghg_change": float(c[i] * (x[i] - x_ref[i])),
            }
        )
    return rows


def design(
    model: IOModel,
    ghg: StressorSpec,
    employment: StressorSpec,
    lambdas: Float[ArrayLike, " L"] | int = 24,
    *,
    steps: int = 1000,
    lr: float = 0.05,
    bounded: bool = False,
    progress: Callable[[int], None] | None = None,
) -> DesignResult:
    """Design interventions on ``model`` that trade emission cuts against employment.

    Args:
        model: the economy (e.g. :func:`jcausal.economy.io.load`).
        ghg: the GHG indicator: a stressor row name, ``{row: weight}`` (GWP100 weights) or
            ``k`` weights over the model's rows.
        employment: the employment indicator, likewise.
        lambdas: explicit ``(L,)`` values of λ, or a number ``m``: λ = 0 and ``m`` values from
            :func:`auto_lambdas`.
        steps: Adam steps per λ.
        lr: initial Adam step, a log-factor.
        bounded: the paper's factors ``α = 2·sigmoid(u)`` in ``(0, 2)`` (default
            ``α = exp(u)``, unbounded).
        progress: called with the number of steps just done.

    Returns:
        The front (one point per λ) with its distance to the analytic optimum.

    Raises:
        ValueError: bad indicators (see :class:`DesignProblem`) or options.
        DesignDiverged: the optimisation ended above :data:`MAX_EXCESS_LOSS` from the optimum
            (lower ``lr``); call :func:`sweep` to get such a result anyway.
    """
    problem = DesignProblem(model, ghg, employment, bounded=bounded)
    if isinstance(lambdas, int | np.integer) and not isinstance(lambdas, bool):
        lambdas = auto_lambdas(problem, int(lambdas))
    result = sweep(problem, lambdas, steps=steps, lr=lr, progress=progress)
    return result.check()


__all__ = [
    "MAX_EXCESS_LOSS",
    "DesignDiverged",
    "DesignProblem",
    "DesignResult",
    "analytic_front",
    "auto_lambdas",
    "bounded_front",
    "design",
    "sector_table",
    "sweep",
]
