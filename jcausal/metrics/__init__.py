"""Measurements of generated data and of counterfactuals.

Sample quality of digit images (`digits`); the counterfactual metrics IM1, IM2, CLD and
effectiveness (`counterfactual`) with the networks they use (`autoencoders`, `ensemble`) and
one call that trains them all (`evaluators`).
"""

from . import autoencoders, counterfactual, digits, ensemble, evaluators
from .autoencoders import VAE, AllAE, Autoencoders, ClassAE, train_autoencoders, train_vae
from .counterfactual import (
    IM_EPS,
    LatentBank,
    UnitClassifier,
    cld,
    cld_terms,
    effectiveness,
    gaussian_kl,
    im1,
    im2,
    im_scores,
    latent_bank,
    mean_std,
    oracle_predict,
)
from .digits import DigitClassifier, sample_quality, train_digit_classifier
from .ensemble import Ensemble, predictive_entropy, train_ensemble
from .evaluators import Evaluators, evaluate_counterfactuals, train_evaluators

__all__ = [
    "IM_EPS",
    "VAE",
    "AllAE",
    "Autoencoders",
    "ClassAE",
    "DigitClassifier",
    "Ensemble",
    "Evaluators",
    "LatentBank",
    "UnitClassifier",
    "autoencoders",
    "cld",
    "cld_terms",
    "counterfactual",
    "digits",
    "effectiveness",
    "ensemble",
    "evaluate_counterfactuals",
    "evaluators",
    "gaussian_kl",
    "im1",
    "im2",
    "im_scores",
    "latent_bank",
    "mean_std",
    "oracle_predict",
    "predictive_entropy",
    "sample_quality",
    "train_autoencoders",
    "train_digit_classifier",
    "train_ensemble",
    "train_evaluators",
    "train_vae",
]
