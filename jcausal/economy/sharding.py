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

A sweep given a device *count* instead of a mesh (``mesh=8``, ``jcausal design --devices 8``)
gets the placement of :func:`auto_layout`: the λ split, except on CPU devices when ``A`` is
large (they share one memory bus and cache, and every device streaming its own copy of ``A``
through it costs more than the rows split's per-iteration gather; the crossover was measured
with ``benchmarks/scaling.py``, see :data:`CPU_ROWS_MIN_BYTES`) or on accelerators when ``A``
does not fit a device comfortably.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array

from .. import parallel

#: On CPU devices, a table whose ``A`` holds at least this many bytes (float64: 1,024 sectors
#: and more) has its rows split by default. Measured with ``benchmarks/scaling.py --only
#: sweep,rows --mrio ...`` on 8 fake devices of a 2-core machine (32 MB L3 cache): see the
#: README's "Scaling out" section for the figures.
CPU_ROWS_MIN_BYTES = 8 * 2**20
#: On an accelerator, ``A`` is split by rows when it would take more than this share of one
#: device's memory (the fixed point and its gradient need room for the iterates and the
#: compiler's buffers).
ACCELERATOR_SHARE = 0.25


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


def _divisors(k: int) -> list[int]:
    return [d for d in range(1, k + 1) if k % d == 0]


def auto_layout(
    n: int,
    lambdas: int,
    devices: int,
    *,
    itemsize: int = 8,
    platform: str = "cpu",
    memory: int | None = None,
) -> tuple[int, str]:
    """The number of devices to split ``A``'s rows over (the rest split the λ), and why.

    Rules (the default placement of a sweep given a device count):

    * CPU devices share one memory bus and last-level cache. With the λ split, each device
      streams its own copy of ``A`` every fixed-point iteration (``devices`` copies in all);
      with the rows split, one copy in all, at the price of gathering the iterate ``(L, n)``
      every iteration. So the rows are split when ``A`` has at least
      :data:`CPU_ROWS_MIN_BYTES` (the measured crossover): over the most devices that divide
      ``n`` and leave a device count dividing the λ for the rest.
    * An accelerator has its own memory: the λ split needs no communication inside the
      solves and is kept, unless ``A`` takes more than :data:`ACCELERATOR_SHARE` of a
      device's ``memory``; then over the fewest row devices that bring it under.

    Args:
        n: sectors (``A`` is ``(n, n)``, per case).
        lambdas: λ values per case.
        devices: devices of the sweep.
        itemsize: bytes per entry of ``A``.
        platform: ``jax.Device.platform`` (``"cpu"``, ``"gpu"``, ``"tpu"``).
        memory: bytes of one accelerator's memory (``None``: unknown, never split).

    Returns:
        ``(rows, reason)``: ``rows`` divides ``devices`` and ``n``; ``reason`` is one
        sentence for logs and metrics.
    """
    k, nbytes = int(devices), int(n) * int(n) * int(itemsize)
    mb = f"A holds {nbytes / 2**20:.3g} MB"
    fits = [r for r in _divisors(k) if n % r == 0 and lambdas % (k // r) == 0]
    if k == 1:
        return 1, "one device"
    if platform == "cpu":
        if nbytes < CPU_ROWS_MIN_BYTES:
            return 1, f"λ split: {mb}, under the CPU crossover of {CPU_ROWS_MIN_BYTES >> 20} MB"
        if fits and max(fits) > 1:
            return max(fits), (
                f"rows split over {max(fits)} of {k} CPU devices: {mb} (>= "
                f"{CPU_ROWS_MIN_BYTES >> 20} MB), one copy streamed instead of {k}"
            )
        return 1, f"λ split: {mb}, but no row split divides its {n} rows and the λ"
    if memory is None or nbytes <= ACCELERATOR_SHARE * memory:
        return 1, f"λ split: {mb}, which fits one {platform} device"
    need = [r for r in fits if nbytes / r <= ACCELERATOR_SHARE * memory]
    if need:
        return min(need), f"rows split over {min(need)} {platform} devices: {mb}"
    return max(fits), f"rows split over {max(fits)} {platform} devices (as far as they divide)"


def auto_mesh(n: int, lambdas: int, devices: int, itemsize: int = 8) -> tuple[Mesh, str]:
    """A :func:`jcausal.parallel.sweep_mesh` over ``devices`` laid out by :func:`auto_layout`.

    Args:
        n: sectors of the table.
        lambdas: λ values per case.
        devices: number of devices (of ``jax.devices()``, every process's).
        itemsize: bytes per entry of ``A``.

    Returns:
        ``(mesh, reason)``.

    Raises:
        ValueError: more devices than available.
    """
    if isinstance(devices, bool) or int(devices) != devices or devices < 1:
        raise ValueError(f"devices must be a positive whole number, got {devices!r}")
    available = jax.devices()
    if devices > len(available):
        parallel.sweep_mesh(devices)  # (raises the error naming the devices available)
    dev = available[0]
    stats = dev.memory_stats() if dev.platform != "cpu" else None
    memory = (stats or {}).get("bytes_limit")
    rows, why = auto_layout(n, lambdas, int(devices), itemsize=itemsize,
                            platform=dev.platform, memory=memory)  # fmt: skip
    return parallel.sweep_mesh(int(devices), rows=rows), why


def resolve_mesh(cases, lambdas: np.ndarray, mesh: Mesh | int | None) -> Mesh | None:
    """``mesh`` as given, or :func:`auto_mesh` for a device count (``cases``: stacked problems).

    Raises:
        ValueError: a device count that is not a positive whole number, or too many.
    """
    if mesh is None or isinstance(mesh, Mesh):
        return mesh
    if isinstance(mesh, bool) or not isinstance(mesh, int | np.integer):
        raise TypeError(f"mesh must be a jax.sharding.Mesh or a device count, got {mesh!r}")
    a = cases.problem.model.A
    return auto_mesh(np.shape(a)[-1], np.shape(lambdas)[-1], int(mesh), a.dtype.itemsize)[0]


__all__ = [
    "ACCELERATOR_SHARE",
    "CPU_ROWS_MIN_BYTES",
    "auto_layout",
    "auto_mesh",
    "place_grid",
    "resolve_mesh",
]
