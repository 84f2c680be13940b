"""What a policy sets: one :class:`Action` per intervened node, with its bounds.

An action turns a bounded parameter array (one row per unit) into the engine's intervention
on one node: ``Shift`` (``delta``), ``Scale`` (``alpha``), ``Hard`` on a continuous node (the
value), ``Lie`` (the Lie-algebra parameters ``u`` of a group) or ``Soft`` (parameters ``θ`` of
a new mechanism ``fn(θ, parents, noise)``, whose output is bounded). The intervention objects
are the engine's own (:mod:`jcausal.scm`, :mod:`jcausal.lie`): counterfactuals, equilibria and
gradients go through the one engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..lie import Lie, LieGroup
from ..scm import SCM, Hard, Intervention, Scale, Shift, Soft, as_index
from .bounds import Box

KINDS = ("shift", "scale", "hard", "lie", "soft")
#: The parameter of each kind that leaves the model unchanged (``None``: no such value).
IDENTITY = {"shift": 0.0, "scale": 1.0, "hard": None, "lie": 0.0, "soft": None}


class _BoundedSoft(eqx.Module):
    """``bounds(fn(θ, parents, noise))``: a Soft mechanism whose values stay in the bounds."""

    fn: Callable = eqx.field(static=True)
    bounds: Box

    def __call__(self, theta, pa, u):
        return jnp.clip(self.fn(theta, pa, u), self.bounds.lower, self.bounds.upper)


class Action(eqx.Module):
    """One node's intervention, parameterised by the policy.

    Args:
        node: the node intervened on.
        kind: ``"shift"``, ``"scale"``, ``"hard"`` (continuous nodes), ``"lie"`` or ``"soft"``.
        bounds: :class:`Box` of the parameter (``delta``, ``alpha``, the value, ``u``, or for
            ``"soft"`` the new mechanism's output). Default: unbounded (refused for ``"hard"``
            and ``"soft"``, which need a range of admissible values).
        size: parameters per unit (default: ``len(index)``, the Lie group's parameter size, or
            1); must match the node's value (checked by :meth:`check`).
        index: components of a vector node acted on (as for ``Shift(..., index=...)``).
        group: the :class:`jcausal.lie.LieGroup` of a ``"lie"`` action.
        fn: ``fn(theta, parents, noise) -> value`` for one unit, the new mechanism of a
            ``"soft"`` action (``theta`` has shape ``(size,)``).

    Raises:
        ValueError: an unknown kind, a missing group or fn, a bad size or index.
    """

    node: str = eqx.field(static=True)
    kind: str = eqx.field(static=True)
    bounds: Box
    size: int = eqx.field(static=True)
    index: tuple[int, ...] | None = eqx.field(static=True)
    group: LieGroup | None
    fn: Callable | None = eqx.field(static=True)

    def __init__(
        self,
        node: str,
        kind: str,
        bounds: Box | None = None,
        *,
        size: int | None = None,
        index: Sequence[int] | None = None,
        group: LieGroup | None = None,
        fn: Callable | None = None,
    ):
        if kind not in KINDS:
            raise ValueError(f"Action kind must be one of {KINDS}, got {kind!r}")
        if bounds is None:
            if kind in ("hard", "soft"):
                raise ValueError(
                    f"Action({node!r}, {kind!r}) needs bounds=Box(lower, upper): the values a "
                    "policy may set must be admissible for the node"
                )
            bounds = Box()
        if not isinstance(bounds, Box):
            raise ValueError(f"Action({node!r}): bounds must be a Box, got {type(bounds).__name__}")
        if kind == "lie" and not isinstance(group, LieGroup):
            raise ValueError(f"Action({node!r}, 'lie') needs group=<a LieGroup>, got {group!r}")
        if kind == "soft" and not callable(fn):
            raise ValueError(f"Action({node!r}, 'soft') needs fn(theta, parents, noise)")
        self.index = as_index(index, f"Action({node!r})")
        if size is None:
            if kind == "lie":
                size = int(np.prod(group.param_shape))
            else:
                size = len(self.index) if self.index is not None else 1
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
            raise ValueError(f"Action({node!r}): size must be a positive integer, got {size!r}")
        if (
            self.index is not None
            and kind in ("shift", "scale", "hard")
            and size != len(self.index)
        ):
            raise ValueError(
                f"Action({node!r}): size {size} but index names {len(self.index)} components"
            )
        self.node, self.kind, self.bounds, self.size = str(node), kind, bounds, int(size)
        self.group = group
        self.fn = fn

    @property
    def identity(self) -> float | None:
        """The parameter value that leaves the node unchanged, or ``None`` (Hard, Soft)."""
        return IDENTITY[self.kind]

    def check(self, scm: SCM) -> None:
        """Refuse an action that does not fit ``scm``'s node (named ``ValueError``)."""
        if self.node not in scm.mechanisms:
            raise ValueError(
                f"Action on unknown node {self.node!r}; known nodes: {list(scm.order)}"
            )
        mech = scm.mechanisms[self.node]
        if mech.discrete and self.kind != "soft":
            raise ValueError(
                f"Action({self.node!r}, {self.kind!r}): the node is categorical; a policy sets "
                "continuous parameters (use a Soft action on a continuous node)"
            )
        shape = tuple(scm.node_shapes()[self.node].shape)
        if self.kind in ("shift", "scale", "hard") and self.index is None:
            want = int(np.prod(shape)) if shape else 1
            if self.size != want:
                raise ValueError(
                    f"Action({self.node!r}, {self.kind!r}): size {self.size} but each unit's "
                    f"value has shape {shape} ({want} numbers)"
                )

    def intervention(self, theta: Float[Array, "n size"], shape: tuple[int, ...]) -> Intervention:
        """The engine's intervention for bounded parameters ``theta`` ``(n, size)``.

        Args:
            theta: bounded parameters, one row per unit (for ``"soft"``: one shared row).
            shape: one unit's value shape of the node.
        """
        n = theta.shape[0]
        if self.kind == "soft":
            return Soft(_BoundedSoft(self.fn, self.bounds), theta[0])
        if self.kind == "lie":
            return Lie(self.group, theta.reshape(n, *self.group.param_shape), self.index)
        per_unit = (n, *shape) if self.index is None else (n, self.size)
        value = theta.reshape(per_unit)
        cls = {"shift": Shift, "scale": Scale, "hard": Hard}[self.kind]
        return cls(value, index=self.index)


def identity_raw(action: Action) -> np.ndarray:
    """The unconstrained output giving the identity intervention (zeros if none exists)."""
    ident = action.identity
    if ident is None:
        return np.zeros(action.size)
    lo, hi = action.bounds.lower, action.bounds.upper
    if not lo < ident < hi:
        return np.zeros(action.size)
    return np.full(action.size, float(action.bounds.inverse(ident)))


__all__ = ["KINDS", "Action", "identity_raw"]
