"""Verdicts on the paper's claims and the figure of the Fig. 3a experiment.

See :mod:`.equilibrium_accuracy` for what is measured and how the claims are judged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

METHODS = (("forward", 1.0), ("anderson", 1.0), ("anderson", 2.0))
#: below this, for all three methods, a size is a tie at the float64 rounding floor
TIE_FLOOR = 1e-14
#: floor used only to draw exact zeros on a log axis
PLOT_FLOOR = 1e-20


def label(method: str, beta: float) -> str:
    return "forward" if method == "forward" else f"anderson_beta{beta:g}"


def claims(block: dict) -> dict:
    """The paper's three claims judged on one system's mean errors (see the module docstring).

    Args:
        block: one system's results: ``sizes`` and, per method label, ``mean`` (one per size).

    Returns:
        ``{"C1"|"C2"|"C3": {"verdict", "judged", "holds_at", "ties"}}``: ``verdict`` is
        ``"holds"``, ``"fails"``, ``"partly (k/K)"``, ``"tie"`` (at every size in range the
        ranking is decided below the float64 floor ``TIE_FLOOR``) or ``"n/a"`` (no size in
        the claim's range). "X best" is a tie at a size where X and the best of the others
        are both below the floor; "X worst" where all three are.
    """
    sizes = np.asarray(block["sizes"])
    fwd, b1, b2 = (np.asarray(block[label(*m)]["mean"]) for m in METHODS)
    low = [e < TIE_FLOOR for e in (fwd, b1, b2)]
    best_others = {"fwd": np.minimum(b1, b2), "b2": np.minimum(fwd, b1)}
    tests = {
        "C1": (sizes < 50, fwd < best_others["fwd"], low[0] & (best_others["fwd"] < TIE_FLOOR)),
        "C2": (sizes > 50, b2 < best_others["b2"], low[2] & (best_others["b2"] < TIE_FLOOR)),
        "C3": (np.ones_like(sizes, bool), b1 > np.maximum(fwd, b2), low[0] & low[1] & low[2]),
    }
    out = {}
    for name, (where, ok, tie) in tests.items():
        judged = where & ~tie
        k, total = int((ok & judged).sum()), int(judged.sum())
        if not where.any():
            verdict = "n/a"
        elif total == 0:
            verdict = "tie"
        elif k == total:
            verdict = "holds"
        elif k == 0:
            verdict = "fails"
        else:
            verdict = f"partly ({k}/{total})"
        out[name] = {
            "verdict": verdict,
            "judged": sizes[judged].tolist(),
            "holds_at": sizes[judged & ok].tolist(),
            "ties": sizes[where & tie].tolist(),
        }
    return out


CLAIM_TEXT = {
    "C1": "forward best, n < 50",
    "C2": "β=2 best, n > 50",
    "C3": "β=1 worst",
}


PROTOCOL_TITLES = {
    "ours": "ours: relative ridge, fixed budget",
    "authors": "authors': ridge 1e-4 (abs.), stop at 1e-12",
}
SYSTEM_TITLES = {
    "exiobase": "Exiobase FR/DE/IT/US/GB domestic blocks",
    "pymrio_test": "pymrio test system (regional blocks)",
    "synthetic": "synthetic, col. sums 0.5-0.9",
    "synthetic_near_unit": "synthetic, col. sums 0.85-0.99",
    "synthetic_near_unit_x1e4": "same, final demand x1e4",
}


def plot(path: Path, budget: int, results: dict, verdicts: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocols = list(results)
    systems = list(results[protocols[0]][f"budget_{budget}"])
    fig, axes = plt.subplots(
        len(protocols),
        len(systems),
        figsize=(4.2 * len(systems), 3.9 * len(protocols)),
        sharey=True,
        squeeze=False,
    )
    for i, protocol in enumerate(protocols):
        res = results[protocol][f"budget_{budget}"]
        for ax, sname in zip(axes[i], systems, strict=True):
            block = res[sname]
            sizes = block["sizes"]
            pos = np.arange(len(sizes))
            for method, beta in METHODS:
                m = block[label(method, beta)]
                name = "forward iteration" if method == "forward" else f"Anderson β={beta:g}"
                mean = np.maximum(m["mean"], PLOT_FLOOR)
                (line,) = ax.semilogy(pos, mean, "-o", ms=3, label=name)
                ax.semilogy(
                    pos,
                    np.maximum(m["mean_plus_std"], PLOT_FLOOR),
                    "--",
                    color=line.get_color(),
                    alpha=0.5,
                )
            ax.set_xticks(pos, [str(n) for n in sizes])
            ax.set_title(
                f"{SYSTEM_TITLES.get(sname, sname)}\n{PROTOCOL_TITLES[protocol]}", fontsize=9
            )
            ax.grid(alpha=0.3, which="both")
            v = verdicts[protocol][f"budget_{budget}"][sname]
            text = "\n".join(f"{c} {CLAIM_TEXT[c]}: {v[c]['verdict']}" for c in CLAIM_TEXT)
            ax.text(
                0.02,
                0.02,
                text,
                transform=ax.transAxes,
                fontsize=7,
                va="bottom",
                bbox=dict(boxstyle="round", fc="white", alpha=0.8),
            )
            if i == len(protocols) - 1:
                ax.set_xlabel("SCM dimension n")
        axes[i, 0].set_ylabel(f"relative error, budget {budget}")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.suptitle(
        "Fig. 3a: equilibrium relative error ||x - f(x)|| / ||x|| (solid: mean, dashed: "
        "mean+std), top: our protocol, bottom: the authors'.\nPaper (Exiobase, 200 "
        "iterations): C1 forward best at n < 50, C2 β=2 best at n > 50, C3 β=1 worst; "
        "boxes: the verdict on each system",
        fontsize=11,
    )
    fig.tight_layout()
    target = path / f"fig3a_budget{budget}.png"
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return target


__all__ = ["METHODS", "PLOT_FLOOR", "TIE_FLOOR", "claims", "label", "plot"]
