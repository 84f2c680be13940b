"""Fixed leaves: arrays that live in the parameters but are never trained.

Schedules, normalisation constants and position tables belong in a model's pytree (they are
saved and sharded with it) but must not move. ``stop_gradient`` is not enough: an optimiser
still keeps state for them, and decoupled weight decay (``optax.adamw``) shrinks them even
with a zero gradient. Wrapping them in :func:`frozen` takes them out of the trained part
before the optimiser ever sees them.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
from jaxtyping import PyTree


class Frozen(eqx.Module):
    """A marked subtree that :func:`jcausal.train.fit` holds fixed.

    Attributes:
        value: the wrapped array (or pytree of arrays).
    """

    value: Any


def frozen(x: PyTree) -> Frozen:
    """Mark ``x`` (an array or a pytree) as fixed: ``fit`` keeps no optimiser state for it.

    ``fit`` hands the loss (and ``eval_fn`` and ``callback``) the parameters with the mark
    removed, so model code reads a plain array; the parameters it returns keep the mark, so
    a second ``fit`` keeps the leaf fixed too. :func:`unfreeze` removes the marks.
    """
    return x if isinstance(x, Frozen) else Frozen(x)


def is_frozen(x: Any) -> bool:
    return isinstance(x, Frozen)


def unfreeze(tree: PyTree) -> PyTree:
    """``tree`` with every :class:`Frozen` mark replaced by the value it wraps."""
    return jax.tree_util.tree_map(
        lambda x: x.value if isinstance(x, Frozen) else x, tree, is_leaf=is_frozen
    )


def trainable_mask(tree: PyTree) -> PyTree:
    """A filter spec (prefix of ``tree``) that is False on every frozen subtree."""
    return jax.tree_util.tree_map(lambda x: not isinstance(x, Frozen), tree, is_leaf=is_frozen)


__all__ = ["Frozen", "frozen", "unfreeze"]
