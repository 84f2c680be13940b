"""LU factorisation and solves that cannot deadlock a multi-device CPU run.

jaxlib (0.10.2, as installed here) executes a *batched* LAPACK call on CPU (``getrf`` of a
``vmap``-ed LU, ``trsm`` of its solves) by cutting the batch into chunks, scheduling them on
XLA's intra-op thread pool and blocking the calling pool thread until they are done (its
``ParallelBatchMap``: whenever the batch holds more than about 2e5 flops, e.g. 2 LUs of 64 ×
64). On one device that thread waits while the others work. With several CPU devices (fake
ones, ``--xla_force_host_platform_device_count``, or a real multi-device CPU mesh) every
device's program runs on that same pool: when each device blocks a pool thread in its own
batched LU (or at a collective, waiting for a device that is itself blocked), no thread is
left to run the chunks they wait for, and the process sleeps forever. That is the deadlock
of the design sweeps on a device mesh (``jcausal.economy.sweeps``; tables of at most
``DIRECT_MAX`` sectors are solved by LU, and each device factorises its λ as one batch);
``gdb`` shows every ``XLAEigen`` pool thread in ``lapack_dgetrf_ffi`` →
``jax::ParallelBatchMap`` → ``absl::BlockingCounter::Wait``. Later jaxlib versions no
longer split LAPACK batches in open-source builds ("no faster on Linux").

:func:`lu_factor` and :func:`lu_solve` are ``jax.scipy.linalg``'s, except that on CPU a
batch (under ``vmap``) is factorised and solved one matrix at a time in a loop
(``jax.custom_batching.sequential_vmap``): each LAPACK call gets one matrix, which jaxlib runs
inline on the calling thread, so nothing waits on the pool. Per matrix the same LAPACK
routines run on the same data, so the results are bitwise those of the batched call. Other
platforms keep the batched call (``jax.lax.platform_dependent`` picks at lowering).
"""

from __future__ import annotations

import functools as ft

import jax
import jax.scipy.linalg as jsl
from jaxtyping import Array, Float, Int


def _one_at_a_time_on_cpu(f):
    """``f``, whose ``vmap`` on CPU is a loop of unbatched calls (the batched call elsewhere)."""
    looped = jax.custom_batching.sequential_vmap(f)

    def call(*args):
        return jax.lax.platform_dependent(*args, cpu=looped, default=f)

    return call


@_one_at_a_time_on_cpu
def _factor(m):
    return jsl.lu_factor(m)


@ft.cache
def _solver(trans: int):
    return _one_at_a_time_on_cpu(lambda lu, piv, b: jsl.lu_solve((lu, piv), b, trans=trans))


def lu_factor(m: Float[Array, "n n"]) -> tuple[Float[Array, "n n"], Int[Array, " n"]]:
    """``jax.scipy.linalg.lu_factor(m)``: ``(lu, pivots)``; batches one at a time on CPU."""
    return _factor(m)


def lu_solve(
    lu_and_piv: tuple[Float[Array, "n n"], Int[Array, " n"]],
    b: Float[Array, " n"],
    trans: int = 0,
) -> Float[Array, " n"]:
    """``jax.scipy.linalg.lu_solve(lu_and_piv, b, trans)``; batches one at a time on CPU.

    Args:
        lu_and_piv: the factors of :func:`lu_factor`.
        b: ``(n,)`` right-hand side.
        trans: 0 solves ``M x = b``, 1 ``M^T x = b``.
    """
    lu, piv = lu_and_piv
    return _solver(int(trans))(lu, piv, b)


__all__ = ["lu_factor", "lu_solve"]
