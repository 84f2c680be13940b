"""The diffusion ε-UNet (:class:`jcausal.nn.UNet`) at a fixed time as :class:`Stages`.

The generator is the ε-network at a fixed diffusion step ``t``: ``G(x_t) = eps(x_t, t)``, the
input one noisy image ``(H, W, C)``. Why the network and not a DDIM decoder: a DDIM decoder
calls the same UNet at every step, so "channel ``c`` of layer ``l``" is not one variable but
one per step (intervening at every step, or at one, are two different counterfactuals),
whereas at a fixed ``t`` each channel is one endogenous variable, as in the paper. Every DDIM
step is affine in ``(x_t, eps)``, so the one-step estimate of the clean image is an affine
map of this generator's input and output.

The UNet has skip connections: the activation at a layer is not one array but a dict
``{"h": h, "skips": (s_1, ..., s_k)}``, ``h`` the layer's own output and ``s_i`` the earlier
activations still waiting to be joined on the up path (on the down path the current ``h`` is
pushed onto ``skips`` by the next stage, so ``h`` and its skip copy are one variable and an
intervention on it reaches both edges). By default a layer's channels are ``h``'s: a hybrid
is the counterfactual ``do(h_l[E] = h_l(z2)[E])`` with every earlier activation, skips
included, at its value under ``z1`` (they are not descendants of ``h_l``). The all-channel
hybrid is then ``G(z2)`` only at layers with no pending skip (the last up block and
``"out"``). With ``skips=True`` the pending skips' channels follow ``h``'s in the layer's
channel set, so the layer is a cut of the network and the all-channel hybrid is ``G(z2)``
at every layer.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, ArrayLike

from ..nn import Pure, UNet
from .stages import Stages


def _part_names(levels: int, num_res: int) -> list[str]:
    names = ["in"]
    for level in range(levels):
        names += [f"d{level}.{i}" for i in range(num_res)]
        if level < levels - 1:
            names.append(f"d{level}.down")
    names.append("mid")
    for level in reversed(range(levels)):
        names += [f"u{level}.{i}" for i in range(num_res + 1)]
        if level > 0:
            names.append(f"u{level}.up")
    return [*names, "out"]


class _UNetPart(eqx.Module):
    """One stage of a :class:`UNet`, calling the network's own sub-layers on a batch of one."""

    net: Pure
    part: str = eqx.field(static=True)
    t: Array
    y: Array | None

    def _emb(self, m: UNet) -> Array:
        emb = m.encoder.time(self.t[None])
        if m.label is not None:
            emb = emb + m.label(self.y[None])
        return emb

    def __call__(self, state):
        m = self.net.module
        enc = m.encoder
        if self.part == "in":
            x = jnp.asarray(state)
            cin = enc.conv_in.in_features
            if x.ndim != 3 or x.shape[-1] != cin:
                raise ValueError(
                    f"unet_stages: the input is one image (H, W, {cin}) (hybrids and influence "
                    f"maps vmap over pairs), got shape {x.shape}"
                )
            return {"h": enc.conv_in(x[None])[0], "skips": ()}
        h, skips = state["h"][None], tuple(s[None] for s in state["skips"])
        kind, _, sub = self.part.partition(".")
        if self.part == "out":
            return m.conv_out(jax.nn.silu(m.norm_out(h)))[0]
        if kind.startswith("d") or kind == "mid":
            skips = (*skips, h)  # the previous stage's output is a skip of the up path
            if kind == "mid":
                h = enc.mid(h, self._emb(m))
            elif sub == "down":
                h = enc.downs[int(kind[1:])](h)
            else:
                h = enc.blocks[int(kind[1:]) * enc.num_res + int(sub)](h, self._emb(m))
        else:  # up path: "u<level>.<i>" joins the last pending skip; "u<level>.up" resizes
            done = m.levels - 1 - int(kind[1:])  # up levels completed before this one
            if sub == "up":
                h = m.ups[done](h, skips[-1].shape[1:3])
            else:
                block = m.blocks[done * (m.num_res + 1) + int(sub)]
                h = block(jnp.concatenate([h, skips[-1]], axis=-1), self._emb(m))
                skips = skips[:-1]
        return {"h": h[0], "skips": tuple(s[0] for s in skips)}


def unet_stages(
    unet: UNet | Pure, t: ArrayLike, y: ArrayLike | None = None, *, skips: bool = False
) -> Stages:
    """A diffusion :class:`jcausal.nn.UNet` at diffusion step ``t`` cut after every block.

    Layers (levels ``0..L-1`` from the finest, ``num_res`` blocks per down level and
    ``num_res + 1`` per up level): ``"in"`` (input convolution), ``"d<level>.<i>"`` (down
    residual blocks), ``"d<level>.down"`` (stride-2 convolutions), ``"mid"``,
    ``"u<level>.<i>"`` (up residual blocks, each joining one skip), ``"u<level>.up"``
    (upsampling convolutions) and ``"out"``, the predicted noise ``(H, W, C)``. Every
    layer but ``"out"`` outputs ``{"h": (h, w, c), "skips": (...)}`` (module docstring).

    Args:
        unet: the ε-network (a flax module or its :class:`jcausal.nn.Pure` wrapper); it is
            used in inference mode (no dropout).
        t: the diffusion step (a scalar) at which the network is cut.
        y: the class label of a class-conditional UNet (``num_classes`` set), else ``None``.
        skips: also hybridise the pending skip activations (after ``h``'s channels).

    Returns:
        The :class:`Stages`; ``stages(x_t)`` equals ``unet(x_t, t, y)`` for one image.

    Raises:
        ValueError: ``unet`` is not a UNet; ``t`` is not a scalar; ``y`` missing for a
            class-conditional UNet, given for an unconditional one, or not one of its classes.
            Calling the stages on anything but one ``(H, W, C)`` image also raises.
    """
    net = unet if isinstance(unet, Pure) else (Pure(unet) if isinstance(unet, nnx.Module) else None)
    if net is None or not isinstance(net.module, UNet):
        raise ValueError(
            f"unet_stages needs a jcausal.nn.UNet (or its Pure wrapper), got "
            f"{type(unet).__name__}; wrap other networks with Stages([(name, fn, select), ...])"
        )
    m = net.module
    t = jnp.asarray(t, jnp.float32)
    if t.ndim != 0:
        raise ValueError(f"t must be one diffusion step (a scalar), got shape {t.shape}")
    if (m.label is None) != (y is None):
        raise ValueError(
            "this UNet is class-conditional: pass its label y="
            if y is None
            else "this UNet is unconditional (num_classes unset): do not pass y="
        )
    if y is not None:
        y = jnp.asarray(y)
        if y.shape != () or not jnp.issubdtype(y.dtype, jnp.integer):
            raise ValueError(f"y must be one integer class label, got {y!r}")
        if not 0 <= int(y) < m.num_classes:
            raise ValueError(f"y = {int(y)} is not a class of this UNet (0..{m.num_classes - 1})")
        y = y.astype(jnp.int32)
    net = net.eval()
    select = ("h", "skips") if skips else "h"
    names = _part_names(m.levels, m.num_res)
    return Stages(
        [(p, _UNetPart(net, p, t, y), select) for p in names[:-1]]
        + [("out", _UNetPart(net, "out", t, y))]
    )


__all__ = ["unet_stages"]
