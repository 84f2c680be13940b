"""Bounds on a policy's output: an unconstrained number mapped into an interval.

A policy network outputs unconstrained reals ``z``; a :class:`Box` maps each into the closed
interval ``[lower, upper]`` smoothly, so gradients flow and no value the policy proposes can
leave the bounds, whatever its input (the map is clipped after the smooth part, so rounding at
``z -> ±∞`` cannot step outside either).

* both ends finite: ``lower + (upper - lower) · sigmoid(z)`` — for ``Box(0, 2)`` this is the
  Lie-interventions paper's factor ``α = 2·sigmoid(d)`` exactly;
* only ``lower``: ``lower + softplus(z)``; only ``upper``: ``upper - softplus(-z)``;
* neither: ``z`` itself.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float


def _end(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"Box {name} must be a number, got {value!r}") from None
    if math.isnan(v):
        raise ValueError(f"Box {name} is NaN; give a number (or ±inf for no bound)")
    return v


class Box(eqx.Module):
    """The closed interval ``[lower, upper]`` (each end may be infinite) and its smooth map.

    Args:
        lower: smallest value (``-inf``: none), in the intervention parameter's units.
        upper: largest value (``+inf``: none).

    Raises:
        ValueError: ``lower >= upper``, or an end that is NaN or not a number.
    """

    lower: float = eqx.field(static=True)
    upper: float = eqx.field(static=True)

    def __init__(self, lower: float = -math.inf, upper: float = math.inf):
        lo, hi = _end(lower, "lower"), _end(upper, "upper")
        if not lo < hi:
            raise ValueError(
                f"Box(lower={lo}, upper={hi}): lower must be smaller than upper; give the "
                "interval's ends in increasing order (equal ends leave nothing to choose: "
                "use a Hard intervention with that value instead of a policy)"
            )
        if lo == math.inf or hi == -math.inf:
            raise ValueError(f"Box(lower={lo}, upper={hi}) is empty")
        self.lower, self.upper = lo, hi

    @property
    def finite(self) -> tuple[bool, bool]:
        """Whether the lower and the upper end are finite."""
        return math.isfinite(self.lower), math.isfinite(self.upper)

    def __call__(self, z: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        """The bounded value of ``z`` (same shape), inside ``[lower, upper]`` for every ``z``."""
        z = jnp.asarray(z)
        lo_f, hi_f = self.finite
        if lo_f and hi_f:
            out = self.lower + (self.upper - self.lower) * jax.nn.sigmoid(z)
        elif lo_f:
            out = self.lower + jax.nn.softplus(z)
        elif hi_f:
            out = self.upper - jax.nn.softplus(-z)
        else:
            return z
        return jnp.clip(out, self.lower, self.upper)

    def log(self, z: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        """``log`` of the bounded value, computed stably for ``Box(0, upper)`` (log-sigmoid).

        A multiplicative (Lie) intervention acts by ``exp(u)``; with ``u = box.log(z)`` a
        factor that tends to 0 keeps a finite, exact logarithm.
        """
        z = jnp.asarray(z)
        if self.lower == 0.0 and math.isfinite(self.upper):
            return jnp.log(jnp.asarray(self.upper, z.dtype)) + jax.nn.log_sigmoid(z)
        return jnp.log(self(z))

    def inverse(self, value: Float[ArrayLike, "*shape"]) -> np.ndarray:
        """The ``z`` whose bounded value is ``value`` (numpy; for initialising a policy).

        Raises:
            ValueError: ``value`` is not strictly inside the interval (its ends are limits).
        """
        v = np.asarray(value, np.float64)
        lo_f, hi_f = self.finite
        inside = (v > self.lower) & (v < self.upper)
        if not np.all(inside):
            raise ValueError(
                f"value {v.tolist()} is not strictly inside Box({self.lower}, {self.upper}); "
                "an end of the interval is only reached in the limit"
            )
        if lo_f and hi_f:
            p = (v - self.lower) / (self.upper - self.lower)
            return np.log(p) - np.log1p(-p)
        if lo_f:
            return v - self.lower + np.log(-np.expm1(-(v - self.lower)))
        if hi_f:
            w = self.upper - v
            return -(w + np.log(-np.expm1(-w)))
        return v


__all__ = ["Box"]
