"""Input-output economies as equilibrium SCMs.

Leontief quantities ``x = A x + y`` with stressors ``s = R x`` (:mod:`.leontief`), the pymrio /
Exiobase adapter (:mod:`.io`, imported on first use: it needs pandas and pymrio), the checks of
an archive before pymrio reads it (:mod:`.archive`), the design of interventions that trade
emission cuts against employment (:mod:`.design`), unit prices ``p = A^T p + value added``
(:mod:`.prices`), demand curves (:mod:`.demand`) and the coupled price-quantity rebound model
(:mod:`.rebound`); the multi-regional design with trade (:mod:`.mrio`), a synthetic
Exiobase-shaped table (:mod:`.synthetic`), and sweeps over cases (regions, years, weightings)
× λ (:mod:`.sweeps`) on a device mesh (:mod:`.sharding`).
"""

import importlib
from typing import Any

from . import design, mrio, sharding, sweeps, synthetic
from .archive import check_archive, find_archives
from .demand import ConstantElasticity, DemandCurve, Logistic
from .design import DesignDiverged, DesignProblem, DesignResult
from .exiobase import PAPER_EMPLOYMENT, PAPER_GHG
from .leontief import (
    IOModel,
    StressorSpec,
    default_dtype,
    is_concrete,
    leontief_scm,
    spectral_radius,
)
from .prices import (
    VALUE_ADDED,
    check_technical_coefficients,
    energy_value_added,
    price_scm,
    unit_prices,
    value_added,
)
from .rebound import NODES, efficiency, rebound_model
from .synthetic import synthetic_mrio

#: Names of :mod:`.io`, resolved on first use so that ``import jcausal`` needs no pandas.
_IO_NAMES = (
    "from_pymrio",
    "load",
    "load_exiobase",
    "load_test",
    "regions",
    "reproduction_error",
    "stressor_table",
    "sweeps",
)


def __getattr__(name: str) -> Any:
    if name == "io":
        return importlib.import_module(f"{__name__}.io")
    if name in _IO_NAMES:
        return getattr(importlib.import_module(f"{__name__}.io"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "NODES",
    "PAPER_EMPLOYMENT",
    "PAPER_GHG",
    "VALUE_ADDED",
    "ConstantElasticity",
    "DemandCurve",
    "DesignDiverged",
    "DesignProblem",
    "DesignResult",
    "IOModel",
    "Logistic",
    "StressorSpec",
    "check_archive",
    "check_technical_coefficients",
    "default_dtype",
    "design",
    "efficiency",
    "energy_value_added",
    "find_archives",
    "from_pymrio",
    "io",
    "is_concrete",
    "leontief_scm",
    "load",
    "load_exiobase",
    "load_test",
    "mrio",
    "price_scm",
    "rebound_model",
    "regions",
    "reproduction_error",
    "sharding",
    "spectral_radius",
    "stressor_table",
    "sweeps",
    "synthetic",
    "synthetic_mrio",
    "unit_prices",
    "value_added",
]
