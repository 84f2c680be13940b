"""Counterfactuals guided by prototypes (Van Looveren & Klaise 2021), batched in JAX.

For a factual image ``x0`` and a target class ``t``, minimise over ``x`` in ``[0, 1]^D``::

    c * max(0, max_{i != t} p_i(x) - p_t(x) + kappa)        classifier margin
    + beta * |x - x0|_1 + |x - x0|_2^2                       elastic-net distance
    + gamma * |AE(x) - x|_2^2                                autoencoder (stay on the manifold)
    + theta * |ENC(x) - proto_t|_2^2                         prototype of the target class

with ``p`` the classifier's probabilities, ``AE``/``ENC`` the all-class autoencoder and its
encoder, and ``proto_t`` the mean code of the target class's training images (their
"prototype", the default of alibi's ``CounterfactualProto`` with an encoder: all instances of
the class). The paper's margin is untargeted (it pushes the factual class below the others and
lets the prototype choose the class); with a requested target class the targeted
(Carlini-Wagner) form above is the one that asks for it.

Optimiser (the paper's Algorithm 1 and alibi): FISTA. A gradient step on the smooth terms
(gradients clipped to ``[-1000, 1000]``, learning rate ``1e-2`` decayed to 0 as
``(1 - k/K)^0.5``: optax ``clip`` + ``sgd`` with a polynomial schedule), then the proximal step
of the L1 term (shrinkage towards ``x0``) and the projection on ``[0, 1]``, then momentum
``k/(k+3)``. The shrinkage threshold is ``lr_k * beta``, the proximal operator of the stated
objective; alibi shrinks by ``beta`` itself. The returned counterfactual is the iterate with the
smallest ``beta * L1 + L2`` among those the classifier assigns to the target (by ``kappa``), as in
alibi; a unit whose search never reached the target returns its last iterate with
``found = False``.

Hyperparameters (defaults): ``c = 1``, ``beta = 0.1``, ``gamma = 100``, ``theta = 100``,
``kappa = 0``, ``max_iterations = 1000``, ``learning_rate = 1e-2``: beta, kappa, the learning rate,
the clip and the iteration count are alibi's ``CounterfactualProto`` defaults; ``c = 1`` (one
constant, no bisection), ``gamma = theta = 100`` are the MNIST settings Schut et al. 2021 used
for this baseline (``experiments/method_prototypes.py`` of their repository, "matching the
original paper as far as possible"; they ran 2000 iterations). Written from the papers'
equations, not from alibi's code.

Each unit is optimised independently: the whole search of one unit is one ``lax.scan``, and
units are ``vmap``-ed.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Bool, Float, Int

from ..metrics.autoencoders import check_images, check_labels
from ..metrics.counterfactual import as_unit_classifier


class Prototype(eqx.Module):
    """The method's hyperparameters (module docstring); a solver object, like optimistix's."""

    c: float = 1.0
    beta: float = 0.1
    gamma: float = 100.0
    theta: float = 100.0
    kappa: float = 0.0
    max_iterations: int = eqx.field(static=True, default=1000)
    learning_rate: float = 1e-2
    clip: float = 1000.0

    def __check_init__(self):
        for name in ("c", "beta", "gamma", "theta", "kappa", "learning_rate", "clip"):
            v = getattr(self, name)
            if isinstance(v, (int, float)) and not (np.isfinite(v) and v >= 0):
                raise ValueError(f"Prototype.{name} must be finite and >= 0, got {v}")
        if int(self.max_iterations) < 1:
            raise ValueError(f"Prototype.max_iterations must be >= 1, got {self.max_iterations}")


class PrototypeResult(eqx.Module):
    """Counterfactuals of :func:`prototype_counterfactuals`.

    Attributes:
        x_cf: ``(B, 28, 28, 1)`` counterfactual images in ``[0, 1]``.
        found: ``(B,)`` whether the classifier assigns ``x_cf`` to the target.
        loss: ``(B, max_iterations)`` the objective (all terms) at the point where each
            iteration takes its gradient (FISTA's extrapolated iterate; the first is ``x``).
    """

    x_cf: Float[Array, "B 28 28 1"]
    found: Bool[Array, " B"]
    loss: Float[Array, "B T"]


def class_prototypes(
    encoder, images: Float[np.ndarray, "N 28 28 1"], labels: Int[np.ndarray, " N"], classes=10
) -> Float[Array, "K d"]:
    """Mean code ``(K, d)`` of each class's images under ``encoder`` (one image -> ``(d,)``).

    Raises:
        ValueError: bad images or labels, or a class without images.
    """
    x = check_images(images)
    y = check_labels(labels, len(x), classes=classes)
    counts = np.bincount(y, minlength=classes)
    if np.any(counts == 0):
        raise ValueError(f"classes {np.where(counts == 0)[0]} have no images for a prototype")
    codes = np.concatenate(
        [np.asarray(_encode(encoder, jnp.asarray(x[i : i + 1000]))) for i in range(0, len(x), 1000)]
    )
    return jnp.asarray(np.stack([codes[y == k].mean(0) for k in range(classes)]))


@eqx.filter_jit
def _encode(encoder, x):
    return jax.vmap(encoder)(x)


def _terms(method: Prototype, classifier, autoencoder, encoder, x, x0, proto, target):
    p = jax.nn.softmax(classifier(x))
    others = jnp.where(jnp.arange(p.shape[-1]) == target, -jnp.inf, p)
    margin = jnp.maximum(0.0, jnp.max(others) - p[target] + method.kappa)
    d = x - x0
    smooth = (
        method.c * margin
        + jnp.sum(d**2)
        + method.gamma * jnp.sum((autoencoder(x) - x) ** 2)
        + method.theta * jnp.sum((encoder(x) - proto) ** 2)
    )
    return smooth, p


def _search_one(method, classifier, autoencoder, encoder, prototypes, x0, target):
    proto = prototypes[target]
    dt = x0.dtype
    steps = method.max_iterations
    schedule = optax.polynomial_schedule(method.learning_rate, 0.0, 0.5, steps)
    opt = optax.chain(optax.clip(method.clip), optax.sgd(schedule))
    # One forward+backward pass per iteration, at the extrapolated point y; the new iterate
    # only goes through the (cheap) classifier, for the counterfactual check.
    value_and_grad = jax.value_and_grad(
        lambda x: _terms(method, classifier, autoencoder, encoder, x, x0, proto, target)[0]
    )

    def hits(p):
        # The target wins by kappa (alibi's check for a counterfactual).
        others = jnp.where(jnp.arange(p.shape[-1]) == target, -jnp.inf, p)
        return p[target] >= jnp.max(others) + method.kappa

    def step(carry, k):
        x, y, opt_state, best, best_dist, found = carry
        smooth, g = value_and_grad(y)
        upd, opt_state = opt.update(g, opt_state)
        z = y + upd.astype(dt)  # optax's schedule is float64 under x64; the image's dtype rules
        lr_k = schedule(k).astype(dt)
        shrink = jnp.sign(z - x0) * jnp.maximum(jnp.abs(z - x0) - lr_k * method.beta, 0.0)
        x_new = jnp.clip(x0 + shrink, 0.0, 1.0)
        y_new = jnp.clip(x_new + (k / (k + 3.0)).astype(dt) * (x_new - x), 0.0, 1.0)
        p = jax.nn.softmax(classifier(x_new))
        dist = method.beta * jnp.sum(jnp.abs(x_new - x0)) + jnp.sum((x_new - x0) ** 2)
        better = hits(p) & (dist < best_dist)
        best = jnp.where(better, x_new, best)
        best_dist = jnp.where(better, dist, best_dist)
        total = smooth + method.beta * jnp.sum(jnp.abs(y - x0))
        return (x_new, y_new, opt_state, best, best_dist, found | better), total.astype(dt)

    init = (x0, x0, opt.init(x0), x0, jnp.asarray(jnp.inf, x0.dtype), jnp.asarray(False))
    (x_last, _, _, best, _, found), loss = jax.lax.scan(step, init, jnp.arange(steps))
    return jnp.where(found, best, x_last), found, loss


@eqx.filter_jit
def _search(method, classifier, autoencoder, encoder, prototypes, x, targets):
    return jax.vmap(
        lambda a, t: _search_one(method, classifier, autoencoder, encoder, prototypes, a, t)
    )(x, targets)


def prototype_counterfactuals(
    classifier,
    autoencoder,
    encoder,
    prototypes: Float[Array, "K d"],
    x: Float[np.ndarray, "B 28 28 1"],
    y_cf: Int[np.ndarray, " B"],
    method: Prototype | None = None,
) -> PrototypeResult:
    """Prototype-guided counterfactuals of ``x`` towards classes ``y_cf`` (module docstring).

    Args:
        classifier: one image ``(28, 28, 1)`` in ``[0, 1]`` -> logits ``(K,)``, or a
            :class:`~jcausal.metrics.DigitClassifier` (grey levels; wrapped).
        autoencoder: one image -> its reconstruction (the all-class autoencoder).
        encoder: one image -> code ``(d,)`` (the all-class autoencoder's encoder).
        prototypes: ``(K, d)`` class prototypes (:func:`class_prototypes`).
        x: factual images ``(B, 28, 28, 1)`` in ``[0, 1]``.
        y_cf: target classes ``(B,)`` in ``0..K-1``.
        method: the hyperparameters (default ``Prototype()``).

    Returns:
        A :class:`PrototypeResult`.

    Raises:
        ValueError: bad images (shape, range, NaN), targets (shape, range) or prototypes.
    """
    method = Prototype() if method is None else method
    classifier = as_unit_classifier(classifier)
    xs = check_images(x, "x")
    protos = jnp.asarray(prototypes)
    if protos.ndim != 2 or not bool(jnp.all(jnp.isfinite(protos))):
        raise ValueError(f"prototypes must be a finite (K, d) array, got shape {protos.shape}")
    t = check_labels(y_cf, len(xs), "y_cf", classes=protos.shape[0])
    x_cf, found, loss = _search(
        method, classifier, autoencoder, encoder, protos, jnp.asarray(xs), jnp.asarray(t)
    )
    return PrototypeResult(x_cf=x_cf, found=found, loss=loss)


__all__ = ["Prototype", "PrototypeResult", "class_prototypes", "prototype_counterfactuals"]
