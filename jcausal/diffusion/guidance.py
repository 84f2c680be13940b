"""Noise-prediction transformations: classifier guidance and clipping of the predicted ``x_0``.

Both take an ``eps_fn(x, t)`` and return another one, so the DDIM loops of
:mod:`jcausal.diffusion.ddim` (sampling, and plain or exact inversion) serve plain, guided and
clipped models alike. The order is Diff-SCM's (guided-diffusion's ``condition_score``): clip
first, then guide, i.e. ``guided(clipped(eps_fn, sched), log_prob_fn, s, sched)``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .schedule import Schedule

EpsFn = Callable[[Array, Array], Array]
LogProbFn = Callable[[Array, Array], Array]


def guided(eps_fn: EpsFn, log_prob_fn: LogProbFn, scale: ArrayLike, sched: Schedule) -> EpsFn:
    """Classifier guidance: ``eps - s sqrt(1 - abar_t) grad_x log p(y* | x_t)`` (Alg. 1).

    Args:
        eps_fn: noise prediction ``eps_fn(x, t)``.
        log_prob_fn: ``log_prob_fn(x, t)`` = ``log p(y* | x_t)`` with the target ``y*`` built
            in (e.g. :func:`class_log_prob`); per image (summed over a batch: the images'
            gradients are independent).
        scale: the guidance scale ``s >= 0`` (an array: changing it does not recompile).
        sched: the schedule (``abar_t``).

    Returns:
        The guided ``eps_fn``.
    """

    def eps(x: Array, t: Array) -> Array:
        grad = jax.grad(lambda x: jnp.sum(log_prob_fn(x, t)))(x)
        return eps_fn(x, t) - scale * jnp.sqrt(1.0 - sched.alpha_bar[t]) * grad

    return eps


def x0_from_eps(sched: Schedule, x: Array, t: Array, eps: Array) -> Array:
    """The prediction ``x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``."""
    a = sched.alpha_bar[t]
    return (x - jnp.sqrt(1.0 - a) * eps) / jnp.sqrt(a)


def dynamic_threshold(x0: Float[Array, "*b H W C"], quantile: float = 0.99) -> Array:
    """Diff-SCM's dynamic normalisation of a predicted image (channels last).

    Per image and channel, ``q = max(quantile(|x0|, 0.99 over H, W), 1)``; returns
    ``clip(x0, -q, q) / q``, in ``[-1, 1]``. Values already in ``[-1, 1]`` with ``q = 1`` are
    unchanged.
    """
    q = jnp.quantile(jnp.abs(x0), quantile, axis=(-3, -2), keepdims=True)
    q = jnp.maximum(q, 1.0)
    return jnp.clip(x0, -q, q) / q


def clipped(eps_fn: EpsFn, sched: Schedule, mode: str = "dynamic", quantile: float = 0.99) -> EpsFn:
    """Clip the predicted ``x_0`` and return the noise consistent with it.

    ``x0 = x0_from_eps(eps)`` is clipped (``"static"``: to ``[-1, 1]``; ``"dynamic"``:
    :func:`dynamic_threshold`), and ``eps' = (x_t - sqrt(abar_t) x0') / sqrt(1 - abar_t)``,
    so a DDIM step with ``eps'`` predicts the clipped image. Images channels last
    (``(..., H, W, C)``) for ``"dynamic"``.

    Args:
        eps_fn: noise prediction ``eps_fn(x, t)``.
        sched: the schedule.
        mode: ``"dynamic"`` (Diff-SCM's code) or ``"static"``.
        quantile: the quantile of ``|x0|`` for ``"dynamic"``.

    Returns:
        The clipped ``eps_fn``.
    """
    if mode not in ("dynamic", "static"):
        raise ValueError(f"clipping mode must be 'dynamic' or 'static', got {mode!r}")

    def eps(x: Array, t: Array) -> Array:
        x0 = x0_from_eps(sched, x, t, eps_fn(x, t))
        x0 = dynamic_threshold(x0, quantile) if mode == "dynamic" else jnp.clip(x0, -1.0, 1.0)
        a = sched.alpha_bar[t]
        return (x - jnp.sqrt(a) * x0) / jnp.sqrt(1.0 - a)

    return eps


def class_log_prob(logits_fn: Callable[[Array, Array], Array], y: ArrayLike) -> LogProbFn:
    """``log p(y | x_t) = log_softmax(logits_fn(x, t))[y]`` for a target class ``y``.

    ``logits_fn(x, t) -> (..., K)``; ``y`` an int (or ints broadcasting against the batch).
    """

    def log_prob(x: Array, t: Array) -> Array:
        logp = jax.nn.log_softmax(logits_fn(x, t), axis=-1)
        yy = jnp.broadcast_to(jnp.asarray(y, jnp.int32), logp.shape[:-1])
        return jnp.take_along_axis(logp, yy[..., None], axis=-1)[..., 0]

    return log_prob


def gaussian_log_prob(
    mean_fn: Callable[[Array, Array], Array], y: ArrayLike, sigma: ArrayLike = 1.0
) -> LogProbFn:
    """``log N(y; mean_fn(x, t), sigma^2)`` summed over outputs (continuous parents).

    A noise-conditioned regressor's outputs as the means of a Gaussian ``p(y | x_t)``; its
    gradient guides towards continuous targets ``y`` (e.g. thickness and intensity).
    ``mean_fn(x, t) -> (..., d)``; ``y`` of shape ``(d,)`` (or broadcasting); ``sigma`` the
    standard deviation(s), in the units of ``y``.
    """

    def log_prob(x: Array, t: Array) -> Array:
        z = (jnp.asarray(y) - mean_fn(x, t)) / sigma
        return jnp.sum(-0.5 * z**2 - jnp.log(sigma) - 0.5 * jnp.log(2 * jnp.pi), axis=-1)

    return log_prob


__all__ = [
    "class_log_prob",
    "clipped",
    "dynamic_threshold",
    "gaussian_log_prob",
    "guided",
    "x0_from_eps",
]
