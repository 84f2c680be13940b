"""Fig. 5 of Besserve & Schölkopf (UAI 2022): compartmentalized interventions (Prop. 4).

A six-sector Leontief economy ``x = A x + f`` in two compartments (Fig. 2a), one scalar node per
sector: compartment k holds sectors ``x_k`` (supplier), ``y_k`` (intervened) and ``z_k``
(invariant). The compartments trade only through the invariant nodes: ``z_2`` buys from ``x_1``
(``A[x1, z2] = c_1``) and ``z_1`` buys from ``x_2`` (``A[x2, z1] = c_2``), so the equilibria of
both compartments depend on each other. ``θ = (c_1, c_2)`` are the free parameters.

A multiplicative Lie intervention scales the activity of ``y_1`` by ``e^u`` and of ``y_2`` by
``e^v``. Two invariant interventions (MLP compensators on ``z_1`` and ``z_2``) are learned with
:func:`jcausal.learn_compartmentalized`; Proposition 4 then says compartment 1 depends on ``u``
only. The figure compares them with the plain Lie interventions on a ``(u, v)`` grid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import distrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import invariance
from ..lie import Lie, Multiplicative
from ..scm import Additive, EquilibriumSCM, do, solve
from ._common import output_dir, run_cli, write_metrics

NAME = "compartments"
SECTORS = ("x1", "y1", "z1", "x2", "y2", "z2")
PARTITION = (("x1", "y1", "z1"), ("x2", "y2", "z2"))
# Within-compartment technical coefficients A[i, j] (input of i per unit output of j); the same
# pattern in both compartments, with a feedback loop x -> y -> z -> x.
_INNER = {("x", "y"): 0.3, ("y", "x"): 0.2, ("y", "z"): 0.4, ("z", "y"): 0.35, ("x", "z"): 0.1}
FINAL_DEMAND = (1.0, 0.5, 0.8, 1.5, 0.7, 0.6)


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings: ``theta_range`` bounds ``(c_1, c_2)``; ``u_range`` bounds ``u`` and ``v``."""

    theta_range: tuple[float, float] = (0.1, 0.4)
    theta_ref: tuple[float, float] = (0.25, 0.25)
    u_range: tuple[float, float] = (-0.3, 0.3)
    grid: int = 9
    steps: int = 1000
    batch: int = 32
    learning_rate: float = 1e-2
    width: int = 32
    depth: int = 2


SMOKE = Config(grid=5, steps=200, batch=16)
FULL = Config()


def technical_matrix(theta) -> jnp.ndarray:
    """The 6 x 6 matrix ``A(θ)`` (rows/columns in :data:`SECTORS` order)."""
    idx = {s: i for i, s in enumerate(SECTORS)}
    A = jnp.zeros((6, 6), jnp.result_type(theta, float))
    for k in ("1", "2"):
        for (i, j), a in _INNER.items():
            A = A.at[idx[i + k], idx[j + k]].set(a)
    A = A.at[idx["x1"], idx["z2"]].set(theta[0])
    return A.at[idx["x2"], idx["z1"]].set(theta[1])


with jax.ensure_compile_time_eval():
    _PATTERN = np.asarray(technical_matrix(np.ones(2))) > 0


def _row(w, pa):
    return sum(w[p] * pa[p] for p in w)


def model(theta):
    """``model(θ) -> (EquilibriumSCM, noise)``: one scalar node per sector, ``x_i = A_i· x + f_i``.

    Parents are read off the sparsity pattern of ``A`` (fixed, so the graph does not depend on
    ``θ``), and final demand enters as each node's exogenous input.
    """
    A = technical_matrix(theta)
    pattern = _PATTERN
    mechs = {}
    for i, s in enumerate(SECTORS):
        parents = [SECTORS[j] for j in range(6) if pattern[i, j]]
        w = {p: A[i, SECTORS.index(p)] for p in parents}
        mechs[s] = Additive(_row, w, distrax.Deterministic(jnp.zeros((), A.dtype)), parents)
    noise = {s: jnp.asarray([f], A.dtype) for s, f in zip(SECTORS, FINAL_DEMAND, strict=True)}
    return EquilibriumSCM(mechs), noise


def _lie(node):
    def intervene(u):
        return {node: Lie(Multiplicative(), u[0])}

    return intervene


def run(
    smoke: bool = False, out: str | Path | None = None, seed: int = 0, progress: bool = False
) -> dict:
    """Learn both invariant interventions, sweep ``(u, v)``, write ``fig5_compartments.png``."""
    cfg = SMOKE if smoke else FULL
    path = output_dir(NAME, out)
    lo, hi = cfg.theta_range
    ulo, uhi = cfg.u_range

    def sample_theta(key, b):
        return jax.random.uniform(key, (b, 2), minval=lo, maxval=hi)

    def sample_u(key, b):
        return jax.random.uniform(key, (b, 1), minval=ulo, maxval=uhi)

    scm0, _ = model(jnp.asarray(cfg.theta_ref))
    check = invariance.check_compartments(scm0, PARTITION, [("y1", "z1", "z1"), ("y2", "z2", "z2")])
    invs = invariance.learn_compartmentalized(
        model,
        PARTITION,
        [(_lie("y1"), "z1", "z1"), (_lie("y2"), "z2", "z2")],
        sample_theta=sample_theta,
        sample_u=sample_u,
        key=jax.random.key(seed),
        steps=cfg.steps,
        batch=cfg.batch,
        learning_rate=cfg.learning_rate,
        width=cfg.width,
        depth=cfg.depth,
        progress=progress,
    )
    us = jnp.linspace(ulo, uhi, cfg.grid)

    def at(theta, u, v):
        scm, noise = model(theta)
        ref, _ = solve(scm, noise)
        uu, vv = jnp.atleast_1d(u), jnp.atleast_1d(v)
        ii, _ = solve(do(scm, {**invs[0](scm, uu), **invs[1](scm, vv)}), noise)
        li, _ = solve(do(scm, {**_lie("y1")(uu), **_lie("y2")(vv)}), noise)
        return {k: {n: d[n][0] for n in SECTORS} for k, d in (("ref", ref), ("II", ii), ("LI", li))}

    grid_fn = eqx.filter_jit(
        jax.vmap(jax.vmap(at, in_axes=(None, None, 0)), in_axes=(None, 0, None))
    )
    # Reference parameters, plus held-out parameters to show invariance over a range of θ.
    held_out = jax.random.uniform(jax.random.key(seed + 1000), (2, 2), minval=lo, maxval=hi)
    thetas = [jnp.asarray(cfg.theta_ref), *held_out]
    grids = [jax.tree_util.tree_map(np.asarray, grid_fn(th, us, us)) for th in thetas]

    def summary(g):
        ref_z1 = g["ref"]["z1"][0, 0]
        y1 = g["II"]["y1"]
        return {
            "z1_rel_dev_II_max": float(np.max(np.abs(g["II"]["z1"] / ref_z1 - 1))),
            "z1_rel_dev_LI_max": float(np.max(np.abs(g["LI"]["z1"] / ref_z1 - 1))),
            # dependence of compartment 1 on v (axis 1) vs on u (axis 0)
            "y1_II_spread_over_v_max": float(np.max(np.ptp(y1, axis=1) / np.mean(y1, axis=1))),
            "y1_II_spread_over_u_min": float(np.min(np.ptp(y1, axis=0) / np.mean(y1, axis=0))),
            "x1_II_spread_over_v_max": float(
                np.max(np.ptp(g["II"]["x1"], axis=1) / np.mean(g["II"]["x1"], axis=1))
            ),
            "x1_LI_spread_over_v_max": float(
                np.max(np.ptp(g["LI"]["x1"], axis=1) / np.mean(g["LI"]["x1"], axis=1))
            ),
            "y1_II_vs_LI_rel_diff_max": float(np.max(np.abs(y1 / g["LI"]["y1"] - 1))),
        }

    fig = _plot(path, np.asarray(us), grids[0])
    metrics = {
        "check_compartments": {
            "holds": bool(check.holds),
            "boundary": [list(b) for b in check.boundary],
            "reasons": list(check.reasons),
        },
        "u_values": np.asarray(us),
        "theta_ref": list(cfg.theta_ref),
        "reference": summary(grids[0]),
        "held_out_theta": [
            {"theta": np.asarray(th), **summary(g)}
            for th, g in zip(thetas[1:], grids[1:], strict=True)
        ],
        "grid_theta_ref": {k: {n: grids[0][k][n] for n in ("y1", "z1")} for k in ("II", "LI")},
        "ref_values": {n: float(grids[0]["ref"][n][0, 0]) for n in SECTORS},
        "training_loss": [
            {"first": float(i.history[0]), "last20": float(np.mean(i.history[-20:]))} for i in invs
        ],
        "figures": [fig.name],
    }
    write_metrics(path, metrics, dataclasses.asdict(cfg) | {"smoke": smoke, "seed": seed})
    return metrics


def _plot(path: Path, us, g) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    cols = plt.cm.coolwarm(np.linspace(0, 1, len(us)))
    for row, node in enumerate(("z1", "y1")):
        ax = axes[row, 0]
        for j, col in enumerate(cols):
            ax.plot(us, g["II"][node][:, j], "-", color=col, label=f"II v={us[j]:+.2f}")
            ax.plot(us, g["LI"][node][:, j], "--", color=col, lw=0.8)
        ax.plot(us, g["ref"][node][:, 0], "k-", lw=2.5, alpha=0.6, label="unintervened")
        ax.set_xlabel("u (Lie parameter of compartment 1)")
        role = "invariant" if node == "z1" else "intervened"
        ax.set_title(f"({'ab'[row]}) {role} node {node} (solid II, dashed LI)")
        if row == 0:
            ax.legend(fontsize=6, ncol=2)
        ref = g["ref"][node][0, 0]
        for c, kind in enumerate(("II", "LI")):
            ax = axes[row, c + 1]
            rel = g[kind][node] / ref - 1
            lim = max(float(np.max(np.abs(rel))), 1e-6)
            im = ax.imshow(
                rel.T,
                origin="lower",
                extent=(us[0], us[-1], us[0], us[-1]),
                cmap="RdBu_r",
                vmin=-lim,
                vmax=lim,
                aspect="auto",
            )
            ax.set_xlabel("u (compartment 1)")
            ax.set_ylabel("v (compartment 2)")
            ax.set_title(f"{node}: {kind} relative change (max {lim:.1e})")
            fig.colorbar(im, ax=ax)
    fig.tight_layout()
    target = path / "fig5_compartments.png"
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line: ``jcausal experiment compartments [--smoke] [--out DIR]`` (float64)."""
    jax.config.update("jax_enable_x64", True)
    return run_cli(NAME, __doc__.splitlines()[0], run, argv)


__all__ = ["FULL", "PARTITION", "SECTORS", "SMOKE", "Config", "main", "model", "run"]
