"""Counterfactual baselines of the Diff-SCM comparison, batched in JAX.

* :mod:`~jcausal.baselines.prototype`: Van Looveren & Klaise 2021, counterfactuals guided by
  prototypes (classifier margin + elastic net + autoencoder + prototype terms, FISTA per unit).
* :mod:`~jcausal.baselines.saliency`: Schut et al. 2021, greedy saliency-map perturbation
  guided by a classifier ensemble's predictive probability.
"""

from . import prototype, saliency
from .prototype import Prototype, PrototypeResult, class_prototypes, prototype_counterfactuals
from .saliency import Saliency, SaliencyResult, saliency_counterfactuals

__all__ = [
    "Prototype",
    "PrototypeResult",
    "Saliency",
    "SaliencyResult",
    "class_prototypes",
    "prototype",
    "prototype_counterfactuals",
    "saliency",
    "saliency_counterfactuals",
]
