"""Structural mechanisms: how a node's value arises from its parents and its exogenous noise.

Every mechanism is an equinox Module (a pytree), so its parameters can be differentiated, vmapped
and sharded like any array. The methods below work on **one unit** (one individual): ``parents``
maps each parent name to that unit's value, ``noise`` is that unit's exogenous noise. The SCM
engine vmaps them over the batch, so a mechanism never has to think about the batch axis, and a
user's function is written exactly as the structural equation reads.

Abduction (inferring a unit's noise from its observed value and parents, step 1 of a
counterfactual) comes in two kinds: exact and deterministic (additive noise, invertible
mechanisms) or a sample from a posterior (Gumbel-max, amortized encoders). The flag
``stochastic_abduction`` tells the engine which, so it knows when a random key is needed.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import distrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

Parents = Mapping[str, Array]


def as_arrays(tree: PyTree) -> PyTree:
    """Turn Python floats and numpy arrays in a pytree into JAX arrays.

    A Python float inside a pytree would be treated as a static constant by ``eqx.filter_jit``,
    so changing it would recompile and it could not be differentiated; arrays avoid both.
    Integers and booleans are left alone: they are often genuinely static (sizes, flags).
    """

    def conv(x):
        if isinstance(x, float | np.ndarray | np.floating):
            return jnp.asarray(x)
        return x

    return jax.tree_util.tree_map(conv, tree)


def _total(x: Array) -> Array:
    """Sum a per-element log-density over everything that is left (event and batch dims)."""
    return jnp.sum(x)


class Mechanism(eqx.Module):
    """Base class of structural mechanisms ``x := f(parents, noise)`` for one node.

    Subclasses implement ``forward`` and usually ``abduct`` and ``log_prob``. All methods act on a
    single unit; the engine vmaps them.

    Attributes:
        parents: names of the node's direct causes, in the order given by the user.
        noise: prior distribution of the node's exogenous noise for one unit (a distrax
            distribution whose samples have the noise's shape).
    """

    parents: eqx.AbstractVar[tuple[str, ...]]
    noise: eqx.AbstractVar[distrax.Distribution]
    stochastic_abduction: ClassVar[bool] = False
    discrete: ClassVar[bool] = False
    # forward(parents, abduct(x, parents)) == x exactly, in exact arithmetic.
    exact_abduction: ClassVar[bool] = False
    # check_values has something to check (run on concrete observations before each call).
    checks_values: ClassVar[bool] = False

    def sample_noise(self, key: PRNGKeyArray, n: int) -> Array:
        """Draw exogenous noise for ``n`` units: shape ``(n, *noise_shape)``."""
        return self.noise.sample(seed=key, sample_shape=(n,))

    @abc.abstractmethod
    def forward(self, parents: Parents, noise: Array) -> Array:
        """The structural assignment for one unit: the node's value."""

    def abduct(self, value: Array, parents: Parents, key: PRNGKeyArray | None) -> Array:
        """Exogenous noise of one unit given its observed value and parents.

        Deterministic mechanisms ignore ``key``; stochastic ones return one posterior sample.
        """
        raise ValueError(
            f"{type(self).__name__} cannot infer its exogenous noise from observations; use an "
            "invertible, additive-noise, Gumbel-max or amortized mechanism for counterfactuals"
        )

    def log_prob(self, value: Array, parents: Parents) -> Array:
        """``log p(value | parents)`` for one unit (a scalar)."""
        raise ValueError(
            f"{type(self).__name__} has no tractable likelihood; log_prob needs every mechanism "
            "to be invertible (Root, Additive, Invertible or GumbelMax)"
        )

    def check_values(self, node: str, value: np.ndarray) -> None:
        """Check concrete observed values (outside jit) and raise ``ValueError`` naming ``node``.

        The default accepts anything; discrete mechanisms check category ranges.
        """


class Root(Mechanism):
    """A root node whose value is its exogenous noise: ``x := u``, ``u ~ noise``.

    Args:
        noise: any distrax distribution (continuous or discrete); its sample shape is the
            node's shape.
    """

    exact_abduction: ClassVar[bool] = True

    noise: distrax.Distribution
    parents: tuple[str, ...] = eqx.field(static=True)

    def __init__(self, noise: distrax.Distribution):
        if not isinstance(noise, distrax.Distribution):
            raise TypeError(
                f"Root needs a distrax distribution for its noise, got {type(noise).__name__}"
            )
        self.noise = noise
        self.parents = ()

    def forward(self, parents: Parents, noise: Array) -> Array:
        return noise

    def abduct(self, value: Array, parents: Parents, key: PRNGKeyArray | None) -> Array:
        return value

    def log_prob(self, value: Array, parents: Parents) -> Array:
        return _total(self.noise.log_prob(value))

    @property
    def checks_values(self) -> bool:  # type: ignore[override]
        return isinstance(self.noise, distrax.Categorical)

    def check_values(self, node: str, value: np.ndarray) -> None:
        # Discrete roots (Categorical): an out-of-support value has probability 0 and would
        # silently give -inf log-likelihood; name it instead.
        if isinstance(self.noise, distrax.Categorical) and value.size:
            k = self.noise.num_categories
            if value.min() < 0 or value.max() >= k:
                raise ValueError(
                    f"node {node!r}: observed category out of range [0, {k}): "
                    f"min {value.min()}, max {value.max()}"
                )


class Additive(Mechanism):
    """Additive-noise mechanism ``x := fn(params, parents) + u``.

    Abduction is exact: ``u = x - fn(params, parents)``.

    Args:
        fn: ``fn(params, parents) -> array`` for one unit; ``parents`` is a dict name -> value.
        params: pytree of parameters passed to ``fn`` (differentiable).
        noise: distribution of ``u`` for one unit; its sample shape is the node's shape.
        parents: names of the parents, in order.
    """

    exact_abduction: ClassVar[bool] = True

    fn: Callable[[PyTree, Parents], Array]
    params: PyTree
    noise: distrax.Distribution
    parents: tuple[str, ...] = eqx.field(static=True, default=())

    def __init__(self, fn, params, noise, parents=()):
        self.fn = fn
        self.params = as_arrays(params)
        self.noise = noise
        self.parents = tuple(parents)

    def forward(self, parents: Parents, noise: Array) -> Array:
        return self.fn(self.params, parents) + noise

    def abduct(self, value: Array, parents: Parents, key: PRNGKeyArray | None) -> Array:
        return value - self.fn(self.params, parents)

    def log_prob(self, value: Array, parents: Parents) -> Array:
        return _total(self.noise.log_prob(value - self.fn(self.params, parents)))


class Invertible(Mechanism):
    """Invertible conditional mechanism ``x := b_pa(u)`` with a distrax bijector ``b_pa``.

    The bijector's parameters are computed from the parents, e.g. a conditional affine or spline
    flow. Abduction is ``u = b_pa^{-1}(x)``; the log-density follows from the change of variables
    ``log p(x | pa) = log p_u(b^{-1}(x)) + log |det J_{b^{-1}}(x)|``.

    Args:
        bijector: ``bijector(params, parents) -> distrax.Bijector`` for one unit.
        params: pytree of parameters passed to ``bijector``.
        noise: base distribution of ``u`` for one unit.
        parents: names of the parents.
    """

    exact_abduction: ClassVar[bool] = True

    bijector: Callable[[PyTree, Parents], distrax.Bijector]
    params: PyTree
    noise: distrax.Distribution
    parents: tuple[str, ...] = eqx.field(static=True, default=())

    def __init__(self, bijector, params, noise, parents=()):
        self.bijector = bijector
        self.params = as_arrays(params)
        self.noise = noise
        self.parents = tuple(parents)

    def forward(self, parents: Parents, noise: Array) -> Array:
        return self.bijector(self.params, parents).forward(noise)

    def abduct(self, value: Array, parents: Parents, key: PRNGKeyArray | None) -> Array:
        return self.bijector(self.params, parents).inverse(value)

    def log_prob(self, value: Array, parents: Parents) -> Array:
        u, ildj = self.bijector(self.params, parents).inverse_and_log_det(value)
        return _total(self.noise.log_prob(u)) + _total(ildj)


class GumbelMax(Mechanism):
    """Discrete mechanism ``y := argmax_l (logits(params, parents)_l + g_l)``, ``g ~ Gumbel(0, 1)``.

    ``P(y = k | pa) = softmax(logits)_k``. Abduction draws ``g`` from its exact posterior given the
    observed category (Deep SCM, appendix C, eq. C.3): the maximum of the perturbed logits is
    ``Gumbel(logsumexp(logits))`` and independent of which category won, and every other perturbed
    logit is a Gumbel truncated below that maximum. Counterfactuals reuse ``g`` with new logits
    (eq. C.4), which gives the stable, permutation-invariant counterfactuals of Oberst & Sontag.

    Args:
        logits: ``logits(params, parents) -> (num_categories,)`` for one unit.
        params: pytree of parameters passed to ``logits``.
        num_categories: number of categories ``K``; values are int32 in ``[0, K)``.
        parents: names of the parents.
    """

    logits: Callable[[PyTree, Parents], Float[Array, " K"]]
    params: PyTree
    num_categories: int = eqx.field(static=True)
    parents: tuple[str, ...] = eqx.field(static=True, default=())
    stochastic_abduction: ClassVar[bool] = True
    discrete: ClassVar[bool] = True
    checks_values: ClassVar[bool] = True

    def __init__(self, logits, params, num_categories, parents=()):
        if int(num_categories) < 2:
            raise ValueError(f"GumbelMax needs num_categories >= 2, got {num_categories}")
        self.logits = logits
        self.params = as_arrays(params)
        self.num_categories = int(num_categories)
        self.parents = tuple(parents)

    @property
    def noise(self) -> distrax.Distribution:
        return distrax.Gumbel(loc=jnp.zeros(self.num_categories), scale=1.0)

    def _logits(self, parents: Parents) -> Array:
        lam = jnp.asarray(self.logits(self.params, parents))
        if lam.shape != (self.num_categories,):
            raise ValueError(
                f"GumbelMax logits must have shape ({self.num_categories},) for one unit, "
                f"got {lam.shape}"
            )
        return lam

    def forward(self, parents: Parents, noise: Array) -> Int[Array, ""]:
        return jnp.argmax(self._logits(parents) + noise).astype(jnp.int32)

    def abduct(self, value: Array, parents: Parents, key: PRNGKeyArray | None) -> Array:
        lam = self._logits(parents)
        g = jax.random.gumbel(key, lam.shape, dtype=lam.dtype)
        onehot = jax.nn.one_hot(value, self.num_categories, dtype=bool)
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

    def log_prob(self, value: Array, parents: Parents) -> Array:
        return jax.nn.log_softmax(self._logits(parents))[value]

    def probs(self, parents: Parents) -> Float[Array, " K"]:
        """``P(y = . | parents)`` for one unit."""
        return jax.nn.softmax(self._logits(parents))

    def check_values(self, node: str, value: np.ndarray) -> None:
        if not np.issubdtype(value.dtype, np.integer):
            raise ValueError(
                f"node {node!r} is categorical (GumbelMax): observations must be integers in "
                f"[0, {self.num_categories}), got dtype {value.dtype}"
            )
        if value.size and (value.min() < 0 or value.max() >= self.num_categories):
            raise ValueError(
                f"node {node!r}: observed category out of range [0, {self.num_categories}): "
                f"min {value.min()}, max {value.max()}"
            )


class Amortized(Mechanism):
    """Non-invertible mechanism with amortized abduction: ``x := fn(params, parents, u)``.

    Abduction uses an encoder that returns ``q(u | x, parents)``, either a distrax distribution
    (sampled: variational, Fig. 1b of Deep SCM) or an array (a deterministic encoder, Fig. 1c).
    Image models (VAEs, diffusion with DDIM inversion) plug in here. Models whose noise splits into
    a high-level latent ``z`` and a low-level invertible part ``u`` (Deep SCM eq. 5) subclass this
    and override ``abduct`` to sample ``z`` from the encoder and invert the low-level part.

    Args:
        fn: ``fn(params, parents, noise) -> value`` for one unit.
        encoder: ``encoder(params, value, parents) -> distrax.Distribution | array``.
        params: pytree shared by ``fn`` and ``encoder``.
        noise: prior of the exogenous noise for one unit.
        parents: names of the parents.
        deterministic: True when ``encoder`` returns the noise itself (no key needed).
    """

    fn: Callable[[PyTree, Parents, Array], Array]
    encoder: Callable[[PyTree, Array, Parents], Any]
    params: PyTree
    noise: distrax.Distribution
    parents: tuple[str, ...] = eqx.field(static=True, default=())
    deterministic: bool = eqx.field(static=True, default=False)

    def __init__(self, fn, encoder, params, noise, parents=(), deterministic=False):
        self.fn = fn
        self.encoder = encoder
        self.params = as_arrays(params)
        self.noise = noise
        self.parents = tuple(parents)
        self.deterministic = bool(deterministic)

    @property
    def stochastic_abduction(self) -> bool:  # type: ignore[override]
        return not self.deterministic

    def forward(self, parents: Parents, noise: Array) -> Array:
        return self.fn(self.params, parents, noise)

    def posterior(self, value: Array, parents: Parents) -> distrax.Distribution:
        """The encoder's ``q(u | x, parents)`` for one unit."""
        return self.encoder(self.params, value, parents)

    def abduct(self, value: Array, parents: Parents, key: PRNGKeyArray | None) -> Array:
        q = self.posterior(value, parents)
        if isinstance(q, distrax.Distribution):
            return q.sample(seed=key)
        return jnp.asarray(q)


class Given(Mechanism):
    """Internal: a node whose value is handed in as its "noise" (``x := u``), parents kept.

    Counterfactuals use it for an intervened node whose parents are unchanged and whose
    mechanism is exactly invertible: its pre-intervention value is then the observation itself,
    so ``Shift`` gives ``x + delta`` exactly and no abduction or re-evaluation is needed.
    """

    parents: tuple[str, ...] = eqx.field(static=True)

    def __init__(self, parents):
        self.parents = tuple(parents)

    @property
    def noise(self) -> distrax.Distribution:
        # Never sampled: the value is always handed in.
        return distrax.Deterministic(0.0)

    def forward(self, parents: Parents, noise: Array) -> Array:
        return noise


def is_stochastic(mech: Mechanism) -> bool:
    """Whether abducting this mechanism's noise needs a random key."""
    return bool(mech.stochastic_abduction)


__all__ = [
    "Additive",
    "Amortized",
    "GumbelMax",
    "Invertible",
    "Mechanism",
    "Root",
    "as_arrays",
    "is_stochastic",
]
