"""Objectives on outcomes: what a policy should achieve, per unit or over a population.

A :class:`Problem` ties a model, the covariates a policy reads, and an ``outcome`` written for
**one unit** (like a mechanism): ``outcome(values, theta, lam) -> scalar`` to minimise, where
``values`` are the unit's node values under the policy's interventions, ``theta`` the
policy's bounded parameters for the unit and ``lam`` its trade-off weights. An optional
``constraint(values, theta, lam) -> scalar`` is held on average over the population:
``mean g <= 0`` (e.g. ``g = dose - budget``).

Two levels:

* ``"unit"`` — each observed unit's counterfactual: its noise is abducted **once**
  (:func:`prepare`, with :func:`jcausal.abduct`), then every training step only predicts under
  the policy (``SCM.predict``; for an :class:`~jcausal.EquilibriumSCM`, its equilibrium solve
  with implicit gradients, started at the observation);
* ``"population"`` — the interventional distribution: fresh noise is drawn every step
  (``SCM.sample_noise``), the units' unintervened values are predicted, the policy reads their
  covariates and the intervened values are predicted from the same noise.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..scm import SCM, EquilibriumSCM, abduct
from .module import Policy

LEVELS = ("unit", "population")

# Signatures of the (problem, policy, data) that passed a check. A check traces the model once
# (about 0.3 s for an equilibrium economy: more than a hundred training steps), and its verdict
# depends only on the structure, shapes and dtypes, so repeated train/evolve calls skip it.
_CHECKED: OrderedDict[Any, None] = OrderedDict()
_CHECKED_SIZE = 64


def _signature(*trees: Any) -> Any:
    """A hashable key of ``trees``' structure, leaf shapes and dtypes (None if unhashable)."""
    leaves, treedef = jax.tree_util.tree_flatten(trees)
    parts = []
    for x in leaves:
        if isinstance(x, jax.Array | np.ndarray | jax.ShapeDtypeStruct):
            parts.append((tuple(x.shape), str(x.dtype)))
        else:
            parts.append((type(x), x))
    sig = (treedef, tuple(parts))
    try:
        hash(sig)
    except TypeError:  # an unhashable static field or leaf: check every time
        return None
    return sig


def _memo_check(check: Callable) -> Callable:
    """Run ``check(self, policy, data)`` once per signature; a failing one is not remembered."""

    @functools.wraps(check)
    def wrapped(self, policy, data=None):
        sig = _signature(type(self), self, policy, data)
        if sig is not None and sig in _CHECKED:
            _CHECKED.move_to_end(sig)
            return
        check(self, policy, data)
        if sig is not None:
            _CHECKED[sig] = None
            while len(_CHECKED) > _CHECKED_SIZE:
                _CHECKED.popitem(last=False)

    return wrapped


class Problem(eqx.Module):
    """A policy-learning problem: model, covariates, outcome and constraint.

    Args:
        scm: the unintervened model (acyclic or :class:`~jcausal.EquilibriumSCM`).
        outcome: ``outcome(values, theta, lam) -> scalar`` for one unit, to minimise
            (``values``: ``{node: value}``, ``theta``: ``{node: (size,)}``, ``lam``: ``(k,)`` or
            ``None``).
        covariates: nodes whose observed values the policy reads (flattened and concatenated
            per unit, in this order); none may descend from an acted node.
        constraint: optional ``g(values, theta, lam) -> scalar`` per unit; the policy must keep
            ``mean g <= 0`` over the population.
        level: ``"unit"`` (counterfactual) or ``"population"`` (interventional).
        constants: optional pytree of arrays handed to ``outcome`` and ``constraint`` as a
            fourth argument (``outcome(values, theta, lam, constants)``): numbers of the
            problem that are data, not code, so that problems of several models with the same
            structure stack into one (:class:`Stacked`).

    Raises:
        ValueError: an unknown level or covariate, or a non-callable outcome.
    """

    scm: SCM
    outcome: Callable = eqx.field(static=True)
    constraint: Callable | None = eqx.field(static=True)
    covariates: tuple[str, ...] = eqx.field(static=True)
    level: str = eqx.field(static=True)
    constants: Any

    def __init__(
        self,
        scm: SCM,
        outcome: Callable,
        covariates: Sequence[str] = (),
        *,
        constraint: Callable | None = None,
        level: str = "unit",
        constants: Any = None,
    ):
        if not isinstance(scm, SCM):
            raise ValueError(f"Problem needs an SCM, got {type(scm).__name__}")
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        if not callable(outcome):
            raise ValueError("outcome must be a function outcome(values, theta, lam) -> scalar")
        if constraint is not None and not callable(constraint):
            raise ValueError("constraint must be a function g(values, theta, lam) -> scalar")
        covariates = (covariates,) if isinstance(covariates, str) else tuple(covariates)
        unknown = [c for c in covariates if c not in scm.mechanisms]
        if unknown:
            raise ValueError(f"unknown covariates {unknown}; known nodes: {list(scm.order)}")
        self.scm, self.outcome, self.constraint = scm, outcome, constraint
        self.covariates, self.level = covariates, level
        self.constants = (
            None if constants is None else jax.tree_util.tree_map(jnp.asarray, constants)
        )

    # ------------------------------------------------------------------------------------------

    def features(self, values: Mapping[str, Array]) -> Float[Array, "n d"] | None:
        """The covariates of ``n`` units as one ``(n, d)`` array (``None`` if there are none)."""
        if not self.covariates:
            return None
        cols = [
            jnp.asarray(values[c]).reshape(jnp.shape(values[c])[0], -1) for c in self.covariates
        ]
        return jnp.concatenate([c.astype(jnp.result_type(float)) for c in cols], axis=1)

    @_memo_check
    def check(self, policy: Policy, data: Mapping[str, Any] | None = None) -> None:
        """Refuse a policy or data that do not fit (named ``ValueError``), before training.

        Checks the actions against the model, the covariates (pre-treatment, right count) and
        that ``outcome`` and ``constraint`` return one scalar per unit. The verdict depends
        only on structure, shapes and dtypes, so a passed check is remembered and a repeated
        call with the same signature returns at once.
        """
        if not isinstance(policy, Policy):
            raise ValueError(f"expected a jcausal.policy.Policy, got {type(policy).__name__}")
        policy.check(self.scm, self.covariates)
        drawn = data is None  # population level: check on one abstract fresh unit
        if drawn:
            data = jax.eval_shape(lambda: self.draw(jax.random.key(0), 1))
        feats = data["features"]
        d = 0 if feats is None else feats.shape[1]
        # A policy that reads no features (a constant, or λ only) ignores the covariates.
        if policy.num_features and d != policy.num_features:
            raise ValueError(
                f"the covariates {list(self.covariates)} give {d} features per unit, the policy "
                f"reads {policy.num_features}"
            )
        lam = None if not policy.num_lambdas else jnp.ones((1, policy.num_lambdas))
        f, g, _ = jax.eval_shape(
            lambda: self.terms(
                policy, self.draw(jax.random.key(0), 1) if drawn else _first(data), lam
            )
        )
        for name, out in (("outcome", f), ("constraint", g)):
            if out is not None and out.shape != (1,):
                raise ValueError(
                    f"the {name} must return a scalar per unit; it returned shape "
                    f"{out.shape[1:]} (reduce it, e.g. with jnp.sum)"
                )

    def prepare(
        self, observations: Mapping[str, Array], key: PRNGKeyArray | None = None
    ) -> dict[str, Any]:
        """Unit level: abduct each unit's noise once. Returns the training data pytree.

        Args:
            observations: ``{node: (n, *shape)}`` for every node.
            key: for mechanisms whose abduction samples a posterior (one draw is kept).

        Returns:
            ``{"obs", "noise", "features"}`` with a leading unit axis ``n``.
        """
        obs = {k: jnp.asarray(v) for k, v in observations.items()}
        feats = self.features(obs)
        if feats is not None and not bool(jnp.all(jnp.isfinite(feats))):
            bad = [c for c in self.covariates if not bool(jnp.all(jnp.isfinite(obs[c])))]
            raise ValueError(
                f"covariates {bad} contain NaN or infinite values; impute or drop those units"
            )
        noise = abduct(self.scm, obs, key)
        return {"obs": obs, "noise": noise, "features": feats}

    def draw(self, key: PRNGKeyArray, n: int) -> dict[str, Any]:
        """Population level: ``n`` fresh units (noise and unintervened values)."""
        noise = self.scm.sample_noise(key, n)
        obs, _ = _predict(self.scm, noise, {}, self.scm.order, {}, None)
        return {"obs": obs, "noise": noise, "features": self.features(obs)}

    def terms(
        self, policy: Policy, data: Mapping[str, Any], lam: Float[Array, "n k"] | None
    ) -> tuple[Float[Array, " n"], Float[Array, " n"] | None, Array]:
        """Per-unit outcome, constraint and whether every equilibrium solve converged.

        Args:
            policy: the policy.
            data: ``{"obs", "noise", "features"}`` of ``n`` units (:meth:`prepare`/:meth:`draw`).
            lam: ``(n, k)`` trade-off weights (or ``None``).

        Returns:
            ``(f (n,), g (n,) or None, converged ())``.
        """
        obs, noise = data["obs"], data["noise"]
        n = jax.tree_util.tree_leaves(obs)[0].shape[0]
        theta = policy.parameters(data["features"], lam, n)
        ivs = policy.interventions(self.scm, theta)
        acted = tuple(ivs)
        desc = self.scm.descendants(*acted)
        targets = tuple(k for k in self.scm.order if k in desc)
        values, ok = _predict(self.scm, noise, obs, targets, ivs, obs)
        # One λ for every unit is passed unmapped, not broadcast over the units: a broadcast
        # copy is not split over a mesh like the units' values are, and vmap refuses the mix.
        if lam is None or lam.shape[0] == 1:
            lam_u, lam_axis = (None if lam is None else lam[0]), None
        else:
            lam_u, lam_axis = jnp.broadcast_to(lam, (n, policy.num_lambdas)), 0
        axes = (0, 0, lam_axis)
        args = (values, theta, lam_u)
        if self.constants is not None:
            axes, args = (*axes, None), (*args, self.constants)
        f = jax.vmap(self.outcome, in_axes=axes)(*args)
        g = None
        if self.constraint is not None:
            g = jax.vmap(self.constraint, in_axes=axes)(*args)
        return f, g, ok


class Stacked(eqx.Module):
    """Problems of several models with one structure, trained as one (e.g. one per region).

    The models differ only in their arrays (e.g. each region's ``A`` and demand), the outcome
    in its ``constants``. The leading axis of the data is the model (``R``); each model's
    units are evaluated under the one policy, which tells the models apart by their
    ``features``. :func:`jcausal.policy.train` batches over the models.

    Args:
        problems: unit-level :class:`Problem` s with the same structure (same functions,
            nodes, shapes; arrays may differ).

    Raises:
        ValueError: fewer than one problem, a population-level one, or different structures.
    """

    problems: Problem

    def __init__(self, problems: Sequence[Problem]):
        problems = list(problems)
        if not problems or not all(isinstance(p, Problem) for p in problems):
            raise ValueError("Stacked needs a non-empty sequence of Problem")
        if any(p.level != "unit" for p in problems):
            raise ValueError("Stacked problems must be unit-level (observed units of each model)")
        defs = {jax.tree_util.tree_structure(p) for p in problems}
        if len(defs) != 1:
            raise ValueError(
                "Stacked problems must share one structure (same outcome function, nodes and "
                "shapes; numbers in constants, not in closures)"
            )
        parts = [eqx.partition(p, eqx.is_array) for p in problems]
        rest = parts[0][1]
        if any(not eqx.tree_equal(r, rest) for _, r in parts[1:]):
            raise ValueError(
                "Stacked problems must share every setting that is not an array (solver "
                "tolerances, bounds, ...)"
            )
        arrays = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[a for a, _ in parts])
        self.problems = eqx.combine(arrays, rest)

    @property
    def level(self) -> str:
        """Always ``"unit"``."""
        return "unit"

    def model(self, i: int) -> Problem:
        """The ``i``-th problem."""
        return jax.tree_util.tree_map(lambda x: x[i] if eqx.is_array(x) else x, self.problems)

    @property
    def constraint(self) -> Callable | None:
        """The problems' constraint function."""
        return self.problems.constraint

    @property
    def covariates(self) -> tuple[str, ...]:
        """The problems' covariates."""
        return self.problems.covariates

    def prepare(
        self, observations: Sequence[Mapping[str, Array]], features: Array
    ) -> dict[str, Any]:
        """Abduct each model's units once; ``features`` ``(R, d)`` describe each model.

        Args:
            observations: one ``{node: (n, *shape)}`` per model (same ``n``).
            features: ``(R, d)`` what the policy reads of each model (shared by its units).
        """
        feats = jnp.asarray(features)
        if feats.ndim != 2 or feats.shape[0] != len(observations):
            raise ValueError(
                f"features must have shape (R, d) with R = {len(observations)} models, got "
                f"{feats.shape}"
            )
        if not bool(jnp.all(jnp.isfinite(feats))):
            raise ValueError("model features contain NaN or infinite values")
        parts = []
        for i, obs in enumerate(observations):
            parts.append(self.model(i).prepare(obs))
        data = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[
            {"obs": d["obs"], "noise": d["noise"]} for d in parts])  # fmt: skip
        return {**data, "features": feats}

    @_memo_check
    def check(self, policy: Policy, data: Mapping[str, Any] | None = None) -> None:
        """As :meth:`Problem.check`, for the first model (remembered likewise)."""
        if data is None:
            raise ValueError("Stacked.check needs the data of Stacked.prepare")
        one = self.model(0)
        policy.check(one.scm, one.covariates)
        d = data["features"].shape[1]
        if policy.num_features != d:
            raise ValueError(
                f"the models have {d} features each, the policy reads {policy.num_features}"
            )
        lam = None if not policy.num_lambdas else jnp.ones((1, policy.num_lambdas))
        f, g, _ = jax.eval_shape(lambda: self.terms(policy, data, lam))
        for name, out in (("outcome", f), ("constraint", g)):
            if out is not None and out.ndim != 1:
                raise ValueError(f"the {name} must return a scalar per unit")

    def terms(self, policy: Policy, data: Mapping[str, Any], lam: Array | None):
        """Per-unit outcome ``(R·n,)``, constraint and converged flag over every model."""

        def one(problem, obs, noise, feats):
            n = jax.tree_util.tree_leaves(obs)[0].shape[0]
            d = {"obs": obs, "noise": noise, "features": jnp.broadcast_to(feats, (n, feats.size))}
            return problem.terms(policy, d, lam)

        f, g, ok = eqx.filter_vmap(one, in_axes=(eqx.if_array(0), 0, 0, 0))(
            self.problems, data["obs"], data["noise"], data["features"]
        )
        return f.reshape(-1), None if g is None else g.reshape(-1), jnp.all(ok)


def _first(data):
    return jax.tree_util.tree_map(lambda x: x[:1], data)


def _predict(scm, noise, obs, targets, ivs, init):
    """Values of every node with ``targets`` predicted under ``ivs`` (and a converged flag)."""
    if not targets:
        return dict(obs), jnp.asarray(True)
    if isinstance(scm, EquilibriumSCM):
        new, report = scm.solve_targets(noise, obs, targets, ivs, init, throw=False)
        ok = jnp.asarray(True) if report is None else jnp.all(report.converged)
    else:
        new, ok = scm.predict(noise, obs, targets, ivs), jnp.asarray(True)
    return {**obs, **new}, ok


__all__ = ["LEVELS", "Problem", "Stacked"]
