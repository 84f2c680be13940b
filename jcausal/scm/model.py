"""The structural causal model container and ``do``."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from . import graph
from .interventions import Intervention, check_interventions
from .mechanisms import Mechanism

Values = dict[str, jax.Array]


def node_value(
    node: str,
    mech: Mechanism,
    iv: Intervention | None,
    parents: Values,
    noise: jax.Array | None,
    shape: jax.ShapeDtypeStruct | None = None,
) -> jax.Array:
    """A node's batched value from batched parents and noise, under an optional intervention."""
    if iv is None:
        return jax.vmap(mech.forward)(parents, noise)
    if shape is None:
        shape = jax.eval_shape(lambda: jax.vmap(mech.forward)(parents, noise))
    return iv.apply(node, mech, parents, noise, shape)


class SCM(eqx.Module):
    """An acyclic structural causal model over named nodes.

    Each node has a mechanism (which names the node's parents); the exogenous noises are
    mutually independent. The topological order is computed once, here; a directed cycle raises
    an error that names the nodes on it. The model is a pytree: its parameters can be
    differentiated and vmapped, and ``do`` returns a new model rather than changing this one.

    Example:
        >>> import distrax, jax.numpy as jnp
        >>> scm = SCM(
        ...     x=Root(distrax.Normal(0.0, 1.0)),
        ...     y=Additive(lambda p, pa: p * pa["x"], 2.0, distrax.Normal(0.0, 0.5), ["x"]),
        ... )
        >>> scm.order
        ('x', 'y')

    Args:
        mechanisms: dict ``{node: Mechanism}`` (or pass them as keyword arguments).
        interventions: interventions already applied (normally set through ``do``).
    """

    mechanisms: dict[str, Mechanism]
    interventions: dict[str, Intervention]
    order: tuple[str, ...] = eqx.field(static=True)
    # The graph as hashable tuples, computed once: the hot paths read it on every call.
    _parents: tuple[tuple[str, tuple[str, ...]], ...] = eqx.field(static=True, repr=False)
    _checked: tuple[str, ...] = eqx.field(static=True, repr=False)
    acyclic: ClassVar[bool] = True

    def __init__(
        self,
        mechanisms: Mapping[str, Mechanism] | None = None,
        /,
        interventions: Mapping[str, Intervention] | None = None,
        **kw: Mechanism,
    ):
        mechs = dict(mechanisms or {})
        overlap = set(mechs) & set(kw)
        if overlap:
            raise ValueError(f"nodes given twice: {sorted(overlap)}")
        mechs.update(kw)
        if not mechs:
            raise ValueError("an SCM needs at least one node")
        for name, mech in mechs.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"node names must be non-empty strings, got {name!r}")
            if not isinstance(mech, Mechanism):
                raise TypeError(
                    f"node {name!r}: expected a Mechanism (Root, Additive, Invertible, GumbelMax, "
                    f"Amortized, ...), got {type(mech).__name__}"
                )
            if self.acyclic and mech.noise is None:
                # Only an equilibrium model can infer a deterministic node's shape (from its
                # fixed point); an acyclic SCM samples every node's noise to know its shape.
                raise ValueError(
                    f"node {name!r}: noise=None (a deterministic node) is for EquilibriumSCM; "
                    "in an acyclic SCM give a distribution, e.g. "
                    "distrax.Deterministic(jnp.zeros(shape)) for a node without noise"
                )
        parents = graph.check_parents(
            {n: m.parents for n, m in mechs.items()}, self_loops=not self.acyclic
        )
        self.order = graph.topological_order(parents) if self.acyclic else tuple(mechs)
        self._parents = tuple((n, parents[n]) for n in self.order)
        self._checked = tuple(n for n in self.order if mechs[n].checks_values)
        self.mechanisms = mechs
        self.interventions = check_interventions(dict(interventions or {}), mechs)

    @property
    def nodes(self) -> tuple[str, ...]:
        """Node names in topological order."""
        return self.order

    @property
    def parents(self) -> dict[str, tuple[str, ...]]:
        """``{node: parent names}``."""
        return dict(self._parents)

    @property
    def children(self) -> dict[str, tuple[str, ...]]:
        """``{node: child names}``."""
        return graph.children_map(self.parents)

    def descendants(self, *nodes: str) -> set[str]:
        """The given nodes and their descendants."""
        self._check_nodes(nodes)
        return graph.descendants(self.parents, nodes)

    def ancestors(self, *nodes: str) -> set[str]:
        """The given nodes and their ancestors."""
        self._check_nodes(nodes)
        return graph.ancestors(self.parents, nodes)

    def node_shapes(self) -> dict[str, jax.ShapeDtypeStruct]:
        """Shape and dtype of one unit's value at every node (computed abstractly, no FLOPs)."""

        def one(key):
            noise = self.sample_noise(key, 1)
            return self.predict(noise, {}, self.order, {})

        out = jax.eval_shape(one, jax.random.key(0))
        return {n: jax.ShapeDtypeStruct(s.shape[1:], s.dtype) for n, s in out.items()}

    def sample_noise(self, key, n: int) -> Values:
        """Exogenous noise for ``n`` units: ``{node: (n, *noise_shape)}``, one stream per node."""
        return {
            node: self.mechanisms[node].sample_noise(jax.random.fold_in(key, i), n)
            for i, node in enumerate(self.order)
        }

    def predict(
        self,
        noise: Values,
        fixed: Values,
        targets: tuple[str, ...],
        interventions: Mapping[str, Intervention],
        init: Values | None = None,
    ) -> Values:
        """Values of ``targets`` for a batch, given their noise and the other nodes' values.

        This is the prediction step shared by sampling (every node is a target) and
        counterfactuals (the descendants of the intervention are targets, the other nodes are
        ``fixed`` at their observed values). An acyclic model evaluates the targets in
        topological order; an equilibrium model solves for them jointly.

        Args:
            noise: ``{node: (n, *noise_shape)}`` for every target that is not hard-intervened.
            fixed: ``{node: (n, *shape)}`` for the parents of targets that are not targets.
            targets: node names, in ``self.order`` order.
            interventions: ``{node: Intervention}`` in force.
            init: ignored by acyclic models (initial guess for equilibrium models).
        """
        out: Values = {}
        for node in targets:
            mech = self.mechanisms[node]
            pa = {p: out[p] if p in out else fixed[p] for p in mech.parents}
            shape = None
            if noise.get(node) is None and node in fixed:
                shape = jax.ShapeDtypeStruct(fixed[node].shape, jnp.result_type(fixed[node]))
            out[node] = node_value(node, mech, interventions.get(node), pa, noise.get(node), shape)
        return out

    def with_mechanisms(self, mechanisms: Mapping[str, Mechanism]) -> SCM:
        """A copy with some mechanisms swapped for others with the same parents."""
        for node, mech in mechanisms.items():
            if tuple(mech.parents) != self.mechanisms[node].parents:
                raise ValueError(f"node {node!r}: a replacement mechanism must keep the parents")
        new = copy.copy(self)
        object.__setattr__(new, "mechanisms", {**self.mechanisms, **mechanisms})
        return new

    def with_interventions(self, interventions: Mapping[str, Intervention]) -> SCM:
        """A copy of this model with ``interventions`` in force (replacing all earlier ones)."""
        new = copy.copy(self)
        object.__setattr__(
            new, "interventions", check_interventions(dict(interventions), self.mechanisms)
        )
        return new

    def _check_nodes(self, nodes) -> None:
        for n in nodes:
            if n not in self.mechanisms:
                raise ValueError(f"unknown node {n!r}; known nodes: {list(self.order)}")


def do(scm: SCM, interventions: Mapping[str, Intervention]) -> SCM:
    """Intervene: a new SCM whose listed nodes use the given interventions.

    Interventions on a node that was already intervened replace the earlier one.

    Args:
        scm: the model.
        interventions: ``{node: Hard(...) | Shift(...) | Scale(...) | Soft(...)}``.

    Returns:
        A new ``SCM``; ``scm`` itself is unchanged.

    Raises:
        ValueError: naming an unknown node, or an intervention that does not fit the node
            (e.g. ``Shift`` on a categorical node).
    """
    new = check_interventions(interventions, scm.mechanisms)
    return scm.with_interventions({**scm.interventions, **new})
