"""Figures of the modularity experiment: influence maps with NMF footprints, module hybrids."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_influence(maps: np.ndarray, mods, title: str, path: Path) -> None:
    """Every channel's influence map (common scale, titled with its module) and the footprints.

    Args:
        maps: ``(C, H, W)`` influence maps.
        mods: the layer's :class:`jcausal.modularity.Modules`.
        title: the figure's title.
        path: the png to write.
    """
    plt = _pyplot()
    c, r = len(maps), mods.rank
    cols = max(8, r)
    rows = -(-c // cols) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.45 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    vmax = maps.max()
    for j in range(c):
        ax = axes[j // cols, j % cols]
        ax.imshow(maps[j], cmap="magma", vmin=0, vmax=vmax)
        m = mods.assignment[j]
        ax.set_title(f"ch{j} → {'–' if m < 0 else f'M{m}'}", fontsize=7)
    for k in range(r):
        ax = axes[-1, k]
        ax.imshow(mods.footprints[k].reshape(maps.shape[1:]), cmap="viridis")
        ax.set_title(f"module M{k} ({int((mods.assignment == k).sum())} ch)", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_hybrids(rec, don, hyb, title: str, path: Path, labels=None, grey: bool = True) -> None:
    """Rows of receiver, donor and the module hybrids of one pair each.

    Args:
        rec: ``(n, H, W[, 3])`` receivers.
        don: donors, same shape.
        hyb: ``(n, r, H, W[, 3])`` module hybrids.
        title: the figure's title.
        path: the png to write.
        labels: ``r`` column titles of the hybrids (default ``"M<k> from donor"``).
        grey: grey levels in ``[0, 255]`` (digits) rather than RGB in ``[0, 1]`` (scenes).
    """
    plt = _pyplot()
    n, r = hyb.shape[:2]
    labels = labels if labels is not None else [f"M{k} from donor" for k in range(r)]
    fig, axes = plt.subplots(n, r + 2, figsize=(1.3 * (r + 2), 1.4 * n), squeeze=False)
    for p in range(n):
        imgs = [(rec[p], "receiver"), (don[p], "donor")]
        imgs += [(hyb[p, k], labels[k]) for k in range(r)]
        for j, (img, label) in enumerate(imgs):
            ax = axes[p, j]
            if grey:
                ax.imshow(np.clip(img, 0, 255), cmap="gray", vmin=0, vmax=255)
            else:
                ax.imshow(np.clip(img, 0, 1))
            ax.axis("off")
            if p == 0:
                ax.set_title(label, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["plot_hybrids", "plot_influence"]
