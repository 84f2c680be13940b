"""Structural causal models: mechanisms, interventions, sampling, abduction, counterfactuals."""

from .equilibrium import (
    EquilibriumSCM,
    Solvability,
    Solver,
    residual_jacobian,
    solvability,
    solve,
)
from .graph import CycleError
from .inference import abduct, counterfactual, log_prob, sample
from .interventions import Hard, Intervention, Scale, Shift, Soft
from .mechanisms import Additive, Amortized, GumbelMax, Invertible, Mechanism, Root
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
    "Root",
    "Scale",
    "Shift",
    "Soft",
    "Solvability",
    "Solver",
    "abduct",
    "counterfactual",
    "do",
    "log_prob",
    "residual_jacobian",
    "sample",
    "solvability",
    "solve",
]
