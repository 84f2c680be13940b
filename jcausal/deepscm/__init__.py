"""Deep structural causal models (Pawlowski, Castro & Glocker, 2020): the conditional-VAE image
mechanism and the three Morpho-MNIST models of Fig. 2."""

from .image import VAEImage, dequantise, logit_preprocessing
from .morpho import (
    GRAPHS,
    KINDS,
    ParentContext,
    attributes,
    build,
    init_params,
    log_densities,
    loss_fn,
    optimizer,
    reconstruct,
)

__all__ = [
    "GRAPHS",
    "KINDS",
    "ParentContext",
    "VAEImage",
    "attributes",
    "build",
    "dequantise",
    "init_params",
    "log_densities",
    "logit_preprocessing",
    "loss_fn",
    "optimizer",
    "reconstruct",
]
