"""The CT-VAE experiment's helpers: the two auxiliary networks and the figures.

* :class:`PairClassifier` — the discriminative baseline: the action from the pair of quantised
  code grids (per-node embedding of both one-hot grids, then an MLP);
* :class:`FactorReader` — a small CNN that reads the factors of an image, trained on the
  generator's labels, used to measure what an intervention changed.
"""

from __future__ import annotations

import math
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from .. import ctvae
from ..data.transitions import action_name
from ..nn import conv_general_dilated


class PairClassifier(eqx.Module):
    """``logits(a | codes(x), codes(y))`` from the two code grids.

    Args:
        grid: latent grid ``(h, w)``.
        num_codebooks: ``C``.
        num_codes: ``K``.
        num_actions: ``A``.
        hidden: width of the MLP.
        key: initialisation key.
    """

    node: eqx.nn.Linear
    mlp: eqx.nn.MLP
    num_codes: int = eqx.field(static=True)

    def __init__(self, grid, num_codebooks, num_codes, num_actions, hidden, *, key):
        k1, k2 = jax.random.split(key)
        n = grid[0] * grid[1]
        self.node = eqx.nn.Linear(2 * num_codebooks * num_codes, 16, key=k1)
        self.mlp = eqx.nn.MLP(n * 16, num_actions, hidden, 2, key=k2)
        self.num_codes = int(num_codes)

    def __call__(self, cx, cy):
        n = cx.shape[0] * cx.shape[1]
        ox = jax.nn.one_hot(cx.reshape(n, -1), self.num_codes).reshape(n, -1)
        oy = jax.nn.one_hot(cy.reshape(n, -1), self.num_codes).reshape(n, -1)
        h = jax.nn.relu(jax.vmap(self.node)(jnp.concatenate([ox, oy], -1)))
        return self.mlp(h.reshape(-1))


def pair_loss(params, batch, key):
    """Cross-entropy of the discriminative baseline (the VAE frozen)."""
    vae, net = params["vae"], params["net"]
    cx = ctvae.batch_codes(vae, batch["x"])
    cy = ctvae.batch_codes(vae, batch["y"])
    logits = jax.vmap(net)(cx, cy)
    lp = jax.nn.log_softmax(logits, -1)
    nll = -jnp.mean(jnp.take_along_axis(lp, batch["a"][:, None], -1))
    return nll, {"acc": jnp.mean(jnp.argmax(logits, -1) == batch["a"])}


class FactorReader(eqx.Module):
    """A CNN giving logits ``(F, max_card)`` of every factor of one image (invalid values -inf)."""

    convs: tuple[eqx.nn.Conv2d, ...]
    head: eqx.nn.MLP
    cardinalities: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, size, cardinalities, *, key):
        k = jax.random.split(key, 4)
        self.convs = (
            eqx.nn.Conv2d(3, 16, 4, stride=2, padding=1, key=k[0]),
            eqx.nn.Conv2d(16, 32, 4, stride=2, padding=1, key=k[1]),
            eqx.nn.Conv2d(32, 32, 4, stride=2, padding=1, key=k[2]),
        )
        m = max(cardinalities)
        side = size // 8
        self.head = eqx.nn.MLP(32 * side * side, len(cardinalities) * m, 64, 1, key=k[3])
        self.cardinalities = tuple(int(c) for c in cardinalities)

    def __call__(self, image):
        return self.batch(image[None])[0]

    def batch(self, images: jax.Array) -> jax.Array:
        """Logits ``(B, F, max_card)`` of a batch of images ``(B, S, S, 3)``.

        The convolutions are equinox ``Conv2d`` modules (the parameters, so checkpoints
        restore) run channel-last through :func:`jcausal.nn.conv_general_dilated`: the same
        function as equinox's channel-first layers (tested in float64, values and gradients),
        and fast inside ``fit``'s compiled loop on XLA:CPU, where equinox's layers took 283 ms
        per step against 16 ms as a bare step.

        Raises:
            ValueError: ``images`` is not ``(B, S, S, 3)`` with the reader's side ``S``.
        """
        side = 8 * math.isqrt(self.head.in_size // self.convs[-1].out_channels)
        if jnp.ndim(images) != 4 or tuple(jnp.shape(images)[1:]) != (side, side, 3):
            raise ValueError(
                f"FactorReader reads images of shape (batch, {side}, {side}, 3), got "
                f"{tuple(jnp.shape(images))}"
            )
        h = images
        for conv in self.convs:
            kernel = jnp.transpose(conv.weight, (2, 3, 1, 0))  # (O, I, kh, kw) -> HWIO
            pads = [tuple(p) for p in conv.padding]
            h = conv_general_dilated(
                h, kernel, conv.stride, pads, dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            h = jax.nn.relu(h + conv.bias[:, 0, 0])
        # equinox's head saw the channel-first map flattened: (C, h, w) order.
        flat = jnp.transpose(h, (0, 3, 1, 2)).reshape(h.shape[0], math.prod(h.shape[1:]))
        card = np.asarray(self.cardinalities)
        valid = np.arange(card.max())[None] < card[:, None]
        out = jax.vmap(self.head)(flat).reshape(-1, *valid.shape)
        return jnp.where(valid, out, -jnp.inf)


def factor_loss(reader, batch, key):
    """Summed cross-entropy over the factors (batch from ``Shapes.sample_scenes``)."""
    logits = reader.batch(batch["image"])
    lp = jax.nn.log_softmax(logits, -1)
    lp = jnp.where(jnp.isfinite(lp), lp, 0.0)
    nll = -jnp.take_along_axis(lp, batch["factors"][..., None], -1)
    acc = jnp.mean(jnp.argmax(logits, -1) == batch["factors"])
    return jnp.mean(jnp.sum(nll, axis=(1, 2))), {"acc": acc}


# ----------------------------------------------------------------------------------------------
# figures


def plot_interventions(model, shapes, test, repeats: int, path: Path) -> None:
    """Fig. 5 analog: one row per factor, the same action applied ``1..repeats`` times."""
    x0 = jnp.asarray(test["x"][:1])
    f0 = np.asarray(test["fx"][0])
    rows = []
    for f in range(shapes.num_factors):
        # Raise the factor, or lower it when it starts at its maximum.
        a = 2 * f + int(f0[f] == shapes.cardinalities[f] - 1)
        seq = ctvae.repeat_action(model, x0, jnp.array([a]), repeats)
        rows.append((a, [np.asarray(x0[0])] + [np.asarray(s[0]) for s in seq]))
    fig, axes = plt.subplots(len(rows), repeats + 1, figsize=(1.3 * (repeats + 1), 1.3 * len(rows)))
    for r, (a, imgs) in enumerate(rows):
        for c, img in enumerate(imgs):
            ax = axes[r, c]
            ax.imshow(np.clip(img, 0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(action_name(a, shapes.names), fontsize=8)
            if r == 0:
                ax.set_title("input" if c == 0 else f"x{c}", fontsize=8)
    fig.suptitle("same action applied i times (do(a) through the SCM)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_graphs(ct, vae, shapes, test, path: Path, units: int = 64) -> None:
    """Fig. 6 analog: masks (h x w) and adjacencies (N x N), averaged over test units.

    One column per factor (its raise action); the Bernoullis' modes.
    """
    cx = jax.vmap(vae.codes)(jnp.asarray(test["x"][:units]))
    acts = [2 * f for f in range(shapes.num_factors)]

    def one(c, a):
        g = ct.graph(ct.features(c), a, None)
        return g["mask"], g["adjacency"]

    fig, axes = plt.subplots(2, len(acts), figsize=(2.2 * len(acts), 4.6))
    for j, a in enumerate(acts):
        mask, adj = jax.vmap(lambda c, a=a: one(c, a))(cx)
        axes[0, j].imshow(np.asarray(mask.mean(0)).reshape(ct.grid), vmin=0, vmax=1, cmap="gray")
        axes[0, j].set_title(f"mask {action_name(a, shapes.names)}", fontsize=8)
        axes[1, j].imshow(np.asarray(adj.mean(0)), vmin=0, vmax=1, cmap="gray")
        axes[1, j].set_title("adjacency", fontsize=8)
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_accuracy(table: dict, path: Path) -> None:
    """Per-factor accuracy against the factor's frequency in the test transitions."""
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    names = [n for n, v in table["per_factor"].items() if v["ct_vae_factor_acc"] is not None]
    freq = [table["per_factor"][n]["frequency"] for n in names]
    for key, label, m in [
        ("ct_vae_factor_acc", "CT-VAE factor acc.", "o"),
        ("ct_vae_action_acc", "CT-VAE action acc.", "s"),
        ("discriminative_factor_acc", "discriminative factor acc.", "^"),
    ]:
        ax.scatter(freq, [table["per_factor"][n][key] for n in names], marker=m, label=label)
    # Labels alternate above and below their points in order of frequency: factors of close
    # frequency and accuracy (background, colour) would otherwise print over each other.
    for i, j in enumerate(np.argsort(freq)):
        n = names[j]
        ax.annotate(n, (freq[j], table["per_factor"][n]["ct_vae_factor_acc"]), fontsize=7,
                    xytext=(2, 6 if i % 2 == 0 else -12), textcoords="offset points")  # fmt: skip
    ax.set_xlabel("frequency of the factor's transitions")
    ax.set_ylabel("accuracy (held-out transitions)")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_reconstructions(vae, test, path: Path, n: int = 8) -> None:
    """Test images (top) and their MCQ-VAE reconstructions through the codes (bottom)."""
    x = jnp.asarray(test["x"][:n])
    r = jax.vmap(lambda i: vae.decode_codes(vae.codes(i)))(x)
    fig, axes = plt.subplots(2, n, figsize=(1.2 * n, 2.6))
    for j in range(n):
        for i, img in enumerate((x[j], r[j])):
            axes[i, j].imshow(np.clip(np.asarray(img), 0, 1))
            axes[i, j].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


__all__ = [
    "FactorReader",
    "PairClassifier",
    "factor_loss",
    "pair_loss",
    "plot_accuracy",
    "plot_graphs",
    "plot_interventions",
    "plot_reconstructions",
]
