"""Evaluating a large batch of units in chunks inside one compiled call.

A counterfactual over ``N`` units allocates every intermediate (abducted noises, parents,
intervened values) at full size ``N``: beyond the CPU caches each is a fresh buffer whose pages
fault in on first touch, so time per unit grows with ``N``. Walking the units in chunks of
``chunk_size`` inside one compiled loop keeps the intermediates chunk-sized (reused from one
chunk to the next, and cache-resident); only the outputs are ``N``-sized. Memory stays linear
in ``N``.

The result equals the unchunked one exactly: every unit's computation is the same, its random
keys are split for all ``N`` units before chunking, and per-unit intervention values travel
with their units. The last chunk is aligned to end at ``N`` (it overlaps the previous one
rather than padding), so no unit is computed on padded data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, PyTree

from .interventions import Hard, Intervention, Scale, Shift

# The field holding the number(s) of each intervention that may carry one value per unit.
_PER_UNIT = {Hard: "value", Shift: "delta", Scale: "alpha"}


def map_chunks(
    fn: Callable[[PyTree], PyTree], units: PyTree[Array], n: int, chunk_size: int | None
) -> PyTree[Array]:
    """``fn(units)`` computed ``chunk_size`` units at a time (one compiled loop).

    Args:
        fn: maps a pytree of per-unit arrays (leading axis ``m``) to a pytree of per-unit
            outputs (leading axis ``m``); unit ``i`` of the output may depend only on unit
            ``i`` of the input.
        units: pytree of arrays with leading axis ``n`` (observations, keys, ...).
        n: number of units.
        chunk_size: units per chunk; ``None`` or ``>= n`` calls ``fn`` once.

    Returns:
        The outputs, leading axis ``n``.
    """
    if chunk_size is None or chunk_size >= n:
        return fn(units)
    size = int(chunk_size)
    count = -(-n // size)

    def take(x, start):
        return jax.lax.dynamic_slice_in_dim(x, start, size)

    struct = jax.eval_shape(fn, jax.tree.map(lambda x: take(x, 0), units))
    out = jax.tree.map(lambda s: jnp.zeros((n, *s.shape[1:]), s.dtype), struct)

    def body(i, out):
        # The last chunk ends at n: it may repeat a few units of the one before, with the
        # same result, instead of running on padding.
        start = jnp.minimum(i * size, n - size)
        res = fn(jax.tree.map(lambda x: take(x, start), units))
        return jax.tree.map(
            lambda o, r: jax.lax.dynamic_update_slice_in_dim(o, r, start, 0), out, res
        )

    return jax.lax.fori_loop(0, count, body, out)


def split_interventions(
    interventions: Mapping[str, Intervention], unit_ndim: Mapping[str, int], n: int
) -> tuple[dict[str, Array], Callable[[dict[str, Array]], dict[str, Intervention]]]:
    """Separate the per-unit numbers of ``Hard`` / ``Shift`` / ``Scale`` interventions.

    A number with a leading axis of size ``n`` and one more axis than the node's unit shape
    gives each unit its own value (see ``broadcast_units``): it must be chunked with the units.

    Returns:
        ``(per_unit, rebuild)``: ``{node: array (n, ...)}`` and a function that rebuilds the
        interventions from a chunk of those arrays.
    """
    per_unit = {}
    for node, iv in interventions.items():
        field = _PER_UNIT.get(type(iv))
        if field is None:
            continue
        value = getattr(iv, field)
        if n > 1 and jnp.ndim(value) == 1 + unit_ndim[node] and jnp.shape(value)[0] == n:
            per_unit[node] = value

    def rebuild(chunk: dict[str, Array]) -> dict[str, Intervention]:
        out = dict(interventions)
        for node, value in chunk.items():
            field = _PER_UNIT[type(out[node])]
            out[node] = eqx.tree_at(lambda iv, f=field: getattr(iv, f), out[node], value)
        return out

    return per_unit, rebuild


__all__ = ["map_chunks", "split_interventions"]
