"""Linear fixed points ``x = A x + b`` with the matrix given explicitly, and the ``Auto`` choice.

:func:`linear_fixed_point` solves ``x = A x + b`` (``(I - A) x = b``) for a square matrix
``A`` (or a lineax linear operator) with

- a direct LU factorisation of ``I - A`` (``Newton(linear_solver="lu")``): ``O(n^3)`` once,
  no Jacobian-vector products (``fixed_point`` with ``Newton("lu")`` forms the Jacobian of a
  function from ``n`` of them); the factors are reused for one step of iterative refinement
  and for the gradient (its ``max_steps`` does not apply: three evaluations of ``A x + b``);
- a Krylov method, one ``A v`` per inner iteration: ``Newton(linear_solver="gmres")`` is
  JAX's GMRES with Givens rotations (it stops inside a restart cycle; lineax's completes
  cycles of ``restart`` products and confirms with a second one: 1.24 s against 0.19 s at
  n = 9,800, dense, one measurement), ``"bicgstab"`` lineax's BiCGStab;
- any fixed-point iteration (``Anderson``, ``Forward``) on ``x -> A x + b``;
- :class:`Auto` (the default): the measured winner for the size, see below and :class:`Auto`.

Gradients are implicit, as everywhere in the package: the backward pass solves the adjoint
system ``(I - A)^T g = v`` (with the stored LU factors, or the same Krylov method on ``A^T``)
and returns ``dL/dA = g x^T``, ``dL/db = g``. The report and result codes are those of
:func:`jcausal.fixed_point`, plus ``RESULTS.singular`` when an LU pivot vanishes.

The crossover used by :class:`Auto` comes from ``benchmarks/linear_solvers.py`` (float64,
rtol 1e-10, 2 CPU cores, dense, block-regional and spectral-radius-0.95 input-output
matrices; see the README's performance table): at n = 50 XLA's LU and Anderson take about the
same time (the LU's residual is 1e-16, Anderson's 1e-11), at n = 200 the LU already takes 2-3x
Anderson's time, so the LU is used up to ``DIRECT_MAX = 100`` unknowns. JAX's GMRES is no
faster than Anderson overall (see ``KRYLOV_MIN``).
"""

from __future__ import annotations

import dataclasses
import functools as ft

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.sparse.linalg as jssl
import lineax as lx
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .anderson import AbstractSolver, Anderson, Forward
from .auto import (
    AUTO_HISTORY,
    AUTO_MARGIN,
    DIRECT_MAX,
    KRYLOV_MIN,
    LU_LEVEL_EPS,
    LU_LEVEL_MAX,
    Auto,
    _MarginAnderson,
)
from .batched import Stats
from .implicit import _result, fixed_point
from .iteration import classify, two_norm
from .lapack import lu_factor, lu_solve
from .newton import Newton
from .results import (
    RESULTS,
    FixedPointError,
    FixedPointReport,
    compiled_messages,
    is_traced,
    message_index,
    reraise_solver_errors,
)

# --------------------------------------------------------------------------------------------
# The direct and Krylov solves, with their adjoints.


def _stats(k, r, x, scale0, r_first) -> Stats:
    return Stats(jnp.asarray(k, jnp.int32), two_norm(r), two_norm(x), scale0, r_first)


def _refine(solver: Newton, mv, b, x0, step, zero: bool = False):
    """``x <- x + step(r)`` from ``x0`` until ``solver``'s stopping rule holds.

    ``mv(x)`` is ``A x``; ``step(r, x)`` solves ``(I - A) dx = r`` (``r`` the residual at
    ``x``); the first step is the solve, later ones iterative refinement (an exact solve of an
    affine map converges at once; rounding may need one more). ``zero``: ``x0`` is zero, so
    ``f(x0) = b`` without a product (one of the ~10 of a GMRES solve at n = 9,800).
    """
    f0 = b if zero else mv(x0) + b
    r0 = f0 - x0
    r_first = two_norm(r0)
    scale0 = jnp.maximum(two_norm(x0), two_norm(f0))

    def cond(c):
        x, r, k, _ = c
        code = classify(solver, k, two_norm(r), two_norm(x), scale0, r_first)
        return (k < solver.max_steps) & (code == -1)

    def body(c):
        x, r, k, extra = c
        dx, more = step(r, x)
        x = x + dx
        return x, mv(x) + b - x, k + 1, extra + more

    init = (x0, r0, jnp.ones((), jnp.int32), jnp.zeros((), jnp.int32))
    x, r, k, extra = jax.lax.while_loop(cond, body, init)
    # num_steps counts products with A: evaluations of the map plus the Krylov iterations
    # lineax reports (BiCGStab; JAX's GMRES reports none).
    return x, _stats(k + extra, r, x, scale0, r_first), extra


def _singular(lu: Float[Array, "n n"]) -> Array:
    # LAPACK's getrf with partial pivoting: I - A is singular to working precision when a
    # pivot is below n eps times the largest one. (NaN in the input is reported as such by
    # the stopping rule, so a factorisation that is not finite does not count here.)
    d = jnp.abs(jnp.diagonal(lu))
    tiny = lu.shape[0] * jnp.finfo(lu.dtype).eps * jnp.max(d)
    return jnp.all(jnp.isfinite(d)) & (jnp.min(d) <= tiny)


def _lu_forward(solver: Newton, zero: bool, A, b, x0):
    # One factorisation, the solve, and one step of iterative refinement with the same
    # factors (O(n^2)), unconditionally: a while loop costs more than the step at small n.
    # ``zero``: x0 is zero, so f(x0) = b without a product.
    n = b.shape[0]
    lu = lu_factor(jnp.eye(n, dtype=A.dtype) - A)
    f0 = b if zero else A @ x0 + b
    r0 = f0 - x0
    x1 = x0 + lu_solve(lu, r0)
    x = x1 + lu_solve(lu, A @ x1 + b - x1)
    r = A @ x + b - x
    # NaN / inf in A reaches every factor entry computed from it: reported as bad input (the
    # zero start never multiplies A, so the residual at the start would not show it).
    r_first = jnp.where(jnp.isfinite(jnp.sum(lu[0])), two_norm(r0), jnp.nan)
    stats = _stats(3, r, x, jnp.maximum(two_norm(x0), two_norm(f0)), r_first)
    return x, stats, _singular(lu[0]), lu


def _direct_result(solver: Newton, stats: Stats, singular) -> RESULTS:
    """How a direct solve ended: no iteration, so no divergence or shrinking tests.

    NaN / inf in the input first, then a vanishing pivot (``singular``), an overflow, and the
    tolerance test on the refined solution (missed only by an ill-conditioned ``I - A``).
    """
    bad_input = ~jnp.isfinite(stats.scale0) | ~jnp.isfinite(stats.r_first)
    finite = jnp.isfinite(stats.r_norm) & jnp.isfinite(stats.y_norm)
    ok = finite & (stats.r_norm <= solver.rtol * stats.y_norm + solver.atol)
    result = RESULTS.where(ok, RESULTS.successful, RESULTS.max_steps_reached)
    result = RESULTS.where(finite, result, RESULTS.nonfinite)
    result = RESULTS.where(singular, RESULTS.singular, result)
    return RESULTS.where(bad_input, RESULTS.nonfinite_input, result)


@ft.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _lu_solve(solver: Newton, zero: bool, A, b, x0):
    x, stats, singular, _ = _lu_forward(solver, zero, A, b, x0)
    return x, stats, singular


def _lu_fwd(solver, zero, A, b, x0):
    x, stats, singular, lu = _lu_forward(solver, zero, A, b, x0)
    return (x, stats, singular), (lu, x, A)


def _lu_bwd(solver, zero, res, cts):
    lu, x, A = res
    v = cts[0]
    # (I - A)^T g = v with the stored factors, plus one refinement step (O(n^2)).
    g = lu_solve(lu, v, trans=1)
    g = g + lu_solve(lu, v - (g - g @ A), trans=1)  # g @ A = A^T g, A not transposed
    return jnp.outer(g, x), g, jnp.zeros_like(x)


_lu_solve.defvjp(_lu_fwd, _lu_bwd)


def _krylov_step(solver: Newton, A, transpose: bool = False):
    # v @ A is A^T v without forming A^T: XLA's A.T @ v took 14x A @ v at n = 4000.
    mv = (lambda v: v - v @ A) if transpose else (lambda v: v - A @ v)
    if solver.linear_solver == "gmres":
        return _gmres_step(solver, mv)
    struct = jax.ShapeDtypeStruct((A.shape[0],), A.dtype)
    op = lx.FunctionLinearOperator(mv, struct)
    linear = solver.linear()

    def step(r, x):
        del x
        sol = lx.linear_solve(op, r, solver=linear, throw=False)
        return sol.value, jnp.asarray(sol.stats.get("num_steps", 0), jnp.int32)

    return step


def _gmres_step(solver: Newton, mv):
    # JAX's GMRES with Givens rotations ("incremental") tracks the residual at every inner
    # iteration and stops inside a restart cycle; lineax's GMRES always completes a cycle and
    # needs a second one to confirm (at n = 9,800, rtol 1e-10: 5-7 products with A against
    # ~40). It does not report its iteration count: num_steps counts the outer evaluations.
    restart = int(solver.restart)
    cycles = None if solver.krylov_steps is None else -(-int(solver.krylov_steps) // restart)

    def step(r, x):
        # Target the outer test ||r|| <= rtol ||x|| + atol with a margin of 2, where ||x|| is
        # estimated by the next Picard iterate x + r (= A x + b), known without another product.
        scale = jnp.maximum(two_norm(x), two_norm(x + r))
        target = 0.5 * (solver.rtol * scale + solver.atol)
        dx, _ = jssl.gmres(mv, r, tol=0.0, atol=target, restart=restart, maxiter=cycles,
                           solve_method="incremental")  # fmt: skip
        return dx, jnp.zeros((), jnp.int32)

    return step


@ft.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _krylov_solve(solver: Newton, zero: bool, A, b, x0):
    x, stats, _ = _refine(solver, lambda v: A @ v, b, x0, _krylov_step(solver, A), zero)
    return x, stats, jnp.zeros((), bool)


def _krylov_fwd(solver, zero, A, b, x0):
    out = _krylov_solve(solver, zero, A, b, x0)
    return out, (out[0], A)


def _krylov_bwd(solver, zero, res, cts):
    x, A = res
    v = cts[0]
    adjoint = solver.adjoint()
    step = _krylov_step(adjoint, A, True)
    g, _, _ = _refine(adjoint, lambda u: u @ A, v, jnp.zeros_like(v), step, zero=True)
    return jnp.outer(g, x), g, jnp.zeros_like(x)


_krylov_solve.defvjp(_krylov_fwd, _krylov_bwd)


# --------------------------------------------------------------------------------------------
# The public entry point.

_AUTO = Auto()  # the default, built once: a module's construction costs ~10 us


def _affine(x, p):
    A, b = p
    if isinstance(A, lx.AbstractLinearOperator):
        return A.mv(x) + b
    return _matvec(A, x) + b


def _matvec(A: Float[Array, "n n"], x: Float[Array, " n"]) -> Float[Array, " n"]:
    """``A @ x``; from n = 512 on as one product of 8 (4, 2) row blocks of ``A``.

    The blocks are a reshape (no copy). XLA's CPU matrix-vector product ran 1.4-1.8x faster
    that way at n = 1,000-4,000 (float64, 2 cores: 0.17 against 0.24 ms at 1,000, 0.54
    against 0.99 at 2,000; numpy's 0.07 and 0.57), 0.94x at 9,800; the values agreed to
    rounding (bitwise in the measurement).
    """
    n, m = A.shape
    k = next((k for k in (8, 4, 2) if n % k == 0), 1)
    if n < 512 or k == 1:
        return A @ x
    return jnp.einsum("bhm,m->bh", A.reshape(k, n // k, m), x).reshape(n)


def _check(A, b, x0) -> tuple[int, jnp.dtype]:
    """Shape and dtype checks from metadata only (no device work): ``(n, dtype)``."""
    if isinstance(A, lx.AbstractLinearOperator):
        shape = (A.out_size(), A.in_size())
        dtype = jax.eval_shape(A.as_matrix).dtype
    else:
        shape, dtype = _shape("A", A), _dtype(A)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(
            f"linear_fixed_point: A must be a square (n, n) matrix, got shape {tuple(shape)}"
        )
    n = shape[0]
    if _shape("b", b) != (n,):
        raise ValueError(
            f"linear_fixed_point: b must have shape ({n},) to match A {tuple(shape)}, got "
            f"{tuple(np.shape(b))} (use jax.vmap for a batch of b)"
        )
    if x0 is not None and np.shape(x0) != (n,):
        raise ValueError(f"linear_fixed_point: x0 must have shape ({n},), got {np.shape(x0)}")
    return n, _common(dtype, _dtype(b))


def _shape(name: str, x) -> tuple:
    try:
        return np.shape(x)
    except ValueError:  # numpy cannot read it as an array, e.g. a ragged nested list
        raise ValueError(
            f"linear_fixed_point: {name} must be an array (or nested lists of equal lengths), "
            f"got a {type(x).__name__} that is not rectangular"
        ) from None


def _dtype(x):
    # Arrays carry their dtype; anything else (lists, Python numbers) goes through JAX's rules.
    dtype = getattr(x, "dtype", None)
    if dtype is None and isinstance(x, list | tuple):  # nested lists: numpy's reading
        return np.asarray(x).dtype
    return jnp.result_type(x) if dtype is None else dtype


@ft.lru_cache(maxsize=64)
def _common(a, b) -> jnp.dtype:
    dtype = jnp.result_type(a, b)
    return dtype if jnp.issubdtype(dtype, jnp.inexact) else jnp.result_type(float)


# Per-call caches keyed by the solver's identity: hashing an equinox module (an lru_cache key,
# a static argument of jax.jit) costs ~5-10 us per call, as much as the LU at n = 50. Each
# entry holds its solver, so the id stays valid; the caches are cleared when they grow large.
_PICKED: dict = {}
_PROGRAMS: dict = {}


def _by_id(cache: dict, solver, key: tuple, make):
    hit = cache.get((id(solver), *key))
    if hit is not None and hit[0] is solver:
        return hit[1]
    if len(cache) > 512:
        cache.clear()
    value = make()
    cache[(id(solver), *key)] = (solver, value)
    return value


def _pick(solver: AbstractSolver, n: int, dtype, operator: bool) -> tuple[AbstractSolver, float]:
    """``_pick_new`` cached by the solver's identity (then by value)."""
    return _by_id(_PICKED, solver, (n, dtype, operator),
                  lambda: _pick_new(solver, n, dtype, operator))  # fmt: skip


@ft.lru_cache(maxsize=256)
def _pick_new(
    solver: AbstractSolver, n: int, dtype, operator: bool
) -> tuple[AbstractSolver, float]:
    """The concrete solver for a problem (``Auto`` resolved, ``rtol`` set), cached per call site.

    Also returns the relative tolerance the result is judged by (the user's): :class:`Auto`'s
    Anderson on an explicit matrix aims :data:`AUTO_MARGIN` times lower (see :class:`Auto`).
    """
    if isinstance(solver, Auto):
        chosen = solver.choose(n, linear=not operator).resolved(dtype)
        if isinstance(chosen, Anderson) and not operator:
            rtol = float(chosen.rtol)
            eps = float(jnp.finfo(dtype).eps)
            # Never below the rounding floor of the residual (float32 keeps its rtol).
            tight = min(rtol, max(rtol / AUTO_MARGIN, 100 * eps))
            fields = {f.name: getattr(chosen, f.name) for f in dataclasses.fields(Anderson)}
            if n <= LU_LEVEL_MAX and jnp.finfo(dtype).bits >= 64:
                tight = min(rtol, max(rtol * 1e-5, LU_LEVEL_EPS * eps))
                # The absolute guard by the same factor (1e-12 would dominate 2e-15 ||x||).
                fields["atol"] = float(chosen.atol) * tight / rtol if rtol > 0 else 0.0
            else:
                fields["history"] = AUTO_HISTORY
            return _MarginAnderson(**(fields | {"rtol": tight}), adjoint_rtol=rtol), rtol
        solver = chosen
    if isinstance(solver, Newton) and not operator:
        solver = solver.resolved(dtype)
    return solver, solver.rtol


def linear_fixed_point(
    A: Float[ArrayLike, "n n"] | lx.AbstractLinearOperator,
    b: Float[ArrayLike, " n"],
    x0: Float[ArrayLike, " n"] | None = None,
    *,
    solver: AbstractSolver | None = None,
    throw: bool = True,
) -> tuple[Float[Array, " n"], FixedPointReport]:
    """Solve ``x = A x + b``, i.e. ``(I - A) x = b``, differentiably.

    Works under ``jax.jit``, ``jax.vmap`` (batches of ``A`` and / or ``b``) and ``jax.grad``
    (implicit gradients with respect to ``A`` and ``b``), in float32 and float64.

    Args:
        A: ``(n, n)`` matrix (dimensionless for an input-output table), or a lineax linear
            operator (then solved by Anderson or a matrix-free Newton-Krylov iteration).
        b: ``(n,)`` constant term (e.g. final demand), in the units of ``x``.
        x0: initial guess (default zeros; an iterative solve then starts from ``b``, its first
            iterate, without a product): the start of an iterative solve; a direct solve only
            refines from it.
        solver: :class:`Auto` (default: LU up to :data:`DIRECT_MAX` unknowns, Anderson above),
            ``Newton(linear_solver="lu" | "gmres" | "bicgstab")`` (direct or Krylov solve
            with the matrix used as is, no Jacobian-vector products), or ``Anderson`` /
            ``Forward``.
        throw: raise :class:`FixedPointError` when the solve fails (``RESULTS.singular`` for a
            singular ``I - A``, ``nonfinite_input`` for NaN in ``A`` or ``b``, no
            convergence); ``False`` only reports it.

    Returns:
        ``(x, report)``: the solution ``(n,)`` and a :class:`FixedPointReport` (``num_steps``
        counts evaluations of ``A x + b``).

    Raises:
        ValueError: ``A`` not square, ``b`` or ``x0`` not of shape ``(n,)``.
        FixedPointError: with ``throw=True``, a failed solve (the message says why and what to
            do; under ``jit`` it comes from ``equinox.error_if``).

    A direct solve returns the unique solution whenever ``I - A`` is nonsingular, also when the
    spectral radius of ``A`` is >= 1 (where fixed-point iteration diverges): check signs or
    the spectral radius when the model needs them (``IOModel`` does).
    """
    solver = _AUTO if solver is None else solver
    if not isinstance(solver, AbstractSolver):
        raise TypeError(
            "solver must be a jcausal solver object such as jc.Auto(), jc.Anderson() or "
            f"jc.Newton(linear_solver='lu'), got {type(solver).__name__}"
        )
    n, dtype = _check(A, b, x0)
    operator = isinstance(A, lx.AbstractLinearOperator)
    solver, judge = _pick(solver, n, jnp.dtype(dtype), operator)
    if isinstance(solver, Anderson | Forward) and not operator and not is_traced((A, b, x0)):
        # Called eagerly: one compiled program cached by the solver's identity, not
        # fixed_point's eager path (equinox's filter_jit dispatch and the report's rejudging
        # op by op: 590 against 390 us at n = 200, one measurement, load 4-9).
        key = (jnp.dtype(dtype), None if judge is None else float(judge), x0 is None)
        program = _by_id(_PROGRAMS, solver, ("iterative", *key),
                         lambda: _iterative_program(solver, *key))  # fmt: skip
        A, b = _as_array(A), _as_array(b)
        x, report = program(A, b) if x0 is None else program(A, b, _as_array(x0))
        if throw and not bool(np.all(np.asarray(report.converged))):
            raise FixedPointError(report.message())
        return x, report
    if isinstance(solver, Anderson | Forward) or operator:
        # No guess: start from b = f(0), the first iterate from zero, without its product with
        # A (one of Anderson's 8-20 at rtol 1e-10; the same residual, n = 300-2,000).
        b_ = jax.lax.stop_gradient(jnp.asarray(b, dtype))
        x0 = b_ if x0 is None else jnp.asarray(x0, dtype)
        args = (A, jnp.asarray(b, dtype))
        if solver.rtol is None or judge == solver.rtol:
            return fixed_point(_affine, x0, args, solver=solver, throw=throw)
        return _tightened(solver, judge, x0, args, throw)
    if not isinstance(solver, Newton):
        raise TypeError(f"linear_fixed_point cannot use a {type(solver).__name__} solver")
    traced = is_traced((A, b, x0))
    with reraise_solver_errors():  # an error_if under vmap / grad reads as ours
        key = (jnp.dtype(dtype), bool(throw) and traced, x0 is None)
        program = _by_id(_PROGRAMS, solver, key, lambda: _direct_program(solver, *key))
        A, b = _as_array(A), _as_array(b)
        x, report = program(A, b) if x0 is None else program(A, b, _as_array(x0))
    if throw and not traced and not bool(np.all(np.asarray(report.converged))):
        raise FixedPointError(report.message())
    return x, report


def _tightened(solver: Anderson, rtol: float, x0, args, throw: bool):
    """Anderson aiming below ``rtol``, its result judged by ``rtol`` (``Auto``, explicit ``A``).

    A solve that stops at ``max_steps`` between the two tolerances (e.g. at the rounding floor
    of an ill-conditioned ``I - A``) has met what was asked: it is ``successful``.
    """
    x, report = fixed_point(_affine, x0, args, solver=solver, throw=False)
    # One compiled call (eagerly its ~8 operations ran one by one, a dispatch each).
    report = _judged(x, report, float(rtol), float(solver.atol))
    result = report.result
    if not throw:
        return x, report
    if is_traced((x, report)):
        x = eqx.branched_error_if(
            x,
            ~report.converged,
            message_index(result, report.relative_residual),
            compiled_messages(solver.max_steps),
        )
    elif not bool(jnp.all(report.converged)):
        raise FixedPointError(report.message())
    return x, report


def _as_array(x):
    # Lists and numbers as one array argument of a compiled program (not a pytree of leaves).
    return x if isinstance(x, jax.Array | np.ndarray) else np.asarray(x)


def _iterative_program(solver: Anderson | Forward, dtype, judge, zero_start: bool):
    """The jitted iterative solve of ``x = A x + b`` with its configuration bound.

    Array arguments only; never raises (the caller does). ``judge``: the relative tolerance
    the result is judged by (``Auto``'s Anderson aims lower, see :func:`_tightened`).
    """

    def run(A, b, x0=None):
        A, b = jnp.asarray(A, dtype), jnp.asarray(b, dtype)
        # No guess: start from b = f(0), as linear_fixed_point's traced path does.
        x0 = jax.lax.stop_gradient(b) if x0 is None else jnp.asarray(x0, dtype)
        x, report = fixed_point(_affine, x0, (A, b), solver=solver, throw=False)
        if judge is not None and solver.rtol is not None and judge != solver.rtol:
            report = _judged(x, report, judge, float(solver.atol))
        return x, report

    if zero_start:
        return jax.jit(lambda A, b: run(A, b))
    return jax.jit(run)


@ft.partial(jax.jit, static_argnums=(2, 3))
def _judged(x, report: FixedPointReport, rtol: float, atol: float) -> FixedPointReport:
    """``report`` with a solve that stopped at ``max_steps`` but meets ``rtol`` successful."""
    # relative_residual = ||r|| / ||x||: the test ||r|| <= rtol ||x|| + atol, divided by ||x||.
    y_norm = two_norm(x)
    met = report.relative_residual * y_norm <= rtol * y_norm + atol
    late = (report.result == RESULTS.max_steps_reached) & met
    result = RESULTS.where(late, RESULTS.successful, report.result)
    return eqx.tree_at(
        lambda r: (r.result, r.converged), report, (result, result == RESULTS.successful)
    )


@ft.lru_cache(maxsize=256)  # by value: an equal solver built anew reuses the compiled program
def _direct_program(solver: Newton, dtype, throw: bool, zero_start: bool):
    """The jitted direct / Krylov solve with its configuration bound: array arguments only."""
    if zero_start:
        return jax.jit(lambda A, b: _direct(solver, dtype, throw, A, b, None))
    return jax.jit(ft.partial(_direct, solver, dtype, throw))


def _direct(solver: Newton, dtype, throw: bool, A, b, x0):
    A = jnp.asarray(A, dtype)
    b = jnp.asarray(b, dtype)
    zero = x0 is None
    x0 = jnp.zeros_like(b) if zero else jnp.asarray(x0, dtype)
    x0 = jax.lax.stop_gradient(x0)
    if solver.linear_solver == "lu":
        x, stats, singular = _lu_solve(solver, zero, A, b, x0)
        stats, singular = jax.lax.stop_gradient((stats, singular))
        result = _direct_result(solver, stats, singular)
    else:
        x, stats, _ = _krylov_solve(solver, zero, A, b, x0)
        stats = jax.lax.stop_gradient(stats)
        result = _result(solver, stats)
    tiny = jnp.finfo(dtype).tiny
    rel = stats.r_norm / jnp.maximum(stats.y_norm, tiny)
    rel = jnp.where(jnp.isfinite(rel), rel, jnp.inf).astype(dtype)
    report = FixedPointReport(
        num_steps=stats.num_steps,
        relative_residual=rel,
        growth=(stats.y_norm / jnp.maximum(stats.scale0, tiny)).astype(dtype),
        result=result,
        converged=result == RESULTS.successful,
    )
    if throw:
        x = eqx.branched_error_if(
            x, ~report.converged, message_index(result, rel), compiled_messages(solver.max_steps)
        )
    return x, report


__all__ = [
    "AUTO_HISTORY",
    "AUTO_MARGIN",
    "DIRECT_MAX",
    "KRYLOV_MIN",
    "LU_LEVEL_EPS",
    "LU_LEVEL_MAX",
    "Auto",
    "linear_fixed_point",
]
