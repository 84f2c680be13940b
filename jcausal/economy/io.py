"""pymrio adapter: input-output tables (the pymrio test system, Exiobase 3) as :class:`IOModel`.

Two models can be built from a pymrio ``IOSystem``:

* the **full multi-regional** model (``region=None``): ``A`` and ``x`` of the whole table and
  ``y`` the total final demand ``Y`` summed over every region's final-demand categories.
  ``x = A x + y`` holds exactly for a balanced table (``x = Z 1 + Y 1`` and ``A = Z / x``).
* one region's **domestic block** (``region="DE"``), as in the paper's GHG / employment
  experiment, which "designs an economic equilibrium model of each country by neglecting [the
  cross-country] interactions, and extracting the blocs of matrices A and R relevant to the
  country": ``A_rr``, ``x_r``, ``S[:, r]``. The block is closed so that its equilibrium is the
  table's observed output of the region: ``y_r = x_r - A_rr x_r``, which, for a balanced table,
  equals the final demand for the region's products from *every* region (domestic final demand
  and exports to foreign final users) **plus** the region's intermediate exports
  ``sum_{s != r} Z_rs 1``. Foreign demand is thus held fixed (the other regions are not
  modelled), and imported inputs ``A_sr`` are dropped: an intervention on the region changes
  neither imports nor foreign production. This is the most faithful reading of the paper that
  still reproduces the table; using only the region's own final demand would not reproduce
  ``x_r`` (and would understate outputs of export-oriented sectors).

Stressor rows come from every extension (satellite account) of the system, e.g. ``emissions``
(rows ``emission_type1``, ``emission_type2``) and ``factor_inputs`` (``Value Added``) in
``pymrio.load_test()``, or ``satellite`` / ``impacts`` in Exiobase 3. A row is named by its
index entry; rows of a two-level index (stressor, compartment) are named by the first level
when that is unique (``"emission_type1"``), otherwise ``"stressor / compartment"``; a name that
occurs in two extensions is written ``"extension:name"``. Stressors emitted directly by final
users (``F_Y``, e.g. household heating) are not produced by any sector and are not part of
``s = S x``.

The adapter checks that the unintervened equilibrium, solved from zero, reproduces the table's
``x`` and stores the relative error in ``IOModel.reproduction_error``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pymrio

from ..scm import Solver
from .archive import check_archive
from .exiobase import PAPER_EMPLOYMENT, PAPER_GHG
from .leontief import IOModel, unknown_name_message

#: Exiobase 3 (pxp / ixi, ``impacts`` extension) row names used as defaults by ``jcausal design``.
EXIOBASE_GHG = (
    "GHG emissions (GWP100) | Problem oriented approach: baseline (CML, 2001) | GWP100 (IPCC, 2007)"
)
EXIOBASE_EMPLOYMENT = "Employment"
#: The pymrio test system has no employment account: value added is the labour proxy.
TEST_GHG = "emission_type1"
TEST_EMPLOYMENT = "Value Added"


def load_test() -> pymrio.IOSystem:
    """The pymrio test system (6 regions × 8 sectors, shipped with pymrio; no download)."""
    return pymrio.load_test()


def load_exiobase(path: str | Path) -> pymrio.IOSystem:
    """Parse an Exiobase 3 archive (zip or folder, e.g. ``IOT_2011_pxp.zip``) with pymrio.

    The archive is checked first (:func:`jcausal.economy.archive.check_archive`): pymrio would
    unpickle tables stored as pickles (running code from the file) and follow table names out
    of the archive; both are refused.

    Args:
        path: the archive (zip file) or the folder it unpacks to.

    Returns:
        The parsed pymrio ``IOSystem``.

    Raises:
        ValueError: the path is missing, not an archive, holds no tables, lists an unsafe
            table (see :func:`~jcausal.economy.archive.check_archive`), or pymrio cannot parse
            it (its error is named).
    """
    path = check_archive(path)
    try:
        return pymrio.parse_exiobase3(path)
    except Exception as err:  # pymrio raises KeyError, ReadError, pandas parser errors, ...
        raise ValueError(
            f"pymrio could not parse the Exiobase archive {str(path)!r}: "
            f"{type(err).__name__}: {err}"
        ) from err


def regions(io: pymrio.IOSystem) -> list[str]:
    """Names of the regions of a pymrio system."""
    return [str(r) for r in io.get_regions()]


def _core(io: pymrio.IOSystem) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(A, x, Y)`` of the system, computed with pymrio from ``Z`` and ``Y`` when missing.

    The user's system is not modified.
    """
    if io.Y is None:
        raise ValueError("the IOSystem has no final demand Y; cannot build a Leontief model")
    A, x = io.A, io.x
    if x is None and io.Z is not None:
        x = pymrio.calc_x(io.Z, io.Y)
    if A is None:
        if io.Z is None or x is None:
            raise ValueError("the IOSystem has neither A nor Z; cannot build a Leontief model")
        A = pymrio.calc_A(io.Z, x)
    if x is None:
        # A and Y only (e.g. a parsed Exiobase archive): one linear solve, not the full inverse.
        n = A.shape[0]
        xv = np.linalg.solve(np.eye(n) - A.to_numpy(float), io.Y.to_numpy(float).sum(1))
        x = pd.DataFrame(xv, index=A.index, columns=["indout"])
    x = x.reindex(A.index)
    Y = io.Y.reindex(A.index)
    return A, x, Y


def _row_names(ext) -> tuple[list[object], list[str]]:
    # (index keys, short names); see the module docstring for the naming rule.
    table = ext.F if getattr(ext, "F", None) is not None else ext.S
    idx = table.index
    keys = list(idx)
    if isinstance(idx, pd.MultiIndex):
        first = [str(k[0]) for k in keys]
        if len(set(first)) == len(first):
            return keys, first
        return keys, [" / ".join(str(p) for p in k) for k in keys]
    return keys, [str(k) for k in keys]


def stressor_table(
    io: pymrio.IOSystem, x: pd.DataFrame
) -> tuple[np.ndarray, list[str], list[str], list[str], list[str]]:
    """Stressor coefficients of every extension: ``(S (k, n), names, units, extensions, keys)``.

    ``keys`` are the full row keys (``"stressor / compartment"`` for two-level indices).

    ``S`` is taken from the extension when present, else computed as ``F / x`` (0 where the
    sector has no output). A NaN coefficient of a sector with output stays NaN (a gap in the
    table is not a zero). Columns follow the order of ``x``.

    Args:
        io: a pymrio ``IOSystem`` with its extensions.
        x: the table's total output per sector (pymrio's ``x``), in the table's monetary unit.
    """
    rows, names, units, exts, full = [], [], [], [], []
    for attr in io.get_extensions():
        ext = getattr(io, attr)
        F = getattr(ext, "F", None)
        S = getattr(ext, "S", None)
        if F is None and S is None:
            continue
        keys, ext_names = _row_names(ext)
        if S is None:
            f = F.reindex(columns=x.index).to_numpy(float)
            xv = x.to_numpy(float)[:, 0]
            s = np.divide(f, xv, out=np.zeros_like(f), where=xv != 0)
        else:
            s = S.reindex(columns=x.index).to_numpy(float)
        # pymrio writes NaN (0/0) or inf coefficients for sectors without output: they emit
        # nothing. A NaN where the sector produces is a gap in the table, kept as NaN (reading
        # it as 0 would make the sector look clean); users of the row refuse it by name.
        idle = x.to_numpy(float)[:, 0] == 0
        rows.append(np.where(idle[None, :] & ~np.isfinite(s), 0.0, s))
        unit = getattr(ext, "unit", None)
        for key in keys:
            u = ""
            if unit is not None and key in unit.index:
                u = str(np.asarray(unit.loc[key]).ravel()[0])
            units.append(u)
        names.extend(ext_names)
        full.extend(" / ".join(map(str, k)) if isinstance(k, tuple) else str(k) for k in keys)
        exts.extend([str(attr)] * len(keys))
    if not rows:
        return np.zeros((0, len(x))), [], [], [], []
    counts = Counter(names)
    names = [f"{e}:{n}" if counts[n] > 1 else n for n, e in zip(names, exts, strict=True)]
    return np.concatenate(rows, axis=0), names, units, exts, full


def from_pymrio(
    io: pymrio.IOSystem,
    region: str | None = None,
    *,
    dtype: jnp.dtype | str | None = None,
    solver: Solver | None = None,
    check: bool = True,
    tol: float | None = None,
    allow_negative_demand: bool = False,
) -> IOModel:
    """Build an :class:`IOModel` from a pymrio system (see the module docstring).

    Args:
        io: a pymrio ``IOSystem`` (e.g. :func:`load_test`, :func:`load_exiobase`); it is not
            modified.
        region: ``None`` for the full multi-regional model, or a region name for its domestic
            block.
        dtype: float dtype of the model's arrays (default float64 under ``jax_enable_x64``).
        solver: fixed-point options (default Anderson, strict).
        check: solve the unintervened model from zero and compare with the table's ``x``.
        tol: largest accepted relative error of that check (default 1e-6 in float64, 1e-4 in
            float32, where the solver stops at a relative residual of 1e-5).
        allow_negative_demand: accept negative final demand (net inventory draw-downs in real
            tables); otherwise it raises ``ValueError``.

    Raises:
        ValueError: an unknown region (listing the regions), an inconsistent table, or a model
            that fails the checks of :class:`IOModel`.
    """
    A, x, Y = _core(io)
    regs = regions(io)
    S, names, units, exts, keys = stressor_table(io, x)
    labels_region = [str(r) for r in A.index.get_level_values(0)]
    labels_sector = [str(s) for s in A.index.get_level_values(1)]
    a = A.to_numpy(float)
    xv = x.to_numpy(float)[:, 0]
    if region is None:
        sel = np.arange(len(xv))
        y = Y.to_numpy(float).sum(1)
        note = (
            "full multi-regional model: A and x of the table, y = final demand summed over "
            "every region's categories"
        )
    else:
        if str(region) not in regs:
            raise ValueError(unknown_name_message("region", region, regs))
        sel = np.flatnonzero(np.asarray(labels_region) == str(region))
        a = a[np.ix_(sel, sel)]
        xv = xv[sel]
        y = xv - a @ xv
        note = (
            f"domestic block of region {region!r}: A_rr and x_r of the table, cross-country flows "
            f"neglected; y_r = x_r - A_rr x_r (final demand for {region}'s products from every "
            "region plus its intermediate exports, held fixed)"
        )
    # Rounding in x - A x leaves tiny negative values where demand is zero.
    scale = float(np.max(np.abs(xv), initial=0.0))
    y = np.where(np.abs(y) <= 1e-12 * scale, 0.0, y)
    model = IOModel(
        a,
        y,
        x_observed=xv,
        S=S[:, sel],
        sectors=[labels_sector[i] for i in sel],
        regions=[labels_region[i] for i in sel],
        stressors=names,
        stressor_units=units,
        extensions=exts,
        stressor_keys=keys,
        solver=solver,
        dtype=dtype,
        allow_negative_demand=allow_negative_demand,
        note=note,
    )
    if not check:
        return model
    err = reproduction_error(model)
    if tol is None:
        tol = 1e-6 if model.A.dtype == jnp.float64 else 1e-4
    if not err <= tol:
        raise ValueError(
            f"the Leontief equilibrium of the {'full' if region is None else region!s} model "
            f"does not reproduce the table's output x (relative error {err:.3g} > {tol:g}); "
            "the table is not balanced (x != Z 1 + Y 1) or the solver did not converge"
        )
    return eqx.tree_at(lambda m: m.reproduction_error, model, err)


def reproduction_error(model: IOModel) -> float:
    """``||x*(u=0) - x_observed|| / ||x_observed||``, with ``x*`` solved from zero."""
    x, report = model.solve(x0=jnp.zeros_like(model.x_observed), strict=False)
    if not bool(report.converged):
        return float("inf")
    ref = np.asarray(model.x_observed, np.float64)
    diff = np.asarray(x, np.float64) - ref
    return float(np.linalg.norm(diff) / max(np.linalg.norm(ref), np.finfo(float).tiny))


def load(
    region: str | None = None,
    *,
    exiobase: str | Path | None = None,
    dtype: jnp.dtype | str | None = None,
    allow_negative_demand: bool = False,
) -> IOModel:
    """One call: the pymrio test system (default) or an Exiobase 3 archive, as an IOModel.

    Args:
        region: ``None`` for the full multi-regional model, or a region name for its domestic
            block.
        exiobase: path of an Exiobase 3 archive (default: pymrio's small test system).
        dtype: float dtype of the model's arrays (default float64 under ``jax_enable_x64``).
        allow_negative_demand: accept negative final demand (see :func:`from_pymrio`).
    """
    io = load_test() if exiobase is None else load_exiobase(exiobase)
    return from_pymrio(io, region, dtype=dtype, allow_negative_demand=allow_negative_demand)


__all__ = [
    "EXIOBASE_EMPLOYMENT",
    "EXIOBASE_GHG",
    "PAPER_EMPLOYMENT",
    "PAPER_GHG",
    "TEST_EMPLOYMENT",
    "TEST_GHG",
    "from_pymrio",
    "load",
    "load_exiobase",
    "load_test",
    "regions",
    "reproduction_error",
    "stressor_table",
]
