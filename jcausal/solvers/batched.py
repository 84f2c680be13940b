"""The forward solve, single or batched: the optimistix solver's steps in our own loops.

Under ``jax.vmap``, JAX's generic rule for a while loop with a batched stopping test runs the
body for every member and then ``select``s every carried array between its old and new value,
and a batched step counter turns the ring-buffer writes into scatters. For Anderson's
``(batch, m, n)`` history that costs several extra passes over memory per step, as much as the
batched matrix-vector product itself at n = 1000. So a ``jax.custom_batching.custom_vmap`` rule
runs the same solver steps for the whole batch in one loop with a shared step counter; each
member still stops at its own step and returns exactly what its unbatched solve returns. On the
64-intervention batch at n = 1000 (float64) this cut the non-GEMM cost per batched step from
~0.8 to ~0.25 ms.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .iteration import AndersonIteration, AndersonState, classify


class Stats(NamedTuple):
    """What a raw solve reports about the returned point (batched: leading axis on each)."""

    num_steps: Int[Array, "*b"]
    r_norm: Float[Array, "*b"]  # ||x - f(x)|| at the returned x
    y_norm: Float[Array, "*b"]  # ||x||
    scale0: Float[Array, "*b"]  # max(||x0||, ||f(x0)||)
    r_first: Float[Array, "*b"]  # ||f(x0) - x0||


def _stats(state: AndersonState, steps) -> Stats:
    return Stats(
        jnp.asarray(steps, jnp.int32), state.r_norm, state.y_norm, state.scale0, state.r_first
    )


def solve_flat(fn, solver: AndersonIteration, max_steps: int, x0, args):
    """Solve ``x = fn(x, args)`` for a 1-D ``x0``; ``fn`` must close over no tracers.

    ``fn`` is a pytree-callable (from ``eqx.filter_closure_convert``) passed inside ``args`` by
    the caller, so every traced value reaches ``custom_vmap`` as an explicit, possibly batched,
    argument. Returns ``(x, Stats)``.
    """

    @jax.custom_batching.custom_vmap
    def run(x0, args):
        return _single(fn, solver, max_steps, x0, args)

    @run.def_vmap
    def _(size, in_batched, x0, args):
        out = _batched(fn, solver, max_steps, size, in_batched, x0, args)
        return out, jax.tree.map(lambda _: True, out)

    return run(x0, args)


def _single(fn, solver: AndersonIteration, max_steps: int, x0, args):
    """The steps ``optx.fixed_point(fn, solver, x0, args)`` takes, in a plain ``while_loop``.

    Same ``init`` / ``step`` / stopping test (so the same iterates, stopping step and returned
    point), without optimistix's generic loop around them: its bookkeeping cost 25-35% of a
    small solve's CPU time (n = 50-200, float64; neutral at n = 1,000). Failures are
    classified by ``fixed_point``; the adjoint is irrelevant (this runs inside our
    ``custom_vjp``).
    """
    f_struct = jax.ShapeDtypeStruct(x0.shape, x0.dtype)
    tags = frozenset()

    def fn_aux(y, a):
        return fn(y, a), None

    def cond(carry):
        s = carry[1]
        code = classify(solver, s.k, s.r_norm, s.y_norm, s.scale0, s.r_first)
        return (s.k < max_steps) & ((s.k == 0) | (code == -1))

    def body(carry):
        y, s = carry
        return solver.step(fn_aux, y, args, {}, s, tags)[:2]

    state = solver.init(fn_aux, x0, args, {}, f_struct, None, tags)
    _, state = jax.lax.while_loop(cond, body, (x0, state))
    return state.y_last, _stats(state, state.k)


def _batched(fn, solver: AndersonIteration, max_steps: int, size, in_batched, x0, args):
    """Batched twin of ``optx.fixed_point(fn, solver, x0, args)``: same steps, cheaper loop.

    One ``while_loop`` runs until every member has stopped (or ``max_steps``). Every member takes
    a step each iteration and the solver state (history ring buffer, Gram matrix) is updated
    for all of them with the step counter ``k`` shared, i.e. unbatched, so history writes are
    in-place slices. A member that has stopped is held at the point where it stopped (see
    ``hold``) and its statistics are frozen. Each member therefore returns exactly what the
    unbatched solve returns (same iterates, same stopping step).

    ``in_batched`` is ``custom_vmap``'s ``(x0 batched?, pytree of args leaves batched?)``.
    """
    x0_batched, args_batched = in_batched
    if not x0_batched:
        x0 = jnp.broadcast_to(x0, (size, *x0.shape))
    args_axes = jax.tree.map(lambda b: 0 if b else None, args_batched)
    state_axes = AndersonState(
        gs=0, rs=0, gram=0, k=None, y_last=0, r_norm=0, y_norm=0, scale0=0, r_first=0
    )
    f_struct = jax.ShapeDtypeStruct(x0.shape[1:], x0.dtype)
    tags = frozenset()

    def fn_aux(y, a):
        return fn(y, a), None

    init_one = jax.vmap(
        lambda y: solver.init(fn_aux, y, None, {}, f_struct, None, tags), out_axes=state_axes
    )
    step_all = jax.vmap(
        lambda y, a, s: solver.step(fn_aux, y, a, {}, s, tags)[:2],
        in_axes=(0, args_axes, state_axes),
        out_axes=(0, state_axes),
    )

    def stop_all(s: AndersonState):
        code = classify(solver, s.k, s.r_norm, s.y_norm, s.scale0, s.r_first)
        return (s.k > 0) & (code != -1)

    state = init_one(x0)
    done = stop_all(state)
    steps = jnp.zeros((size,), jnp.int32)
    frozen = (state.r_norm, state.y_norm, state.scale0, state.r_first)
    init = (x0, state, done, steps, frozen)

    def hold(y, new_y, done):
        # A member that has stopped is held at the point where it stopped, so it keeps
        # re-evaluating that point: its `state.y_last` stays the point to return, without a
        # full-size select per step to record it. The hold itself costs a full-size select,
        # so it runs only in iterations where some member has stopped.
        return jax.lax.cond(
            jnp.any(done), lambda: jnp.where(done[:, None], y, new_y), lambda: new_y
        )

    def cond(carry):
        state, done = carry[1], carry[2]
        return (state.k < max_steps) & ~jnp.all(done)

    def body(carry):
        y, state, done, steps, frozen = carry
        new_y, state = step_all(y, args, state)
        live = ~done
        now = (state.r_norm, state.y_norm, state.scale0, state.r_first)
        frozen = tuple(jnp.where(live, a, b) for a, b in zip(now, frozen, strict=True))
        steps = steps + live.astype(jnp.int32)
        # Judge each member on its frozen statistics: once stopped, it stays stopped.
        live_state = AndersonState(state.gs, state.rs, state.gram, state.k, state.y_last, *frozen)
        done = done | stop_all(live_state)
        return hold(y, new_y, done), state, done, steps, frozen

    _, state, _, steps, frozen = jax.lax.while_loop(cond, body, init)
    return state.y_last, Stats(steps, *frozen)


__all__ = ["Stats", "solve_flat"]
