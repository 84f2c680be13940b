"""Modularity of generative models by counterfactuals on internal channels.

Besserve, Mehrjou, Sun & Schölkopf, "Counterfactuals uncover the modular structure of deep
generative models" (ICLR 2020): a generator cut into named stages (:class:`Stages`;
:func:`decoder_stages` for the Deep SCM decoder, :func:`mcqvae_stages` for the CT-VAE's,
:func:`unet_stages` for the diffusion UNet, whose activations are ``(h, skips)`` pytrees);
hybrids, i.e. counterfactual outputs with chosen channels of a layer taken from another latent
(:func:`hybridise`, :func:`hybrids`, vmapped over pairs and channel masks); influence maps
(:func:`influence_maps`); modules by NMF of the influence matrix (:func:`find_modules`); the
classifier probe (:func:`classifier_probe`); and slant/width measurements of digit images
(:func:`measure_slant`, :func:`measure_width`).
"""

from .hybrid import channel_mask, hybridise, hybrids
from .influence import influence_maps
from .modules import Modules, find_modules
from .probe import classifier_probe
from .shape import measure_shape, measure_slant, measure_width
from .stages import Stages, decoder_stages, mcqvae_stages
from .unet import unet_stages

__all__ = [
    "Modules",
    "Stages",
    "channel_mask",
    "classifier_probe",
    "decoder_stages",
    "find_modules",
    "hybridise",
    "hybrids",
    "influence_maps",
    "mcqvae_stages",
    "measure_shape",
    "measure_slant",
    "measure_width",
    "unet_stages",
]
