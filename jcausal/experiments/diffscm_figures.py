"""Diff-SCM experiment, figures (PNG): Fig. 4 sweep, App. H grid, Fig. 3b comparison, App. F."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np


def _img(ax, x, title=None):
    ax.imshow(np.asarray(x).reshape(28, 28), cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=8)


def plot_sweep(rows: list[dict], best: dict, path: Path, n: int) -> None:
    """Fig. 4: CLD (mean and 95% interval of the mean) and effectiveness against ``s``."""
    s = np.array([r["s"] for r in rows])
    m = np.array([r["cld"]["mean"] for r in rows])
    lo = np.array([r["cld"]["ci95"][0] for r in rows])
    hi = np.array([r["cld"]["ci95"][1] for r in rows])
    eff = np.array([r["effectiveness"] for r in rows])
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.fill_between(s, lo, hi, alpha=0.25, color="C0", label="95% interval of the mean")
    ax.plot(s, m, "o-", color="C0", label="CLD (lower is better)")
    ax.axvline(best["s"], color="C0", ls=":", lw=1)
    ax.set_xlabel("guidance scale s")
    positive = s[s > 0]
    if len(positive) and positive.max() / positive.min() > 20:
        # A grid over decades: linear near 0 (s = 0 stays on the axis), logarithmic above.
        ax.set_xscale("symlog", linthresh=float(positive.min()))
        ax.set_xlabel("guidance scale s (symmetric log axis)")
    ax.set_ylabel("CLD")
    ax2 = ax.twinx()
    ax2.plot(s, eff, "s--", color="C3", label="effectiveness (oracle = target)")
    ax2.set_ylabel("effectiveness", color="C3")
    ax2.set_ylim(-0.02, 1.02)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper center")
    ax.set_title(f"Fig. 4 analog: CLD vs s ({n} test digits); best s = {best['s']:g}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_every_class(x, rec, grid, labels, path: Path, s: float) -> None:
    """App. H: factual, reconstruction (s = 0) and the counterfactual under every class."""
    n, k = grid.shape[:2]
    fig, axes = plt.subplots(n, k + 2, figsize=(0.9 * (k + 2), 0.95 * n + 0.3), squeeze=False)
    for i in range(n):
        _img(axes[i, 0], x[i], f"orig. ({labels[i]})" if i == 0 else f"({labels[i]})")
        _img(axes[i, 1], rec[i], "rec." if i == 0 else None)
        for c in range(k):
            _img(axes[i, c + 2], grid[i, c], f"do({c})" if i == 0 else None)
    fig.suptitle(f"Counterfactuals of every class (s = {s:g})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_comparison(x, labels, targets, methods: dict, train_examples, path: Path) -> None:
    """Fig. 3b: factual, each method's counterfactual, and a training digit of the target."""
    n = len(x)
    cols = ["factual", *methods, "train."]
    fig, axes = plt.subplots(n, len(cols), figsize=(1.1 * len(cols), 1.1 * n + 0.3), squeeze=False)
    for i in range(n):
        _img(
            axes[i, 0],
            x[i],
            f"{cols[0]}\n{labels[i]} -> {targets[i]}" if i == 0 else f"{labels[i]} -> {targets[i]}",
        )
        for j, (name, imgs) in enumerate(methods.items()):
            _img(axes[i, j + 1], imgs[i], name if i == 0 else None)
        _img(axes[i, -1], train_examples[i], "train." if i == 0 else None)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_interventional(imgs, path: Path, s: float) -> None:
    """App. F: samples of do(y = k), one row per class; column j shares its noise."""
    k, n = imgs.shape[:2]
    fig, axes = plt.subplots(k, n, figsize=(max(0.8 * n, 4.0), 0.8 * k + 0.3), squeeze=False)
    for i in range(k):
        for j in range(n):
            _img(axes[i, j], imgs[i, j])
        axes[i, 0].set_ylabel(f"do({i})", fontsize=7)
    fig.suptitle(f"Interventional samples (s = {s:g}); columns share their noise", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["plot_comparison", "plot_every_class", "plot_interventional", "plot_sweep"]
