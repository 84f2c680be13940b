"""Result codes and the report of a fixed-point solve, and the errors raised from them.

A solve ends in exactly one of the states of :class:`RESULTS` (an ``equinox.Enumeration``, as
``optimistix.RESULTS``): it is carried by :class:`FixedPointReport` next to the boolean
``converged`` and survives ``jit`` and ``vmap`` (one code per batch member).
"""

from __future__ import annotations

import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int


class RESULTS(eqx.Enumeration):
    """How a fixed-point solve ended (one code per solve; batched under ``vmap``).

    - ``successful``: ``||x - f(x)|| <= rtol ||x|| + atol`` holds at the returned ``x``.
    - ``max_steps_reached``: the tolerance was not met within ``max_steps`` evaluations.
    - ``diverged``: the iterate grew without bound: its norm passed ``divergence`` times the
      scale of the start, ``max(||x0||, ||f(x0)||)``, while the absolute residual
      ``||x - f(x)||`` had not dropped below 1e-3 of its first value. (A purely relative
      test would call such a point converged: its residual is small only relative to the
      huge ``x``, e.g. ``x = A x + y`` with ``I - A`` singular.)
    - ``nonfinite``: the iteration overflowed: an iterate or residual became inf or NaN after
      a finite start.
    - ``nonfinite_input``: inf or NaN at the first evaluation: in the initial guess, in the
      parameters / exogenous values (e.g. observations), or in ``f`` at the initial guess.
    - ``infeasible``: the solve met its tolerance but the solution violates a constraint of
      the model (e.g. negative output of an economy, see
      ``EquilibriumSCM(nonnegative=...)``).
    - ``singular``: a direct solve of a linear map ``x = A x + b`` found ``I - A`` singular
      to working precision (a pivot of its LU factorisation below ``n eps`` times the
      largest): there is no unique solution.
    """

    successful = ""
    max_steps_reached = "the tolerance was not met within max_steps evaluations"
    diverged = "the iterates grew without bound while the residual did not shrink"
    nonfinite = "the iteration overflowed (inf or NaN)"
    nonfinite_input = "NaN or inf in the input (initial guess, parameters or observations)"
    infeasible = "the solution violates a constraint of the model"
    singular = "I - A is singular: the linear system has no unique solution"


class FixedPointReport(eqx.Module):
    """Diagnostics of a fixed-point solve (a pytree; every field batched under ``vmap``).

    Fields (each of shape ``batch_shape``, i.e. ``()`` for a single solve):
        num_steps: evaluations of ``fn`` made by the solver loop (int32).
        relative_residual: ``||x - fn(x)||_2 / ||x||_2`` at the returned ``x``
            (dimensionless, dtype of ``x``); ``inf`` if it is not finite.
        growth: ``||x||_2 / max(||x0||_2, ||fn(x0)||_2)``, how far the iterate moved away from
            the scale of its start (dimensionless; large values flag divergence).
        result: a :class:`RESULTS` code.
        converged: ``result == RESULTS.successful``.

    The report is diagnostic only: it carries no gradient.
    """

    num_steps: Int[Array, "*batch"]
    relative_residual: Float[Array, "*batch"]
    growth: Float[Array, "*batch"]
    result: RESULTS
    converged: Bool[Array, "*batch"]

    def message(self) -> str:
        """A sentence on how the solve ended (concrete reports only; summarises a batch)."""
        codes = np.atleast_1d(np.asarray(self.result._value))
        rel = np.atleast_1d(np.asarray(self.relative_residual, np.float64))
        growth = np.atleast_1d(np.asarray(self.growth, np.float64))
        steps = np.atleast_1d(np.asarray(self.num_steps))
        bad = np.flatnonzero(codes != int(RESULTS.successful._value))
        if bad.size == 0:
            return "converged"
        i = int(bad[0])
        which = f" (member {i} of {codes.size}; {bad.size} failed)" if codes.size > 1 else ""
        return describe(int(codes[i]), float(rel[i]), float(growth[i]), int(steps[i])) + which


class FixedPointError(RuntimeError):
    """A fixed-point solve did not converge (raised when ``throw=True``).

    ``str(error)`` starts with the solver's own sentence: what happened and what to do.
    """


_ADVICE = {
    int(RESULTS.max_steps_reached._value): (
        "Raise the solver's max_steps, change beta (beta < 1 damps oscillations) or use "
        "Anderson with a larger history; if that does not help the map may not be contractive "
        "(spectral radius of df/dx >= 1)."
    ),
    int(RESULTS.diverged._value): (
        "The system has no (stable) solution from this start: for x = A x + y, I - A is "
        "singular or the spectral radius of A is >= 1. Check the model and the intervention; "
        "raise the solver's divergence threshold only if the solution really is that large."
    ),
    int(RESULTS.nonfinite._value): (
        "The map overflowed: it is not contractive from this start (spectral radius of df/dx "
        ">= 1), or the start is too far from the solution; lower beta or give a better init."
    ),
    int(RESULTS.nonfinite_input._value): (
        "Check the parameters (e.g. the matrix A), the exogenous values / observations and the "
        "initial guess for NaN or inf; raising max_steps will not help."
    ),
    int(RESULTS.infeasible._value): "",
    int(RESULTS.singular._value): (
        "For x = A x + b this means A has an eigenvalue 1 (e.g. an economy with a sector that "
        "only feeds itself, or a column of A summing to 1 with no leakage): check A and the "
        "intervention; no solver can fix it."
    ),
}


def describe(
    code: int, rel: float | str | None = None, growth: float | None = None, steps: int | None = None
) -> str:
    """The error text for one failed solve: what happened (with numbers) and what to do.

    Args:
        code: the ``RESULTS`` code (its integer value).
        rel: the relative residual reached (or a text such as ``"1e-03 to 1e-02"``).
        growth: ``||x|| / max(||x0||, ||f(x0)||)`` at the end.
        steps: evaluations made.
    """
    head = "fixed_point did not converge: "
    rel_txt = f"{rel:.3g}" if isinstance(rel, float) else str(rel)
    after = f"after {steps} evaluations " if steps is not None else ""
    if code == int(RESULTS.max_steps_reached._value):
        what = (
            f"{after}(max_steps) the relative residual ||x - f(x)|| / ||x|| is {rel_txt}, "
            "above the tolerance."
        )
        if growth is not None and growth > 100:
            what += (
                f" ||x|| grew to {growth:.3g} times the scale of the start: the iteration is "
                "probably diverging slowly (e.g. I - A singular)."
            )
    elif code == int(RESULTS.diverged._value):
        size = f"{growth:.3g} times" if growth is not None else "a huge multiple of"
        what = (
            f"the iteration diverged: {after}||x|| had grown to {size} the scale of the start "
            "while the absolute residual ||x - f(x)|| did not shrink, so the residual is small "
            "only relative to a huge x."
        )
    elif code == int(RESULTS.nonfinite._value):
        what = f"the iteration overflowed to inf/NaN {after}".rstrip() + "."
    elif code == int(RESULTS.singular._value):
        what = (
            "I - A is singular to working precision (the LU factorisation has a zero or "
            "negligible pivot), so x = A x + b has no unique solution."
        )
    elif code == int(RESULTS.nonfinite_input._value):
        what = (
            "NaN or inf in the input: the first evaluation f(x0) is not finite (NaN in the "
            "parameters, the exogenous values / observations, or the initial guess)."
        )
    else:
        return f"fixed_point: {RESULTS[code]}."
    return head + what + " " + _ADVICE[code]


# --------------------------------------------------------------------------------------------
# Messages under jit: equinox raises from inside a compiled call with one of a finite list of
# static strings, chosen by an index computed on device.

_LOG10_LO, _LOG10_HI = -20, 40
_FIXED = (RESULTS.nonfinite_input, RESULTS.nonfinite, RESULTS.diverged, RESULTS.singular)


def compiled_messages(max_steps: int) -> list[str]:
    """The static messages indexed by :func:`message_index`."""
    msgs = [describe(int(r._value)) for r in _FIXED]
    for e in range(_LOG10_LO, _LOG10_HI + 1):
        msgs.append(
            describe(
                int(RESULTS.max_steps_reached._value), f"1e{e:+d} to 1e{e + 1:+d}", None, max_steps
            )
        )
    return msgs


def message_index(result: RESULTS, rel: Float[Array, "*b"]) -> Int[Array, "*b"]:
    """Index into :func:`compiled_messages` for each failed solve."""
    finite = jnp.isfinite(rel) & (rel > 0)
    safe = jnp.where(finite, rel, 1.0)
    decade = jnp.clip(jnp.floor(jnp.log10(safe)), _LOG10_LO, _LOG10_HI).astype(jnp.int32)
    idx = len(_FIXED) + decade - _LOG10_LO
    for i, r in enumerate(_FIXED):
        idx = jnp.where(result == r, i, idx)
    return idx


# --------------------------------------------------------------------------------------------
# Errors from inside compiled calls.

_EQX_TEXT = re.compile(r"EquinoxRuntimeError: (.*?)(?:\n\n\n?-{10,}|\Z)", re.S)


#: How every message of ours starts (``eqx.error_if`` texts from a solve).
SOLVER_PREFIXES = ("fixed_point", "the equilibrium has negative values")


def solver_message(error: BaseException) -> str | None:
    """The solver's message inside an error raised from a compiled call, or ``None``.

    equinox puts an ``eqx.error_if`` message after a stack dump ("Above is the stack outside of
    JIT ...") under ``eqx.filter_jit``, and inside an XLA ``CpuCallback INTERNAL`` error under
    ``jax.jit``; this finds it in either. Only messages of the solvers (starting with one of
    ``SOLVER_PREFIXES``) are returned.
    """
    if not isinstance(error, RuntimeError | ValueError):
        return None
    for found in reversed(_EQX_TEXT.findall(str(error))):
        msg = found.strip()
        if msg.startswith(SOLVER_PREFIXES):
            return msg
    return None


class reraise_solver_errors:
    """Context manager: an ``eqx.error_if`` from a compiled solve becomes a FixedPointError.

    equinox puts the message after a stack dump (or, under ``jax.jit``, inside an XLA
    ``CpuCallback INTERNAL`` error); here it becomes the first line of the error. Used around
    the compiled calls of ``jc.solve`` and of the engine's entry points (``sample``,
    ``counterfactual``), so an equilibrium that fails inside them reads as the solver's sentence.
    """

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if error is None or isinstance(error, FixedPointError):
            return False
        msg = solver_message(error)
        if msg is None:
            return False
        raise FixedPointError(msg) from None


def is_traced(tree) -> bool:
    """Whether any leaf of ``tree`` is a tracer (inside ``jit`` / ``vmap`` / ``grad``)."""
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(tree))


__all__ = [
    "RESULTS",
    "SOLVER_PREFIXES",
    "FixedPointError",
    "FixedPointReport",
    "compiled_messages",
    "describe",
    "is_traced",
    "message_index",
    "reraise_solver_errors",
    "solver_message",
]
