"""Every model the Diff-SCM evaluation needs, trained in one call, and the metrics in one call.

:func:`train_evaluators` trains (or resumes, with ``checkpoint_dir``) the oracle classifier,
the eleven IM autoencoders, the CLD VAE (and encodes the training set for CLD's reference
sets), the class prototypes of the Van Looveren baseline and the classifier ensemble of the
Schut baseline, each with :func:`jcausal.train.fit`. :func:`evaluate_counterfactuals` then
scores a batch of counterfactuals with IM1, IM2, CLD and effectiveness.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import equinox as eqx
import jax
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .autoencoders import Autoencoders, check_images, check_labels, train_autoencoders, train_vae
from .counterfactual import (
    LatentBank,
    UnitClassifier,
    cld_terms,
    effectiveness,
    im_scores,
    latent_bank,
    mean_std,
)
from .digits import train_digit_classifier
from .ensemble import Ensemble, train_ensemble

PARTS = ("oracle", "class_ae", "all_ae", "vae", "ensemble")


class Evaluators(eqx.Module):
    """The trained evaluation models.

    Attributes:
        oracle: classifier on clean images (effectiveness; the Van Looveren baseline's
            classifier), as a :class:`UnitClassifier`.
        autoencoders: class and all-class autoencoders (IM1, IM2; the baseline's AE terms).
        vae: the 20-d latent VAE (CLD).
        bank: the VAE posteriors of the training images (CLD's reference sets).
        prototypes: ``(10, 196)`` mean all-AE codes per class (Van Looveren's prototypes).
        ensemble: the MLP ensemble of the Schut et al. baseline.
    """

    oracle: UnitClassifier
    autoencoders: Autoencoders
    vae: eqx.Module
    bank: LatentBank
    prototypes: Float[Array, "10 d"]
    ensemble: Ensemble


def _steps(steps: int | Mapping[str, int]) -> dict[str, int]:
    if isinstance(steps, Mapping):
        unknown = set(steps) - set(PARTS)
        if unknown:
            raise ValueError(f"steps has unknown parts {sorted(unknown)}; parts are {PARTS}")
        missing = set(PARTS) - set(steps)
        if missing:
            raise ValueError(f"steps misses parts {sorted(missing)}; give all of {PARTS}")
        out = {k: steps[k] for k in PARTS}
    else:
        out = dict.fromkeys(PARTS, steps)
    for k, v in out.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"steps[{k!r}] must be an integer >= 1, got {v!r}")
    return {k: int(v) for k, v in out.items()}


def _sub(checkpoint_dir, name):
    return None if checkpoint_dir is None else os.path.join(os.fspath(checkpoint_dir), name)


def train_evaluators(
    train_images: Float[np.ndarray, "N 28 28 1"],
    train_labels: Int[np.ndarray, " N"],
    *,
    key: PRNGKeyArray,
    steps: int | Mapping[str, int],
    checkpoint_dir: str | os.PathLike | None = None,
    progress: bool = True,
    ensemble_members: int = 5,
    ae_learning_rate: float = 1e-3,
    ae_batch_size: int = 128,
) -> Evaluators:
    """Train every evaluation model on the training digits (each through ``fit``).

    Args:
        train_images: ``(N, 28, 28, 1)`` float in ``[0, 1]``.
        train_labels: ``(N,)`` classes ``0..9``, every class present.
        key: ``jax.random`` key; each model gets its own derived key.
        steps: optimisation steps of every model, or a mapping with one count per part
            ``{"oracle", "class_ae", "all_ae", "vae", "ensemble"}`` (``class_ae``: each of the
            ten class autoencoders). Smoke: ~5. Measured on the 3,500 embedded digits with
            oracle 1000, class_ae 100, all_ae 200, vae 300, ensemble 400: oracle test accuracy
            0.95, all-class AE test error 2.8 (squared, summed over pixels) but class AEs still
            poor (21; 300 class_ae steps reach ~7); use class_ae >= 300.
        checkpoint_dir: a directory; each model checkpoints in a subdirectory (``oracle``,
            ``ae_0`` ... ``ae_all``, ``vae``, ``ensemble``) and a rerun resumes or reloads.
        progress: tqdm bars while training.
        ensemble_members: members of the Schut baseline's ensemble.
        ae_learning_rate: Adam's rate for the autoencoders (3e-3 with ``ae_batch_size=64``
            trains faster per step; see :func:`~jcausal.metrics.autoencoders.train_autoencoders`).
        ae_batch_size: batch of the autoencoders.

    Returns:
        The :class:`Evaluators`.

    Raises:
        ValueError: bad images or labels (shape, range, NaN, a missing class), bad ``steps``.
    """
    x = check_images(train_images, "train_images")
    y = check_labels(train_labels, len(x), "train_labels")
    n = _steps(steps)
    keys = jax.random.split(key, 4)
    oracle = train_digit_classifier(
        x[..., 0] * 255.0,
        y,
        keys[0],
        steps=n["oracle"],
        checkpoint_dir=_sub(checkpoint_dir, "oracle"),
        progress=progress,
    )
    aes = train_autoencoders(
        x,
        y,
        key=keys[1],
        steps=n["class_ae"],
        all_steps=n["all_ae"],
        batch_size=ae_batch_size,
        learning_rate=ae_learning_rate,
        checkpoint_dir=checkpoint_dir,
        progress=progress,
    )
    vae = train_vae(
        x, key=keys[2], steps=n["vae"], checkpoint_dir=_sub(checkpoint_dir, "vae"),
        progress=progress,
    )  # fmt: skip
    ens = train_ensemble(
        x,
        y,
        key=keys[3],
        members=ensemble_members,
        steps=n["ensemble"],
        checkpoint_dir=_sub(checkpoint_dir, "ensemble"),
        progress=progress,
    )
    from ..baselines.prototype import class_prototypes  # baselines import metrics, not back

    return Evaluators(
        oracle=UnitClassifier(oracle),
        autoencoders=aes,
        vae=vae,
        bank=latent_bank(vae, x, y),
        prototypes=class_prototypes(aes.all.encode, x, y),
        ensemble=ens,
    )


def evaluate_counterfactuals(
    evaluators: Evaluators,
    x_cf: Float[np.ndarray, "B 28 28 1"],
    x_f: Float[np.ndarray, "B 28 28 1"],
    y_f: Int[np.ndarray, " B"],
    y_cf: Int[np.ndarray, " B"],
) -> dict:
    """IM1, IM2, CLD (per unit and mean/std) and effectiveness of a batch of counterfactuals.

    Args:
        evaluators: from :func:`train_evaluators`.
        x_cf: counterfactuals ``(B, 28, 28, 1)`` in ``[0, 1]``.
        x_f: the factual images, same shape.
        y_f: factual classes ``(B,)``.
        y_cf: target classes ``(B,)``.

    Returns:
        ``{"per_unit": {"im1", "im2", "cld", "div", "p_cf", "p_f"} (numpy (B,)),
        "im1"/"im2"/"cld": {"mean", "std", "n"}, "effectiveness": {"target", "factual", "n"}}``.

    Raises:
        ValueError: bad images or classes (see the metrics), or a non-finite metric value.
    """
    i1, i2 = im_scores(evaluators.autoencoders, x_cf, y_f, y_cf)
    c = cld_terms(evaluators.vae, evaluators.bank, x_cf, x_f, y_f, y_cf)
    per = {"im1": i1, "im2": i2, **c}
    per = {k: np.asarray(v) for k, v in per.items()}
    out = {"per_unit": per}
    for k in ("im1", "im2", "cld"):
        out[k] = mean_std(per[k])
    out["effectiveness"] = effectiveness(evaluators.oracle, x_cf, y_f, y_cf)
    return out


__all__ = [
    "PARTS",
    "Evaluators",
    "evaluate_counterfactuals",
    "train_evaluators",
]
