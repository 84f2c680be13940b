"""Marked leaves: arrays that live in the parameters but are not trained by the optimiser.

Two marks. :func:`frozen` leaves never move. :func:`buffer` leaves are not trained by the
optimiser either, but the loss may compute their next value (running statistics, EMA
codebooks, dead-code restarts) and ``fit`` stores it after each step.

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


class Buffer(eqx.Module):
    """A marked subtree that :func:`jcausal.train.fit` updates from the loss, not by gradient.

    Attributes:
        value: the wrapped array (or pytree of arrays); its leaves must be floating-point
            arrays.
    """

    value: Any


def buffer(x: PyTree) -> Buffer:
    """Mark ``x`` as a buffer: state that the loss updates without a gradient.

    Inside ``fit`` the loss sees plain arrays (gradients through them are stopped) and may
    return ``(loss, aux, new_params)``: the values of ``new_params`` (same structure as the
    parameters the loss received) at the buffer positions become the buffers of the next step;
    everything else in ``new_params`` is ignored. The optimiser keeps no moving state for them
    and cannot move them (not even by weight decay). Buffers are checkpointed, restored,
    checked for NaN and returned like the trained leaves. Uses: EMA codebooks of a vector
    quantiser (:class:`jcausal.nn.MultiCodebook`), running normalisation statistics,
    dead-code restarts inside the compiled step.
    """
    return x if isinstance(x, Buffer) else Buffer(x)


def is_frozen(x: Any) -> bool:
    return isinstance(x, Frozen)


def is_mark(x: Any) -> bool:
    return isinstance(x, Frozen | Buffer)


def unfreeze(tree: PyTree) -> PyTree:
    """``tree`` with every :class:`Frozen` and :class:`Buffer` mark replaced by its value."""
    return jax.tree_util.tree_map(lambda x: x.value if is_mark(x) else x, tree, is_leaf=is_mark)


def is_none(x: Any) -> bool:
    return x is None


def buffer_flags(tree: PyTree) -> list[bool]:
    """One flag per leaf of ``tree`` (``None`` counted as a leaf): is it inside a buffer?"""
    flags = jax.tree_util.tree_map(
        lambda x: (
            jax.tree_util.tree_map(lambda _: True, x.value, is_leaf=is_none)
            if isinstance(x, Buffer)
            else False
        ),
        tree,
        is_leaf=lambda x: isinstance(x, Buffer) or x is None,
    )
    return [bool(f) for f in jax.tree_util.tree_leaves(flags, is_leaf=is_none)]


def trainable_mask(tree: PyTree) -> PyTree:
    """A filter spec (prefix of ``tree``) that is False on every frozen subtree."""
    return jax.tree_util.tree_map(lambda x: not isinstance(x, Frozen), tree, is_leaf=is_frozen)


__all__ = ["Buffer", "Frozen", "buffer", "frozen", "unfreeze"]
