"""Strided transposed convolution as one stride-1 convolution and a pixel shuffle.

Why this exists: ``lax.conv_transpose`` (and so ``nnx.ConvTranspose``) dilates its input with
``s - 1`` zeros between pixels and convolves the result, so with stride 2 three of every four
products multiply a zero, and its gradients are convolutions over that dilated input. On
XLA:CPU the kernel gradient of such a convolution was the largest single cost of the Deep SCM
decoder's training step, and grew most when the batch was split over devices (a profile of
the step at batch 8: 11.9 ms against 31.3 ms at batch 64).

Every output pixel of a stride-``s`` transposed convolution belongs to one of ``s`` phases per
spatial axis (its index modulo ``s``), and each phase is an ordinary correlation of the
*undilated* input with every ``s``-th tap of the kernel. :func:`conv_transpose` gathers the
taps of all phases into one kernel of ``ceil(k / s) + 1`` (or fewer) taps per axis with
``prod(s) * O`` output channels, runs one stride-1 convolution (through
:func:`jcausal.nn.conv.conv_general_dilated`, whose gradients stay on the fast kernel inside
compiled loops), and interleaves the phases ("depth to space"). The result is the same
function as ``lax.conv_transpose`` (tested to float rounding against it); only the order of
the additions differs. Sizes where some phase would have a different number of outputs than
the others (output length not ``s`` times the input's) take the dilated form instead, still
through the fast-gradient convolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float

from .conv import conv_general_dilated

__all__ = ["ConvTranspose", "conv_transpose", "transpose_padding"]


def transpose_padding(kernel: int, stride: int, padding: str | tuple[int, int]) -> tuple[int, int]:
    """Padding of the dilated input that ``lax.conv_transpose`` uses for one spatial axis.

    Args:
        kernel: kernel taps along the axis.
        stride: stride (input dilation) along the axis.
        padding: ``"SAME"`` (output length ``stride * input``), ``"VALID"`` (every product
            of a kernel tap with an input pixel, output ``stride * (input - 1) + kernel``),
            or an explicit ``(low, high)`` pair.

    Returns:
        ``(low, high)`` padding of the dilated input.
    """
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "SAME":
            total = kernel + stride - 2
            low = kernel - 1 if stride > kernel - 1 else -(-total // 2)
        elif mode == "VALID":
            total = kernel + stride - 2 + max(kernel - stride, 0)
            low = kernel - 1
        else:
            raise ValueError(
                f"padding must be 'SAME', 'VALID' or (low, high) pairs, got {padding!r}"
            )
        return low, total - low
    low, high = (int(v) for v in padding)
    return low, high


def _phase_taps(kernel: int, stride: int, low: int) -> tuple[np.ndarray, int]:
    """0/1 map ``(offset, phase, tap)`` of one axis, and the lowest input offset.

    Output ``j = stride * q + r`` (phase ``r``) sums ``x[q + o] * w[t]`` over the taps ``t``
    with ``(r + t - low) % stride == 0``, at input offset ``o = (r + t - low) // stride``.
    """
    entries = [
        ((r + t - low) // stride, r, t)
        for r in range(stride)
        for t in range(kernel)
        if (r + t - low) % stride == 0
    ]
    lo = min(o for o, _, _ in entries)
    hi = max(o for o, _, _ in entries)
    table = np.zeros((hi - lo + 1, stride, kernel), np.float32)
    for o, r, t in entries:
        table[o - lo, r, t] = 1.0
    return table, lo


def conv_transpose(
    x: Float[Array, "N *spatial C"],
    kernel: Float[Array, "*taps C O"],
    strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]] = "SAME",
) -> Float[Array, "N *spatial_out O"]:
    """``lax.conv_transpose(x, kernel, strides, padding)`` for channel-last inputs.

    Computed without multiplying the zeros of a dilated input (see the module doc).

    Args:
        x: input, ``(N, *spatial, C)`` with one to three spatial axes.
        kernel: ``(*taps, C, O)`` (``HWIO`` for images), not flipped (as
            ``lax.conv_transpose(..., transpose_kernel=False)``, flax's default).
        strides: stride per spatial axis.
        padding: ``"SAME"``, ``"VALID"`` or one ``(low, high)`` pair per spatial axis, with
            ``lax.conv_transpose``'s meaning.

    Returns:
        ``(N, *spatial_out, O)``; ``spatial_out = strides * spatial`` for ``"SAME"``.

    Raises:
        ValueError: if the ranks of ``x``, ``kernel`` and ``strides`` do not agree, or the
            channels of ``x`` are not the kernel's input channels.
    """
    ns = x.ndim - 2
    if not 1 <= ns <= 3 or kernel.ndim != ns + 2 or len(strides) != ns:
        raise ValueError(
            f"conv_transpose: x {x.shape} (N, *spatial, C), kernel {kernel.shape} (*taps, C, O) "
            f"and strides {tuple(strides)} must have 1-3 spatial axes in common"
        )
    if x.shape[-1] != kernel.shape[-2]:
        raise ValueError(
            f"conv_transpose: x has {x.shape[-1]} channels, the kernel expects {kernel.shape[-2]}"
        )
    strides = tuple(int(s) for s in strides)
    taps = kernel.shape[:ns]
    if isinstance(padding, str):
        pads = [transpose_padding(k, s, padding) for k, s in zip(taps, strides, strict=True)]
    else:
        pads = [
            transpose_padding(k, s, tuple(p))
            for k, s, p in zip(taps, strides, padding, strict=True)
        ]
    sizes = x.shape[1:-1]
    out = [
        (n - 1) * s + 1 + lo + hi - k + 1
        for n, s, (lo, hi), k in zip(sizes, strides, pads, taps, strict=True)
    ]
    if any(o <= 0 for o in out) or x.shape[0] == 0:
        # Nothing to compute (lax returns the same empty array; its gradients are zeros).
        shape = (x.shape[0], *(max(o, 0) for o in out), kernel.shape[-1])
        return jnp.zeros(shape, jnp.result_type(x, kernel))
    dn = (
        ("NHC", "HIO", "NHC")
        if ns == 1
        else ("NHWC", "HWIO", "NHWC")
        if ns == 2
        else ("NDHWC", "DHWIO", "NDHWC")
    )
    if any(o != s * n for o, s, n in zip(out, strides, sizes, strict=True)):
        # Phases of unequal length: the dilated form (same function, zeros multiplied).
        return conv_general_dilated(
            x, kernel, (1,) * ns, pads, lhs_dilation=strides, dimension_numbers=dn
        )

    tables, lows = zip(
        *(_phase_taps(k, s, lo) for k, s, (lo, _) in zip(taps, strides, pads, strict=True)),
        strict=True,
    )
    # Combined kernel (*offsets, C, *phases, O): one einsum with the 0/1 tap maps, so the
    # kernel's gradient is gathered back to its taps by autodiff.
    letters = "abc"[:ns]
    offs, phs, tps = "".join(letters), "".join("pqr"[:ns]), "".join("xyz"[:ns])
    spec = ",".join(f"{o}{p}{t}" for o, p, t in zip(offs, phs, tps, strict=True))
    combined = jnp.einsum(
        f"{spec},{tps}io->{offs}i{phs}o", *(jnp.asarray(t, kernel.dtype) for t in tables), kernel
    )
    c_in, c_out = kernel.shape[-2], kernel.shape[-1]
    combined = combined.reshape(*combined.shape[:ns], c_in, -1)
    conv_pads = [(-lo, len(t) - 1 + lo) for t, lo in zip(tables, lows, strict=True)]
    y = conv_general_dilated(x, combined, (1,) * ns, conv_pads, dimension_numbers=dn)
    # (N, *spatial, *phases, O) -> interleave each phase axis after its spatial axis.
    y = y.reshape(y.shape[0], *sizes, *strides, c_out)
    order = [0] + [a for d in range(ns) for a in (1 + d, 1 + ns + d)] + [1 + 2 * ns]
    y = y.transpose(order)
    return y.reshape(y.shape[0], *(s * n for s, n in zip(strides, sizes, strict=True)), c_out)


class ConvTranspose(nnx.ConvTranspose):
    """``nnx.ConvTranspose`` computed by :func:`conv_transpose` (same parameters, same values).

    The parameters, their names, shapes and initialisation are ``nnx.ConvTranspose``'s (a
    checkpoint of one restores into the other). Configurations :func:`conv_transpose` does
    not cover (masked or dilated kernels, ``transpose_kernel=True``, circular or integer
    padding, an explicit ``dtype``, ``precision`` or ``preferred_element_type``) are computed
    by ``nnx.ConvTranspose`` itself.
    """

    def __call__(self, inputs: Array) -> Array:
        ns = len(self.kernel_shape) - 2
        strides = self.strides if self.strides is not None else 1
        strides = (strides,) * ns if isinstance(strides, int) else tuple(strides)
        padding = self.padding
        plain_pads = isinstance(padding, str) and padding.upper() in ("SAME", "VALID")
        pair_pads = (
            not isinstance(padding, (str, int))
            and len(padding) == ns
            and all(isinstance(p, (tuple, list)) and len(p) == 2 for p in padding)
        )
        dilation = self.kernel_dilation
        undilated = dilation is None or all(d == 1 for d in np.atleast_1d(dilation))
        supported = (
            (plain_pads or pair_pads)
            and self.mask is None
            and undilated
            and not self.transpose_kernel
            and self.dtype is None
            and self.precision is None
            and self.preferred_element_type is None
            and inputs.ndim >= ns + 1
        )
        if not supported:
            return super().__call__(inputs)
        kernel = self.kernel[...]
        # Leading batch axes (none, one or several) are flattened into one, as flax does.
        single = inputs.ndim == ns + 1
        batch = () if single else inputs.shape[: inputs.ndim - ns - 1]
        x = inputs[None] if single else inputs.reshape(-1, *inputs.shape[-ns - 1 :])
        x, kernel = jnp.asarray(x), jnp.asarray(kernel)
        dtype = jnp.result_type(x, kernel)
        y = conv_transpose(x.astype(dtype), kernel.astype(dtype), strides, padding)
        if self.bias is not None:
            y = y + jnp.asarray(self.bias[...], dtype)
        return y[0] if single else y.reshape(*batch, *y.shape[1:])
