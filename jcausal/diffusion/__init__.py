"""Diffusion models for SCM image mechanisms (Diff-SCM, Sanchez & Tsaftaris 2022).

Modules: ``schedule`` (noise schedules, the forward process), ``loss`` (ε-prediction and
noise-conditioned classifier / regressor losses for :func:`jcausal.train.fit`), ``ddim``
(deterministic sampling and inversion, plain or exact, each one ``lax.scan``), ``guidance``
(classifier guidance and clipping as transformations of the noise prediction). The SCM
mechanism built from them is :class:`jcausal.image.DiffusionImage`; the networks are
:class:`jcausal.nn.UNet` and :class:`jcausal.nn.NoisyClassifier`.
"""

from .ddim import ddim_invert, ddim_sample, ddim_times
from .guidance import (
    class_log_prob,
    clipped,
    dynamic_threshold,
    gaussian_log_prob,
    guided,
    x0_from_eps,
)
from .loss import classifier_loss, eps_loss, regressor_loss
from .schedule import Schedule, q_sample

__all__ = [
    "Schedule",
    "class_log_prob",
    "classifier_loss",
    "clipped",
    "ddim_invert",
    "ddim_sample",
    "ddim_times",
    "dynamic_threshold",
    "eps_loss",
    "gaussian_log_prob",
    "guided",
    "q_sample",
    "regressor_loss",
    "x0_from_eps",
]
