"""Flow mechanisms: a :class:`jcausal.flows.Flow` as an invertible SCM mechanism."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from ..scm import Invertible
from .conditioners import Conditioner
from .layers import Affine, Exp, Flow, Layer, Normalise, Sigmoid, Spline, flow_bijector

Constraint = Literal["exp", "sigmoid"] | None


def normalisation(
    x: ArrayLike, constraint: Constraint = None, margin: float = 0.01
) -> tuple[Array, Array]:
    """Fixed ``(loc, scale)`` of the :class:`Normalise` layer, estimated from data ``x`` (n, ...).

    * ``None``: mean and standard deviation of ``x`` (whitening);
    * ``"exp"``: mean and standard deviation of ``log x`` (whitening in log space);
    * ``"sigmoid"``: ``loc = min - margin * range`` and ``scale = (1 + 2 margin) * range``
      (Deep SCM rescales ``(0, 1)`` to the data's range; the margin keeps the extreme
      observations strictly inside, where the log-density is finite).

    Args:
        x: ``(n, ...)`` observations of the node, in its own units.
        constraint: the flow's outer constraint, ``None``, ``"exp"`` or ``"sigmoid"``.
        margin: for ``"sigmoid"``, the fraction of the range added on each side.

    Returns:
        ``(loc, scale)``, each of the node's shape (``x.shape[1:]``).

    Raises:
        ValueError: non-positive data with ``"exp"``, or an unknown constraint.
    """
    x = jnp.asarray(x, dtype=float)
    if constraint == "exp":
        if np.any(np.asarray(x) <= 0):
            raise ValueError("normalisation with constraint='exp' needs positive data")
        lx = jnp.log(x)
        return jnp.mean(lx, axis=0), jnp.std(lx, axis=0)
    if constraint == "sigmoid":
        lo, hi = jnp.min(x, axis=0), jnp.max(x, axis=0)
        r = hi - lo
        return lo - margin * r, (1 + 2 * margin) * r
    if constraint is None:
        return jnp.mean(x, axis=0), jnp.std(x, axis=0)
    raise ValueError(f"constraint must be None, 'exp' or 'sigmoid', got {constraint!r}")


def _outer(constraint: Constraint, normalise) -> list[Layer]:
    """Constraint and normalisation layers, outermost first, in Deep SCM's order."""
    norm = [] if normalise is None else [Normalise(*normalise)]
    if constraint is None:
        return norm
    if constraint == "exp":
        return [Exp(), *norm]  # whiten in log space, then exponentiate
    if constraint == "sigmoid":
        return [*norm, Sigmoid()]  # squash to (0, 1), then rescale to the data's range
    raise ValueError(f"constraint must be None, 'exp' or 'sigmoid', got {constraint!r}")


def _standard_normal(shape: tuple[int, ...]) -> distrax.Distribution:
    if shape:
        return distrax.Independent(
            distrax.Normal(jnp.zeros(shape), jnp.ones(shape)), reinterpreted_batch_ndims=len(shape)
        )
    return distrax.Normal(jnp.zeros(()), jnp.ones(()))


def flow_mechanism(flow: Flow, noise: distrax.Distribution | None = None) -> Invertible:
    """An invertible mechanism ``x := flow(parents)(u)``; ``u`` standard normal by default.

    The noise shape is taken from ``noise``; without it, from the first layer that has
    parameters (scalar if none).

    Args:
        flow: the flow ``u -> x``, outermost layer first; its parents are the node's.
        noise: exogenous noise of one unit (default: standard normal).
    """
    if noise is None:
        shape: tuple[int, ...] = ()
        for layer in flow.layers:
            params = getattr(layer, "params", None)
            if isinstance(params, Conditioner):
                shape = tuple(params.bias.shape[:-1])
                break
        noise = _standard_normal(shape)
    return Invertible(flow_bijector, flow, noise, flow.parents)


def spline_mechanism(
    key: PRNGKeyArray,
    parents: Sequence[str] = (),
    *,
    shape: tuple[int, ...] = (),
    num_bins: int = 8,
    bound: float = 3.0,
    order: Literal["quadratic", "linear"] = "quadratic",
    context_size: int | None = None,
    width: int = 16,
    depth: int = 1,
    affine: bool = False,
    constraint: Constraint = None,
    normalise: tuple[ArrayLike, ArrayLike] | None = None,
    log_parents: Sequence[str] = (),
    context_normalise: tuple[ArrayLike, ArrayLike] | None = None,
    noise: distrax.Distribution | None = None,
) -> Invertible:
    """Spline-flow mechanism ``x := (constraint ∘ normalise ∘ spline_pa [∘ affine])(u)``.

    Deep SCM's thickness (eq. A.1) is ``spline_mechanism(key, constraint="exp",
    normalise=normalisation(t, "exp"))``; its independent intensity (A.3) adds
    ``affine=True`` with ``constraint="sigmoid"``.

    Args:
        key: initialises the context networks.
        parents: parent names; with parents the spline (and affine) parameters come from a
            context network of the parents.
        shape: node shape.
        num_bins: number of spline bins (see :class:`Spline`).
        bound: the spline acts on ``[-bound, bound]``, identity outside (see :class:`Spline`).
        order: ``"quadratic"`` (rational-quadratic) or ``"linear"`` (see :class:`Spline`).
        context_size: total size of the parents' values (default: one number per parent).
        width: hidden width of the context network.
        depth: hidden layers of the context network.
        affine: add a learnable (conditional) affine layer before the spline.
        constraint: ``None``, ``"exp"`` (positive node) or ``"sigmoid"`` (bounded node).
        normalise: ``(loc, scale)`` of the fixed normalisation (see :func:`normalisation`).
        log_parents: parents that enter the context as their logarithm (see :class:`Flow`).
        context_normalise: ``(loc, scale)`` of the context (see :class:`Flow`).
        noise: exogenous noise (default standard normal of ``shape``).
    """
    parents = tuple(parents)
    c = (len(parents) if context_size is None else int(context_size)) if parents else 0
    k1, k2 = jax.random.split(key)
    core: list[Layer] = [Spline(k1, shape, num_bins, bound, order, c, width, depth)]
    if affine:
        core.append(Affine(k2, shape, c, width, depth))
    ctx = (None, None) if context_normalise is None else context_normalise
    flow = Flow([*_outer(constraint, normalise), *core], parents, log_parents, *ctx)
    return flow_mechanism(flow, noise)


def affine_mechanism(
    key: PRNGKeyArray,
    parents: Sequence[str] = (),
    *,
    shape: tuple[int, ...] = (),
    context_size: int | None = None,
    width: int = 8,
    depth: int = 1,
    constraint: Constraint = None,
    normalise: tuple[ArrayLike, ArrayLike] | None = None,
    log_parents: Sequence[str] = (),
    context_normalise: tuple[ArrayLike, ArrayLike] | None = None,
    noise: distrax.Distribution | None = None,
) -> Invertible:
    """Conditional-affine mechanism ``x := (constraint ∘ normalise ∘ affine_pa)(u)``.

    Deep SCM's intensity given thickness (eq. A.2) is ``affine_mechanism(key, ["t"],
    depth=0, constraint="sigmoid", normalise=normalisation(i, "sigmoid"), log_parents=["t"],
    context_normalise=normalisation(t, "exp"))`` (``depth=0``: a linear context map).
    Arguments as in :func:`spline_mechanism`.
    """
    parents = tuple(parents)
    c = (len(parents) if context_size is None else int(context_size)) if parents else 0
    ctx = (None, None) if context_normalise is None else context_normalise
    layers = [*_outer(constraint, normalise), Affine(key, shape, c, width, depth)]
    return flow_mechanism(Flow(layers, parents, log_parents, *ctx), noise)
