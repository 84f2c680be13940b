"""Reproductions of the papers' tables and figures, one module per experiment.

Each module has ``run(smoke=False, out=None, seed=0, ...) -> metrics`` (writes
``results/<name>/metrics.json`` and PNG figures) and ``main(argv)`` for the command line;
``jcausal experiment NAME [--smoke]`` dispatches here, and the scripts in the repository's
top-level ``experiments/`` folder call the same functions.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

#: experiment name -> module (imported on demand: experiments pull in plotting and data code).
EXPERIMENTS = {
    "equilibrium_accuracy": "jcausal.experiments.equilibrium_accuracy",
    "ghg_employment": "jcausal.experiments.ghg_employment",
    "rebound": "jcausal.experiments.rebound",
    "compartments": "jcausal.experiments.compartments",
    "deepscm": "jcausal.experiments.deepscm",
    "modularity": "jcausal.experiments.modularity",
    "ctvae": "jcausal.experiments.ctvae",
    "policy": "jcausal.experiments.policy",
    "diffscm": "jcausal.experiments.diffscm",
}


def available() -> list[str]:
    """Names of the experiments whose module is present."""
    out = []
    for name, mod in EXPERIMENTS.items():
        if importlib.util.find_spec(mod) is not None:
            out.append(name)
    return out


def load(name: str) -> ModuleType:
    """Import an experiment's module by name."""
    if name not in EXPERIMENTS or importlib.util.find_spec(EXPERIMENTS[name]) is None:
        raise ValueError(f"unknown experiment {name!r}; available: {available()}")
    return importlib.import_module(EXPERIMENTS[name])


__all__ = ["EXPERIMENTS", "available", "load"]
