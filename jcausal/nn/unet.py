"""The score UNet of a diffusion model and its time-conditioned classifier (flax NNX).

Diff-SCM (Sanchez & Tsaftaris 2022, appendix E) builds both on the guided-diffusion networks of
Dhariwal & Nichol (2021): residual blocks whose normalisation is modulated by an embedding of the
diffusion time (``GroupNorm`` then ``h * (1 + scale) + shift``, "scale-shift norm"), a sinusoidal
time embedding followed by an MLP, skip connections between the down and the up path, and (for
MNIST) no attention. :class:`NoisyClassifier` is the encoder half with a pooled linear head: the
anti-causal predictor ``p(y | x_t)`` whose gradient guides generation.

Images are NHWC: ``(B, H, W, C)``, or one image ``(H, W, C)`` (the SCM engine vmaps mechanisms
one unit at a time; a single image gets a batch axis inside). Spatial sizes need not be powers
of two: a stride-2 convolution halves ``28 -> 14 -> 7`` (rounding up), and the up path resizes
to the exact size of the skip it is joined with, so odd sizes (``7 -> 4 -> 7``) work too.

Dropout draws from a flax random stream; wrap the network in :class:`jcausal.nn.Pure` and pass
``key=`` on every training call (``Pure(net)(x, t, key=k)``), or use ``Pure(net).eval()`` for
the deterministic network (sampling, inversion).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, ArrayLike, Float

from .conv import conv_general_dilated

# Convolutions whose gradients keep XLA:CPU's fast kernel inside compiled loops (see .conv).
_Conv = functools.partial(nnx.Conv, conv_general_dilated=conv_general_dilated)

GROUPS = 8  # GroupNorm groups (guided-diffusion uses 32 with wider channels)


def timestep_embedding(t: ArrayLike, dim: int, max_period: float = 10_000.0) -> Array:
    """Sinusoidal embedding of diffusion times (Vaswani et al. 2017), ``(B,) -> (B, dim)``.

    Args:
        t: diffusion times (step indices ``0..T-1``, int or float), shape ``(B,)``.
        dim: embedding size (even).
        max_period: longest wavelength, in steps.

    Returns:
        ``[cos(t w_k), sin(t w_k)]`` with ``w_k = max_period^{-k / (dim / 2)}``.
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def _groups(channels: int) -> int:
    if channels % GROUPS:
        raise ValueError(
            f"channel count {channels} is not divisible by {GROUPS} GroupNorm groups; choose a "
            f"base width that is a multiple of {GROUPS} (e.g. 16 or 32)"
        )
    return GROUPS


class TimeEmbedding(nnx.Module):
    """Sinusoidal embedding of ``t`` followed by Linear - SiLU - Linear (width ``4 * base``)."""

    def __init__(self, base: int, *, rngs: nnx.Rngs):
        self.base = base
        self.fc1 = nnx.Linear(base, 4 * base, rngs=rngs)
        self.fc2 = nnx.Linear(4 * base, 4 * base, rngs=rngs)

    def __call__(self, t: Array) -> Array:
        return self.fc2(jax.nn.silu(self.fc1(timestep_embedding(t, self.base))))


class ResBlock(nnx.Module):
    """Residual block with scale-shift norm: the time embedding modulates the second norm.

    ``h = conv(silu(norm(x)))``; ``h = norm(h) * (1 + scale) + shift`` with ``(scale, shift)``
    linear in ``silu(emb)``; ``h = conv(dropout(silu(h)))``; output ``skip(x) + h``. The last
    convolution starts at zero (as in guided-diffusion), so an untrained block is the identity
    on its skip path.

    Args:
        cin: input channels.
        cout: output channels.
        emb: size of the time embedding.
        dropout: dropout rate before the last convolution.
        rngs: flax random streams (``params`` for initialisation, ``dropout`` for the masks).
    """

    def __init__(self, cin: int, cout: int, emb: int, dropout: float, *, rngs: nnx.Rngs):
        self.norm1 = nnx.GroupNorm(cin, num_groups=_groups(cin), rngs=rngs)
        self.conv1 = _Conv(cin, cout, (3, 3), padding=1, rngs=rngs)
        self.emb = nnx.Linear(emb, 2 * cout, rngs=rngs)
        self.norm2 = nnx.GroupNorm(cout, num_groups=_groups(cout), rngs=rngs)
        self.drop = nnx.Dropout(dropout, rngs=rngs)
        self.conv2 = _Conv(
            cout, cout, (3, 3), padding=1, kernel_init=nnx.initializers.zeros, rngs=rngs
        )
        self.skip = _Conv(cin, cout, (1, 1), rngs=rngs) if cin != cout else None

    def __call__(self, x: Array, emb: Array) -> Array:
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        scale, shift = jnp.split(self.emb(jax.nn.silu(emb))[:, None, None, :], 2, axis=-1)
        h = self.norm2(h) * (1.0 + scale) + shift
        h = self.conv2(self.drop(jax.nn.silu(h)))
        return (x if self.skip is None else self.skip(x)) + h


class Down(nnx.Module):
    """3x3 convolution with stride 2: ``H -> ceil(H / 2)``."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.conv = _Conv(channels, channels, (3, 3), strides=2, padding=1, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        return self.conv(x)


class Up(nnx.Module):
    """Nearest-neighbour resize to a given spatial size, then a 3x3 convolution."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.conv = _Conv(channels, channels, (3, 3), padding=1, rngs=rngs)

    def __call__(self, x: Array, size: tuple[int, int]) -> Array:
        x = jax.image.resize(x, (x.shape[0], *size, x.shape[-1]), "nearest")
        return self.conv(x)


def _batched(x: Array, t: ArrayLike) -> tuple[Array, Array, bool]:
    """One image ``(H, W, C)`` gets a batch axis; ``t`` is broadcast to ``(B,)``."""
    x = jnp.asarray(x)
    if x.ndim not in (3, 4):
        raise ValueError(
            f"images must be (H, W, C) or (B, H, W, C) (NHWC), got shape {tuple(x.shape)}"
        )
    single = x.ndim == 3
    if single:
        x = x[None]
    t = jnp.broadcast_to(jnp.asarray(t), (x.shape[0],))
    return x, t, single


class _Encoder(nnx.Module):
    """The down path shared by :class:`UNet` and :class:`NoisyClassifier`."""

    def __init__(
        self,
        in_channels: int,
        base: int,
        mults: Sequence[int],
        num_res: int,
        dropout: float,
        *,
        rngs: nnx.Rngs,
    ):
        emb = 4 * base
        self.time = TimeEmbedding(base, rngs=rngs)
        self.conv_in = _Conv(in_channels, base, (3, 3), padding=1, rngs=rngs)
        blocks, downs, chans = [], [], [base]
        ch = base
        for level, mult in enumerate(mults):
            for _ in range(num_res):
                blocks.append(ResBlock(ch, base * mult, emb, dropout, rngs=rngs))
                ch = base * mult
                chans.append(ch)
            if level < len(mults) - 1:
                downs.append(Down(ch, rngs=rngs))
                chans.append(ch)
        self.blocks = nnx.List(blocks)
        self.downs = nnx.List(downs)
        self.mid = ResBlock(ch, ch, emb, dropout, rngs=rngs)
        self.levels = len(mults)
        self.num_res = num_res
        self.channels = ch
        self.skip_channels = tuple(chans)

    def __call__(self, x: Array, emb: Array) -> tuple[Array, list[Array]]:
        h = self.conv_in(x)
        skips = [h]
        for level in range(self.levels):
            for i in range(self.num_res):
                h = self.blocks[level * self.num_res + i](h, emb)
                skips.append(h)
            if level < self.levels - 1:
                h = self.downs[level](h)
                skips.append(h)
        return self.mid(h, emb), skips


class UNet(nnx.Module):
    """The ε-network ``eps(x_t, t)`` of a diffusion model (guided-diffusion UNet, no attention).

    Down path: a 3x3 input convolution, then per level ``num_res`` residual blocks of width
    ``base * mult`` and a stride-2 downsampling between levels; a middle residual block; the
    up path mirrors it with ``num_res + 1`` blocks per level, each fed the matching skip
    activation (concatenated), and nearest-neighbour upsampling to the skip's size; output
    GroupNorm - SiLU - 3x3 convolution (zero at initialisation, so an untrained network
    predicts ``eps = 0``). Every residual block is modulated by the time embedding (and by a
    class embedding when ``num_classes`` is set).

    Args:
        in_channels: image channels ``C``.
        base: base width (32 in the Diff-SCM MNIST model of this library; a multiple of 8).
        mults: channel multiplier per level; ``(1, 2, 2)`` gives ``28 -> 14 -> 7``.
        num_res: residual blocks per level on the down path.
        dropout: dropout rate in the residual blocks (0.1).
        num_classes: if set, a learned class embedding is added to the time embedding and the
            call takes ``y`` (a class-conditional score model).
        rngs: flax random streams, e.g. ``nnx.Rngs(0)`` (``params`` and ``dropout``).

    Call ``net(x, t, y=None)`` with ``x`` ``(B, H, W, C)`` or ``(H, W, C)`` and ``t`` the
    diffusion step(s) ``(B,)`` or a scalar; returns ``eps`` of ``x``'s shape.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base: int = 32,
        mults: Sequence[int] = (1, 2, 2),
        num_res: int = 1,
        dropout: float = 0.1,
        num_classes: int | None = None,
        *,
        rngs: nnx.Rngs,
    ):
        mults = tuple(int(m) for m in mults)
        if not mults or min(mults) < 1 or int(num_res) < 1 or int(in_channels) < 1:
            raise ValueError(
                f"UNet needs at least one level with positive multipliers, num_res >= 1 and "
                f"in_channels >= 1; got mults={mults}, num_res={num_res}, "
                f"in_channels={in_channels}"
            )
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"UNet dropout is a rate in [0, 1), got {dropout}")
        emb = 4 * base
        self.encoder = _Encoder(in_channels, base, mults, num_res, dropout, rngs=rngs)
        self.label = nnx.Embed(num_classes, emb, rngs=rngs) if num_classes else None
        self.num_classes = num_classes
        skips = list(self.encoder.skip_channels)
        ch = self.encoder.channels
        blocks, ups = [], []
        for level in reversed(range(len(mults))):
            for _ in range(num_res + 1):
                cout = base * mults[level]
                blocks.append(ResBlock(ch + skips.pop(), cout, emb, dropout, rngs=rngs))
                ch = cout
            if level > 0:
                ups.append(Up(ch, rngs=rngs))
        self.blocks = nnx.List(blocks)
        self.ups = nnx.List(ups)
        self.levels = len(mults)
        self.num_res = num_res
        self.norm_out = nnx.GroupNorm(ch, num_groups=_groups(ch), rngs=rngs)
        self.conv_out = _Conv(
            ch, in_channels, (3, 3), padding=1, kernel_init=nnx.initializers.zeros, rngs=rngs
        )

    def __call__(
        self,
        x: Float[Array, "*batch H W C"],
        t: ArrayLike,
        y: ArrayLike | None = None,
    ) -> Float[Array, "*batch H W C"]:
        x, t, single = _batched(x, t)
        emb = self.encoder.time(t)
        if self.label is not None:
            if y is None:
                raise ValueError("this UNet is class-conditional (num_classes set): pass y")
            emb = emb + self.label(jnp.broadcast_to(jnp.asarray(y, jnp.int32), t.shape))
        h, skips = self.encoder(x, emb)
        k = 0
        for level in range(self.levels):
            for _ in range(self.num_res + 1):
                h = self.blocks[k](jnp.concatenate([h, skips.pop()], axis=-1), emb)
                k += 1
            if level < self.levels - 1:
                h = self.ups[level](h, skips[-1].shape[1:3])
        out = self.conv_out(jax.nn.silu(self.norm_out(h)))
        return out[0] if single else out


class NoisyClassifier(nnx.Module):
    """Time-conditioned anti-causal predictor ``p(y | x_t)``: the UNet's encoder half + pooled head.

    The down path and middle block of :class:`UNet`, then GroupNorm - SiLU - global average
    pooling - Linear. It is trained on noised images ``x_t`` at random ``t`` (the guidance of
    Diff-SCM needs ``grad_x log p(y | x_t)`` at every noise level).

    Args:
        num_classes: number of classes: the outputs are logits (discrete parents).
        out_dim: instead of ``num_classes``: the number of real outputs (a regressor of
            continuous parents, e.g. the means of a Gaussian ``p(y | x_t)``).
        in_channels: image channels.
        base: base width.
        mults: channel multipliers per level.
        num_res: residual blocks per level.
        dropout: dropout rate in the residual blocks.
        rngs: flax random streams.

    Call ``net(x, t)`` with ``x`` ``(B, H, W, C)`` or ``(H, W, C)``; returns ``(B, outputs)``
    (or ``(outputs,)`` for one image).
    """

    def __init__(
        self,
        num_classes: int | None = 10,
        *,
        out_dim: int | None = None,
        in_channels: int = 1,
        base: int = 32,
        mults: Sequence[int] = (1, 2, 2),
        num_res: int = 1,
        dropout: float = 0.0,
        rngs: nnx.Rngs,
    ):
        outputs = out_dim if out_dim is not None else num_classes
        if outputs is None or int(outputs) < 1:
            raise ValueError(
                f"NoisyClassifier needs num_classes >= 1 (logits) or out_dim >= 1 (regression); "
                f"got num_classes={num_classes}, out_dim={out_dim}"
            )
        mults = tuple(int(m) for m in mults)
        self.encoder = _Encoder(in_channels, base, mults, num_res, dropout, rngs=rngs)
        ch = self.encoder.channels
        self.norm = nnx.GroupNorm(ch, num_groups=_groups(ch), rngs=rngs)
        self.head = nnx.Linear(ch, int(outputs), rngs=rngs)
        self.outputs = int(outputs)
        self.regression = out_dim is not None

    def __call__(self, x: Float[Array, "*batch H W C"], t: ArrayLike) -> Float[Array, "*batch k"]:
        x, t, single = _batched(x, t)
        h, _ = self.encoder(x, self.encoder.time(t))
        h = jnp.mean(jax.nn.silu(self.norm(h)), axis=(1, 2))
        out = self.head(h)
        return out[0] if single else out


__all__ = ["NoisyClassifier", "ResBlock", "TimeEmbedding", "UNet", "timestep_embedding"]
