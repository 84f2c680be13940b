"""Conditioners: how a flow layer turns a unit's parents into its parameters.

:class:`ParentContext` makes the standardised context vector, :class:`Conditioner` maps it to
layer parameters, and :func:`zero_head_mlp` is the network that starts as "no change".
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..scm import Parents, as_parents


def _leaky_relu(x: Array) -> Array:
    return jax.nn.leaky_relu(x, 0.1)


def zero_head_mlp(
    in_size: int,
    out_size: int,
    width: int,
    depth: int,
    *,
    key: PRNGKeyArray,
    activation=jax.nn.relu,
    output_scale: float = 0.0,
    dtype=None,
) -> eqx.nn.MLP:
    """An ``eqx.nn.MLP`` whose output layer starts scaled by ``output_scale`` with zero bias.

    ``output_scale=0`` gives an MLP whose output is exactly zero at initialisation (yet whose
    output weights get gradients), so a learned correction starts as "no change" — a
    conditional flow as the unconditional one, a compensator as the unintervened model. A
    small positive scale keeps the context's influence small but nonzero.

    Args:
        in_size: input size.
        out_size: output size.
        width: hidden width.
        depth: number of hidden layers (``depth=0``: linear).
        key: initialisation key.
        activation: hidden activation.
        output_scale: factor on the output layer's initial weights.
        dtype: parameter dtype (default: equinox's).
    """
    kw = {} if dtype is None else {"dtype": dtype}
    net = eqx.nn.MLP(in_size, out_size, width, depth, activation=activation, key=key, **kw)
    last = net.layers[-1]
    return eqx.tree_at(
        lambda m: (m.layers[-1].weight, m.layers[-1].bias),
        net,
        (last.weight * output_scale, jnp.zeros_like(last.bias)),
    )


class Conditioner(eqx.Module):
    """Parameters of shape ``shape + (p,)``: a learnable bias plus an optional context network.

    ``net`` (an ``eqx.nn.MLP`` from the context to ``prod(shape) * p`` numbers) is initialised
    with its output layer scaled by ``init_scale`` so a new conditional flow starts near the
    unconditional one.

    Args:
        key: initialises the context network.
        shape: shape of the node.
        num_params: parameters per element, ``p``.
        context_size: size of the context vector (0: no network, the bias alone).
        width: hidden width of the context network.
        depth: hidden layers of the context network.
        init_scale: factor on the network's initial output weights.
    """

    bias: Array
    net: eqx.nn.MLP | None

    def __init__(
        self,
        key: PRNGKeyArray,
        shape: tuple[int, ...],
        num_params: int,
        context_size: int = 0,
        width: int = 16,
        depth: int = 1,
        init_scale: float = 0.1,
    ):
        self.bias = jnp.zeros((*shape, num_params))
        if context_size:
            self.net = zero_head_mlp(
                context_size,
                int(np.prod(shape, dtype=int)) * num_params,
                width,
                depth,
                key=key,
                activation=_leaky_relu,
                output_scale=init_scale,
            )
        else:
            self.net = None

    def __call__(self, context: Array) -> Array:
        if self.net is None:
            return self.bias
        if context.shape[-1] != self.net.in_size:
            raise ValueError(
                f"flow context has size {context.shape[-1]} but the context network expects "
                f"{self.net.in_size}; set context_size to the total size of the parents"
            )
        return self.bias + self.net(context).reshape(self.bias.shape)


class ParentContext(eqx.Module):
    """Parents of one unit as a standardised context vector (Deep SCM's "hat" values).

    The raveled parents are concatenated in ``parents`` order (categorical parents cast to
    float), those named in ``log_parents`` log-transformed first (positive parents such as a
    thickness), then standardised by the fixed ``loc`` / ``scale`` (gradients stopped). Without
    this, networks mostly follow the parent with the largest magnitude (Deep SCM, appendix
    A.2, footnote 5). The one implementation of parent standardisation: :class:`Flow` and the
    image mechanisms' networks use it.

    Args:
        parents: parent names, in order.
        log_parents: parents to log-transform first.
        loc: fixed location subtracted from the context vector (``None``: none).
        scale: fixed scale dividing the context vector (``None``: none).
        dtype: dtype of the context (e.g. ``jnp.float32`` for float32 networks, so a float64
            context under ``jax_enable_x64`` does not promote every layer); default: the
            default float dtype.
    """

    loc: Array | None
    scale: Array | None
    parents: tuple[str, ...] = eqx.field(static=True)
    log_parents: tuple[str, ...] = eqx.field(static=True)
    dtype: object = eqx.field(static=True)

    def __init__(
        self,
        parents: Sequence[str] = (),
        log_parents: Sequence[str] = (),
        loc: ArrayLike | None = None,
        scale: ArrayLike | None = None,
        dtype=None,
    ):
        self.parents = as_parents(parents, "ParentContext")
        unknown = set(log_parents) - set(self.parents)
        if unknown:
            raise ValueError(f"log_parents {sorted(unknown)} are not parents {self.parents}")
        self.log_parents = tuple(log_parents)
        self.dtype = None if dtype is None else jnp.dtype(dtype)
        dt = self.dtype or float
        self.loc = None if loc is None else jnp.asarray(loc, dt)
        self.scale = None if scale is None else jnp.asarray(scale, dt)

    def __call__(self, parents: Parents) -> Float[Array, " c"]:
        """The context vector of one unit, shape ``(c,)`` (``(0,)`` without parents)."""
        dt = self.dtype or jnp.result_type(float)
        parts = []
        for name in self.parents:
            if name not in parents:
                raise ValueError(f"context needs parent {name!r}; got {sorted(parents)}")
            v = jnp.ravel(jnp.asarray(parents[name])).astype(dt)
            parts.append(jnp.log(v) if name in self.log_parents else v)
        c = jnp.concatenate(parts) if parts else jnp.zeros((0,), dt)
        if self.loc is not None:
            c = c - jax.lax.stop_gradient(self.loc)
        if self.scale is not None:
            c = c / jax.lax.stop_gradient(self.scale)
        return c
