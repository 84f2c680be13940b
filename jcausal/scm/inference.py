"""Sampling, abduction, counterfactuals and likelihoods for acyclic SCMs.

(Over 500 lines: the four verbs share the argument checks and the compiled-call runner above
them, and read best as one engine; chunked evaluation lives in ``chunked.py``.)

Each public function validates its arguments in plain Python (names, counts, keys), then runs
one compiled call (:class:`._jit.lean_jit`) over the whole batch. Shape and dtype checks run
while tracing, so they cost nothing on later calls. Value checks (categories in range, image
intensities in the preprocessing's domain: each mechanism's ``out_of_support`` hook) run inside
the compiled call with ``eqx.error_if``, so they hold under a user's own ``jit``, ``vmap`` and
``grad`` too and never copy observations to the host; a top-level call reports them as
``ValueError`` naming the node.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from . import graph
from ._jit import lean_jit
from ._swaps import Given, Shortcut
from .chunked import map_chunks, split_interventions
from .interventions import Intervention, check_interventions
from .mechanisms import check_support, is_stochastic
from .model import SCM

Values = dict[str, Array]


# ----------------------------------------------------------------------------------------------
# helpers


def _node_key(key: PRNGKeyArray, scm: SCM, node: str) -> PRNGKeyArray:
    # One stream per node, chosen by its position so results do not depend on dict order.
    return jax.random.fold_in(key, scm.order.index(node))


def _ancestral(key: PRNGKeyArray, scm: SCM, n: int) -> tuple[Values, Values]:
    noise = scm.sample_noise(key, n)
    return scm.predict(noise, {}, scm.order, scm.interventions), noise


def _as_key(key) -> PRNGKeyArray:
    if key is None:
        return None
    if isinstance(key, int):
        raise TypeError("key must be a jax.random key (jax.random.key(seed)), not an int")
    return key


def _check_observations(scm: SCM, obs: Mapping[str, Array]) -> int:
    """Static checks of an observation dict (names, batch axis, per-unit shapes, dtypes)."""
    if not isinstance(obs, Mapping):
        raise TypeError(f"observations must be a dict {{node: array}}, got {type(obs).__name__}")
    for name in obs:
        if name not in scm.mechanisms:
            raise ValueError(
                f"observations name unknown node {name!r}; known nodes: {list(scm.order)}"
            )
    children = scm.children
    for node in scm.order:
        if node not in obs:
            kids = [c for c in children[node]]
            why = f" (a parent of {kids})" if kids else ""
            raise ValueError(
                f"observations lack node {node!r}{why}; abduction needs every node observed "
                "for every unit"
            )
    n = None
    specs = scm.node_shapes()
    for node in scm.order:
        x = obs[node]
        shape = jnp.shape(x)
        if len(shape) == 0:
            raise ValueError(
                f"node {node!r}: observations need a leading unit axis, got a scalar; "
                "wrap a single unit as x[None]"
            )
        if n is None:
            n = shape[0]
        elif shape[0] != n:
            raise ValueError(
                f"node {node!r}: {shape[0]} units observed, but {n} for {scm.order[0]!r}; every "
                "node needs the same number of units"
            )
        spec = specs[node]
        if tuple(shape[1:]) != tuple(spec.shape):
            raise ValueError(
                f"node {node!r}: each unit should have shape {tuple(spec.shape)}, observations "
                f"have {tuple(shape[1:])} (full array {tuple(shape)})"
            )
        dtype = jnp.result_type(x)
        want_float = jnp.issubdtype(spec.dtype, jnp.inexact)
        if want_float != bool(jnp.issubdtype(dtype, jnp.inexact)):
            kind = "floating-point numbers" if want_float else "integers"
            raise ValueError(
                f"node {node!r}: observations have dtype {dtype}, expected {kind} "
                f"(the model produces {spec.dtype})"
            )
    return n


# Messages of the value checks that run inside compiled calls (``eqx.error_if``) all start with
# "node '<name>': " (or "GumbelMax node " for NaN logits, where the mechanism does not know its
# name); a top-level call (concrete inputs) reports them as a ValueError.
_CHECK = re.compile(r"((?:node '[^'\n]*': |GumbelMax node )[^\n]*)")


def _run(fn, dynamic: tuple, *static):
    """Run a compiled entry point; value checks that fail at run time become ``ValueError``.

    Under a user's ``jit``/``vmap`` nothing runs here (the call is traced) and a failing check
    raises when the user's program runs (``equinox``'s runtime error, same message).
    """
    try:
        return jax.block_until_ready(fn(dynamic, *static))
    except RuntimeError as e:  # jax's JaxRuntimeError or equinox's EquinoxRuntimeError
        m = _CHECK.search(str(e))
        if m is None:
            raise
        raise ValueError(m.group(1).strip()) from None


def _constant(iv) -> bool:
    return iv is not None and iv.constant


def _checked(scm: SCM, obs: Values) -> Values:
    """Observations with every checked node's value-check hook applied (inside the jit)."""
    if not scm._checked:
        return obs
    obs = dict(obs)
    for node in scm._checked:
        obs[node] = check_support(node, scm.mechanisms[node], jnp.asarray(obs[node]))
    return obs


@functools.lru_cache(maxsize=256)
def _targets(parents: tuple, intervened: tuple[str, ...]) -> tuple[str, ...]:
    """Intervened nodes and their descendants, in model order (cached: it is per call)."""
    desc = graph.descendants(dict(parents), intervened)
    return tuple(n for n, _ in parents if n in desc)


def _as_obs(observations) -> dict:
    if not isinstance(observations, Mapping):
        raise TypeError(
            f"observations must be a dict {{node: array}}, got {type(observations).__name__}"
        )
    return dict(observations)


def _require_unintervened(scm: SCM, what: str) -> None:
    if scm.interventions:
        raise ValueError(
            f"{what} needs the unintervened model (this one has interventions on "
            f"{sorted(scm.interventions)}); abduct with the original SCM and pass the "
            "interventions to counterfactual(...)"
        )


def _cast_obs(scm: SCM, obs: Mapping[str, Array]) -> Values:
    obs = _checked(scm, obs)
    out = {}
    for node in scm.order:
        x = jnp.asarray(obs[node])
        if scm.mechanisms[node].discrete:
            x = x.astype(jnp.int32)
        out[node] = x
    return out


def _abduct_nodes(
    scm: SCM,
    obs: Values,
    key: PRNGKeyArray | None,
    nodes: tuple[str, ...],
    unit_keys: Mapping[str, Array] | None = None,
) -> Values:
    noise: Values = {}
    for node in nodes:
        mech = scm.mechanisms[node]
        pa = {p: obs[p] for p in mech.parents}
        x = obs[node]
        if is_stochastic(mech):
            if key is None:
                raise ValueError(
                    f"node {node!r} ({type(mech).__name__}) abducts its noise by sampling a "
                    "posterior; pass key=jax.random.key(seed)"
                )
            if unit_keys is not None:  # split for all units before chunking
                keys = unit_keys[node]
            else:
                keys = jax.random.split(_node_key(key, scm, node), x.shape[0])
            noise[node] = jax.vmap(mech.abduct)(x, pa, keys)
        else:
            noise[node] = jax.vmap(lambda v, p, m=mech: m.abduct(v, p, None))(x, pa)
    return noise


# ----------------------------------------------------------------------------------------------
# sample


@lean_jit
def _sample_jit(key, scm, n, return_noise):
    values, noises = _ancestral(key, scm, n)
    return (values, noises) if return_noise else values


def sample(
    key: PRNGKeyArray, scm: SCM, n: int, *, return_noise: bool = False
) -> Values | tuple[Values, Values]:
    """Draw ``n`` units from the model (observational, or interventional after ``do``).

    Args:
        key: a ``jax.random`` key.
        scm: the model.
        n: number of units.
        return_noise: also return the exogenous noise that produced each unit.

    Returns:
        ``{node: array of shape (n, *node_shape)}``, and the noise dict when asked.
    """
    if not isinstance(scm, SCM):
        raise TypeError(f"sample expects an SCM, got {type(scm).__name__}")
    n = _count(n, "n")
    return _run(_sample_jit, (_as_key(key), scm), n, bool(return_noise))


def _count(n, what: str) -> int:
    """A positive integer (int or numpy integer); ``2.7``, ``2.0`` and ``True`` are refused."""
    if isinstance(n, bool):
        n = None
    try:
        n = operator.index(n)
    except TypeError:
        raise ValueError(f"{what} must be a positive integer, got {n!r}") from None
    if n < 1:
        raise ValueError(f"{what} must be a positive integer, got {n}")
    return n


# ----------------------------------------------------------------------------------------------
# abduct


@lean_jit
def _abduct_jit(scm, obs, key, nodes, num_samples):
    _check_observations(scm, obs)
    obs = _cast_obs(scm, obs)
    if num_samples is None:
        return _abduct_nodes(scm, obs, key, nodes)
    if key is None:
        out = _abduct_nodes(scm, obs, None, nodes)
        return jax.tree_util.tree_map(lambda v: jnp.broadcast_to(v, (num_samples, *v.shape)), out)
    return jax.vmap(lambda k: _abduct_nodes(scm, obs, k, nodes))(jax.random.split(key, num_samples))


def abduct(
    scm: SCM,
    observations: Mapping[str, Array],
    key: PRNGKeyArray | None = None,
    *,
    num_samples: int | None = None,
) -> Values:
    """Infer each unit's exogenous noise from full observations (step 1 of a counterfactual).

    Exact for root, additive-noise and invertible mechanisms; one posterior sample for
    Gumbel-max and amortized mechanisms (these need ``key``).

    Args:
        scm: the unintervened model.
        observations: ``{node: array (n, *node_shape)}`` for every node.
        key: a ``jax.random`` key; required when some mechanism samples its posterior.
        num_samples: number of posterior draws, as in :func:`counterfactual`; ``None`` returns
            one draw. Draw ``s`` uses the same key as draw ``s`` of ``counterfactual``.

    Returns:
        ``{node: noise array (n, *noise_shape)}``, or ``(num_samples, n, *noise_shape)`` per
        node when ``num_samples`` is given.
    """
    _require_unintervened(scm, "abduct")
    if num_samples is not None:
        num_samples = _count(num_samples, "num_samples")
    key = _as_key(key)
    if key is None:
        for node in scm.order:
            _need_key(scm, node, "abducts its noise by sampling a posterior")
    return _run(_abduct_jit, (scm, _as_obs(observations), key), scm.order, num_samples)


def _need_key(scm: SCM, node: str, why: str) -> None:
    mech = scm.mechanisms[node]
    if is_stochastic(mech):
        raise ValueError(
            f"node {node!r} ({type(mech).__name__}) {why}; pass key=jax.random.key(seed)"
        )


# ----------------------------------------------------------------------------------------------
# counterfactual


@lean_jit
def _counterfactual_jit(scm, obs, interventions, key, targets, num_samples, chunk_size):
    _check_observations(scm, obs)
    obs = _cast_obs(scm, obs)
    # An intervened node whose parents keep their observed values and whose abduction is exact
    # would be abducted and pushed forward again only to get back its observation: use the
    # observation directly (exact, and two evaluations of its mechanism cheaper).
    given, swap = {}, {}
    for t in targets:
        iv, mech = interventions.get(t), scm.mechanisms[t]
        if (
            iv is not None
            and iv.uses_base_only
            and mech.exact_abduction
            and not any(p in targets for p in mech.parents)
        ):
            given[t] = Given(mech.parents)
        elif iv is None and scm.acyclic and mech.has_shortcut:
            # The mechanism computes its counterfactual in one step (e.g. a VAE's
            # constant-variance shortcut): hand it the observation and the old parents.
            swap[t] = Shortcut(mech)
    model = scm.with_mechanisms({**given, **swap}) if given or swap else scm
    # Nodes set to constants (whole-node Hard) ignore their own noise, so it is never abducted.
    need = tuple(
        t
        for t in targets
        if not _constant(interventions.get(t)) and t not in given and t not in swap
    )

    n = obs[scm.order[0]].shape[0]
    ndim = {k: len(s.shape) for k, s in scm.node_shapes().items()}
    per_unit, rebuild = split_interventions(interventions, ndim, n)

    def one(k):
        # Every unit's keys are split here, for all n units, so that a chunked evaluation
        # draws exactly what the unchunked one draws.
        keys = {}
        if k is not None:
            for t in need:
                if is_stochastic(scm.mechanisms[t]):
                    keys[t] = jax.random.split(_node_key(k, scm, t), n)
            for t in swap:
                keys[t] = jax.random.split(_node_key(k, scm, t), n)

        def chunk(u):
            o, ks = u["obs"], u["keys"]
            noise = _abduct_nodes(scm, o, k, need, ks)
            noise.update({t: o[t] for t in given})
            for t in swap:
                mech = scm.mechanisms[t]
                noise[t] = {"value": o[t], "parents": {p: o[p] for p in mech.parents}}
                if t in ks:
                    noise[t]["key"] = ks[t]
            # Observed values serve as the parents of targets and as the initial guess of an
            # equilibrium solve (the counterfactual equilibrium is usually near the factual
            # one).
            return model.predict(noise, o, targets, rebuild(u["iv"]), init=o)

        return map_chunks(chunk, {"obs": obs, "keys": keys, "iv": per_unit}, n, chunk_size)

    if num_samples is None:
        return one(key)
    if key is None:
        # Deterministic abduction: every Monte Carlo draw is the same; compute it once.
        out = one(None)
        return {k: jnp.broadcast_to(v, (num_samples, *v.shape)) for k, v in out.items()}
    return jax.vmap(one)(jax.random.split(key, num_samples))


def counterfactual(
    scm: SCM,
    observations: Mapping[str, Array],
    interventions: Mapping[str, Intervention],
    key: PRNGKeyArray | None = None,
    *,
    num_samples: int | None = None,
    chunk_size: int | None = None,
) -> Values:
    """What would each observed unit have looked like under ``interventions``?

    Abduction (infer each unit's noise) -> action (``do``) -> prediction (push the same noise
    through the intervened model), for the whole batch in one compiled call. Nodes that do not
    descend from an intervened node are returned exactly as observed (the same arrays).

    Deterministic when every abduction on the way is exact (root, additive, invertible). With
    Gumbel-max or amortized mechanisms downstream of the intervention the answer is a posterior
    sample: pass ``key``; ``num_samples=S`` returns ``S`` Monte Carlo draws.

    Args:
        scm: the unintervened model.
        observations: ``{node: array (n, *node_shape)}`` for every node.
        interventions: ``{node: Hard | Shift | Scale | Soft}``; values broadcast against the
            units (a leading axis of size ``n`` gives each unit its own value).
        key: a ``jax.random`` key, needed for stochastic abduction.
        num_samples: number of Monte Carlo draws; ``None`` returns a single draw.
        chunk_size: evaluate ``chunk_size`` units at a time inside the one compiled call
            (acyclic models): intermediates stay chunk-sized, so time per unit stays flat
            for large ``n`` (see ``jcausal.scm.chunked``). ``None`` (default): all at once.
            The answer is the same either way.

    Returns:
        ``{node: array (n, *node_shape)}``, or ``(num_samples, n, *node_shape)`` per node when
        ``num_samples`` is given.

    Raises:
        ValueError: naming the node, for unknown nodes, missing observations, shape or dtype
            mismatches, out-of-range categories, or a missing key.
    """
    _require_unintervened(scm, "counterfactual")
    interventions = check_interventions(interventions, scm.mechanisms)
    if num_samples is not None:
        num_samples = _count(num_samples, "num_samples")
    if chunk_size is not None:
        chunk_size = _count(chunk_size, "chunk_size")
        if not scm.acyclic:
            raise ValueError(
                "chunk_size applies to acyclic SCMs; an equilibrium SCM solves all units "
                "jointly (vmap over units, or pass fewer units per call)"
            )
    targets = _targets(scm._parents, tuple(sorted(interventions)))
    key = _as_key(key)
    if key is None:
        for node in targets:
            if is_stochastic(scm.mechanisms[node]) and not _constant(interventions.get(node)):
                raise ValueError(
                    f"node {node!r} ({type(scm.mechanisms[node]).__name__}) lies downstream of "
                    "the intervention and abducts its noise by sampling a posterior; pass "
                    "key=jax.random.key(seed)"
                )
    cf = _run(
        _counterfactual_jit,
        (scm, _as_obs(observations), interventions, key),
        targets,
        num_samples,
        chunk_size,
    )
    out = {}
    for node in scm.order:
        if node in cf:
            out[node] = cf[node]
        else:
            x = observations[node]
            x = x if isinstance(x, jax.Array) else jnp.asarray(x)
            out[node] = x if num_samples is None else jnp.broadcast_to(x, (num_samples, *x.shape))
    return out


# ----------------------------------------------------------------------------------------------
# log_prob


@lean_jit
def _log_prob_jit(scm, obs, key, per_node, bound, num_samples):
    _check_observations(scm, obs)
    obs = _cast_obs(scm, obs)
    terms = {}
    for node in scm.order:
        mech = scm.mechanisms[node]
        pa = {p: obs[p] for p in mech.parents}
        iv = scm.interventions.get(node)
        if iv is not None:
            terms[node] = iv.log_prob(node, mech, obs[node], pa)
        elif mech.exact_likelihood:
            terms[node] = jax.vmap(mech.log_prob)(obs[node], pa)
        else:
            keys = jax.random.split(_node_key(key, scm, node), obs[node].shape[0])
            terms[node] = jax.vmap(lambda v, p, k, m=mech: m.log_prob_bound(v, p, k, num_samples))(
                obs[node], pa, keys
            )
    if per_node:
        return terms
    return sum(terms.values())


def log_prob(
    scm: SCM,
    observations: Mapping[str, Array],
    key: PRNGKeyArray | None = None,
    *,
    per_node: bool = False,
    bound: bool = False,
    num_samples: int = 1,
) -> Float[Array, " n"] | Values:
    """Log-likelihood of each unit, ``sum_k log p(x_k | pa_k)`` (or a lower bound on it).

    Exact mechanisms (root, additive, invertible, Gumbel-max) give their exact density. A
    mechanism whose likelihood is only bounded (a VAE image: ``exact_likelihood = False``)
    needs ``bound=True`` and a ``key``: it then gives its bound (an ELBO with ``num_samples``
    draws, :meth:`Mechanism.log_prob_bound`), and the total is a lower bound on the
    log-likelihood. Training any SCM is then ``-mean(log_prob(scm, batch, key, bound=True))``.

    On an intervened model, hard-intervened nodes contribute no factor for units observed at
    the intervened value and ``-inf`` for units observed at another value (truncated
    factorisation); shifted or scaled nodes are handled by a change of variables.

    Args:
        scm: the model.
        observations: ``{node: array (n, *node_shape)}`` for every node.
        key: a ``jax.random`` key for bounded nodes' Monte Carlo draws.
        per_node: return ``{node: (n,)}`` terms instead of their sum.
        bound: allow bounded nodes (their terms are lower bounds).
        num_samples: Monte Carlo draws per unit of each bounded node's estimate.

    Returns:
        Array of shape ``(n,)`` in nats (mixed densities/probabilities for discrete nodes).

    Raises:
        ValueError: naming a bounded node when ``bound`` is False or ``key`` is missing, and
            for observations that do not fit the model (see :func:`counterfactual`).
    """
    if not scm.acyclic:
        raise ValueError(
            f"log_prob is defined for acyclic SCMs; {type(scm).__name__} values are equilibria "
            "whose density also needs det(I - dF/dx)"
        )
    key = _as_key(key)
    num_samples = _count(num_samples, "num_samples")
    for node in scm.order:
        mech = scm.mechanisms[node]
        if mech.exact_likelihood or node in scm.interventions:
            continue
        if not bound:
            raise ValueError(
                f"node {node!r} ({type(mech).__name__}) has no exact likelihood, only a lower "
                "bound; pass bound=True (and a key) to get the bound for it, exact terms for "
                "the other nodes"
            )
        if key is None:
            raise ValueError(
                f"node {node!r} ({type(mech).__name__}) estimates its bound by sampling; pass "
                "key=jax.random.key(seed)"
            )
    return _run(
        _log_prob_jit,
        (scm, _as_obs(observations), key),
        bool(per_node),
        bool(bound),
        num_samples,
    )
