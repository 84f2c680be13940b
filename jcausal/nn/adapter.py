"""One adapter that turns a flax (NNX) or equinox network into a pure, pytree-valued function.

SCM mechanisms are pure functions of ``(params, inputs)``. Flax NNX modules are stateful Python
objects, so they are split once into a static graph definition and a pytree of arrays
(``nnx.split``) and merged back inside the call (``nnx.merge``); the arrays are then ordinary
leaves that ``jit``, ``vmap``, ``grad`` and optax see, and the wrapper can be stored as a
mechanism's ``params``. Equinox modules are already pytrees and pass through unchanged.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
from flax import nnx


class Pure(eqx.Module):
    """A network as a pytree: ``Pure(net)(*inputs)`` calls it without hidden state.

    Args:
        net: a ``flax.nnx.Module`` or an ``equinox.Module`` (or any callable pytree).

    The flax module's variables (parameters and any other state, e.g. normalisation
    statistics) become the ``state`` leaves; calls never mutate them, so the wrapper is a
    pure function of its leaves. Networks used per unit inside the SCM engine should not
    rely on batch statistics (use LayerNorm or GroupNorm rather than BatchNorm in training
    mode): the engine vmaps mechanisms one unit at a time.
    """

    graphdef: Any = eqx.field(static=True)
    state: Any

    def __init__(self, net: Any):
        if isinstance(net, nnx.Module):
            self.graphdef, self.state = nnx.split(net)
        else:
            self.graphdef, self.state = None, net

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.graphdef is None:
            return self.state(*args, **kwargs)
        return nnx.merge(self.graphdef, self.state)(*args, **kwargs)

    @property
    def module(self) -> Any:
        """The network as a live module (a fresh flax object for NNX networks)."""
        if self.graphdef is None:
            return self.state
        return nnx.merge(self.graphdef, self.state)


def num_params(net: Any) -> int:
    """Number of trainable scalars in a network (flax NNX params or equinox arrays)."""
    import jax

    if isinstance(net, Pure):
        net = net.module
    if isinstance(net, nnx.Module):
        leaves = jax.tree_util.tree_leaves(nnx.state(net, nnx.Param))
    else:
        leaves = jax.tree_util.tree_leaves(eqx.filter(net, eqx.is_inexact_array))
    return int(sum(x.size for x in leaves))
