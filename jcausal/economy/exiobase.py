"""Exiobase 3 row names used by the paper's GHG / employment experiment (no pandas needed).

Besserve & Schölkopf (UAI 2022, Fig. 3b-c) design interventions on country blocks of
Exiobase 3 with a GHG indicator built from the ``satellite`` account's combustion emissions and
the employment rows in persons. The names are those of the Exiobase 3 ``satellite`` account as
pymrio parses it (``pymrio.parse_exiobase3``); :mod:`jcausal.economy.io` re-exports them.
"""

from __future__ import annotations

#: The paper's GHG (Besserve & Schölkopf 2022, Fig. 3b-c): the combustion emissions to air of
#: Exiobase 3's ``satellite`` account with the GWP100 weights of IPCC AR4 (CH4 25, N2O 298);
#: the rows are in kg, the total in kg CO2-eq. Non-combustion and agricultural rows are left out.
PAPER_GHG = {
    "CO2 - combustion - air": 1.0,
    "CH4 - combustion - air": 25.0,
    "N2O - combustion - air": 298.0,
}
#: The paper's employment: the ``satellite`` employment rows in persons (unit ``1000 p``), by
#: skill and gender; they add up to total employment (the ``Employment hours`` rows, in M.hr,
#: and ``Employment: Vulnerable employment``, a subset, are left out).
PAPER_EMPLOYMENT = {
    f"Employment: {skill}-skilled {sex}": 1.0
    for skill in ("Low", "Medium", "High")
    for sex in ("male", "female")
}

__all__ = ["PAPER_EMPLOYMENT", "PAPER_GHG"]
