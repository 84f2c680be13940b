"""Argument checks of ``fit`` and the names its NaN guard reports."""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray, PyTree


def integer(name: str, value: Any, low: int) -> int:
    """``value`` as an int ``>= low``; floats (even 3.0) and bools are refused."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        out = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{name} must be an integer, got {value!r} ({type(value).__name__}); pass e.g. "
            f"{name}={int(value) if isinstance(value, float) and math.isfinite(value) else 100}"
        ) from None
    if out < low:
        raise ValueError(f"{name} must be >= {low}, got {out}")
    return out


def num_units(data: PyTree) -> int:
    """The common leading (unit) axis length of the arrays in ``data``.

    Raises:
        ValueError: ``data`` has no arrays, or its leading axes differ.
    """
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ValueError(
            "data has no arrays; pass a pytree of arrays with a leading unit axis, a function "
            "data(key) -> batch, or data=None (the loss then gets batch=None)"
        )
    sizes = {int(np.shape(x)[0]) if np.ndim(x) else -1 for x in leaves}
    if len(sizes) != 1 or -1 in sizes:
        raise ValueError(
            "every array in data needs the same leading unit axis; got leading sizes "
            f"{sorted(sizes)}"
        )
    return sizes.pop()


def key_data(key: PRNGKeyArray) -> np.ndarray:
    """The raw ``uint32`` data of a typed or legacy PRNG key, as numpy (for checkpoints).

    Raises:
        TypeError: ``key`` is a Python int rather than a key.
    """
    if isinstance(key, int):
        raise TypeError("key must be a jax.random key (jax.random.key(seed)), not an int")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(key))
    return np.asarray(key)


def leaf_names(tree: PyTree) -> list[str]:
    """Names of the inexact leaves of ``tree`` (as in the NaN guard's flags)."""
    out = []
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact):
            out.append(jax.tree_util.keystr(path) or "the parameters")
    return out


def fault(loss: float, aux: Mapping[str, Any], grads_ok, params_ok, names) -> str:
    """Name the term at fault: an auxiliary term, the loss, a gradient, an updated parameter."""
    bad = [k for k, v in aux.items() if not np.all(np.isfinite(np.asarray(v, np.float64)))]
    if bad:
        return ", ".join(repr(k) for k in bad)
    if not math.isfinite(loss):
        return "'loss'"
    grads = [n for n, ok in zip(names, grads_ok, strict=True) if not ok]
    if grads:
        return f"the gradient of {', '.join(grads)} (the loss is finite)"
    params = [n for n, ok in zip(names, params_ok, strict=True) if not ok]
    return (
        f"the updated parameter {', '.join(params)} (the loss and gradient are finite; the "
        "optimiser's update overflowed)"
    )


__all__ = ["fault", "integer", "key_data", "leaf_names", "num_units"]
