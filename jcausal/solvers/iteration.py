"""Anderson acceleration as an ``optimistix`` fixed-point solver, and the stopping rule.

:class:`AndersonIteration` performs the steps of both public solvers (:class:`~.Anderson`, and
:class:`~.Forward` as its ``history = 1`` case); :func:`classify` is the one stopping rule
(tolerance, divergence, non-finite values) shared by single and batched solves.

Why our own Anderson rather than jaxopt's ``AndersonAcceleration``: it extrapolates from the
second step on (masking empty history slots) where jaxopt first fills its history with plain
Picard steps; it scales the Gram matrix by its diagonal so that ``ridge`` is relative; it solves
the small weight system by an unrolled elimination instead of LAPACK calls (cheap under
``vmap``); and it keeps ``y + beta r`` in its history, so one extrapolation pass suffices.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, Bool, Float, Int, PyTree, Scalar


def two_norm(x: Float[Array, " n"]) -> Scalar:
    """``sqrt(x . x)``: one fused pass, cheaper than ``optx.two_norm`` (which rescales).

    Overflow gives inf, which the solver then reports (``RESULTS.nonfinite``).
    """
    return jnp.sqrt(jnp.vdot(x, x).real)


# --------------------------------------------------------------------------------------------
# The iteration.


def _spd_solve(g: Float[Array, "m m"], rhs: Float[Array, " m"], floor: float) -> Float[Array, " m"]:
    """Solve ``g z = rhs`` for a small symmetric positive definite ``g`` (Gauss-Jordan, unrolled).

    No pivoting is needed for SPD matrices; pivots are clamped below at ``floor`` so that one
    made tiny (or negative) by rounding cannot produce inf/NaN. For the m <= ~10 systems of
    Anderson this is a handful of fused elementwise ops, which under ``vmap`` cost far less than
    a batched LAPACK ``getrf`` + permutation loop + two ``trsm`` calls.
    """
    m = g.shape[0]
    aug = jnp.concatenate([g, rhs[:, None]], axis=1)
    for k in range(m):
        row = aug[k] / jnp.maximum(aug[k, k], floor)
        aug = (aug - aug[:, k, None] * row[None, :]).at[k].set(row)
    return aug[:, m]


def _anderson_weights(
    gram: Float[Array, "m m"], valid: Bool[Array, " m"], ridge: float, relative: bool = True
) -> Float[Array, " m"]:
    """Weights ``a`` minimising ``||sum_i a_i r_i||^2 + ridge (scaled) ||a||^2``, ``sum a = 1``.

    ``gram[i, j] = <r_i, r_j>`` for the residuals in the history; slots with ``valid=False`` are
    empty and get weight 0. The Gram matrix is rescaled by its diagonal first
    (``a_i = b_i / ||r_i||``), so that (i) ``ridge`` is relative to the size of the residuals and
    does not take over once they become small near convergence, and (ii) the m x m system stays
    well scaled in float32, where forming a Gram matrix squares the condition number.

    With the scaled Gram matrix ``g`` (plus ``ridge`` on the diagonal, so SPD with eigenvalues
    >= ridge) and ``c_i = 1 / ||r_i||``, the minimiser of ``b^T g b`` subject to ``c^T b = 1`` is
    ``b = z / (c^T z)`` with ``g z = c`` (the KKT conditions), and ``a = c * b``.

    With ``relative=False`` the ridge is absolute, in the units of ``<r_i, r_j>``: the
    unscaled Gram matrix plus ``ridge I`` (the deep-equilibrium reference implementation's
    choice), i.e. the same formulas with ``c_i = 1`` for the filled slots.
    """
    if not relative:
        both = valid[:, None] & valid[None, :]
        g = jnp.where(both, gram, 0) + jnp.diag(jnp.where(valid, ridge, 1).astype(gram.dtype))
        c = valid.astype(g.dtype)
        # Exact pivots are >= min(ridge, 1) (eigenvalues of g); with ridge = 0 the floor is
        # relative to the largest entry, as rounding noise in the pivots is.
        floor = jnp.maximum(0.5 * min(ridge, 1.0), jnp.finfo(g.dtype).eps * jnp.max(g))
        z = _spd_solve(g, c, floor)
        return c * (z / jnp.vdot(c, z))
    d = jnp.where(valid, jnp.diagonal(gram), 1)
    # A residual that is exactly zero is a solution: keep d=1 so that its (zero) scaled column
    # makes that slot the cheapest, rather than dividing by zero.
    d = jnp.where(d > 0, d, 1)
    s = jax.lax.rsqrt(d)
    both = valid[:, None] & valid[None, :]
    g = jnp.where(both, gram * s[:, None] * s[None, :], 0)
    g = g + jnp.diag(jnp.where(valid, ridge, 1).astype(g.dtype))
    c = jnp.where(valid, s, 0)
    # Exact pivots are >= ridge (and 1 for empty slots); below that it is rounding noise.
    floor = max(0.5 * ridge, float(jnp.finfo(g.dtype).eps))
    z = _spd_solve(g, c, floor)
    return c * (z / jnp.vdot(c, z))


class AndersonState(eqx.Module):
    """State of :class:`AndersonIteration` (the ring buffer and the stopping statistics)."""

    # Ring buffer: step k writes slot k % m. Under `vmap` the batched driver keeps `k` shared
    # by the whole batch (unbatched), so the write stays an in-place dynamic_update_slice
    # instead of becoming a scatter.
    gs: Float[Array, "m n"]  # y_i + beta r_i: the points that Anderson mixes
    rs: Float[Array, "m n"]  # residuals r_i = f(y_i) - y_i
    gram: Float[Array, "m m"]  # <r_i, r_j>, one new row/column per step: O(m n)
    k: Int[Array, ""]  # number of evaluations so far
    y_last: Float[Array, " n"]  # the last evaluated point (what we return)
    r_norm: Scalar  # ||f(y_last) - y_last||
    y_norm: Scalar  # ||y_last||
    scale0: Scalar  # max(||x0||, ||f(x0)||): the scale of the start (set at the first step)
    r_first: Scalar  # ||f(x0) - x0||


class AndersonIteration(optx.AbstractFixedPointSolver):
    """Anderson acceleration (type II) as an ``optimistix`` fixed-point solver, on 1-D arrays.

    At step k, with history ``y_i, r_i = f(y_i) - y_i`` for the last ``min(k, history)`` points,
    it computes weights ``a`` (``sum a = 1``) minimising ``||sum a_i r_i||`` (ridge-regularised,
    see ``_anderson_weights``) and moves to ``sum a_i (y_i + beta r_i)``. With ``history=1`` this
    is exactly forward (Picard) iteration ``y + beta (f(y) - y)``.

    ``ridge_kind="absolute"`` regularises the unscaled Gram matrix instead (see
    ``_anderson_weights``), and ``first_beta`` (if set) replaces ``beta`` for the very first
    move ``x_1 = x_0 + first_beta r_0``: both reproduce the deep-equilibrium reference code
    (``first_beta = 1``: ``x_1 = f(x_0)``).

    Stops when ``||f(y) - y||_2 <= rtol ||y||_2 + atol``, when a non-finite value appears, or when
    the iterate diverges (see ``RESULTS.diverged``), and returns the last evaluated point ``y``
    (not the extrapolation), so that the stopping test holds for the returned value.
    """

    rtol: float
    atol: float
    norm: Callable[[PyTree], Scalar] = two_norm
    history: int = 5
    beta: float = 1.0
    ridge: float = 1e-6
    divergence: float = 1e6
    ridge_kind: str = "relative"
    first_beta: float | None = None

    def init(self, fn, y, args, options, f_struct, aux_struct, tags):
        del fn, args, options, f_struct, aux_struct, tags
        if y.ndim != 1:
            raise ValueError(f"Anderson works on 1-D arrays, got shape {y.shape}.")
        m = self.history
        zeros = jnp.zeros((m, *y.shape), y.dtype)
        inf = jnp.array(jnp.inf, y.dtype)
        return AndersonState(
            gs=zeros,
            rs=zeros,
            gram=jnp.zeros((m, m), y.dtype),
            k=jnp.array(0),
            y_last=y,
            r_norm=inf,
            y_norm=self.norm(y),
            scale0=inf,
            r_first=inf,
        )

    def step(self, fn, y, args, options, state, tags):
        del options, tags
        fy, aux = fn(y, args)
        r = fy - y
        m = self.history
        slot = state.k % m
        gs = jax.lax.dynamic_update_index_in_dim(state.gs, y + self.beta * r, slot, 0)
        rs = jax.lax.dynamic_update_index_in_dim(state.rs, r, slot, 0)
        if m == 1:
            new_y = gs[0]  # forward iteration, exactly
            gram = state.gram
        else:
            row = rs @ r  # (m,) inner products with the new residual; empty slots are zero
            gram = jax.lax.dynamic_update_index_in_dim(state.gram, row, slot, 0)
            gram = jax.lax.dynamic_update_index_in_dim(gram, row, slot, 1)
            valid = jnp.arange(m) <= state.k
            relative = self.ridge_kind == "relative"
            new_y = _anderson_weights(gram, valid, self.ridge, relative) @ gs
        if self.first_beta is not None and self.first_beta != self.beta:
            # Only the move from x0 is mixed differently; the history keeps y_0 + beta r_0.
            new_y = jnp.where(state.k == 0, y + self.first_beta * r, new_y)
        r_norm, y_norm = self.norm(r), self.norm(y)
        first = state.k == 0
        new_state = AndersonState(
            gs=gs,
            rs=rs,
            gram=gram,
            k=state.k + 1,
            y_last=y,
            r_norm=r_norm,
            y_norm=y_norm,
            # ||f(x0)|| is needed once: a cond on the step counter (shared by a batch, so it
            # stays a branch under vmap) skips the extra pass over f(y) afterwards.
            scale0=jax.lax.cond(
                first, lambda: jnp.maximum(y_norm, self.norm(fy)), lambda: state.scale0
            ),
            r_first=jnp.where(first, r_norm, state.r_first),
        )
        return new_y, new_state, aux

    def terminate(self, fn, y, args, options, state, tags):
        del fn, y, args, options, tags
        code = classify(self, state.k, state.r_norm, state.y_norm, state.scale0, state.r_first)
        # Before the first step r_norm is a placeholder inf: never stop there.
        done = (state.k > 0) & (code != _RUNNING)
        return done, optx.RESULTS.successful

    def postprocess(self, fn, y, aux, args, options, state, tags, result):
        del fn, y, args, options, tags, result
        return state.y_last, aux, {}


# Result codes as plain integers inside the loop (the RESULTS enumeration is built outside).
_RUNNING, _OK, _DIVERGED, _NONFINITE, _NONFINITE_INPUT = -1, 0, 1, 2, 3


def classify(solver, k, r_norm, y_norm, scale0, r_first) -> Int[Array, "*b"]:
    """The state of a solve from its statistics: one of the ``_OK`` ... codes or ``_RUNNING``.

    Order of precedence: non-finite (at the first evaluation: the input), then the tolerance
    test, then divergence. Elementwise, so it serves single and batched solves.
    """
    finite = jnp.isfinite(r_norm) & jnp.isfinite(y_norm)
    # A residual small only relative to a huge iterate is not convergence: when a system has no
    # solution (e.g. a singular I - A) the iterate grows without bound while ||x - f(x)|| stays
    # at its first value, and the relative test passes once ||x|| > ||r|| / rtol. After the
    # first evaluation the residual must also have shrunk; a genuine solve passes this unless
    # its condition number is ~1/rtol, where the answer would have no correct digits anyway.
    # Once eps ||x|| exceeds the first residual, x - f(x) is lost to rounding (x + b == x in
    # floating point) and a zero residual certifies nothing.
    lost = jnp.finfo(y_norm.dtype).eps * y_norm > 0.5 * r_first
    shrunk = (k <= 1) | ((r_norm <= 0.5 * r_first) & ~lost)
    ok = finite & (r_norm <= solver.rtol * y_norm + solver.atol) & shrunk
    diverged = (y_norm > solver.divergence * scale0) & ((r_norm > 1e-3 * r_first) | lost)
    code = jnp.where(diverged, _DIVERGED, _RUNNING)
    code = jnp.where(ok, _OK, code)
    bad_input = ~jnp.isfinite(scale0) | ~jnp.isfinite(r_first)
    return jnp.where(finite, code, jnp.where(bad_input | (k <= 1), _NONFINITE_INPUT, _NONFINITE))


__all__ = ["AndersonIteration", "AndersonState", "classify", "two_norm"]
