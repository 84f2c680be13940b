"""Interventions: what ``do`` puts in place of a node's structural assignment.

Interventions are equinox Modules whose numbers are arrays, so a batch of interventions can be
vmapped (``jax.vmap(lambda d: counterfactual(scm, obs, {"x": Shift(d)}))(deltas)``) and an
intervention's parameters can be differentiated (``jax.grad`` with respect to a shift).

Values broadcast against the batch with numpy rules: for a node of shape ``(d,)`` observed for
``n`` units, a ``Hard`` value of shape ``()`` or ``(d,)`` applies to every unit and one of shape
``(n, d)`` (or ``(n, 1)``) gives each unit its own value.

``Hard``, ``Shift`` and ``Scale`` (and :class:`jcausal.lie.Lie`) take an ``index``: integer
positions along the first axis of each unit's value (a vector node), so that only those
components are intervened on and the others keep the mechanism's own value, bit for bit. The
value then has the shape of the selected components, e.g. ``(len(index),)`` or
``(n, len(index))``. :func:`as_index`, :func:`component_index` and :func:`broadcast_units` are
the helpers an intervention class written outside this package uses for the same behaviour.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PyTree

from .mechanisms import Mechanism, Parents, as_arrays

Index = tuple[int, ...] | None


def broadcast_units(node: str, what: str, x: Array, shape: tuple[int, ...]) -> Array:
    """Broadcast an intervention's number(s) ``x`` to a node's batched shape (units first).

    Args:
        node: the node's name (for the message).
        what: what ``x`` is, e.g. ``"Shift delta"`` (for the message).
        x: one value for all units, or one per unit with a leading axis of size ``n``.
        shape: the batched shape ``(n, *unit_shape)``.

    Raises:
        ValueError: naming the node when ``x`` does not broadcast to ``shape``.
    """
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


def as_index(index: Sequence[int] | ArrayLike | None, owner: str) -> Index:
    """Validate an intervention's ``index`` at construction: distinct integers, or ``None``.

    Args:
        index: positions along the first axis of one unit's value, or ``None`` (whole node).
        owner: the intervention's class name, for messages.

    Returns:
        A tuple of Python ints (static: part of the compiled program), or ``None``.
    """
    if index is None:
        return None
    idx = np.asarray(index)
    if idx.ndim == 0:
        idx = idx[None]
    if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
        raise ValueError(
            f"{owner} index must be a 1-D sequence of integers, got {np.asarray(index)!r}"
        )
    if idx.size == 0:
        raise ValueError(f"{owner} index is empty; give at least one component or index=None")
    if len(set(idx.tolist())) != idx.size:
        raise ValueError(f"{owner} index has repeated entries: {idx.tolist()}")
    return tuple(int(i) for i in idx)


def component_index(
    node: str, owner: str, index: Index, unit_shape: tuple[int, ...]
) -> tuple[int, ...] | None:
    """``index`` checked against one unit's value shape, negative entries made positive.

    Args:
        node: the node's name, for messages.
        owner: the intervention's class name, for messages.
        index: the validated index (:func:`as_index`), or ``None``.
        unit_shape: shape of one unit's value of the node.

    Raises:
        ValueError: naming the node, for a scalar node or an index out of range.
    """
    if index is None:
        return None
    if len(unit_shape) < 1:
        raise ValueError(f"node {node!r} is a scalar per unit: a {owner} index needs a vector node")
    d = unit_shape[0]
    bad = [i for i in index if not -d <= i < d]
    if bad:
        raise ValueError(
            f"node {node!r}: {owner} index {list(bad)} out of range for a node with {d} "
            "components per unit"
        )
    idx = tuple(i % d for i in index)
    if len(set(idx)) != len(idx):
        raise ValueError(f"node {node!r}: {owner} index names a component twice: {index}")
    return idx


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

    @property
    def constant(self) -> bool:
        """Whether the value ignores the node's parents and noise (a whole-node ``Hard``).

        The engine then neither abducts nor samples the node's noise.
        """
        return False

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


def _base(mech: Mechanism, parents: Parents, noise: Array) -> Array:
    return jax.vmap(mech.forward)(parents, noise)


class _Partial(Intervention):
    """An intervention that may act on some components only (``index``)."""

    index: Index = eqx.field(static=True, kw_only=True, default=None)

    def _sel(self, node: str, unit_shape: tuple[int, ...]) -> np.ndarray | None:
        idx = component_index(node, type(self).__name__, self.index, tuple(unit_shape))
        return None if idx is None else np.asarray(idx)

    def _acted_shape(self, node: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The batched shape of the components acted on."""
        sel = self._sel(node, shape[1:])
        return tuple(shape) if sel is None else (shape[0], len(sel), *shape[2:])


def _numeric(value: ArrayLike, cls: str, name: str) -> Array:
    """``value`` as a numeric JAX array, or a TypeError naming the intervention."""
    if isinstance(value, jax.Array):
        return value
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        arr = None
    if arr is None or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(
            f"{cls}({name}={value!r}): the {name} must be a number or a numeric array (a "
            "category of a categorical node is its integer index)"
        )
    return jnp.asarray(arr)


class Hard(_Partial):
    """Atomic intervention ``do(x := value)``: cuts the node from its parents and its noise.

    With ``index``, only the components ``x[index]`` are set; the others keep the mechanism's
    value (so the node keeps its parents and noise). For a categorical node the value must be
    a category: ``do`` refuses one out of range, and a traced value is checked when run.

    ``log_prob`` under ``Hard(c)`` is the truncated factorisation: the node contributes no
    factor for units observed at ``c``, and ``-inf`` for units observed at any other value (an
    event of probability zero under the intervention).

    Args:
        value: a constant of the node's shape (or broadcastable to it), or one value per unit
            with a leading axis of size ``n``; with ``index``, of the selected components' shape.
        index: optional component positions along the first axis of each unit's value.
    """

    value: Array

    def __init__(self, value: ArrayLike, *, index: Sequence[int] | None = None):
        self.value = _numeric(value, "Hard", "value")
        self.index = as_index(index, "Hard")

    @property
    def constant(self) -> bool:  # type: ignore[override]
        return self.index is None

    def validate(self, node, mech):
        k = mech.categories
        if k is None or isinstance(self.value, jax.core.Tracer):
            return  # other checks run with the compiled call (see _set)
        # A cheap host check of the (small, concrete) value: do() refuses a non-category.
        v = np.asarray(self.value)
        if v.size == 0:
            return
        code = 0
        if not np.all(np.isfinite(v)) or not np.all(v == np.round(v)):
            code = 3
        elif v.min() < 0:
            code = 1
        elif v.max() >= k:
            code = 2
        if code:
            msg = mech.support_messages[code - 1]
            raise ValueError(f"node {node!r}: Hard({v.tolist()!r}) is not a value of it: {msg}")

    def _set(self, node, mech, shape_shape, dtype):
        val = broadcast_units(
            node, "Hard value", self.value, self._acted_shape(node, shape_shape)
        ).astype(dtype)
        if mech.checks_values and isinstance(self.value, jax.core.Tracer):
            # A value only known when run (under the user's jit/vmap): check it there.
            flat = val.reshape(-1)
            code = jnp.max(jax.vmap(type(mech).out_of_support, in_axes=(None, 0))(mech, flat))
            code = code.astype(jnp.int32)
            msgs = [f"node {node!r}: Hard value out of support: {m}" for m in mech.support_messages]
            val = eqx.branched_error_if(val, code > 0, jnp.clip(code - 1, 0, len(msgs) - 1), msgs)
        return val

    def apply(self, node, mech, parents, noise, shape):
        if self.index is None:
            return self._set(node, mech, shape.shape, shape.dtype)
        base = _base(mech, parents, noise)
        sel = self._sel(node, base.shape[1:])
        return base.at[:, sel].set(self._set(node, mech, base.shape, base.dtype))

    def log_prob(self, node, mech, value, parents):
        value = jnp.asarray(value)
        if self.index is not None:
            # The other components would need their density given the set ones, which a
            # mechanism does not expose.
            raise ValueError(
                f"node {node!r}: log_prob under Hard(..., index=...) is not available (the "
                "density of the components left alone is not known in closed form); "
                "intervene on the whole node, or use Shift/Scale with index"
            )
        target = self._set(node, mech, value.shape, value.dtype)
        # Truncated factorisation: no factor for units observed at the intervened value; the
        # others are impossible under the intervention (probability 0).
        hit = jnp.all(jnp.reshape(value == target, (value.shape[0], -1)), axis=1)
        return jnp.where(hit, 0.0, -jnp.inf).astype(jnp.result_type(float))


class Shift(_Partial):
    """Additive intervention ``x := f(parents, u) + delta`` (on ``x[index]`` only, if given).

    Args:
        delta: shift in the node's units; a constant or one value per unit.
        index: optional component positions along the first axis of each unit's value.
    """

    uses_base_only: ClassVar[bool] = True

    delta: Array

    def __init__(self, delta: ArrayLike, *, index: Sequence[int] | None = None):
        self.delta = _numeric(delta, "Shift", "delta")
        self.index = as_index(index, "Shift")

    def validate(self, node, mech):
        if mech.discrete:
            raise ValueError(
                f"node {node!r} is categorical: Shift is not defined for it; use Hard or Soft"
            )

    def _delta(self, node, shape):
        d = broadcast_units(node, "Shift delta", self.delta, self._acted_shape(node, shape))
        sel = self._sel(node, shape[1:])
        return d if sel is None else jnp.zeros(shape, d.dtype).at[:, sel].set(d)

    def apply(self, node, mech, parents, noise, shape):
        base = _base(mech, parents, noise)
        return (base + self._delta(node, base.shape)).astype(base.dtype)

    def log_prob(self, node, mech, value, parents):
        value = jnp.asarray(value)
        return jax.vmap(mech.log_prob)(value - self._delta(node, value.shape), parents)


class Scale(_Partial):
    """Multiplicative intervention ``x := alpha * f(parents, u)`` (on ``x[index]`` only).

    Args:
        alpha: factor (dimensionless); a constant or one value per unit. Must be nonzero for
            ``log_prob``.
        index: optional component positions along the first axis of each unit's value.
    """

    uses_base_only: ClassVar[bool] = True

    alpha: Array

    def __init__(self, alpha: ArrayLike, *, index: Sequence[int] | None = None):
        self.alpha = _numeric(alpha, "Scale", "alpha")
        self.index = as_index(index, "Scale")

    def validate(self, node, mech):
        if mech.discrete:
            raise ValueError(
                f"node {node!r} is categorical: Scale is not defined for it; use Hard or Soft"
            )

    def _alpha(self, node, shape):
        a = broadcast_units(node, "Scale alpha", self.alpha, self._acted_shape(node, shape))
        sel = self._sel(node, shape[1:])
        return a if sel is None else jnp.ones(shape, a.dtype).at[:, sel].set(a)

    def apply(self, node, mech, parents, noise, shape):
        base = _base(mech, parents, noise)
        return (self._alpha(node, base.shape) * base).astype(base.dtype)

    def log_prob(self, node, mech, value, parents):
        value = jnp.asarray(value)
        alpha = self._alpha(node, value.shape)
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
