"""A lean ``jit`` for the engine's entry points.

``eqx.filter_jit`` costs ~200 us per call on this CPU (generic argument binding and
partitioning), which is a third of a 100k-unit counterfactual. The entry points here always take
the same kind of arguments, so a smaller dispatcher does: flatten the arguments once, pass the
array leaves to a cached ``jax.jit`` program, and key the cache on everything else (the tree
structure, the non-array leaves such as the mechanisms' functions, and the static arguments).
Semantics match ``filter_jit``: arrays are traced, everything else is static.

Because functions are static, a model rebuilt with fresh ``lambda``s (or closures) on every call
compiles again every time (seconds per call). The dispatcher notices when it compiles the same
program for arguments that differ only in function objects with the same code, and warns once
per program with the node and the function at fault (:class:`RecompileWarning`).
"""

from __future__ import annotations

import functools
import itertools
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import numpy as np

from ..solvers.results import reraise_solver_errors

_ARRAY = (jax.Array, np.ndarray, np.generic)


class RecompileWarning(UserWarning):
    """The same compiled program was rebuilt for fresh copies of the same functions."""


#: Compilations of one program for functions with the same code before the warning.
RECOMPILE_WARN_AFTER = 3


def _code(x: Any) -> Any:
    """What a static leaf means, ignoring the identity of functions (their code instead)."""
    code = getattr(x, "__code__", None)
    if code is not None:
        return ("code", code)
    func = getattr(x, "func", None)  # functools.partial
    if func is not None and hasattr(x, "args"):
        return ("partial", _code(func), len(x.args))
    return x


class _RetraceWatch:
    """Counts compilations of one program per code signature and warns on repeats.

    The signature is the program's static leaves with function identities replaced by their code;
    it warns once per signature when functions with the same code keep arriving as new objects.
    """

    def __init__(self, name: str, maxsize: int = 1024):
        self.name = name
        self.maxsize = maxsize
        self._codes: dict = {}
        self._warned: set = set()

    def seen(self, dynamic, treedef, mask, others, static, stacklevel: int) -> None:
        try:
            sig = (treedef, mask, tuple(_code(o) for o in others), static)
            hash(sig)
        except TypeError:
            return
        count, last = self._codes.get(sig, (0, None))
        self._codes[sig] = (count + 1, others)
        if len(self._codes) > self.maxsize:
            self._codes.pop(next(iter(self._codes)))
        if count + 1 < RECOMPILE_WARN_AFTER or sig in self._warned or last is None:
            return
        self._warned.add(sig)
        changed = [j for j, (a, b) in enumerate(zip(last, others, strict=True)) if a is not b]
        where = _describe(dynamic, mask, changed[:3])
        warnings.warn(
            f"jcausal recompiled {self.name} {count + 1} times for models that differ only in "
            f"new function objects with the same code ({where}). Each new lambda or closure is "
            "a new static argument and recompiles (seconds per call): define mechanism "
            "functions once (at module level, or outside the loop) and reuse them; pass "
            "changing numbers as params arrays.",
            RecompileWarning,
            stacklevel=stacklevel,
        )


def warn_on_retrace(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Make retracing an ``eqx.filter_jit`` function for same-code function objects warn.

    Put the decorator *inside* the jit; it warns like the engine's verbs.

    Tracing happens exactly when the jit's cache misses, so counting traces per code
    signature of the static (non-array) arguments finds recompilations caused by new lambdas.

    Example:
        >>> @eqx.filter_jit
        ... @warn_on_retrace
        ... def _solve(scm, key): ...
    """
    watch = _RetraceWatch(f"jc.{_public_name(fn)}")

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        dynamic = (args, kwargs)
        leaves, treedef = jax.tree_util.tree_flatten(dynamic)
        mask = tuple(isinstance(x, _ARRAY) for x in leaves)
        others = tuple(x for x, m in zip(leaves, mask, strict=True) if not m)
        # Under filter_jit: the user's frame is above wrapped, the jit's internals, the verb.
        watch.seen(dynamic, treedef, mask, others, (), stacklevel=3)
        return fn(*args, **kwargs)

    return wrapped


class lean_jit:
    """``lean_jit(fn)(dynamic_args: tuple, *static)``: ``fn(*dynamic_args, *static)`` compiled.

    ``dynamic_args`` is any pytree (tuple) whose array leaves are traced; ``static`` must be
    hashable. Compiled programs are kept for the last ``maxsize`` distinct signatures.
    """

    def __init__(self, fn: Callable[..., Any], maxsize: int = 256):
        self.fn = fn
        self.maxsize = maxsize
        self.cache: OrderedDict = OrderedDict()
        self._retraces = _RetraceWatch(f"jc.{_public_name(fn)}", 4 * maxsize)

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
            self._watch(dynamic, treedef, mask, others, static)
            compiled = jax.jit(self._program(treedef, mask, others, static))
            self.cache[key] = compiled
            if len(self.cache) > self.maxsize:
                self.cache.popitem(last=False)
        else:
            self.cache.move_to_end(key)
        # A failed equilibrium solve inside (eqx.error_if) reads as the solver's message.
        with reraise_solver_errors():
            return compiled(arrays)

    def _watch(self, dynamic, treedef, mask, others, static) -> None:
        self._retraces.seen(dynamic, treedef, mask, others, static, stacklevel=6)

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


def _public_name(fn: Callable) -> str:
    return getattr(fn, "__name__", "an engine call").strip("_").removesuffix("_jit")


def _describe(dynamic: tuple, mask: tuple, positions: list[int]) -> str:
    """Readable names (``node 'y': fn <lambda> at file:line``) of static leaves by position."""
    paths = []
    for part in dynamic:
        paths.extend(jax.tree_util.tree_flatten_with_path(part)[0])
    statics = [(p, x) for (p, x), m in zip(paths, mask, strict=False) if not m]
    out = []
    for j in positions:
        if j >= len(statics):
            continue
        path, leaf = statics[j]
        names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
        node = None
        for a, b in itertools.pairwise(names):
            if a in ("mechanisms", "interventions") and isinstance(b, str):
                node = b
        code = getattr(leaf, "__code__", None) or getattr(
            getattr(leaf, "func", None), "__code__", None
        )
        fn = (
            f"{code.co_name} at {code.co_filename}:{code.co_firstlineno}"
            if code is not None
            else type(leaf).__name__
        )
        out.append(f"node {node!r}: {fn}" if node else f"{jax.tree_util.keystr(path)}: {fn}")
    return "; ".join(out) or "function arguments"


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
