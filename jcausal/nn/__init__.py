"""Networks for image mechanisms (flax NNX; the MCQ-VAE in equinox) and the pytree adapter.

Includes the diffusion score :class:`UNet` and its time-conditioned :class:`NoisyClassifier`.
"""

from .adapter import Pure, num_params
from .mnist import FiLM, MNISTDecoder, MNISTEncoder
from .unet import NoisyClassifier, UNet
from .vq import MultiCodebook, ema_buffers, perplexity, slices, usage
from .vqvae import MCQVAE, restart_dead_codes, vq_loss

__all__ = [
    "MCQVAE",
    "FiLM",
    "MNISTDecoder",
    "MNISTEncoder",
    "MultiCodebook",
    "NoisyClassifier",
    "Pure",
    "UNet",
    "ema_buffers",
    "num_params",
    "perplexity",
    "restart_dead_codes",
    "slices",
    "usage",
    "vq_loss",
]
