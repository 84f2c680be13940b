"""jcausal: causal machine learning in JAX.

Structural causal models whose mechanisms are pure functions; interventions and counterfactuals
that compile with ``jit``, batch with ``vmap`` and differentiate with ``grad``.
"""

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

# Names are resolved on first use (PEP 562), so that `import jcausal` and `jcausal --help` do
# not pay for JAX, distrax/TensorFlow Probability, optax, flax or pandas until they are needed.
_SUBMODULES = ("economy", "examples", "flows", "invariance", "lie", "parallel", "policy", "scm",
               "solvers", "train")  # fmt: skip
_NAMES = {
    "image": ("DiffusionImage",),
    "invariance": ("check_compartments", "invariance_conditions", "learn_compartmentalized",
                   "learn_invariant"),
    "lie": ("SO", "Lie", "LieGroup", "Multiplicative", "Translation", "distributed"),
    "policy": ("Action", "Box", "Policy"),
    "scm": ("SCM", "Additive", "Amortized", "CycleError", "EquilibriumSCM", "GumbelMax", "Hard",
            "Intervention", "Invertible", "Mechanism", "Root", "Scale", "Shift", "Soft",
            "Solvability", "Solver", "abduct", "counterfactual", "do", "log_prob", "sample",
            "solvability", "solve"),
    "solvers": ("RESULTS", "Anderson", "Auto", "FixedPointError", "FixedPointReport", "Forward",
                "Newton", "fixed_point", "linear_fixed_point"),
    "train": ("History", "buffer", "fit", "frozen", "unfreeze"),
}  # fmt: skip
_WHERE = {name: module for module, names in _NAMES.items() for name in names}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # what type checkers and IDEs see
    from . import economy, examples, flows, invariance, lie, parallel, policy, solvers, train
    from .image import DiffusionImage
    from .invariance import (
        check_compartments,
        invariance_conditions,
        learn_compartmentalized,
        learn_invariant,
    )
    from .lie import SO, Lie, LieGroup, Multiplicative, Translation, distributed
    from .policy import Action, Box, Policy
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
    from .solvers import RESULTS, Anderson, FixedPointError, FixedPointReport, Forward, fixed_point
    from .train import History, buffer, fit, frozen, unfreeze

__all__ = [
    "RESULTS",
    "SCM",
    "SO",
    "Action",
    "Additive",
    "Amortized",
    "Anderson",
    "Auto",
    "Box",
    "CycleError",
    "DiffusionImage",
    "EquilibriumSCM",
    "FixedPointError",
    "FixedPointReport",
    "Forward",
    "GumbelMax",
    "Hard",
    "History",
    "Intervention",
    "Invertible",
    "Lie",
    "LieGroup",
    "Mechanism",
    "Multiplicative",
    "Policy",
    "Root",
    "Scale",
    "Shift",
    "Soft",
    "Solvability",
    "Solver",
    "Translation",
    "__version__",
    "abduct",
    "buffer",
    "check_compartments",
    "counterfactual",
    "distributed",
    "do",
    "economy",
    "examples",
    "fit",
    "fixed_point",
    "flows",
    "frozen",
    "invariance",
    "invariance_conditions",
    "learn_compartmentalized",
    "learn_invariant",
    "lie",
    "linear_fixed_point",
    "log_prob",
    "parallel",
    "policy",
    "sample",
    "solvability",
    "solve",
    "solvers",
    "train",
    "unfreeze",
]
