"""A deep ensemble of MLP classifiers: predictive probabilities and their uncertainty.

The classifier of the Schut et al. 2021 baseline (:mod:`jcausal.baselines.saliency`), whose
counterfactuals are pushed to where the ensemble is confident: a high predictive probability
of the target means low epistemic (members disagree) and aleatoric (the average is flat)
uncertainty. Set-up of their MNIST experiments (``experiments/train_ensemble.py`` of their
repository): MLPs with two hidden layers of 200 ReLU units, Adam (rate 1e-3), batch 128, trained
from independent initialisations, with adversarial training (Lakshminarayanan et al. 2017):
each batch also contributes its FGSM images ``clip(x + 0.15 sign(grad_x CE), 0, 1)``. Their
BatchNorm layers are left out (at inference a fixed affine map; per-unit code must not depend
on batch statistics). They used 50 members; the number is a parameter here (a few suffice for
the baseline's greedy search on small data).

The members are stacked along a leading axis and evaluated with ``vmap`` (dense layers batch
well on CPU, unlike the conv autoencoders), and trained together in one ``fit`` run.
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
from .autoencoders import CLASSES, F32, check_images, check_labels

FGSM_EPS = 0.15  # Schut et al.'s adversarial-training step on MNIST


class MLP(eqx.Module):
    """784 - hidden - hidden - 10 ReLU network on one image ``(28, 28, 1)``."""

    layers: tuple[eqx.nn.Linear, ...]

    def __init__(self, key: PRNGKeyArray, hidden: int = 200, classes: int = CLASSES):
        k = jax.random.split(key, 3)
        self.layers = (
            eqx.nn.Linear(28 * 28, hidden, key=k[0], dtype=F32),
            eqx.nn.Linear(hidden, hidden, key=k[1], dtype=F32),
            eqx.nn.Linear(hidden, classes, key=k[2], dtype=F32),
        )

    def __call__(self, x: Float[Array, "28 28 1"]) -> Float[Array, " K"]:
        h = jnp.asarray(x, F32).reshape(-1)
        h = jax.nn.relu(self.layers[0](h))
        h = jax.nn.relu(self.layers[1](h))
        return self.layers[2](h)


class Ensemble(eqx.Module):
    """``members`` MLPs stacked on a leading axis.

    ``ens(x (28, 28, 1)) -> logits (M, K)`` of every member; :meth:`probs` is the predictive
    distribution (the members' average probabilities).
    """

    stacked: MLP

    def __init__(self, key: PRNGKeyArray, members: int = 5, hidden: int = 200):
        keys = jax.random.split(key, members)
        self.stacked = eqx.filter_vmap(lambda k: MLP(k, hidden))(keys)

    @property
    def members(self) -> int:
        return int(self.stacked.layers[0].weight.shape[0])

    def __call__(self, x: Float[Array, "28 28 1"]) -> Float[Array, "M K"]:
        return eqx.filter_vmap(lambda m: m(x))(self.stacked)

    def probs(self, x: Float[Array, "28 28 1"]) -> Float[Array, " K"]:
        """Predictive probabilities ``mean_m softmax(logits_m)`` of one image."""
        return jnp.mean(jax.nn.softmax(self(x), axis=-1), axis=0)

    def log_probs(self, x: Float[Array, "28 28 1"]) -> Float[Array, " K"]:
        """``log`` of :meth:`probs`, computed stably (logsumexp over members)."""
        lp = jax.nn.log_softmax(self(x), axis=-1)
        return jax.nn.logsumexp(lp, axis=0) - jnp.log(lp.shape[0])


def predictive_entropy(ensemble: Ensemble, x: Float[Array, "B 28 28 1"]) -> Float[Array, " B"]:
    """Entropy (nats) of the ensemble's predictive distribution for each image."""
    lp = jax.vmap(ensemble.log_probs)(x)
    return -jnp.sum(jnp.exp(lp) * lp, axis=-1)


def _ensemble_loss(ens: Ensemble, batch, key, fgsm):
    del key
    x, y = batch["x"], batch["y"]

    def member_loss(m: MLP):
        def ce(xx):
            logits = jax.vmap(m)(xx)
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

        clean, g = jax.value_and_grad(ce)(x)
        if fgsm == 0.0:
            return clean
        # FGSM images from this member's own gradient; no gradient flows through the attack.
        x_adv = jax.lax.stop_gradient(jnp.clip(x + fgsm * jnp.sign(g), 0.0, 1.0))
        return clean + ce(x_adv)

    losses = eqx.filter_vmap(member_loss)(ens.stacked)
    return jnp.mean(losses), {"member_max": jnp.max(losses)}


def train_ensemble(
    images: Float[np.ndarray, "N 28 28 1"],
    labels: Int[np.ndarray, " N"],
    *,
    key: PRNGKeyArray,
    members: int = 5,
    hidden: int = 200,
    steps: int = 1000,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    adversarial: float = FGSM_EPS,
    checkpoint_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> Ensemble:
    """Train an :class:`Ensemble` with :func:`jcausal.train.fit` (set-up: module docstring).

    Args:
        images: ``(N, 28, 28, 1)`` float in ``[0, 1]``.
        labels: ``(N,)`` classes ``0..9``.
        key: initialisations (independent per member) and batching.
        members: ensemble size.
        hidden: units of each hidden layer.
        steps: optimisation steps (all members together).
        batch_size: images per step.
        learning_rate: Adam's rate.
        adversarial: FGSM step of adversarial training (0 turns it off).
        checkpoint_dir: checkpoint directory of the run.
        progress: a tqdm bar.

    Returns:
        The trained ensemble.

    Raises:
        ValueError: bad images or labels, ``members < 1`` or ``adversarial < 0``.
    """
    x = check_images(images)
    y = check_labels(labels, len(x))
    if int(members) < 1:
        raise ValueError(f"members must be >= 1, got {members}")
    if not adversarial >= 0:
        raise ValueError(f"adversarial (the FGSM step) must be >= 0, got {adversarial}")
    k_init, k_fit = jax.random.split(key)
    ens, _ = fit(
        _Loss(float(adversarial)),
        Ensemble(k_init, int(members), int(hidden)),
        {"x": x, "y": y},
        optimizer=optax.adam(learning_rate),
        steps=steps,
        key=k_fit,
        batch_size=min(batch_size, len(x)),
        checkpoint_dir=checkpoint_dir,
        progress=progress,
    )
    return ens


class _Loss(eqx.Module):
    """The loss with its FGSM step as a hashable field (``fit`` caches programs by loss)."""

    fgsm: float = eqx.field(static=True)

    def __call__(self, ens, batch, key):
        return _ensemble_loss(ens, batch, key, self.fgsm)


__all__ = ["FGSM_EPS", "MLP", "Ensemble", "predictive_entropy", "train_ensemble"]
