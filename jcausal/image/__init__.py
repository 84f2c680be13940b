"""Image mechanisms: generic mechanisms whose node is an image.

A conditional VAE (:class:`VAEImage`) and a Gumbel-max code transition decoded by a quantised
autoencoder (:class:`VQTransition`).

Networks for them live in :mod:`jcausal.nn` (e.g. :mod:`jcausal.nn.mnist`).
"""

from .vae import ALPHA, VAEImage, dequantise, logit_preprocessing
from .vq_transition import VQTransition

__all__ = ["ALPHA", "VAEImage", "VQTransition", "dequantise", "logit_preprocessing"]
