"""A channel-last convolution whose gradients stay fast inside compiled loops on XLA:CPU.

Why this exists: JAX differentiates ``lax.conv_general_dilated`` into two more convolutions whose
dimension numbers are not the channel-last ones (the input gradient reads the kernel as
``HWOI``, the weight gradient treats the batch as features: ``f01b_i01o->01bf``). At the top
level of a program XLA:CPU rewrites such convolutions into the ``NHWC``/``HWIO`` form its fast
(Eigen) kernel needs by inserting transposes; inside the body of a ``while`` loop (``lax.scan``,
``fori_loop``: guided DDIM steps, ``fit``'s loop of training steps) it does not, and they run as
naive loop nests. Measured here: a two-layer conv net's weight gradient 11 ms as a program of its
own against 320 ms per step inside ``fori_loop``; the same pattern as jax-ml/jax#12868.

:func:`conv_general_dilated` has the signature of ``lax.conv_general_dilated`` and computes the
same function, but its custom VJP writes both backward convolutions in channel-last form itself
(transposing the operands explicitly), so the fast kernel is used wherever the program runs.
Pass it to flax as ``nnx.Conv(..., conv_general_dilated=conv_general_dilated)``. Anything it does
not cover (other dimension numbers, grouped convolutions, sharding annotations) is handed to
``lax.conv_general_dilated`` unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float

__all__ = ["conv_general_dilated"]


def _channel_last(ndim: int) -> tuple[str, str, str]:
    spatial = "DHW"[3 - (ndim - 2) :] if ndim - 2 <= 3 else None
    if spatial is None:
        return ("", "", "")
    return ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")


def _is_channel_last(dimension_numbers: Any, ndim: int) -> bool:
    """Whether ``dimension_numbers`` mean ``N...C`` / ``...IO`` / ``N...C`` for rank ``ndim``."""
    if not 3 <= ndim <= 5:
        return False
    if dimension_numbers is None:  # lax's default is channel-first
        return False
    want = lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, _channel_last(ndim))
    try:
        got = lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, dimension_numbers)
    except (TypeError, ValueError):
        return False
    return tuple(map(tuple, got)) == tuple(map(tuple, want))


def _dilated(shape: Sequence[int], dilation: Sequence[int]) -> list[int]:
    return [0 if s == 0 else 1 + d * (s - 1) for s, d in zip(shape, dilation, strict=True)]


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6, 7))
def _conv(x, w, strides, pads, lhs_dil, rhs_dil, precision, out_type):
    dn = _channel_last(x.ndim)
    return lax.conv_general_dilated(
        x,
        w,
        strides,
        pads,
        lhs_dilation=lhs_dil,
        rhs_dilation=rhs_dil,
        dimension_numbers=dn,
        precision=precision,
        preferred_element_type=out_type,
    )


def _conv_fwd(x, w, strides, pads, lhs_dil, rhs_dil, precision, out_type):
    return _conv(x, w, strides, pads, lhs_dil, rhs_dil, precision, out_type), (x, w)


def _conv_bwd(strides, pads, lhs_dil, rhs_dil, precision, out_type, res, g):
    x, w = res
    ns = x.ndim - 2
    dn = _channel_last(x.ndim)
    spatial = tuple(range(ns))
    lhs_d = _dilated(x.shape[1:-1], lhs_dil)
    rhs_d = _dilated(w.shape[:ns], rhs_dil)
    out_d = _dilated(g.shape[1:-1], strides)
    lo = [p[0] for p in pads]

    # Input gradient: the output gradient convolved with the spatially flipped kernel whose
    # input and output channels are swapped (physically, so the kernel is HWIO again).
    w_t = jnp.swapaxes(jnp.flip(w, spatial), -1, -2)
    before = [r - p - 1 for r, p in zip(rhs_d, lo, strict=True)]
    after = [a + r - 1 - o - b for a, r, o, b in zip(lhs_d, rhs_d, out_d, before, strict=True)]
    dx = lax.conv_general_dilated(
        g.astype(x.dtype) if out_type is not None else g,
        w_t,
        window_strides=lhs_dil,
        padding=list(zip(before, after, strict=True)),
        lhs_dilation=strides,
        rhs_dilation=rhs_dil,
        dimension_numbers=dn,
        precision=precision,
    )

    # Weight gradient: the input's channels act as the batch and its batch as the features;
    # the output gradient is the kernel (spatial, batch as input channels, output channels).
    x_t = jnp.swapaxes(x, 0, -1)  # (C, *spatial, N)
    g_t = jnp.moveaxis(g, 0, -2)  # (*spatial_out, N, O)
    hi = [(o - a) + (r - p - 1) for o, a, r, p in zip(out_d, lhs_d, rhs_d, lo, strict=True)]
    dw = lax.conv_general_dilated(
        x_t,
        g_t.astype(x.dtype) if out_type is not None else g_t,
        window_strides=rhs_dil,
        padding=list(zip(lo, hi, strict=True)),
        lhs_dilation=lhs_dil,
        rhs_dilation=strides,
        dimension_numbers=dn,
        precision=precision,
    )  # (C, *kernel_spatial, O)
    dw = jnp.moveaxis(dw, 0, -2)
    return dx.astype(x.dtype), dw.astype(w.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv_general_dilated(
    lhs: Float[Array, "N *spatial C"],
    rhs: Float[Array, "*kernel I O"],
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
    **kwargs: Any,
) -> Float[Array, "N *spatial_out O"]:
    """``lax.conv_general_dilated`` with channel-last backward convolutions (see module doc).

    Args:
        lhs: input, ``(N, *spatial, C)`` for the fast path.
        rhs: kernel, ``(*kernel, C, O)``.
        window_strides: strides per spatial axis.
        padding: ``"SAME"``, ``"VALID"`` or one ``(low, high)`` pair per spatial axis.
        lhs_dilation: input dilation per spatial axis (transposed convolutions).
        rhs_dilation: kernel (atrous) dilation per spatial axis.
        dimension_numbers: as in ``lax``; only channel-last (``NHWC``/``HWIO``/``NHWC`` and
            their 1-D and 3-D forms) takes the fast-gradient path.
        feature_group_count: grouped convolution; other than 1 takes the plain path.
        batch_group_count: as in ``lax``; other than 1 takes the plain path.
        precision: as in ``lax``, used by the backward convolutions too.
        preferred_element_type: accumulation/output type of the forward convolution.
        **kwargs: passed to ``lax.conv_general_dilated`` (e.g. ``out_sharding``); a value
            other than ``None`` takes the plain path.

    Returns:
        The convolution, ``(N, *spatial_out, O)``; its gradients with respect to both
        operands equal ``lax.conv_general_dilated``'s.
    """
    ns = lhs.ndim - 2
    plain = (
        not _is_channel_last(dimension_numbers, lhs.ndim)
        or feature_group_count != 1
        or batch_group_count != 1
        or rhs.ndim != lhs.ndim
        or any(v is not None for v in kwargs.values())
        # lax refuses string padding with an input dilation; let it say so
        or (isinstance(padding, str) and any(d != 1 for d in (lhs_dilation or ())))
    )
    if plain:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count,
            batch_group_count=batch_group_count,
            precision=precision,
            preferred_element_type=preferred_element_type,
            **kwargs,
        )
    strides = tuple(int(s) for s in window_strides)
    lhs_dil = tuple(int(d) for d in (lhs_dilation or (1,) * ns))
    rhs_dil = tuple(int(d) for d in (rhs_dilation or (1,) * ns))
    if isinstance(padding, str):
        in_d = _dilated(lhs.shape[1:-1], lhs_dil)
        k_d = _dilated(rhs.shape[:ns], rhs_dil)
        pads = tuple(
            tuple(int(v) for v in p) for p in lax.padtype_to_pads(in_d, k_d, strides, padding)
        )
    else:
        pads = tuple((int(a), int(b)) for a, b in padding)
    return _conv(lhs, rhs, strides, pads, lhs_dil, rhs_dil, precision, preferred_element_type)
