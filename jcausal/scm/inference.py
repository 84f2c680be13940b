"""Sampling, abduction, counterfactuals and likelihoods for acyclic SCMs.

Each public function validates its input in plain Python (names, and values when they are
concrete), then runs one compiled call (``eqx.filter_jit``) over the whole batch. Shape and dtype
checks run while tracing, so they cost nothing on later calls. Under a user's own ``jit``,
``vmap`` or ``grad`` everything traces through unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from . import graph
from ._jit import lean_jit
from .interventions import Hard, Intervention, check_interventions
from .mechanisms import Given, is_stochastic
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
            kind = "floating-point" if want_float else "integer"
            raise ValueError(
                f"node {node!r}: observations have dtype {dtype}, expected {kind} "
                f"(the model produces {spec.dtype})"
            )
    return n


def _check_concrete(scm: SCM, obs: Mapping[str, Array], interventions) -> None:
    """Value checks that need concrete numbers; skipped for traced inputs."""
    for node in scm._checked:
        mech = scm.mechanisms[node]
        x = obs.get(node) if isinstance(obs, Mapping) else None
        if x is not None and not isinstance(x, jax.core.Tracer):
            type(mech).check_values(mech, node, np.asarray(x))
        iv = (interventions or {}).get(node)
        if iv is not None:
            type(iv).check_values(iv, node, mech)


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
    out = {}
    for node in scm.order:
        x = jnp.asarray(obs[node])
        if scm.mechanisms[node].discrete:
            x = x.astype(jnp.int32)
        out[node] = x
    return out


def _abduct_nodes(
    scm: SCM, obs: Values, key: PRNGKeyArray | None, nodes: tuple[str, ...]
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
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be a positive number of units, got {n}")
    return _sample_jit((_as_key(key), scm), n, bool(return_noise))


# ----------------------------------------------------------------------------------------------
# abduct


@lean_jit
def _abduct_jit(scm, obs, key, nodes):
    _check_observations(scm, obs)
    return _abduct_nodes(scm, _cast_obs(scm, obs), key, nodes)


def abduct(scm: SCM, observations: Mapping[str, Array], key: PRNGKeyArray | None = None) -> Values:
    """Infer each unit's exogenous noise from full observations (step 1 of a counterfactual).

    Exact for root, additive-noise and invertible mechanisms; one posterior sample for
    Gumbel-max and amortized mechanisms (these need ``key``).

    Args:
        scm: the unintervened model.
        observations: ``{node: array (n, *node_shape)}`` for every node.
        key: a ``jax.random`` key; required when some mechanism samples its posterior.

    Returns:
        ``{node: noise array (n, *noise_shape)}``.
    """
    _require_unintervened(scm, "abduct")
    _check_concrete(scm, observations, None)
    return _abduct_jit((scm, _as_obs(observations), _as_key(key)), scm.order)


# ----------------------------------------------------------------------------------------------
# counterfactual


@lean_jit
def _counterfactual_jit(scm, obs, interventions, key, targets, num_samples):
    _check_observations(scm, obs)
    obs = _cast_obs(scm, obs)
    # An intervened node whose parents keep their observed values and whose abduction is exact
    # would be abducted and pushed forward again only to get back its observation: use the
    # observation directly (exact, and two evaluations of its mechanism cheaper).
    given = {}
    for t in targets:
        iv, mech = interventions.get(t), scm.mechanisms[t]
        if (
            iv is not None
            and iv.uses_base_only
            and mech.exact_abduction
            and not any(p in targets for p in mech.parents)
        ):
            given[t] = Given(mech.parents)
    model = scm.with_mechanisms(given) if given else scm
    # Hard-intervened nodes ignore their own noise, so it is never abducted.
    need = tuple(
        t for t in targets if not isinstance(interventions.get(t), Hard) and t not in given
    )

    def one(k):
        noise = _abduct_nodes(scm, obs, k, need)
        noise.update({t: obs[t] for t in given})
        # Observed values serve as the parents of targets and as the initial guess of an
        # equilibrium solve (the counterfactual equilibrium is usually near the factual one).
        return model.predict(noise, obs, targets, interventions, init=obs)

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

    Returns:
        ``{node: array (n, *node_shape)}``, or ``(num_samples, n, *node_shape)`` per node when
        ``num_samples`` is given.

    Raises:
        ValueError: naming the node, for unknown nodes, missing observations, shape or dtype
            mismatches, out-of-range categories, or a missing key.
    """
    _require_unintervened(scm, "counterfactual")
    interventions = check_interventions(interventions, scm.mechanisms)
    _check_concrete(scm, observations, interventions)
    if num_samples is not None:
        num_samples = int(num_samples)
        if num_samples < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
    targets = _targets(scm._parents, tuple(sorted(interventions)))
    key = _as_key(key)
    if key is None:
        for node in targets:
            if is_stochastic(scm.mechanisms[node]) and not isinstance(
                interventions.get(node), Hard
            ):
                raise ValueError(
                    f"node {node!r} ({type(scm.mechanisms[node]).__name__}) lies downstream of "
                    "the intervention and abducts its noise by sampling a posterior; pass "
                    "key=jax.random.key(seed)"
                )
    cf = _counterfactual_jit((scm, _as_obs(observations), interventions, key), targets, num_samples)
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
def _log_prob_jit(scm, obs, per_node):
    _check_observations(scm, obs)
    obs = _cast_obs(scm, obs)
    terms = {}
    for node in scm.order:
        mech = scm.mechanisms[node]
        pa = {p: obs[p] for p in mech.parents}
        iv = scm.interventions.get(node)
        if iv is None:
            terms[node] = jax.vmap(mech.log_prob)(obs[node], pa)
        else:
            terms[node] = iv.log_prob(node, mech, obs[node], pa)
    if per_node:
        return terms
    return sum(terms.values())


def log_prob(
    scm: SCM, observations: Mapping[str, Array], *, per_node: bool = False
) -> Float[Array, " n"] | Values:
    """Log-likelihood of each unit, ``sum_k log p(x_k | pa_k)``.

    Every mechanism must have a tractable density (root, additive, invertible, Gumbel-max). On an
    intervened model, hard-intervened nodes contribute no factor (truncated factorisation) and
    shifted or scaled nodes are handled by a change of variables.

    Args:
        scm: the model.
        observations: ``{node: array (n, *node_shape)}`` for every node.
        per_node: return ``{node: (n,)}`` terms instead of their sum.

    Returns:
        Array of shape ``(n,)`` in nats (mixed densities/probabilities for discrete nodes).
    """
    if not scm.acyclic:
        raise ValueError(
            f"log_prob is defined for acyclic SCMs; {type(scm).__name__} values are equilibria "
            "whose density also needs det(I - dF/dx)"
        )
    _check_concrete(scm, observations, None)
    return _log_prob_jit((scm, _as_obs(observations)), bool(per_node))
