"""Fig. 3a of Besserve & Schölkopf (UAI 2022): equilibrium accuracy against SCM dimension.

For the Leontief SCM ``x = f(x) = A x + y`` the relative error ``||x - f(x)|| / ||x||`` reached
within a fixed budget of map evaluations is compared for forward iteration and Anderson
acceleration (history ``m = 5``) with mixing ``β = 1`` and ``β = 2``, all in float64, starting
from zero as in the paper. The budget is fixed by calling :func:`jcausal.fixed_point` with
``rtol = atol = 0``: the solver then only stops early when the residual is exactly zero (no
further iteration could improve it), otherwise after ``max_steps`` evaluations.

Systems (the paper used leading sub-blocks of Exiobase 3 country tables, not available
offline):

* ``pymrio_test``: leading ``n x n`` sub-blocks of each region's domestic block of
  ``pymrio.load_test()`` (6 regions, ``n ≤ 8``), final demand = that region's rows of ``Y``
  summed over all final-demand columns;
* ``synthetic``: Exiobase-like random matrices (nonnegative, sparse, block-structured sector
  groups, column sums drawn in ``[0.5, 0.9]``), positive log-normal final demand;
* ``synthetic_near_unit``: the same with column sums in ``[0.85, 0.99]`` (spectral radius close
  to 1, as in input-intensive economies), where a budget of 200 actually binds.
"""

from __future__ import annotations

import dataclasses
import functools as ft
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..solvers import Anderson, Forward, fixed_point
from ._common import output_dir, run_cli, write_metrics

NAME = "equilibrium_accuracy"
METHODS = (("forward", 1.0), ("anderson", 1.0), ("anderson", 2.0))
#: floor used only to draw exact zeros on a log axis
PLOT_FLOOR = 1e-20


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes per system, random draws per size, budgets (map evaluations), Anderson history."""

    pymrio_sizes: tuple[int, ...] = (2, 4, 6, 8)
    sizes: tuple[int, ...] = (5, 10, 20, 50, 100, 200)
    draws: int = 10
    budgets: tuple[int, ...] = (200, 20)
    history: int = 5
    column_sums: tuple[float, float] = (0.5, 0.9)
    near_unit_column_sums: tuple[float, float] = (0.85, 0.99)
    block: int = 10


SMOKE = Config(pymrio_sizes=(4, 8), sizes=(5, 20, 50), draws=2, budgets=(200,))
FULL = Config()


def exiobase_like(
    rng: np.random.Generator, n: int, column_sums: tuple[float, float], block: int = 10
) -> np.ndarray:
    """A random ``(n, n)`` technical-coefficient matrix that looks like an Exiobase block.

    Sectors come in groups of ``block`` that trade densely with each other (60 % nonzero) and
    sparsely with the rest (8 %); entries are log-normal, every sector uses some of its own
    output, and column ``j`` is rescaled to sum to ``s_j ~ U(column_sums)``, so the spectral
    radius is below ``max(column_sums) < 1``.
    """
    lo, hi = column_sums
    if not 0 <= lo <= hi < 1:
        raise ValueError(f"column sums must satisfy 0 <= lo <= hi < 1, got {column_sums}")
    group = np.arange(n) // block
    density = np.where(group[:, None] == group[None, :], 0.6, 0.08)
    M = rng.lognormal(0.0, 1.0, (n, n)) * (rng.random((n, n)) < density)
    M[np.arange(n), np.arange(n)] += rng.lognormal(0.0, 1.0, n)
    return M / M.sum(axis=0) * rng.uniform(lo, hi, n)


def pymrio_blocks(sizes: Sequence[int]) -> dict[int, list[tuple[np.ndarray, np.ndarray]]]:
    """``{n: [(A_r[:n, :n], y_r[:n]) for each region r]}`` from ``pymrio.load_test()``."""
    import pymrio

    io = pymrio.load_test()
    io.calc_all()
    regions = list(io.get_regions())
    out = {}
    for n in sizes:
        blocks = []
        for r in regions:
            A = io.A.loc[r, r].to_numpy()
            if n > A.shape[0]:
                raise ValueError(f"pymrio test regions have {A.shape[0]} sectors, asked for {n}")
            y = io.Y.loc[r].to_numpy().sum(axis=1)
            blocks.append((A[:n, :n], y[:n]))
        out[n] = blocks
    return out


def _leontief(x, p):
    A, y = p
    return A @ x + y


@ft.partial(jax.jit, static_argnames=("method", "beta", "budget", "history"))
def _solve_batch(As, ys, *, method, beta, budget, history):
    def one(A, y):
        # A fixed budget: rtol = atol = 0 is never met and no divergence stop (the figure
        # shows how far each method gets in `budget` evaluations, diverging or not).
        fixed = dict(rtol=0.0, atol=0.0, max_steps=budget, beta=beta, divergence=float("inf"))
        if method == "anderson":
            solver = Anderson(history=history, **fixed)
        else:
            solver = Forward(**fixed)
        x, rep = fixed_point(_leontief, jnp.zeros_like(y), (A, y), solver=solver, throw=False)
        return x, rep.num_steps

    return jax.vmap(one)(As, ys)


def relative_errors(
    As: np.ndarray, ys: np.ndarray, *, method: str, beta: float, budget: int, history: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Relative errors ``||x - A x - y|| / ||x||`` (float64, numpy) and evaluations used.

    Args:
        As: ``(b, n, n)`` technical coefficients. Systems of different sizes can share one
            compiled solve by zero-padding to a common ``n``: padded sectors stay exactly zero
            and change neither the iterates nor the norms.
        ys: ``(b, n)`` final demands.
        method: ``"anderson"`` or ``"forward"`` (damped fixed-point iteration).
        beta: damping of the update (1 = undamped).
        budget: number of evaluations of ``x -> A x + y`` (no tolerance stop, no divergence
            stop).
        history: Anderson's memory (ignored by ``"forward"``).

    Returns:
        ``(b,)`` relative errors and ``(b,)`` evaluations used.
    """
    As = np.asarray(As, np.float64)
    ys = np.asarray(ys, np.float64)
    x, steps = _solve_batch(
        jnp.asarray(As), jnp.asarray(ys), method=method, beta=beta, budget=budget, history=history
    )
    x = np.asarray(x)
    r = x - np.einsum("bij,bj->bi", As, x) - ys
    return np.linalg.norm(r, axis=1) / np.linalg.norm(x, axis=1), np.asarray(steps)


def _padded(systems) -> tuple[np.ndarray, np.ndarray, list[tuple[str, int, int]]]:
    """Stack every system, zero-padded to the largest size, with (system, n, count) keys."""
    nmax = max(n for by_size in systems.values() for n in by_size)
    As, ys, keys = [], [], []
    for sname, by_size in systems.items():
        for n, (A, y) in sorted(by_size.items()):
            Ap = np.zeros((A.shape[0], nmax, nmax))
            Ap[:, :n, :n] = A
            yp = np.zeros((y.shape[0], nmax))
            yp[:, :n] = y
            As.append(Ap)
            ys.append(yp)
            keys.append((sname, n, A.shape[0]))
    return np.concatenate(As), np.concatenate(ys), keys


def _systems(cfg: Config, seed: int) -> dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]:
    systems = {"pymrio_test": {}}
    for n, blocks in pymrio_blocks(cfg.pymrio_sizes).items():
        systems["pymrio_test"][n] = (
            np.stack([b[0] for b in blocks]),
            np.stack([b[1] for b in blocks]),
        )
    for name, sums in (
        ("synthetic", cfg.column_sums),
        ("synthetic_near_unit", cfg.near_unit_column_sums),
    ):
        rng = np.random.default_rng(seed)
        systems[name] = {}
        for n in cfg.sizes:
            As = np.stack([exiobase_like(rng, n, sums, cfg.block) for _ in range(cfg.draws)])
            ys = rng.lognormal(0.0, 1.0, (cfg.draws, n))
            systems[name][n] = (As, ys)
    return systems


def _label(method: str, beta: float) -> str:
    return "forward" if method == "forward" else f"anderson_beta{beta:g}"


def run(smoke: bool = False, out: str | Path | None = None, seed: int = 0) -> dict:
    """Measure the errors, write ``fig3a_budget{B}.png`` per budget and metrics."""
    if not jax.config.jax_enable_x64:
        raise ValueError(
            "equilibrium_accuracy measures errors down to 1e-16 and needs float64: call "
            'jax.config.update("jax_enable_x64", True) first (the command line does)'
        )
    cfg = SMOKE if smoke else FULL
    path = output_dir(NAME, out)
    systems = _systems(cfg, seed)
    As, ys, keys = _padded(systems)
    results: dict = {}
    for budget in cfg.budgets:
        per_budget = results.setdefault(f"budget_{budget}", {})
        for sname, by_size in systems.items():
            per_budget[sname] = {
                "sizes": sorted(by_size),
                "spectral_radius_mean": [
                    float(np.mean([np.abs(np.linalg.eigvals(a)).max() for a in by_size[n][0]]))
                    for n in sorted(by_size)
                ],
            }
        for method, beta in METHODS:
            # One compiled, vmapped solve for every system and size at this budget.
            errs, steps = relative_errors(
                As, ys, method=method, beta=beta, budget=budget, history=cfg.history
            )
            start = 0
            for sname, _n, count in keys:
                e, k = errs[start : start + count], steps[start : start + count]
                start += count
                m = per_budget[sname].setdefault(
                    _label(method, beta),
                    {"mean": [], "std": [], "mean_plus_std": [], "max": [], "evaluations_mean": []},
                )
                m["mean"].append(float(np.mean(e)))
                m["std"].append(float(np.std(e)))
                m["mean_plus_std"].append(float(np.mean(e) + np.std(e)))
                m["max"].append(float(np.max(e)))
                m["evaluations_mean"].append(float(np.mean(k)))
    figures = [_plot(path, budget, results[f"budget_{budget}"]).name for budget in cfg.budgets]
    metrics = {"results": results, "figures": figures, "methods": [_label(*m) for m in METHODS]}
    write_metrics(path, metrics, dataclasses.asdict(cfg) | {"smoke": smoke, "seed": seed})
    return metrics


def _plot(path: Path, budget: int, res: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = {
        "pymrio_test": "pymrio test system (regional blocks)",
        "synthetic": "synthetic Exiobase-like, col. sums 0.5-0.9",
        "synthetic_near_unit": "synthetic, col. sums 0.85-0.99",
    }
    fig, axes = plt.subplots(1, len(res), figsize=(5 * len(res), 4), sharey=True)
    for ax, (sname, block) in zip(np.atleast_1d(axes), res.items(), strict=True):
        sizes = block["sizes"]
        pos = np.arange(len(sizes))
        for method, beta in METHODS:
            m = block[_label(method, beta)]
            label = "forward iteration" if method == "forward" else f"Anderson β={beta:g}"
            (line,) = ax.semilogy(pos, np.maximum(m["mean"], PLOT_FLOOR), "-o", ms=3, label=label)
            ax.semilogy(
                pos,
                np.maximum(m["mean_plus_std"], PLOT_FLOOR),
                "--",
                color=line.get_color(),
                alpha=0.5,
            )
        ax.set_xticks(pos, [str(n) for n in sizes])
        ax.set_xlabel("SCM dimension")
        ax.set_title(titles.get(sname, sname), fontsize=10)
        ax.grid(alpha=0.3, which="both")
    np.atleast_1d(axes)[0].set_ylabel(f"relative error after {budget} evaluations")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle("Equilibrium relative error ||x - f(x)|| / ||x|| (solid: mean, dashed: mean+std)")
    fig.tight_layout()
    target = path / f"fig3a_budget{budget}.png"
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line: ``jcausal experiment equilibrium_accuracy [--smoke] [--out DIR]``."""
    jax.config.update("jax_enable_x64", True)
    return run_cli(NAME, __doc__.splitlines()[0], run, argv)


__all__ = ["FULL", "METHODS", "SMOKE", "Config", "exiobase_like", "main", "relative_errors", "run"]
