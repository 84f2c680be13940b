"""Interventions: what ``do`` puts in place of a node's structural assignment.

Interventions are equinox Modules whose numbers are arrays, so a batch of interventions can be
vmapped (``jax.vmap(lambda d: counterfactual(scm, obs, {"x": Shift(d)}))(deltas)``) and an
intervention's parameters can be differentiated (``jax.grad`` with respect to a shift).

Values broadcast against the batch with numpy rules: for a node of shape ``(d,)`` observed for
``n`` units, a ``Hard`` value of shape ``()`` or ``(d,)`` applies to every unit and one of shape
``(n, d)`` (or ``(n, 1)``) gives each unit its own value.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PyTree

from .mechanisms import Mechanism, Parents, as_arrays


def _broadcast(node: str, what: str, x: Array, shape: tuple[int, ...]) -> Array:
    try:
        out = jnp.broadcast_shapes(jnp.shape(x), shape)
    except ValueError:
        out = None
    if out != tuple(shape):
        raise ValueError(
            f"node {node!r}: {what} of shape {jnp.shape(x)} does not broadcast to the node's "
            f"batched shape {tuple(shape)} (units first); give one value per unit with a leading "
            "axis of size n, or one value for all units"
        )
    return jnp.broadcast_to(x, shape)


def _event_sum(x: Array, n_batch: int = 1) -> Array:
    """Sum over every axis but the leading batch axis."""
    return jnp.sum(x, axis=tuple(range(n_batch, x.ndim)))


class Intervention(eqx.Module):
    """Base class: a replacement for one node's structural assignment.

    Subclasses set ``uses_base_only = True`` when ``apply`` needs nothing but the node's
    unintervened value ``f(parents, noise)`` (like ``Shift`` and ``Scale``); counterfactuals then
    reuse the observed value when the node's parents are unchanged.
    """

    uses_base_only: ClassVar[bool] = False

    @abc.abstractmethod
    def apply(
        self,
        node: str,
        mech: Mechanism,
        parents: Parents,
        noise: Array,
        shape: jax.ShapeDtypeStruct,
    ) -> Array:
        """The intervened node's values for a batch.

        Args:
            node: the node's name (for error messages).
            mech: the node's original mechanism.
            parents: batched parent values, each with a leading axis ``n``.
            noise: batched exogenous noise of the node, leading axis ``n``.
            shape: shape and dtype of the unintervened batched value.
        """

    def log_prob(self, node: str, mech: Mechanism, value: Array, parents: Parents) -> Array:
        """Batched log-density contribution of the intervened node, shape ``(n,)``."""
        raise ValueError(
            f"node {node!r}: log_prob is not available under a {type(self).__name__} "
            "intervention (its density is not known in closed form)"
        )

    def validate(self, node: str, mech: Mechanism) -> None:
        """Static checks when the intervention is attached with ``do``."""

    def check_values(self, node: str, mech: Mechanism) -> None:
        """Checks on concrete values (outside jit)."""


def _base(mech: Mechanism, parents: Parents, noise: Array) -> Array:
    return jax.vmap(mech.forward)(parents, noise)


class Hard(Intervention):
    """Atomic intervention ``do(x := value)``: cuts the node from its parents and its noise.

    Args:
        value: a constant of the node's shape (or broadcastable to it), or one value per unit
            with a leading axis of size ``n``.
    """

    value: Array

    def __init__(self, value: ArrayLike):
        self.value = jnp.asarray(value)

    def apply(self, node, mech, parents, noise, shape):
        return _broadcast(node, "Hard value", self.value, shape.shape).astype(shape.dtype)

    def log_prob(self, node, mech, value, parents):
        # Truncated factorisation: a hard-intervened node contributes no factor.
        n = jax.tree_util.tree_leaves(value)[0].shape[0]
        return jnp.zeros((n,), dtype=jnp.result_type(float))

    def check_values(self, node, mech):
        if mech.discrete and not isinstance(self.value, jax.core.Tracer):
            v = np.asarray(self.value)
            mech.check_values(node, v.astype(np.int64) if np.issubdtype(v.dtype, np.bool_) else v)


class Shift(Intervention):
    """Additive intervention ``x := f(parents, u) + delta``.

    Args:
        delta: shift in the node's units; a constant or one value per unit.
    """

    uses_base_only: ClassVar[bool] = True

    delta: Array

    def __init__(self, delta: ArrayLike):
        self.delta = jnp.asarray(delta)

    def validate(self, node, mech):
        if mech.discrete:
            raise ValueError(
                f"node {node!r} is categorical: Shift is not defined for it; use Hard or Soft"
            )

    def apply(self, node, mech, parents, noise, shape):
        base = _base(mech, parents, noise)
        return base + _broadcast(node, "Shift delta", self.delta, base.shape)

    def log_prob(self, node, mech, value, parents):
        delta = _broadcast(node, "Shift delta", self.delta, value.shape)
        return jax.vmap(mech.log_prob)(value - delta, parents)


class Scale(Intervention):
    """Multiplicative intervention ``x := alpha * f(parents, u)``.

    Args:
        alpha: factor (dimensionless); a constant or one value per unit. Must be nonzero for
            ``log_prob``.
    """

    uses_base_only: ClassVar[bool] = True

    alpha: Array

    def __init__(self, alpha: ArrayLike):
        self.alpha = jnp.asarray(alpha)

    def validate(self, node, mech):
        if mech.discrete:
            raise ValueError(
                f"node {node!r} is categorical: Scale is not defined for it; use Hard or Soft"
            )

    def apply(self, node, mech, parents, noise, shape):
        base = _base(mech, parents, noise)
        return _broadcast(node, "Scale alpha", self.alpha, base.shape) * base

    def log_prob(self, node, mech, value, parents):
        alpha = _broadcast(node, "Scale alpha", self.alpha, value.shape)
        lp = jax.vmap(mech.log_prob)(value / alpha, parents)
        return lp - _event_sum(jnp.log(jnp.abs(alpha)))


class Soft(Intervention):
    """A new mechanism of the same parents and noise: ``x := fn(params, parents, u)``.

    In a counterfactual the unit's abducted noise ``u`` is kept, so ``fn`` says how the same
    individual would respond under the new mechanism.

    Args:
        fn: ``fn(params, parents, noise) -> value`` for one unit (``parents`` is a dict).
        params: pytree of parameters for ``fn`` (differentiable, vmappable).
    """

    fn: Callable[[PyTree, Parents, Array], Array]
    params: PyTree

    def __init__(self, fn, params=None):
        self.fn = fn
        self.params = as_arrays(params)

    def apply(self, node, mech, parents, noise, shape):
        out = jax.vmap(lambda pa, u: self.fn(self.params, pa, u))(parents, noise)
        if out.shape != shape.shape:
            raise ValueError(
                f"node {node!r}: Soft mechanism returned shape {out.shape[1:]} per unit, the "
                f"node has shape {shape.shape[1:]}"
            )
        return out.astype(shape.dtype)


def check_interventions(
    interventions: Mapping[str, Intervention], mechanisms: Mapping[str, Mechanism]
) -> dict[str, Intervention]:
    """Validate an intervention dict against a model's nodes."""
    if not isinstance(interventions, Mapping):
        raise TypeError(
            "interventions must be a dict {node: Hard(...) | Shift(...) | Scale(...) | Soft(...)}"
            f", got {type(interventions).__name__}"
        )
    out = {}
    for node, iv in interventions.items():
        if node not in mechanisms:
            raise ValueError(
                f"cannot intervene on {node!r}: no such node; known nodes: {sorted(mechanisms)}"
            )
        if not isinstance(iv, Intervention):
            raise TypeError(
                f"intervention on {node!r} must be Hard, Shift, Scale or Soft, got "
                f"{type(iv).__name__}; write Hard({iv!r}) for an atomic intervention"
            )
        # Through the class: a bound-method lookup on an equinox Module builds a new Module
        # (~20 us), which matters on the per-call path.
        type(iv).validate(iv, node, mechanisms[node])
        out[node] = iv
    return out
