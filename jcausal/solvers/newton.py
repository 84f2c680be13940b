"""Newton's method for fixed points, with a direct (LU) or Krylov (GMRES, BiCGStab) linear solve.

A step solves the linearised system ``(I - J_f(x)) dx = f(x) - x`` with a lineax solver and
moves ``x <- x + dx``. For an affine map ``f(x) = J x + b`` (a Leontief or price model, the
adjoint of any fixed point) the first step is the exact solution up to the linear solver's
accuracy, and a second evaluation certifies it; for a nonlinear map it is Newton's method
(quadratic convergence near the solution, no global guarantee).

The choice between the three solvers of the package is a matter of size and structure:

- ``Newton(linear_solver="lu")``: one LU factorisation of the materialised ``n x n`` Jacobian
  (``n`` Jacobian-vector products, then ``O(n^3)``); the fastest at small ``n``.
- ``Newton(linear_solver="gmres")``: matrix-free, a Jacobian-vector product per inner
  iteration; for large linear maps, and when ``f`` is only available as a function.
- :class:`~jcausal.solvers.Anderson`: no linear solve at all; for nonlinear maps.

``benchmarks/linear_solvers.py`` measures the three against ``numpy.linalg.solve`` and scipy's
GMRES on dense and block-regional matrices.

The stopping rule, result codes and implicit gradients are those of every solver of the
package (:func:`jcausal.fixed_point`): stop when ``||x - f(x)||_2 <= rtol ||x||_2 + atol``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import lineax as lx
from equinox import field

from .anderson import AbstractSolver
from .batched import Stats
from .iteration import classify, two_norm
from .lapack import lu_factor, lu_solve

_LINEAR_SOLVERS = ("lu", "gmres", "bicgstab")


class Newton(AbstractSolver):
    """Newton's method for ``x = f(x)`` with a lineax linear solve per step.

    Args:
        rtol: relative tolerance: stop when ``||x - f(x)||_2 <= rtol ||x||_2 + atol``. ``None``
            (default) is 1e-10 in float64 and 1e-5 in float32.
        atol: absolute guard in units of ``x`` (2-norm).
        max_steps: maximum number of evaluations of ``f`` (an affine map needs 2: the start
            and the solution).
        linear_solver: ``"lu"`` (direct; materialises the Jacobian), ``"gmres"`` or
            ``"bicgstab"`` (matrix-free Krylov methods).
        restart: GMRES restart length (Krylov vectors kept).
        krylov_steps: most inner iterations per linear solve (``None``: lineax's default,
            unbounded for well-behaved systems).
        divergence: growth factor of ``||x||`` over the scale of the start beyond which a
            solve whose residual did not shrink is stopped as ``RESULTS.diverged``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jcausal.solvers import Newton, fixed_point
        >>> A = jnp.array([[0.2, 0.1], [0.3, 0.4]]); y = jnp.array([1.0, 2.0])
        >>> x, report = fixed_point(lambda x, a: a @ x + y, jnp.zeros(2), A,
        ...                         solver=Newton(linear_solver="lu"))
    """

    rtol: float | None = field(static=True, default=None)
    atol: float = field(static=True, default=1e-12)
    max_steps: int = field(static=True, default=50)
    linear_solver: str = field(static=True, default="lu")
    restart: int = field(static=True, default=20)
    krylov_steps: int | None = field(static=True, default=None)
    divergence: float = field(static=True, default=1e6)

    def __check_init__(self):
        if self.linear_solver not in _LINEAR_SOLVERS:
            raise ValueError(
                f"linear_solver must be one of {list(_LINEAR_SOLVERS)}, got {self.linear_solver!r}"
            )
        for name in ("restart", "krylov_steps"):
            value = getattr(self, name)
            if value is None and name == "krylov_steps":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    def linear(self) -> lx.AbstractLinearSolver:
        """The lineax solver of one Newton step (inner tolerance = the outer ``rtol``).

        For ``"lu"`` this is lineax's LU; :meth:`run` itself factorises with
        :mod:`jcausal.solvers.lapack` instead (it cannot deadlock a multi-device CPU run).
        """
        if self.linear_solver == "lu":
            return lx.LU()
        rtol, atol = float(self.rtol), float(self.atol)
        if self.linear_solver == "gmres":
            return lx.GMRES(
                rtol=rtol,
                atol=atol,
                norm=two_norm,
                restart=int(self.restart),
                max_steps=self.krylov_steps,
            )
        return lx.BiCGStab(rtol=rtol, atol=atol, norm=two_norm, max_steps=self.krylov_steps)

    def run(self, fn, x0, args):
        linear = None if self.linear_solver == "lu" else self.linear()

        def g(y, a):  # the root of g is the fixed point of fn
            return y - fn(y, a)

        def newton_step(y, r):
            if self.linear_solver == "lu":
                # The materialised Jacobian (what lineax's LU would build), factorised by
                # solvers.lapack: on CPU a vmapped batch of LUs runs one matrix at a time.
                # jax.scipy's batched getrf (lineax's LU) splits the batch over XLA's CPU pool
                # and blocks pool threads, which deadlocked `fit` on a mesh of 8 CPU devices
                # (test_newton_lu_in_fit_on_cpu_devices_does_not_deadlock).
                jac = jax.jacfwd(g)(y, args)
                return y + lu_solve(lu_factor(jac), r)
            op = lx.JacobianLinearOperator(g, y, args)
            dy = lx.linear_solve(op, r, solver=linear, throw=False).value
            return y + dy

        r0 = fn(x0, args) - x0
        r_first = two_norm(r0)
        scale0 = jnp.maximum(two_norm(x0), two_norm(r0 + x0))

        def code(k, r_norm, y_norm):
            return classify(self, k, r_norm, y_norm, scale0, r_first)

        def cond(c):
            _, _, k, r_norm, y_norm = c
            return (k < self.max_steps) & (code(k, r_norm, y_norm) == -1)

        def body(c):
            y, r, k, _, _ = c
            y = newton_step(y, r)
            r = fn(y, args) - y
            return y, r, k + 1, two_norm(r), two_norm(y)

        init = (x0, r0, jnp.ones((), jnp.int32), r_first, two_norm(x0))
        y, _, k, r_norm, y_norm = jax.lax.while_loop(cond, body, init)
        return y, Stats(k, r_norm, y_norm, scale0, r_first)


__all__ = ["Newton"]
