"""Continuous parents for a diffusion image mechanism: the standardised guidance target.

Diff-SCM guides generation with ``grad_x log p(pa | x_t)``. For continuous parents
(Morpho-MNIST's stroke thickness ``t`` in pixels and intensity ``i`` in grey levels) the
guidance network is a noise-conditioned regressor of the parents and ``p(pa | x_t)`` a
Gaussian around its output (:class:`jcausal.image.DiffusionImage` with ``kind="gaussian"``).
Thickness and intensity live on scales two orders of magnitude apart, so the regressor
predicts them *standardised*; :class:`Standardise` is that map, used both to make the
regressor's training targets and as the mechanism's ``target(parents)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float


class Standardise(eqx.Module):
    """``parents -> ((pa[n] - loc[n]) / scale[n] for n in names)``, a ``(..., d)`` array.

    A pytree without leaves (its fields are static), so it can be a static field of a
    mechanism and compared and hashed by value under ``jit``.

    Args:
        names: the continuous parents, e.g. ``("t", "i")``.
        loc: their training means (same order).
        scale: their training standard deviations (finite, > 0).

    Raises:
        ValueError: lengths differ, no names, or a scale that is not finite and positive.
    """

    names: tuple[str, ...] = eqx.field(static=True)
    loc: tuple[float, ...] = eqx.field(static=True)
    scale: tuple[float, ...] = eqx.field(static=True)

    def __init__(self, names: Sequence[str], loc: Sequence[float], scale: Sequence[float]):
        if isinstance(names, str):
            raise ValueError(f"Standardise: names must be a sequence of node names, got {names!r}")
        names, loc, scale = tuple(names), tuple(map(float, loc)), tuple(map(float, scale))
        if not (len(names) == len(loc) == len(scale) > 0):
            raise ValueError(
                f"Standardise needs one loc and one scale per parent; got names={names}, "
                f"loc={loc}, scale={scale}"
            )
        bad = [n for n, s in zip(names, scale, strict=True) if not (np.isfinite(s) and s > 0)]
        if bad:
            raise ValueError(f"Standardise: the scale of {bad} must be finite and > 0")
        self.names, self.loc, self.scale = names, loc, scale

    @classmethod
    def fit(cls, names: Sequence[str], values: Mapping[str, ArrayLike]) -> Standardise:
        """Mean and standard deviation of training values ``{name: (N,)}``.

        Raises:
            ValueError: a name missing from ``values``, or constant / non-finite values.
        """
        missing = [n for n in names if n not in values]
        if missing:
            raise ValueError(f"Standardise.fit: no values for {missing}")
        v = {n: np.asarray(values[n], np.float64).reshape(-1) for n in names}
        return cls(names, [v[n].mean() for n in names], [v[n].std() for n in names])

    def __call__(self, parents: Mapping[str, ArrayLike]) -> Float[Array, "*n d"]:
        cols = [
            (jnp.asarray(parents[n], jnp.float32) - m) / s
            for n, m, s in zip(self.names, self.loc, self.scale, strict=True)
        ]
        return jnp.stack(cols, axis=-1)

    def inverse(self, z: Float[ArrayLike, "*n d"]) -> dict[str, Array]:
        """Parent values from standardised ones (last axis in the order of ``names``)."""
        z = jnp.asarray(z, jnp.float32)
        return {
            n: z[..., k] * s + m
            for k, (n, m, s) in enumerate(zip(self.names, self.loc, self.scale, strict=True))
        }


__all__ = ["Standardise"]
