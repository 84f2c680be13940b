"""Networks for image mechanisms (flax NNX; the MCQ-VAE in equinox) and the pytree adapter.

Includes the diffusion score :class:`UNet` and its time-conditioned :class:`NoisyClassifier`,
:func:`conv_general_dilated`, a convolution whose gradients stay fast inside compiled loops
on XLA:CPU (the library's flax networks use it), and :func:`conv_transpose` /
:class:`ConvTranspose`, a strided transposed convolution computed as one stride-1 convolution
and a pixel shuffle (no products with the zeros of a dilated input).
"""

from .adapter import Pure, num_params
from .conv import conv_general_dilated
from .conv_transpose import ConvTranspose, conv_transpose
from .mnist import FiLM, MNISTDecoder, MNISTEncoder
from .unet import NoisyClassifier, UNet
from .vq import MultiCodebook, ema_buffers, perplexity, slices, usage
from .vqvae import MCQVAE, restart_dead_codes, vq_loss

__all__ = [
    "MCQVAE",
    "ConvTranspose",
    "FiLM",
    "MNISTDecoder",
    "MNISTEncoder",
    "MultiCodebook",
    "NoisyClassifier",
    "Pure",
    "UNet",
    "conv_general_dilated",
    "conv_transpose",
    "ema_buffers",
    "num_params",
    "perplexity",
    "restart_dead_codes",
    "slices",
    "usage",
    "vq_loss",
]
