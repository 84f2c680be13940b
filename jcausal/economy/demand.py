"""Static final-demand curves ``y_i = d_i(p_i)`` (decreasing in the unit price).

Each curve is an equinox Module whose parameters are arrays that broadcast against the price
vector, so one curve object describes every sector (scalar parameters: the same curve for all
sectors; ``(d,)`` parameters: one curve per sector). Curves act elementwise and are smooth, so
they can sit inside an equilibrium SCM and be differentiated through.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float


def _positive(name: str, value: Array, *, allow_zero: bool = False) -> None:
    if isinstance(value, jax.core.Tracer):
        return
    v = np.asarray(value)
    bad = (v < 0) if allow_zero else (v <= 0)
    if not np.all(np.isfinite(v)) or np.any(bad):
        need = "nonnegative" if allow_zero else "positive"
        raise ValueError(f"demand curve parameter {name} must be finite and {need}, got {v}")


def _float(x: ArrayLike) -> Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.inexact) else x.astype(jnp.result_type(float))


class DemandCurve(eqx.Module):
    """Base class: ``__call__(p) -> y`` elementwise (units: quantity per period)."""

    @abc.abstractmethod
    def __call__(self, p: Float[ArrayLike, "*d"]) -> Float[Array, "*d"]:
        """Final demand at unit prices ``p`` (any shape; elementwise)."""

    def derivative(self, p: Float[ArrayLike, "*d"]) -> Float[Array, "*d"]:
        """``d y_i / d p_i`` elementwise (autodiff; subclasses give closed forms)."""
        p = _float(p)
        return jax.jvp(self.__call__, (p,), (jnp.ones_like(p),))[1]

    def price_elasticity(self, p: Float[ArrayLike, "*d"]) -> Float[Array, "*d"]:
        """Price elasticity ``(d y / d p) p / y`` (dimensionless, negative for normal goods)."""
        p = _float(p)
        return self.derivative(p) * p / self(p)


class Logistic(DemandCurve):
    """Logistic demand ``y = scale / (exp(steepness (p / reference - 1)) + 1)``.

    ``scale`` is the saturation demand at zero price, ``reference`` the price at which demand
    is half of it, ``steepness`` how sharply demand collapses around ``reference``. The
    paper's rebound experiment uses ``Logistic.paper()``: ``1.42 / (exp(10 (p / 0.4 - 1)) + 1)``.

    Args:
        scale: saturation demand at zero price (> 0), in the demand's unit.
        reference: price at which demand is half the saturation (> 0).
        steepness: how sharply demand collapses around ``reference`` (> 0, dimensionless).
    """

    scale: Array
    reference: Array
    steepness: Array

    def __init__(self, scale: ArrayLike = 1.42, reference: ArrayLike = 0.4, steepness=10.0):
        self.scale, self.reference, self.steepness = map(_float, (scale, reference, steepness))
        _positive("scale", self.scale)
        _positive("reference", self.reference)
        _positive("steepness", self.steepness)

    @classmethod
    def paper(cls) -> Logistic:
        """The curve of Besserve & Schölkopf's rebound experiment (Fig. 4)."""
        return cls(1.42, 0.4, 10.0)

    def _z(self, p):
        return self.steepness * (p / self.reference - 1.0)

    def __call__(self, p):
        # sigmoid(-z) = 1 / (exp(z) + 1), without overflow for large prices.
        return self.scale * jax.nn.sigmoid(-self._z(_float(p)))

    def derivative(self, p):
        s = jax.nn.sigmoid(-self._z(_float(p)))
        return -self.scale * self.steepness / self.reference * s * (1.0 - s)


class ConstantElasticity(DemandCurve):
    """Constant-elasticity (isoelastic) demand ``y = scale * (p / reference)^(-elasticity)``.

    ``elasticity ≥ 0`` is minus the price elasticity. Defined for ``p > 0``: prices below
    ``floor`` are evaluated at ``floor``, which keeps intermediate fixed-point iterates (which
    may undershoot) finite; equilibrium prices of a productive economy with positive value added
    are positive, so this never changes an equilibrium above ``floor``.

    Args:
        scale: demand at the reference price (> 0), in the demand's unit.
        elasticity: minus the price elasticity (>= 0, dimensionless).
        reference: the reference price (> 0).
        floor: smallest price evaluated.
    """

    scale: Array
    elasticity: Array
    reference: Array
    floor: float = eqx.field(static=True, default=1e-9)

    def __init__(self, scale: ArrayLike = 1.0, elasticity=1.0, reference=1.0, floor=1e-9):
        self.scale, self.elasticity, self.reference = map(_float, (scale, elasticity, reference))
        _positive("scale", self.scale)
        _positive("elasticity", self.elasticity, allow_zero=True)
        _positive("reference", self.reference)
        self.floor = float(floor)

    def __call__(self, p):
        q = jnp.maximum(_float(p), self.floor) / self.reference
        return self.scale * q ** (-self.elasticity)

    def derivative(self, p):
        p = _float(p)
        inside = p > self.floor
        q = jnp.maximum(p, self.floor) / self.reference
        d = -self.elasticity * self.scale * q ** (-self.elasticity - 1.0) / self.reference
        return jnp.where(inside, d, 0.0)


__all__ = ["ConstantElasticity", "DemandCurve", "Logistic"]
