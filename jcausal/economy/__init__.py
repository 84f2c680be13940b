"""Input-output economies as equilibrium SCMs.

Leontief quantities ``x = A x + y`` with stressors ``s = R x`` (:mod:`.leontief`), the pymrio /
Exiobase adapter (:mod:`.io`), unit prices ``p = A^T p + value added`` (:mod:`.prices`), demand
curves (:mod:`.demand`) and the coupled price-quantity rebound model (:mod:`.rebound`).
"""

from .demand import ConstantElasticity, DemandCurve, Logistic
from .io import (
    from_pymrio,
    load,
    load_exiobase,
    load_test,
    regions,
    reproduction_error,
    stressor_table,
)
from .leontief import IOModel, StressorSpec, default_dtype, leontief_scm, spectral_radius
from .prices import check_technical_coefficients, energy_value_added, price_scm, unit_prices
from .rebound import NODES, efficiency, rebound_model

__all__ = [
    "NODES",
    "ConstantElasticity",
    "DemandCurve",
    "IOModel",
    "Logistic",
    "StressorSpec",
    "check_technical_coefficients",
    "default_dtype",
    "efficiency",
    "energy_value_added",
    "from_pymrio",
    "leontief_scm",
    "load",
    "load_exiobase",
    "load_test",
    "price_scm",
    "rebound_model",
    "regions",
    "reproduction_error",
    "spectral_radius",
    "stressor_table",
    "unit_prices",
]
