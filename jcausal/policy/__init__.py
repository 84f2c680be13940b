"""Differentiable policy search: learn interventions as functions of units and trade-offs.

A :class:`Policy` is an equinox module mapping what is known of a unit (its pre-treatment
covariates) and optionally trade-off weights λ to the bounded parameters of interventions
(:class:`Action`: ``Shift``, ``Scale``, ``Hard`` on continuous nodes, ``Lie``, ``Soft``;
bounds by :class:`Box`). A :class:`Problem` states the objective on outcomes, per unit
(counterfactual: abduct once, predict under the policy) or over the population
(interventional), with a constraint held by a :class:`Penalty` or an
:class:`AugmentedLagrangian` (at every λ for a λ-conditioned policy: one multiplier per point
of a :class:`Grid`), for acyclic and equilibrium models alike. :func:`train` learns
the policy with the one :func:`jcausal.train.fit`, batched over units and λ;
:func:`evolve` is the gradient-free peer (evosax evolution strategies). :class:`Stacked`
trains one policy over several models of one structure (e.g. one per region), and
:mod:`jcausal.policy.front` learns the whole GHG–employment front of
:mod:`jcausal.economy.design` in one λ-conditioned policy.

Example (per-unit doses under a mean budget, see :func:`jcausal.examples.treatment`)::

    import jcausal as jc
    from jcausal import policy as jp

    scm = jc.examples.treatment()
    obs = jc.sample(jax.random.key(0), scm, 1000)
    problem = jp.Problem(scm, lambda v, th, lam: -v["y"], covariates=["x"],
                         constraint=lambda v, th, lam: v["t"] - 0.5)
    pol = jp.Policy([jp.Action("t", "hard", jp.Box(0.0, 2.0))], num_features=2,
                    key=jax.random.key(1))
    pol, info = jp.train(problem, pol, problem.prepare(obs), steps=2000,
                         key=jax.random.key(2))
"""

from .actions import KINDS, Action
from .bounds import Box
from .module import Policy
from .peer import STRATEGIES, EvolveResult, evolve
from .problem import LEVELS, Problem, Stacked
from .train import AugmentedLagrangian, Grid, LogUniform, Penalty, PolicyFit, Uniform, train

__all__ = [
    "KINDS",
    "LEVELS",
    "STRATEGIES",
    "Action",
    "AugmentedLagrangian",
    "Box",
    "EvolveResult",
    "Grid",
    "LogUniform",
    "Penalty",
    "Policy",
    "PolicyFit",
    "Problem",
    "Stacked",
    "Uniform",
    "evolve",
    "train",
]
