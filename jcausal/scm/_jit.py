"""A lean ``jit`` for the engine's entry points.

``eqx.filter_jit`` costs ~200 us per call on this CPU (generic argument binding and
partitioning), which is a third of a 100k-unit counterfactual. The entry points here always take
the same kind of arguments, so a smaller dispatcher does: flatten the arguments once, pass the
array leaves to a cached ``jax.jit`` program, and key the cache on everything else (the tree
structure, the non-array leaves such as the mechanisms' functions, and the static arguments).
Semantics match ``filter_jit``: arrays are traced, everything else is static.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import numpy as np

_ARRAY = (jax.Array, np.ndarray, np.generic)


class lean_jit:
    """``lean_jit(fn)(dynamic_args: tuple, *static)``: ``fn(*dynamic_args, *static)`` compiled.

    ``dynamic_args`` is any pytree (tuple) whose array leaves are traced; ``static`` must be
    hashable. Compiled programs are kept for the last ``maxsize`` distinct signatures.
    """

    def __init__(self, fn: Callable[..., Any], maxsize: int = 256):
        self.fn = fn
        self.maxsize = maxsize
        self.cache: OrderedDict = OrderedDict()

    def __call__(self, dynamic: tuple, *static: Any) -> Any:
        leaves, treedefs = [], []
        for part in dynamic:
            part_leaves, part_def = _flatten(part)
            leaves.extend(part_leaves)
            treedefs.append((part_def, len(part_leaves)))
        treedef = tuple(treedefs)
        mask = tuple(isinstance(x, _ARRAY) for x in leaves)
        arrays = [x for x, m in zip(leaves, mask, strict=True) if m]
        others = tuple(x for x, m in zip(leaves, mask, strict=True) if not m)
        key = (treedef, mask, others, static)
        compiled = self.cache.get(key)
        if compiled is None:
            compiled = jax.jit(self._program(treedef, mask, others, static))
            self.cache[key] = compiled
            if len(self.cache) > self.maxsize:
                self.cache.popitem(last=False)
        else:
            self.cache.move_to_end(key)
        return compiled(arrays)

    def _program(self, treedef, mask, others, static):
        fn = self.fn

        def program(arrays):
            it_a, it_o = iter(arrays), iter(others)
            leaves = [next(it_a) if m else next(it_o) for m in mask]
            parts, start = [], 0
            for part_def, size in treedef:
                parts.append(jax.tree_util.tree_unflatten(part_def, leaves[start : start + size]))
                start += size
            return fn(*parts, *static)

        return program


# Models are immutable equinox Modules that users pass again and again; flattening one (distrax
# distributions included) is the largest per-call cost left, so remember it by identity. Entries
# hold the model only weakly and are dropped when it dies, so a cached model's arrays (an
# economy's A can be GBs) are never kept alive by the cache.
_FLAT: dict[int, tuple[weakref.ref, list, Any]] = {}


def _flatten(obj: Any) -> tuple[list, Any]:
    if not isinstance(obj, eqx.Module):
        return jax.tree_util.tree_flatten(obj)
    hit = _FLAT.get(id(obj))
    if hit is not None and hit[0]() is obj:
        return hit[1], hit[2]
    leaves, treedef = jax.tree_util.tree_flatten(obj)
    if len(_FLAT) < 64 and not any(isinstance(x, jax.core.Tracer) for x in leaves):
        try:
            ref = weakref.ref(obj)
        except TypeError:  # not weak-referenceable: just do not cache
            return leaves, treedef
        key = id(obj)
        _FLAT[key] = (ref, leaves, treedef)
        weakref.finalize(obj, _FLAT.pop, key, None)
    return leaves, treedef
