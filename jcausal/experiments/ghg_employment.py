"""Emission cuts vs preserved employment: Lie interventions on an input-output economy.

Reproduces the GHG / employment experiment of Besserve & Schölkopf (UAI 2022, section 5,
eq. 5, Fig. 3b-c). One region's domestic block of an input-output table (see
:mod:`jcausal.economy.io`) is intervened on with a multiplicative Lie intervention on *every*
sector, ``x_i := exp(u_i) (A x + y)_i``, and ``u`` minimises

    L(u; λ) = c·x(u) / G* + λ ||e(u) - e*||_1 / E*                                     (eq. 5)

where ``c`` is the GHG intensity of each sector (a weighted sum of named stressor rows, e.g.
GWP100 weights), ``e(u) = r ⊙ x(u)`` the employment of each sector (``r`` a named employment
row), ``e* = r ⊙ x*`` the unintervened employment, and ``G* = c·x*``, ``E* = Σ e*`` the reference
totals. The normalisation makes both terms dimensionless fractions of the reference (λ is the
relative emission cut traded for a relative reallocation of employment) and the same λ grid
meaningful across regions and units. The paper's eq. 5 is the unnormalised version; the two
differ only by a rescaling of λ.

The whole λ sweep is **one** compiled program: ``jax.vmap`` over λ of an optax Adam step whose
loss goes through the implicit equilibrium layer (``IOModel.solve``), iterated with
``lax.scan`` in chunks (one progress-bar tick per chunk).

What the optimum is. Since ``(A x + y)_i > 0``, any positive output ``x`` is reached by
``u_i = log(x_i / (A x + y)_i)``, so eq. 5 is, in terms of ``x``, separable and linear:
sector ``i`` is shut down (``x_i -> 0``) when its emission share per employment share,
``(c_i / G*) / (|r_i| / E*)``, exceeds λ, and kept exactly at ``x*_i`` otherwise (the
optimiser raises ``u_i`` above 0 to compensate for the demand lost from shut-down customers).
The front of (employment, emissions) is therefore the greedy front that closes sectors in
decreasing order of that ratio; :func:`analytic_front` computes it and the experiment reports
the gap of the optimiser to it. (``x_i -> 0`` is an infimum: Adam with a cosine-decayed
step drives ``u_i`` to about ``-lr · steps / 2``.)

Data. The embedded default is ``pymrio.load_test()`` (6 regions × 8 sectors). That table has
no employment account: value added (``factor_inputs`` row ``"Value Added"``) is used as the
**labour proxy**, and the outputs say so. With an Exiobase 3 archive, the defaults are the
``impacts`` rows ``"GHG emissions (GWP100) | ..."`` and ``"Employment"``.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float

from ..economy import io as eio
from ..economy.leontief import IOModel
from ._common import output_dir, run_cli, to_jsonable, write_metrics

NAME = "ghg_employment"
DESCRIPTION = (
    "Pareto front of GHG emission cuts vs preserved employment from multiplicative Lie "
    "interventions on every sector of a region's input-output economy (Besserve & Schölkopf "
    "2022, eq. 5, Fig. 3b-c)"
)
PROXY_NOTE = (
    "the pymrio test table has no employment account: employment is proxied by value added "
    "(factor_inputs row 'Value Added', Mill USD)"
)


@dataclasses.dataclass(frozen=True)
class Config:
    """An experiment configuration (also written to ``metrics.json``).

    Fields:
        regions: regions to design for (``None``: the first region of the table).
        ghg: ``{row: weight}`` of the GHG indicator (``None``: the data source's default).
        employment: ``{row: weight}`` of the employment indicator (``None``: default).
        lambdas: explicit λ values (``None``: ``n_lambdas`` log-spaced values around the
            sectors' emission-per-employment ratios, plus 0 when ``include_zero``).
        n_lambdas: size of the automatic log grid.
        include_zero: prepend λ = 0 (pure emission minimisation).
        steps: Adam steps; lr: initial Adam step (cosine-decayed to ``lr / 1000``), in units
            of ``u`` (log-factors).
        dtype: ``"float64"`` or ``"float32"``.
        exiobase: path of an Exiobase 3 archive (``None``: the pymrio test system).
        allow_negative_demand: accept negative final demand in the table.
        target: employment reduction (fraction) whose closest λ is marked and tabulated.
        top: number of sectors in the table.
    """

    regions: tuple[str, ...] | None = None
    ghg: dict[str, float] | None = None
    employment: dict[str, float] | None = None
    lambdas: tuple[float, ...] | None = None
    n_lambdas: int = 24
    include_zero: bool = True
    steps: int = 1000
    lr: float = 0.05
    dtype: str = "float64"
    exiobase: str | None = None
    allow_negative_demand: bool = False
    target: float = 0.05
    top: int = 8


#: The default of ``jcausal design``: one region, meaningful and fast.
DESIGN = Config()
#: ``--smoke``: a few λ, a few hundred steps (used by the tests).
SMOKE = Config(n_lambdas=5, steps=300, lr=0.1)
#: The full reproduction: two regions compared, as the paper's Fig. 3b-c compares two countries.
FULL = Config(regions=("reg1", "reg2"), n_lambdas=40, steps=3000, lr=0.05)


# ----------------------------------------------------------------------------------------------
# indicators


def parse_rows(text: str | Sequence[str] | Mapping[str, float] | None) -> dict[str, float] | None:
    """Parse ``"row=w,row2=w2"`` (or a list of such strings) into ``{row: weight}``.

    A row without ``=w`` gets weight 1. Row names may contain commas when every row carries a
    weight (``"GHG emissions (GWP100) | ... (CML, 2001) | ...=1"``); a list of strings (one per
    repeated command-line option) avoids the question altogether.
    """
    if text is None or isinstance(text, Mapping):
        return None if text is None else {str(k): float(v) for k, v in text.items()}
    items = [text] if isinstance(text, str) else list(text)
    out: dict[str, float] = {}
    number = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
    for item in items:
        item = item.strip()
        if not item:
            continue
        if "=" in item:
            pairs = re.findall(rf"\s*(.+?)\s*=\s*({number})\s*(?:,|$)", item)
            rebuilt = ",".join(f"{n}={w}" for n, w in pairs)
            if not pairs or rebuilt.replace(" ", "") != item.replace(" ", ""):
                raise ValueError(
                    f"cannot read rows and weights from {item!r}; write NAME=WEIGHT[,NAME=WEIGHT]"
                )
            for name, w in pairs:
                out[name] = out.get(name, 0.0) + float(w)
        else:
            for name in item.split(","):
                if name.strip():
                    out[name.strip()] = out.get(name.strip(), 0.0) + 1.0
    if not out:
        raise ValueError(f"no stressor rows named in {text!r}")
    return out


def default_rows(exiobase: str | None) -> tuple[dict[str, float], dict[str, float]]:
    """``(ghg, employment)`` defaults for the data source."""
    if exiobase is None:
        return {eio.TEST_GHG: 1.0}, {eio.TEST_EMPLOYMENT: 1.0}
    return {eio.EXIOBASE_GHG: 1.0}, {eio.EXIOBASE_EMPLOYMENT: 1.0}


# ----------------------------------------------------------------------------------------------
# the optimisation


class Problem(eqx.Module):
    """Eq. 5 for one model: GHG intensity ``c``, employment intensity ``r``, references.

    Fields: ``model``; ``c`` ``(n,)`` GHG per unit output; ``r`` ``(n,)`` employment per unit
    output; ``x_ref`` ``(n,)`` unintervened output; ``G`` and ``E`` the reference totals.
    """

    model: IOModel
    c: Float[Array, " n"]
    r: Float[Array, " n"]
    x_ref: Float[Array, " n"]
    G: Float[Array, ""]
    E: Float[Array, ""]

    def __init__(self, model: IOModel, ghg: Any, employment: Any):
        self.model = model
        self.c = model.intensity(ghg)
        self.r = model.intensity(employment)
        self.x_ref = model.x_observed
        self.G = self.c @ self.x_ref
        self.E = jnp.abs(self.r) @ self.x_ref
        if not float(self.G) > 0:
            raise ValueError(
                f"the GHG indicator {ghg!r} totals {float(self.G):.3g} in this model; it must be "
                "positive to be cut"
            )
        if not float(self.E) > 0:
            raise ValueError(
                f"the employment indicator {employment!r} totals {float(self.E):.3g} in this "
                "model; it must be positive"
            )

    def terms(
        self, u: Float[Array, " n"]
    ) -> tuple[Float[Array, ""], Float[Array, ""], Float[Array, " n"], Array]:
        """``(GHG / G*, ||e - e*||_1 / E*, x(u), converged)`` for one ``u``."""
        x, report = self.model.solve(u, strict=False)
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


@eqx.filter_jit
def _run_chunk(problem, state, lambdas, tx, length, batched):
    def step(carry, _):
        u, opt, ok = carry
        grad_fn = jax.value_and_grad(problem.loss, has_aux=True)
        if batched:
            grad_fn = jax.vmap(grad_fn)
            update = jax.vmap(tx.update)
        else:
            update = tx.update
        (loss, (_, _, conv)), g = grad_fn(u, lambdas)
        upd, opt = update(g, opt, u)
        return (optax.apply_updates(u, upd), opt, ok & conv), loss

    return jax.lax.scan(step, state, None, length=length)


@eqx.filter_jit
def _evaluate(problem, u, batched):
    fn = jax.vmap(problem.terms) if batched else problem.terms
    return fn(u)


def _chunk_length(steps: int, ticks: int = 20) -> int:
    # Equal chunks so the scan compiles once: the largest divisor of steps up to steps/ticks.
    cap = max(1, steps // ticks)
    return max(d for d in range(1, cap + 1) if steps % d == 0)


@dataclasses.dataclass
class Sweep:
    """Result of a λ sweep (numpy arrays; ``L`` values of λ, ``n`` sectors).

    Fields: ``lambdas`` ``(L,)``; ``u`` ``(L, n)`` log-factors; ``x`` ``(L, n)`` output;
    ``ghg`` and ``employment`` ``(L,)`` totals in the indicators' units; ``deviation`` ``(L,)``
    ``||e - e*||_1`` in employment units; ``loss`` ``(L, steps)`` history; ``converged`` ``(L,)``
    every equilibrium solve of the run met its tolerance; ``seconds`` wall time (compilation
    included).
    """

    lambdas: np.ndarray
    u: np.ndarray
    x: np.ndarray
    ghg: np.ndarray
    employment: np.ndarray
    deviation: np.ndarray
    loss: np.ndarray
    converged: np.ndarray
    seconds: float


def sweep(
    problem: Problem,
    lambdas: Float[ArrayLike, " L"],
    *,
    steps: int,
    lr: float,
    vectorise: bool = True,
    progress: Callable[[int], None] | None = None,
) -> Sweep:
    """Minimise eq. 5 for every λ, from ``u = 0``, with Adam.

    Args:
        problem: the model and indicators.
        lambdas: ``(L,)`` regularisation weights (dimensionless, >= 0).
        steps: Adam steps per λ; lr: initial step size (cosine decay to ``lr / 1000``).
        vectorise: one ``jax.vmap``-ed program for all λ (default), or a Python loop over λ of
            the same jitted single-λ program (the baseline of ``benchmarks/lambda_sweep.py``).
        progress: called with the number of steps just done (for a progress bar).
    """
    dtype = problem.x_ref.dtype
    lam = jnp.asarray(lambdas, dtype)
    if lam.ndim != 1 or not bool(jnp.all(lam >= 0)):
        raise ValueError(f"lambdas must be a 1-D array of values >= 0, got {np.asarray(lambdas)}")
    tx = _optimizer(int(steps), float(lr))
    k = _chunk_length(int(steps))
    n = problem.x_ref.shape[0]
    t0 = time.perf_counter()

    def optimise(lams, batched):
        u = jnp.zeros((*lams.shape, n), dtype)
        opt = jax.vmap(tx.init)(u) if batched else tx.init(u)
        state = (u, opt, jnp.ones(lams.shape, bool))
        history = []
        for _ in range(int(steps) // k):
            state, losses = _run_chunk(problem, state, lams, tx, k, batched)
            history.append(losses)
            if progress is not None:
                progress(k)
        u, _, ok = state
        return u, ok, jnp.concatenate(history, axis=0)

    if vectorise:
        u, ok, hist = optimise(lam, True)
        hist = hist.T
    else:
        outs = [optimise(lam[i], False) for i in range(lam.shape[0])]
        u = jnp.stack([o[0] for o in outs])
        ok = jnp.stack([o[1] for o in outs])
        hist = jnp.stack([o[2] for o in outs])
    ghg, dev, x, conv = _evaluate(problem, u, True)
    u, x, ok, conv = jax.block_until_ready((u, x, ok, conv))
    seconds = time.perf_counter() - t0
    G, E = float(problem.G), float(problem.E)
    return Sweep(
        lambdas=np.asarray(lam),
        u=np.asarray(u),
        x=np.asarray(x),
        ghg=np.asarray(ghg) * G,
        employment=np.asarray(x @ problem.r),
        deviation=np.asarray(dev) * E,
        loss=np.asarray(hist),
        converged=np.asarray(ok & conv),
        seconds=seconds,
    )


def analytic_front(problem: Problem, lambdas: Float[ArrayLike, " L"]) -> dict[str, np.ndarray]:
    """The infimum of eq. 5 for each λ (see the module docstring), in closed form.

    Sector ``i`` is shut down when ``c_i / G* > λ |r_i| / E*`` and kept at ``x*_i`` otherwise
    (ties kept). Assumes ``c >= 0``. Returns ``{"ghg", "employment", "deviation"}`` totals
    ``(L,)`` and ``"cut"`` ``(L, n)`` booleans.
    """
    c, r = np.asarray(problem.c, float), np.asarray(problem.r, float)
    x = np.asarray(problem.x_ref, float)
    G, E = float(problem.G), float(problem.E)
    lam = np.asarray(lambdas, float)[:, None]
    cut = c[None, :] / G > lam * np.abs(r)[None, :] / E
    kept = np.where(cut, 0.0, x[None, :])
    return {
        "ghg": kept @ c,
        "employment": kept @ r,
        "deviation": np.where(cut, np.abs(r) * x, 0.0).sum(1),
        "cut": cut,
    }


def auto_lambdas(problem: Problem, n: int, include_zero: bool = True) -> np.ndarray:
    """Log grid spanning the sectors' (emission share / employment share) ratios, ×/÷ 3."""
    c, r = np.asarray(problem.c, float), np.abs(np.asarray(problem.r, float))
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


# ----------------------------------------------------------------------------------------------
# reporting


def sector_table(
    problem: Problem, result: Sweep, index: int, top: int
) -> list[dict[str, float | str]]:
    """The ``top`` sectors with the largest employment change at sweep point ``index``."""
    m = problem.model
    x_ref = np.asarray(problem.x_ref, float)
    c, r = np.asarray(problem.c, float), np.asarray(problem.r, float)
    x = result.x[index]
    de = r * (x - x_ref)
    order = np.argsort(-np.abs(de))[:top]
    rows = []
    for i in order:
        rows.append(
            {
                "sector": m.labels[i],
                "factor": float(np.exp(result.u[index, i])),
                "output_change_pct": float(100 * (x[i] / x_ref[i] - 1)) if x_ref[i] else 0.0,
                "employment_change": float(de[i]),
                "employment_change_pct": float(100 * de[i] / (r[i] * x_ref[i]))
                if r[i] * x_ref[i]
                else 0.0,
                "ghg_change": float(c[i] * (x[i] - x_ref[i])),
            }
        )
    return rows


def _print_table(console, region, rows, lam, ghg_unit, emp_unit, point):
    from rich.table import Table

    table = Table(
        title=(
            f"{region}: sectors with the largest employment change at λ = {lam:.3g} "
            f"(emissions {point['ghg_change_pct']:+.1f} %, employment "
            f"{point['employment_change_pct']:+.1f} %)"
        ),
        title_justify="left",
    )
    table.add_column("sector")
    table.add_column("exp(u)", justify="right")
    table.add_column("output", justify="right")
    table.add_column(f"employment [{emp_unit}]", justify="right")
    table.add_column("employment", justify="right")
    table.add_column(f"GHG [{ghg_unit}]", justify="right")
    for row in rows:
        table.add_row(
            row["sector"],
            f"{row['factor']:.3g}",
            f"{row['output_change_pct']:+.1f} %",
            f"{row['employment_change']:+.4g}",
            f"{row['employment_change_pct']:+.1f} %",
            f"{row['ghg_change']:+.4g}",
        )
    console.print(table)


def _plot(path: Path, fronts: dict[str, dict[str, Any]], emp_label: str, ghg_label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regs = list(fronts)
    fig, axes = plt.subplots(
        1,
        1 + len(regs),
        figsize=(6.0 + 4.4 * len(regs), 4.8),
        squeeze=False,
        gridspec_kw={"width_ratios": [1.35] + [1.0] * len(regs)},
    )
    ax = axes[0, 0]
    markers = "osD^v<>p"
    lo = min(f["lam_range"][0] for f in fronts.values())
    hi = max(f["lam_range"][1] for f in fronts.values())
    norm = matplotlib.colors.LogNorm(lo, hi)
    sc = None
    for j, reg in enumerate(regs):
        f = fronts[reg]
        emp = 100 * f["employment"] / f["E_ref"]
        ghg = 100 * f["ghg"] / f["G_ref"]
        order = np.argsort(emp)
        ax.plot(emp[order], ghg[order], "-", color="0.55", lw=1, zorder=2)
        # λ = 0 has no place on a log colour scale: clip it to the smallest positive λ.
        sc = ax.scatter(
            emp,
            ghg,
            c=np.clip(f["lambdas"], lo, hi),
            norm=norm,
            cmap="viridis",
            marker=markers[j % len(markers)],
            s=46,
            edgecolors="k",
            linewidths=0.4,
            zorder=3,
            label=f"{reg} (optimised, one point per λ)",
        )
        ax.scatter(
            100 * f["analytic_employment"] / f["E_ref"],
            100 * f["analytic_ghg"] / f["G_ref"],
            marker="x",
            color="r",
            s=14,
            lw=0.9,
            zorder=4,
            label="analytic optimum of eq. 5" if j == 0 else None,
        )
        k = f["marked"]
        ax.scatter(
            [emp[k]],
            [ghg[k]],
            s=240,
            facecolors="none",
            edgecolors="red",
            lw=1.6,
            zorder=5,
            label=(
                f"{reg}: λ = {f['lambdas'][k]:.3g}: employment {emp[k] - 100:+.1f} %, "
                f"GHG {ghg[k] - 100:+.1f} %\n(closest to a {100 * f['target']:.0f} % "
                "employment cut)"
            ),
        )
    ax.scatter([100], [100], marker="*", s=160, color="k", zorder=6, label="unintervened")
    ax.set_xlabel(f"total employment (% of reference)\n{emp_label}")
    ax.set_ylabel(f"total emissions (% of reference)\nGHG = {ghg_label}")
    ax.set_title("Emission cuts vs employment")
    ax.set_xlim(-4, 108)
    ax.set_ylim(-4, 108)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    cb = fig.colorbar(sc, ax=ax, pad=0.01)
    cb.set_label("λ (weight of employment preservation)")
    for j, reg in enumerate(regs):
        ax = axes[0, 1 + j]
        f = fronts[reg]
        rows = f["table"]
        names = [r["sector"] for r in rows][::-1]
        vals = np.array([r["employment_change_pct"] for r in rows][::-1])
        ax.barh(names, vals, color=np.where(vals < 0, "tab:red", "tab:green"))
        span = max(10.0, float(np.abs(vals).max()) * 1.35)
        for i, v in enumerate(vals):
            inside = abs(v) > 0.5 * span  # long bars carry their label inside
            ax.annotate(
                f"{v:+.3g} %",
                (v, i),
                xytext=(-3 if (v >= 0) == inside else 3, 0),
                textcoords="offset points",
                ha="right" if (v >= 0) == inside else "left",
                va="center",
                fontsize=7,
                color="w" if inside else "k",
            )
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlim(-span, span)
        ax.set_xlabel("employment change of the sector (%)")
        k = f["marked"]
        ax.set_title(f"{reg}: sectors moving most at λ = {f['lambdas'][k]:.3g}")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# the experiment


def normalise_options(opts: Mapping[str, Any]) -> dict[str, Any]:
    """Config fields from loosely typed options (command line strings); ``None`` dropped.

    ``regions`` may be ``"reg1,reg2"``; ``ghg`` / ``employment`` ``"row=w,..."`` or a list of
    such strings; ``lambdas`` ``"0,0.1,1"``.
    """
    given = {k: v for k, v in opts.items() if v is not None}
    if isinstance(given.get("regions"), str):
        given["regions"] = tuple(r.strip() for r in given["regions"].split(",") if r.strip())
    elif "regions" in given:
        given["regions"] = tuple(str(r) for r in given["regions"])
    for key in ("ghg", "employment"):
        if key in given:
            given[key] = parse_rows(given[key])
    if "lambdas" in given:
        lams = given["lambdas"]
        if isinstance(lams, str):
            try:
                lams = [float(v) for v in lams.split(",") if v.strip()]
            except ValueError:
                raise ValueError(
                    f"cannot read λ values from {given['lambdas']!r}; write e.g. 0,0.1,1,10"
                ) from None
        given["lambdas"] = tuple(float(v) for v in lams)
    return given


def _check(cfg: Config) -> None:
    if cfg.steps < 1:
        raise ValueError(f"steps must be >= 1, got {cfg.steps}")
    if cfg.lambdas is None and cfg.n_lambdas < 1:
        raise ValueError(f"n_lambdas must be >= 1, got {cfg.n_lambdas}")
    if cfg.lambdas is not None and (not cfg.lambdas or min(cfg.lambdas) < 0):
        raise ValueError(f"lambdas must be values >= 0, got {list(cfg.lambdas)}")
    if not cfg.lr > 0:
        raise ValueError(f"lr must be positive, got {cfg.lr}")
    if cfg.dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {cfg.dtype!r}")


def run(
    smoke: bool = False,
    out: str | Path | None = None,
    seed: int = 0,
    *,
    config: Config | None = None,
    progress: bool = False,
    console: Any = None,
    quiet: bool = False,
    **opts: Any,
) -> dict[str, Any]:
    """Run the experiment; write the figure, front (CSV, JSON), sector table and metrics.

    Args:
        smoke: the small configuration (:data:`SMOKE`) instead of :data:`FULL`.
        out: output folder (default ``results/ghg_employment``).
        seed: unused (the optimisation starts from ``u = 0`` and is deterministic); kept for the
            common experiment command line.
        config: a full :class:`Config` (overrides ``smoke``); otherwise ``opts`` override
            fields of the smoke / full config (``regions`` also as ``"reg1,reg2"``, ``ghg`` and
            ``employment`` also as ``"row=w,..."``, ``lambdas`` also as ``"0,0.1,1"``).
        progress: show a progress bar; console: a ``rich.console.Console`` for the tables;
            quiet: print nothing.

    Returns:
        The metrics (also in ``metrics.json``).
    """
    from rich.console import Console

    if config is None:
        config = dataclasses.replace(SMOKE if smoke else FULL, **normalise_options(opts))
    cfg = config
    _check(cfg)
    console = console or Console(quiet=quiet)
    if cfg.dtype == "float64" and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)
    io_system = eio.load_test() if cfg.exiobase is None else eio.load_exiobase(cfg.exiobase)
    regs = cfg.regions or (eio.regions(io_system)[0],)
    ghg_default, emp_default = default_rows(cfg.exiobase)
    ghg = cfg.ghg or ghg_default
    employment = cfg.employment or emp_default
    proxy = cfg.exiobase is None and set(employment) == {eio.TEST_EMPLOYMENT}
    path = output_dir(NAME, out)

    problems = {}
    for reg in regs:
        model = eio.from_pymrio(
            io_system, reg, dtype=cfg.dtype, allow_negative_demand=cfg.allow_negative_demand
        )
        problems[reg] = Problem(model, ghg, employment)
    if proxy:
        console.print(f"[yellow]note:[/yellow] {PROXY_NOTE}")

    fronts: dict[str, dict[str, Any]] = {}
    table_rows, front_rows = [], []
    metrics: dict[str, Any] = {"regions": {}}
    total_steps = len(regs) * cfg.steps
    bar = None
    if progress:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(
            TextColumn("[bold]designing[/bold] {task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} steps"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        task = bar.add_task(", ".join(regs), total=total_steps)
        bar.start()
    try:
        for reg, prob in problems.items():
            lams = (
                np.asarray(cfg.lambdas, float)
                if cfg.lambdas is not None
                else auto_lambdas(prob, cfg.n_lambdas, cfg.include_zero)
            )
            res = sweep(
                prob,
                lams,
                steps=cfg.steps,
                lr=cfg.lr,
                progress=(lambda k: bar.advance(task, k)) if bar is not None else None,
            )
            fronts[reg] = _summarise(prob, res, cfg)
    finally:
        if bar is not None:
            bar.stop()

    model0 = next(iter(problems.values())).model
    ghg_unit, emp_unit = model0.unit(ghg), model0.unit(employment)
    for reg, f in fronts.items():
        prob = problems[reg]
        k = f["marked"]
        point = f["points"][k]
        _print_table(console, reg, f["table"], f["lambdas"][k], ghg_unit, emp_unit, point)
        for p in f["points"]:
            front_rows.append({"region": reg, **p})
        for rank, row in enumerate(f["table"], 1):
            table_rows.append({"region": reg, "rank": rank, "lambda": f["lambdas"][k], **row})
        metrics["regions"][reg] = {
            "reference_ghg": f["G_ref"],
            "reference_employment": f["E_ref"],
            "reproduction_error": prob.model.reproduction_error,
            "max_ghg_cut_pct": float(-min(p["ghg_change_pct"] for p in f["points"])),
            "marked_lambda": float(f["lambdas"][k]),
            "marked_ghg_change_pct": point["ghg_change_pct"],
            "marked_employment_change_pct": point["employment_change_pct"],
            "max_excess_loss": f["excess_loss"],
            "front_monotone": f["monotone"],
            "all_solves_converged": bool(np.all(f["converged"])),
            "sweep_seconds": f["seconds"],
            "sectors_moving_most": [r["sector"] for r in f["table"][:3]],
            "model_note": prob.model.note,
        }

    units = {"ghg": ghg_unit, "employment": emp_unit}
    _write_csv(path / "front.csv", front_rows)
    _write_csv(path / "sectors.csv", table_rows)
    (path / "front.json").write_text(
        json.dumps(
            to_jsonable(
                {
                    "units": units,
                    "ghg": ghg,
                    "employment": employment,
                    "employment_note": PROXY_NOTE if proxy else "",
                    "loss": "GHG(x)/GHG* + lambda * ||e(x) - e*||_1 / E*",
                    "regions": {
                        reg: {
                            "reference": {"ghg": f["G_ref"], "employment": f["E_ref"]},
                            "marked_lambda": f["lambdas"][f["marked"]],
                            "points": f["points"],
                        }
                        for reg, f in fronts.items()
                    },
                }
            ),
            indent=2,
        )
        + "\n"
    )
    emp_label = ", ".join(employment) + (" — value-added labour proxy" if proxy else "")
    ghg_label = " + ".join(n if w == 1 else f"{w:g}·{n}" for n, w in ghg.items())
    _plot(path / "trade_off.png", fronts, emp_label, ghg_label)
    metrics.update(
        {
            "units": units,
            "employment_note": PROXY_NOTE if proxy else "",
            "normalisation": "loss = GHG/GHG* + lambda * L1(employment - reference)/E*",
            "excess_loss_meaning": "max over lambda of loss(u) minus the analytic infimum "
            "of eq. 5 (dimensionless; 0 is optimal)",
            "files": ["trade_off.png", "front.csv", "front.json", "sectors.csv", "metrics.json"],
        }
    )
    cfg_record = {
        **dataclasses.asdict(cfg),
        "regions": list(regs),
        "ghg": ghg,
        "employment": employment,
        "seed": seed,
    }
    write_metrics(path, metrics, cfg_record)
    console.print(f"wrote {path}/trade_off.png, front.csv, front.json, sectors.csv, metrics.json")
    return metrics


def _summarise(prob: Problem, res: Sweep, cfg: Config) -> dict[str, Any]:
    G, E = float(prob.G), float(prob.E)
    ref = analytic_front(prob, res.lambdas)
    # Optimality: eq. 5 at the returned u minus its analytic infimum (both dimensionless).
    loss = res.ghg / G + res.lambdas * res.deviation / E
    best = ref["ghg"] / G + res.lambdas * ref["deviation"] / E
    emp_change = res.employment / E - 1
    marked = int(np.argmin(np.abs(-emp_change - cfg.target)))
    points = []
    for i, lam in enumerate(res.lambdas):
        points.append(
            {
                "lambda": float(lam),
                "ghg": float(res.ghg[i]),
                "employment": float(res.employment[i]),
                "ghg_change_pct": float(100 * (res.ghg[i] / G - 1)),
                "employment_change_pct": float(100 * emp_change[i]),
                "employment_l1_deviation_pct": float(100 * res.deviation[i] / E),
                "analytic_ghg_change_pct": float(100 * (ref["ghg"][i] / G - 1)),
                "final_loss": float(res.loss[i, -1]),
                "converged": bool(res.converged[i]),
                "marked": i == marked,
            }
        )
    # Monotone front: along increasing λ the employment deviation never grows (up to 1e-3 E*).
    dev = res.deviation / E
    monotone = bool(np.all(np.diff(dev) <= 1e-3))
    lam_pos = res.lambdas[res.lambdas > 0]
    return {
        "lambdas": res.lambdas,
        "ghg": res.ghg,
        "employment": res.employment,
        "G_ref": G,
        "E_ref": E,
        "analytic_ghg": ref["ghg"],
        "analytic_employment": ref["employment"],
        "excess_loss": float(np.max(loss - best)),
        "monotone": monotone,
        "converged": res.converged,
        "seconds": res.seconds,
        "marked": marked,
        "target": cfg.target,
        "lam_range": (float(lam_pos.min()), float(lam_pos.max())) if lam_pos.size else (1, 10),
        "points": points,
        "table": sector_table(prob, res, marked, cfg.top),
    }


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        path.write_text("")
        return
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: (f"{v:.10g}" if isinstance(v, float) else v) for k, v in row.items()}
            )


def add_options(parser: Any, *, defaults: Config) -> None:
    """The experiment's options (shared by ``jcausal design``)."""
    parser.add_argument(
        "--region",
        dest="regions",
        default=None,
        help="region(s), comma-separated (default: the table's first region)",
    )
    parser.add_argument(
        "--ghg",
        action="append",
        default=None,
        metavar="ROW=W[,ROW=W]",
        help="GHG indicator: stressor rows and weights (repeatable)",
    )
    parser.add_argument(
        "--employment",
        action="append",
        default=None,
        metavar="ROW[=W]",
        help="employment indicator rows (repeatable)",
    )
    parser.add_argument(
        "--lambdas",
        default=None,
        metavar="L1,L2,...",
        help=f"explicit λ values (default: 0 and {defaults.n_lambdas} log-spaced)",
    )
    parser.add_argument("--n-lambdas", type=int, default=None, help="size of the automatic λ grid")
    parser.add_argument(
        "--steps", type=int, default=None, help=f"Adam steps (default {defaults.steps})"
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help=f"initial Adam step, a log-factor (default {defaults.lr})",
    )
    parser.add_argument(
        "--dtype",
        choices=["float64", "float32"],
        default=None,
        help=f"precision (default {defaults.dtype})",
    )
    parser.add_argument(
        "--exiobase",
        default=None,
        metavar="PATH",
        help="Exiobase 3 archive to parse with pymrio (default: pymrio test table)",
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``jcausal experiment ghg_employment [--smoke] [--out DIR] [options]``."""
    return run_cli(
        NAME,
        DESCRIPTION,
        functools.partial(run, progress=True),
        argv,
        extra=lambda p: add_options(p, defaults=FULL),
    )


__all__ = [
    "DESIGN",
    "FULL",
    "SMOKE",
    "Config",
    "Problem",
    "Sweep",
    "analytic_front",
    "auto_lambdas",
    "main",
    "normalise_options",
    "parse_rows",
    "run",
    "sector_table",
    "sweep",
]
