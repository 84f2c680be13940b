"""Sample quality of generated digits, judged by a classifier trained on real digits.

A small convolutional classifier (:class:`DigitClassifier`) is trained with
:func:`jcausal.train.fit` on real digit images (:func:`train_digit_classifier`). On a set of
images, :func:`sample_quality` reports how confidently it recognises a digit (mean top-class
probability) and how the recognised classes are spread (class fractions, their KL divergence
from the uniform distribution). The same numbers on real held-out digits are the reference a
generator's samples are compared with: blobs that are no digit get a low top-class probability,
and a generator that collapses onto a few classes a high KL. (The idea of the Inception score,
with a classifier of the images' own domain.)
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray, Shaped

from ..train import fit

CLASSES = 10


class DigitClassifier(eqx.Module):
    """Two strided 3x3 convolutions (16 and 32 channels) and a 64-unit hidden layer.

    Input: one ``(28, 28)`` image in grey levels ``[0, 255]`` (ink bright); output: ``(10,)``
    class logits.
    """

    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    hidden: eqx.nn.Linear
    out: eqx.nn.Linear

    def __init__(self, key: PRNGKeyArray):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        f32 = jnp.float32  # float32 also under jax_enable_x64, like its input
        self.conv1 = eqx.nn.Conv2d(1, 16, 3, stride=2, padding=1, key=k1, dtype=f32)  # 28 -> 14
        self.conv2 = eqx.nn.Conv2d(16, 32, 3, stride=2, padding=1, key=k2, dtype=f32)  # -> 7
        self.hidden = eqx.nn.Linear(32 * 7 * 7, 64, key=k3, dtype=f32)
        self.out = eqx.nn.Linear(64, CLASSES, key=k4, dtype=f32)

    def __call__(self, x: Float[Array, "28 28"]) -> Float[Array, " 10"]:
        h = (jnp.asarray(x, jnp.float32) / 255.0)[None]
        h = jax.nn.relu(self.conv1(h))
        h = jax.nn.relu(self.conv2(h))
        return self.out(jax.nn.relu(self.hidden(h.reshape(-1))))


def _loss(model: DigitClassifier, batch: dict, key: PRNGKeyArray):
    del key
    logits = jax.vmap(model)(batch["x"])
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])
    acc = jnp.mean(jnp.argmax(logits, -1) == batch["y"])
    return jnp.mean(nll), {"accuracy": acc}


def train_digit_classifier(
    images: Shaped[np.ndarray, "N 28 28"],
    labels: Int[np.ndarray, " N"],
    key: PRNGKeyArray,
    steps: int = 2000,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    checkpoint_dir: str | None = None,
    progress: bool = False,
) -> DigitClassifier:
    """Train a :class:`DigitClassifier` on real digits with :func:`jcausal.train.fit` (Adam).

    Args:
        images: ``(N, 28, 28)`` grey levels in ``[0, 255]``.
        labels: ``(N,)`` classes ``0..9``.
        key: initialisation and batching.
        steps: optimisation steps.
        batch_size: images per step (at most ``N``).
        learning_rate: Adam's learning rate.
        checkpoint_dir: checkpoint directory of the run (resumed when it holds one).
        progress: a tqdm progress bar.

    Returns:
        The trained classifier.

    Raises:
        ValueError: images and labels do not match, or a label is outside ``0..9``.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise ValueError(
            f"images must be (N, 28, 28) with labels (N,); got {images.shape} and {labels.shape}"
        )
    if len(labels) < 2 or labels.min() < 0 or labels.max() >= CLASSES:
        raise ValueError(f"need >= 2 labels in 0..{CLASSES - 1}; got {labels.size} labels")
    k_init, k_fit = jax.random.split(key)
    model, _ = fit(
        _loss,
        DigitClassifier(k_init),
        {"x": images.astype(np.float32), "y": labels.astype(np.int32)},
        optimizer=optax.adam(learning_rate),
        steps=steps,
        key=k_fit,
        batch_size=min(batch_size, len(labels)),
        checkpoint_dir=checkpoint_dir,
        progress=progress,
    )
    return model


def predict_proba(
    model: DigitClassifier, images: Shaped[np.ndarray, "N 28 28"], chunk: int = 1000
) -> Float[np.ndarray, "N 10"]:
    """Class probabilities ``(N, 10)`` of ``images`` (grey levels, clipped to ``[0, 255]``)."""
    images = np.clip(np.asarray(images, np.float32), 0.0, 255.0)
    if not np.all(np.isfinite(images)):
        raise ValueError("images contain NaN; sample quality is undefined for them")
    f = eqx.filter_jit(lambda m, x: jax.nn.softmax(jax.vmap(m)(x), -1))
    return np.concatenate(
        [np.asarray(f(model, images[i : i + chunk])) for i in range(0, len(images), chunk)]
    )


def sample_quality(
    model: DigitClassifier,
    images: Shaped[np.ndarray, "N 28 28"],
    labels: Int[np.ndarray, " N"] | None = None,
) -> dict[str, float | list[float]]:
    """How digit-like a set of images is, by a classifier trained on real digits.

    Args:
        model: a trained :class:`DigitClassifier`.
        images: ``(N, 28, 28)`` grey levels (real digits or a model's samples).
        labels: true classes, if known (adds ``accuracy``).

    Returns:
        ``mean_top_prob`` (mean over images of the largest class probability), ``class_fractions``
        (fraction of images per predicted class, ``(10,)``), ``kl_from_uniform`` (nats, of the
        class fractions: 0 for perfect balance, ``log 10`` = 2.30 for one class), ``min_class``
        and ``max_class`` fractions, ``n``; and ``accuracy`` with ``labels``.
    """
    p = predict_proba(model, images)
    frac = np.bincount(np.argmax(p, -1), minlength=CLASSES) / len(p)
    nz = frac[frac > 0]
    out = {
        "n": len(p),
        "mean_top_prob": float(np.mean(np.max(p, -1))),
        "class_fractions": [float(f) for f in frac],
        "kl_from_uniform": float(np.sum(nz * np.log(nz * CLASSES))),
        "min_class": float(frac.min()),
        "max_class": float(frac.max()),
    }
    if labels is not None:
        out["accuracy"] = float(np.mean(np.argmax(p, -1) == np.asarray(labels)))
    return out


__all__ = [
    "CLASSES",
    "DigitClassifier",
    "predict_proba",
    "sample_quality",
    "train_digit_classifier",
]
