"""The figure of the rebound experiment (Fig. 4): one row per price equation."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot(path: Path, frees, results: dict, cfg) -> Path:
    """Draw ``fig4_rebound.png``: target price, target demand and energy along the free entry.

    Rows: the value-added conventions in ``results`` (paper's text, authors' code). Columns:
    (a) the target's consumer price, (b) its final demand relative to the reference (the
    invariant node), (c) total energy demand ``x_e``. Dashed: Lie; solid: invariant (learned
    tax); dotted black: reference; grey dash-dot: the ideal tax at the headline ``α``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(results)
    fig, axes = plt.subplots(len(kinds), 3, figsize=(15, 4.3 * len(kinds)), squeeze=False)
    for row, kind in zip(axes, kinds, strict=True):
        res = results[kind]
        per_alpha = res["per_alpha"]
        colors = plt.cm.viridis(np.linspace(0.1, 0.85, len(per_alpha)))
        for (key, m), col in zip(per_alpha.items(), colors, strict=True):
            bold = float(key) == cfg.headline_alpha
            lw = 2.2 if bold else 1.0
            ref_y = np.asarray(m["target_demand"]["reference"])
            for ax, lie, inv in (
                (row[0], m["target_price"]["lie"], m["target_price"]["invariant"]),
                (
                    row[1],
                    np.asarray(m["target_demand"]["lie"]) / ref_y,
                    np.asarray(m["target_demand"]["invariant"]) / ref_y,
                ),
                (row[2], m["energy"]["lie"], m["energy"]["invariant"]),
            ):
                ax.plot(frees, lie, "--", color=col, lw=lw, label=f"Lie α={key}")
                ax.plot(frees, inv, "-", color=col, lw=lw, label=f"invariant α={key}")
            if bold:
                row[2].plot(
                    frees,
                    m["energy"]["ideal"],
                    "-.",
                    color="0.5",
                    lw=1.2,
                    label=f"ideal tax α={key}",
                )
        first = next(iter(per_alpha.values()))
        row[0].plot(frees, first["target_price"]["reference"], "k:", lw=2, label="reference")
        row[1].axhline(1.0, color="k", ls=":", lw=2, label="reference")
        row[2].plot(frees, first["energy"]["reference"], "k:", lw=2, label="reference")
        h = (
            per_alpha[f"{cfg.headline_alpha:g}"]
            if f"{cfg.headline_alpha:g}" in per_alpha
            else first
        )
        row[0].set_title(f"(a) target's unit price paid by buyers\n{res['label']}", fontsize=10)
        row[1].set_title(
            "(b) target's final demand / reference (invariant node)\n"
            f"α={h['alpha']:g}: invariant within {100 * h['demand_rel_dev_invariant_max']:.1f} %,"
            f" Lie up to {h['demand_ratio_lie_max']:.0f}×",
            fontsize=10,
        )
        row[2].set_title(
            "(c) total energy demand $x_e$\n"
            f"α={h['alpha']:g}: Lie {h['energy_ratio_lie_min']:.2f}–"
            f"{h['energy_ratio_lie_max']:.2f}× reference, invariant "
            f"{h['energy_ratio_invariant_min']:.3f}–{h['energy_ratio_invariant_max']:.3f}×",
            fontsize=10,
        )
        row[1].set_yscale("log")
        if h["energy_ratio_lie_max"] > 3:
            row[2].set_yscale("log")
        row[0].set_ylabel("price (currency per unit output)")
        row[1].set_ylabel("demand ratio")
        row[2].set_ylabel("energy sector gross output")
        for ax in row:
            ax.set_xlabel(f"free parameter A[{cfg.free[0]}, {cfg.free[1]}]")
            ax.grid(alpha=0.3)
        row[2].legend(fontsize=7, ncol=2)
    fig.suptitle(_headline(results, cfg), fontsize=11)
    fig.tight_layout()
    target = path / "fig4_rebound.png"
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def _headline(results: dict, cfg) -> str:
    """The figure's title: which row the paper's figure is, with the measured numbers."""
    key = f"{cfg.headline_alpha:g}"
    parts = []
    for kind, res in results.items():
        m = res["per_alpha"].get(key) or next(iter(res["per_alpha"].values()))
        lo, hi = res["reference_energy_range"]
        who = "authors' code = paper's Fig. 4" if kind == "energy_input" else "paper's text"
        parts.append(
            f"{who}: reference energy {lo:.3g}–{hi:.3g}, Lie at α={m['alpha']:g} "
            f"{m['energy_ratio_lie_min']:.3g}–{m['energy_ratio_lie_max']:.3g}× it"
        )
    return "Fig. 4 under both price equations. " + "; ".join(parts) + "."


__all__ = ["plot"]
