"""Structural causal models: mechanisms, interventions, sampling, abduction, counterfactuals.

The extension surface (what a mechanism or intervention written elsewhere needs) is public
here: :data:`Parents`, :func:`as_arrays`, :func:`as_parents`, :func:`broadcast_units`,
:func:`as_index` / :func:`component_index` (interventions on some components of a vector node)
and the value-check hook :meth:`Mechanism.out_of_support` with :func:`check_support`.
"""

from ._jit import RecompileWarning
from .equilibrium import (
    EquilibriumSCM,
    Solvability,
    Solver,
    residual_jacobian,
    solvability,
    solve,
)
from .graph import CycleError
from .gumbel import GumbelMax
from .inference import abduct, counterfactual, log_prob, sample
from .interventions import (
    Hard,
    Intervention,
    Scale,
    Shift,
    Soft,
    as_index,
    broadcast_units,
    component_index,
)
from .mechanisms import (
    Additive,
    Amortized,
    Invertible,
    Mechanism,
    Parents,
    Root,
    as_arrays,
    as_parents,
    check_support,
)
from .model import SCM, do

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
    "Parents",
    "RecompileWarning",
    "Root",
    "Scale",
    "Shift",
    "Soft",
    "Solvability",
    "Solver",
    "abduct",
    "as_arrays",
    "as_index",
    "as_parents",
    "broadcast_units",
    "check_support",
    "component_index",
    "counterfactual",
    "do",
    "log_prob",
    "residual_jacobian",
    "sample",
    "solvability",
    "solve",
]
