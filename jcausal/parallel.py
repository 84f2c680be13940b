"""Devices: a mesh over the unit (batch) axis and helpers to place data on it.

Every jcausal computation is batched along a leading unit axis, and the engine's per-unit
``vmap`` means units never interact; so sharding that axis over devices is all it takes to
spread ``sample``, ``counterfactual`` or ``log_prob`` over a machine's accelerators. Put the
inputs on the mesh with :func:`shard_units`; ``jit`` (inside the public functions) partitions
the computation to match, and the outputs come back sharded the same way. Multi-host runs call
``jax.distributed.initialize()`` first; nothing here uses ``pmap``.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import PyTree

#: Name of the mesh axis the units are split over.
UNITS = "units"


def unit_mesh(devices: int | None = None) -> Mesh:
    """A one-dimensional mesh named ``"units"`` over the first ``devices`` devices (default all)."""
    available = jax.devices()
    k = len(available) if devices is None else int(devices)
    if not 1 <= k <= len(available):
        raise ValueError(
            f"asked for {devices} devices, {len(available)} available; on CPU, set "
            "XLA_FLAGS=--xla_force_host_platform_device_count=N before importing jax to test"
        )
    return Mesh(np.asarray(available[:k]), (UNITS,))


def shard_units(tree: PyTree, mesh: Mesh | None = None) -> PyTree:
    """Place every array of ``tree`` on ``mesh``, split along its leading (unit) axis.

    Scalars (and 0-d arrays) are replicated. The number of units must be divisible by the
    number of devices: pad the batch, or use a mesh over fewer devices.

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
    """Copy every array of ``tree`` to every device of ``mesh`` (e.g. model parameters)."""
    mesh = unit_mesh() if mesh is None else mesh
    whole = NamedSharding(mesh, PartitionSpec())
    return jax.tree_util.tree_map(lambda x: jax.device_put(x, whole), tree)


__all__ = ["UNITS", "replicate", "shard_units", "unit_mesh"]
