"""Is a map affine in its first argument? Read from its jaxpr, for :class:`~.Auto`.

``Auto`` solves an affine map ``x -> J x + c`` given as a function (an ``EquilibriumSCM`` of
linear mechanisms, an adjoint fixed point) directly when it is small, as it does an explicit
matrix: one LU of the Jacobian instead of an iteration (at n = 50 Newton-LU took 0.6-0.7x
Anderson's time and reaches a residual of ~1e-16 instead of ~1e-11).

The test is conservative: every operation the unknowns reach must be one that keeps a function
affine (sums, products with something that does not depend on the unknowns, reshapes, slices,
gathers with fixed indices, matrix products with one fixed side, selection with a fixed
predicate, calls of sub-programs made of the same). Anything else (``tanh``, a product of two
unknowns, a division by one, a loop) reads as "not affine", and ``Auto`` iterates as before. A
wrong "affine" would still be safe: Newton's method with the LU of the exact Jacobian stops on
the same residual test as every solver, and reports a failure instead of returning it.
"""

from __future__ import annotations

import jax
from jax.extend import core as jex_core

# One operand (or every operand) may depend on the unknowns: the result is affine in them.
_ELEMENTWISE_AFFINE = frozenset(
    {
        "add", "add_any", "sub", "neg", "reshape", "broadcast_in_dim", "squeeze",
        "expand_dims", "transpose", "rev", "slice", "reduce_sum", "copy", "copy_p",
        "concatenate", "pad", "real", "imag", "conj", "cumsum", "reduce_precision",
        "stop_gradient", "optimization_barrier", "split",
    }
)  # fmt: skip
# Only the first operand may depend on the unknowns (the others are indices / divisors).
_FIRST_ONLY = frozenset({"dynamic_slice", "gather", "div"})
# Products: exactly one operand may depend on the unknowns.
_PRODUCTS = frozenset({"mul", "dot_general"})
# Calls of sub-programs: affine when their body is (inputs mapped one to one).
_CALLS = frozenset(
    {"jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
     "custom_vjp_call_jaxpr", "checkpoint", "remat", "custom_lin"}
)  # fmt: skip


def is_affine(fn, x0, args) -> bool:
    """Whether ``fn(x, args)`` is affine in ``x`` (a 1-D array), judged from its jaxpr.

    ``x0`` and ``args`` may be tracers (only their shapes and dtypes are used). Returns False
    whenever in doubt (see the module docstring), never raises for a traceable ``fn``.
    """
    try:
        closed = jax.make_jaxpr(fn)(x0, args)
    except Exception:  # not traceable here: let the solver report it
        return False
    n_x = len(jax.tree_util.tree_leaves(x0))
    depends = [i < n_x for i in range(len(closed.jaxpr.invars))]
    return _affine_jaxpr(closed.jaxpr, depends)


def _sub_jaxpr(eqn):
    """The one sub-program of a call, or None."""
    found = [
        p.jaxpr if isinstance(p, jex_core.ClosedJaxpr) else p
        for p in eqn.params.values()
        if isinstance(p, jex_core.ClosedJaxpr | jex_core.Jaxpr)
    ]
    return found[0] if len(found) == 1 else None


def _affine_jaxpr(jaxpr, depends_in: list[bool], out: list | None = None) -> bool:
    """Walk ``jaxpr``; ``depends_in[i]``: invar ``i`` depends on the unknowns.

    With ``out`` given, it receives which outputs depend on the unknowns.
    """
    dep = {v for v, d in zip(jaxpr.invars, depends_in, strict=True) if d}

    def is_dep(v) -> bool:
        return not isinstance(v, jex_core.Literal) and v in dep

    for eqn in jaxpr.eqns:
        flags = [is_dep(v) for v in eqn.invars]
        if not any(flags):
            continue
        name = eqn.primitive.name
        if name in _ELEMENTWISE_AFFINE:
            pass
        elif name in _FIRST_ONLY:
            if any(flags[1:]):
                return False
        elif name in _PRODUCTS:
            if sum(flags) != 1:
                return False
        elif name == "select_n":  # the predicate must not depend on the unknowns
            if flags[0]:
                return False
        elif name == "dynamic_update_slice":  # operand and update; not the indices
            if any(flags[2:]):
                return False
        elif name in ("scatter", "scatter-add", "scatter_add"):  # `.at[i].set / .add`
            if flags[1]:
                return False
        elif name == "convert_element_type":
            if not jax.numpy.issubdtype(eqn.params["new_dtype"], jax.numpy.inexact):
                return False
        elif name in _CALLS:
            sub = _sub_jaxpr(eqn)
            if sub is None or len(sub.invars) != len(flags):
                return False
            sub_out: list[bool] = []
            if not _affine_jaxpr(sub, flags, sub_out):
                return False
            dep.update(v for v, d in zip(eqn.outvars, sub_out, strict=True) if d)
            continue
        else:
            return False
        dep.update(eqn.outvars)
    if out is not None:
        out.extend(is_dep(v) for v in jaxpr.outvars)
    return True


__all__ = ["is_affine"]
