"""Differentiable fixed-point solvers: find ``x`` with ``x = fn(x, args)``.

The equilibrium layer of models with feedback loops (input-output economies, gene-regulatory
networks, ...), optimistix style: a solver object is the configuration, and the solve returns
a report with a result code::

    x, report = fixed_point(fn, x0, args, solver=Anderson(rtol=1e-8), throw=False)
    report.result == RESULTS.successful   # or max_steps_reached, diverged, nonfinite, ...

Modules: ``anderson`` (the solver objects), ``iteration`` (the Anderson step as an optimistix
solver and the stopping rule), ``batched`` (the single and the batched ``vmap`` loop),
``implicit`` (``fixed_point``: implicit gradients, reports, errors), ``results`` (result
codes and messages), ``newton`` (Newton's method with a direct or Krylov linear solve),
``linear`` (``linear_fixed_point``: ``x = A x + b`` with the matrix given), ``auto``
(``Auto``, the measured choice of solver), ``affine`` (is a map affine? from its jaxpr).
jaxopt's Anderson, measured against ours, is a peer in ``benchmarks/`` only.
"""

from .anderson import AbstractSolver, Anderson, Forward, default_rtol
from .auto import (
    AUTO_HISTORY,
    AUTO_MARGIN,
    DIRECT_MAX,
    KRYLOV_MIN,
    LU_LEVEL_EPS,
    LU_LEVEL_MAX,
    Auto,
)
from .implicit import fixed_point, relative_residual
from .iteration import AndersonIteration
from .linear import linear_fixed_point
from .newton import Newton
from .results import RESULTS, FixedPointError, FixedPointReport, solver_message

#: The type of every solver object (``Anderson``, ``Forward``, ...); kept under its old name.
Solver = AbstractSolver

__all__ = [
    "AUTO_HISTORY",
    "AUTO_MARGIN",
    "DIRECT_MAX",
    "KRYLOV_MIN",
    "LU_LEVEL_EPS",
    "LU_LEVEL_MAX",
    "RESULTS",
    "AbstractSolver",
    "Anderson",
    "AndersonIteration",
    "Auto",
    "FixedPointError",
    "FixedPointReport",
    "Forward",
    "Newton",
    "Solver",
    "default_rtol",
    "fixed_point",
    "linear_fixed_point",
    "relative_residual",
    "solver_message",
]
