"""Flow layers (element-wise bijectors given a context) and :class:`Flow`, their composition."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Literal

import distrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..scm import Parents
from .conditioners import Conditioner, ParentContext
from .splines import LinearRationalSpline, RationalQuadraticSpline, _ExpBijector


class Layer(eqx.Module):
    """A flow layer: ``layer(context) -> distrax.Bijector`` (element-wise).

    ``context`` is a 1-D array of the node's (normalised) parents, or an empty array for a
    root node.
    """

    @abc.abstractmethod
    def __call__(self, context: Float[Array, " c"]) -> distrax.Bijector:
        """The layer's bijector for this context."""


class Spline(Layer):
    """Monotone spline on ``[-bound, bound]`` (identity outside), optionally conditional.

    Args:
        key: initialises the context network (unused without context).
        shape: shape of the node (``()`` for a scalar).
        num_bins: number of bins ``K``.
        bound: half-width of the spline's interval, in the layer's input units.
        order: ``"quadratic"`` (:class:`RationalQuadraticSpline`, distrax's parameters,
            ``3K + 1`` of them) or
            ``"linear"`` (:class:`LinearRationalSpline`, ``4K - 1`` parameters).
        context_size: size of the context vector (0: no context network).
        width: hidden width of the context network.
        depth: hidden layers of the context network.
    """

    params: Conditioner
    order: str = eqx.field(static=True)
    bound: float = eqx.field(static=True)

    def __init__(
        self,
        key: PRNGKeyArray,
        shape: tuple[int, ...] = (),
        num_bins: int = 8,
        bound: float = 3.0,
        order: Literal["quadratic", "linear"] = "quadratic",
        context_size: int = 0,
        width: int = 16,
        depth: int = 1,
    ):
        if order not in ("quadratic", "linear"):
            raise ValueError(f"Spline order must be 'quadratic' or 'linear', got {order!r}")
        if num_bins < 1:
            raise ValueError(f"Spline needs num_bins >= 1, got {num_bins}")
        p = 3 * num_bins + 1 if order == "quadratic" else 4 * num_bins - 1
        self.params = Conditioner(key, tuple(shape), p, context_size, width, depth)
        self.order = order
        self.bound = float(bound)

    def __call__(self, context: Array) -> distrax.Bijector:
        theta = self.params(context)
        if self.order == "quadratic":
            return RationalQuadraticSpline(
                theta, -self.bound, self.bound, boundary_slopes="identity"
            )
        return LinearRationalSpline(theta, -self.bound, self.bound)


class Affine(Layer):
    """``x = shift + exp(log_scale) * u`` element-wise; conditional when ``context_size > 0``.

    Without context this is Deep SCM's ``Affine``; with a context network it is its
    ``ConditionalAffine`` (``depth=0`` gives the paper's linear context map).

    Args:
        key: initialises the context network (unused without context).
        shape: shape of the node (``()`` for a scalar).
        context_size: size of the context vector (0: no context network).
        width: hidden width of the context network.
        depth: hidden layers of the context network.
    """

    params: Conditioner

    def __init__(
        self,
        key: PRNGKeyArray,
        shape: tuple[int, ...] = (),
        context_size: int = 0,
        width: int = 8,
        depth: int = 1,
    ):
        self.params = Conditioner(key, tuple(shape), 2, context_size, width, depth)

    def __call__(self, context: Array) -> distrax.Bijector:
        theta = self.params(context)
        return distrax.ScalarAffine(shift=theta[..., 0], log_scale=theta[..., 1])


class Normalise(Layer):
    """Fixed affine map ``x = loc + scale * u`` (not trained: gradients are stopped).

    Args:
        loc: location, broadcastable to the node's shape (e.g. from :func:`normalisation`).
        scale: positive scale, likewise.
    """

    loc: Array
    scale: Array

    def __init__(self, loc: ArrayLike, scale: ArrayLike):
        self.loc = jnp.asarray(loc, dtype=float)
        self.scale = jnp.asarray(scale, dtype=float)
        if np.any(np.asarray(self.scale) <= 0):
            raise ValueError(f"Normalise needs a positive scale, got {np.asarray(self.scale)}")

    def __call__(self, context: Array) -> distrax.Bijector:
        return distrax.ScalarAffine(
            shift=jax.lax.stop_gradient(self.loc), scale=jax.lax.stop_gradient(self.scale)
        )


class Exp(Layer):
    """``x = exp(u)``: maps onto ``(0, inf)``."""

    def __call__(self, context: Array) -> distrax.Bijector:
        return _ExpBijector()


class Sigmoid(Layer):
    """``x = 1 / (1 + exp(-u))``: maps onto ``(0, 1)``."""

    def __call__(self, context: Array) -> distrax.Bijector:
        return distrax.Sigmoid()


class Flow(eqx.Module):
    """A conditional flow: layers (outermost first) and how to build the context from parents.

    The context is the concatenation of the raveled parents in ``parents`` order (categorical
    parents cast to float), with the parents named in ``log_parents`` log-transformed, then
    standardised by the fixed ``context_loc`` / ``context_scale`` (the "hat" values of Deep SCM).

    Args:
        layers: sequence of :class:`Layer`, outermost first (``Flow([Exp(), Normalise(m, s),
            Spline(k)])`` is ``exp ∘ normalise ∘ spline``).
        parents: names of the parents feeding the context networks, in order.
        log_parents: parents to log-transform first (positive parents).
        context_loc: fixed location subtracted from the context vector.
        context_scale: fixed scale dividing the context vector.
    """

    layers: tuple[Layer, ...]
    parents: tuple[str, ...] = eqx.field(static=True)
    log_parents: tuple[str, ...] = eqx.field(static=True)
    context_loc: Array | None
    context_scale: Array | None

    def __init__(
        self,
        layers: Sequence[Layer],
        parents: Sequence[str] = (),
        log_parents: Sequence[str] = (),
        context_loc: ArrayLike | None = None,
        context_scale: ArrayLike | None = None,
    ):
        self.layers = tuple(layers)
        if not self.layers:
            raise ValueError("Flow needs at least one layer")
        ctx = ParentContext(parents, log_parents, context_loc, context_scale)
        self.parents = ctx.parents
        self.log_parents = ctx.log_parents
        self.context_loc = ctx.loc
        self.context_scale = ctx.scale

    def context(self, parents: Parents) -> Float[Array, " c"]:
        """The context vector of one unit, shape ``(c,)`` (``(0,)`` without parents).

        The :class:`ParentContext` of this flow's fields.
        """
        ctx = ParentContext(self.parents, self.log_parents)
        ctx = eqx.tree_at(
            lambda c: (c.loc, c.scale),
            ctx,
            (self.context_loc, self.context_scale),
            is_leaf=lambda x: x is None,
        )
        return ctx(parents)

    def __call__(self, parents: Parents | None = None) -> distrax.Chain:
        """The bijector ``u -> x`` for one unit with these parents."""
        c = self.context({} if parents is None else parents)
        return distrax.Chain([layer(c) for layer in self.layers])


def flow_bijector(flow: Flow, parents: Parents) -> distrax.Bijector:
    """``bijector(params, parents)`` for :class:`jcausal.Invertible`: the flow is the params."""
    return flow(parents)
