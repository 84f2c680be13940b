"""The Leontief price model: unit prices ``p = Aᵀ p + v`` at equilibrium.

In an input-output economy with technical coefficients ``A`` (``A[i, j]`` = amount of good
``i`` needed per unit of output of sector ``j``), the unit price of good ``j`` covers the cost of
its intermediate inputs plus its value added (primary input cost) per unit of output ``v_j``:

    p_j = sum_i A[i, j] p_i + v_j,   i.e.   p = Aᵀ p + v,   p* = (I - Aᵀ)⁻¹ v.

Besserve & Schölkopf (UAI 2022, section 2.1, Challenge 3) take energy as the only primary
input. Their text and their code price it differently; :func:`value_added` gives both:

* ``"energy_output"`` (the paper's text, ``p = Aᵀ p + β δ_e``): only the energy sector has
  value added, ``β`` per unit of energy produced (``δ_e`` the indicator of the energy sector).
  Energy then costs about ``β`` and every good's price is the energy embodied in it.
* ``"energy_input"`` (the authors' code, ``p = Aᵀ p + Aᵀ δ_e``, times ``β``): every sector ``j``
  pays ``β`` per unit of energy it buys directly, ``v_j = β A[e, j]``, on top of energy's own
  price. Energy's own price is then only the cost of its inputs (small when energy uses
  little energy), while the other prices are nearly the same as under ``"energy_output"``.

The fixed point exists, is
unique and nonnegative exactly when ``A ≥ 0`` has spectral radius below 1 (Hawkins–Simon);
:func:`check_technical_coefficients` enforces that with a clear error.
"""

from __future__ import annotations

from typing import Literal

import distrax
import jax.numpy as jnp
import numpy as np
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


ValueAdded = Literal["energy_output", "energy_input"]
VALUE_ADDED: tuple[str, ...] = ("energy_output", "energy_input")


def energy_value_added(d: int, energy: int, energy_price: ArrayLike = 1.0) -> Float[Array, " d"]:
    """The paper's value added ``β δ_e``: energy is the only primary input, costing ``β``."""
    if not 0 <= energy < d:
        raise ValueError(f"energy sector index {energy} out of range for {d} sectors")
    return jnp.zeros(d, jnp.result_type(float)).at[energy].set(energy_price)


def value_added_weights(kind: str, energy_price: ArrayLike = 1.0) -> tuple[Array, Array]:
    """The two coefficients ``(b_out, b_in)`` of ``v = b_out δ_e + b_in Aᵀ δ_e`` for ``kind``.

    One formula covers both value-added conventions (module docstring): ``"energy_output"`` is
    ``(β, 0)``, ``"energy_input"`` is ``(0, β)``.

    Raises:
        ValueError: an unknown ``kind`` (the message lists the known ones).
    """
    if kind not in VALUE_ADDED:
        raise ValueError(
            f"unknown value_added {kind!r}; use 'energy_output' (the paper's text, p = Aᵀp + βδ_e) "
            "or 'energy_input' (the authors' code, p = Aᵀp + βAᵀδ_e)"
        )
    beta = jnp.asarray(energy_price, jnp.result_type(float))
    zero = jnp.zeros_like(beta)
    return (beta, zero) if kind == "energy_output" else (zero, beta)


def value_added(
    A: Float[ArrayLike, "d d"],
    energy: int,
    kind: ValueAdded = "energy_output",
    energy_price: ArrayLike = 1.0,
) -> Float[Array, " d"]:
    """Value added per unit of output when energy is the only primary input.

    Args:
        A: technical coefficients ``(d, d)``; only row ``energy`` is used.
        energy: index of the energy sector ``e``.
        kind: ``"energy_output"`` for ``β δ_e`` (the paper's text) or ``"energy_input"`` for
            ``β Aᵀ δ_e = β A[e, :]`` (the authors' code); see the module docstring.
        energy_price: ``β`` (currency per unit of energy).

    Returns:
        ``v``, shape ``(d,)`` (currency per unit of output).

    Raises:
        ValueError: unknown ``kind`` or ``energy`` out of range.
    """
    A = jnp.asarray(A)
    d = A.shape[0]
    if not isinstance(energy, int | np.integer) or not 0 <= int(energy) < d:
        raise ValueError(f"energy sector index {energy!r} out of range for {d} sectors")
    b_out, b_in = value_added_weights(kind, energy_price)
    return b_out * jnp.eye(d, dtype=A.dtype)[energy] + b_in * A[energy]


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
    "VALUE_ADDED",
    "ValueAdded",
    "check_technical_coefficients",
    "energy_value_added",
    "price_scm",
    "spectral_radius",
    "unit_prices",
    "value_added",
    "value_added_weights",
]
