"""Deep SCM experiment, figures: Fig. 3 (interventions), Figs. A.2-A.4 (samples), Fig. 4."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from .. import scm as jscm
from ..data import (
    counterfactual_images,
    measure,
)
from ..deepscm import morpho
from .deepscm_eval import _reconstruct


def plot_interventions(samples: dict, path: Path) -> None:
    """Fig. 3: KDE contours of p(t, i) per model.

    Observational (red, shaded), under do(t := t + 1) (blue) and do(t := t - 0.5) (green, dashed).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(samples)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4), sharex=True, sharey=True)
    axes = np.atleast_1d(axes)
    tg, ig = np.meshgrid(np.linspace(0, 6, 80), np.linspace(40, 280, 80))
    styles = {
        "obs": dict(colors="tab:red", linestyles="solid"),
        "plus1": dict(colors="tab:blue", linestyles="solid"),
        "minus05": dict(colors="tab:green", linestyles="dashed"),
    }
    for ax, name in zip(axes, names, strict=True):
        for lab, v in samples[name].items():
            v = v[np.all(np.isfinite(v), axis=1)][:2000]
            kde = stats.gaussian_kde(v.T)
            dens = kde(np.stack([tg.ravel(), ig.ravel()])).reshape(tg.shape)
            levels = np.quantile(dens[dens > dens.max() * 1e-3], [0.3, 0.6, 0.85])
            levels = np.unique(levels)
            if lab == "obs":
                ax.contourf(tg, ig, dens, levels=[*levels, dens.max()], cmap="Reds", alpha=0.5)
            ax.contour(tg, ig, dens, levels=levels, **styles[lab])
        ax.set_title(name)
        ax.set_xlabel("thickness t (px)")
    axes[0].set_ylabel("intensity i (grey level)")
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color="tab:red", label="observational"),
        Line2D([], [], color="tab:blue", label="do(t := t + 1)"),
        Line2D([], [], color="tab:green", ls="--", label="do(t := t - 0.5)"),
    ]
    axes[-1].legend(handles=handles, loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_samples(key, models: dict, test: dict, units: int, path: Path) -> dict[str, float]:
    """Figs. A.2-A.4: samples from each learned SCM, and test images over their reconstructions.

    Per model, ``units`` samples ``(t, i, x)`` drawn from the learned SCM (top row), and test
    images of eq. (7) (middle row) over their reconstructions (bottom row). Titles give the sampled
    or observed ``(t, i)`` over the ``(t, i)`` measured on the image shown. Returns, per model
    whose image depends on the attributes, the mean absolute difference between sampled
    attributes and those measured on the sampled images (how well samples obey their own
    attributes).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []  # (label, images, attribute titles)
    gaps = {}
    for j, (kind, scm) in enumerate(models.items()):
        s = jscm.sample(jax.random.fold_in(key, j), scm, units)
        x = np.clip(np.asarray(s["x"], float), 0, 255)
        t, i = np.asarray(s["t"], float), np.asarray(s["i"], float)
        m_t, m_i = measure(x)
        if morpho.GRAPHS[kind]["x"]:  # attributes drive the image: measure how well
            gaps[kind] = {
                "sample_mae_thickness": float(np.mean(np.abs(m_t - t))),
                "sample_mae_intensity": float(np.mean(np.abs(m_i - i))),
            }
        rows.append(
            (
                f"{kind}: samples",
                x,
                [f"{a:.1f},{b:.0f}" for a, b in zip(t, i, strict=True)],
                (m_t, m_i),
            )
        )
        batch = {k: jnp.asarray(test[k][:units]) for k in ("t", "i", "x")}
        rec = np.clip(np.asarray(_reconstruct(scm, batch, key)), 0, 255)
        obs = test["x"][:units].astype(float)
        att = [
            f"{a:.1f},{b:.0f}" for a, b in zip(test["t"][:units], test["i"][:units], strict=True)
        ]
        rows.append((f"{kind}: test", obs, att, measure(obs)))
        rows.append((f"{kind}: reconstruction", rec, att, measure(rec)))
    fig, axes = plt.subplots(len(rows), units, figsize=(1.2 * units, 1.45 * len(rows)))
    axes = np.atleast_2d(axes)
    for r, (label, imgs, titles, (m_t, m_i)) in enumerate(rows):
        for c in range(units):
            ax = axes[r, c]
            ax.imshow(imgs[c], cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{titles[c]}\n{m_t[c]:.1f},{m_i[c]:.0f}", fontsize=5)
        axes[r, 0].set_ylabel(label, fontsize=6)
    fig.suptitle("(t, i) given / measured on the image", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return gaps


def plot_counterfactuals(test: dict, cfs: dict, units: int, path: Path) -> dict[str, float]:
    """Fig. 4: per unit, the original and its model counterfactuals over the true ones.

    Model counterfactuals on top, true counterfactuals of eq. (7) at the bottom; titles give the
    measured (t, i). Returns the MAE (grey levels) between model and true counterfactual images.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(cfs)
    cols = 1 + len(labels)
    fig, axes = plt.subplots(2 * units, cols, figsize=(1.5 * cols, 1.75 * 2 * units))
    errs = []
    for u in range(units):
        true = []
        for lab in labels:
            true.append(
                counterfactual_images(
                    test["digit"][u : u + 1], cfs[lab]["t"][u : u + 1], cfs[lab]["i"][u : u + 1]
                )[0].astype(float)
            )
        model = [np.clip(cfs[lab]["x"][u], 0, 255) for lab in labels]
        errs += [np.mean(np.abs(a - b)) for a, b in zip(model, true, strict=True)]
        rows = [
            [test["x"][u].astype(float), *model],
            [test["x"][u].astype(float), *true],
        ]
        for r, row in enumerate(rows):
            m_t, m_i = measure(np.stack(row))
            for c, img in enumerate(row):
                ax = axes[2 * u + r, c]
                ax.imshow(img, cmap="gray", vmin=0, vmax=255)
                ax.set_xticks([])
                ax.set_yticks([])
                head = "original" if c == 0 else labels[c - 1]
                ax.set_title(f"{head}\nt={m_t[c]:.1f} i={m_i[c]:.0f}", fontsize=6)
            axes[2 * u + r, 0].set_ylabel("model" if r == 0 else "true", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {"mae_vs_true_counterfactual": float(np.mean(errs))}
