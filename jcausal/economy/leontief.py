"""The Leontief quantity model ``x = A x + y`` as an equilibrium SCM, with stressors ``s = R x``.

An input-output economy of ``n`` sectors (Besserve & Schölkopf, UAI 2022, section 2.1):

* ``A`` (``n × n``, dimensionless): technical coefficients; ``A[i, j]`` is the amount of product
  ``i`` used to make one unit (one currency unit) of product ``j``.
* ``y`` (``n``, currency): final demand for each product.
* ``x`` (``n``, currency): gross output at equilibrium, ``x* = A x* + y = (I - A)^{-1} y``.
* ``S`` (``k × n``): stressor coefficients (the paper's ``R``): stressor ``k`` generated per unit
  of output of sector ``j`` (e.g. kg CO2 per million USD, or value added per unit output), so
  the stressors of an economy at ``x`` are ``s = S x`` and per sector ``S[k] * x``.

:class:`IOModel` holds these arrays plus the names of the sectors, regions and stressor rows.
Its :meth:`IOModel.scm` is a one-node :class:`jcausal.EquilibriumSCM` with a self-loop,
``x := A x + y`` with ``y`` as the node's exogenous input, so every engine of the library
(``do``, Lie interventions, implicit gradients, ``solvability``) applies to it. The paper's
multiplicative intervention on every sector's assignment,
``x_i := exp(u_i) (A x + y)_i``, is ``IOModel.solve(u)`` (``jc.Lie(jc.Multiplicative(n), u)``);
``u = 0`` is the unintervened economy. Stressor rows are always selected by **name**
(:meth:`IOModel.weights`), never by position.
"""

from __future__ import annotations

import difflib
import functools as ft
import weakref
from collections.abc import Mapping, Sequence

import distrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ..lie import Lie, Multiplicative
from ..scm import Additive, EquilibriumSCM, do, solve
from ..solvers import (
    RESULTS,
    AbstractSolver,
    Auto,
    FixedPointError,
    FixedPointReport,
    Newton,
    linear_fixed_point,
)
from ..solvers.results import is_traced, reraise_solver_errors

#: A stressor indicator: one row name, ``{row name: weight}`` (e.g. GWP100 weights), or an array
#: of one weight per stressor row.
StressorSpec = str | Mapping[str, float] | ArrayLike

# Above this size the spectral radius is found by power iteration instead of a dense
# eigen-decomposition (a full Exiobase table has 9800 sectors).
_EIG_MAX = 2000


def default_dtype() -> jnp.dtype:
    """float64 when JAX runs in 64-bit mode (``jax_enable_x64``), float32 otherwise."""
    return jnp.dtype(jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)


def spectral_radius(A: ArrayLike) -> float:
    """Spectral radius ``max |eig(A)|`` of a square matrix (numpy, float64).

    Exact eigenvalues up to 2000 rows; above that, power iteration on ``|A|`` (for a nonnegative
    technical-coefficient matrix this converges to the Perron root, which is the spectral
    radius).
    """
    a = np.asarray(A, dtype=np.float64)
    if a.size == 0:
        return 0.0
    if a.shape[0] <= _EIG_MAX:
        return float(np.max(np.abs(np.linalg.eigvals(a))))
    b = np.abs(a)
    v = np.full(b.shape[0], 1.0 / b.shape[0])
    rho = 0.0
    for _ in range(2000):
        w = b @ v
        norm = float(np.sum(w))
        if norm == 0.0:
            return 0.0
        new = norm / float(np.sum(v))
        v = w / norm
        if abs(new - rho) <= 1e-12 * max(new, 1.0):
            return new
        rho = new
    return rho


def _describe(labels: Sequence[str], mask: np.ndarray, limit: int = 10) -> str:
    bad = [labels[i] for i in np.flatnonzero(mask)]
    more = f" and {len(bad) - limit} more" if len(bad) > limit else ""
    return ", ".join(repr(b) for b in bad[:limit]) + more


def is_concrete(x) -> bool:
    """Whether ``x`` holds concrete values (not a tracer inside ``jit`` / ``vmap`` / ``grad``).

    Host-side validation (spectral radius, signs) runs only on concrete arrays.
    """
    return not any(isinstance(v, jax.core.Tracer) for v in jax.tree_util.tree_leaves(x))


def check_technical_coefficients(
    A: ArrayLike,
    *,
    name: str = "A",
    labels: Sequence[str] | None = None,
    nonnegative: bool = True,
) -> None:
    """Raise ``ValueError`` unless ``A`` is a productive technical-coefficient matrix.

    The one validation of ``A`` (used by :class:`IOModel`, the price and the rebound models):
    ``A`` must be square, finite, nonnegative (unless ``nonnegative=False``) and have spectral
    radius ``< 1`` (the Hawkins-Simon condition: then ``(I - A)^{-1} = sum_k A^k >= 0`` and
    both the quantity and the price model have a unique nonnegative equilibrium). Traced values
    (inside ``jit`` / ``vmap`` / ``grad``) are not checked: validate the concrete matrix first.

    Args:
        A: ``(n, n)`` technical coefficients (dimensionless).
        name: how the matrix is called in messages.
        labels: ``n`` sector labels, to name the sectors at fault.
        nonnegative: refuse negative coefficients. :class:`IOModel` passes ``False``: tables
            may carry small negative entries (e.g. subsidies), which the spectral-radius test
            still covers.

    Raises:
        ValueError: naming the rule broken, the sectors / entry at fault and what to do.
    """
    if not is_concrete(A):
        return
    a = np.asarray(A, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"{name} must be a square (n, n) matrix, got shape {a.shape}")
    n = a.shape[0]
    labels = [str(i) for i in range(n)] if labels is None else list(labels)
    finite = np.isfinite(a)
    if not finite.all():
        raise ValueError(
            f"{name} has NaN or infinite entries in the columns of "
            f"{_describe(labels, ~finite.all(axis=0))}; fix or drop those sectors"
        )
    if nonnegative and np.any(a < 0):
        i, j = np.unravel_index(np.argmin(a), a.shape)
        raise ValueError(
            f"{name} has negative technical coefficients (e.g. {name}[{i}, {j}] = {a[i, j]:.4g}, "
            f"input of {labels[i]!r} to {labels[j]!r}); input requirements must be nonnegative"
        )
    bound = min(np.abs(a).sum(0).max(initial=0.0), np.abs(a).sum(1).max(initial=0.0))
    if bound >= 1.0:
        # Column and row sums only bound the radius; compute it when the bound is not enough.
        rho = spectral_radius(a)
        if rho >= 1.0:
            raise ValueError(
                f"the spectral radius of {name} is {rho:.6g} >= 1: the economy is not "
                "productive (the Hawkins-Simon condition fails), so x = A x + y has no "
                "nonnegative equilibrium for positive demand; check the units of A "
                "(coefficients per unit of output, column sums normally below 1)"
            )


def unknown_name_message(what: str, name: object, available: Sequence[str]) -> str:
    """Error text for an unknown region / stressor: the name and the available names.

    Long lists (a full Exiobase extension has ~1100 rows) are cut to the closest matches.
    """
    available = list(available)
    if len(available) <= 40:
        listing = f"available: {available}"
    else:
        close = difflib.get_close_matches(str(name), available, n=10, cutoff=0.3)
        listing = f"{len(available)} available; closest: {close} (the first ones: {available[:20]})"
    return f"unknown {what} {name!r}; {listing}"


def _intermediate_demand(A: Array, parents: Mapping[str, Array]) -> Array:
    # A module-level function (not a lambda): SCMs built from equal-shaped models then share
    # one compiled solve, since the mechanism's function is part of the jit cache key.
    return A @ parents["x"]


class IOModel(eqx.Module):
    """An input-output economy: Leontief quantity model plus named stressor rows.

    Fields (``n`` sectors, ``k`` stressor rows; arrays in one float dtype):

    - ``A``: ``(n, n)`` technical coefficients (dimensionless), spectral radius < 1.
    - ``y``: ``(n,)`` final demand (the table's currency, e.g. million USD / EUR), >= 0.
    - ``x_observed``: ``(n,)`` the table's gross output (same currency).
    - ``S``: ``(k, n)`` stressor coefficients, stressor units per currency unit of output.
    - ``F``: ``(k, n)`` the table's stressor totals per sector (``S * x_observed`` for a
      consistent table), stressor units.
    - ``sectors``: ``n`` product / industry names; ``regions``: the region of each of the ``n``
      entries (one repeated name for a single-region model).
    - ``stressors``: ``k`` row names; ``stressor_units``: their units; ``extensions``: the
      extension (satellite account) each row comes from; ``stressor_keys``: the full row
      keys (``"stressor / compartment"`` for two-level indices), also accepted as names.
    - ``solver``: the solver object (``jc.Auto()`` by default: an LU factorisation of
      ``I - A`` up to ``jcausal.solvers.DIRECT_MAX`` sectors, Anderson above; see
      :meth:`solve`).
    - ``reproduction_error``: relative error ``||x*(u=0) - x_observed|| / ||x_observed||`` found
      when the model was built from a table (``nan`` if not checked).
    - ``note``: free text on how the model was built (e.g. how a regional block was closed).

    Construction checks the inputs: a spectral radius of ``A`` of 1 or more, or a negative or
    NaN final demand, raises ``ValueError`` (pass ``allow_negative_demand=True`` for tables whose
    demand contains negative inventory changes).
    """

    A: Float[Array, "n n"]
    y: Float[Array, " n"]
    x_observed: Float[Array, " n"]
    S: Float[Array, "k n"]
    F: Float[Array, "k n"]
    sectors: tuple[str, ...] = eqx.field(static=True)
    regions: tuple[str, ...] = eqx.field(static=True)
    stressors: tuple[str, ...] = eqx.field(static=True)
    stressor_units: tuple[str, ...] = eqx.field(static=True)
    extensions: tuple[str, ...] = eqx.field(static=True)
    stressor_keys: tuple[str, ...] = eqx.field(static=True)
    solver: AbstractSolver
    reproduction_error: float  # a plain leaf so that the adapter can fill it in (tree_at)
    note: str = eqx.field(static=True)

    def __init__(
        self,
        A: ArrayLike,
        y: ArrayLike,
        *,
        x_observed: ArrayLike | None = None,
        S: ArrayLike | None = None,
        F: ArrayLike | None = None,
        sectors: Sequence[str] | None = None,
        regions: Sequence[str] | str | None = None,
        stressors: Sequence[str] = (),
        stressor_units: Sequence[str] | None = None,
        extensions: Sequence[str] | None = None,
        stressor_keys: Sequence[str] | None = None,
        solver: AbstractSolver | None = None,
        dtype: jnp.dtype | str | None = None,
        allow_negative_demand: bool = False,
        reproduction_error: float = float("nan"),
        note: str = "",
    ):
        dtype = default_dtype() if dtype is None else jnp.dtype(dtype)
        if dtype == jnp.float64 and not jax.config.jax_enable_x64:
            raise ValueError(
                "dtype float64 needs 64-bit JAX: call jax.config.update('jax_enable_x64', True) "
                "first, or pass dtype='float32'"
            )
        a = np.asarray(A, dtype=np.float64)
        d = np.asarray(y, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] != a.shape[1]:
            raise ValueError(f"A must be a square (n, n) matrix, got shape {a.shape}")
        n = a.shape[0]
        if d.shape != (n,):
            raise ValueError(f"final demand y must have shape ({n},) to match A, got {d.shape}")
        sectors = tuple(str(s) for s in (sectors if sectors is not None else range(n)))
        if len(sectors) != n:
            raise ValueError(f"{len(sectors)} sector names for {n} sectors")
        if regions is None or isinstance(regions, str):
            regions = (regions or "",) * n
        regions = tuple(str(r) for r in regions)
        if len(regions) != n:
            raise ValueError(f"{len(regions)} region labels for {n} sectors")
        labels = [f"{r}:{s}" if r else s for r, s in zip(regions, sectors, strict=True)]

        check_technical_coefficients(a, labels=labels, nonnegative=False)
        nan = ~np.isfinite(d)
        if nan.any():
            raise ValueError(
                f"final demand is NaN or infinite for sectors {_describe(labels, nan)}"
            )
        neg = d < 0
        if neg.any() and not allow_negative_demand:
            raise ValueError(
                f"final demand is negative for sectors {_describe(labels, neg)} (smallest "
                f"{d.min():.6g}); the Leontief model needs y >= 0 for a nonnegative output. "
                "Pass allow_negative_demand=True if the table's inventory changes make this "
                "legitimate"
            )

        if x_observed is None:
            xo = np.linalg.solve(np.eye(n) - a, d)
        else:
            xo = np.asarray(x_observed, dtype=np.float64)
            if xo.shape != (n,):
                raise ValueError(f"x_observed must have shape ({n},), got {xo.shape}")
        stressors = tuple(str(s) for s in stressors)
        k = len(stressors)
        if S is None and F is None:
            s_arr = np.zeros((k, n))
        elif S is None:
            f = np.asarray(F, dtype=np.float64).reshape(k, n)
            s_arr = np.divide(f, xo, out=np.zeros_like(f), where=xo != 0)
        else:
            s_arr = np.asarray(S, dtype=np.float64).reshape(k, n)
        f_arr = s_arr * xo if F is None else np.asarray(F, dtype=np.float64).reshape(k, n)
        if len(set(stressors)) != k:
            raise ValueError(f"stressor names must be unique, got {list(stressors)}")
        units = tuple(stressor_units) if stressor_units is not None else ("",) * k
        exts = tuple(extensions) if extensions is not None else ("",) * k
        keys = tuple(str(s) for s in stressor_keys) if stressor_keys is not None else stressors
        if len(units) != k or len(exts) != k or len(keys) != k:
            raise ValueError(
                "stressor_units, extensions and stressor_keys need one entry per stressor row"
            )

        self.A = jnp.asarray(a, dtype)
        self.y = jnp.asarray(d, dtype)
        self.x_observed = jnp.asarray(xo, dtype)
        self.S = jnp.asarray(s_arr, dtype)
        self.F = jnp.asarray(f_arr, dtype)
        self.sectors = sectors
        self.regions = regions
        self.stressors = stressors
        self.stressor_units = tuple(str(u) for u in units)
        self.extensions = tuple(str(e) for e in exts)
        self.stressor_keys = keys
        self.solver = Auto() if solver is None else solver
        self.reproduction_error = float(reproduction_error)
        self.note = str(note)

    # ------------------------------------------------------------------------------------------

    @property
    def n(self) -> int:
        """Number of sectors."""
        return len(self.sectors)

    @property
    def labels(self) -> tuple[str, ...]:
        """Sector labels: ``"region:sector"`` for multi-regional models, ``"sector"`` otherwise."""
        if len(set(self.regions)) <= 1:
            return self.sectors
        return tuple(f"{r}:{s}" for r, s in zip(self.regions, self.sectors, strict=True))

    def scm(self) -> EquilibriumSCM:
        """The one-node equilibrium SCM ``x := A x + y`` (self-loop; ``y`` is the exogenous input).

        Solve it with ``jc.solve(model.scm(), {"x": model.y[None]})``; its initial guess is the
        table's observed output. With nonnegative demand the output is declared nonnegative
        (``EquilibriumSCM(nonnegative=("x",))``), so an intervention that makes the economy
        unproductive (spectral radius >= 1) is reported as ``RESULTS.infeasible`` instead of
        returning the negative solution of the linear system.
        """
        mech = Additive(_intermediate_demand, self.A, distrax.Deterministic(self.y), ["x"])
        signs = ("x",) if is_concrete(self.y) and bool(np.all(np.asarray(self.y) >= 0)) else ()
        return EquilibriumSCM(
            x=mech, solver=self.solver, init={"x": self.x_observed}, nonnegative=signs
        )

    def solve(
        self,
        u: Float[ArrayLike, " n"] | None = None,
        *,
        x0: Float[ArrayLike, " n"] | None = None,
        throw: bool = True,
        strict: bool | None = None,
    ) -> tuple[Float[Array, " n"], FixedPointReport]:
        """Equilibrium output under the multiplicative Lie intervention ``exp(u)``.

        Every sector's assignment becomes ``x_i := exp(u_i) (A x + y)_i``; ``u = None`` (or 0)
        is the unintervened economy. Differentiable in ``u`` (implicit gradients), and
        ``jax.vmap``-able over a batch of ``u``.

        Args:
            u: ``(n,)`` log-factors (``u_i = log 0.9`` cuts sector ``i``'s activity by 10 % of
                what the rest of the economy asks of it).
            x0: initial guess (default: the table's observed output).
            throw: raise :class:`jcausal.FixedPointError` if the solve fails (no convergence,
                divergence, NaN, or a negative output: ``RESULTS.infeasible``); ``False``
                returns the report instead (``report.converged == False``).
            strict: former name of ``throw``.

        Returns:
            ``(x, report)``: output ``(n,)`` in the table's currency, and the solver's report.

        With a direct solver (``jc.Auto()`` up to ``DIRECT_MAX`` sectors, or
        ``jc.Newton(linear_solver="lu")``) the intervened matrix ``diag(exp u) A`` is factorised
        as is (:func:`jcausal.linear_fixed_point`) instead of being found from ``n``
        Jacobian-vector products of the equilibrium SCM; the answer, the report and the
        ``infeasible`` check are those of the SCM path.
        """
        throw = throw if strict is None else bool(strict)
        direct, signs = _plan(self)
        if direct:
            return IOModel._solve_direct(self, u, x0, throw, signs)
        scm = self.scm()
        if u is not None:
            u = jnp.asarray(u, self.A.dtype)
            scm = do(scm, {"x": Lie(Multiplicative(self.n), u)})
        init = None if x0 is None else {"x": jnp.asarray(x0, self.A.dtype)[None]}
        values, report = solve(scm, {"x": self.y[None]}, init=init, throw=throw)
        return values["x"][0], report

    def _solve_direct(self, u, x0, throw: bool, signs: bool):
        # signs: check them as EquilibriumSCM(nonnegative=("x",)) does (demand >= 0).
        if u is not None and jnp.shape(u) != (self.n,):
            raise ValueError(f"u must have shape ({self.n},) (one per sector), got {jnp.shape(u)}")
        traced = is_traced((self.A, self.y, self.x_observed, u, x0))
        args = (self.A, self.y, self.x_observed if x0 is None else x0, u)
        program = _direct_program(self.solver, signs, bool(throw) and traced)
        with reraise_solver_errors():
            x, report = program(*args)
        if throw and not traced and not bool(report.converged):
            if bool(report.result == RESULTS.infeasible):
                raise FixedPointError(_NEGATIVE)
            raise FixedPointError(report.message())
        return x, report

    # ------------------------------------------------------------------------------------------
    # stressors

    def row(self, name: str | tuple) -> int:
        """Index of a stressor row given by name (``"extension:name"`` also accepted).

        Raises:
            ValueError: naming the row and listing the available ones.
        """
        if isinstance(name, tuple):
            name = " / ".join(str(p) for p in name)
        name = str(name)
        if name in self.stressors:
            return self.stressors.index(name)
        qualified = [f"{e}:{s}" for e, s in zip(self.extensions, self.stressors, strict=True)]
        if name in qualified:
            return qualified.index(name)
        if name in self.stressor_keys:
            return self.stressor_keys.index(name)
        raise ValueError(unknown_name_message("stressor row", name, self.stressors))

    def weights(self, spec: StressorSpec) -> Float[Array, " k"]:
        """Weights over the ``k`` stressor rows for an indicator.

        Args:
            spec: a row name (weight 1), ``{row name: weight}`` (e.g. ``{"CO2": 1, "CH4": 25,
                "N2O": 298}`` for GWP100 CO2-equivalents), or an array of ``k`` weights.
        """
        k = len(self.stressors)
        if isinstance(spec, str | tuple):
            spec = {spec: 1.0}
        if isinstance(spec, Mapping):
            if not spec:
                raise ValueError("empty stressor indicator: name at least one row")
            w = np.zeros(k)
            for name, weight in spec.items():
                w[self.row(name)] += float(weight)
            return jnp.asarray(w, self.S.dtype)
        w = jnp.asarray(spec, self.S.dtype)
        if w.shape != (k,):
            raise ValueError(f"stressor weights must have shape ({k},), got {w.shape}")
        return w

    def intensity(self, spec: StressorSpec) -> Float[Array, " n"]:
        """Indicator per unit of output of each sector, ``c = w @ S`` (shape ``(n,)``)."""
        return self.weights(spec) @ self.S

    def stressor(
        self, spec: StressorSpec, x: Float[ArrayLike, "*batch n"], *, by_sector: bool = False
    ) -> Float[Array, "*batch"] | Float[Array, "*batch n"]:
        """Indicator of an economy with output ``x``: total ``c @ x`` or per sector ``c * x``.

        Args:
            spec: see :meth:`weights`.
            x: output ``(..., n)`` in the table's currency.
            by_sector: return the per-sector contributions ``(..., n)`` instead of the total.
        """
        c = self.intensity(spec)
        per = c * jnp.asarray(x, c.dtype)
        return per if by_sector else per.sum(-1)

    def unit(self, spec: StressorSpec) -> str:
        """Unit of an indicator (the shared unit of its rows; rows of mixed units are joined)."""
        w = np.asarray(self.weights(spec))
        units = sorted({self.stressor_units[i] for i in np.flatnonzero(w)})
        return " + ".join(u for u in units if u) or "?"


_NEGATIVE = EquilibriumSCM.negative_message(None, ("x",))


# Per-model and per-solver caches of IOModel.solve's Python work (a 50-sector solve takes
# ~80 us; each of these cost 5-30 us per call): entries are keyed by id and hold the object
# (the program cache) or a weak reference to it (the plans), so an id is never reused wrongly.
_PLANS: dict[int, tuple] = {}
_PROGRAMS: dict[tuple, tuple] = {}


def _plan(model: IOModel) -> tuple[bool, bool]:
    """``(direct, signs)``: solve by LU (``Auto`` at this size, or ``Newton("lu")``); check signs.

    ``signs``: demand is concrete and nonnegative, so a negative output is ``infeasible``.
    Cached per model (immutable) while its demand is concrete.
    """
    hit = _PLANS.get(id(model))
    if hit is not None and hit[0]() is model:
        return hit[1]
    solver = model.solver
    if isinstance(solver, Auto):
        # Through the class: `module.method` builds an equinox BoundMethod on every access.
        solver = Auto.choose(solver, len(model.sectors), linear=True)
    direct = isinstance(solver, Newton) and solver.linear_solver == "lu"
    concrete = is_concrete(model.y)
    signs = concrete and bool(np.all(np.asarray(model.y) >= 0))
    if concrete and len(_PLANS) < 256:
        try:
            ref = weakref.ref(model)
        except TypeError:
            return direct, signs
        _PLANS[id(model)] = (ref, (direct, signs))
        weakref.finalize(model, _PLANS.pop, id(model), None)
    return direct, signs


def _direct_program(solver, signs: bool, throw: bool):
    """``_direct`` compiled for ``solver``, cached by the solver's identity.

    Not ``jax.jit`` with the solver as a static argument: hashing an equinox module on every
    call cost ~5 us.
    """
    key = (id(solver), signs, throw)
    hit = _PROGRAMS.get(key)
    if hit is not None and hit[0] is solver:
        return hit[1]
    if len(_PROGRAMS) > 256:
        _PROGRAMS.clear()
    program = jax.jit(ft.partial(_direct, solver, signs, throw))
    _PROGRAMS[key] = (solver, program)
    return program


def _direct(solver, signs: bool, throw: bool, A, y, x0, u):
    """``IOModel.solve`` by a direct solve of ``x = diag(exp u) (A x + y)`` (one program)."""
    x0 = jnp.asarray(x0, A.dtype)
    if u is not None:
        d = jnp.exp(jnp.asarray(u, A.dtype))
        A, y = d[:, None] * A, d * y
    x, report = linear_fixed_point(A, y, x0, solver=solver, throw=throw)
    if not signs:
        return x, report
    # Below -sqrt(eps) max|x| is a negative output (rounding of an exact zero is not).
    neg = jnp.any(x < -jnp.sqrt(jnp.finfo(x.dtype).eps) * jnp.max(jnp.abs(x)))
    result = RESULTS.where(report.converged & neg, RESULTS.infeasible, report.result)
    report = eqx.tree_at(
        lambda r: (r.result, r.converged), report, (result, report.converged & ~neg)
    )
    if throw:
        x = eqx.error_if(x, neg, _NEGATIVE)
    return x, report


def leontief_scm(
    A: ArrayLike, y: ArrayLike, solver: AbstractSolver | None = None
) -> EquilibriumSCM:
    """``x := A x + y`` as a one-node :class:`jcausal.EquilibriumSCM` (checked like IOModel)."""
    return IOModel(A, y, solver=solver).scm()


__all__ = [
    "IOModel",
    "StressorSpec",
    "check_technical_coefficients",
    "default_dtype",
    "is_concrete",
    "leontief_scm",
    "spectral_radius",
    "unknown_name_message",
]
