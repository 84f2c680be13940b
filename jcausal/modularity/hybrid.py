"""Hybrids: counterfactuals on a generator's internal channels (Besserve et al. 2020, sec. 3).

A hybrid of ``z1`` (receiver) and ``z2`` (donor) at layer ``l`` with channel set ``E`` is the
output of ``G(z1)`` had the channels ``E`` of layer ``l`` taken the values they have under
``z2``: ``G_after_l(where(E, h_l(z2), h_l(z1)))``. Channel sets are boolean masks ``(C,)`` so
that many of them batch with ``vmap``; :func:`channel_mask` turns indices into a mask. When a
layer's activation is a pytree (a UNet's ``(h, skips)``), only the arrays its stage selects
are hybridised (:meth:`Stages.mix`); the other leaves keep the receiver's values.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool

from .stages import Stages


def channel_mask(indices: Sequence[int] | ArrayLike, num_channels: int) -> Bool[np.ndarray, " C"]:
    """A boolean channel mask ``(num_channels,)`` that is True at ``indices``.

    Raises:
        ValueError: an index is not an integer in ``[0, num_channels)``.
    """
    idx = np.asarray(indices)
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"channel indices must be integers, got {indices!r}")
    idx = idx.astype(int).reshape(-1)
    bad = idx[(idx < 0) | (idx >= num_channels)]
    if bad.size:
        raise ValueError(
            f"channel indices {bad.tolist()} out of range: this layer has {num_channels} "
            f"channels (0..{num_channels - 1})"
        )
    mask = np.zeros(num_channels, bool)
    mask[idx] = True
    return mask


def _as_masks(stages: Stages, z: ArrayLike, layer: str, channels) -> Array:
    """``channels`` (indices, a mask ``(C,)`` or masks ``(M, C)``) as a boolean array."""
    c = stages.channels(z, layer)
    arr = np.asarray(channels) if not isinstance(channels, jax.Array) else channels
    if arr.dtype == bool:
        if arr.ndim not in (1, 2) or arr.shape[-1] != c:
            raise ValueError(
                f"a channel mask at layer {layer!r} must have shape ({c},) or (M, {c}), got "
                f"{arr.shape}"
            )
        return jnp.asarray(arr)
    return jnp.asarray(channel_mask(arr, c))


def _hybrid(stages: Stages, z1, z2, layer: str, mask: Array) -> Array:
    h1, h2 = stages.upto(z1, layer), stages.upto(z2, layer)
    return stages.after(stages.mix(h1, h2, layer, mask), layer)


def hybridise(stages: Stages, z1: ArrayLike, z2: ArrayLike, layer: str, channels) -> Array:
    """The hybrid of one receiver ``z1`` and donor ``z2``: ``G(z1)`` with ``channels`` from ``z2``.

    Args:
        stages: the generator (:class:`Stages`).
        z1: receiver input (one unit, no batch axis).
        z2: donor input, same shape.
        layer: name of the intervened layer.
        channels: channel indices (e.g. ``[0, 3]``, ``[]`` for none) or a boolean mask
            ``(C,)``; or masks ``(M, C)`` for ``M`` channel sets at once.

    Returns:
        The hybrid output, shape of ``G(z1)``; with ``(M, C)`` masks, ``(M, *out)``.

    Raises:
        ValueError: unknown layer, channel index out of range, mask of the wrong shape.
    """
    z1, z2 = jnp.asarray(z1), jnp.asarray(z2)
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {z1.shape} and {z2.shape}")
    masks = _as_masks(stages, z1, layer, channels)
    if masks.ndim == 2:
        return jax.vmap(lambda m: _hybrid(stages, z1, z2, layer, m))(masks)
    return _hybrid(stages, z1, z2, layer, masks)


def hybrids(stages: Stages, z1: ArrayLike, z2: ArrayLike, layer: str, masks) -> Array:
    """Hybrids of ``N`` pairs for ``M`` channel sets, batched with ``vmap`` (under ``jit``).

    The layer's activations of each source are computed once per pair and shared by all
    channel sets.

    Args:
        stages: the generator.
        z1: receivers ``(N, *input)``.
        z2: donors ``(N, *input)``.
        layer: name of the intervened layer.
        masks: boolean channel masks ``(M, C)`` (or channel indices / one mask for ``M = 1``).

    Returns:
        ``(N, M, *out)`` hybrids.

    Raises:
        ValueError: unknown layer, mismatched batches, bad channel indices or mask shape.
    """
    z1, z2 = jnp.asarray(z1), jnp.asarray(z2)
    if z1.shape != z2.shape or z1.ndim < 1:
        raise ValueError(
            f"z1 and z2 must be batches (N, ...) of the same shape, got {z1.shape} and {z2.shape}"
        )
    masks = _as_masks(stages, z1[0], layer, masks)
    if masks.ndim == 1:
        masks = masks[None]
    return _hybrids_jit(stages, z1, z2, layer, masks)


@eqx.filter_jit  # arrays are traced; the layer name and non-array stage parts are static
def _hybrids_jit(stages, z1, z2, layer, masks):
    def one_pair(a, b):
        h1, h2 = stages.upto(a, layer), stages.upto(b, layer)
        return jax.vmap(lambda m: stages.after(stages.mix(h1, h2, layer, m), layer))(masks)

    return jax.vmap(one_pair)(z1, z2)


__all__ = ["channel_mask", "hybridise", "hybrids"]
