"""The noise schedule of a diffusion model and its forward (noising) process.

The forward process ``q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)`` with
``abar_t = prod_{j <= t} (1 - beta_j)`` for steps ``t = 0 .. T-1`` (Ho et al. 2020). Step ``t``
of this module is step ``t + 1`` of the papers (whose ``x_0`` is the data); the data itself has
``abar = 1`` and is reached by the last DDIM step (see :mod:`jcausal.diffusion.ddim`).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float


class Schedule(eqx.Module):
    """A discrete noise schedule: ``betas``, ``alphas = 1 - betas``, ``alpha_bar``, each ``(T,)``.

    Build it with :meth:`linear` (Ho et al.; the default of Diff-SCM's paper) or :meth:`cosine`
    (Nichol & Dhariwal 2021; the Diff-SCM code's MNIST configuration). The products are formed
    in float64 and stored in float32 (or float64 under ``jax_enable_x64``).

    Attributes:
        betas: per-step noise variances ``beta_t`` in ``(0, 1)``.
        alphas: ``1 - beta_t``.
        alpha_bar: ``prod_{j <= t} alphas_j``, decreasing from ``~1`` to ``~0``.
    """

    betas: Float[Array, " T"]
    alphas: Float[Array, " T"]
    alpha_bar: Float[Array, " T"]

    def __init__(self, betas: ArrayLike):
        b = np.asarray(betas, np.float64)
        if b.ndim != 1 or b.size < 1 or not np.all((b > 0) & (b < 1)):
            raise ValueError(
                f"betas must be a non-empty 1-d array of variances in (0, 1), got shape "
                f"{b.shape} with range [{b.min() if b.size else 'nan'}, "
                f"{b.max() if b.size else 'nan'}]"
            )
        dtype = jnp.result_type(float)
        self.betas = jnp.asarray(b, dtype)
        self.alphas = jnp.asarray(1.0 - b, dtype)
        self.alpha_bar = jnp.asarray(np.cumprod(1.0 - b), dtype)

    @classmethod
    def linear(cls, T: int = 1000, beta_min: float = 1e-4, beta_max: float = 0.02) -> Schedule:
        """Betas evenly spaced from ``beta_min`` to ``beta_max`` over ``T`` steps (Ho et al.)."""
        T = _steps(T)
        if not 0 < beta_min <= beta_max < 1:
            raise ValueError(
                f"need 0 < beta_min <= beta_max < 1, got beta_min={beta_min}, beta_max={beta_max}"
            )
        return cls(np.linspace(beta_min, beta_max, T))

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
        """``abar(u) = cos^2((u + s) / (1 + s) pi / 2)``, ``u = t / T`` (Nichol & Dhariwal 2021).

        ``beta_t = min(1 - abar((t + 1) / T) / abar(t / T), max_beta)``.
        """
        T = _steps(T)

        def abar(u):
            return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

        betas = [min(1 - abar((t + 1) / T) / abar(t / T), max_beta) for t in range(T)]
        return cls(np.asarray(betas))

    @property
    def T(self) -> int:
        """Number of diffusion steps."""
        return int(self.betas.shape[0])


def _steps(T) -> int:
    if isinstance(T, bool) or not isinstance(T, int | np.integer) or T < 1:
        raise ValueError(f"T (number of diffusion steps) must be a positive integer, got {T!r}")
    return int(T)


def q_sample(
    sched: Schedule, x0: Float[Array, "*shape"], t: ArrayLike, eps: Float[Array, "*shape"]
) -> Float[Array, "*shape"]:
    """Noise ``x0`` to step ``t``: ``sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``.

    Args:
        sched: the schedule.
        x0: clean data, ``(B, ...)`` (or one example with a scalar ``t``).
        t: step index per example, ``(B,)`` ints in ``[0, T)``, or a scalar.
        eps: standard normal noise of ``x0``'s shape.

    Returns:
        ``x_t`` of ``x0``'s shape.
    """
    a = sched.alpha_bar[jnp.asarray(t)]
    a = a.reshape(a.shape + (1,) * (x0.ndim - a.ndim))
    return jnp.sqrt(a) * x0 + jnp.sqrt(1.0 - a) * eps


__all__ = ["Schedule", "q_sample"]
