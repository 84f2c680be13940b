"""The non-linear rebound model (Besserve & Schölkopf, UAI 2022, section 2.1 and Fig. 1b).

Quantities and prices of an input-output economy coupled through price-dependent final demand:

    x = Ã x + y(c),     p = Ãᵀ p + v(Ã),     c_t = p_t (consumer price of the target good),

where ``Ã`` is the technical-coefficient matrix ``A`` with the energy requirement of the target
sector, ``Ã[e, t]``, taken from the node ``intensity``. The value added ``v`` is the field
``value_added`` of :func:`rebound_model` (see :func:`jcausal.economy.prices.value_added`):

* ``"energy_output"`` (default; the paper's text): ``v = β δ_e``. Energy costs about ``β``, so
  with the paper's demand curve its final demand is ~1e-7 and energy use is almost all
  intermediate: an efficiency gain of the target sector moves it by large factors.
* ``"energy_input"`` (the authors' code, ``leontiefPriceInvarUAI.py``): ``v = β Ãᵀ δ_e``, each
  sector pays ``β`` per unit of energy it uses, so ``v_t`` follows the intervened intensity.
  Energy's own price is then small, its final demand near saturation (~1.42), and the same
  intervention moves total energy by ~20 %.

An energy-efficiency improvement is a multiplicative Lie intervention
``intensity := exp(u) · A[e, t]`` (``u < 0``). It cuts the direct energy use of sector ``t``
but also its unit price, so demand for good ``t`` rises and, through ``x = Ã x + y``, total
energy demand ``x_e`` may rise too: the rebound, or backfire when it exceeds the savings. A tax
on good ``t`` is a soft intervention on ``consumer_price`` (learned with
:func:`jcausal.learn_invariant`) that keeps the target's final demand (the paper's invariant
node, ``target_demand``) at its unintervened value.

Nodes of :func:`rebound_model` (one unit):

============== ======== ====================================================================
node           shape    assignment
============== ======== ====================================================================
intensity      ()       ``A[e, t]`` (energy per unit output of the target sector; exogenous)
price          (d,)     ``Ãᵀ price + v(Ã)`` (unit prices, cost of embodied energy)
target_price   ()       ``price[t]`` (unit price of the target good, producer side)
consumer_price ()       ``target_price`` (what final buyers of good ``t`` pay; taxes act here)
demand         (d,)     ``d_i(price_i)`` for ``i ≠ t``, ``d_t(consumer_price)``
target_demand  ()       ``demand[t]`` (final demand of the target good)
output         (d,)     ``Ã output + demand`` (gross outputs)
energy         ()       ``output[e]`` (total energy demand: intermediate plus final)
============== ======== ====================================================================
"""

from __future__ import annotations

import distrax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ..lie import Lie, Multiplicative
from ..scm import Additive, EquilibriumSCM, Root
from ..solvers import AbstractSolver
from .demand import DemandCurve
from .leontief import check_technical_coefficients, is_concrete
from .prices import ValueAdded, value_added_weights

NODES = (
    "intensity",
    "price",
    "target_price",
    "consumer_price",
    "demand",
    "target_demand",
    "output",
    "energy",
)


def _matrix(params, intensity):
    return params["A"].at[params["energy"], params["target"]].set(intensity)


def _price(params, pa):
    # v = b_out δ_e (the node's noise) + b_in Ãᵀ δ_e: the second part follows the intervened
    # intensity, as in the authors' code (b_in = 0 for the paper's text).
    A = _matrix(params, pa["intensity"])
    return A.T @ pa["price"] + params["b_in"] * A[params["energy"]]


def _target_price(params, pa):
    return pa["price"][params["target"]]


def _consumer_price(params, pa):
    # A scalar parent (not the price vector) so that a learned tax sees exactly the price it
    # taxes, as in the paper's Fig. 2c.
    return pa["target_price"]


def _demand(params, pa):
    p = pa["price"].at[params["target"]].set(pa["consumer_price"])
    return params["curve"](p)


def _target_demand(params, pa):
    return pa["demand"][params["target"]]


def _output(params, pa):
    return _matrix(params, pa["intensity"]) @ pa["output"] + pa["demand"]


def _energy(params, pa):
    return pa["output"][params["energy"]]


def rebound_model(
    A: Float[ArrayLike, "d d"],
    demand: DemandCurve,
    *,
    energy: int,
    target: int,
    energy_price: ArrayLike = 1.0,
    value_added: ValueAdded = "energy_output",
    solver: AbstractSolver | None = None,
) -> tuple[EquilibriumSCM, dict[str, Array]]:
    """The rebound economy of Fig. 1b as one equilibrium SCM (nodes in the module docstring).

    Args:
        A: technical coefficients ``(d, d)``, nonnegative with spectral radius ``< 1``;
            ``A[energy, target] > 0`` is the target sector's energy requirement.
        demand: final-demand curve(s), elementwise over the ``d`` sectors.
        energy: index of the energy sector ``e`` (the only primary input).
        target: index of the sector whose energy efficiency is intervened on.
        energy_price: ``β``, cost of one unit of energy (currency per unit, finite, > 0).
        value_added: ``"energy_output"`` (``v = β δ_e``, the paper's text) or
            ``"energy_input"`` (``v = β Ãᵀ δ_e``, the authors' code); module docstring.
        solver: the fixed-point solver object (default ``jc.Anderson()``).

    Returns:
        ``(scm, noise)``: the model and its exogenous inputs for one unit (``intensity``: the
        coefficient ``A[e, t]``; ``price``: the exogenous part of the value added, ``β δ_e`` or
        zeros for ``"energy_input"``, whose value added is computed from ``Ã``; zeros
        elsewhere). Solve
        with ``jc.solve(scm, noise)``; intervene with ``jc.do(scm, efficiency(u))``.

    Raises:
        ValueError: negative coefficients or spectral radius ``>= 1`` (the message gives the
            radius), sector indices out of range, a target sector using no energy, an unknown
            ``value_added`` or a non-positive ``energy_price``.
    """
    check_technical_coefficients(A)
    A = jnp.asarray(A)
    if not jnp.issubdtype(A.dtype, jnp.inexact):
        A = A.astype(jnp.result_type(float))
    d = A.shape[0]
    for name, k in (("energy", energy), ("target", target)):
        if not isinstance(k, int | np.integer) or not 0 <= int(k) < d:
            raise ValueError(f"{name} sector index {k!r} out of range for {d} sectors")
    energy, target = int(energy), int(target)
    if is_concrete(A) and float(np.asarray(A)[energy, target]) <= 0:
        raise ValueError(
            f"the target sector {target} uses no energy (A[{energy}, {target}] = 0): an "
            "efficiency intervention on it would change nothing; pick a sector with "
            "A[energy, target] > 0"
        )
    if not isinstance(demand, DemandCurve):
        raise TypeError(f"demand must be a DemandCurve, got {type(demand).__name__}")
    if is_concrete(energy_price):
        beta = np.asarray(energy_price, float)
        if beta.shape != () or not np.isfinite(beta) or beta <= 0:
            raise ValueError(
                f"energy_price must be a finite positive scalar (currency per unit of energy), "
                f"got {energy_price!r}"
            )
    dt = A.dtype
    b_out, b_in = value_added_weights(value_added, energy_price)
    va = jnp.zeros(d, dt).at[energy].set(b_out.astype(dt))
    base = {"A": A, "energy": energy, "target": target}
    zero = jnp.zeros((), dt)
    zeros = jnp.zeros(d, dt)
    a_et = A[energy, target]
    scm = EquilibriumSCM(
        intensity=Root(distrax.Deterministic(a_et)),
        price=Additive(
            _price,
            base | {"b_in": b_in.astype(dt)},
            distrax.Deterministic(va),
            ["price", "intensity"],
        ),
        target_price=Additive(
            _target_price, {"target": target}, distrax.Deterministic(zero), ["price"]
        ),
        consumer_price=Additive(
            _consumer_price, None, distrax.Deterministic(zero), ["target_price"]
        ),
        demand=Additive(
            _demand,
            {"curve": demand, "target": target},
            distrax.Deterministic(zeros),
            ["price", "consumer_price"],
        ),
        target_demand=Additive(
            _target_demand, {"target": target}, distrax.Deterministic(zero), ["demand"]
        ),
        output=Additive(
            _output, base, distrax.Deterministic(zeros), ["output", "intensity", "demand"]
        ),
        energy=Additive(_energy, {"energy": energy}, distrax.Deterministic(zero), ["output"]),
        solver=solver,
        nonnegative=("price", "output", "energy"),
    )
    noise = {
        "intensity": a_et[None],
        "price": va[None],
        "target_price": zero[None],
        "consumer_price": zero[None],
        "demand": zeros[None],
        "target_demand": zero[None],
        "output": zeros[None],
        "energy": zero[None],
    }
    return scm, noise


def efficiency(u: Float[ArrayLike, ""]) -> dict[str, Lie]:
    """The energy-efficiency Lie intervention ``intensity := exp(u) · A[e, t]``.

    ``u = log α``: ``α = 0.6`` (``u ≈ -0.51``) means the target sector needs 40 % less energy
    per unit of output. Differentiable in ``u``.
    """
    return {"intensity": Lie(Multiplicative(), u)}


__all__ = ["NODES", "efficiency", "rebound_model"]
