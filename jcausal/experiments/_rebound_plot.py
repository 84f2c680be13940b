"""The figure of the rebound experiment (Fig. 4): one row per price equation."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot(path: Path, frees, results: dict, cfg) -> Path:
    """Draw ``fig4_rebound.png``: target price, target demand and energy along the free entry.

    Rows: the value-added conventions in ``results`` (paper's text, authors' code). Columns:
    (a) the target's consumer price (the paper's Fig. 4a), (b) its final demand relative to the
    reference, (c) how far the learned tax leaves the invariant node (demand) and the price from
    their reference, in %, (d) total energy demand ``x_e`` (the paper's Fig. 4b). Dashed: Lie;
    solid: invariant (learned tax); dotted black: reference; grey dash-dot: the ideal tax at the
    headline ``α``. One colour per ``α``; the headline ``α`` is drawn thick.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(results)
    fig, axes = plt.subplots(len(kinds), 4, figsize=(20, 4.4 * len(kinds) + 1.2), squeeze=False)
    for row, kind in zip(axes, kinds, strict=True):
        res = results[kind]
        per_alpha = res["per_alpha"]
        colors = plt.cm.viridis(np.linspace(0.1, 0.85, len(per_alpha)))
        for (key, m), col in zip(per_alpha.items(), colors, strict=True):
            lw = 2.2 if float(key) == cfg.headline_alpha else 1.0
            ref_y = np.asarray(m["target_demand"]["reference"])
            ref_c = np.asarray(m["target_price"]["reference"])
            for ax, lie, inv in (
                (row[0], m["target_price"]["lie"], m["target_price"]["invariant"]),
                (
                    row[1],
                    np.asarray(m["target_demand"]["lie"]) / ref_y,
                    np.asarray(m["target_demand"]["invariant"]) / ref_y,
                ),
                (row[3], m["energy"]["lie"], m["energy"]["invariant"]),
            ):
                ax.plot(frees, lie, "--", color=col, lw=lw, label=f"Lie α={key}")
                ax.plot(frees, inv, "-", color=col, lw=lw, label=f"invariant α={key}")
            dev_y = 100 * (np.asarray(m["target_demand"]["invariant"]) / ref_y - 1)
            dev_c = 100 * (np.asarray(m["target_price"]["invariant"]) / ref_c - 1)
            row[2].plot(frees, dev_y, "-", color=col, lw=lw)
            row[2].plot(frees, dev_c, ":", color=col, lw=lw)
            if float(key) == cfg.headline_alpha:
                row[3].plot(
                    frees,
                    m["energy"]["ideal"],
                    "-.",
                    color="0.45",
                    lw=1.2,
                    label=f"ideal tax α={key}",
                )
        first = next(iter(per_alpha.values()))
        row[0].plot(frees, first["target_price"]["reference"], "k:", lw=2, label="reference")
        row[1].axhline(1.0, color="k", ls=":", lw=2)
        row[2].axhline(0.0, color="k", ls=":", lw=1)
        row[3].plot(frees, first["energy"]["reference"], "k:", lw=2)
        h = per_alpha.get(f"{cfg.headline_alpha:g}", first)
        dmax = max(r["demand_rel_dev_invariant_max"] for r in per_alpha.values())
        pmax = max(r["price_rel_dev_invariant_max"] for r in per_alpha.values())
        row[0].set_title(f"(a) target's unit price paid by buyers\n{res['label']}", fontsize=10)
        row[1].set_title(
            "(b) target's final demand / reference\n"
            f"α={h['alpha']:g}: Lie up to {h['demand_ratio_lie_max']:.0f}×",
            fontsize=10,
        )
        row[2].set_title(
            "(c) learned tax: deviation from reference, %\n"
            f"solid: final demand (invariant node), max {100 * dmax:.1f} %; "
            f"dotted: price, max {100 * pmax:.2f} %",
            fontsize=10,
        )
        row[3].set_title(
            "(d) total energy demand $x_e$\n"
            f"α={h['alpha']:g}: Lie {h['energy_ratio_lie_min']:.2f}–"
            f"{h['energy_ratio_lie_max']:.2f}× reference, invariant "
            f"{h['energy_ratio_invariant_min']:.3f}–{h['energy_ratio_invariant_max']:.3f}×",
            fontsize=10,
        )
        row[1].set_yscale("log")
        if h["energy_ratio_lie_max"] > 3:
            row[3].set_yscale("log")
        row[0].set_ylabel("price (currency per unit output)")
        row[1].set_ylabel("demand ratio")
        row[2].set_ylabel("% of reference")
        row[3].set_ylabel("energy sector gross output")
        for ax in row:
            ax.set_xlabel(f"free parameter A[{cfg.free[0]}, {cfg.free[1]}]")
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    h3, l3 = axes[0, 3].get_legend_handles_labels()
    extra = [(h_, l_) for h_, l_ in zip(h3, l3, strict=True) if l_.startswith("ideal")]
    fig.legend(
        handles + [e[0] for e in extra],
        labels + [e[1] for e in extra],
        loc="lower center",
        ncol=len(labels) + len(extra),
        fontsize=9,
    )
    fig.suptitle(_headline(results, cfg), fontsize=11)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    target = path / "fig4_rebound.png"
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return target


def _headline(results: dict, cfg) -> str:
    """The figure's title: which row the paper's figure is, with the measured numbers."""
    key = f"{cfg.headline_alpha:g}"
    lines = ["Fig. 4 (Besserve & Schölkopf 2022) under both price equations"]
    for kind, res in results.items():
        m = res["per_alpha"].get(key) or next(iter(res["per_alpha"].values()))
        lo, hi = res["reference_energy_range"]
        who = (
            "authors' code (drew the paper's Fig. 4)"
            if kind == "energy_input"
            else "paper's text (not the figure)"
        )
        lines.append(
            f"{who}: reference energy {lo:.3g}–{hi:.3g}; at α={m['alpha']:g} Lie "
            f"{m['energy_ratio_lie_min']:.2f}–{m['energy_ratio_lie_max']:.2f}× it, learned tax "
            f"{m['energy_ratio_invariant_min']:.3f}–{m['energy_ratio_invariant_max']:.3f}×"
        )
    return "\n".join(lines)


__all__ = ["plot"]
