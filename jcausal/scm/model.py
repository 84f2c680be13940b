"""The structural causal model container and ``do``."""

from __future__ import annotations

from collections.abc import Mapping

import equinox as eqx
import jax

from . import graph
from .interventions import Intervention, check_interventions
from .mechanisms import Mechanism


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
        parents = graph.check_parents({n: m.parents for n, m in mechs.items()})
        self.order = graph.topological_order(parents)
        self.mechanisms = mechs
        self.interventions = check_interventions(dict(interventions or {}), mechs)

    @property
    def nodes(self) -> tuple[str, ...]:
        """Node names in topological order."""
        return self.order

    @property
    def parents(self) -> dict[str, tuple[str, ...]]:
        """``{node: parent names}``."""
        return {n: self.mechanisms[n].parents for n in self.order}

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
        from .inference import _ancestral  # local: inference imports this module

        base = SCM(self.mechanisms)
        out = jax.eval_shape(lambda k: _ancestral(k, base, 1)[0], jax.random.key(0))
        return {n: jax.ShapeDtypeStruct(s.shape[1:], s.dtype) for n, s in out.items()}

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
    return SCM(scm.mechanisms, interventions={**scm.interventions, **new})
