"""Block-Jacobi preconditioning of ``x = A x + b`` for tables with a block structure.

A multi-regional input-output table is dense within each region and sparse between regions
(trade). Its slow modes live in the diagonal blocks: ``(I - A)`` has one eigenvalue near
``1 - rho(A_rr)`` per region, which is why a Krylov or Anderson solve of a block-regional table
takes about twice the products of a dense one of the same size (``benchmarks/
linear_solvers.py``: 16 against 8 at n = 2,000). Splitting ``A = D + (A - D)`` with ``D`` the
diagonal blocks and iterating

    x = (I - D)^{-1} ((A - D) x + b)

removes them: the iteration matrix ``(I - D)^{-1} (A - D)`` only carries trade (spectral
radius 0.12 against 0.60 for the benchmark's 2,000-sector table, 20 regions). Anderson on this
map needs 6-7 products with ``A`` where it needs 13-16 on ``x = A x + b``. Each step costs one
product with ``A`` plus two products with the ``k`` blocks (``2 n s`` multiplications for
blocks of size ``s``, as triangular solves); the setup factorises the blocks once (``k`` LUs of
``s x s``, ``2 n s^2 / 3`` flops), so it pays when products with ``A`` dominate the cost.

The preconditioned map has the same fixed point, and its implicit gradient is exact with the
blocks held constant: with ``M = I - D`` fixed, ``I - d/dx`` of the map is ``M^{-1} (I - A)``
and its derivative in ``A`` is ``M^{-1} dA x``, so the implicit function theorem gives
``dx = (I - A)^{-1} dA x`` whatever ``M`` is. The blocks therefore enter the solve through
``stop_gradient`` and the gradient flows through ``A x`` only (``dL/dA = g x^T``, ``g`` the
adjoint solution), computed by the same preconditioned Anderson on the transposed map.

The stopping test of Anderson measures the *preconditioned* residual ``M^{-1} (A x + b - x)``;
the result is judged, and reported, by the true residual ``A x + b - x`` (one more product).
"""

from __future__ import annotations

import functools as ft

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .anderson import AbstractSolver
from .auto import AUTO_HISTORY, AUTO_MARGIN, _MarginAnderson
from .implicit import fixed_point
from .iteration import two_norm
from .lapack import lu_factor, lu_solve
from .products import matvec
from .results import RESULTS, FixedPointReport, compiled_messages, message_index


class BlockJacobi(AbstractSolver):
    """Anderson on the block-Jacobi preconditioned form of ``x = A x + b`` (explicit ``A``).

    For :func:`jcausal.linear_fixed_point` (and what calls it) with a matrix whose diagonal
    blocks of ``block_size`` unknowns carry most of its weight: a multi-regional input-output
    table with ``block_size`` sectors per region (Exiobase 3: 200). See the module docstring
    for the method and its gradient.

    Args:
        block_size: unknowns per diagonal block (sectors per region); must divide ``n``.
        rtol: relative tolerance on the true residual, ``||A x + b - x|| <= rtol ||x|| +
            atol``; ``None`` (default) is 1e-10 in float64, 1e-5 in float32.
        atol: absolute guard, in units of ``x``.
        max_steps: most products with ``A`` in the forward solve.
        history: Anderson's history (default :data:`AUTO_HISTORY`, as :class:`Auto`'s).
        divergence: growth factor flagging divergence (see :class:`Anderson`).
        margin: the forward solve aims ``margin`` times below ``rtol`` on the preconditioned
            residual (default :data:`AUTO_MARGIN`, as :class:`Auto`: a residual as small as
            GMRES's); the adjoint solve aims at ``rtol``.
    """

    block_size: int = eqx.field(static=True, kw_only=True)
    rtol: float | None = eqx.field(static=True, default=None)
    atol: float = eqx.field(static=True, default=1e-12)
    max_steps: int = eqx.field(static=True, default=500)
    history: int = eqx.field(static=True, default=AUTO_HISTORY)
    divergence: float = eqx.field(static=True, default=1e6)
    margin: float = eqx.field(static=True, default=AUTO_MARGIN)

    def __check_init__(self):
        size = self.block_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"block_size must be a positive integer, got {size!r}")
        if int(self.history) < 2:
            raise ValueError(f"history must be >= 2, got {self.history}")
        if not self.margin >= 1:
            raise ValueError(f"margin must be >= 1, got {self.margin!r}")

    def run(self, fn, x0, args):
        raise TypeError(
            "BlockJacobi preconditions an explicit matrix: use it with "
            "jc.linear_fixed_point(A, b, solver=jc.BlockJacobi(block_size=s)), not with "
            "fixed_point on a function"
        )

    def inner(self, dtype) -> _MarginAnderson:
        """The Anderson run on the preconditioned map (``rtol`` resolved for ``dtype``)."""
        rtol = float(self.resolved(dtype).rtol)
        eps = float(jnp.finfo(dtype).eps)
        tight = min(rtol, max(rtol / float(self.margin), 100 * eps))
        return _MarginAnderson(
            rtol=tight,
            atol=float(self.atol),
            max_steps=int(self.max_steps),
            history=int(self.history),
            divergence=float(self.divergence),
            adjoint_rtol=rtol,
        )


def diagonal_blocks(A: Float[Array, "n n"], size: int) -> Float[Array, "k s s"]:
    """The ``k = n / size`` diagonal blocks of ``A``, ``(k, size, size)`` (a gather, no loop)."""
    n = A.shape[0]
    k = n // size
    return jnp.moveaxis(jnp.diagonal(A.reshape(k, size, k, size), axis1=0, axis2=2), -1, 0)


def factor_blocks(D: Float[Array, "k s s"]) -> tuple[Float[Array, "k s s"], Int[Array, "k s"]]:
    """LU factors of ``I - D_i`` for every block (one matrix at a time on CPU; no gradient).

    Factors, not inverses: XLA:CPU's triangular solve with a matrix right-hand side (the
    inverse) took 0.25-0.30 s for 20 blocks of 490 (n = 9,800), ten products with ``A``; the
    LUs alone cost a third of the flops, and each step then solves with vectors.
    """
    M = jnp.eye(D.shape[-1], dtype=D.dtype) - jax.lax.stop_gradient(D)
    return jax.vmap(lu_factor)(M)


def _blocks_mv(B: Float[Array, "k s s"], v: Float[Array, " n"]) -> Float[Array, " n"]:
    k, s, _ = B.shape
    return jnp.einsum("kij,kj->ki", B, v.reshape(k, s)).reshape(-1)


def _blocks_solve(lu, piv, v, trans: int):
    k, s = piv.shape
    w = jax.vmap(lambda m, p, r: lu_solve((m, p), r, trans=trans))(lu, piv, v.reshape(k, s))
    return w.reshape(-1)


def apply_inverse(D, lu, piv, r: Float[Array, " n"]) -> Float[Array, " n"]:
    """``(I - D)^{-1} r`` with the blocks' factors, linear in ``r`` with its transpose.

    ``lax.custom_linear_solve`` gives the solve its transpose (the same factors, transposed),
    which reverse mode needs for the adjoint of the preconditioned map; the factors' own
    loop (:mod:`jcausal.solvers.lapack`) has no transpose rule.
    """
    return jax.lax.custom_linear_solve(
        lambda v: v - _blocks_mv(D, v),
        r,
        lambda _, v: _blocks_solve(lu, piv, v, 0),
        lambda _, v: _blocks_solve(lu, piv, v, 1),
    )


def _preconditioned(x, p):
    A, b, D, lu, piv = p
    return apply_inverse(D, lu, piv, matvec(A, x) + b - _blocks_mv(D, x))


@ft.lru_cache(maxsize=64)  # by value: an equal solver reuses the compiled program
def program(solver: BlockJacobi, dtype, throw: bool, zero_start: bool):
    """The jitted block-Jacobi solve for ``solver``: ``(A, b[, x0]) -> (x, report)``."""
    if zero_start:
        return jax.jit(lambda A, b: solve(solver, dtype, throw, A, b, None))
    return jax.jit(ft.partial(solve, solver, dtype, throw))


def solve(solver: BlockJacobi, dtype, throw: bool, A, b, x0):
    """Solve ``x = A x + b`` by Anderson on the block-Jacobi map; ``(x, FixedPointReport)``."""
    A = jnp.asarray(A, dtype)
    b = jnp.asarray(b, dtype)
    D = jax.lax.stop_gradient(diagonal_blocks(A, solver.block_size))
    lu, piv = factor_blocks(D)
    # A block with I - D_i singular: a zero pivot (LAPACK's U then has a zero on its diagonal).
    singular = jnp.any(jnp.diagonal(lu, axis1=-2, axis2=-1) == 0)
    lu = jnp.where(singular, jnp.eye(lu.shape[-1], dtype=dtype), lu)
    inner = solver.inner(dtype)
    # No guess: start at the map's value at zero, (I - D)^{-1} b, which costs no product.
    b_ = jax.lax.stop_gradient(b)
    start = apply_inverse(D, lu, piv, b_) if x0 is None else jnp.asarray(x0, dtype)
    x, rep = fixed_point(_preconditioned, jax.lax.stop_gradient(start), (A, b, D, lu, piv),
                         solver=inner, throw=False)  # fmt: skip
    # Judge by the true residual (one product; not differentiated).
    xs = jax.lax.stop_gradient(x)
    r_norm = two_norm(matvec(jax.lax.stop_gradient(A), xs) + jax.lax.stop_gradient(b) - xs)
    y_norm = two_norm(xs)
    rtol, atol = float(solver.resolved(dtype).rtol), float(solver.atol)
    met = r_norm <= rtol * y_norm + atol
    tiny = jnp.finfo(dtype).tiny
    rel = jnp.where(jnp.isfinite(r_norm), r_norm / jnp.maximum(y_norm, tiny), jnp.inf)
    failed = (rep.result != RESULTS.successful) & (rep.result != RESULTS.max_steps_reached)
    judged = RESULTS.where(met, RESULTS.successful, RESULTS.max_steps_reached)
    result = RESULTS.where(failed, rep.result, judged)
    # NaN or inf in A or b is named as such, before a block it made singular.
    bad_input = rep.result == RESULTS.nonfinite_input
    result = RESULTS.where(singular & ~bad_input, RESULTS.singular, result)
    report = FixedPointReport(
        num_steps=rep.num_steps + 1,
        relative_residual=rel.astype(dtype),
        growth=rep.growth,
        result=result,
        converged=result == RESULTS.successful,
    )
    if throw:
        x = eqx.branched_error_if(
            x,
            ~report.converged,
            message_index(result, report.relative_residual),
            compiled_messages(int(solver.max_steps)),
        )
    return x, report


__all__ = ["BlockJacobi", "apply_inverse", "diagonal_blocks", "factor_blocks"]
