"""Deep structural causal models (Pawlowski, Castro & Glocker, 2020)."""

from .image import VAEImage, dequantise, logit_preprocessing

__all__ = ["VAEImage", "dequantise", "logit_preprocessing"]
