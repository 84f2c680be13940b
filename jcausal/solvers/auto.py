"""The ``Auto`` solver: the measured choice of solver for a problem's size and kind.

``Auto`` resolves to a direct LU solve, Anderson (with a tolerance margin and history chosen
from the size) or GMRES; :func:`jcausal.linear_fixed_point` (an explicit matrix) and
:func:`jcausal.fixed_point` (a map given as a function, solved directly when it is affine and
small) use it. The constants below are the crossovers measured by
``benchmarks/linear_solvers.py`` (README, performance).
"""

from __future__ import annotations

import dataclasses
import functools as ft

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from .affine import is_affine
from .anderson import AbstractSolver, Anderson
from .batched import Stats
from .iteration import classify, two_norm
from .lapack import lu_factor, lu_solve
from .newton import Newton

#: Largest ``n`` for which :class:`Auto` factorises ``I - A`` (LU) instead of iterating.
#: Measured by ``benchmarks/linear_solvers.py`` (README, performance).
DIRECT_MAX = 100

#: Smallest ``n`` for which :class:`Auto` solves an explicit matrix by GMRES (JAX's, with
#: Givens rotations) instead of Anderson; ``None``: never. Measured by
#: ``benchmarks/linear_solvers.py``: GMRES was 20-40% faster than Anderson at n = 1000-2000,
#: 20% slower at n = 9,800 (dense and block-regional, with a slower gradient), split at 4,000.
KRYLOV_MIN = None

#: :class:`Auto`'s Anderson on an explicit matrix stops this factor below ``rtol`` (float64),
#: so that its residual matches a Krylov solver's, which overshoots its tolerance. On a linear
#: map Anderson with history 8 retraces GMRES's iterates (the same residual at the same
#: product count in most rows below), so the margin only decides whether to take one product
#: past GMRES's last. 10 (was 30, 100 before): products and residual against scipy's GMRES
#: (rtol 1e-10, ``/work/runs/s30/margin.py`` on ``benchmarks/linear_solvers.py``'s matrices,
#: n = 500-9,800): 30 -> 10 saved a product at n = 500 block-regional (res 0.53x GMRES's),
#: 2,000 dense (1.00x) and spectral radius 0.95 (35x: GMRES's own 2e-13 there is a 500x
#: overshoot; ours 7e-12), 4,000 block-regional (two; 0.32x) and 9,800 dense (6 against 7,
#: 1.00x); every dense and block-regional residual stayed at or below GMRES's. 3 would save 1-2
#: more on block-regional tables but let residuals reach 2-3x GMRES's and 54x at 4,000, 0.95.
AUTO_MARGIN = 10

#: Up to this ``n`` (float64), where a dense LU (numpy's) is the fastest alternative and
#: reaches a residual of 1-2 eps, :class:`Auto`'s Anderson aims that low too: at
#: :data:`LU_LEVEL_EPS` times the machine epsilon (2.2e-15; or ``rtol`` / 1e5 if that is
#: larger). Measured (``benchmarks/linear_solvers.py``, n = 200): 2-6 more products with
#: ``A`` than the 1e-12 aim (12 -> 14 dense, 27 -> 33 block-regional, 15 -> 17 spectral radius
#: 0.95), residuals 4e-16 to 2e-15 against numpy's LU's 2-4e-16. The rounding floor of the
#: residual there was 1-3 eps (Anderson reached 2e-16 to 7e-16 aiming at 1e-15).
LU_LEVEL_MAX = 300
LU_LEVEL_EPS = 10

#: History length of :class:`Auto`'s Anderson on an explicit matrix above
#: :data:`LU_LEVEL_MAX` (5, Anderson's default, below). There a product with ``A`` costs far
#: more than the ``O(m n)`` history work, and 8 saved products (``benchmarks/linear_solvers.py``,
#: rtol 1e-12: n = 500 11 -> 9 dense, 22 -> 21 block-regional, 13 -> 11 spectral radius 0.95,
#: 12-15% less time; n = 1,000 12 -> 10 at 0.95; n = 2,000 17 -> 16 block-regional; never
#: more); at n = 200 it cost 4-7% for no fewer products; 12 saved none over 8.
AUTO_HISTORY = 8


class _MarginAnderson(Anderson):
    """:class:`Auto`'s Anderson on an explicit matrix: the margin in the forward solve only.

    The forward solve aims at ``rtol`` (:data:`AUTO_MARGIN` below the user's), the adjoint
    (backward) solve at the user's ``adjoint_rtol``. The margin is there for the solution's
    residual (to match GMRES's); a gradient needs only the tolerance asked for, as with every
    other solver. It cost the adjoint 1-4 products with ``A`` of its 8-28 (n = 200-2,000,
    dense, block-regional and spectral radius 0.95: 8 -> 9 at n = 2,000, dense).
    """

    adjoint_rtol: float | None = eqx.field(static=True, default=None)

    def adjoint(self) -> AbstractSolver:
        rtol = self.rtol if self.adjoint_rtol is None else self.adjoint_rtol
        return Anderson(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Anderson)}
                        | {"rtol": rtol, "atol": 0.0})  # fmt: skip


class Auto(AbstractSolver):
    """Choose the solver from the problem (the default of :func:`linear_fixed_point`).

    - a linear map with an explicit matrix (:func:`linear_fixed_point`) of at most
      ``direct_max`` unknowns: LU factorisation of ``I - A`` (``Newton("lu")``);
    - above, up to :data:`LU_LEVEL_MAX` unknowns (float64): :class:`Anderson` aiming at the
      residual an LU reaches (:data:`LU_LEVEL_EPS` eps), judged by ``rtol``;
    - above that: :class:`Anderson` with history :data:`AUTO_HISTORY`, stopping
      :data:`AUTO_MARGIN` times below ``rtol`` in
      float64 (1e-11 for the default 1e-10; never below 100 eps), judged by ``rtol``; the
      adjoint (gradient) solve aims at ``rtol`` itself. GMRES
      overshoots its tolerance by about that much in its last iteration (its residual estimate
      falls by a large factor per iteration); Anderson needs about as many products with ``A``
      as GMRES has iterations, so the margin costs 0-2 more products and gives as small a
      residual. (JAX's GMRES spends 2-3 products more than Anderson on its start and its
      check; see :data:`KRYLOV_MIN`.)
    - with ``krylov_min`` set, from that many unknowns: GMRES on ``(I - A) x = b``
      (``Newton("gmres")``, at most ``max_steps`` Krylov iterations per solve);
    - any map given as a function (:func:`jcausal.fixed_point`, ``EquilibriumSCM``): if it
      is affine in ``x`` (read from its jaxpr, see :mod:`jcausal.solvers.affine`) and has at
      most ``direct_max`` unknowns, the LU of its Jacobian (formed from ``n``
      Jacobian-vector products), the solve and one refinement step; otherwise
      :class:`Anderson` with the same tolerances.

    The direct (LU) paths return the unique fixed point whenever ``I - A`` (or ``I - J``) is
    nonsingular, also where iterating the map would diverge (spectral radius >= 1): a solution
    of the equation, not necessarily a stable equilibrium of the dynamics. Check stability
    where the model needs it (``IOModel`` checks its spectral radius).

    Args:
        rtol: relative tolerance, ``||x - f(x)||_2 <= rtol ||x||_2 + atol`` (``None``: 1e-10
            in float64, 1e-5 in float32).
        atol: absolute guard in units of ``x``.
        max_steps: evaluation budget of the iterative solver (Krylov iterations for GMRES).
        divergence: growth factor flagging divergence (see :class:`Anderson`).
        direct_max: largest ``n`` solved by LU (default :data:`DIRECT_MAX`, measured).
        krylov_min: smallest ``n`` solved by GMRES (default :data:`KRYLOV_MIN`: never).
    """

    rtol: float | None = eqx.field(static=True, default=None)
    atol: float = eqx.field(static=True, default=1e-12)
    max_steps: int = eqx.field(static=True, default=500)
    divergence: float = eqx.field(static=True, default=1e6)
    direct_max: int = eqx.field(static=True, default=DIRECT_MAX)
    krylov_min: int | None = eqx.field(static=True, default=KRYLOV_MIN)

    def __check_init__(self):
        for name in ("direct_max", "krylov_min"):
            value = getattr(self, name)
            if name == "krylov_min" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")

    def choose(self, n: int, linear: bool) -> AbstractSolver:
        """The solver used for ``n`` unknowns (``linear``: an explicit matrix is available)."""
        return _choose(self, int(n), bool(linear))

    def run(self, fn, x0, args):
        # A map given as a function: affine (read from its jaxpr) and small, a direct solve of
        # its Jacobian (n Jacobian-vector products, one LU); otherwise iterate.
        n = x0.shape[0]
        if n <= self.direct_max and is_affine(fn, x0, args):
            return _affine_direct(self, fn, x0, args)
        return self.choose(n, linear=False).run(fn, x0, args)


@ft.lru_cache(maxsize=256)
def _choose(auto: Auto, n: int, linear: bool) -> AbstractSolver:
    # Cached: building a solver object costs more than a small solve.
    kw = dict(rtol=auto.rtol, atol=auto.atol, divergence=auto.divergence)
    if linear and n <= auto.direct_max:
        return Newton(linear_solver="lu", max_steps=min(int(auto.max_steps), 4), **kw)
    if linear and auto.krylov_min is not None and n >= auto.krylov_min:
        # Start, GMRES's solution, and a refinement if rounding left it short.
        steps = min(int(auto.max_steps), 3)
        return Newton(linear_solver="gmres", max_steps=steps, krylov_steps=auto.max_steps, **kw)
    return Anderson(max_steps=auto.max_steps, **kw)


def _affine_direct(solver: Auto, fn, x0, args) -> tuple[Array, Stats]:
    """``x = fn(x, args)`` for an affine ``fn`` (see :mod:`.affine`): the LU of its Jacobian.

    The Jacobian ``J`` comes from ``n`` Jacobian-vector products (one batched evaluation);
    then the solve of ``(I - J) dx = fn(x0) - x0`` and one step of iterative refinement with
    the same factors, as for an explicit matrix (``linear._lu_forward``; :mod:`.lapack`'s
    LU, which cannot deadlock a multi-device CPU run under ``vmap``). The residuals are
    those of ``fn`` itself (three evaluations: start, solve, refinement; ``num_steps`` 3), so
    the stopping rule judges the returned ``x`` as for any solver; a singular ``I - J`` gives
    inf / NaN (``RESULTS.nonfinite``) or a residual that fails the test. A start that already
    meets ``solver``'s tolerance is returned as is, after one evaluation, as an iterative
    solver does (a solve from it could not show that its residual shrank).
    """

    def f(x):
        return fn(x, args)

    jac = jax.jacfwd(f)(x0)
    lu = lu_factor(jnp.eye(x0.shape[0], dtype=jac.dtype) - jac)
    f0 = f(x0)
    r0 = f0 - x0
    x1 = x0 + lu_solve(lu, r0)
    x = x1 + lu_solve(lu, f(x1) - x1)
    r = f(x) - x
    # NaN / inf in the map's coefficients reaches every factor entry computed from them.
    r_first = jnp.where(jnp.isfinite(jnp.sum(lu[0])), two_norm(r0), jnp.nan)
    scale0 = jnp.maximum(two_norm(x0), two_norm(f0))
    at_start = Stats(jnp.asarray(1, jnp.int32), r_first, two_norm(x0), scale0, r_first)
    done = classify(solver, *at_start) == 0
    solved = Stats(jnp.asarray(3, jnp.int32), two_norm(r), two_norm(x), scale0, r_first)
    stats = jax.tree.map(lambda a, b: jnp.where(done, a, b), at_start, solved)
    return jnp.where(done, x0, x), stats


__all__ = [
    "AUTO_HISTORY",
    "AUTO_MARGIN",
    "DIRECT_MAX",
    "KRYLOV_MIN",
    "LU_LEVEL_EPS",
    "LU_LEVEL_MAX",
    "Auto",
]
