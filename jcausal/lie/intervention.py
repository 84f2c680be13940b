"""The Lie intervention ``x := exp(u) · f(parents, noise)`` and its distributed form."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from ..scm import Intervention, Mechanism, as_index, broadcast_units, component_index
from .groups import LieGroup


def _as_float(u: ArrayLike) -> Array:
    u = jnp.asarray(u)
    if not jnp.issubdtype(u.dtype, jnp.inexact):
        u = u.astype(jnp.result_type(float))
    return u


class Lie(Intervention):
    """Lie intervention ``x := exp(u) · f(parents, noise)`` (Definition 3 of the paper).

    The node's unintervened assignment is computed as usual and the group element ``exp(u)``
    acts on it (on the components ``index`` only, when given). ``u = 0`` gives back the
    original model. Works with ``sample``, ``counterfactual``, ``log_prob`` (when the group
    implements ``log_det_jacobian``: multiplicative, translation, rotations) and equilibrium
    models; differentiable in ``u`` and vmappable over a batch of ``u``.

    Args:
        group: the :class:`LieGroup`.
        u: Lie-algebra parameters of shape ``group.param_shape`` (or broadcastable to it),
            shared by every unit; or one set per unit with a leading axis of size ``n`` (or 1),
            i.e. shape ``(n, *group.param_shape)``. Units: those of the group (a log-factor for
            :class:`Multiplicative`, the node's units for :class:`Translation`, radians for
            :class:`SO`).
        index: optional integer indices into the first axis of each unit's value (a vector
            node): the group acts on ``value[index]`` only, every other component is left
            exactly as the mechanism made it (a distributed intervention on a set of sectors).
            Static (part of the compiled program); must be distinct.
    """

    uses_base_only: ClassVar[bool] = True

    group: LieGroup
    u: Array
    index: tuple[int, ...] | None = eqx.field(static=True)

    def __init__(
        self,
        group: LieGroup,
        u: ArrayLike,
        index: Sequence[int] | ArrayLike | None = None,
    ):
        if not isinstance(group, LieGroup):
            raise TypeError(
                f"Lie needs a LieGroup (Multiplicative, Translation, SO, or a subclass of "
                f"LieGroup), got {type(group).__name__}"
            )
        self.group = group
        self.u = _as_float(u)
        self.index = as_index(index, "Lie")

    @property
    def per_unit(self) -> bool:
        """Whether ``u`` has a leading unit axis."""
        return self.u.ndim == len(self.group.param_shape) + 1

    def validate(self, node: str, mech: Mechanism) -> None:
        if mech.discrete:
            raise ValueError(
                f"node {node!r} is categorical: a Lie intervention acts on continuous values; "
                "use Hard or Soft"
            )
        ps = self.group.param_shape
        if self.u.ndim > len(ps) + 1:
            raise ValueError(
                f"node {node!r}: Lie parameters of shape {self.u.shape} have too many axes for "
                f"{type(self.group).__name__} (parameters {ps}, optionally with a leading unit "
                "axis)"
            )

    # ------------------------------------------------------------------------------------------

    def _element(self, node: str, n: int) -> tuple[Array, bool]:
        """The group element(s): shape ``element_shape``, or ``(n, *element_shape)``."""
        ps = self.group.param_shape
        if self.per_unit:
            u = broadcast_units(node, "Lie parameters", self.u, (n, *ps))
            return jax.vmap(self.group.exp)(u), True
        u = broadcast_units(node, "Lie parameters", self.u, ps)
        return self.group.exp(u), False

    def _indices(self, node: str, value_shape: tuple[int, ...]) -> tuple[int, ...] | None:
        return component_index(node, "Lie", self.index, tuple(value_shape))

    def _act(self, node: str, g: Array, per_unit: bool, x: Array) -> Array:
        """Batched action on ``x`` of shape ``(n, ...)``, checking shapes while tracing."""
        fn = jax.vmap(self.group.act, in_axes=(0 if per_unit else None, 0))
        try:
            out = jax.eval_shape(fn, g, x)
        except (TypeError, ValueError) as e:
            out = e
        if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != x.shape:
            got = out.shape if isinstance(out, jax.ShapeDtypeStruct) else f"an error ({out})"
            raise ValueError(
                f"node {node!r}: {self.group!r} cannot act on values of shape {x.shape[1:]} per "
                f"unit (acting gives {got}); choose the group's size to match the node"
                + (" or the components in index" if self.index is not None else "")
            )
        return fn(g, x)

    def apply(self, node, mech, parents, noise, shape):
        base = jax.vmap(mech.forward)(parents, noise)
        n = base.shape[0]
        g, per_unit = self._element(node, n)
        idx = self._indices(node, base.shape[1:])
        if idx is None:
            out = self._act(node, g, per_unit, base)
        else:
            sel = np.asarray(idx)
            sub = self._act(node, g, per_unit, base[:, sel])
            # Components outside index keep the mechanism's own value, bit for bit.
            out = base.at[:, sel].set(sub.astype(base.dtype))
        # The node keeps the model's dtype even when u has a wider one.
        return out.astype(base.dtype)

    def log_prob(self, node, mech, value, parents):
        value = jnp.asarray(value)
        n = value.shape[0]
        g, per_unit = self._element(node, n)
        ginv = jax.vmap(self.group.inverse)(g) if per_unit else self.group.inverse(g)
        idx = self._indices(node, value.shape[1:])
        sel = None if idx is None else np.asarray(idx)
        acted = value if sel is None else value[:, sel]
        # Change of variables: value = g · base, so base = g⁻¹ · value and
        # log p(value) = log p(base) - log |det ∂(g · base)/∂base|.
        pre = self._act(node, ginv, per_unit, acted).astype(value.dtype)
        ldj = jax.vmap(self.group.log_det_jacobian, in_axes=(0 if per_unit else None, 0))
        try:
            logdet = ldj(g, pre)
        except NotImplementedError:
            raise ValueError(
                f"node {node!r}: log_prob under a Lie intervention needs the group's "
                f"log_det_jacobian, which {type(self.group).__name__} does not implement "
                "(Multiplicative, Translation and SO do)"
            ) from None
        base = pre if sel is None else value.at[:, sel].set(pre)
        return jax.vmap(mech.log_prob)(base, parents) - logdet


def distributed(
    group: LieGroup | Mapping[str, LieGroup],
    params: Mapping[str, ArrayLike],
    index: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Lie]:
    """A distributed Lie intervention: one :class:`Lie` per node, from one dict of parameters.

    Example (the paper's multiplicative intervention on two scalar nodes, parameters in one
    differentiable vector ``u``)::

        do(scm, distributed(Multiplicative(), {"y": u[0], "z": u[1]}))

    Args:
        group: one group for every node, or ``{node: group}`` covering every node of ``params``.
        params: ``{node: u}``, each ``u`` as in :class:`Lie`.
        index: optional ``{node: indices}`` for nodes intervened on some components only.

    Returns:
        ``{node: Lie(...)}``, ready for ``do`` or ``counterfactual`` (and to merge with other
        interventions).
    """
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a dict {{node: u}}, got {type(params).__name__}")
    index = dict(index or {})
    unknown = set(index) - set(params)
    if unknown:
        raise ValueError(f"index names nodes without parameters: {sorted(unknown)}")
    out = {}
    for node, u in params.items():
        if isinstance(group, Mapping):
            if node not in group:
                raise ValueError(f"no group given for node {node!r}")
            grp = group[node]
        else:
            grp = group
        out[node] = Lie(grp, u, index.get(node))
    return out
