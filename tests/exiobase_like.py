"""An Exiobase-3-shaped archive, written by pymrio itself, for offline tests of the Exiobase path.

Real Exiobase 3 names (regions, pxp products, final-demand categories, ``satellite`` stressor
rows and units, ``impacts`` rows), a small table: 6 regions × 10 products, ``M.EUR``. The
numbers are made up (deterministic per year) but shaped so that the paper's objective has
something to show:

* ``Electricity by coal`` emits most (``CO2 - combustion - air``) with few workers, and buys 70 %
  of the domestic ``Anthracite`` output. Coal mining's own combustion emissions are small (its
  methane is in the ``CH4 - non combustion - Mining of bituminous coal - air`` row, which the
  paper's combustion-only GHG leaves out) and it employs many people. So at a moderate λ the
  optimum closes coal power and keeps coal mining: unbounded, mining needs a factor
  ``α = x* / (A x + y) > 2``; with the paper's ``α < 2`` it cannot.
* Germany burns more coal than France (France's power is mostly elsewhere), and coal power
  shrinks and wind grows from year to year.

``write_archive(folder, year)`` writes ``IOT_<year>_pxp.zip`` (one top folder inside, as the
Exiobase downloads) with ``pymrio.IOSystem.save_all`` as text tables.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pymrio

REGIONS = ["FR", "DE", "IT", "US", "GB", "WA"]
SECTORS = [
    "Cattle",
    "Anthracite",
    "Electricity by coal",
    "Electricity by wind",
    "Basic iron and steel and of ferro-alloys and first products thereof",
    "Motor vehicles, trailers and semi-trailers (34)",
    "Construction work (45)",
    "Railway transportation services",
    "Hotel and restaurant services (55)",
    "Health and social work services (85)",
]
CATEGORIES = [
    "Final consumption expenditure by households",
    "Final consumption expenditure by non-profit organisations serving households (NPISH)",
    "Final consumption expenditure by government",
    "Gross fixed capital formation",
    "Changes in inventories",
    "Changes in valuables",
    "Exports: Total (fob)",
]
SKILLS = [f"{s}-skilled {g}" for s in ("Low", "Medium", "High") for g in ("male", "female")]
EMPLOYMENT_ROWS = [f"Employment: {s}" for s in SKILLS]
HOURS_ROWS = [f"Employment hours: {s}" for s in SKILLS]
VALUE_ADDED_ROWS = [
    "Taxes less subsidies on products purchased: Total",
    "Other net taxes on production",
    "Compensation of employees; wages, salaries, & employers' social contributions: Low-skilled",
    "Compensation of employees; wages, salaries, & employers' social contributions: Medium-skilled",
    "Compensation of employees; wages, salaries, & employers' social contributions: High-skilled",
    "Operating surplus: Consumption of fixed capital",
    "Operating surplus: Rents on land",
    "Operating surplus: Royalties on resources",
    "Operating surplus: Remaining net operating surplus",
]
COMBUSTION = ["CO2 - combustion - air", "CH4 - combustion - air", "N2O - combustion - air"]
OTHER_GHG = [
    "CH4 - agriculture - air",
    "CH4 - non combustion - Mining of bituminous coal - air",
    "CO2 - non combustion - Cement production - air",
]
GWP100 = {"CO2": 1.0, "CH4": 25.0, "N2O": 298.0}
IMPACT_GHG = (
    "GHG emissions (GWP100) | Problem oriented approach: baseline (CML, 2001) | GWP100 (IPCC, 2007)"
)

# Per-sector base output (M.EUR), CO2 combustion intensity (kg / M.EUR) and employment
# intensity (1000 persons / M.EUR), in the order of SECTORS.
OUTPUT = np.array([30e3, 8e3, 25e3, 10e3, 40e3, 90e3, 200e3, 15e3, 80e3, 250e3])
CO2 = np.array([5e4, 3e4, 4e6, 1e3, 1.5e6, 5e4, 8e4, 1e5, 3e4, 2e4])
JOBS = np.array([0.015, 0.012, 0.0015, 0.002, 0.004, 0.005, 0.012, 0.01, 0.02, 0.015])
# Coal power relative to the base, per region (France little, Germany much).
COAL = {"FR": 0.15, "DE": 1.6, "IT": 0.5, "US": 1.2, "GB": 0.6, "WA": 2.0}
SIZE = {"FR": 1.0, "DE": 1.3, "IT": 0.8, "US": 4.0, "GB": 0.9, "WA": 6.0}


def system(year: int) -> pymrio.IOSystem:
    """The Exiobase-shaped ``IOSystem`` of ``year`` (A, Z, Y, x; satellite; impacts)."""
    t = year - 2012
    rng = np.random.default_rng(year)
    n, k = len(SECTORS), len(REGIONS)
    coal, wind = SECTORS.index("Electricity by coal"), SECTORS.index("Electricity by wind")
    mine = SECTORS.index("Anthracite")
    x = []
    for r in REGIONS:
        out = OUTPUT * SIZE[r] * 1.01**t * rng.uniform(0.9, 1.1, n)
        out[coal] *= COAL[r] * 0.95**t
        out[mine] *= COAL[r] * 0.95**t
        out[wind] *= 1.1**t
        x.append(out)
    x = np.concatenate(x)
    # Z[i, j]: what seller i sells to buyer j, as shares of the seller's output.
    share = np.zeros((n * k, n * k))
    for a in range(k):
        block = rng.uniform(0, 1, (n, n))
        block *= rng.uniform(0.25, 0.4, (n, 1)) / block.sum(1, keepdims=True)
        block[mine] = 0.0
        block[mine, coal] = 0.7  # coal mining sells most of its output to coal power
        block[mine, 4] = 0.05  # and a little to steel
        share[a * n : (a + 1) * n, a * n : (a + 1) * n] = block
        for b in range(k):  # a little trade in intermediate goods
            if b != a:
                share[a * n : (a + 1) * n, b * n : (b + 1) * n] = rng.uniform(0, 0.004, (n, n))
    Z = share * x[:, None]
    rest = x - Z.sum(1)
    assert rest.min() > 0
    cat = rng.dirichlet(np.ones(len(CATEGORIES)), n * k)
    cat[:, CATEGORIES.index("Changes in valuables")] = 0.0
    cat /= cat.sum(1, keepdims=True)
    Y = np.zeros((n * k, k * len(CATEGORIES)))
    for a in range(k):  # 85 % to the region's own final users, the rest to the others
        for b in range(k):
            frac = 0.85 if a == b else 0.15 / (k - 1)
            rows = slice(a * n, (a + 1) * n)
            cols = slice(b * len(CATEGORIES), (b + 1) * len(CATEGORIES))
            Y[rows, cols] = frac * rest[rows, None] * cat[rows]
    idx = pd.MultiIndex.from_product([REGIONS, SECTORS], names=["region", "sector"])
    ycols = pd.MultiIndex.from_product([REGIONS, CATEGORIES], names=["region", "category"])
    Zdf = pd.DataFrame(Z, index=idx, columns=idx)
    Ydf = pd.DataFrame(Y, index=idx, columns=ycols)

    # Satellite account: F = intensity * output.
    co2 = np.tile(CO2, k) * 0.98**t * rng.uniform(0.9, 1.1, n * k)
    jobs = np.tile(JOBS, k) * 0.99**t * rng.uniform(0.9, 1.1, n * k)
    skill = rng.dirichlet(np.ones(len(SKILLS)) * 4, n * k)
    rows: dict[str, np.ndarray] = {}
    units: dict[str, str] = {}
    for i, name in enumerate(VALUE_ADDED_ROWS):
        rows[name] = x * (0.5 / len(VALUE_ADDED_ROWS)) * (1 + 0.1 * i / len(VALUE_ADDED_ROWS))
        units[name] = "M.EUR"
    for j, name in enumerate(EMPLOYMENT_ROWS):
        rows[name] = jobs * skill[:, j] * x
        units[name] = "1000 p"
    for j, name in enumerate(HOURS_ROWS):
        rows[name] = 1.7 * jobs * skill[:, j] * x
        units[name] = "M.hr"
    rows["Employment: Vulnerable employment"] = 0.1 * jobs * x
    units["Employment: Vulnerable employment"] = "1000 p"
    rows["Employment hours: Vulnerable employment"] = 0.17 * jobs * x
    units["Employment hours: Vulnerable employment"] = "M.hr"
    rows["CO2 - combustion - air"] = co2 * x
    rows["CH4 - combustion - air"] = co2 * x * rng.uniform(1e-5, 5e-5, n * k)
    rows["N2O - combustion - air"] = co2 * x * rng.uniform(1e-6, 5e-6, n * k)
    is_ = np.tile(np.arange(n), k)
    rows["CH4 - agriculture - air"] = np.where(is_ == 0, 3e4, 0.0) * x
    rows["CH4 - non combustion - Mining of bituminous coal - air"] = (
        np.where(is_ == mine, 2e4, 0) * x
    )
    rows["CO2 - non combustion - Cement production - air"] = np.where(is_ == 6, 2e4, 0.0) * x
    for name in COMBUSTION + OTHER_GHG:
        units[name] = "kg"
    names = list(rows)
    F = pd.DataFrame(np.array([rows[r] for r in names]), index=pd.Index(names, name="stressor"))
    F.columns = idx
    # Households burn fuel too (F_Y); it belongs to no sector.
    FY = pd.DataFrame(0.0, index=F.index, columns=ycols)
    hh = [c for c in ycols if c[1] == CATEGORIES[0]]
    FY.loc["CO2 - combustion - air", hh] = 5e8
    unit = pd.DataFrame({"unit": [units[r] for r in names]}, index=F.index)
    satellite = {"name": "satellite", "F": F, "F_Y": FY, "unit": unit}

    # Impacts: the GWP100 total over every CO2 / CH4 / N2O row and the employment totals.
    def ghg(frame: pd.DataFrame) -> pd.Series:
        return sum(GWP100[r.split(" ")[0]] * frame.loc[r] for r in COMBUSTION + OTHER_GHG)

    imp_names = [IMPACT_GHG, "Employment", "Employment hours", "Value Added"]
    imp = pd.DataFrame(
        [
            ghg(F),
            F.loc[EMPLOYMENT_ROWS].sum(),
            F.loc[HOURS_ROWS].sum(),
            F.loc[VALUE_ADDED_ROWS].sum(),
        ],
        index=pd.Index(imp_names, name="impact"),
    )
    imp_y = pd.DataFrame(
        [
            ghg(FY),
            FY.loc[EMPLOYMENT_ROWS].sum(),
            FY.loc[HOURS_ROWS].sum(),
            FY.loc[VALUE_ADDED_ROWS].sum(),
        ],
        index=imp.index,
    )
    imp_unit = pd.DataFrame({"unit": ["kg CO2 eq", "1000 p", "M.hr", "M.EUR"]}, index=imp.index)
    impacts = {"name": "impacts", "F": imp, "F_Y": imp_y, "unit": imp_unit}

    io = pymrio.IOSystem(
        Z=Zdf,
        Y=Ydf,
        unit=pd.DataFrame({"unit": "M.EUR"}, index=idx),
        name=f"IOT_{year}_pxp",
        description=f"Exiobase-3-shaped test system {year} (made-up numbers, real names)",
        satellite=satellite,
        impacts=impacts,
    )
    io.calc_system()
    for ext in (io.satellite, io.impacts):
        ext.S = pymrio.calc_S(ext.F, io.x)
        ext.S_Y = pymrio.calc_S_Y(ext.F_Y, io.Y.sum(axis=0))
    io.L = None  # the downloads hold A, Z, Y, x and the extensions' F, S (no Leontief inverse)
    return io


def write_archive(folder: str | Path, year: int, kind: str = "pxp") -> Path:
    """Write ``folder/IOT_<year>_<kind>.zip`` as pymrio saves a system; return its path."""
    folder = Path(folder)
    name = f"IOT_{year}_{kind}"
    staging = folder / f".{name}"
    system(year).save_all(staging / name, table_format="txt")
    path = folder / f"{name}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted((staging / name).rglob("*")):
            zf.write(f, f.relative_to(staging).as_posix())
    return path
