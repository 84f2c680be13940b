"""Placing a design sweep on a device mesh: λ split, the table replicated or split by rows.

Used by :func:`jcausal.economy.design.sweep` (``mesh=``). The sweep's per-λ arrays (the
parameters ``u`` ``(L, n)`` and the λ values) are split over the mesh's ``"sweep"`` axis; the
problem (table, indicators) is copied to every device, except that when the mesh has a
``"rows"`` axis of more than one device, the table's ``A`` is split by rows over it, so that
a table too large for one device (Exiobase's 9,800 sectors: 768 MB in float64) is spread; the
compiler then partitions the fixed point's matrix-vector products and the implicit gradient's
transposed ones. ``jit`` propagates these placements through the whole compiled sweep: no
code of the sweep changes, and the results equal the one-device run.
"""

from __future__ import annotations

import equinox as eqx
from jax.sharding import Mesh
from jaxtyping import Array, PyTree

from .. import parallel


def place_sweep(
    problem: PyTree, u: Array, lambdas: Array, mesh: Mesh
) -> tuple[PyTree, Array, Array]:
    """``(problem, u, lambdas)`` placed on ``mesh`` (see the module docstring).

    Args:
        problem: a design problem (``.model.A`` is the table).
        u: ``(L, n)`` per-λ parameters.
        lambdas: ``(L,)`` λ values.
        mesh: a mesh with a ``"sweep"`` axis (:func:`jcausal.parallel.sweep_mesh`), and
            optionally ``"rows"``.

    Raises:
        ValueError: the mesh has no ``"sweep"`` axis, ``L`` is not divisible by its size, or
            ``A``'s rows by the ``"rows"`` axis's size.
    """
    if u.ndim != 2:
        raise ValueError(f"a sharded sweep needs a 1-D array of λ values, got shape {u.shape[:-1]}")
    k = parallel.axis_size(mesh, parallel.SWEEP, "the λ sweep")
    if u.shape[0] % k:
        raise ValueError(
            f"the sweep has {u.shape[0]} λ values, not divisible by the {k} devices of mesh "
            f"axis {parallel.SWEEP!r}; use a multiple of {k} values (e.g. --n-lambdas "
            f"{k * max(1, u.shape[0] // k) - 1} with λ = 0, or --lambdas) or fewer devices"
        )
    u, lambdas = parallel.shard_sweep((u, lambdas), mesh)
    placed = parallel.replicate_arrays(problem, mesh)
    if parallel.ROWS in mesh.axis_names and mesh.shape[parallel.ROWS] > 1:
        rows = parallel.split_rows(problem.model.A, mesh)
        placed = eqx.tree_at(lambda p: p.model.A, placed, rows)
    return placed, u, lambdas


__all__ = ["place_sweep"]
