"""Fig. 4 of Besserve & Schölkopf (UAI 2022): controlling the rebound effect with a learned tax.

A 3-sector economy (``A = [[0, a, 0], [.5, 0, 0], [.1, .2, 0]]``, sector 1 is energy, sector 0
the target, ``a = A[0, 1]`` the free parameter swept over ``[0.01, 0.19]``; demand
``1.42 / (exp(10 (p / 0.4 - 1)) + 1)`` for every good; prices ``p = Aᵀ p + δ_e``). Three
models are compared along ``a``:

* reference: unintervened;
* Lie: energy efficiency of the target improved, ``intensity := α A[1, 0]`` (``α = e^u``);
* invariant: the same plus a learned tax on good 0 (an MLP of the unit prices and ``u``,
  multiplying the consumer price), trained with :func:`jcausal.learn_invariant` so that the
  consumer price, hence the final demand of good 0, keeps its reference value.

Also reported: the engineering (no-rebound) energy demand, with the final demand held at its
reference (the linear Leontief model of the more efficient economy), and the rebound effect
``1 - actual / potential savings`` (backfire when ``> 1``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import invariance
from ..economy.demand import Logistic
from ..economy.rebound import efficiency, rebound_model
from ..scm import do, solve
from ._common import output_dir, run_cli, write_metrics

NAME = "rebound"
BASE_A = ((0.0, 0.1, 0.0), (0.5, 0.0, 0.0), (0.1, 0.2, 0.0))


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings (``free`` = the swept entry of ``A``; ``alphas`` = efficiency factors shown)."""

    energy: int = 1
    target: int = 0
    free: tuple[int, int] = (0, 1)
    free_range: tuple[float, float] = (0.01, 0.19)
    grid: int = 37
    alphas: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)
    headline_alpha: float = 0.6
    train_alpha: tuple[float, float] = (0.15, 0.95)
    steps: int = 1500
    batch: int = 32
    learning_rate: float = 1e-2
    width: int = 32
    depth: int = 2


SMOKE = Config(grid=9, alphas=(0.4, 0.6), steps=150, batch=16, train_alpha=(0.35, 0.85))
FULL = Config()


def _model(cfg: Config):
    A0 = jnp.asarray(BASE_A)
    curve = Logistic.paper()

    def model(theta):
        A = A0.at[cfg.free].set(theta[0])
        return rebound_model(A, curve, energy=cfg.energy, target=cfg.target)

    return model


def _evaluate(model, inv, frees, alphas):
    """Reference / Lie / invariant / engineering equilibria on the (alpha, free) grid.

    One compiled, vmapped call for the whole grid. Returns ``{model: {node: (n_alpha, n_free)}}``.
    """

    def one(alpha, a):
        u = jnp.log(alpha)
        scm, noise = model(a[None])
        ref, _ = solve(scm, noise)
        lie, _ = solve(do(scm, efficiency(u)), noise)
        ii, _ = solve(do(scm, inv(scm, u[None])), noise)
        pick = ("consumer_price", "target_price", "energy")
        names = ("reference", "lie", "invariant")
        out = {k: {n: v[n][0] for n in pick} for k, v in zip(names, (ref, lie, ii), strict=True)}
        # Engineering estimate: final demand frozen at its reference, so quantities follow the
        # linear Leontief model x = (I - Ã)⁻¹ y_ref of the more efficient economy.
        A = scm.mechanisms["output"].params["A"]
        e, t = scm.mechanisms["output"].params["energy"], scm.mechanisms["output"].params["target"]
        A_eff = A.at[e, t].multiply(alpha)
        x = jnp.linalg.solve(jnp.eye(A.shape[0], dtype=A.dtype) - A_eff, ref["demand"][0])
        out["engineering"] = {"energy": x[e]}
        return out

    grid = jax.vmap(jax.vmap(one, in_axes=(None, 0)), in_axes=(0, None))
    out = eqx.filter_jit(grid)(jnp.asarray(alphas), frees)
    return jax.tree_util.tree_map(np.asarray, out)


def run(
    smoke: bool = False, out: str | Path | None = None, seed: int = 0, progress: bool = False
) -> dict:
    """Train the invariant (tax) intervention and write ``fig4_rebound.png`` + metrics."""
    cfg = SMOKE if smoke else FULL
    path = output_dir(NAME, out)
    model = _model(cfg)
    lo, hi = cfg.free_range
    ulo, uhi = np.log(cfg.train_alpha[0]), np.log(cfg.train_alpha[1])

    def sample_theta(key, b):
        return jax.random.uniform(key, (b, 1), minval=lo, maxval=hi)

    def sample_u(key, b):
        return jax.random.uniform(key, (b, 1), minval=ulo, maxval=uhi)

    inv = invariance.learn_invariant(
        model,
        lambda u: efficiency(u[0]),
        invariant="consumer_price",
        auxiliary="consumer_price",
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
    frees = jnp.linspace(lo, hi, cfg.grid)
    grid = _evaluate(model, inv, frees, cfg.alphas)
    per_alpha = {}
    for ia, alpha in enumerate(cfg.alphas):
        r = jax.tree_util.tree_map(lambda v, ia=ia: v[ia], grid)
        e_ref, e_lie = r["reference"]["energy"], r["lie"]["energy"]
        e_inv, e_eng = r["invariant"]["energy"], r["engineering"]["energy"]
        c_ref = r["reference"]["consumer_price"]
        rebound = 1.0 - (e_ref - e_lie) / (e_ref - e_eng)
        per_alpha[f"{alpha:g}"] = {
            "alpha": alpha,
            "target_price": {k: r[k]["consumer_price"] for k in ("reference", "lie", "invariant")},
            "target_producer_price_invariant": r["invariant"]["target_price"],
            "energy": {k: r[k]["energy"] for k in ("reference", "lie", "invariant", "engineering")},
            "price_rel_dev_invariant_max": float(
                np.max(np.abs(r["invariant"]["consumer_price"] - c_ref) / c_ref)
            ),
            "price_rel_drop_lie_min": float(np.min(1 - r["lie"]["consumer_price"] / c_ref)),
            "energy_ratio_lie_min": float(np.min(e_lie / e_ref)),
            "energy_ratio_invariant_max": float(np.max(e_inv / e_ref)),
            "energy_ratio_engineering_max": float(np.max(e_eng / e_ref)),
            "rebound_effect_lie_min": float(np.min(rebound)),
            "backfire_everywhere": bool(np.all(e_lie > e_ref)),
            "savings_everywhere_invariant": bool(np.all(e_inv < e_ref)),
        }
    fig = _plot(path, np.asarray(frees), per_alpha, cfg)
    history = np.asarray(inv.history)
    metrics = {
        "free_parameter": f"A[{cfg.free[0]}, {cfg.free[1]}]",
        "free_values": np.asarray(frees),
        "training_loss_first": float(history[0]),
        "training_loss_last20": float(history[-20:].mean()),
        "headline_alpha": cfg.headline_alpha,
        "per_alpha": per_alpha,
        "figures": [fig.name],
    }
    write_metrics(path, metrics, dataclasses.asdict(cfg) | {"smoke": smoke, "seed": seed})
    return metrics


def _plot(path: Path, frees, per_alpha, cfg: Config) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    colors = plt.cm.viridis(np.linspace(0.1, 0.85, len(per_alpha)))
    for (key, m), col in zip(per_alpha.items(), colors, strict=True):
        bold = float(key) == cfg.headline_alpha
        lw = 2.0 if bold else 1.0
        axes[0].plot(frees, m["target_price"]["lie"], "--", color=col, lw=lw, label=f"Lie α={key}")
        axes[0].plot(
            frees, m["target_price"]["invariant"], "-", color=col, lw=lw, label=f"invariant α={key}"
        )
        axes[1].plot(frees, m["energy"]["lie"], "--", color=col, lw=lw, label=f"Lie α={key}")
        axes[1].plot(
            frees, m["energy"]["invariant"], "-", color=col, lw=lw, label=f"invariant α={key}"
        )
    first = next(iter(per_alpha.values()))
    axes[0].plot(frees, first["target_price"]["reference"], "k:", lw=2, label="reference")
    axes[1].plot(frees, first["energy"]["reference"], "k:", lw=2, label="reference")
    axes[0].set_title("(a) unit price of the target sector (paid by buyers)")
    axes[1].set_title("(b) total energy demand $x_e$")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xlabel(f"free parameter A[{cfg.free[0]}, {cfg.free[1]}]")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("price (energy units per unit output)")
    axes[1].set_ylabel("energy sector gross output")
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    target = path / "fig4_rebound.png"
    fig.savefig(target, dpi=120)
    plt.close(fig)
    return target


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line: ``jcausal experiment rebound [--smoke] [--out DIR] [--seed N]`` (float64)."""
    jax.config.update("jax_enable_x64", True)
    return run_cli(NAME, __doc__.splitlines()[0], run, argv)


__all__ = ["FULL", "SMOKE", "Config", "main", "run"]
