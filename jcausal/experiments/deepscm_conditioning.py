"""Conditioning versus intervening in a learned Morpho-MNIST SCM (Deep SCM, Fig. A.6).

For the full model (``t -> i``):

* ``p(t | i = v)`` (conditioning) is ``p(t) p(i = v | t)`` normalised over a grid of ``t``, from
  the flows' exact densities; ``p(t | do(i := v))`` (intervening) is sampled from the
  intervened SCM and collapses to ``p(t)``, because ``t`` is not a descendant of ``i``;
* ``p(i | t = v)`` is the flow density ``p(i | t = v)`` on a grid of ``i``;
  ``p(i | do(t := v))`` is sampled from the intervened SCM and equals it, because ``t`` has no
  parents (no confounding).

The same quantities of the true SCM of eq. (7) come from its closed-form densities (scipy).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray
from scipy import stats

from .. import scm as jscm
from ..data.morphomnist import true_log_p_i_given_t, true_log_p_t
from ..deepscm import morpho

#: Values of ``i`` (grey levels) and ``t`` (pixels) conditioned / intervened on, as in Fig. A.6.
I_VALUES = (100.0, 160.0, 220.0)
T_VALUES = (1.5, 2.5, 3.5)
T_GRID = np.linspace(0.55, 6.0, 600)
I_GRID = np.linspace(64.05, 254.95, 600)


def _normalise(x: np.ndarray, log_p: np.ndarray) -> np.ndarray:
    """Density on ``x`` from unnormalised log values (``-inf``/NaN outside the support)."""
    log_p = np.where(np.isfinite(log_p), log_p, -np.inf)
    p = np.exp(log_p - np.max(log_p))
    return p / np.trapezoid(p, x)


def _mean(x: np.ndarray, p: np.ndarray) -> float:
    return float(np.trapezoid(x * p, x))


def learned_curves(key: PRNGKeyArray, model: jscm.SCM, n: int) -> dict[str, dict[str, np.ndarray]]:
    """Densities (on :data:`T_GRID` / :data:`I_GRID`) and samples of the learned full model.

    Returns ``{"t_given_i": {v: density}, "t_do_i": {v: samples}, "i_given_t": {v: density},
    "i_do_t": {v: samples}, "joint": (len(I_GRID), len(T_GRID)) density}`` with float keys.
    """
    scm = morpho.attributes(model)
    mt, mi = scm.mechanisms["t"], scm.mechanisms["i"]
    log_pt = np.asarray(jax.jit(jax.vmap(lambda t: mt.log_prob(t, {})))(jnp.asarray(T_GRID)))
    log_pi = jax.jit(
        jax.vmap(jax.vmap(lambda i, t: mi.log_prob(i, {"t": t}), (0, None)), (None, 0))
    )
    out: dict[str, Any] = {"t_given_i": {}, "t_do_i": {}, "i_given_t": {}, "i_do_t": {}}
    # (len(T_GRID), len(I_GRID)): log p(i | t) for every pair on the grid.
    lpi = np.asarray(log_pi(jnp.asarray(I_GRID), jnp.asarray(T_GRID)))
    joint = np.exp(np.where(np.isfinite(lpi), lpi + log_pt[:, None], -np.inf))
    out["joint"] = joint.T
    for j, v in enumerate(I_VALUES):
        lp_i = np.asarray(log_pi(jnp.asarray([v]), jnp.asarray(T_GRID)))[:, 0]
        out["t_given_i"][v] = _normalise(T_GRID, log_pt + lp_i)
        s = jscm.sample(jax.random.fold_in(key, j), jscm.do(scm, {"i": jscm.Hard(v)}), n)
        out["t_do_i"][v] = np.asarray(s["t"], float)
    for j, v in enumerate(T_VALUES):
        lp_i = np.asarray(log_pi(jnp.asarray(I_GRID), jnp.asarray([v])))[0]
        out["i_given_t"][v] = _normalise(I_GRID, lp_i)
        s = jscm.sample(jax.random.fold_in(key, 100 + j), jscm.do(scm, {"t": jscm.Hard(v)}), n)
        out["i_do_t"][v] = np.asarray(s["i"], float)
    return out


def true_curves() -> dict[str, dict[float, np.ndarray]]:
    """The same densities for the true SCM of eq. (7).

    Interventional ones are in closed form: ``p(t | do(i)) = p(t)`` and
    ``p(i | do(t = v)) = p(i | t = v)``.
    """
    log_pt = true_log_p_t(T_GRID)
    out: dict[str, dict[float, np.ndarray]] = {k: {} for k in ("t_given_i", "t_do_i", "i_do_t")}
    for v in I_VALUES:
        out["t_given_i"][v] = _normalise(T_GRID, log_pt + true_log_p_i_given_t(T_GRID, v))
        out["t_do_i"][v] = _normalise(T_GRID, log_pt)
    for v in T_VALUES:
        out["i_do_t"][v] = _normalise(I_GRID, true_log_p_i_given_t(v, I_GRID))
    return out


def conditioning_metrics(learned: Mapping, truth: Mapping) -> dict[str, Any]:
    """Means of every curve, learned against true, and the gap between conditioning and intervening.

    Means of sampled curves are sample means.
    """
    m: dict[str, Any] = {}
    for v in I_VALUES:
        m[f"i={v:g}"] = {
            "mean_t_given_i": _mean(T_GRID, learned["t_given_i"][v]),
            "true_mean_t_given_i": _mean(T_GRID, truth["t_given_i"][v]),
            "mean_t_do_i": float(np.mean(learned["t_do_i"][v])),
            "true_mean_t_do_i": _mean(T_GRID, truth["t_do_i"][v]),
        }
    for v in T_VALUES:
        m[f"t={v:g}"] = {
            "mean_i_given_t": _mean(I_GRID, learned["i_given_t"][v]),
            "mean_i_do_t": float(np.mean(learned["i_do_t"][v])),
            "true_mean_i_do_t": _mean(I_GRID, truth["i_do_t"][v]),
        }
    cond = [m[f"i={v:g}"]["mean_t_given_i"] for v in I_VALUES]
    do = [m[f"i={v:g}"]["mean_t_do_i"] for v in I_VALUES]
    m["spread_mean_t_given_i"] = float(max(cond) - min(cond))
    m["spread_mean_t_do_i"] = float(max(do) - min(do))
    m["max_abs_i_do_t_minus_i_given_t"] = float(
        max(abs(m[f"t={v:g}"]["mean_i_do_t"] - m[f"t={v:g}"]["mean_i_given_t"]) for v in T_VALUES)
    )
    return m


def _violin(
    ax, at: float, grid: np.ndarray, dens: np.ndarray, half: float, side: int, vertical: bool,
    **style,
) -> None:  # fmt: skip
    """One half of a violin on ``side`` (+1 / -1) of the line ``at``.

    ``dens`` (on ``grid``) is scaled to ``half`` at its peak.
    """
    w = side * half * dens / max(float(np.max(dens)), 1e-300)
    if vertical:  # violin along y (the grid), centred at x = at
        ax.fill_betweenx(grid, at, at + w, **style)
    else:
        ax.fill_between(grid, at, at + w, **style)


def _kde(samples: np.ndarray, grid: np.ndarray) -> np.ndarray:
    samples = samples[np.isfinite(samples)]
    return stats.gaussian_kde(samples)(grid)


def plot_conditioning(learned: Mapping, path: Path) -> None:
    """Fig. A.6: the learned joint ``p(t, i)`` as contours, and split violins at each value.

    Conditioning is on one side of each violin, intervening on the other.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), sharex=True, sharey=True)
    cond = dict(color="tab:orange", alpha=0.7, lw=0)
    inter = dict(color="tab:blue", alpha=0.7, lw=0)
    joint = learned["joint"]
    levels = np.quantile(joint[joint > joint.max() * 1e-3], [0.3, 0.6, 0.85])
    for ax in axes:
        ax.contour(T_GRID, I_GRID, joint, levels=np.unique(levels), colors="0.6", linewidths=0.8)
        ax.set_xlabel("thickness t (px)")
        ax.set_xlim(0.5, 5.5)
        ax.set_ylim(50, 270)
    ax = axes[0]
    for v in I_VALUES:
        _violin(ax, v, T_GRID, learned["t_given_i"][v], 25.0, +1, False, **cond)
        _violin(ax, v, T_GRID, _kde(learned["t_do_i"][v], T_GRID), 25.0, -1, False, **inter)
        ax.axhline(v, color="k", lw=0.5)
    ax.set_title("p(t | i) (above) vs p(t | do(i)) (below)")
    ax.set_ylabel("intensity i (grey level)")
    ax = axes[1]
    for v in T_VALUES:
        _violin(ax, v, I_GRID, learned["i_given_t"][v], 0.4, -1, True, **cond)
        _violin(ax, v, I_GRID, _kde(learned["i_do_t"][v], I_GRID), 0.4, +1, True, **inter)
        ax.axvline(v, color="k", lw=0.5)
    ax.set_title("p(i | t) (left) vs p(i | do(t)) (right)")
    axes[1].legend(
        handles=[Patch(**cond, label="conditioning"), Patch(**inter, label="intervening")],
        loc="lower right",
        fontsize=8,
    )
    fig.suptitle("Full model: conditioning vs intervening (Fig. A.6)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def conditioning_vs_intervening(
    key: PRNGKeyArray, model: jscm.SCM, n: int, path: Path | None = None
) -> dict[str, Any]:
    """Fig. A.6 for a trained full model (an SCM of :func:`jcausal.deepscm.morpho.model`).

    Returns the metrics (see :func:`conditioning_metrics`) and, if ``path`` is given, writes the
    figure.
    """
    learned = learned_curves(key, model, n)
    metrics = conditioning_metrics(learned, true_curves())
    if path is not None:
        plot_conditioning(learned, path)
    return metrics


__all__ = [
    "I_VALUES",
    "T_VALUES",
    "conditioning_metrics",
    "conditioning_vs_intervening",
    "learned_curves",
    "plot_conditioning",
    "true_curves",
]
