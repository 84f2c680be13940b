"""Devices: a mesh over the unit (batch) axis and helpers to place data on it.

Every jcausal computation is batched along a leading unit axis, and the engine's per-unit
``vmap`` means units never interact; so sharding that axis over devices is all it takes to
spread ``sample``, ``counterfactual`` or ``log_prob`` over a machine's accelerators. Put the
inputs on the mesh with :func:`shard_units`; ``jit`` (inside the public functions) partitions
the computation to match, and the outputs come back sharded the same way. Multi-host runs call
``jax.distributed.initialize()`` first; nothing here uses ``pmap``.

Training (:func:`jcausal.train.fit`) uses the same helpers for data parallelism:
:func:`batch_shardings` reads a mesh (or a batch ``NamedSharding``) and :func:`constrain_batch`
splits a batch across the devices inside the compiled step.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
from jaxtyping import PyTree

#: Name of the mesh axis the units are split over.
UNITS = "units"
#: Name of the mesh axis a sweep (λ, regions, years, ...) is split over.
SWEEP = "sweep"
#: Name of the mesh axis the cases of a sweep (regions, years, stressor weightings) are split over.
CASES = "cases"
#: Name of the mesh axis the rows of a large matrix (an MRIO table's A) are split over.
ROWS = "rows"


def unit_mesh(devices: int | None = None) -> Mesh:
    """A one-dimensional mesh named ``"units"`` over the first ``devices`` devices (default all).

    Built with ``jax.make_mesh`` with an Auto axis: ``jit`` propagates the unit sharding of
    the inputs through the computation (Explicit axes would demand a ``reshard`` wherever
    an operation's output sharding is ambiguous).
    """
    available = jax.devices()
    k = len(available) if devices is None else int(devices)
    if not 1 <= k <= len(available):
        raise ValueError(
            f"asked for {devices} devices, {len(available)} available; on CPU, set "
            "XLA_FLAGS=--xla_force_host_platform_device_count=N before importing jax to test"
        )
    return jax.make_mesh((k,), (UNITS,), axis_types=(AxisType.Auto,), devices=available[:k])


def shard_units(tree: PyTree, mesh: Mesh | None = None) -> PyTree:
    """Place every array of ``tree`` on ``mesh``, split along its leading (unit) axis.

    Scalars (and 0-d arrays) are replicated. The number of units must be divisible by the
    number of devices: pad the batch, or use a mesh over fewer devices.

    Args:
        tree: pytree of arrays with a leading unit axis.
        mesh: device mesh (default: :func:`unit_mesh` over every device).

    Raises:
        ValueError: naming the leaf whose unit axis does not divide evenly.
    """
    mesh = unit_mesh() if mesh is None else mesh
    k = math.prod(mesh.devices.shape)
    split = NamedSharding(mesh, PartitionSpec(UNITS))
    whole = NamedSharding(mesh, PartitionSpec())

    def place(path, x):
        if np.ndim(x) == 0:
            return jax.device_put(x, whole)
        if np.shape(x)[0] % k:
            name = jax.tree_util.keystr(path) or "the array"
            raise ValueError(
                f"{name} has {np.shape(x)[0]} units, not divisible by {k} devices; pad the "
                "batch or use unit_mesh(devices) with a divisor"
            )
        return jax.device_put(x, split)

    return jax.tree_util.tree_map_with_path(place, tree)


def replicate(tree: PyTree, mesh: Mesh | None = None) -> PyTree:
    """Copy every array of ``tree`` to every device of ``mesh`` (e.g. model parameters).

    Args:
        tree: pytree of arrays.
        mesh: device mesh (default: :func:`unit_mesh` over every device).
    """
    mesh = unit_mesh() if mesh is None else mesh
    whole = NamedSharding(mesh, PartitionSpec())
    return jax.tree_util.tree_map(lambda x: jax.device_put(x, whole), tree)


def batch_shardings(
    sharding: Mesh | NamedSharding | None,
) -> tuple[NamedSharding | None, NamedSharding | None, int]:
    """Read a data-parallel layout: ``(replicated, batch, number of batch shards)``.

    Args:
        sharding: a ``Mesh`` (the batch's leading axis is split over all its axes), a
            ``NamedSharding`` for the batch's leading axis, or None (one device).

    Returns:
        The sharding that replicates parameters over the mesh, the sharding of a batch, and
        how many pieces a batch is cut into (a batch size must be divisible by it);
        ``(None, None, 1)`` for ``sharding=None``.

    Raises:
        TypeError: ``sharding`` is neither a mesh nor a ``NamedSharding``.
    """
    if sharding is None:
        return None, None, 1
    if isinstance(sharding, Mesh):
        names = tuple(sharding.axis_names)
        batch = NamedSharding(sharding, PartitionSpec(names))
    elif isinstance(sharding, NamedSharding):
        batch = sharding
    else:
        raise TypeError(
            "sharding must be a jax.sharding.Mesh (the batch is split over all its axes) or a "
            f"NamedSharding for the batch's leading axis, got {type(sharding).__name__}"
        )
    mesh = batch.mesh
    spec = batch.spec[0] if len(batch.spec) else None
    names = () if spec is None else (spec if isinstance(spec, tuple) else (spec,))
    shards = int(np.prod([mesh.shape[a] for a in names])) if names else 1
    return NamedSharding(mesh, PartitionSpec()), batch, shards


def constrain_batch(batch: PyTree, sharding: NamedSharding) -> PyTree:
    """Split a batch's leading axis across devices, inside ``jit``.

    Meshes from ``jax.make_mesh`` have Explicit axes by default, which take ``reshard``;
    meshes with Auto axes take a sharding constraint that the compiler propagates.

    Args:
        batch: pytree of arrays with a leading unit axis (traced values).
        sharding: the sharding of the unit axis (the batch sharding of :func:`batch_shardings`).
    """
    explicit = any(t == AxisType.Explicit for t in sharding.mesh.axis_types)
    if explicit:
        return jax.tree_util.tree_map(lambda x: jax.sharding.reshard(x, sharding), batch)
    return jax.lax.with_sharding_constraint(batch, sharding)


def split_leaves(tree: PyTree, batch: NamedSharding, min_size: int = 4096) -> PyTree:
    """A sharding per leaf of ``tree`` that splits it over the devices of a batch sharding.

    The layout of optimiser state sharded across data-parallel devices (ZeRO stage 1): each
    device holds and updates a slice of every large leaf instead of all of it. A leaf is
    split along its first axis whose length the number of batch shards divides; leaves with
    fewer than ``min_size`` elements, or with no such axis, are replicated (a collective for
    a few numbers costs more than updating them everywhere).

    Args:
        tree: pytree of arrays (or shape-dtype structs).
        batch: the batch sharding (:func:`batch_shardings`); its leading axis's mesh axes
            are the ones the leaves are split over.
        min_size: smallest number of elements a leaf must have to be split.

    Returns:
        A pytree of ``NamedSharding`` with the structure of ``tree``.
    """
    mesh = batch.mesh
    spec = batch.spec[0] if len(batch.spec) else None
    names = () if spec is None else (spec if isinstance(spec, tuple) else (spec,))
    k = int(np.prod([mesh.shape[a] for a in names])) if names else 1
    whole = NamedSharding(mesh, PartitionSpec())

    def choose(x):
        shape = np.shape(x)
        if k == 1 or math.prod(shape) < min_size:
            return whole
        for axis, length in enumerate(shape):
            if length % k == 0:
                return NamedSharding(mesh, PartitionSpec(*([None] * axis), names))
        return whole

    return jax.tree_util.tree_map(choose, tree)


def constrain(tree: PyTree, shardings: PyTree | NamedSharding) -> PyTree:
    """Give the arrays of ``tree`` these shardings inside ``jit`` (one, or one per leaf).

    Auto mesh axes take a sharding constraint the compiler propagates; Explicit ones take
    ``reshard`` (as in :func:`constrain_batch`).
    """
    if isinstance(shardings, NamedSharding):
        shardings = jax.tree_util.tree_map(lambda _: shardings, tree)

    def one(x, s):
        if any(t == AxisType.Explicit for t in s.mesh.axis_types):
            return jax.sharding.reshard(x, s)
        return jax.lax.with_sharding_constraint(x, s)

    return jax.tree_util.tree_map(one, tree, shardings)


def sweep_mesh(devices: int | None = None, rows: int = 1, cases: int = 1) -> Mesh:
    """A ``("cases", "sweep", "rows")`` mesh for a sweep of cases (regions, years, ...) × λ.

    The devices are arranged ``cases × (devices // (cases · rows)) × rows``: the cases of a
    sweep are split over ``"cases"`` (each device holds its cases' tables), the λ over
    ``"sweep"``, and a matrix's rows over ``"rows"``. ``cases=1, rows=1`` (default) replicates
    the tables on every device and splits only the λ; a table too large for one device takes
    ``rows > 1``: its ``A`` is split by rows and the fixed point's matrix-vector products (and
    their transposes in the implicit gradient) run sharded. In a multi-process run (after
    ``jax.distributed.initialize()``) the mesh spans every process's devices.

    Args:
        devices: number of devices (default all, ``jax.devices()``: every process's).
        rows: devices per row group.
        cases: devices the cases are split over.

    Raises:
        ValueError: more devices than available, or ``rows · cases`` not dividing ``devices``.
    """
    available = jax.devices()
    k = len(available) if devices is None else devices
    if isinstance(k, bool) or int(k) != k or not 1 <= k <= len(available):
        raise ValueError(
            f"asked for {devices} devices, {len(available)} available; on CPU, set "
            "XLA_FLAGS=--xla_force_host_platform_device_count=N before importing jax to test"
        )
    k = int(k)
    for name, v in (("rows", rows), ("cases", cases)):
        if isinstance(v, bool) or int(v) != v or v < 1 or k % int(v):
            raise ValueError(f"{name}={v!r} must be a positive divisor of the {k} devices")
    rows, cases = int(rows), int(cases)
    if k % (rows * cases):
        raise ValueError(
            f"rows={rows} × cases={cases} must divide the {k} devices (the rest split the λ)"
        )
    return jax.make_mesh(
        (cases, k // (rows * cases), rows),
        (CASES, SWEEP, ROWS),
        axis_types=(AxisType.Auto,) * 3,
        devices=available[:k],
    )


def auto_axes(mesh: Mesh) -> Mesh:
    """``mesh`` with Auto axes (the same devices and names).

    Placements made on it let ``jit`` propagate shardings through any computation; a mesh
    from ``jax.make_mesh`` has Explicit axes by default, on which an operation whose output
    sharding is ambiguous (a scatter into a sharded batch) is refused.
    """
    if all(t == AxisType.Auto for t in mesh.axis_types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))


def axis_size(mesh: Mesh, axis: str, what: str = "an array") -> int:
    """The number of devices along ``axis`` of ``mesh``.

    Raises:
        ValueError: ``mesh`` has no axis ``axis`` (its axes are listed).
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if axis not in mesh.axis_names:
        raise ValueError(
            f"the mesh has no axis {axis!r} to split {what} over (its axes: "
            f"{list(mesh.axis_names)}); build it with jcausal.parallel.sweep_mesh or name "
            "an existing axis"
        )
    return int(mesh.shape[axis])


def shard_sweep(tree: PyTree, mesh: Mesh, axis: str = SWEEP) -> PyTree:
    """Place every array of ``tree`` on ``mesh``, its leading (sweep) axis split over ``axis``.

    The other mesh axes replicate. Scalars are replicated.

    Args:
        tree: pytree of arrays with a leading sweep axis (λ values, per-λ parameters, ...).
        mesh: the mesh (e.g. :func:`sweep_mesh`).
        axis: the mesh axis to split over.

    Raises:
        ValueError: ``axis`` is not an axis of ``mesh``, or a leading axis not divisible by
            its size (naming the leaf).
    """
    k = axis_size(mesh, axis, "the sweep")
    split = NamedSharding(mesh, PartitionSpec(axis))
    whole = NamedSharding(mesh, PartitionSpec())

    def place(path, x):
        if np.ndim(x) == 0:
            return _put(x, whole)
        if np.shape(x)[0] % k:
            name = jax.tree_util.keystr(path) or "the sweep"
            raise ValueError(
                f"{name} has {np.shape(x)[0]} entries, not divisible by the {k} devices of "
                f"mesh axis {axis!r}; use a sweep length that is a multiple of {k} (pad the "
                "λ grid) or fewer devices"
            )
        return _put(x, split)

    return jax.tree_util.tree_map_with_path(place, tree)


def split_rows(matrix: jax.Array, mesh: Mesh, axis: str = ROWS) -> jax.Array:
    """Place a matrix on ``mesh`` with its rows split over ``axis`` (columns whole).

    Raises:
        ValueError: ``axis`` is not an axis of ``mesh``, or the rows do not divide evenly.
    """
    k = axis_size(mesh, axis, "the rows")
    if np.shape(matrix)[0] % k:
        raise ValueError(
            f"a matrix of {np.shape(matrix)[0]} rows cannot be split over the {k} devices of "
            f"mesh axis {axis!r}; use a number of row devices that divides it"
        )
    return _put(matrix, NamedSharding(mesh, PartitionSpec(axis, None)))


def replicate_arrays(tree: PyTree, mesh: Mesh) -> PyTree:
    """Copy the array leaves of ``tree`` to every device of ``mesh``; other leaves are kept.

    Unlike :func:`replicate`, Python numbers stay numbers (static under ``eqx.filter_jit``).
    """
    whole = NamedSharding(mesh, PartitionSpec())
    return jax.tree_util.tree_map(
        lambda x: _put(x, whole) if isinstance(x, jax.Array | np.ndarray) else x, tree
    )


def _put(x, sharding: NamedSharding) -> jax.Array:
    if jax.process_count() == 1 or not getattr(x, "is_fully_addressable", True):
        return jax.device_put(x, sharding)
    # Several processes: every process holds the whole (same) value and keeps its shards.
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])


def put(tree: PyTree, sharding: NamedSharding | PyTree) -> PyTree:
    """``jax.device_put(tree, sharding)``, also for a mesh spanning several processes.

    With several processes each must pass the same values (e.g. parameters initialised from
    the same key); each process keeps the shards of its own devices. Arrays that already
    span several processes are resharded.

    Args:
        tree: pytree of arrays.
        sharding: one sharding for every leaf, or a pytree of them whose structure is a
            prefix of ``tree``'s (e.g. one per leaf from :func:`split_leaves`, or one per
            part of a tuple).
    """
    if isinstance(sharding, NamedSharding):
        return jax.tree_util.tree_map(lambda x: _put(x, sharding), tree)
    return jax.tree_util.tree_map(
        lambda s, part: put(part, s),
        sharding,
        tree,
        is_leaf=lambda s: isinstance(s, NamedSharding),
    )


def local(tree: PyTree) -> PyTree:
    """Make arrays spread over several processes process-local.

    A replicated array becomes a copy on a local device; a sharded one is gathered from every
    process (a collective: every process calls this together). Others are returned as they are.
    """

    def get(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return x
        if x.is_fully_replicated:
            return x.addressable_data(0)
        from jax.experimental import multihost_utils

        return jax.numpy.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree_util.tree_map(get, tree)


def process_local_data(tree: PyTree, sharding: Mesh | NamedSharding) -> PyTree:
    """Global arrays built from each process's slice of the units (multi-process training).

    Each process passes only its own units (``n / process_count`` of them, in process order);
    the result is one global array per leaf, its leading axis split over the devices of the
    mesh, that :func:`jcausal.train.fit` and the engine use like any sharded array. One
    process: the data are simply placed.

    Args:
        tree: this process's units, a pytree of arrays with a leading unit axis.
        sharding: a mesh (units split over all its axes) or the batch ``NamedSharding``.

    Returns:
        The pytree of global ``jax.Array``.
    """
    _, batch, _ = batch_shardings(sharding)
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(batch, np.asarray(x)), tree
    )


def to_host(tree: PyTree) -> PyTree:
    """Copy every array of ``tree`` to numpy, gathering arrays spread over processes.

    A fully addressable array is copied; a replicated one is read from a local device; a
    sharded one is gathered from every process (``process_allgather``: a collective, so
    every process must call this together). Other leaves are returned as they are.
    """

    def get(x):
        if not isinstance(x, jax.Array):
            return x
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return x
        if x.is_fully_addressable:
            return np.asarray(x)
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree_util.tree_map(get, tree)


__all__ = [
    "CASES",
    "ROWS",
    "SWEEP",
    "UNITS",
    "auto_axes",
    "axis_size",
    "batch_shardings",
    "constrain",
    "constrain_batch",
    "local",
    "process_local_data",
    "put",
    "replicate",
    "replicate_arrays",
    "shard_sweep",
    "shard_units",
    "split_leaves",
    "split_rows",
    "sweep_mesh",
    "to_host",
    "unit_mesh",
]
