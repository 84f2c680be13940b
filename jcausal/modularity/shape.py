"""Slant and width of a digit image, from the moments of its ink mask.

:mod:`jcausal.data.morphology` measures thickness and intensity; the module x attribute table
of the modularity experiment also needs slant and width. These follow Morpho-MNIST's
definitions in spirit (moment-based shear, width of the de-slanted digit) but are written here
from their definitions, not ported: the mask is the same as morphology's (pixels above
``min + threshold * (max - min)``), ``x`` is the column, ``y`` the row counted upwards.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float, Shaped

from ..data.morphology import THRESHOLD


def _coords(img: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    img = np.asarray(img, dtype=float)
    if img.ndim != 2 or not np.all(np.isfinite(img)):
        raise ValueError(f"image must be a finite 2-D grey-level array, got shape {img.shape}")
    lo, hi = img.min(), img.max()
    if hi <= lo:
        return np.zeros(0), np.zeros(0)
    rows, cols = np.nonzero(img >= lo + (hi - lo) * threshold)
    return cols.astype(float), -rows.astype(float)


def measure_slant(img: Shaped[np.ndarray, "H W"], threshold: float = THRESHOLD) -> float:
    """Slant in radians: ``arctan(cov(x, y) / var(y))`` of the ink mask; > 0 leans right.

    A parallelogram whose columns shift by ``s`` pixels per row upwards has slant
    ``arctan(s)``. 0 for an empty image or a single row of ink.
    """
    x, y = _coords(img, threshold)
    if x.size < 2 or np.var(y) == 0:
        return 0.0
    return float(np.arctan(np.mean((x - x.mean()) * (y - y.mean())) / np.var(y)))


def measure_width(img: Shaped[np.ndarray, "H W"], threshold: float = THRESHOLD) -> float:
    """Width in pixels of the de-slanted ink mask: extent of ``x - tan(slant) y``, plus one.

    An upright ``w``-pixel-wide bar has width ``w``; 0 for an empty image.
    """
    x, y = _coords(img, threshold)
    if x.size == 0:
        return 0.0
    u = x - np.tan(measure_slant(img, threshold)) * (y - y.mean())
    return float(u.max() - u.min() + 1.0)


def measure_shape(
    images: Shaped[np.ndarray, "N H W"], threshold: float = THRESHOLD
) -> tuple[Float[np.ndarray, " N"], Float[np.ndarray, " N"]]:
    """Slant (radians) and width (pixels) of each image of an ``(N, H, W)`` stack."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must have shape (N, H, W), got {images.shape}")
    return (
        np.array([measure_slant(x, threshold) for x in images]),
        np.array([measure_width(x, threshold) for x in images]),
    )


__all__ = ["measure_shape", "measure_slant", "measure_width"]
