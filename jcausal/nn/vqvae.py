"""The multi-codebook quantised VAE (MCQ-VAE) of CT-VAE (sec. 3.3), in equinox.

Encoder: 4x4 stride-2 convolutions with LeakyReLU (one per halving of the side, down to an
8x8 grid for 32x32 and 64x64 images), a 3x3 convolution, residual blocks and a 1x1 convolution
to ``D`` channels. Quantiser: :class:`jcausal.nn.vq.MultiCodebook` (``C`` codebooks on disjoint
slices of ``D / C`` channels). Decoder: the mirror image (3x3, residual blocks, 4x4 stride-2
transposed convolutions) ending in ``tanh``, mapped to pixel values in ``[0, 1]``.

All methods act on ONE image ``(S, S, 3)`` (channels last, values in ``[0, 1]``); vmap them
over a batch. The code grid of an image is ``(h, w, C)`` int32. :meth:`MCQVAE.codes` (image to
indices, abduction) and :meth:`MCQVAE.decode_codes` (indices to image, prediction) are the pair
the CT layer works between.

Dead codes (never chosen on a batch) can be restarted between training rounds with
:func:`restart_dead_codes`, which moves each to a random encoder output of its slice.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .conv import conv_general_dilated
from .conv_transpose import conv_transpose
from .vq import MultiCodebook, perplexity, usage

#: Side of the latent grid: one node per latent cell keeps the CT layer near 64 nodes.
GRID = 8


def _leaky(x: Array) -> Array:
    return jax.nn.leaky_relu(x, 0.2)


# The layers hold their parameters as equinox modules (channel-first, as created), but the
# network runs them on channel-last batches through jcausal.nn's convolutions: the same
# function, with gradients XLA:CPU runs fast, also inside fit's compiled loop (a batch-32
# 64x64 training step: 302 ms of CPU through the equinox layers as a bare step, 70 ms this
# way in the loop; equinox's layers ran 907 ms in the loop).
_CHANNEL_LAST = ("NHWC", "HWIO", "NHWC")


def _conv(layer: eqx.nn.Conv2d, h: Float[Array, "B H W I"]) -> Float[Array, "B H2 W2 O"]:
    """``layer`` (an equinox ``Conv2d``) applied to a channel-last batch."""
    kernel = jnp.transpose(layer.weight, (2, 3, 1, 0))  # (O, I, kh, kw) -> (kh, kw, I, O)
    pads = [tuple(p) for p in layer.padding]
    out = conv_general_dilated(h, kernel, layer.stride, pads, dimension_numbers=_CHANNEL_LAST)
    return out + layer.bias[:, 0, 0]


def _conv_transpose(
    layer: eqx.nn.ConvTranspose2d, h: Float[Array, "B H W I"]
) -> Float[Array, "B H2 W2 O"]:
    """``layer`` (an equinox ``ConvTranspose2d``) applied to a channel-last batch.

    Equinox convolves the stride-dilated input with its kernel as stored (no flip), padded by
    ``_padding_transpose()``: ``lax.conv_transpose`` with that explicit padding, which
    :func:`jcausal.nn.conv_transpose` computes without the dilated input's zeros.
    """
    kernel = jnp.transpose(layer.weight, (2, 3, 1, 0))
    pads = [tuple(p) for p in layer._padding_transpose()]
    return conv_transpose(h, kernel, layer.stride, pads) + layer.bias[:, 0, 0]


class _Residual(eqx.Module):
    c1: eqx.nn.Conv2d
    c2: eqx.nn.Conv2d

    def __init__(self, ch: int, key: PRNGKeyArray, kernel: int = 3):
        k1, k2 = jax.random.split(key)
        self.c1 = eqx.nn.Conv2d(ch, ch, kernel, padding=kernel // 2, key=k1)
        self.c2 = eqx.nn.Conv2d(ch, ch, 1, key=k2)

    def __call__(self, x: Array) -> Array:
        return x + self.c2(jax.nn.relu(self.c1(jax.nn.relu(x))))

    def channel_last(self, h: Float[Array, "B H W C"]) -> Float[Array, "B H W C"]:
        """The block on a channel-last batch (what :class:`MCQVAE` runs)."""
        return h + _conv(self.c2, jax.nn.relu(_conv(self.c1, jax.nn.relu(h))))


class MCQVAE(eqx.Module):
    """Convolutional encoder, multi-codebook quantiser and decoder.

    Args:
        image_size: side ``S`` of the square RGB images (a power of two, >= 16).
        dim: latent channels ``D``.
        num_codebooks: ``C`` (must divide ``D``).
        num_codes: ``K`` codes per codebook.
        width: channels of the convolutions.
        res_blocks: residual blocks in the encoder and in the decoder.
        encoder_kernel: side of the encoder's convolutions after the downsampling (its middle
            convolution and its residual blocks'; 3 or 1). 3 (the paper's): a code sees 54
            pixels of a 64x64 image, most of it, so one changed object changes codes far
            from its pixels. 1: a code sees its own 8x8 cell and 7 pixels around it (the
            downsampling's 22), so a local change changes local codes. The decoder keeps 3.
        ema: EMA codebook updates instead of the codebook loss (train with
            ``vq_loss(..., ema_decay=...)`` on ``ema_buffers(vae)``).
        key: initialisation key.

    Raises:
        ValueError: ``C`` does not divide ``D``, or the image size is not a power of two >= 16.
    """

    down: tuple[eqx.nn.Conv2d, ...]
    enc_mid: eqx.nn.Conv2d
    enc_res: tuple[_Residual, ...]
    enc_out: eqx.nn.Conv2d
    quantizer: MultiCodebook
    dec_in: eqx.nn.Conv2d
    dec_res: tuple[_Residual, ...]
    up: tuple[eqx.nn.ConvTranspose2d, ...]
    image_size: int = eqx.field(static=True)

    def __init__(
        self,
        image_size: int = 64,
        dim: int = 32,
        num_codebooks: int = 2,
        num_codes: int = 32,
        width: int = 32,
        res_blocks: int = 1,
        *,
        key: PRNGKeyArray,
        ema: bool = False,
        encoder_kernel: int = 3,
    ):
        s = int(image_size)
        if encoder_kernel not in (1, 3) or isinstance(encoder_kernel, bool):
            raise ValueError(f"MCQVAE: encoder_kernel must be 3 or 1, got {encoder_kernel!r}")
        ek = int(encoder_kernel)
        if s < 16 or s & (s - 1):
            raise ValueError(f"MCQVAE: image_size must be a power of two >= 16, got {image_size}")
        n_down = max(1, int(math.log2(s // GRID)))
        keys = iter(jax.random.split(key, 2 * n_down + 2 * res_blocks + 8))
        chans = [3] + [width] * n_down
        self.down = tuple(
            eqx.nn.Conv2d(chans[i], chans[i + 1], 4, stride=2, padding=1, key=next(keys))
            for i in range(n_down)
        )
        self.enc_mid = eqx.nn.Conv2d(width, width, ek, padding=ek // 2, key=next(keys))
        self.enc_res = tuple(_Residual(width, next(keys), ek) for _ in range(res_blocks))
        self.enc_out = eqx.nn.Conv2d(width, dim, 1, key=next(keys))
        self.quantizer = MultiCodebook(dim, num_codebooks, num_codes, key=next(keys), ema=ema)
        self.dec_in = eqx.nn.Conv2d(dim, width, 3, padding=1, key=next(keys))
        self.dec_res = tuple(_Residual(width, next(keys)) for _ in range(res_blocks))
        outs = [width] * (n_down - 1) + [3]
        self.up = tuple(
            eqx.nn.ConvTranspose2d(width, outs[i], 4, stride=2, padding=1, key=next(keys))
            for i in range(n_down)
        )
        self.image_size = s

    @property
    def grid(self) -> tuple[int, int]:
        """Latent grid ``(h, w)``."""
        h = self.image_size // 2 ** len(self.down)
        return (h, h)

    @property
    def num_codebooks(self) -> int:
        """``C``."""
        return self.quantizer.num_codebooks

    @property
    def num_codes(self) -> int:
        """``K``."""
        return self.quantizer.num_codes

    def check_image(self, image: Array) -> None:
        """Raise a ``ValueError`` naming the problem if ``image`` is not one ``(S, S, 3)`` image."""
        want = (self.image_size, self.image_size, 3)
        if tuple(image.shape) != want:
            raise ValueError(
                f"MCQVAE: expected one RGB image of shape {want} (height, width, channels; "
                f"values in [0, 1]), got shape {tuple(image.shape)}"
            )

    def encode(self, image: Float[Array, "S S 3"]) -> Float[Array, "h w D"]:
        """Continuous latent grid ``z_e`` of one image."""
        self.check_image(image)
        return self.encode_batch(image[None])[0]

    def decode(self, z: Float[Array, "h w D"]) -> Float[Array, "S S 3"]:
        """Image in ``[0, 1]`` from a (quantised) latent grid."""
        return self.decode_batch(z[None])[0]

    def encode_batch(self, images: Float[Array, "B S S 3"]) -> Float[Array, "B h w D"]:
        """:meth:`encode` of a batch (what training uses: one batched convolution per layer)."""
        if images.ndim != 4:
            raise ValueError(
                f"MCQVAE.encode_batch: expected a batch of images (B, S, S, 3), got shape "
                f"{tuple(images.shape)}"
            )
        self.check_image(jax.ShapeDtypeStruct(images.shape[1:], images.dtype))  # (B may be 0)
        h = 2.0 * images - 1.0
        for conv in self.down:
            h = _leaky(_conv(conv, h))
        h = _conv(self.enc_mid, h)
        for block in self.enc_res:
            h = block.channel_last(h)
        return _conv(self.enc_out, jax.nn.relu(h))

    def decode_batch(self, z: Float[Array, "B h w D"]) -> Float[Array, "B S S 3"]:
        """:meth:`decode` of a batch of latent grids."""
        want = (*self.grid, self.dec_in.in_channels)
        if z.ndim != 4 or tuple(z.shape[1:]) != want:
            raise ValueError(
                f"MCQVAE.decode_batch: expected latent grids (B, {want[0]}, {want[1]}, "
                f"{want[2]}), got shape {tuple(z.shape)}"
            )
        h = _conv(self.dec_in, z)
        for block in self.dec_res:
            h = block.channel_last(h)
        h = jax.nn.relu(h)
        for i, conv in enumerate(self.up):
            h = _conv_transpose(conv, h)
            if i < len(self.up) - 1:
                h = _leaky(h)
        return 0.5 * (jnp.tanh(h) + 1.0)

    def codes(self, image: Float[Array, "S S 3"]) -> Int[Array, "h w C"]:
        """Code indices of one image (abduction of the code grid)."""
        return self.quantizer.indices(self.encode(image))

    def decode_codes(self, idx: Int[Array, "h w C"]) -> Float[Array, "S S 3"]:
        """Image of a code grid (prediction)."""
        want = (*self.grid, self.num_codebooks)
        if tuple(idx.shape) != want:
            raise ValueError(f"MCQVAE: a code grid has shape {want}, got {tuple(idx.shape)}")
        return self.decode(self.quantizer.lookup(idx))

    def __call__(
        self, image: Float[Array, "S S 3"]
    ) -> tuple[Float[Array, "S S 3"], Int[Array, "h w C"], dict[str, Array]]:
        """Reconstruction (straight-through), code indices and the codebook/commitment losses."""
        z_q, idx, losses = self.quantizer(self.encode(image))
        return self.decode(z_q), idx, losses


def vq_loss(
    vae: MCQVAE,
    images: Float[Array, "B S S 3"],
    beta: float = 0.25,
    ema_decay: float = 0.99,
):
    """VQ-VAE training loss on a batch.

    With the codebook loss (the default quantiser): ``mse + codebook + beta * commitment``,
    returned as ``(loss, aux)``. With an EMA quantiser (``MCQVAE(..., ema=True)``): ``mse +
    beta * commitment``, returned as ``(loss, aux, new_vae)`` where ``new_vae`` holds the codes
    after one EMA step of decay ``ema_decay`` on this batch; train ``ema_buffers(vae)`` with
    :func:`jcausal.train.fit`, which keeps the update.

    Returns:
        ``aux`` holds ``mse``, ``codebook``, ``commitment`` and ``perplexity_<c>`` for every
        codebook ``c`` (on this batch).
    """
    z = vae.encode_batch(images)
    z_q, idx, losses = vae.quantizer(z)
    recon = vae.decode_batch(z_q)
    mse = jnp.mean((recon - images) ** 2)
    codebook, commit = losses["codebook"], losses["commitment"]
    aux = {"mse": mse, "codebook": codebook, "commitment": commit}
    for c, p in enumerate(perplexity(idx, vae.num_codes)):
        aux[f"perplexity_{c}"] = p
    if vae.quantizer.ema:
        new = eqx.tree_at(lambda v: v.quantizer, vae, vae.quantizer.ema_update(z, idx, ema_decay))
        return mse + beta * commit, aux, new
    return mse + codebook + beta * commit, aux


def restart_dead_codes(
    vae: MCQVAE, images: Float[Array, "B S S 3"], key: PRNGKeyArray, min_usage: float = 0.0
) -> tuple[MCQVAE, Int[Array, " C"]]:
    """Restart dead codes: move them to random encoder outputs of their codebook's slice.

    A code used at most ``min_usage`` (a frequency) on ``images`` is replaced by the encoder's
    sub-vector at a random position, so it competes again (Dhariwal et al. 2020).

    Returns:
        ``(vae, restarted)``: the updated model and the number of codes restarted per codebook.
    """
    z = jax.vmap(vae.encode)(images)
    idx = vae.quantizer.indices(z)
    use = usage(idx, vae.num_codes)
    dead = use <= min_usage
    q = vae.quantizer
    zs = q._split(z).reshape(-1, q.num_codebooks, q.codebooks.shape[2])
    pick = jax.random.randint(key, (q.num_codebooks, q.num_codes), 0, zs.shape[0])
    fresh = zs[pick, jnp.arange(q.num_codebooks)[:, None]]
    new = jnp.where(dead[..., None], fresh, q.codebooks)
    if q.ema:  # the moving averages restart with the code (one member: itself)
        counts = jnp.where(dead, 1.0, q.ema_counts)
        sums = jnp.where(dead[..., None], fresh, q.ema_sums)
        moved = eqx.tree_at(lambda v: (v.codebooks, v.ema_counts, v.ema_sums), q,
                            (new, counts, sums))  # fmt: skip
    else:
        moved = eqx.tree_at(lambda v: v.codebooks, q, new)
    return eqx.tree_at(lambda v: v.quantizer, vae, moved), jnp.sum(dead, -1)


__all__ = ["GRID", "MCQVAE", "restart_dead_codes", "vq_loss"]
