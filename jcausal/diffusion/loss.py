"""Training losses of a diffusion model and of its noise-conditioned guidance networks.

Each is a plain function of arrays; wrap it into ``loss(params, batch, key)`` for
:func:`jcausal.train.fit` (train the score model with ``fit(..., ema=0.999)`` and sample with
``history.ema_params``: the EMA weights are checkpointed with the run). Networks are called
with ``key=`` for their dropout masks (a :class:`jcausal.nn.Pure` network accepts it).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray, Scalar

from .schedule import Schedule, q_sample


def _noised(sched: Schedule, x0: Array, key: PRNGKeyArray) -> tuple[Array, Array, Array]:
    kt, ke = jax.random.split(key)
    t = jax.random.randint(kt, (x0.shape[0],), 0, sched.T)
    eps = jax.random.normal(ke, x0.shape, x0.dtype)
    return q_sample(sched, x0, t, eps), t, eps


def eps_loss(
    eps_fn: Callable[..., Array],
    sched: Schedule,
    x0: Float[Array, " batch *shape"],
    key: PRNGKeyArray,
) -> Scalar:
    """The ε-prediction loss (Ho et al.'s L_simple, Diff-SCM eq. 1 unweighted).

    ``mean ||eps_fn(x_t, t, key=k) - eps||^2`` over the batch and pixels, with ``t`` uniform on
    ``[0, T)`` and ``x_t = q_sample(x0, t, eps)`` per example.

    Args:
        eps_fn: the network, called ``eps_fn(x_t, t, key=dropout_key)``.
        sched: the schedule.
        x0: a batch of clean data ``(B, ...)`` (images in ``[-1, 1]``).
        key: random key (steps, noise, dropout).

    Returns:
        The scalar loss.
    """
    kn, kd = jax.random.split(key)
    xt, t, eps = _noised(sched, x0, kn)
    return jnp.mean((eps_fn(xt, t, key=kd) - eps) ** 2)


def classifier_loss(
    logits_fn: Callable[..., Array],
    sched: Schedule,
    x0: Float[Array, " batch *shape"],
    y: Int[Array, " batch"],
    key: PRNGKeyArray,
) -> tuple[Scalar, dict[str, Array]]:
    """Cross-entropy of a time-conditioned classifier on noised images ``x_t``, ``t ~ U[0, T)``.

    Args:
        logits_fn: the classifier, called ``logits_fn(x_t, t, key=dropout_key) -> (B, K)``.
        sched: the schedule.
        x0: clean images ``(B, ...)`` in ``[-1, 1]``.
        y: their classes ``(B,)``.
        key: random key.

    Returns:
        ``(loss, {"accuracy": ...})`` (accuracy on the noised batch).
    """
    kn, kd = jax.random.split(key)
    xt, t, _ = _noised(sched, x0, kn)
    logits = logits_fn(xt, t, key=kd)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}


def regressor_loss(
    mean_fn: Callable[..., Array],
    sched: Schedule,
    x0: Float[Array, " batch *shape"],
    y: Float[Array, " batch d"],
    key: PRNGKeyArray,
    sigma: ArrayLike = 1.0,
) -> Scalar:
    """Gaussian negative log-likelihood (up to a constant) of a noise-conditioned regressor.

    ``mean(0.5 ((y - mean_fn(x_t, t)) / sigma)^2)`` with ``t ~ U[0, T)``: trains the means
    used by :func:`jcausal.diffusion.gaussian_log_prob` for continuous parents.
    """
    kn, kd = jax.random.split(key)
    xt, t, _ = _noised(sched, x0, kn)
    return jnp.mean(0.5 * ((y - mean_fn(xt, t, key=kd)) / sigma) ** 2)


__all__ = ["classifier_loss", "eps_loss", "regressor_loss"]
