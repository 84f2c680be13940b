"""Image mechanisms: generic mechanisms whose node is an image.

A conditional VAE (:class:`VAEImage`), a Gumbel-max code transition decoded by a quantised
autoencoder (:class:`VQTransition`) and a guided diffusion model abducted by DDIM inversion
(:class:`DiffusionImage`, Diff-SCM).

Networks for them live in :mod:`jcausal.nn` (e.g. :mod:`jcausal.nn.mnist`).
"""

from .diffusion import DiffusionImage
from .vae import ALPHA, VAEImage, dequantise, logit_preprocessing
from .vq_transition import VQTransition

__all__ = [
    "ALPHA",
    "DiffusionImage",
    "VAEImage",
    "VQTransition",
    "dequantise",
    "logit_preprocessing",
]
