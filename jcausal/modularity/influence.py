"""Influence maps: where each internal channel acts on the output (Besserve et al. 2020).

The influence map of channel ``c`` at layer ``l`` is ``E |hybrid(z1, z2; l, {c}) - G(z1)|``,
the mean absolute change of each output element when that one channel takes the donor's
values, over many (receiver, donor) pairs: an image per channel.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float

from .hybrid import hybrids
from .stages import Stages


def influence_maps(
    stages: Stages,
    z1: ArrayLike,
    z2: ArrayLike,
    layer: str,
    masks: ArrayLike | None = None,
    chunk: int = 64,
) -> Float[np.ndarray, "M ..."]:
    """Mean absolute change of the output under single-channel (or channel-group) hybrids.

    Args:
        stages: the generator.
        z1: receivers ``(N, *input)``.
        z2: donors ``(N, *input)``.
        layer: name of the intervened layer.
        masks: boolean channel groups ``(M, C)``; default one group per channel (the
            identity, ``M = C``).
        chunk: pairs per compiled batch (bounds memory: ``chunk * M`` outputs at once).

    Returns:
        ``(M, *out)`` influence maps in the output's units, as numpy.

    Raises:
        ValueError: unknown layer, bad masks, fewer than one pair, ``chunk < 1``.
    """
    z1, z2 = jnp.asarray(z1), jnp.asarray(z2)
    if z1.shape != z2.shape or z1.ndim < 1 or len(z1) < 1:
        raise ValueError(
            f"z1 and z2 must be non-empty batches of the same shape, got {z1.shape}, {z2.shape}"
        )
    if int(chunk) != chunk or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    c = stages.channels(z1[0], layer)
    masks = np.eye(c, dtype=bool) if masks is None else np.asarray(masks)
    if masks.dtype != bool or masks.ndim != 2 or masks.shape[1] != c:
        raise ValueError(
            f"masks at layer {layer!r} must be boolean (M, {c}), got {masks.dtype} {masks.shape}"
        )
    # G(z1) is the hybrid with the empty set, computed in the same batched call (last row), so
    # a channel that cannot change the output gives exactly zero, not rounding noise.
    with_base = np.concatenate([masks, np.zeros((1, c), bool)])
    total = None
    for s in range(0, len(z1), int(chunk)):
        h = hybrids(stages, z1[s : s + chunk], z2[s : s + chunk], layer, with_base)
        part = np.asarray(jnp.sum(jnp.abs(h[:, :-1] - h[:, -1:]), axis=0))
        total = part if total is None else total + part
    return total / len(z1)


__all__ = ["influence_maps"]
