"""Deep structural causal models (Pawlowski, Castro & Glocker, 2020).

The three Morpho-MNIST models of Fig. 2 are in :mod:`jcausal.deepscm.morpho`.

The conditional-VAE image mechanism is generic and lives in :mod:`jcausal.image`; it is
re-exported here (``jcausal.deepscm.VAEImage``) for existing code.
"""

from ..flows import ParentContext
from ..image import VAEImage, dequantise, logit_preprocessing
from .morpho import GRAPHS, KINDS, attributes, loss_fn, model, optimizer

__all__ = [
    "GRAPHS",
    "KINDS",
    "ParentContext",
    "VAEImage",
    "attributes",
    "dequantise",
    "logit_preprocessing",
    "loss_fn",
    "model",
    "optimizer",
]
