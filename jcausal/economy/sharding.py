"""Placing a design sweep (cases × λ) on a device mesh: the grid split, the tables replicated.

Used by :func:`jcausal.economy.sweeps.sweep_cases` and so by every sweep of the design library
(:func:`jcausal.economy.design.sweep`, :func:`jcausal.economy.mrio.sweep`, ``jcausal design
--devices``). The grid's arrays (the parameters ``u`` ``(C, L, n)`` and the λ ``(C, L)``) are
split over one or two mesh axes: the λ over ``lambda_axis`` (each device holds every case's
tables and a slice of the λ), the cases over ``case_axis`` (each device holds the stacked tables
of its cases only). Shared tables are copied to every device, except that when the mesh has a
``"rows"`` axis of more than one device, the table's ``A`` is split by rows over it, so that a
table too large for one device (Exiobase's 9,800 sectors: 768 MB in float64) is spread; the
compiler then partitions the fixed point's matrix-vector products and the implicit gradient's
transposed ones. With whole tables the placed grid carries its layout, and
:meth:`jcausal.economy.sweeps.Cases.map` runs it under ``jax.shard_map`` (each device solves
its own part, no collective inside the fixed points); with split rows ``jit`` propagates the
placement through the compiled sweep. Either way the results equal the one-device run.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array

from .. import parallel


def place_grid(
    cases, u: Array, lambdas: Array, mesh: Mesh, case_axis: str | None, lambda_axis: str | None
) -> tuple:
    """``(cases, u, lambdas)`` placed on ``mesh`` (see the module docstring).

    Args:
        cases: a :class:`jcausal.economy.sweeps.Cases` (``.problem.model.A`` is the table).
        u: ``(C, L, n)`` parameters.
        lambdas: ``(C, L)`` λ values.
        mesh: a mesh (e.g. :func:`jcausal.parallel.sweep_mesh`).
        case_axis: the mesh axis the cases are split over, or ``None``.
        lambda_axis: the mesh axis the λ are split over, or ``None``.

    Raises:
        ValueError: an axis the mesh does not have (its axes are listed), one axis named for
            both, a number of cases or λ not divisible by its axis's devices, or ``A``'s rows
            by the ``"rows"`` axis's.
    """
    if case_axis is not None and case_axis == lambda_axis:
        raise ValueError(
            f"case_axis and lambda_axis are both {case_axis!r}; split the cases and the λ "
            "over different mesh axes (or one of them only)"
        )
    C, L = np.shape(lambdas)
    for axis, size, what in ((case_axis, C, "cases"), (lambda_axis, L, "λ values")):
        if axis is None:
            continue
        k = parallel.axis_size(mesh, axis, f"the sweep's {what}")
        if size % k:
            hint = (
                f"(e.g. --n-lambdas {k * max(1, size // k) - 1} with λ = 0, or --lambdas)"
                if what == "λ values"
                else "(add or drop regions, years or weightings)"
            )
            raise ValueError(
                f"the sweep has {size} {what}, not divisible by the {k} devices of mesh axis "
                f"{axis!r}; use a multiple of {k} {hint} or fewer devices"
            )
    mesh = parallel.auto_axes(mesh)  # (jit propagates the placement; see auto_axes)
    u = parallel.put(u, NamedSharding(mesh, PartitionSpec(case_axis, lambda_axis, None)))
    lambdas = parallel.put(lambdas, NamedSharding(mesh, PartitionSpec(case_axis, lambda_axis)))
    leaves, treedef = jax.tree.flatten(cases.problem)
    a = cases.problem.model.A
    rows = parallel.ROWS in mesh.axis_names and mesh.shape[parallel.ROWS] > 1
    placed = []
    for leaf, stacked in zip(leaves, cases.stacked, strict=True):
        lead = (case_axis,) if stacked else ()
        if leaf is a and rows:
            k = mesh.shape[parallel.ROWS]
            if np.shape(leaf)[-2] % k:
                raise ValueError(
                    f"a matrix of {np.shape(leaf)[-2]} rows cannot be split over the {k} "
                    f"devices of mesh axis {parallel.ROWS!r}; use a number of row devices "
                    "that divides it"
                )
            spec = PartitionSpec(*lead, parallel.ROWS, None)
        elif isinstance(leaf, jax.Array | np.ndarray):
            spec = PartitionSpec(*lead)
        else:  # a Python number stays a number (static under jit)
            placed.append(leaf)
            continue
        placed.append(parallel.put(leaf, NamedSharding(mesh, spec)))
    # Tables whole on every device: each device runs its part of the grid alone (shard_map in
    # Cases.map). Rows split: the compiler partitions the products (jit propagation).
    layout = None if rows else (mesh, case_axis, lambda_axis)
    problem = jax.tree.unflatten(treedef, placed)
    return type(cases)(problem, cases.stacked, cases.count, layout), u, lambdas


__all__ = ["place_grid"]
