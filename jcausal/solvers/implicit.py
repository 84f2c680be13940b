"""``fixed_point``: solve ``x = fn(x, args)`` with implicit gradients, a report and a result code.

Gradients use implicit differentiation (deep-equilibrium style): the backward pass solves the
adjoint fixed point ``g = J_f(x*)^T g + v`` with the same solver and never unrolls the forward
iterations, so memory is O(n m), independent of the number of steps.

Forward mode (``jax.jvp`` / ``jax.jacfwd``) is not supported: the solve is a ``custom_vjp``.
A ``custom_jvp`` with an implicit tangent solve, transposed for reverse mode (optimistix's
``ImplicitAdjoint``), needs the tangent solve to be a transposable linear primitive, i.e.
``lineax.linear_solve``; its iterative solvers would replace the batched Anderson adjoint (one
shared loop for a whole ``vmap`` batch, see ``batched.py``) with JAX's generic batched while
loop, and its default solver materialises the n x n Jacobian. Use ``jax.jacrev``.
"""

from __future__ import annotations

import functools as ft
import types
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, Float, PyTree

from .anderson import AbstractSolver, Anderson
from .batched import Stats
from .iteration import classify, two_norm
from .results import (
    RESULTS,
    FixedPointError,
    FixedPointReport,
    compiled_messages,
    is_traced,
    message_index,
)

# Integer codes of `classify` -> RESULTS.
_CODES = {
    0: RESULTS.successful,
    1: RESULTS.diverged,
    2: RESULTS.nonfinite,
    3: RESULTS.nonfinite_input,
}


def _result(solver: AbstractSolver, stats: Stats) -> RESULTS:
    code = classify(
        solver, stats.num_steps, stats.r_norm, stats.y_norm, stats.scale0, stats.r_first
    )
    result = RESULTS.where(code == -1, RESULTS.max_steps_reached, RESULTS.successful)
    for value, item in _CODES.items():
        if value:
            result = RESULTS.where(code == value, item, result)
    return result


def _call(y, fa):
    fn, a = fa
    return fn(y, a)


class _Static:
    """The non-array part of the closure-converted map (its jaxpr), hashed by identity."""

    def __init__(self, tree):
        self.tree = tree


def _runner(static: _Static):
    def call(y, fa):
        return _call(y, eqx.combine(fa, static.tree))

    return call


@ft.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _solve(solver: AbstractSolver, throw: bool, static: _Static, x0, fa):
    return solver.run(_runner(static), x0, fa)


def _solve_fwd(solver, throw, static, x0, fa):
    out = solver.run(_runner(static), x0, fa)
    return out, (out[0], fa)


def _adjoint_map(g, a):
    vjp_x, v = a
    (jt_g,) = vjp_x(g)
    return jt_g + v


def _differentiable(leaf) -> bool:
    # A weakly typed scalar (a closed-over Python float under `grad`) arrives in the custom_vjp
    # rules as a Python float subclass, not an array: it must still get its cotangent.
    if isinstance(leaf, jax.Array | np.ndarray):
        return bool(jnp.issubdtype(leaf.dtype, jnp.inexact))
    return isinstance(leaf, float | complex)


def _solve_bwd(solver, throw, static, residuals, cts):
    x, fa_arrays = residuals
    fa = eqx.combine(fa_arrays, static.tree)
    v = cts[0]  # cotangent of the solution; those of the statistics are ignored
    # At x* = f(x*, p): dx*/dp = (I - J)^{-1} df/dp, so the VJP is (df/dp)^T g with
    # g = (I - J^T)^{-1} v, the fixed point of g = J^T g + v. J^T has the spectrum of J, so the
    # same method converges at the same rate. `vjp_x` is a pytree (jax Partial), so it reaches
    # the solver as an argument, never as a closed-over tracer.
    _, vjp_x = jax.vjp(lambda y: _call(y, fa), x)
    adjoint = solver.adjoint()
    g, stats = adjoint.run(_adjoint_map, v, (vjp_x, v))
    ok = _result(adjoint, stats) == RESULTS.successful
    if throw:
        g = eqx.error_if(
            g,
            ~ok,
            "fixed_point: the adjoint (backward) fixed point g = J^T g + v did not converge; "
            "the gradient would be wrong. Raise the solver's max_steps, change beta, or check "
            "that the map is contractive at the solution (spectral radius of df/dx < 1).",
        )
    else:
        # Not silent: a gradient from an unconverged adjoint is returned as NaN.
        g = jnp.where(ok, g, jnp.nan)
    diff, nondiff = eqx.partition(fa_arrays, _differentiable)
    _, vjp_fa = jax.vjp(lambda d: _call(x, eqx.combine(d, nondiff, static.tree)), diff)
    (fa_bar,) = vjp_fa(g)
    # The solution does not depend on the initial guess; integer leaves get no cotangent.
    return jnp.zeros_like(x), fa_bar


_solve.defvjp(_solve_fwd, _solve_bwd)


def _as_float(leaf):
    a = jnp.asarray(leaf)
    return a if jnp.issubdtype(a.dtype, jnp.inexact) else a.astype(float)


def _as_array(leaf):
    if isinstance(leaf, bool | int | float | complex | np.ndarray | np.generic):
        return jnp.asarray(leaf)
    return leaf


def fixed_point(
    fn: Callable[[PyTree, PyTree], PyTree],
    x0: PyTree[ArrayLike],
    args: PyTree = None,
    *,
    solver: AbstractSolver | None = None,
    throw: bool = True,
) -> tuple[PyTree[Array], FixedPointReport]:
    """Solve ``x = fn(x, args)``, differentiably.

    Works under ``jax.jit``, ``jax.vmap`` (e.g. a batch of ``args``: one shared loop for the
    batch, each member stopping at its own step) and ``jax.grad``, in float32 and float64.

    Args:
        fn: the map ``fn(x, args) -> x'`` with ``x'`` of the structure, shapes and dtypes of
            ``x``. It may close over arrays (also tracers: gradients reach them).
        x0: initial guess, any pytree of float arrays (e.g. shape ``(n,)``); its dtype (float32
            or float64) sets the precision of the solve.
        args: pytree of parameters; gradients flow to its float arrays.
        solver: an :class:`Anderson` (default ``Anderson()``) or :class:`Forward` instance: the
            whole configuration (tolerances, ``max_steps``, history, mixing, divergence).
        throw: raise :class:`FixedPointError` if the solve (or, in the backward pass, the
            adjoint solve) fails; under ``jit`` / ``vmap`` the error comes from
            ``equinox.error_if``, whose message is the solver's sentence. With
            ``throw=False`` a failure is only reported (``report.result``) and a failed
            adjoint gives a NaN gradient.

    Returns:
        ``(x, report)``: the solution with the structure of ``x0`` and a
        :class:`FixedPointReport` (``result``, ``converged``, ``num_steps``,
        ``relative_residual``, ``growth``); under ``vmap`` both get the batch axis.

    Raises:
        FixedPointError: with ``throw=True``, if the solve does not converge, diverges, or
            meets NaN/inf (the message says which, with the numbers, and what to do).
        ValueError / TypeError: a bad ``solver`` or an ``fn`` whose output does not match ``x``.

    Gradients are implicit (the adjoint fixed point is solved with the same solver); the
    gradient with respect to ``x0`` is zero. Forward mode (``jvp``) is not supported.
    """
    solver = Anderson() if solver is None else solver
    if not isinstance(solver, AbstractSolver):
        raise TypeError(
            f"solver must be a jcausal solver object such as jc.Anderson() or jc.Forward(), got "
            f"{type(solver).__name__}"
        )
    if _eager(fn, x0, args):
        # A call outside any transformation: run a compiled program cached on `fn` (by
        # identity) and the solver, instead of compiling the solver's loops afresh for the
        # closure-converted map of every call (seconds per call at any size).
        x, report = _compiled(fn, jax.tree.map(_as_array, x0), jax.tree.map(_as_array, args),
                              solver)  # fmt: skip
        if throw and not bool(jnp.all(report.converged)):
            raise FixedPointError(report.message())
        return x, report
    return _fixed_point(fn, x0, args, solver, throw)


def _eager(fn, x0, args) -> bool:
    """Whether ``fixed_point`` runs outside jit/vmap/grad, with a hashable ``fn``."""
    if is_traced((x0, args)):
        return False
    try:
        hash(fn)
    except TypeError:  # e.g. a bound method of a module holding arrays
        return False
    # `fn` may close over tracers (e.g. `grad` of a function that builds `fn`): those must go
    # through the closure conversion of the traced path. A plain function whose closure holds
    # only data (arrays, numbers, pytrees of them) is checked by looking; anything else is
    # traced once to find out.
    if isinstance(fn, types.FunctionType):
        cells = [c.cell_contents for c in fn.__closure__ or () if _filled(c)]
        if not any(callable(c) for c in cells):
            return not is_traced(cells)
    try:
        converted = eqx.filter_closure_convert(fn, x0, args)
    except Exception:  # let the traced path report the error with its own message
        return False
    return not is_traced(converted)


def _filled(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:  # an empty cell (a name assigned later)
        return False
    return True


@eqx.filter_jit
def _compiled(fn, x0, args, solver):
    return _fixed_point(fn, x0, args, solver, False)


def _fixed_point(fn, x0, args, solver: AbstractSolver, throw: bool):
    x0 = jax.tree.map(_as_float, x0)
    flat_x0, unravel = ravel_pytree(x0)
    dtype = flat_x0.dtype
    solver = solver.resolved(dtype)
    dyn, static = eqx.partition(jax.tree.map(_as_array, args), eqx.is_array)

    def flat_fn(v, d):
        out = fn(unravel(v), eqx.combine(d, static))
        flat_out, _ = ravel_pytree(out)
        if flat_out.shape != v.shape:
            raise ValueError(
                "fn(x, args) must return the same structure and shapes as x; got "
                f"{flat_out.shape[0]} elements for {v.shape[0]}."
            )
        return flat_out.astype(dtype)

    # Hoist every JAX array `fn` closes over (float tracers under grad, integer tracers under
    # vmap, constants) into a pytree-callable, so that the custom_vjp differentiates with respect
    # to them and custom_vmap sees which ones are batched.
    fn_c = eqx.filter_closure_convert(flat_fn, flat_x0, dyn)
    fa, fa_static = eqx.partition((fn_c, dyn), eqx.is_array)
    # Strongly typed: a weakly typed scalar would enter the custom_vjp as a Python float.
    fa = jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype=leaf.dtype), fa)
    x, stats = _solve(solver, bool(throw), _Static(fa_static), flat_x0, fa)
    stats = jax.lax.stop_gradient(stats)
    result = _result(solver, stats)
    converged = result == RESULTS.successful
    tiny = jnp.finfo(dtype).tiny
    rel = stats.r_norm / jnp.maximum(stats.y_norm, tiny)
    rel = jnp.where(jnp.isfinite(rel), rel, jnp.inf).astype(dtype)
    growth = (stats.y_norm / jnp.maximum(stats.scale0, tiny)).astype(dtype)
    report = FixedPointReport(
        num_steps=stats.num_steps,
        relative_residual=rel,
        growth=growth,
        result=result,
        converged=converged,
    )
    if throw:
        if is_traced((x, report)):
            x = eqx.branched_error_if(
                x, ~converged, message_index(result, rel), compiled_messages(solver.max_steps)
            )
        elif not bool(jnp.all(converged)):
            raise FixedPointError(report.message())
    return unravel(x), report


def relative_residual(
    fn: Callable[[PyTree, PyTree], PyTree], x: PyTree[ArrayLike], args: PyTree
) -> Float[Array, ""]:
    """Relative residual ``||x - fn(x, args)||_2 / ||x||_2`` (dimensionless).

    ``x`` is any pytree of arrays (all leaves flattened into one vector). Returns ``0`` when
    ``x = fn(x) = 0``, and ``inf`` if the residual is not finite.
    """
    flat_x, _ = ravel_pytree(x)
    flat_fx, _ = ravel_pytree(fn(x, args))
    r = two_norm(flat_fx - flat_x)
    n = two_norm(flat_x)
    out = r / jnp.maximum(n, jnp.finfo(n.dtype).tiny)
    return jnp.where(jnp.isfinite(out), out, jnp.inf)


__all__ = ["fixed_point", "relative_residual"]
