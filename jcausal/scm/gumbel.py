"""Gumbel-max mechanism: categorical nodes with exact posterior noise (Deep SCM, appendix C).

Abduction samples the Gumbel noise from its posterior given the observed category, so
counterfactuals of a categorical node are the stable ones of Oberst & Sontag (2019).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import distrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from .mechanisms import (
    Mechanism,
    Parents,
    _category_messages,
    _outside_categories,
    as_arrays,
    as_parents,
)


def _gumbel_posterior(lam: Array, value: Array, g: Array) -> Array:
    """Posterior noise of one categorical given its observed category (eq. C.3).

    From draws ``g ~ Gumbel(0, 1)`` of shape ``(K,)``.
    """
    k = lam.shape[-1]
    onehot = jax.nn.one_hot(value, k, dtype=bool)
    # Perturbed maximum: Gumbel located at logsumexp(lam), whatever category won.
    top = g[value] + jax.nn.logsumexp(lam)
    # The others are Gumbel(lam_l) truncated to lie below `top` (eq. C.3, second line).
    below = -jnp.logaddexp(-g - lam, -top)
    # Guard the strict inequality against float rounding: when g_l + lam_l is far above `top`
    # the truncated value rounds to `top` itself, and re-adding lam_l in `forward` may round
    # up past it; a margin of a few ulps keeps argmax on the observed category and moves the
    # posterior by less than the arithmetic's own error.
    scale = jnp.maximum(jnp.max(jnp.abs(lam)), jnp.abs(top)) + 1.0
    margin = 16 * jnp.finfo(lam.dtype).eps * scale
    below = jnp.minimum(below, top - margin)
    perturbed = jnp.where(onehot, top, below)
    return perturbed - lam


class GumbelMax(Mechanism):
    """Discrete mechanism ``y := argmax_l (logits(params, parents)_l + g_l)``, ``g ~ Gumbel(0, 1)``.

    ``P(y = k | pa) = softmax(logits)_k``. Abduction draws ``g`` from its exact posterior given the
    observed category (Deep SCM, appendix C, eq. C.3): the maximum of the perturbed logits is
    ``Gumbel(logsumexp(logits))`` and independent of which category won, and every other perturbed
    logit is a Gumbel truncated below that maximum. Counterfactuals reuse ``g`` with new logits
    (eq. C.4), which gives the stable, permutation-invariant counterfactuals of Oberst & Sontag.

    The vector form (``shape=(d,)``, or any shape) is ``shape`` independent categoricals given
    the parents: logits of shape ``(*shape, K)``, values of shape ``shape``, one Gumbel vector
    per component (e.g. the codes of a vector-quantised state).

    A NaN logit (e.g. from a NaN parent) raises when the node is computed, under ``jit`` too:
    ``argmax`` would otherwise silently return category 0, and an integer cannot carry NaN.

    Args:
        logits: ``logits(params, parents) -> (*shape, num_categories)`` for one unit.
        params: pytree of parameters passed to ``logits``.
        num_categories: number of categories ``K``; values are int32 in ``[0, K)``.
        parents: names of the parents.
        shape: shape of one unit's value (``()``: one categorical).
    """

    logits: Callable[[PyTree, Parents], Float[Array, "*shape K"]]
    params: PyTree
    num_categories: int = eqx.field(static=True)
    parents: tuple[str, ...] = eqx.field(static=True, default=())
    shape: tuple[int, ...] = eqx.field(static=True, default=())
    stochastic_abduction: ClassVar[bool] = True
    discrete: ClassVar[bool] = True
    checks_values: ClassVar[bool] = True

    def __init__(self, logits, params, num_categories, parents=(), *, shape=()):
        if int(num_categories) < 2:
            raise ValueError(f"GumbelMax needs num_categories >= 2, got {num_categories}")
        self.logits = logits
        self.params = as_arrays(params)
        self.num_categories = int(num_categories)
        self.parents = as_parents(parents, "GumbelMax")
        self.shape = tuple(int(d) for d in shape)

    @property
    def noise(self) -> distrax.Distribution:
        return distrax.Gumbel(loc=jnp.zeros((*self.shape, self.num_categories)), scale=1.0)

    def _logits(self, parents: Parents) -> Array:
        lam = jnp.asarray(self.logits(self.params, parents))
        want = (*self.shape, self.num_categories)
        if lam.shape != want:
            raise ValueError(
                f"GumbelMax logits must have shape {want} for one unit, got {lam.shape}"
            )
        return lam

    def forward(self, parents: Parents, noise: Array) -> Int[Array, "*shape"]:
        lam = self._logits(parents)
        lam = eqx.error_if(
            lam,
            jnp.any(jnp.isnan(lam)),
            f"GumbelMax node with parents {self.parents}: the logits are NaN (is a parent "
            "NaN?); a categorical value cannot carry NaN, so no category is returned",
        )
        return jnp.argmax(lam + noise, axis=-1).astype(jnp.int32)

    def abduct(self, value: Array, parents: Parents, key: PRNGKeyArray | None) -> Array:
        lam = self._logits(parents)
        g = jax.random.gumbel(key, lam.shape, dtype=lam.dtype)
        post = jnp.vectorize(_gumbel_posterior, signature="(k),(),(k)->(k)")
        return post(lam, jnp.asarray(value, jnp.int32), g)

    def log_prob(self, value: Array, parents: Parents) -> Array:
        lp = jax.nn.log_softmax(self._logits(parents), axis=-1)
        idx = jnp.asarray(value, jnp.int32)[..., None]
        return jnp.sum(jnp.take_along_axis(lp, idx, axis=-1))

    def probs(self, parents: Parents) -> Float[Array, "*shape K"]:
        """``P(y = . | parents)`` for one unit."""
        return jax.nn.softmax(self._logits(parents), axis=-1)

    def out_of_support(self, value: Array) -> Array:
        return _outside_categories(value, self.num_categories)

    @property
    def categories(self) -> int:
        return self.num_categories

    @property
    def support_messages(self) -> tuple[str, ...]:
        return _category_messages(self.num_categories, "GumbelMax")


__all__ = ["GumbelMax"]
