"""Training a policy with the one :func:`jcausal.train.fit`, batched over units and λ.

Every step draws a batch of units (``fit``'s batching of the abducted data, or fresh units at
the population level) and ``num_lambdas`` trade-off weights from a :class:`LogUniform` or
:class:`Uniform` range (or takes every weight of a :class:`Grid`), evaluates every (λ, unit)
pair in one ``vmap`` and minimises the mean outcome. A constraint ``mean g <= 0`` (mean over
units) is handled by

* :class:`Penalty` — ``+ weight/2 · max(0, ḡ)²`` (a soft constraint: some violation remains);
* :class:`AugmentedLagrangian` — rounds of ``fit`` on
  ``f + ρ/2 · max(0, ḡ + ν/ρ)² - ν²/(2ρ)`` with the multiplier update
  ``ν <- max(0, ν + ρ ḡ)`` between rounds (ḡ on all units), until ``max(0, ḡ) <= tol`` and
  ``|max(ḡ, -ν/ρ)| <= tol`` (the stated tolerance, in the constraint's units: feasible, and
  the multiplier settled) or the rounds run out
  (:attr:`PolicyFit.feasible` says which). Each round is one ``fit`` call (the compiled program
  is reused; the optimiser's moments restart each round).

A policy conditioned on λ must satisfy the constraint **at every λ**, not on average over the
trade-offs (a policy could otherwise overspend at some λ and underspend at others): ``ḡ`` is
then the mean over units at each λ, the penalty is taken per λ (and averaged over the λ of
the step), and the augmented Lagrangian keeps one multiplier per λ of a :class:`Grid` (it
needs one: a multiplier per point of a continuous range is not defined). Feasibility and the
reported violation are the worst over the λ checked (the grid, or the λ drawn for the check).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..train import History, fit, frozen
from .module import Policy
from .problem import Problem, Stacked


class LogUniform(eqx.Module):
    """Trade-off weights drawn log-uniformly on ``[lo, hi]``, 0 with probability ``zero``."""

    lo: float = eqx.field(static=True, converter=float)
    hi: float = eqx.field(static=True, converter=float)
    zero: float = eqx.field(static=True, default=0.0, converter=float)

    def __check_init__(self):
        if not (0 < self.lo < self.hi < math.inf) or not 0 <= self.zero < 1:
            raise ValueError(f"LogUniform needs 0 < lo < hi < inf and zero in [0, 1): {self}")

    def __call__(self, key: PRNGKeyArray, shape: tuple[int, ...]) -> Array:
        k1, k2 = jax.random.split(key)
        lam = jnp.exp(
            jax.random.uniform(k1, shape, minval=math.log(self.lo), maxval=math.log(self.hi))
        )
        return jnp.where(jax.random.uniform(k2, shape) < self.zero, 0.0, lam)


class Uniform(eqx.Module):
    """Trade-off weights drawn uniformly on ``[lo, hi]``."""

    lo: float = eqx.field(static=True, converter=float)
    hi: float = eqx.field(static=True, converter=float)

    def __check_init__(self):
        if not (-math.inf < self.lo < self.hi < math.inf):
            raise ValueError(f"Uniform needs finite lo < hi: {self}")

    def __call__(self, key: PRNGKeyArray, shape: tuple[int, ...]) -> Array:
        return jax.random.uniform(key, shape, minval=self.lo, maxval=self.hi)


class Grid(eqx.Module):
    """The same trade-off weights at every step: all ``L`` rows of ``values``.

    Args:
        values: ``(L,)`` or ``(L, k)`` finite weights (``k``: the policy's ``num_lambdas``).

    With a constraint, :func:`train` keeps one multiplier per row (the constraint then holds at
    each of these λ).

    Raises:
        ValueError: empty or non-finite values, or more than two dimensions.
    """

    values: Float[Array, "L k"]

    def __init__(self, values: Float[ArrayLike, "..."]):
        v = np.asarray(values, float)
        if v.ndim == 1:
            v = v[:, None]
        if v.ndim != 2 or v.shape[0] < 1 or v.shape[1] < 1 or not np.all(np.isfinite(v)):
            raise ValueError(
                f"Grid needs finite values of shape (L,) or (L, k) with L >= 1, got shape "
                f"{np.shape(values)}"
            )
        self.values = jnp.asarray(v, jnp.result_type(float))

    def __call__(self, key: PRNGKeyArray, shape: tuple[int, ...]) -> Array:
        if tuple(shape) != self.values.shape:
            raise ValueError(f"Grid holds {self.values.shape} weights, {shape} were asked for")
        return self.values


@dataclasses.dataclass(frozen=True)
class Penalty:
    """Quadratic penalty ``weight/2 · max(0, mean g)²`` (``weight`` > 0), per λ (see above)."""

    weight: float = 100.0


@dataclasses.dataclass(frozen=True)
class AugmentedLagrangian:
    """Augmented Lagrangian rounds (see the module docstring).

    Attributes:
        rho: penalty parameter ``ρ`` > 0.
        tol: accepted violation ``max(0, mean g)``, in the constraint's units (at every λ of
            the grid for a λ-conditioned policy).
        rounds: most rounds; the steps are split evenly among them.
    """

    rho: float = 10.0
    tol: float = 1e-3
    rounds: int = 10


@dataclasses.dataclass
class PolicyFit:
    """What :func:`train` did.

    Attributes:
        histories: one :class:`jcausal.History` per ``fit`` call (one per round).
        multiplier: final Lagrange multiplier ``ν`` (0 without a constraint or with Penalty);
            for a λ-conditioned policy on a :class:`Grid`, ``(L,)``: one per λ.
        violation: final ``mean g`` over all units, the largest over the λ checked (the
            grid's, or those drawn for the check), or nan.
        feasible: ``violation <= tol`` (True without a constraint).
        steps: optimisation steps run.
        seconds: wall time (compilation included).
        violations: ``(L,)`` ``mean g`` at each λ checked (``None`` without a constraint or
            without λ).
    """

    histories: list[History]
    multiplier: float | np.ndarray
    violation: float
    feasible: bool
    steps: int
    seconds: float
    violations: np.ndarray | None = None


def _lams(params: dict, key: PRNGKeyArray, policy: Policy) -> Array | None:
    if not policy.num_lambdas:
        return None
    count = params["count"]
    return params["sampler"](key, (count, policy.num_lambdas))


def _policy_loss(params: dict, batch: Any, key: PRNGKeyArray) -> tuple[Array, dict[str, Array]]:
    # Module level, so that fit reuses its compiled program across rounds and calls.
    problem: Problem = params["problem"]
    policy: Policy = params["policy"]
    k_data, k_lam = jax.random.split(key)
    if "data" in params:  # stacked models: every model's units, in the problems' order
        batch = params["data"]
    elif batch is None:  # population level: fresh units every step
        batch = problem.draw(k_data, params["units"])
    lams = _lams(params, k_lam, policy)
    if lams is None:
        f, g, ok = problem.terms(policy, batch, None)
    else:
        f, g, ok = jax.vmap(lambda lam: problem.terms(policy, batch, lam[None]))(lams)
    loss = jnp.mean(f)
    aux = {"outcome": loss, "converged": jnp.all(ok)}
    if g is not None:
        # At every λ (g: (λ, units)), not on average over the trade-offs.
        gbar = jnp.mean(g) if lams is None else jnp.mean(g, axis=-1)
        nu, rho = params["nu"], params["rho"]
        term = rho / 2 * jnp.maximum(0.0, gbar + nu / rho) ** 2 - nu**2 / (2 * rho)
        loss = loss + jnp.mean(term)
        aux["constraint"] = jnp.max(gbar)
    return loss, aux


@functools.lru_cache(maxsize=16)
def _default_optimizer(lr: float, steps: int) -> optax.GradientTransformation:
    # One object per setting: fit caches its compiled program on the optimiser object, so
    # repeated train calls with the same lr and steps compile once. decay_steps is a float
    # from the start: optax's schedule turns an int into a float in its closure on first use,
    # which changed the optimiser's fingerprint between rounds and refused resuming them.
    return optax.adam(optax.cosine_decay_schedule(lr, float(steps), alpha=1e-2))


def _check_count(name: str, v: Any, low: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
    return int(v)


def train(
    problem: Problem | Stacked,
    policy: Policy,
    data: Mapping[str, Any] | None = None,
    *,
    steps: int,
    key: PRNGKeyArray,
    lr: float = 1e-2,
    optimizer: optax.GradientTransformation | None = None,
    batch_size: int | None = None,
    lambdas: LogUniform | Uniform | Grid | None = None,
    num_lambdas: int | None = None,
    constraint: Penalty | AugmentedLagrangian | None = None,
    eval_data: Any = None,
    eval_fn: Callable | None = None,
    eval_every: int | None = None,
    progress: bool | Callable[[int], None] = False,
    checkpoint_dir: str | None = None,
    sharding: Any = None,
) -> tuple[Policy, PolicyFit]:
    """Learn ``policy`` for ``problem`` by gradient descent through the model.

    Args:
        problem: the objective (:class:`Problem`).
        policy: the initial policy (its network is trained, its bounds and normalisation not).
        data: unit level: :meth:`Problem.prepare`'s output (``n`` units); ``None`` at the
            population level (``batch_size`` fresh units per step).
        steps: optimisation steps (in all).
        key: ``jax.random`` key (batches, λ draws, population noise).
        lr: Adam step size (cosine-decayed to ``lr/100``) when ``optimizer`` is not given.
        optimizer: an optax transformation replacing the default.
        batch_size: units per step (default: all ``n``; required at the population level).
        lambdas: the range λ is drawn from, or a :class:`Grid` of λ used at every step
            (required when the policy reads λ).
        num_lambdas: λ values drawn per step (each paired with every unit of the batch);
            default 16, or the grid's ``L`` (which it must equal if given).
        constraint: :class:`Penalty` or :class:`AugmentedLagrangian` for ``problem.constraint``
            (default ``AugmentedLagrangian()`` when there is one). With a λ-conditioned
            policy it holds at every λ; the augmented Lagrangian then needs a :class:`Grid`.
        eval_data: held-out data for ``eval_fn``, as in :func:`jcausal.train.fit`.
        eval_fn: ``eval_fn(params, eval_data, key) -> dict`` (``params["policy"]`` is the
            policy), as in :func:`jcausal.train.fit`.
        eval_every: evaluation period in steps.
        progress: as in :func:`jcausal.train.fit`.
        checkpoint_dir: checkpoints of the run (round ``r`` in ``checkpoint_dir/round_r``).
        sharding: a mesh for data-parallel batches, as in :func:`jcausal.train.fit`.

    Returns:
        ``(trained policy, PolicyFit)``.

    Raises:
        ValueError: a policy or data that do not fit the problem, a missing λ range, a grid
            that does not fit the policy, an augmented Lagrangian on sampled λ, or bad counts.
    """
    t0 = time.perf_counter()
    steps = _check_count("steps", steps)
    on_grid = isinstance(lambdas, Grid)
    if on_grid:
        L, k = lambdas.values.shape
        if num_lambdas is not None and num_lambdas != L:
            raise ValueError(f"num_lambdas={num_lambdas!r} but the Grid holds {L} weights")
        if policy.num_lambdas and k != policy.num_lambdas:
            raise ValueError(
                f"the Grid's weights have {k} entries each, the policy reads {policy.num_lambdas}"
            )
        num_lambdas = L
    num_lambdas = _check_count("num_lambdas", 16 if num_lambdas is None else num_lambdas)
    problem.check(policy, data)
    if policy.num_lambdas and lambdas is None:
        raise ValueError("this policy reads trade-off weights: pass lambdas=LogUniform(lo, hi)")
    if problem.level == "population":
        if data is not None:
            raise ValueError("a population-level problem draws its own units: pass data=None")
        batch_size = _check_count("batch_size", batch_size)
        units = batch_size
    else:
        if data is None:
            raise ValueError("a unit-level problem needs data=problem.prepare(observations)")
        n = jax.tree_util.tree_leaves(data["obs"])[0].shape[0]
        batch_size = n if batch_size is None else _check_count("batch_size", batch_size)
        units = batch_size
    if problem.constraint is None:
        constraint, rounds = None, 1
    else:
        constraint = AugmentedLagrangian() if constraint is None else constraint
        if isinstance(constraint, Penalty):
            rounds = 1
        elif isinstance(constraint, AugmentedLagrangian):
            rounds = _check_count("rounds", constraint.rounds)
        else:
            raise ValueError(
                f"constraint must be Penalty or AugmentedLagrangian, got {constraint!r}"
            )
        if isinstance(constraint, AugmentedLagrangian) and policy.num_lambdas and not on_grid:
            raise ValueError(
                "a λ-conditioned policy must meet the constraint at every λ, with one multiplier "
                "per λ: train it on lambdas=jp.Grid(values) with the AugmentedLagrangian, or use "
                "constraint=jp.Penalty(weight) (a penalty per λ drawn)"
            )
    per_round = max(1, steps // rounds)
    tx = optimizer or _default_optimizer(float(lr), per_round)
    rho = constraint.weight if isinstance(constraint, Penalty) else getattr(constraint, "rho", 1.0)
    # One multiplier per λ of the grid (the constraint holds at each), else one.
    alm = isinstance(constraint, AugmentedLagrangian)
    nu = np.zeros(num_lambdas) if policy.num_lambdas and alm else 0.0
    params = {
        "policy": policy,
        "problem": problem,
        "sampler": lambdas if lambdas is not None else Uniform(0.0, 1.0),
        "count": num_lambdas,
        "units": units,
        "nu": frozen(jnp.asarray(nu, jnp.result_type(float))),
        "rho": frozen(jnp.asarray(rho, jnp.result_type(float))),
    }
    spec = {k: False for k in params} | {"policy": policy.trainable()}
    batch = None if problem.level == "population" else data
    if isinstance(problem, Stacked):
        # fit would shuffle the data's model axis, but the models' own arrays live in the
        # problem, in their order: hold the data fixed and use every model every step.
        params["data"] = frozen(data)
        spec["data"] = False
        batch = None
    histories, done, violation, feasible = [], 0, float("nan"), constraint is None
    violations = None
    check_key = jax.random.fold_in(key, 10**6)
    for r in range(rounds):
        params, hist = fit(
            _policy_loss,
            params,
            batch,
            optimizer=tx,
            steps=per_round,
            key=jax.random.fold_in(key, r),
            batch_size=None if batch is None else batch_size,
            eval_data=eval_data,
            eval_fn=eval_fn,
            eval_every=eval_every,
            progress=progress,
            trainable=spec,
            checkpoint_dir=None if checkpoint_dir is None else f"{checkpoint_dir}/round_{r}",
            sharding=sharding,
            log_every=max(1, per_round // 100),
            # At most 256 steps per compiled call: runs of any length >= 256 share one program.
            steps_per_call=min(per_round, 256),
        )
        histories.append(hist)
        done += per_round
        if constraint is None:
            break
        gbar = np.asarray(_violation(params, data, check_key), float)  # () or (λ,)
        violation = float(np.max(gbar))
        violations = gbar if gbar.ndim else None
        if isinstance(constraint, Penalty):
            feasible = violation <= 0.0
            break
        # Stop when feasible within tol and complementary (ν ≈ 0 or the constraint binds):
        # |max(ḡ, -ν/ρ)| <= tol is the change the multiplier update would make, over ρ.
        settled = float(np.max(np.abs(np.maximum(gbar, -nu / constraint.rho)))) <= constraint.tol
        nu = np.maximum(0.0, nu + constraint.rho * gbar)
        nu = float(nu) if not np.ndim(nu) else nu
        params["nu"] = frozen(jnp.asarray(nu, jnp.result_type(float)))
        feasible = violation <= constraint.tol
        if settled:
            break
    out = params["policy"]
    fit_info = PolicyFit(histories, nu, violation, bool(feasible), done,
                         time.perf_counter() - t0, violations)  # fmt: skip
    return out, fit_info


@eqx.filter_jit
def _violation_jit(params, data, key):
    from ..train import unfreeze

    p = unfreeze(params)
    problem, policy = p["problem"], p["policy"]
    k_data, k_lam = jax.random.split(key)
    if data is None:
        data = problem.draw(k_data, 4096)
    lams = _lams(p, k_lam, policy)
    if lams is None:
        _, g, _ = problem.terms(policy, data, None)
    else:
        _, g, _ = jax.vmap(lambda lam: problem.terms(policy, data, lam[None]))(lams)
        return jnp.mean(g, axis=-1)  # per λ
    return jnp.mean(g)


def _violation(params, data, key):
    return _violation_jit(params, data, key)


__all__ = [
    "AugmentedLagrangian",
    "Grid",
    "LogUniform",
    "Penalty",
    "PolicyFit",
    "Uniform",
    "train",
]
