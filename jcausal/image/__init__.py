"""Image mechanisms: generic mechanisms whose node is an image (a conditional VAE today).

Networks for them live in :mod:`jcausal.nn` (e.g. :mod:`jcausal.nn.mnist`).
"""

from .vae import ALPHA, VAEImage, dequantise, logit_preprocessing

__all__ = ["ALPHA", "VAEImage", "dequantise", "logit_preprocessing"]
