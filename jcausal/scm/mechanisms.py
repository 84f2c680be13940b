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
from jaxtyping import Array, PRNGKeyArray, PyTree

#: One unit's parent values, ``{name: value}``: what every mechanism method receives.
Parents = Mapping[str, Array]


def as_parents(parents: Any, owner: str = "mechanism") -> tuple[str, ...]:
    """Parent names as a tuple, refusing a bare string.

    ``tuple("xy")`` would silently become the two parents ``("x", "y")``; a string is refused
    instead, with the two spellings that mean what the user may have wanted.

    Args:
        parents: a sequence of node names.
        owner: what is being built (for the message), e.g. ``"Additive"``.

    Returns:
        The names, in order.

    Raises:
        TypeError: for a string or a non-iterable, or a name that is not a string.
    """
    if isinstance(parents, str):
        raise TypeError(
            f"{owner}: parents must be a sequence of node names, got the string {parents!r}; "
            f"write parents=({parents!r},) for one parent named {parents!r}"
            + (
                f" or parents={list(parents)!r} for one parent per letter"
                if len(parents) > 1
                else ""
            )
        )
    try:
        out = tuple(parents)
    except TypeError:
        raise TypeError(
            f"{owner}: parents must be a sequence of node names, got {type(parents).__name__}"
        ) from None
    for p in out:
        if not isinstance(p, str):
            raise TypeError(f"{owner}: parent names must be strings, got {p!r}")
    return out


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


def _outside_categories(value: Array, k: int) -> Array:
    """Code 0 (a category), 1 (negative), 2 (``>= k``) or 3 (not an integer, or NaN)."""
    value = jnp.asarray(value)
    if jnp.issubdtype(value.dtype, jnp.inexact):
        frac = jnp.any((value != jnp.round(value)) | ~jnp.isfinite(value))
    else:
        frac = jnp.zeros((), bool)
    code = jnp.where(jnp.any(value < 0), 1, 0)
    code = jnp.where(jnp.any(value >= k), 2, code)
    return jnp.where(frac, 3, code).astype(jnp.int32)


def _category_messages(k: int, what: str) -> tuple[str, ...]:
    head = f"category out of range [0, {k}) ({what}):"
    return (
        f"{head} a negative value",
        f"{head} a value >= {k}",
        f"{head} a value that is not an integer (or NaN)",
    )


def check_support(node: str, mech: Mechanism, values: Array) -> Array:
    """``values`` (batched, units first), checked by the mechanism's value-check hook.

    Applies :meth:`Mechanism.out_of_support` to every unit inside the compiled call
    (``eqx.error_if``), so the check holds under ``jit``, ``vmap`` and ``grad`` and costs no
    host copy. Raises (at run time) with a message naming ``node``.

    Args:
        node: the node's name, for the message.
        mech: the node's mechanism.
        values: ``(n, *shape)`` values of the node, units first.

    Returns:
        ``values`` (the check is attached to them).
    """
    if not mech.checks_values:
        return values
    codes = jax.vmap(type(mech).out_of_support, in_axes=(None, 0))(mech, values)
    code = jnp.max(codes.astype(jnp.int32)) if codes.size else jnp.zeros((), jnp.int32)
    messages = [f"node {node!r}: {m}" for m in mech.support_messages]
    # The check is attached to the scalar code, not to ``values``: an error check passes its
    # operand through a host callback, which under a device mesh gathered a sharded batch
    # of images onto one device every step. The select ties ``values`` to the checked code
    # (so neither JAX nor XLA drops the check) and keeps their sharding; it fuses into the
    # values' first consumer.
    checked = eqx.branched_error_if(
        code, code > 0, jnp.clip(code - 1, 0, len(messages) - 1), messages
    )
    return jnp.where(checked > 0, jnp.zeros((), values.dtype), values)


def _total(x: Array) -> Array:
    """Sum a per-element log-density over everything that is left (event and batch dims)."""
    return jnp.sum(x)


class NoiseBox(eqx.Module):
    """A distrax distribution held as plain leaves plus a static tree structure.

    distrax distributions are pytrees whose structure depends on the *types* of their leaves,
    so equinox's filtering (``eqx.partition``, as ``jcausal.train.fit`` does to train an SCM)
    cannot map them to booleans and back. Held in this box, a mechanism's noise is an
    ordinary pytree of arrays: trainable, vmappable and filterable like any other field.
    """

    leaves: tuple
    treedef: Any = eqx.field(static=True)

    def __init__(self, dist: distrax.Distribution):
        leaves, self.treedef = jax.tree_util.tree_flatten(dist)
        self.leaves = tuple(leaves)

    @property
    def value(self) -> distrax.Distribution:
        """The distribution."""
        return jax.tree_util.tree_unflatten(self.treedef, list(self.leaves))


class _BoxedNoise:
    """Mixin: ``noise`` read from the ``_noise`` box."""

    @property
    def noise(self) -> distrax.Distribution:
        return self._noise.value


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
    # out_of_support has something to check (the engine then checks observations under jit).
    checks_values: ClassVar[bool] = False
    # log_prob is exact; False for mechanisms whose likelihood is only bounded (VAEs), whose
    # log_prob_bound the engine uses with bound=True.
    exact_likelihood: ClassVar[bool] = True

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
            "to be invertible (Root, Additive, Invertible or GumbelMax), or bound=True for "
            "mechanisms that give a lower bound (log_prob_bound)"
        )

    def log_prob_bound(
        self, value: Array, parents: Parents, key: PRNGKeyArray | None, num_samples: int = 1
    ) -> Array:
        """A lower bound on ``log p(value | parents)`` for one unit (a scalar).

        Exact mechanisms return their exact ``log_prob`` (the tightest bound; ``key`` and
        ``num_samples`` unused). Mechanisms with an intractable likelihood (a VAE) override it
        with a Monte Carlo bound (an ELBO) that uses ``key`` and ``num_samples`` draws.
        """
        return self.log_prob(value, parents)

    @property
    def categories(self) -> int | None:
        """Number of categories of a categorical node (values ``0..K-1``), else ``None``.

        ``do`` uses it to refuse ``Hard`` values that are not categories before any work.
        """
        return None

    #: counterfactual_value is a one-step shortcut the engine uses (see its docstring).
    has_shortcut: ClassVar[bool] = False

    def counterfactual_value(
        self, value: Array, parents: Parents, new_parents: Parents, key: PRNGKeyArray | None
    ) -> Array:
        """One unit's counterfactual value when its parents change to ``new_parents``.

        The default is ``forward(new_parents, abduct(value, parents, key))`` (eq. 6).

        A mechanism may override this with an algebraically equal shortcut (set
        ``has_shortcut = True``); ``counterfactual`` then calls it for the node instead of
        abducting its noise and predicting. An override must agree with the default for the
        same ``key`` (the contract test checks it).
        """
        return self.forward(new_parents, self.abduct(value, parents, key))

    def out_of_support(self, value: Array) -> Array:
        """The value-check hook: nonzero when one unit's observed value is impossible.

        Returns a bool, or an int code ``k >= 1`` naming message ``k - 1`` of
        :attr:`support_messages`. Runs inside the engine's compiled call (under ``jit`` and
        ``vmap`` too) through :func:`check_support`, which raises with that message. The
        default accepts everything; set ``checks_values = True`` when overriding.
        """
        return jnp.zeros((), bool)

    @property
    def support_messages(self) -> tuple[str, ...]:
        """What is wrong with an observation, per code of :meth:`out_of_support`."""
        return ("observation out of the mechanism's support",)


class Root(_BoxedNoise, Mechanism):
    """A root node whose value is its exogenous noise: ``x := u``, ``u ~ noise``.

    Args:
        noise: any distrax distribution (continuous or discrete); its sample shape is the
            node's shape.
    """

    exact_abduction: ClassVar[bool] = True

    _noise: NoiseBox
    parents: tuple[str, ...] = eqx.field(static=True)

    def __init__(self, noise: distrax.Distribution):
        if not isinstance(noise, distrax.Distribution):
            raise TypeError(
                f"Root needs a distrax distribution for its noise, got {type(noise).__name__}"
            )
        self._noise = NoiseBox(noise)
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

    def out_of_support(self, value: Array) -> Array:
        # Discrete roots (Categorical): an out-of-support value has probability 0 and would
        # silently give -inf log-likelihood (or index out of bounds); name it instead.
        if isinstance(self.noise, distrax.Categorical):
            return _outside_categories(value, self.noise.num_categories)
        return jnp.zeros((), bool)

    @property
    def categories(self) -> int | None:
        if isinstance(self.noise, distrax.Categorical):
            return int(self.noise.num_categories)
        return None

    @property
    def support_messages(self) -> tuple[str, ...]:
        if isinstance(self.noise, distrax.Categorical):
            return _category_messages(self.noise.num_categories, "Categorical root")
        return super().support_messages


class Additive(_BoxedNoise, Mechanism):
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
    _noise: NoiseBox
    parents: tuple[str, ...] = eqx.field(static=True, default=())

    def __init__(self, fn, params, noise, parents=()):
        self.fn = fn
        self.params = as_arrays(params)
        self._noise = NoiseBox(noise)
        self.parents = as_parents(parents, "Additive")

    def forward(self, parents: Parents, noise: Array) -> Array:
        return self.fn(self.params, parents) + noise

    def abduct(self, value: Array, parents: Parents, key: PRNGKeyArray | None) -> Array:
        return value - self.fn(self.params, parents)

    def log_prob(self, value: Array, parents: Parents) -> Array:
        return _total(self.noise.log_prob(value - self.fn(self.params, parents)))


class Invertible(_BoxedNoise, Mechanism):
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
    _noise: NoiseBox
    parents: tuple[str, ...] = eqx.field(static=True, default=())

    def __init__(self, bijector, params, noise, parents=()):
        self.bijector = bijector
        self.params = as_arrays(params)
        self._noise = NoiseBox(noise)
        self.parents = as_parents(parents, "Invertible")

    def forward(self, parents: Parents, noise: Array) -> Array:
        return self.bijector(self.params, parents).forward(noise)

    def abduct(self, value: Array, parents: Parents, key: PRNGKeyArray | None) -> Array:
        return self.bijector(self.params, parents).inverse(value)

    def log_prob(self, value: Array, parents: Parents) -> Array:
        u, ildj = self.bijector(self.params, parents).inverse_and_log_det(value)
        return _total(self.noise.log_prob(u)) + _total(ildj)


class Amortized(_BoxedNoise, Mechanism):
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
    _noise: NoiseBox
    parents: tuple[str, ...] = eqx.field(static=True, default=())
    deterministic: bool = eqx.field(static=True, default=False)

    def __init__(self, fn, encoder, params, noise, parents=(), deterministic=False):
        self.fn = fn
        self.encoder = encoder
        self.params = as_arrays(params)
        self._noise = NoiseBox(noise)
        self.parents = as_parents(parents, "Amortized")
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


def is_stochastic(mech: Mechanism) -> bool:
    """Whether abducting this mechanism's noise needs a random key."""
    return bool(mech.stochastic_abduction)


__all__ = [
    "Additive",
    "Amortized",
    "Invertible",
    "Mechanism",
    "Parents",
    "Root",
    "as_arrays",
    "as_parents",
    "check_support",
    "is_stochastic",
]
