"""Deep SCM experiment, sample quality and the conditional figures (Figs. A.3 and 4, left).

* :func:`sample_quality` — are the models' random samples digits? A classifier trained on the
  real training units (:mod:`jcausal.metrics.digits`) scores real test units, each model's
  samples from its prior ``z ~ N(0, I)``, and samples whose ``z`` comes from an *ex-post*
  Gaussian mixture fitted to the encoder's posterior means on training units (the
  aggregate posterior; Ghosh et al. 2020). The gap between the last two measures how much of
  the samples' poor quality is the prior/posterior mismatch of a small VAE.
* :func:`plot_conditional_grid` — Fig. A.3: one shared ``z`` per model, images over a grid of
  thickness (columns) and intensity (rows).
* :func:`plot_trajectories` — Fig. 4: counterfactual trajectories of two test units under
  ``do(t)`` and ``do(i)``, over the model's ``p(t, i)``, with their images.
"""

from __future__ import annotations

from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from .. import scm as jscm
from ..deepscm import morpho
from ..metrics import digits as dq

GRID_T = (1.0, 2.0, 3.0, 4.0, 5.0)
GRID_I = (64.0, 112.0, 160.0, 208.0, 255.0)
TRAJ_T = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0)
TRAJ_I = (64.0, 96.0, 128.0, 160.0, 192.0, 224.0, 255.0)


@eqx.filter_jit
def _decode(image, parents, z, u):
    """``x = f_X(z, u; pa)`` per unit, through the image mechanism's own ``forward``."""
    return jax.vmap(lambda p, zi, ui: image.forward(p, {"z": zi, "u": ui}))(parents, z, u)


@eqx.filter_jit
def _posterior_means(image, x, parents):
    return jax.vmap(lambda xi, p: image.posterior(xi, p).loc)(x, parents)


def ex_post_prior(scm, train: dict, n: int = 4000, components: int = 10, seed: int = 0):
    """A Gaussian mixture fitted to the encoder's posterior means of ``n`` training units.

    Args:
        scm: a trained Morpho-MNIST SCM.
        train: training units (``t``, ``i``, ``x``).
        n: units used for the fit.
        components: mixture components (full covariances).
        seed: the mixture's initialisation.

    Returns:
        a fitted ``sklearn.mixture.GaussianMixture`` over the latent.
    """
    from sklearn.mixture import GaussianMixture

    image = scm.mechanisms["x"]
    x = jnp.asarray(train["x"][:n], jnp.float32) + 0.5  # the middle of each grey level's bin
    pa = {p: jnp.asarray(train[p][:n]) for p in image.parents}
    mu = np.concatenate(
        [
            np.asarray(
                _posterior_means(image, x[a : a + 500], {k: v[a : a + 500] for k, v in pa.items()})
            )
            for a in range(0, len(x), 500)
        ]
    ).astype(np.float64)  # float32 covariances fail numpy's PSD check when sampled
    # At least ~50 points per component, so each full covariance is well determined.
    k = max(1, min(components, len(mu) // 50))
    return GaussianMixture(k, covariance_type="full", reg_covar=1e-4, random_state=seed).fit(mu)


def samples(key, scm, n: int, prior=None) -> dict[str, np.ndarray]:
    """``n`` units ``(t, i, x)`` from the SCM; ``z`` from ``prior`` (a fitted mixture) if given.

    Without ``prior`` this is the engine's ancestral sampling (``jc.sample``). With it, ``t``
    and ``i`` still come from the SCM and the pixel noise from ``N(0, 1)``; only the latent is
    drawn from the mixture.
    """
    if prior is None:
        s = jscm.sample(key, scm, n)
        return {k: np.asarray(v, float) for k, v in s.items()}
    ka, ku = jax.random.split(key)
    s = jscm.sample(ka, morpho.attributes(scm), n)
    image = scm.mechanisms["x"]
    seed = int(jax.random.randint(ku, (), 0, 2**31 - 1))
    z, _ = prior.sample(n)
    z = np.random.default_rng(seed).permutation(z)  # sklearn returns them grouped by component
    u = jax.random.normal(ku, (n, *image.image_shape), jnp.float32)
    x = _decode(image, {p: s[p] for p in image.parents}, jnp.asarray(z, jnp.float32), u)
    return {
        "t": np.asarray(s["t"], float),
        "i": np.asarray(s["i"], float),
        "x": np.asarray(x, float),
    }


def sample_quality(
    key, models: dict, train: dict, test: dict, n: int = 1000, classifier_steps: int = 2000
) -> tuple[dict, dict]:
    """Classifier scores of real test units and of each model's samples (prior and ex-post).

    Args:
        key: ``jax.random`` key.
        models: ``{kind: trained SCM}``.
        train: training units with ``label`` (the classifier's training set).
        test: test units with ``label``.
        n: samples per model and prior.
        classifier_steps: training steps of the classifier.

    Returns:
        ``(metrics, images)``: ``metrics["real_test"]`` and ``metrics[kind]["prior"]`` /
        ``["ex_post"]`` as in :func:`jcausal.metrics.digits.sample_quality`, and the first
        images of each set for figures.
    """
    kc, ks = jax.random.split(key)
    clf = dq.train_digit_classifier(train["x"], train["label"], kc, steps=classifier_steps)
    metrics = {"real_test": dq.sample_quality(clf, test["x"][:n], test["label"][:n])}
    images = {}
    for j, (kind, scm) in enumerate(models.items()):
        k = jax.random.fold_in(ks, j)
        prior = ex_post_prior(scm, train)
        metrics[kind] = {}
        for name, p in (("prior", None), ("ex_post", prior)):
            s = samples(k, scm, n, p)
            metrics[kind][name] = dq.sample_quality(clf, s["x"])
            images[f"{kind}, z ~ {'N(0, I)' if p is None else 'ex-post mixture'}"] = s["x"][:16]
    return metrics, images


def plot_sample_sets(images: dict, real: np.ndarray, metrics: dict, path: Path) -> None:
    """Rows of 16 images: real test units, then each model's samples (prior / ex-post)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("real test", real[:16], metrics["real_test"]["mean_top_prob"])]
    for label, x in images.items():
        kind, prior = label.split(", z ~ ")
        name = "prior" if prior == "N(0, I)" else "ex_post"
        rows.append((label, x, metrics[kind][name]["mean_top_prob"]))
    fig, axes = plt.subplots(len(rows), 16, figsize=(16 * 0.75, len(rows) * 0.9))
    axes = np.atleast_2d(axes)
    for r, (label, x, top) in enumerate(rows):
        for c in range(16):
            ax = axes[r, c]
            ax.imshow(np.clip(x[c], 0, 255), cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(f"{label}\ntop-p {top:.2f}", fontsize=5, rotation=0, ha="right")
    fig.suptitle(
        "samples vs real digits (top-p: classifier's mean top-class probability)", fontsize=8
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_conditional_grid(key, models: dict, path: Path) -> dict[str, np.ndarray]:
    """Fig. A.3: per model, one shared latent ``z``, thickness across and intensity down.

    Returns:
        per model, the ``(len(GRID_I), len(GRID_T), 28, 28)`` decoder-mean images drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nt, ni = len(GRID_T), len(GRID_I)
    t, i = np.meshgrid(GRID_T, GRID_I)  # rows: intensity; columns: thickness
    fig, axes = plt.subplots(ni, (nt + 1) * len(models), figsize=(1.0 * (nt + 1) * len(models), ni))
    axes = np.atleast_2d(axes)
    drawn = {}
    for m, (kind, scm) in enumerate(models.items()):
        image = scm.mechanisms["x"]
        z = jax.random.normal(jax.random.fold_in(key, m), (image.latent,), jnp.float32)
        pa = {"t": jnp.asarray(t.ravel(), jnp.float32), "i": jnp.asarray(i.ravel(), jnp.float32)}
        zs = jnp.broadcast_to(z, (t.size, image.latent))
        u = jnp.zeros((t.size, *image.image_shape), jnp.float32)  # the decoder's mean image
        x = np.asarray(_decode(image, {p: pa[p] for p in image.parents}, zs, u)).reshape(
            ni, nt, 28, 28
        )
        drawn[kind] = x
        for r in range(ni):
            axes[r, m * (nt + 1) + nt].axis("off")
            for c in range(nt):
                ax = axes[r, m * (nt + 1) + c]
                ax.imshow(np.clip(x[r, c], 0, 255), cmap="gray", vmin=0, vmax=255)
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(
                        f"{kind}\nt={GRID_T[c]:g}" if c == nt // 2 else f"t={GRID_T[c]:g}",
                        fontsize=6,
                    )
                if c == 0:
                    ax.set_ylabel(f"i={GRID_I[r]:g}", fontsize=6)
    fig.suptitle("Fig. A.3: conditional samples, one shared z per model", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def trajectories(scm, test: dict, key, units=(0, 1), num_samples: int = 32) -> dict:
    """Counterfactuals of ``units`` under ``do(t)`` over `TRAJ_T` and ``do(i)`` over `TRAJ_I`.

    Returns ``{unit: {"do_t": {"t", "i", "x"}, "do_i": {...}}}`` (arrays over the grid; the
    image averaged over ``num_samples`` latent draws, eq. 6).
    """
    out = {}
    for u in units:
        obs = {
            k: jnp.asarray(test[k][u : u + 1], jnp.float32 if k == "x" else None)
            for k in ("t", "i", "x")
        }
        out[u] = {}
        for node, grid in (("t", TRAJ_T), ("i", TRAJ_I)):
            rows = {"t": [], "i": [], "x": []}
            for j, v in enumerate(grid):
                cf = jscm.counterfactual(
                    scm, obs, {node: jscm.Hard(v)}, jax.random.fold_in(key, 100 * u + j),
                    num_samples=num_samples,
                )  # fmt: skip
                for k in rows:
                    rows[k].append(np.asarray(jnp.mean(cf[k], axis=0))[0])
            out[u][f"do_{node}"] = {k: np.stack(v) for k, v in rows.items()}
    return out


def plot_trajectories(
    key, scm, test: dict, path: Path, units=(0, 1), num_samples: int = 32
) -> dict:
    """Fig. 4: counterfactual trajectories of two test units over the learned ``p(t, i)``.

    Left: the model's observational ``p(t, i)`` (KDE of 5,000 samples) with each unit's
    counterfactual ``(t, i)`` under ``do(t)`` (the model moves ``i`` with ``t``) and ``do(i)``
    (``t`` stays). Right: the original image and its counterfactual images along each path.
    Returns the trajectories' attributes. ``num_samples`` latent draws per counterfactual.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trj = trajectories(scm, test, jax.random.fold_in(key, 1), units, num_samples)
    s = jscm.sample(jax.random.fold_in(key, 2), morpho.attributes(scm), 5000)
    v = np.stack([np.asarray(s["t"], float), np.asarray(s["i"], float)])
    v = v[:, np.all(np.isfinite(v), axis=0)]
    tg, ig = np.meshgrid(np.linspace(0.5, 6, 80), np.linspace(40, 280, 80))
    dens = stats.gaussian_kde(v)(np.stack([tg.ravel(), ig.ravel()])).reshape(tg.shape)
    cols = max(len(TRAJ_T), len(TRAJ_I)) + 1
    fig = plt.figure(figsize=(4 + 0.85 * cols, 0.9 * 2 * len(units) + 0.6))
    grid = fig.add_gridspec(2 * len(units), cols + 5)
    ax = fig.add_subplot(grid[:, :5])
    ax.contourf(tg, ig, dens, levels=8, cmap="Greys", alpha=0.6)
    colors = ["tab:red", "tab:blue", "tab:green", "tab:purple"]
    for n, u in enumerate(units):
        c = colors[n % len(colors)]
        ax.plot(
            trj[u]["do_t"]["t"],
            trj[u]["do_t"]["i"],
            "-o",
            color=c,
            ms=3,
            label=f"{'AB'[n % 2]}: do(t)",
        )
        ax.plot(
            trj[u]["do_i"]["t"],
            trj[u]["do_i"]["i"],
            "--s",
            color=c,
            ms=3,
            label=f"{'AB'[n % 2]}: do(i)",
        )
        ax.plot(test["t"][u], test["i"][u], "*", color=c, ms=14, mec="k")
        for r, (node, grid_v) in enumerate((("do_t", TRAJ_T), ("do_i", TRAJ_I))):
            row = 2 * n + r
            a0 = fig.add_subplot(grid[row, 5])
            a0.imshow(test["x"][u], cmap="gray", vmin=0, vmax=255)
            a0.set_xticks([])
            a0.set_yticks([])
            a0.set_ylabel(f"{'AB'[n % 2]} {node.replace('_', '(')})", fontsize=6)
            for j, val in enumerate(grid_v):
                a = fig.add_subplot(grid[row, 6 + j])
                a.imshow(np.clip(trj[u][node]["x"][j], 0, 255), cmap="gray", vmin=0, vmax=255)
                a.set_xticks([])
                a.set_yticks([])
                a.set_title(f"{node[-1]}={val:g}", fontsize=5)
    ax.set_xlabel("thickness t (px)")
    ax.set_ylabel("intensity i")
    ax.legend(fontsize=6, loc="lower right")
    ax.set_title("counterfactual trajectories over learned p(t, i)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {
        str(u): {node: {k: trj[u][node][k].tolist() for k in ("t", "i")} for node in trj[u]}
        for u in units
    }


__all__ = [
    "ex_post_prior",
    "plot_conditional_grid",
    "plot_sample_sets",
    "plot_trajectories",
    "sample_quality",
    "samples",
    "trajectories",
]
