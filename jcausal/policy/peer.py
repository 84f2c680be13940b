"""The gradient-free peer: evolution strategies (evosax) on the same objective.

:func:`evolve` flattens the policy's trainable arrays into one vector and searches it with an
evosax strategy (SNES by default), each generation scoring the whole population on the same
objective as :func:`jcausal.policy.train` (full batch of units, a fixed set of trade-off
weights), with a constraint as the quadratic penalty of :class:`Penalty` (per λ). It needs
no gradient, so it also serves objectives that are not differentiable. All generations run in
one compiled ``lax.scan``; generation ``g``'s randomness is ``fold_in(key, g)``, so a run of
``G`` generations is exactly the first ``G`` generations of a longer one with the same key.

evosax is an optional dependency (the ``bench`` extra).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PRNGKeyArray

from .module import Policy
from .problem import Problem

STRATEGIES = ("CMA_ES", "Sep_CMA_ES", "SNES", "Open_ES")


@dataclasses.dataclass
class EvolveResult:
    """What :func:`evolve` did.

    Attributes:
        best_fitness: ``(G,)`` best fitness so far after each generation.
        mean_fitness: ``(G,)`` mean fitness of each generation's population.
        generations: generations run.
        evaluations: objective evaluations (generations × population).
        seconds: wall time (compilation included).
        compile_seconds: of which compiling (evosax's initial state and the generations'
            program; evolve compiles on every call).
        recorded: generations (counted from 1) whose best-so-far policy is in
            :meth:`policy_at` (every ``record_every``-th), ``(R,)``.
    """

    best_fitness: np.ndarray
    mean_fitness: np.ndarray
    generations: int
    evaluations: int
    seconds: float
    compile_seconds: float
    recorded: np.ndarray
    solutions: np.ndarray
    rest: Policy
    unravel: Any

    def policy_at(self, i: int) -> Policy:
        """The best-so-far policy at generation ``recorded[i]``."""
        return eqx.combine(self.unravel(jnp.asarray(self.solutions[i])), self.rest)


def _fitness_fn(problem: Problem, rest: Policy, unravel, data, lams, penalty: float):
    def one(flat):
        policy = eqx.combine(unravel(flat), rest)
        if lams is None:
            f, g, ok = problem.terms(policy, data, None)
        else:
            f, g, ok = jax.vmap(lambda lam: problem.terms(policy, data, lam[None]))(lams)
        val = jnp.mean(f)
        if g is not None:
            # Per λ, as in train: the constraint must hold at every trade-off.
            gbar = jnp.mean(g) if lams is None else jnp.mean(g, axis=-1)
            val = val + penalty / 2 * jnp.mean(jnp.maximum(0.0, gbar) ** 2)
        # A failed equilibrium solve or a NaN scores worst, never best.
        return jnp.where(jnp.all(ok) & jnp.isfinite(val), val, jnp.inf)

    return one


def evolve(
    problem: Problem,
    policy: Policy,
    data: Mapping[str, Any],
    *,
    generations: int,
    key: PRNGKeyArray,
    population: int = 32,
    sigma: float = 0.1,
    strategy: str = "SNES",
    lambdas: Array | None = None,
    penalty: float = 100.0,
    record_every: int | None = None,
) -> tuple[Policy, EvolveResult]:
    """Search the policy's parameters with an evolution strategy.

    Args:
        problem: the objective.
        policy: the initial policy (the search starts at its parameters).
        data: the units (:meth:`Problem.prepare`), all scored every generation.
        generations: number of generations.
        key: ``jax.random`` key.
        population: candidates per generation.
        sigma: initial search scale, in the units of the network's weights.
        strategy: one of :data:`STRATEGIES` (evosax names). The default, separable natural
            evolution strategies (SNES), scales to thousands of weights; full ``CMA_ES``
            decomposes a ``d × d`` covariance every generation (measured here: about 1 s per
            generation at ``d = 337``, against milliseconds for SNES, for no better fitness).
        lambdas: ``(L,)`` or ``(L, k)`` trade-off weights scored (required when the policy
            reads λ).
        penalty: weight of the quadratic constraint penalty.
        record_every: keep the best-so-far parameters every this many generations (for
            regret curves, :meth:`EvolveResult.policy_at`); must divide ``generations``.

    Returns:
        ``(best policy found, EvolveResult)``.

    Raises:
        ValueError: an unknown strategy, missing λ, or bad counts.
        ImportError: evosax is not installed (``pip install jcausal[bench]``).
    """
    import evosax.algorithms as algorithms  # optional dependency

    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    for name, v in (("generations", generations), ("population", population)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 2:
            raise ValueError(f"{name} must be an integer >= 2, got {v!r}")
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive number, got {sigma!r}")
    problem.check(policy, data)
    if policy.num_lambdas:
        if lambdas is None:
            raise ValueError("this policy reads trade-off weights: pass lambdas=(L,) values")
        lams = jnp.asarray(lambdas, jnp.result_type(float)).reshape(-1, policy.num_lambdas)
    else:
        lams = None
    t0 = time.perf_counter()
    dyn, rest = eqx.partition(policy, policy.trainable())
    flat0, unravel = ravel_pytree(dyn)
    fitness = _fitness_fn(problem, rest, unravel, data, lams, float(penalty))
    es = getattr(algorithms, strategy)(population_size=int(population), solution=flat0)
    params = es.default_params
    if hasattr(params, "std_init"):
        params = params.replace(std_init=float(sigma))
    every = generations if record_every is None else int(record_every)
    if every < 1 or generations % every:
        raise ValueError(f"record_every={record_every!r} must divide generations={generations}")
    k0, key = jax.random.split(key)
    # evosax compiles its init for every new strategy object: that is compilation too.
    t1 = time.perf_counter()
    state = jax.block_until_ready(es.init(k0, flat0, params))

    @jax.jit
    def run(state, key):
        def gen(state, g):
            k1, k2 = jax.random.split(jax.random.fold_in(key, g))
            pop, state = es.ask(k1, state, params)
            fit = jax.vmap(fitness)(pop)
            state, _ = es.tell(k2, pop, fit, state, params)
            mean = jnp.mean(jnp.where(jnp.isfinite(fit), fit, jnp.nan))
            return state, (state.best_fitness, mean)

        def block(state, gs):
            state, ys = jax.lax.scan(gen, state, gs)
            return state, (ys, state.best_solution)

        gens = jnp.arange(generations, dtype=jnp.int32).reshape(-1, every)
        return jax.lax.scan(block, state, gens)

    compiled = run.lower(state, key).compile()
    t_compile = time.perf_counter() - t1
    state, ((best, mean), sols) = jax.block_until_ready(compiled(state, key))
    policy = eqx.combine(unravel(state.best_solution), rest)
    result = EvolveResult(
        best_fitness=np.asarray(best).reshape(-1),
        mean_fitness=np.asarray(mean).reshape(-1),
        generations=int(generations),
        evaluations=int(generations * population),
        seconds=time.perf_counter() - t0,
        compile_seconds=t_compile,
        recorded=np.arange(every, generations + 1, every),
        solutions=np.asarray(sols),
        rest=rest,
        unravel=unravel,
    )
    return policy, result


__all__ = ["STRATEGIES", "EvolveResult", "evolve"]
