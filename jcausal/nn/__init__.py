"""Networks for image mechanisms (flax NNX) and the adapter that makes any network a pytree."""

from .adapter import Pure, num_params
from .mnist import FiLM, MNISTDecoder, MNISTEncoder

__all__ = ["FiLM", "MNISTDecoder", "MNISTEncoder", "Pure", "num_params"]
