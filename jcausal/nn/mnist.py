"""Convolutional encoder and decoder for 28x28 images (Deep SCM, appendix A, eqs. A.5-A.6).

Both act on ONE image (the SCM engine vmaps them over units; they also accept a leading batch
axis). The paper's BatchNorm layers are replaced by per-sample normalisation (GroupNorm after
convolutions, LayerNorm after dense layers): batch statistics would make one unit's
counterfactual depend on the other units in the batch, and would break under the engine's
per-unit vmap.

``condition="film"`` (both networks) adds a FiLM layer (Perez et al. 2018: a per-feature gain
and shift computed from the parents) after every normalisation, so each layer sees the parents
directly; the default ``"input"`` is the paper's wiring.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from .conv import conv_general_dilated
from .conv_transpose import ConvTranspose

# Convolutions whose gradients keep XLA:CPU's fast kernel inside compiled loops (see .conv).
_Conv = functools.partial(nnx.Conv, conv_general_dilated=conv_general_dilated)


def _image(x: Array) -> Array:
    """(..., 28, 28) or (..., 28, 28, 1) -> (..., 28, 28, 1)."""
    return x[..., None] if x.shape[-1] != 1 else x


def _condition(condition: str, context: int) -> str:
    """The wiring actually used: without parents there is nothing to modulate with."""
    if condition not in ("input", "film"):
        raise ValueError(f"condition must be 'input' or 'film', got {condition!r}")
    return condition if context else "input"


class FiLM(nnx.Module):
    """Feature-wise affine modulation by the context: ``h * (1 + gamma(c)) + beta(c)``.

    ``gamma`` and ``beta`` are linear in the context and start at zero, so an untrained FiLM
    layer is the identity. Modulates the last axis of ``h`` (features or channels).

    Args:
        context: size of the context vector.
        features: size of the modulated (last) axis.
        rngs: flax NNX random streams for the initialisation.
    """

    def __init__(self, context: int, features: int, *, rngs: nnx.Rngs):
        self.linear = nnx.Linear(
            context, 2 * features, kernel_init=nnx.initializers.zeros, rngs=rngs
        )
        self.features = features

    def __call__(self, h: Array, context: Array) -> Array:
        gamma, beta = jnp.split(self.linear(context), 2, axis=-1)
        # Broadcast (batch, features) over the spatial axes of (batch, H, W, features).
        extra = h.ndim - gamma.ndim
        gamma = gamma.reshape(gamma.shape[:-1] + (1,) * extra + gamma.shape[-1:])
        beta = beta.reshape(beta.shape[:-1] + (1,) * extra + beta.shape[-1:])
        return h * (1.0 + gamma) + beta


class MNISTEncoder(nnx.Module):
    """``e(x; pa)``: image -> mean and log-variance of a diagonal Gaussian over the latent.

    Conv(64, 4, 2, 1) - norm - LeakyReLU(0.1) - Conv(128, 4, 2, 1) - norm - LeakyReLU -
    flatten - Linear(100) - norm - LeakyReLU, concatenated with the (normalised) parents, then
    two Linear(latent) heads (eq. A.6).

    Args:
        latent: latent dimension (16 in the paper).
        context: number of scalar parent features.
        rngs: flax random streams for initialisation.
        width: channels of the first convolution (64 in the paper).
        condition: ``"input"`` (the paper: parents concatenated before the heads) or
            ``"film"`` (also a :class:`FiLM` modulation after every normalisation, so the
            encoder can factor the parents out of ``z`` at every level of features).
    """

    def __init__(
        self,
        latent: int = 16,
        context: int = 0,
        *,
        rngs: nnx.Rngs,
        width: int = 64,
        condition: str = "input",
    ):
        self.conv1 = _Conv(1, width, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), rngs=rngs)
        self.norm1 = nnx.GroupNorm(width, num_groups=8, rngs=rngs)
        self.conv2 = _Conv(
            width, 2 * width, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), rngs=rngs
        )
        self.norm2 = nnx.GroupNorm(2 * width, num_groups=8, rngs=rngs)
        self.dense = nnx.Linear(2 * width * 7 * 7, 100, rngs=rngs)
        self.norm3 = nnx.LayerNorm(100, rngs=rngs)
        self.mean = nnx.Linear(100 + context, latent, rngs=rngs)
        self.logvar = nnx.Linear(100 + context, latent, rngs=rngs)
        self.context = context
        self.condition = _condition(condition, context)
        if self.condition == "film":
            self.film1 = FiLM(context, width, rngs=rngs)
            self.film2 = FiLM(context, 2 * width, rngs=rngs)
            self.film3 = FiLM(context, 100, rngs=rngs)

    def __call__(
        self, x: Float[Array, "28 28"], context: Float[Array, " k"] | None = None
    ) -> tuple[Float[Array, " latent"], Float[Array, " latent"]]:
        h = _image(x)
        # GroupNorm reduces over every axis but the first, so one image gets a batch axis.
        single = h.ndim == 3
        if single:
            h = h[None]
            context = None if context is None else jnp.asarray(context)[None]
        if self.context:
            context = jnp.broadcast_to(context, (*h.shape[:-3], self.context))
        film = self.condition == "film"
        h = self.norm1(self.conv1(h))
        h = jax.nn.leaky_relu(self.film1(h, context) if film else h, 0.1)
        h = self.norm2(self.conv2(h))
        h = jax.nn.leaky_relu(self.film2(h, context) if film else h, 0.1)
        h = h.reshape(*h.shape[:-3], -1)
        h = self.norm3(self.dense(h))
        h = jax.nn.leaky_relu(self.film3(h, context) if film else h, 0.1)
        if self.context:
            h = jnp.concatenate([h, context], -1)
        mean, logvar = self.mean(h), self.logvar(h)
        return (mean[0], logvar[0]) if single else (mean, logvar)


class MNISTDecoder(nnx.Module):
    """``g(z; pa)``: latent and parents -> per-pixel mean of the image's low-level mechanism.

    Linear(1024) - norm - ReLU - Linear(64 * 7 * 7) - norm - ReLU - reshape (7, 7, 64) -
    ConvTranspose(64, 4, 2, 1) - norm - ReLU - ConvTranspose(1, 4, 2, 1) - Conv(1, 1, 1, 0)
    (eq. A.5; the paper's second Linear must produce 64 * 7 * 7 features to allow the reshape).

    Args:
        latent: latent dimension.
        context: number of scalar parent features.
        rngs: flax random streams.
        width: channels of the transposed convolutions (64 in the paper).
        condition: where the parents enter. ``"input"`` (the paper): concatenated with ``z``
            before the first layer only. ``"film"``: also a feature-wise affine modulation
            (:class:`FiLM`) after every normalisation and on the output, so every layer sees
            the parents directly. The parents then act as per-layer gains, which is how
            intensity acts on an image; with ``"input"`` their effect has to survive two
            normalisations and is entangled with the latent.
    """

    def __init__(
        self,
        latent: int = 16,
        context: int = 0,
        *,
        rngs: nnx.Rngs,
        width: int = 64,
        condition: str = "input",
    ):
        self.fc1 = nnx.Linear(latent + context, 1024, rngs=rngs)
        self.norm1 = nnx.LayerNorm(1024, rngs=rngs)
        self.fc2 = nnx.Linear(1024, width * 7 * 7, rngs=rngs)
        self.norm2 = nnx.LayerNorm(width * 7 * 7, rngs=rngs)
        # Sub-pixel form of nnx.ConvTranspose (same parameters and function; see .conv_transpose).
        self.up1 = ConvTranspose(width, width, (4, 4), strides=(2, 2), padding="SAME", rngs=rngs)
        self.norm3 = nnx.GroupNorm(width, num_groups=8, rngs=rngs)
        self.up2 = ConvTranspose(width, 1, (4, 4), strides=(2, 2), padding="SAME", rngs=rngs)
        self.out = _Conv(1, 1, (1, 1), rngs=rngs)
        self.width = width
        self.context = context
        self.condition = _condition(condition, context)
        if self.condition == "film":
            self.film1 = FiLM(context, 1024, rngs=rngs)
            self.film2 = FiLM(context, width * 7 * 7, rngs=rngs)
            self.film3 = FiLM(context, width, rngs=rngs)
            self.film_out = FiLM(context, 1, rngs=rngs)

    def __call__(
        self, z: Float[Array, " latent"], context: Float[Array, " k"] | None = None
    ) -> Float[Array, "28 28"]:
        single = z.ndim == 1
        h = z[None] if single else z
        if single and context is not None:
            context = jnp.asarray(context)[None]
        if self.context:
            context = jnp.broadcast_to(context, (*h.shape[:-1], self.context))
            h = jnp.concatenate([h, context], -1)
        film = self.condition == "film"
        h = self.norm1(self.fc1(h))
        h = jax.nn.relu(self.film1(h, context) if film else h)
        h = self.norm2(self.fc2(h))
        h = jax.nn.relu(self.film2(h, context) if film else h)
        h = h.reshape(*h.shape[:-1], 7, 7, self.width)
        h = self.norm3(self.up1(h))
        h = jax.nn.relu(self.film3(h, context) if film else h)
        h = self.out(self.up2(h))
        h = (self.film_out(h, context) if film else h)[..., 0]
        return h[0] if single else h
