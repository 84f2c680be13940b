"""The solver objects: :class:`Anderson` (default) and :class:`Forward` (Picard iteration).

As in optimistix and diffrax, a solver instance is the whole configuration of a solve
(tolerances, budget, history, mixing, divergence threshold):
``fixed_point(fn, x0, args, solver=Anderson(rtol=1e-8))``. Models that solve equilibria
(``EquilibriumSCM``, ``IOModel``, the price and rebound models) hold one.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import numbers

import equinox as eqx
import jax.numpy as jnp

from .batched import solve_flat
from .iteration import AndersonIteration


def default_rtol(dtype) -> float:
    """Default relative tolerance for a float dtype: ``1e-10`` for float64, ``1e-5`` otherwise.

    Both are safety margins above the rounding floor of the residual ``||x - f(x)|| / ||x||`` of
    a dense matrix-vector product in that precision.
    """
    return 1e-10 if jnp.finfo(dtype).bits >= 64 else 1e-5


# --------------------------------------------------------------------------------------------
# Solver objects (the public configuration).


class AbstractSolver(eqx.Module):
    """Base class of the fixed-point solvers accepted by :func:`jcausal.fixed_point`.

    A solver is an immutable configuration (an ``equinox.Module`` whose fields are static, so
    it is part of the compilation key and never traced). Subclasses implement ``run``.
    """

    rtol: eqx.AbstractVar[float | None]
    atol: eqx.AbstractVar[float]
    max_steps: eqx.AbstractVar[int]
    divergence: eqx.AbstractVar[float]

    def __check_init__(self):
        for name in ("max_steps", "history"):
            value = getattr(self, name, 1)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        for name in ("rtol", "atol", "beta", "ridge"):
            value = getattr(self, name, 0.0)
            if value is not None and not math.isfinite(float(value)):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        # divergence=inf is allowed: it turns the divergence test off (NaN fails `> 1` below).
        if getattr(self, "beta", 1.0) == 0:
            raise ValueError("beta must be nonzero (x <- x + beta (f(x) - x) would not move)")
        if not getattr(self, "ridge", 0.0) >= 0:
            raise ValueError(f"ridge must be >= 0, got {self.ridge}")
        if int(self.max_steps) < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.rtol is not None and not self.rtol >= 0:
            raise ValueError(
                f"rtol must be >= 0 (or None for the dtype's default), got {self.rtol}"
            )
        if not self.atol >= 0:
            raise ValueError(f"atol must be >= 0, got {self.atol}")
        if not self.divergence > 1:
            raise ValueError(f"divergence must be > 1 (a growth factor), got {self.divergence}")

    def resolved(self, dtype) -> AbstractSolver:
        """A copy with ``rtol`` set (``None`` becomes :func:`default_rtol` of ``dtype``)."""
        if self.rtol is not None:
            return self
        return dataclasses.replace(self, rtol=default_rtol(dtype))

    def adjoint(self) -> AbstractSolver:
        """The solver for the adjoint (backward) fixed point ``g = J^T g + v``.

        Same method and tolerances, ``atol = 0`` (the cotangent's units differ from ``x``'s).
        """
        return dataclasses.replace(self, atol=0.0)

    @abc.abstractmethod
    def run(self, fn, x0, args):
        """Solve ``x = fn(x, args)`` for a 1-D ``x0`` (``rtol`` resolved); ``(x, Stats)``.

        ``fn`` closes over no tracers (``fixed_point`` passes everything through ``args``).
        """


class Anderson(AbstractSolver):
    """Anderson acceleration with implicit-differentiation gradients (the default solver).

    Args:
        rtol: relative tolerance: stop when ``||x - f(x)||_2 <= rtol ||x||_2 + atol``. ``None``
            (default) is 1e-10 in float64 and 1e-5 in float32.
        atol: absolute guard in units of ``x`` (2-norm), so that solutions ``x* ~ 0`` converge.
        max_steps: maximum number of evaluations of ``f``.
        history: number of past residuals combined, ``m >= 2``.
        beta: mixing parameter (dimensionless); 1 is plain Anderson.
        ridge: regularisation of the weight system, relative to the residuals' size.
        divergence: growth factor of ``||x||`` over the scale of the start beyond which a solve
            whose residual did not shrink is stopped as ``RESULTS.diverged``.
        ridge_kind: ``"relative"`` (default): ``ridge`` is added to the Gram matrix of the
            residuals scaled by its diagonal, so it stays small next to the residuals however
            small they get. ``"absolute"``: ``ridge`` is added to the unscaled Gram matrix
            ``<r_i, r_j>`` (units of ``x`` squared), as in the deep-equilibrium reference code
            (Bai et al.; Besserve & Schölkopf use ``1e-4``); once ``||r||^2`` falls below
            ``ridge`` the weights tend to uniform and the acceleration is lost.
        first_beta: mixing of the first move only, ``x_1 = x_0 + first_beta (f(x_0) - x_0)``
            (``None``, default: ``beta``). The reference code starts with ``x_1 = f(x_0)``
            whatever ``beta``: ``first_beta=1``.

    The stopping rule of the reference code, ``||f(x) - x|| / (c + ||f(x)||) < tol``, is
    ``rtol=tol, atol=tol * c`` here: at a point that passes either test ``||f(x)||`` and
    ``||x||`` differ by at most ``||f(x) - x||``, so the two thresholds differ by a factor
    ``1 +- tol``.
    """

    rtol: float | None = eqx.field(static=True, default=None)
    atol: float = eqx.field(static=True, default=1e-12)
    max_steps: int = eqx.field(static=True, default=500)
    history: int = eqx.field(static=True, default=5)
    beta: float = eqx.field(static=True, default=1.0)
    ridge: float = eqx.field(static=True, default=1e-6)
    divergence: float = eqx.field(static=True, default=1e6)
    ridge_kind: str = eqx.field(static=True, default="relative")
    first_beta: float | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.ridge_kind not in ("relative", "absolute"):
            raise ValueError(
                f"ridge_kind must be 'relative' or 'absolute', got {self.ridge_kind!r}"
            )
        if self.first_beta is not None and (
            isinstance(self.first_beta, bool)
            or not isinstance(self.first_beta, numbers.Real)
            or not math.isfinite(self.first_beta)
            or self.first_beta == 0
        ):
            raise ValueError(
                f"first_beta must be None or a finite nonzero number, got {self.first_beta!r}"
            )
        if int(self.history) < 2:
            raise ValueError(
                f"history must be >= 2 for Anderson acceleration, got {self.history}; use "
                "Forward() for plain fixed-point iteration"
            )

    def run(self, fn, x0, args):
        return solve_flat(fn, self.iteration(), int(self.max_steps), x0, args)

    def iteration(self) -> AndersonIteration:
        """The ``optimistix`` solver that performs the steps."""
        return AndersonIteration(
            rtol=float(self.rtol),
            atol=float(self.atol),
            history=int(self.history),
            beta=float(self.beta),
            ridge=float(self.ridge),
            divergence=float(self.divergence),
            ridge_kind=self.ridge_kind,
            first_beta=None if self.first_beta is None else float(self.first_beta),
        )


class Forward(AbstractSolver):
    """Forward (Picard) iteration ``x <- x + beta (f(x) - x)``, relaxed by ``beta``.

    Converges when ``f`` is a contraction near the solution; slower than :class:`Anderson`
    but with no extrapolation. Arguments as for :class:`Anderson` (no history or ridge).
    """

    rtol: float | None = eqx.field(static=True, default=None)
    atol: float = eqx.field(static=True, default=1e-12)
    max_steps: int = eqx.field(static=True, default=500)
    beta: float = eqx.field(static=True, default=1.0)
    divergence: float = eqx.field(static=True, default=1e6)

    def run(self, fn, x0, args):
        return solve_flat(fn, self.iteration(), int(self.max_steps), x0, args)

    def iteration(self) -> AndersonIteration:
        """The ``optimistix`` solver that performs the steps (Anderson with history 1)."""
        return AndersonIteration(
            rtol=float(self.rtol),
            atol=float(self.atol),
            history=1,
            beta=float(self.beta),
            divergence=float(self.divergence),
        )


__all__ = ["AbstractSolver", "Anderson", "Forward", "default_rtol"]
