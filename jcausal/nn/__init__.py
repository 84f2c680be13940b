"""Networks for image mechanisms (flax NNX; the MCQ-VAE in equinox) and the pytree adapter."""

from .adapter import Pure, num_params
from .mnist import FiLM, MNISTDecoder, MNISTEncoder
from .vq import MultiCodebook, ema_buffers, perplexity, slices, usage
from .vqvae import MCQVAE, restart_dead_codes, vq_loss

__all__ = [
    "MCQVAE",
    "FiLM",
    "MNISTDecoder",
    "MNISTEncoder",
    "MultiCodebook",
    "Pure",
    "ema_buffers",
    "num_params",
    "perplexity",
    "restart_dead_codes",
    "slices",
    "usage",
    "vq_loss",
]
