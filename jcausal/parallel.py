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


__all__ = [
    "UNITS",
    "batch_shardings",
    "constrain_batch",
    "replicate",
    "shard_units",
    "unit_mesh",
]
