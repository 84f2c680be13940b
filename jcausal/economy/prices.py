"""The Leontief price model: unit prices ``p = Aᵀ p + v`` at equilibrium.

In an input-output economy with technical coefficients ``A`` (``A[i, j]`` = amount of good
``i`` needed per unit of output of sector ``j``), the unit price of good ``j`` covers the cost of
its intermediate inputs plus its value added (primary input cost) per unit of output ``v_j``:

    p_j = sum_i A[i, j] p_i + v_j,   i.e.   p = Aᵀ p + v,   p* = (I - Aᵀ)⁻¹ v.

Besserve & Schölkopf (UAI 2022, section 2.1, Challenge 3) take energy as the only primary
input, ``v = β δ_e`` (``β`` the unit cost of energy, ``δ_e`` the indicator of the energy
sector), so prices measure the energy cost embodied in each good. The fixed point exists, is
unique and nonnegative exactly when ``A ≥ 0`` has spectral radius below 1 (Hawkins–Simon);
:func:`check_technical_coefficients` enforces that with a clear error.
"""

from __future__ import annotations

import distrax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ..scm import Additive, EquilibriumSCM
from ..solvers import AbstractSolver
from .leontief import check_technical_coefficients, is_concrete, spectral_radius


def unit_prices(
    A: Float[ArrayLike, "d d"], value_added: Float[ArrayLike, "*batch d"]
) -> Float[Array, "*batch d"]:
    """Equilibrium unit prices ``p* = (I - Aᵀ)⁻¹ v`` by a direct linear solve.

    Args:
        A: technical coefficients, shape ``(d, d)`` (dimensionless: input per unit output).
        value_added: value added per unit of output ``v``, shape ``(d,)`` or ``(..., d)``
            (currency per unit of output).

    Returns:
        Unit prices, same shape as ``value_added`` (currency per unit of output).
    """
    check_technical_coefficients(A)
    A = jnp.asarray(A)
    v = jnp.asarray(value_added)
    if v.shape[-1:] != A.shape[:1]:
        raise ValueError(
            f"value_added has {v.shape[-1:]} sectors but A has {A.shape[0]}; give one value per "
            "sector (last axis)"
        )
    M = jnp.eye(A.shape[0], dtype=jnp.result_type(A, v)) - A.T
    flat = v.reshape(-1, v.shape[-1]).T
    return jnp.linalg.solve(M, flat).T.reshape(v.shape)


def energy_value_added(d: int, energy: int, energy_price: ArrayLike = 1.0) -> Float[Array, " d"]:
    """The paper's value added ``β δ_e``: energy is the only primary input, costing ``β``."""
    if not 0 <= energy < d:
        raise ValueError(f"energy sector index {energy} out of range for {d} sectors")
    return jnp.zeros(d, jnp.result_type(float)).at[energy].set(energy_price)


def _price_fn(A, pa):
    return A.T @ pa["price"]


def price_scm(
    A: Float[ArrayLike, "d d"],
    value_added: Float[ArrayLike, " d"],
    *,
    solver: AbstractSolver | None = None,
) -> tuple[EquilibriumSCM, dict[str, Array]]:
    """The price model as an equilibrium SCM with one vector node ``price := Aᵀ price + v``.

    The value added is the node's exogenous input (its noise), so it can be swapped per unit.
    Prices are declared nonnegative when ``v >= 0`` (see ``EquilibriumSCM(nonnegative=...)``).

    Returns:
        ``(scm, noise)`` with ``noise = {"price": v[None]}`` (one unit); ``jc.solve(scm, noise)``
        gives ``{"price": (1, d)}``.
    """
    check_technical_coefficients(A)
    A = jnp.asarray(A)
    v = jnp.asarray(value_added, A.dtype)
    if v.shape != A.shape[:1]:
        raise ValueError(f"value_added must have shape ({A.shape[0]},), got {v.shape}")
    signs = ("price",) if is_concrete(v) and bool(jnp.all(v >= 0)) else ()
    scm = EquilibriumSCM(
        price=Additive(_price_fn, A, distrax.Deterministic(v), ["price"]),
        solver=solver,
        nonnegative=signs,
    )
    return scm, {"price": v[None]}


__all__ = [
    "check_technical_coefficients",
    "energy_value_added",
    "price_scm",
    "spectral_radius",
    "unit_prices",
]
