"""An image mechanism whose code grid is a vector Gumbel-max: ``y := decode(argmax(logits + g))``.

For a quantised autoencoder (a *codec* with ``codes(image) -> (h, w, C)`` indices and
``decode_codes(indices) -> image``) and a transition network giving the logits of the output
codes from the parents, the image node is

    y := decode_codes( argmax_k ( logits(params, parents) + g ) ),   g ~ Gumbel(0, 1)^(h, w, C, K)

i.e. one categorical per code position, as in :class:`jcausal.GumbelMax` with ``shape=(h, w,
C)`` (which this mechanism holds and delegates to). Abduction encodes the observed image to
its codes and draws ``g`` from the exact posterior of every position (Deep SCM eq. C.3);
prediction decodes. ``log_prob`` is the probability of the observed image's code grid,
``sum log softmax(logits)[codes(y)]``: exact for images the decoder can produce (the
likelihood over the finite set of decodable images); for any other image it is that of its
quantisation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import distrax
import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from ..scm import GumbelMax, Mechanism, Parents, as_parents


class VQTransition(Mechanism):
    """Image node produced by a transition of quantised codes (CT-VAE's ``decode o CT o encode``).

    Args:
        codec: the autoencoder (e.g. :class:`jcausal.nn.MCQVAE`): ``codes(image)``,
            ``decode_codes(idx)``, ``grid``, ``num_codebooks``, ``num_codes`` and
            ``check_image(image)`` (raises ``ValueError`` for a wrong shape).
        logits: ``logits(params, codec, parents) -> (h, w, C, K)`` for one unit.
        params: pytree passed to ``logits`` (e.g. the CT layer).
        parents: names of the parents.
    """

    codes: GumbelMax
    parents: tuple[str, ...] = eqx.field(static=True)
    stochastic_abduction: ClassVar[bool] = True
    checks_values: ClassVar[bool] = True

    def __init__(
        self,
        codec: Any,
        logits: Callable[[PyTree, Any, Parents], Array],
        params: PyTree,
        parents=(),
    ):
        self.parents = as_parents(parents, "VQTransition")
        shape = (*codec.grid, codec.num_codebooks)
        self.codes = GumbelMax(
            _CodecLogits(logits), (params, codec), codec.num_codes, self.parents, shape=shape
        )

    @property
    def codec(self) -> Any:
        """The autoencoder (held once, inside the code node's parameters)."""
        return self.codes.params[1]

    @property
    def noise(self) -> distrax.Distribution:
        return self.codes.noise

    def _check(self, value: Array) -> Array:
        self.codec.check_image(value)
        return value

    def logits(self, parents: Parents) -> Float[Array, "h w C K"]:
        """Logits of the output codes of one unit."""
        return self.codes.logits(self.codes.params, parents)

    def forward(self, parents: Parents, noise: Array) -> Float[Array, "S S 3"]:
        return self.codec.decode_codes(self.codes.forward(parents, noise))

    def mode(self, parents: Parents) -> Float[Array, "S S 3"]:
        """The most likely output image (noise-free transition) of one unit."""
        return self.codec.decode_codes(jnp.argmax(self.logits(parents), -1).astype(jnp.int32))

    def abduct(self, value: Array, parents: Parents, key: PRNGKeyArray | None) -> Array:
        return self.codes.abduct(self.codec.codes(self._check(value)), parents, key)

    def log_prob(self, value: Array, parents: Parents) -> Array:
        return self.codes.log_prob(self.codec.codes(self._check(value)), parents)

    def out_of_support(self, value: Array) -> Array:
        bad = ~jnp.isfinite(value) | (value < 0) | (value > 1)
        return jnp.any(bad)

    @property
    def support_messages(self) -> tuple[str, ...]:
        return ("image pixels must be finite and in [0, 1] (the decoder's range)",)

    def code_indices(self, value: Float[Array, "S S 3"]) -> Int[Array, "h w C"]:
        """The observed image's code grid (abduction of the codes)."""
        return self.codec.codes(self._check(value))


class _CodecLogits(eqx.Module):
    """``(params, codec), parents -> logits``: the codec rides in GumbelMax's params."""

    fn: Callable = eqx.field(static=True)

    def __call__(self, params, parents):
        p, codec = params
        return self.fn(p, codec, parents)


__all__ = ["VQTransition"]
