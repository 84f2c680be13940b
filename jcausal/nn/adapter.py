"""One adapter that turns a flax (NNX) or equinox network into a pure, pytree-valued function.

SCM mechanisms are pure functions of ``(params, inputs)``. Flax NNX modules are stateful Python
objects, so they are split once into a static graph definition and a pytree of arrays
(``nnx.split``) and merged back inside the call (``nnx.merge``); the arrays are then ordinary
leaves that ``jit``, ``vmap``, ``grad`` and optax see, and the wrapper can be stored as a
mechanism's ``params``. Equinox modules are already pytrees and pass through unchanged.

Randomness is explicit: a flax module's random streams (e.g. a ``Dropout`` built with its own
``rngs``) advance a counter held in the module, and that update is lost when a pure call
returns; so every call would draw the same numbers. ``Pure(net)(*inputs, key=key)`` reseeds
the module's streams from ``key`` for that call, and a call that draws random numbers without
a key is an error. ``.eval()`` gives the deterministic (inference) network.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
from flax import nnx
from jaxtyping import PRNGKeyArray


class Pure(eqx.Module):
    """A network as a pytree: ``Pure(net)(*inputs)`` calls it without hidden state.

    Args:
        net: a ``flax.nnx.Module`` or an ``equinox.Module`` (or any callable pytree).

    The flax module's variables (parameters and any other state, e.g. normalisation
    statistics) become the ``state`` leaves; calls never mutate them, so the wrapper is a
    pure function of its leaves. Networks used per unit inside the SCM engine should not
    rely on batch statistics (use LayerNorm or GroupNorm rather than BatchNorm in training
    mode): the engine vmaps mechanisms one unit at a time.

    Networks that draw random numbers (dropout, noise layers) take ``key=`` in the call;
    :meth:`eval` and :meth:`train` switch flax's ``deterministic`` attributes.
    """

    graphdef: Any = eqx.field(static=True)
    state: Any

    def __init__(self, net: Any):
        if isinstance(net, nnx.Module):
            self.graphdef, self.state = nnx.split(net)
        else:
            self.graphdef, self.state = None, net

    def __call__(self, *args: Any, key: PRNGKeyArray | None = None, **kwargs: Any) -> Any:
        """Call the network on ``args``.

        Args:
            *args: the network's inputs.
            key: a ``jax.random`` key for the network's random draws (dropout masks, noise).
                For a flax module every random stream it holds is reseeded from ``key``
                (stream ``i`` in order of appearance gets ``fold_in(key, i)``), so equal keys
                give equal draws and different keys independent ones; an equinox module gets
                ``key=key`` passed on.
            **kwargs: passed to the network.

        Raises:
            ValueError: the flax module drew random numbers but no ``key`` was given (every
                call would reuse the same draw); pass ``key`` or call :meth:`eval` first.
        """
        if self.graphdef is None:
            if key is not None:
                kwargs["key"] = key
            return self.state(*args, **kwargs)
        module = nnx.merge(self.graphdef, self.state)
        streams = _streams(module)
        if key is not None:
            # Reseeding sets each stream's key and resets its counter, inside the trace.
            for i, (_, stream) in enumerate(streams):
                stream.key.set_value(jax.random.fold_in(key, i))
                stream.count.set_value(jax.numpy.zeros_like(stream.count.get_value()))
            return module(*args, **kwargs)
        before = [s.count.get_value() for _, s in streams]
        out = module(*args, **kwargs)
        drawn = [
            name
            for (name, s), old in zip(streams, before, strict=True)
            if s.count.get_value() is not old
        ]
        if drawn:
            raise ValueError(
                f"the network drew random numbers from its flax rng stream(s) {drawn} but no "
                "key was given, so every call (under jit) would reuse the same draw (e.g. one "
                "dropout mask for the whole training). Pass key=... to the call, or use "
                ".eval() for the deterministic network"
            )
        return out

    def eval(self) -> Pure:
        """The network in inference mode (flax ``deterministic=True``: no dropout)."""
        return self._mode(train=False)

    def train(self) -> Pure:
        """The network in training mode (flax ``deterministic=False``)."""
        return self._mode(train=True)

    def _mode(self, train: bool) -> Pure:
        if self.graphdef is None:
            return self
        module = nnx.merge(self.graphdef, self.state)
        module.train() if train else module.eval()
        return Pure(module)

    @property
    def module(self) -> Any:
        """The network as a live module (a fresh flax object for NNX networks)."""
        if self.graphdef is None:
            return self.state
        return nnx.merge(self.graphdef, self.state)


def _streams(module: nnx.Module) -> list[tuple[str, nnx.RngStream]]:
    """The random streams a flax module holds, with their paths, in graph order."""
    return [
        ("/".join(str(p) for p in path), node)
        for path, node in nnx.iter_graph(module)
        if isinstance(node, nnx.RngStream)
    ]


def num_params(net: Any) -> int:
    """Number of trainable scalars in a network (flax NNX params or equinox arrays)."""
    if isinstance(net, Pure):
        net = net.module
    if isinstance(net, nnx.Module):
        leaves = jax.tree_util.tree_leaves(nnx.state(net, nnx.Param))
    else:
        leaves = jax.tree_util.tree_leaves(eqx.filter(net, eqx.is_inexact_array))
    return int(sum(x.size for x in leaves))
