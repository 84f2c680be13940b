"""``JaxoptAnderson``: jaxopt's ``AndersonAcceleration`` behind jcausal's solver interface.

A peer for ``benchmarks/equilibrium.py`` only (like numpy's LU): it was the library's second
backend until a side-by-side measurement showed it winning nowhere (interleaved A/B in one
process, best of 40: at n = 200 and 1000, float32 and float64, solve and solve + gradient it took
1.03-1.46x the time of ``jcausal.Anderson``, with 7-8 map evaluations where ours needs 6-7; a
64-member ``vmap`` batch at n = 1000 took 1.6-1.9x as long; on the block-regional system both
need 11). Same stopping rule, report and implicit
gradients as the library's solvers, so the comparison is like for like.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jaxopt

from jcausal.solvers import AbstractSolver
from jcausal.solvers.batched import Stats
from jcausal.solvers.iteration import classify, two_norm


class JaxoptAnderson(AbstractSolver):
    """Anderson acceleration by ``jaxopt.AndersonAcceleration`` (history, beta, ridge).

    Arguments as for :class:`~jcausal.solvers.Anderson`. ``ridge`` is made relative: it is
    multiplied by the largest squared residual in the history before jaxopt adds it to its raw
    Gram matrix (a fixed ridge takes over near convergence: measured 59 instead of 14 steps at
    n = 200, float64, rtol = 1e-12).
    """

    rtol: float | None = eqx.field(static=True, default=None)
    atol: float = eqx.field(static=True, default=1e-12)
    max_steps: int = eqx.field(static=True, default=500)
    history: int = eqx.field(static=True, default=5)
    beta: float = eqx.field(static=True, default=1.0)
    ridge: float = eqx.field(static=True, default=1e-6)
    divergence: float = eqx.field(static=True, default=1e6)

    def __check_init__(self):
        if int(self.history) < 2:
            raise ValueError(f"history must be >= 2 for Anderson acceleration, got {self.history}")

    def run(self, fn, x0, args):
        dtype = x0.dtype
        # jaxopt stops on an ABSOLUTE residual; we keep its iteration (its public
        # `init_state` / `update` API, what `run` loops over) and drive it with our own loop
        # and stopping rule. jaxopt builds its Gram matrix and KKT system in the *default*
        # float dtype, so it iterates in the promoted dtype while `fn` runs in x's dtype.
        work = jnp.promote_types(dtype, jnp.zeros(()).dtype)

        def g(v, a):
            return fn(v.astype(dtype), a).astype(work)

        def make(state):
            if state is None:
                ridge = self.ridge
            else:
                d_max = jnp.max(jnp.diagonal(state.residual_gram))
                ridge = self.ridge * jnp.where(d_max > 0, d_max, 1.0)
            return jaxopt.AndersonAcceleration(
                fixed_point_fun=g,
                history_size=self.history,
                beta=self.beta,
                ridge=ridge,
                maxiter=self.max_steps,
                implicit_diff=False,
            )

        x0 = x0.astype(work)
        state0 = make(None).init_state(x0, args)
        inf = jnp.array(jnp.inf, work)
        stats0 = (jnp.array(0), inf, two_norm(x0), inf, inf)

        def cond(carry):
            _, _, _, (k, r_norm, y_norm, scale0, r_first) = carry
            code = classify(self, k, r_norm, y_norm, scale0, r_first)
            return (k < self.max_steps) & ((k == 0) | (code == -1))

        def body(carry):
            x, state, _, (k, _, _, scale0, r_first) = carry
            x_next, state_next = make(state).update(x, state, args)
            state_next = jax.tree.map(lambda new, old: new.astype(old.dtype), state_next, state)
            # `update` evaluated f at the extrapolated point y and stored y and its residual
            # r = f(y) - y in its history (slot iter_num - 1), with error = ||r||.
            slot = (state_next.iter_num - 1) % self.history
            y = state_next.params_history[slot]
            r = state_next.residuals_history[slot]
            r_norm = state_next.error
            y_norm = two_norm(y)
            first = k == 0
            scale0 = jnp.where(first, jnp.maximum(y_norm, two_norm(y + r)), scale0)
            r_first = jnp.where(first, r_norm, r_first)
            return x_next.astype(work), state_next, y, (k + 1, r_norm, y_norm, scale0, r_first)

        init = (x0, state0, x0, stats0)
        _, _, y, (k, r_norm, y_norm, scale0, r_first) = jax.lax.while_loop(cond, body, init)
        cast = lambda a: a.astype(dtype)  # noqa: E731
        return cast(y), Stats(
            jnp.asarray(k, jnp.int32), cast(r_norm), cast(y_norm), cast(scale0), cast(r_first)
        )


__all__ = ["JaxoptAnderson"]
