"""jcausal: causal machine learning in JAX.

Structural causal models whose mechanisms are pure functions; interventions and counterfactuals
that compile with ``jit``, batch with ``vmap`` and differentiate with ``grad``.
"""

from . import economy, examples, flows, invariance, lie, parallel, solvers, train
from ._version import __version__
from .invariance import (
    check_compartments,
    invariance_conditions,
    learn_compartmentalized,
    learn_invariant,
)
from .lie import SO, Lie, LieGroup, Multiplicative, Translation, distributed
from .scm import (
    SCM,
    Additive,
    Amortized,
    CycleError,
    EquilibriumSCM,
    GumbelMax,
    Hard,
    Intervention,
    Invertible,
    Mechanism,
    Root,
    Scale,
    Shift,
    Soft,
    Solvability,
    Solver,
    abduct,
    counterfactual,
    do,
    log_prob,
    sample,
    solvability,
    solve,
)
from .solvers import FixedPointReport, fixed_point
from .train import History, fit

__all__ = [
    "SCM",
    "SO",
    "Additive",
    "Amortized",
    "CycleError",
    "EquilibriumSCM",
    "FixedPointReport",
    "GumbelMax",
    "Hard",
    "History",
    "Intervention",
    "Invertible",
    "Lie",
    "LieGroup",
    "Mechanism",
    "Multiplicative",
    "Root",
    "Scale",
    "Shift",
    "Soft",
    "Solvability",
    "Solver",
    "Translation",
    "__version__",
    "abduct",
    "check_compartments",
    "counterfactual",
    "distributed",
    "do",
    "economy",
    "examples",
    "fit",
    "fixed_point",
    "flows",
    "invariance",
    "invariance_conditions",
    "learn_compartmentalized",
    "learn_invariant",
    "lie",
    "log_prob",
    "parallel",
    "sample",
    "solvability",
    "solve",
    "solvers",
    "train",
]
