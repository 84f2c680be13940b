"""jcausal: causal machine learning in JAX.

Structural causal models whose mechanisms are pure functions; interventions and counterfactuals
that compile with ``jit``, batch with ``vmap`` and differentiate with ``grad``.
"""

from . import examples
from ._version import __version__
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

__all__ = [
    "SCM",
    "Additive",
    "Amortized",
    "CycleError",
    "EquilibriumSCM",
    "GumbelMax",
    "Hard",
    "Intervention",
    "Invertible",
    "Mechanism",
    "Root",
    "Scale",
    "Shift",
    "Soft",
    "Solvability",
    "Solver",
    "__version__",
    "abduct",
    "counterfactual",
    "do",
    "examples",
    "log_prob",
    "sample",
    "solvability",
    "solve",
]
