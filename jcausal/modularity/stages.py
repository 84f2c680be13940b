"""A generator as a sequence of named stages, so its internal activations can be read and set.

Besserve, Mehrjou, Sun & Schölkopf (ICLR 2020) treat the channels of a trained generator's
internal layers as endogenous variables of an SCM whose exogenous input is the latent ``z``.
To intervene on them without rewriting the network, the generator is cut into stages
``G = f_K ∘ ... ∘ f_1``; the activation after stage ``k`` is the layer named ``names[k]``, its
last axis the channels. :class:`Stages` holds ``(name, fn)`` pairs; :func:`decoder_stages`
cuts a :class:`jcausal.nn.MNISTDecoder` (the Deep SCM image decoder) at its reshape and its
first upsampling, calling the network's own sub-layers (so the composition is the network).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool, Float

from ..nn import MNISTDecoder, Pure


def _position(container: Any, key: str | int) -> str | int:
    """``key`` as an index of ``container``: a named tuple's field name becomes its position."""
    if isinstance(key, str) and hasattr(container, "_fields"):
        return container._fields.index(key)
    return key


class Stages(eqx.Module):
    """A generator ``G(z) = f_K(... f_1(z))`` as named stages.

    Args:
        stages: ``(name, fn)`` or ``(name, fn, select)`` tuples in order; ``fn`` maps the
            previous stage's output (for the first stage: the generator's input, one unit, no
            batch axis) to this stage's output. Without ``select`` the output is an array whose
            last axis is its channels. With ``select`` the output is a pytree (a dict, tuple or
            list: e.g. a UNet's ``{"h": h, "skips": (...)}``) and ``select`` is a key, or a
            tuple of keys, of that container: the layer's channels are the last axes of the
            array leaves under those keys, concatenated in that order (leaves in
            ``jax.tree_util`` order); the other leaves are carried along and never
            hybridised. Names must be distinct strings. ``fn`` may be any callable (a
            closure, an equinox module, a :class:`jcausal.nn.Pure` wrapper of a flax NNX
            network); pytree callables keep their arrays as leaves.

    Raises:
        ValueError: no stages, a name that is not a string, repeated names, a stage that is
            not callable, or a ``select`` that is not a key or a non-empty tuple of keys.
    """

    names: tuple[str, ...] = eqx.field(static=True)
    selects: tuple[tuple | None, ...] = eqx.field(static=True)
    fns: tuple[Any, ...]

    def __init__(self, stages: Sequence[tuple]):
        stages = list(stages)
        if not stages:
            raise ValueError("Stages needs at least one (name, fn) pair")
        names, selects, fns = [], [], []
        for item in stages:
            if not (isinstance(item, tuple) and len(item) in (2, 3)):
                raise ValueError(
                    f"each stage must be a (name, fn) or (name, fn, select) tuple, got {item!r}"
                )
            name, fn = item[:2]
            if not isinstance(name, str):
                raise ValueError(f"stage names must be strings, got {name!r}")
            if not callable(fn):
                raise ValueError(f"stage {name!r} is not callable: {fn!r}")
            select = item[2] if len(item) == 3 else None
            if select is not None:
                select = select if isinstance(select, tuple) else (select,)
                if not select or not all(isinstance(k, str | int) for k in select):
                    raise ValueError(
                        f"stage {name!r}: select must be a key (str or int) of the stage's "
                        f"output container or a non-empty tuple of keys, got {item[2]!r}"
                    )
            names.append(name)
            selects.append(select)
            fns.append(fn)
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be distinct, got {names}")
        self.names = tuple(names)
        self.selects = tuple(selects)
        self.fns = tuple(fns)

    def index(self, layer: str) -> int:
        """Position of ``layer`` among the stages.

        Raises:
            ValueError: ``layer`` is not a stage name (the message lists the names).
        """
        if not isinstance(layer, str) or layer not in self.names:
            raise ValueError(f"unknown layer {layer!r}; this generator's layers are {self.names}")
        return self.names.index(layer)

    def upto(self, z: Any, layer: str) -> Any:
        """The activation at ``layer`` (the output of that stage) for one input ``z``."""
        h = z
        for fn in self.fns[: self.index(layer) + 1]:
            h = fn(h)
        return h

    def after(self, h: Any, layer: str) -> Any:
        """The generator's output from the activation ``h`` at ``layer`` (the later stages)."""
        for fn in self.fns[self.index(layer) + 1 :]:
            h = fn(h)
        return h

    def activations(self, z: Any) -> dict[str, Any]:
        """Every stage's output for one input ``z``, by name (the last is ``G(z)``)."""
        out, h = {}, z
        for name, fn in zip(self.names, self.fns, strict=True):
            h = fn(h)
            out[name] = h
        return out

    def __call__(self, z: Any) -> Any:
        """``G(z)`` for one input."""
        h = z
        for fn in self.fns:
            h = fn(h)
        return h

    def channel_arrays(self, activation: Any, layer: str) -> list[Array]:
        """The arrays of ``activation`` (the output at ``layer``) whose channels are hybridised.

        Raises:
            ValueError: unknown layer; the activation is not an array (for a stage without
                ``select``) or lacks a selected key.
        """
        select = self.selects[self.index(layer)]
        if select is None:
            if not hasattr(activation, "shape") or len(activation.shape) < 1:
                raise ValueError(
                    f"layer {layer!r} outputs {type(activation).__name__}, not an array with a "
                    "channel axis; give its stage a select= naming the channel arrays"
                )
            return [activation]
        arrays = []
        for k in select:
            try:
                part = activation[_position(activation, k)]
            except (KeyError, IndexError, TypeError, ValueError) as err:
                raise ValueError(
                    f"layer {layer!r}: its output ({type(activation).__name__}) has no entry "
                    f"{k!r} named by select={select}"
                ) from err
            arrays += jax.tree_util.tree_leaves(part)
        if not arrays or any(len(jnp.shape(a)) < 1 for a in arrays):
            raise ValueError(f"layer {layer!r}: select={select} names no arrays with channels")
        return arrays

    def channels(self, z: Any, layer: str) -> int:
        """Number of channels at ``layer`` (summed over its selected arrays), from shapes only."""
        act = jax.eval_shape(lambda x: self.upto(x, layer), z)
        return int(sum(a.shape[-1] for a in self.channel_arrays(act, layer)))

    def mix(self, receiver: Any, donor: Any, layer: str, mask: Bool[Array, " C"]) -> Any:
        """The receiver's activation at ``layer`` with the channels in ``mask`` from the donor.

        Args:
            receiver: the activation at ``layer`` under ``z1``.
            donor: the activation at ``layer`` under ``z2`` (same structure).
            layer: the layer's name.
            mask: boolean ``(C,)`` over the layer's channels (:meth:`channels`).

        Returns:
            An activation of the receiver's structure; unselected leaves are the receiver's.
        """
        select = self.selects[self.index(layer)]
        if select is None:
            return jnp.where(mask, donor, receiver)
        out = dict(receiver) if isinstance(receiver, dict) else list(receiver)
        start = 0
        for k in select:
            k = _position(receiver, k)
            leaves, tree = jax.tree_util.tree_flatten(receiver[k])
            new = []
            for a, b in zip(leaves, jax.tree_util.tree_leaves(donor[k]), strict=True):
                c = a.shape[-1]
                new.append(jnp.where(mask[start : start + c], b, a))
                start += c
            out[k] = jax.tree_util.tree_unflatten(tree, new)
        if isinstance(receiver, dict | list):
            return out
        # a tuple, or a named tuple (whose constructor takes the fields as arguments)
        return type(receiver)(*out) if hasattr(receiver, "_fields") else tuple(out)


class _DecoderPart(eqx.Module):
    """One stage of an :class:`MNISTDecoder`, calling the network's own sub-layers."""

    net: Pure
    part: str = eqx.field(static=True)
    context: Array | None

    def __call__(self, h: Array) -> Array:
        m = self.net.module
        film = m.condition == "film"
        c = None if self.context is None else self.context[None]
        h = h[None]  # the normalisations reduce over all axes but the first: a batch of one
        if self.part == "reshape":
            if c is not None:
                h = jnp.concatenate([h, c.astype(h.dtype)], -1)
            h = m.norm1(m.fc1(h))
            h = jax.nn.relu(m.film1(h, c) if film else h)
            h = m.norm2(m.fc2(h))
            h = jax.nn.relu(m.film2(h, c) if film else h)
            h = h.reshape(1, 7, 7, m.width)
        elif self.part == "up1":
            h = m.norm3(m.up1(h))
            h = jax.nn.relu(m.film3(h, c) if film else h)
        else:  # "up2": second upsampling and the 1x1 output convolution
            h = m.out(m.up2(h))
            h = (m.film_out(h, c) if film else h)[..., 0]
        return h[0]


def decoder_stages(
    decoder: MNISTDecoder | Pure, context: Float[Array, " k"] | None = None
) -> Stages:
    """An :class:`MNISTDecoder` cut at its reshape and its first upsampling.

    Layers: ``"reshape"`` (``(7, 7, width)``, after the two dense layers), ``"up1"``
    (``(14, 14, width)``, after the first transposed convolution, its norm and ReLU) and
    ``"up2"`` (``(28, 28)``, the output). Intervening on ``"reshape"`` or ``"up1"`` channels is
    what the paper does on a convolutional generator's feature maps.

    The input of the stages is the first dense layer's input. For the paper's wiring
    (``condition="input"``) that is ``concatenate([z, context])`` of size ``latent + k``: the
    parents are part of the exogenous input, so a hybrid takes the donor's parents along with
    its latent through the chosen channels. For ``condition="film"`` every layer also sees
    the parents; pass ``context`` (``(k,)``) to fix them for both sources of a hybrid (at
    the input and at every FiLM layer), and the input is ``z`` alone.

    Args:
        decoder: the decoder (a flax module or its :class:`jcausal.nn.Pure` wrapper, e.g.
            ``scm.mechanisms["x"].decoder``).
        context: the fixed parent features of a FiLM decoder; ``None`` otherwise.

    Returns:
        The :class:`Stages`; ``stages(x)`` equals ``decoder(z, context)``.

    Raises:
        ValueError: ``decoder`` is not an MNISTDecoder, or ``context`` is given for an
            ``"input"`` decoder / missing for a FiLM decoder with parents.
    """
    net = decoder if isinstance(decoder, Pure) else None
    if net is None and isinstance(decoder, nnx.Module):
        net = Pure(decoder)
    if net is None or not isinstance(net.module, MNISTDecoder):
        raise ValueError(
            f"decoder_stages needs a jcausal.nn.MNISTDecoder (or its Pure wrapper), got "
            f"{type(decoder).__name__}; wrap other networks with Stages([(name, fn), ...])"
        )
    m = net.module
    if m.condition == "film":
        if context is None:
            raise ValueError(
                "this MNISTDecoder uses condition='film' (the parents modulate every layer): "
                f"pass context=<({m.context},) parent features> to fix them for the hybrids"
            )
        context = jnp.asarray(context, jnp.float32)
        if context.shape != (m.context,):
            raise ValueError(f"context must have shape ({m.context},), got {context.shape}")
    elif context is not None:
        raise ValueError(
            "this MNISTDecoder uses condition='input': its parents are part of the input "
            "vector concatenate([z, context]); do not pass context="
        )
    return Stages([(p, _DecoderPart(net.eval(), p, context)) for p in ("reshape", "up1", "up2")])


class _MCQPart(eqx.Module):
    """One stage of an MCQ-VAE decoder, channels last (equinox convolutions are channels first)."""

    vae: Any
    part: int = eqx.field(static=True)

    def __call__(self, h: Array) -> Array:
        v = self.vae
        x = jnp.transpose(h, (2, 0, 1))
        if self.part == 0:  # input convolution and residual blocks, then the ReLU
            x = v.dec_in(x)
            for block in v.dec_res:
                x = block(x)
            x = jax.nn.relu(x)
        else:
            x = v.up[self.part - 1](x)
            if self.part < len(v.up):
                x = jax.nn.leaky_relu(x, 0.2)
            else:
                x = 0.5 * (jnp.tanh(x) + 1.0)
        return jnp.transpose(x, (1, 2, 0))


def mcqvae_stages(vae: Any) -> Stages:
    """The decoder of a CT-VAE MCQ-VAE (:class:`jcausal.nn.MCQVAE`) as stages.

    The input is one quantised latent grid ``(h, w, D)`` (e.g.
    ``vae.quantizer.lookup(vae.codes(image))``). Layers: ``"res"`` (``(h, w, width)``, after the
    input convolution, the residual blocks and the ReLU), ``"up1"``, ``"up2"``, ... after each
    transposed convolution and its LeakyReLU, and ``"out"``, the image ``(S, S, 3)`` in
    ``[0, 1]``. ``stages(z_q)`` equals ``vae.decode(z_q)``.

    Raises:
        ValueError: ``vae`` is not an MCQVAE (marks of :func:`jcausal.train.buffer` are
            removed with :func:`jcausal.train.unfreeze` first).
    """
    from ..nn import MCQVAE

    if not isinstance(vae, MCQVAE):
        raise ValueError(
            f"mcqvae_stages needs a jcausal.nn.MCQVAE, got {type(vae).__name__}; after "
            "training with EMA codebooks, pass jcausal.train.unfreeze(vae)"
        )
    names = ["res"] + [f"up{i}" for i in range(1, len(vae.up))] + ["out"]
    return Stages([(name, _MCQPart(vae, i)) for i, name in enumerate(names)])


__all__ = ["Stages", "decoder_stages", "mcqvae_stages"]
