"""The networks counterfactual metrics are measured with: class autoencoders and a latent VAE.

IM1 and IM2 (Van Looveren & Klaise 2021, used by Diff-SCM App. G) compare how well an image is
reconstructed by an autoencoder trained on ONE class and by one trained on ALL classes; CLD
(Diff-SCM Sec. 5.2) compares Gaussian latent posteriors of a VAE. This module holds those
networks and trains them with the one loop, :func:`jcausal.train.fit` (checkpoints, resume).

Architectures (equinox, float32, one image ``(28, 28, 1)`` in ``[0, 1]`` per call):

* :class:`ClassAE`, the per-class autoencoder of Van Looveren & Klaise's MNIST experiments (as
  re-run by Schut et al. 2021, ``uces/im_evaluation.py``): 3x3 convolutions 16 - pool - 8 -
  pool - 8 (a ``7 x 7 x 8`` code), decoded by 8 - up - 16 - up - 1; mean squared error, Adam.
* :class:`AllAE`, their all-class autoencoder: 16 - 16 - pool - 1 (a ``14 x 14`` code), decoded
  by 16 - up - 16 - 1. Its encoder is also the prototype encoder of the Van Looveren baseline.
* :class:`VAE`, a convolutional VAE with a 20-dimensional diagonal-Gaussian latent (the size
  of Diff-SCM Fig. 3a); Bernoulli likelihood of the grey levels, standard normal prior.

The class autoencoders are a plain Python list trained one after the other, never vmapped
over stacked models: on XLA:CPU vmapping 11 conv models measured 9x slower than the list.
Each class's images are tiled to the size of the largest class so that all ten runs share one
compiled training step (``fit`` caches programs by data layout); within a run this repeats a
few images of the smaller classes once more per epoch.
"""

from __future__ import annotations

import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ..train import fit

CLASSES = 10
LATENT = 20
F32 = jnp.float32


def _chw(x: Array) -> Array:
    """(28, 28, 1) HWC image -> (1, 28, 28) CHW for equinox convolutions, as float32."""
    return jnp.moveaxis(jnp.asarray(x, F32), -1, 0)


def _up(h: Array) -> Array:
    """Nearest-neighbour 2x upsampling of a CHW map."""
    return jnp.repeat(jnp.repeat(h, 2, axis=-2), 2, axis=-1)


def _conv(cin: int, cout: int, key: PRNGKeyArray) -> eqx.nn.Conv2d:
    return eqx.nn.Conv2d(cin, cout, 3, padding=1, key=key, dtype=F32)


class ClassAE(eqx.Module):
    """Per-class convolutional autoencoder; ``ae(x (28, 28, 1)) -> (28, 28, 1)``."""

    enc: tuple[eqx.nn.Conv2d, ...]
    dec: tuple[eqx.nn.Conv2d, ...]

    def __init__(self, key: PRNGKeyArray):
        k = jax.random.split(key, 6)
        self.enc = (_conv(1, 16, k[0]), _conv(16, 8, k[1]), _conv(8, 8, k[2]))
        self.dec = (_conv(8, 8, k[3]), _conv(8, 16, k[4]), _conv(16, 1, k[5]))

    def encode(self, x: Float[Array, "28 28 1"]) -> Float[Array, "8 7 7"]:
        pool = eqx.nn.MaxPool2d(2, 2)
        h = pool(jax.nn.relu(self.enc[0](_chw(x))))  # 16 x 14 x 14
        h = pool(jax.nn.relu(self.enc[1](h)))  # 8 x 7 x 7
        return self.enc[2](h)

    def decode(self, z: Float[Array, "8 7 7"]) -> Float[Array, "28 28 1"]:
        h = _up(jax.nn.relu(self.dec[0](z)))  # 8 x 14 x 14
        h = _up(jax.nn.relu(self.dec[1](h)))  # 16 x 28 x 28
        return jnp.moveaxis(self.dec[2](h), 0, -1)

    def __call__(self, x: Float[Array, "28 28 1"]) -> Float[Array, "28 28 1"]:
        return self.decode(self.encode(x))


class AllAE(eqx.Module):
    """All-class convolutional autoencoder; ``ae(x)`` reconstructs, ``ae.encode(x)`` is (196,)."""

    enc: tuple[eqx.nn.Conv2d, ...]
    dec: tuple[eqx.nn.Conv2d, ...]

    def __init__(self, key: PRNGKeyArray):
        k = jax.random.split(key, 6)
        self.enc = (_conv(1, 16, k[0]), _conv(16, 16, k[1]), _conv(16, 1, k[2]))
        self.dec = (_conv(1, 16, k[3]), _conv(16, 16, k[4]), _conv(16, 1, k[5]))

    def code(self, x: Float[Array, "28 28 1"]) -> Float[Array, "1 14 14"]:
        h = jax.nn.relu(self.enc[0](_chw(x)))
        h = eqx.nn.MaxPool2d(2, 2)(jax.nn.relu(self.enc[1](h)))  # 16 x 14 x 14
        return self.enc[2](h)

    def encode(self, x: Float[Array, "28 28 1"]) -> Float[Array, " 196"]:
        """The flattened ``14 x 14`` code (the prototype space of the Van Looveren baseline)."""
        return self.code(x).reshape(-1)

    def decode(self, z: Float[Array, "1 14 14"]) -> Float[Array, "28 28 1"]:
        h = _up(jax.nn.relu(self.dec[0](z.reshape(1, 14, 14))))
        h = jax.nn.relu(self.dec[1](h))
        return jnp.moveaxis(self.dec[2](h), 0, -1)

    def __call__(self, x: Float[Array, "28 28 1"]) -> Float[Array, "28 28 1"]:
        return self.decode(self.code(x))


class VAE(eqx.Module):
    """Convolutional VAE with a ``latent``-dimensional diagonal Gaussian posterior.

    Encoder: 4x4 stride-2 convolutions of ``width`` and ``2 width`` channels, a 128-unit layer,
    the mean and log-variance heads; the decoder mirrors it with transposed convolutions.

    ``vae.encode(x (28, 28, 1)) -> (mean (latent,), logvar (latent,))``; ``vae.decode(z)`` gives
    the Bernoulli logits ``(28, 28, 1)`` of the grey levels.
    """

    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    hidden: eqx.nn.Linear
    head: eqx.nn.Linear
    up_in: eqx.nn.Linear
    up_fc: eqx.nn.Linear
    deconv1: eqx.nn.ConvTranspose2d
    deconv2: eqx.nn.ConvTranspose2d
    latent: int = eqx.field(static=True)
    width: int = eqx.field(static=True)

    def __init__(self, key: PRNGKeyArray, latent: int = LATENT, width: int = 16):
        k = jax.random.split(key, 8)
        self.latent = latent
        self.width = width
        w = width
        self.conv1 = eqx.nn.Conv2d(1, w, 4, stride=2, padding=1, key=k[0], dtype=F32)  # -> 14
        self.conv2 = eqx.nn.Conv2d(w, 2 * w, 4, stride=2, padding=1, key=k[1], dtype=F32)  # -> 7
        self.hidden = eqx.nn.Linear(2 * w * 7 * 7, 128, key=k[2], dtype=F32)
        self.head = eqx.nn.Linear(128, 2 * latent, key=k[3], dtype=F32)
        self.up_in = eqx.nn.Linear(latent, 128, key=k[4], dtype=F32)
        self.up_fc = eqx.nn.Linear(128, 2 * w * 7 * 7, key=k[5], dtype=F32)
        self.deconv1 = eqx.nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1, key=k[6], dtype=F32)
        self.deconv2 = eqx.nn.ConvTranspose2d(w, 1, 4, stride=2, padding=1, key=k[7], dtype=F32)

    def encode(self, x: Float[Array, "28 28 1"]) -> tuple[Float[Array, " d"], Float[Array, " d"]]:
        h = jax.nn.relu(self.conv1(_chw(x)))
        h = jax.nn.relu(self.conv2(h))
        h = jax.nn.relu(self.hidden(h.reshape(-1)))
        mean, logvar = jnp.split(self.head(h), 2)
        return mean, logvar

    def decode(self, z: Float[Array, " d"]) -> Float[Array, "28 28 1"]:
        h = jax.nn.relu(self.up_in(jnp.asarray(z, F32)))
        h = jax.nn.relu(self.up_fc(h)).reshape(2 * self.width, 7, 7)
        h = jax.nn.relu(self.deconv1(h))
        return jnp.moveaxis(self.deconv2(h), 0, -1)

    def __call__(self, x: Float[Array, "28 28 1"]) -> tuple[Float[Array, " d"], Float[Array, " d"]]:
        return self.encode(x)


class Autoencoders(eqx.Module):
    """The eleven autoencoders of IM1/IM2: one per class and one on all classes.

    Attributes:
        per_class: ``CLASSES`` callables, image ``(28, 28, 1)`` -> reconstruction, the ``k``-th
            trained on class ``k`` only.
        all: the autoencoder trained on every class (an :class:`AllAE` when trained here).
    """

    per_class: tuple
    all: eqx.Module

    def reconstruct_all(
        self, x: Float[Array, "B 28 28 1"]
    ) -> tuple[Float[Array, "K B 28 28 1"], Float[Array, "B 28 28 1"]]:
        """Reconstructions of ``x`` by every class autoencoder ``(K, B, ...)`` and by the all-AE.

        A list comprehension, not a vmap over stacked models (see the module docstring).
        """
        per = jnp.stack([jax.vmap(ae)(x) for ae in self.per_class])
        return per, jax.vmap(self.all)(x)


# ----------------------------------------------------------------------------------------------
# training


def check_images(images, name: str = "images") -> np.ndarray:
    """``images`` as float32 ``(N, 28, 28, 1)`` in ``[0, 1]``, or a ValueError naming the fault."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[1:] != (28, 28, 1):
        raise ValueError(
            f"{name} must be (N, 28, 28, 1) float in [0, 1] (NHWC); got shape {x.shape}. "
            "From load_digit_split: images / 255.0 and [..., None]"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be float in [0, 1], got dtype {x.dtype}; divide by 255")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contain NaN or inf ({int(np.sum(~np.isfinite(x)))} values)")
    if x.size and (x.min() < -1e-6 or x.max() > 1 + 1e-6):
        raise ValueError(
            f"{name} must lie in [0, 1]; got range [{x.min():.3g}, {x.max():.3g}] "
            "(grey levels? divide by 255)"
        )
    return x.astype(np.float32)


def check_labels(labels, n: int, name: str = "labels", classes: int = CLASSES) -> np.ndarray:
    """Integer class labels ``(n,)`` in ``0..classes-1``, or a ValueError naming the fault."""
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError(f"{name} must be integer classes, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise ValueError(
            f"{name} must be classes in 0..{classes - 1}; got values in [{y.min()}, {y.max()}]"
        )
    return y.astype(np.int32)


def _mse_loss(model, batch, key):
    del key
    rec = jax.vmap(model)(batch["x"])
    return jnp.mean((rec - batch["x"]) ** 2)


def _vae_loss(model: VAE, batch, key):
    x = batch["x"]
    mean, logvar = jax.vmap(model.encode)(x)
    eps = jax.random.normal(key, mean.shape, F32)
    z = mean + jnp.exp(0.5 * logvar) * eps
    logits = jax.vmap(model.decode)(z)
    # Bernoulli likelihood of grey levels in [0, 1] (the usual MNIST VAE), summed over pixels.
    nll = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, x), axis=(1, 2, 3))
    kl = 0.5 * jnp.sum(jnp.exp(logvar) + mean**2 - 1.0 - logvar, axis=-1)
    return jnp.mean(nll + kl), {"nll": jnp.mean(nll), "kl": jnp.mean(kl)}


def _subdir(checkpoint_dir, name: str):
    return None if checkpoint_dir is None else os.path.join(os.fspath(checkpoint_dir), name)


def train_autoencoders(
    images: Float[np.ndarray, "N 28 28 1"],
    labels: Int[np.ndarray, " N"],
    *,
    key: PRNGKeyArray,
    steps: int = 1000,
    all_steps: int | None = None,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    checkpoint_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> Autoencoders:
    """Train the ten class autoencoders and the all-class one with :func:`jcausal.train.fit`.

    Defaults follow Van Looveren & Klaise's MNIST setup as re-run by Schut et al. 2021 (mean
    squared error, Adam at rate 1e-3, batch 128; they trained 30 epochs per class and 4 on all
    classes of full MNIST). On a step budget ``learning_rate=3e-3, batch_size=64`` does better:
    measured on class 0 of the embedded digits (350 images, test squared error summed over
    pixels), 300 steps reach 9.3 at (1e-3, 128) and 7.1 at (3e-3, 64), in 0.43x the time.

    Args:
        images: ``(N, 28, 28, 1)`` float in ``[0, 1]``.
        labels: ``(N,)`` classes ``0..9``; every class must occur.
        key: initialisation and batching.
        steps: steps of each class autoencoder.
        all_steps: steps of the all-class autoencoder (default ``steps``).
        batch_size: images per step (capped at the class size).
        learning_rate: Adam's learning rate.
        checkpoint_dir: a directory; each network checkpoints in its own subdirectory
            (``ae_0`` ... ``ae_9``, ``ae_all``), so an interrupted run resumes.
        progress: a tqdm bar per network.

    Returns:
        The trained :class:`Autoencoders`.

    Raises:
        ValueError: bad images or labels, or a class without images.
    """
    x = check_images(images)
    y = check_labels(labels, len(x))
    counts = np.bincount(y, minlength=CLASSES)
    if np.any(counts == 0):
        raise ValueError(f"every class needs training images; classes {np.where(counts == 0)[0]} "
                         "have none")  # fmt: skip
    k_init, k_fit = jax.random.split(key)
    opt = optax.adam(learning_rate)  # one object: the ten runs share one compiled program
    n = int(counts.max())
    bs = min(batch_size, n)
    per_class = []
    for c in range(CLASSES):
        xc = x[y == c]
        xc = xc[np.resize(np.arange(len(xc)), n)]  # tiled to the common size (module doc)
        ae, _ = fit(
            _mse_loss,
            ClassAE(jax.random.fold_in(k_init, c)),
            {"x": xc},
            optimizer=opt,
            steps=steps,
            key=jax.random.fold_in(k_fit, c),
            batch_size=bs,
            checkpoint_dir=_subdir(checkpoint_dir, f"ae_{c}"),
            progress=progress,
        )
        per_class.append(ae)
    ae_all, _ = fit(
        _mse_loss,
        AllAE(jax.random.fold_in(k_init, CLASSES)),
        {"x": x},
        optimizer=opt,
        steps=steps if all_steps is None else all_steps,
        key=jax.random.fold_in(k_fit, CLASSES),
        batch_size=min(batch_size, len(x)),
        checkpoint_dir=_subdir(checkpoint_dir, "ae_all"),
        progress=progress,
    )
    return Autoencoders(per_class=tuple(per_class), all=ae_all)


def train_vae(
    images: Float[np.ndarray, "N 28 28 1"],
    *,
    key: PRNGKeyArray,
    steps: int = 2000,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    latent: int = LATENT,
    checkpoint_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> VAE:
    """Train the :class:`VAE` of CLD on all training images (ELBO, Adam) with ``fit``.

    Args:
        images: ``(N, 28, 28, 1)`` float in ``[0, 1]``.
        key: initialisation, batching and the reparameterisation noise.
        steps: optimisation steps.
        batch_size: images per step.
        learning_rate: Adam's learning rate.
        latent: latent dimension (20, Diff-SCM Fig. 3a).
        checkpoint_dir: checkpoint directory of this run (resumed when it holds one).
        progress: a tqdm bar.

    Returns:
        The trained VAE.

    Raises:
        ValueError: bad images.
    """
    x = check_images(images)
    k_init, k_fit = jax.random.split(key)
    vae, _ = fit(
        _vae_loss,
        VAE(k_init, latent),
        {"x": x},
        optimizer=optax.adam(learning_rate),
        steps=steps,
        key=k_fit,
        batch_size=min(batch_size, len(x)),
        checkpoint_dir=checkpoint_dir,
        progress=progress,
    )
    return vae


__all__ = [
    "CLASSES",
    "LATENT",
    "VAE",
    "AllAE",
    "Autoencoders",
    "ClassAE",
    "check_images",
    "check_labels",
    "train_autoencoders",
    "train_vae",
]
