"""Smooth structural causal models at equilibrium (graphs with feedback loops).

In an equilibrium SCM (an SSCM in the sense of Besserve & Schölkopf, UAI 2022) the structural
assignments ``x_k := f_k(x_pa(k), u_k)`` may form cycles, including self-loops (a vector node
``x := A x + y`` is a whole input-output economy). The model's values are a self-consistent
solution ``x* = F(x*, u)``, found by :func:`jcausal.solvers.fixed_point` with implicit
gradients, so ``x*`` can be differentiated with respect to mechanism parameters, exogenous
inputs and intervention parameters without unrolling the solver.

The model reuses the acyclic engine: the same mechanisms (exogenous ``u_k`` play the role of the
paper's parameters ``θ``), the same interventions (``Hard``, ``Shift``, ``Scale``, ``Soft``, Lie
interventions), and the same ``sample`` / ``do`` / ``abduct`` / ``counterfactual``. Only the
prediction step differs: instead of one pass in topological order, the values of all affected
nodes are solved for jointly.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Bool, Float, Int

from ..solvers import (
    RESULTS,
    AbstractSolver,
    Anderson,
    FixedPointError,
    FixedPointReport,
    Solver,
    fixed_point,
)
from ..solvers.results import is_traced
from ._jit import _flatten, lean_jit
from .interventions import Hard, Intervention
from .mechanisms import Additive, Mechanism
from .model import SCM, Values, node_value


class EquilibriumSCM(SCM):
    """A smooth SCM whose graph may contain cycles; its values solve ``x = F(x, u)``.

    Example (the motivating example, eq. 4, of the Lie-interventions paper)::

        scm = EquilibriumSCM(
            x=Root(distrax.Uniform(0.5, 1.5)),                       # x = tau
            y=Additive(lambda p, pa: p["a"] * pa["x"] + p["b"] * pa["z"], {"a": .5, "b": .4},
                       None, ["x", "z"]),                            # deterministic
            z=Additive(lambda p, pa: p * pa["y"], 0.8, None, ["y"]),
        )

    Args:
        mechanisms: ``{node: Mechanism}`` (or keyword arguments). Self-loops and cycles are
            allowed. Every node's value must have the shape of its noise (true of ``Root``,
            ``Additive`` and ``Invertible``); categorical mechanisms cannot take part in a
            fixed point and are refused. An ``Additive`` node with ``noise=None`` is
            deterministic, ``x := fn(params, parents)``: its exogenous value is zero and its
            shape comes from ``init`` or from its mechanism's output.
        interventions: interventions in force (normally set with ``do``).
        solver: the fixed-point solver object (default ``jc.Anderson()``; e.g.
            ``jc.Forward(max_steps=2000)``).
        init: optional initial guess ``{node: value for one unit}`` (broadcast over units).
            Models with several equilibria converge to the one this guess leads to; zeros
            otherwise. Counterfactuals start from the observed equilibrium.
        nonnegative: nodes whose equilibrium values must be >= 0 (quantities, prices). A solve
            that meets its tolerance at a point with a negative value of one of them is
            reported as ``RESULTS.infeasible`` (and raises when asked to): for an economy
            ``x = A x + y`` with ``y > 0`` that happens exactly when the (intervened) ``A``
            has spectral radius >= 1, where the linear system still has a solution.
    """

    solver: AbstractSolver
    init: dict[str, Array] | None
    nonnegative: tuple[str, ...] = eqx.field(static=True)
    acyclic = False

    def __init__(
        self,
        mechanisms: Mapping[str, Mechanism] | None = None,
        /,
        interventions: Mapping[str, Intervention] | None = None,
        *,
        solver: AbstractSolver | None = None,
        init: Mapping[str, Array] | None = None,
        nonnegative: Sequence[str] = (),
        **kw: Mechanism,
    ):
        super().__init__(mechanisms, interventions=interventions, **kw)
        for node, mech in self.mechanisms.items():
            if mech.discrete:
                raise ValueError(
                    f"node {node!r} is categorical ({type(mech).__name__}); an equilibrium SCM "
                    "solves for continuous values only"
                )
            if mech.noise is None and not isinstance(mech, Additive):
                raise ValueError(
                    f"node {node!r}: only Additive mechanisms may omit their noise "
                    f"(noise=None makes the node deterministic); {type(mech).__name__} needs a "
                    "noise distribution"
                )
        solver = Anderson() if solver is None else solver
        if not isinstance(solver, AbstractSolver):
            raise TypeError(
                "solver must be a solver object such as jc.Anderson() or jc.Forward(), got "
                f"{type(solver).__name__}"
            )
        self.solver = solver
        if init is not None:
            unknown = set(init) - set(self.mechanisms)
            if unknown:
                raise ValueError(f"init names unknown nodes {sorted(unknown)}")
            init = {k: jnp.asarray(v) for k, v in init.items()}
        self.init = init
        nonnegative = (nonnegative,) if isinstance(nonnegative, str) else tuple(nonnegative)
        unknown = [k for k in nonnegative if k not in self.mechanisms]
        if unknown:
            raise ValueError(f"nonnegative names unknown nodes {unknown}")
        self.nonnegative = nonnegative

    # ------------------------------------------------------------------------------------------
    # deterministic nodes (noise=None)

    @property
    def deterministic(self) -> tuple[str, ...]:
        """Nodes without exogenous noise (``Additive`` with ``noise=None``)."""
        return tuple(k for k in self.order if self.mechanisms[k].noise is None)

    def _noise_structs(self) -> dict[str, jax.ShapeDtypeStruct]:
        """Shape and dtype of one unit's exogenous value at every node.

        Deterministic nodes take theirs from ``init`` or, failing that, from their mechanism's
        output given their parents' shapes (resolved node by node; a cycle made only of
        deterministic nodes without ``init`` cannot be resolved and is refused).
        """
        out = {}
        for k in self.order:
            mech = self.mechanisms[k]
            if mech.noise is not None:
                s = jax.eval_shape(lambda m=mech: m.noise.sample(seed=jax.random.key(0)))
                out[k] = jax.ShapeDtypeStruct(s.shape, s.dtype)
            elif self.init is not None and k in self.init:
                v = self.init[k]
                dtype = v.dtype if jnp.issubdtype(v.dtype, jnp.inexact) else jnp.result_type(float)
                out[k] = jax.ShapeDtypeStruct(v.shape, dtype)
        todo = [k for k in self.order if k not in out]
        # Resolve the rest as a fixed point on shapes: unknown parents start as scalars of the
        # default float dtype and take the shape their mechanism returns until nothing changes
        # (y := a x + b z, z := c y settles at once; x := A @ x cannot start from a scalar).
        guess = {k: jax.ShapeDtypeStruct((), jnp.result_type(float)) for k in todo}
        for _ in range(len(todo) + 1):
            new = {}
            for k in todo:
                mech = self.mechanisms[k]
                pa = {p: out.get(p, guess.get(p)) for p in mech.parents}
                try:
                    r = jax.eval_shape(lambda q, m=mech: m.fn(m.params, q), pa)
                except Exception:
                    new = None
                    break
                new[k] = jax.ShapeDtypeStruct(r.shape, r.dtype)
            if new is None:
                break
            if new == guess:
                return {**out, **new}
            guess = new
        raise ValueError(
            f"the shapes of the deterministic nodes {todo} (noise=None) cannot be inferred "
            "from their mechanisms; give an initial value for one of them, e.g. "
            f"init={{{todo[0]!r}: jnp.zeros(shape)}}"
        )

    def sample_noise(self, key, n: int) -> Values:
        """Exogenous noise for ``n`` units (zeros for deterministic nodes)."""
        det = self.deterministic
        if not det:
            return super().sample_noise(key, n)
        structs = self._noise_structs()
        out = {}
        for i, node in enumerate(self.order):
            if node in det:
                s = structs[node]
                out[node] = jnp.zeros((n, *s.shape), s.dtype)
            else:
                out[node] = self.mechanisms[node].sample_noise(jax.random.fold_in(key, i), n)
        return out

    # ------------------------------------------------------------------------------------------

    def _initial_guess(self, node, noise, fixed, init):
        if init is not None and node in init:
            return jnp.asarray(init[node])
        ref = noise.get(node)
        if ref is None:
            ref = fixed[node]
        if self.init is not None and node in self.init:
            return jnp.broadcast_to(self.init[node], ref.shape).astype(ref.dtype)
        return jnp.zeros(ref.shape, ref.dtype)

    def equations(
        self,
        noise: Values,
        fixed: Values,
        targets: Sequence[str],
        interventions: Mapping[str, Intervention],
        shapes: Mapping[str, jax.ShapeDtypeStruct],
    ):
        """The map ``F(x, _) -> x'`` whose fixed point is the equilibrium of ``targets``.

        Args:
            noise: ``{node: (n, *shape)}`` exogenous values of the targets.
            fixed: ``{node: (n, *shape)}`` values of parents that are not targets.
            targets: the unknowns (node names).
            interventions: ``{node: Intervention}`` in force.
            shapes: ``{target: ShapeDtypeStruct}`` of the batched unknowns.

        Returns:
            ``F(x, _)`` mapping ``{target: (n, *shape)}`` to the assignments' values (the second
            argument is ignored; it is the ``args`` slot of :func:`jcausal.fixed_point`).
        """

        def F(x, _):
            out = {}
            for node in targets:
                mech = self.mechanisms[node]
                pa = {p: x[p] if p in x else fixed[p] for p in mech.parents}
                out[node] = node_value(
                    node, mech, interventions.get(node), pa, noise.get(node), shapes[node]
                )
            return out

        return F

    def solve_targets(
        self,
        noise: Values,
        fixed: Values,
        targets: tuple[str, ...],
        interventions: Mapping[str, Intervention],
        init: Values | None = None,
        throw: bool = True,
    ) -> tuple[Values, FixedPointReport | None]:
        """Like ``predict`` but also returns the solver's report (``None`` if nothing to solve).

        With ``throw=True`` a failed solve raises (``eqx.error_if`` under ``jit``).
        """
        # Hard-intervened nodes are constants: take them out of the unknowns, so they come out
        # exactly as set and the solver has fewer unknowns.
        hard = {}
        for t in targets:
            if isinstance(interventions.get(t), Hard) and interventions[t].constant:
                ref = self._initial_guess(t, noise, fixed, init)
                shape = jax.ShapeDtypeStruct(ref.shape, ref.dtype)
                hard[t] = interventions[t].apply(t, self.mechanisms[t], {}, None, shape)
        fixed = {**fixed, **hard}
        targets = tuple(t for t in targets if t not in hard)
        if not targets:
            return hard, None
        x0 = {t: self._initial_guess(t, noise, fixed, init) for t in targets}
        shapes = {t: jax.ShapeDtypeStruct(v.shape, v.dtype) for t, v in x0.items()}
        F = self.equations(noise, fixed, targets, interventions, shapes)
        out = jax.eval_shape(lambda x: F(x, None), x0)
        for t in targets:
            if out[t].shape != x0[t].shape:
                raise ValueError(
                    f"node {t!r}: its mechanism returns shape {out[t].shape[1:]} per unit but "
                    f"its noise / initial value has shape {x0[t].shape[1:]}; in an equilibrium "
                    "SCM each node's value must have the shape of its noise"
                )
        x0 = {t: x0[t].astype(out[t].dtype) for t in targets}
        values, report = fixed_point(F, x0, None, solver=self.solver, throw=throw)
        checked = [t for t in targets if t in self.nonnegative]
        if checked:
            values, report = self._check_signs(values, report, checked, throw)
        return {**values, **hard}, report

    def _check_signs(self, values, report, nodes, throw):
        # A value counts as negative below -sqrt(eps) * max|x| of its node (rounding of an
        # exact zero, e.g. a sector with no demand and no inputs, stays accepted).
        neg = jnp.zeros((), bool)
        for t in nodes:
            v = values[t]
            tol = jnp.sqrt(jnp.finfo(v.dtype).eps) * jnp.max(jnp.abs(v))
            neg = neg | jnp.any(v < -tol)
        result = RESULTS.where(report.converged & neg, RESULTS.infeasible, report.result)
        report = dataclasses.replace(report, result=result, converged=report.converged & ~neg)
        if throw:
            msg = self.negative_message(nodes)
            if is_traced((values, report)):
                values = eqx.error_if(values, neg, msg)
            elif bool(neg):
                raise FixedPointError(msg)
        return values, report

    def negative_message(self, nodes: Sequence[str]) -> str:
        """The error text of ``RESULTS.infeasible`` (a negative value of a nonnegative node)."""
        return (
            f"the equilibrium has negative values of {list(nodes)}, which must be nonnegative: "
            "the model has no admissible equilibrium under these inputs and interventions (for "
            "an economy x = A x + y with positive demand this means the intervened A has "
            "spectral radius >= 1: it is not productive, and the linear system's solution is "
            "negative). Weaken the intervention or check the coefficients."
        )

    def predict(self, noise, fixed, targets, interventions, init=None):
        values, _ = self.solve_targets(noise, fixed, targets, interventions, init, True)
        return values


def solve(
    scm: EquilibriumSCM,
    noise: Mapping[str, Array],
    *,
    init: Mapping[str, Array] | None = None,
    throw: bool = True,
    strict: bool | None = None,
) -> tuple[Values, FixedPointReport | None]:
    """The equilibrium ``x*(u)`` for a batch of exogenous inputs, with the solver's report.

    Args:
        scm: the equilibrium model (its interventions are applied; its ``solver`` is used).
        noise: ``{node: (n, *shape)}`` exogenous values for every node (e.g. from
            ``scm.sample_noise(key, n)`` or ``abduct``).
        init: optional initial guess ``{node: (n, *shape)}``.
        throw: raise :class:`jcausal.FixedPointError` when the solve fails (does not converge,
            diverges, meets NaN, or violates ``nonnegative``); ``False`` to inspect the report.
        strict: former name of ``throw`` (kept for existing code).

    Returns:
        ``({node: (n, *shape)}, FixedPointReport)``; the report covers the whole batch (one joint
        solve; ``jax.vmap`` over units for per-unit reports). ``report.result`` says how the
        solve ended (``jc.RESULTS``).

    Raises:
        FixedPointError: with ``throw=True``, its message (first line) says what failed and
            what to do. Inside a user's ``jax.jit`` the same text arrives inside JAX's runtime
            error; wrap with ``equinox.filter_jit`` instead to get it as the message.
    """
    if not isinstance(scm, EquilibriumSCM):
        raise TypeError(f"solve expects an EquilibriumSCM, got {type(scm).__name__}")
    if strict is not None:
        throw = bool(strict)
    missing = [k for k in scm.order if k not in noise]
    if missing:
        raise ValueError(f"noise lacks nodes {missing}; give exogenous values for every node")
    noise = {k: _noise_array(scm, k, v) for k, v in noise.items()}
    init = None if init is None else dict(init)
    # The model's leaves come from the dispatcher's cache (flattened once per model).
    traced = is_traced((noise, init)) or is_traced(_flatten(scm)[0])
    values, report = _solve_jit((scm, noise, init), bool(throw) and traced)
    # One host transfer of the flag (jnp.all would dispatch another program first).
    if throw and not traced and report is not None and not np.all(np.asarray(report.converged)):
        infeasible = bool(jnp.any(report.result == RESULTS.infeasible))
        raise FixedPointError(
            scm.negative_message(scm.nonnegative) if infeasible else report.message()
        )
    return values, report


def _noise_array(scm: EquilibriumSCM, node: str, value) -> Array:
    """``value`` as an array of shape ``(n, *noise_shape)``, or a ValueError naming the node."""
    if not isinstance(value, jax.Array | np.ndarray):
        try:
            value = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            raise ValueError(
                f"noise[{node!r}] must be an array of shape (n, *noise_shape), got "
                f"{type(value).__name__}"
            ) from None
    expected = _noise_shape(scm.mechanisms.get(node))
    if expected is None:
        return value
    if value.ndim != len(expected) + 1 or tuple(value.shape[1:]) != tuple(expected):
        one = f"; for one unit pass noise[{node!r}][None]" if value.shape == expected else ""
        raise ValueError(
            f"noise[{node!r}] has shape {tuple(value.shape)}, expected (n, *{tuple(expected)}): "
            f"a leading unit axis, then the shape {tuple(expected)} of the node's noise{one}"
        )
    return value


# Per-unit noise shapes by mechanism (reading a distrax distribution's shapes took ~5 us of a
# ~100 us solve); entries hold the mechanism weakly, as the dispatcher's cache does.
_SHAPES: dict[int, tuple[weakref.ref, tuple | None]] = {}


def _noise_shape(mech) -> tuple | None:
    """The per-unit shape of ``mech``'s noise distribution, or None when it does not say."""
    hit = _SHAPES.get(id(mech))
    if hit is not None and hit[0]() is mech:
        return hit[1]
    try:
        dist = mech.noise
        expected = (*dist.batch_shape, *dist.event_shape)
    except Exception:
        expected = None
    try:
        ref = weakref.ref(mech)
    except TypeError:
        return expected
    if len(_SHAPES) < 256:
        _SHAPES[id(mech)] = (ref, expected)
        weakref.finalize(mech, _SHAPES.pop, id(mech), None)
    return expected


# The lean dispatcher of the engine's verbs (``eqx.filter_jit`` cost ~45 us per call here,
# more than the solve of a 50-sector economy); it warns when fresh lambdas recompile.
@lean_jit
def _solve_jit(scm, noise, init, throw):
    return scm.solve_targets(noise, {}, scm.order, scm.interventions, init, throw)


def residual_jacobian(
    scm: EquilibriumSCM, values: Mapping[str, Array], noise: Mapping[str, Array]
) -> tuple[Float[Array, "d d"], dict[str, np.ndarray]]:
    """The dense Jacobian of ``x -> x - F(x, u)`` at ``values``, over all nodes and units.

    The one place this Jacobian is written (Proposition 1 in :func:`solvability`, Proposition 3
    in :func:`jcausal.invariance_conditions`). Formed with ``jax.jacfwd``: meant for systems of
    up to a few thousand unknowns.

    Args:
        scm: the model (interventions included).
        values: an equilibrium ``{node: (n, *shape)}``.
        noise: the exogenous values it was solved for.

    Returns:
        ``(J, index)``: ``J`` of shape ``(d, d)`` with ``d`` the total number of scalar values,
        and ``index[node]`` the positions of that node's entries in ``J``'s rows and columns.
    """
    x0 = {t: jnp.asarray(values[t]) for t in scm.order}
    shapes = {t: jax.ShapeDtypeStruct(v.shape, v.dtype) for t, v in x0.items()}
    F = scm.equations(dict(noise), {}, scm.order, scm.interventions, shapes)
    flat, unravel = ravel_pytree(x0)

    def G(v):
        return v - ravel_pytree(F(unravel(v), None))[0]

    # ravel_pytree orders a dict's leaves by sorted key.
    index, start = {}, 0
    for k in sorted(x0):
        size = int(np.prod(x0[k].shape))
        index[k] = np.arange(start, start + size)
        start += size
    return jax.jacfwd(G)(flat), index


class Solvability(eqx.Module):
    """Proposition 1 diagnostics at an equilibrium: is ``x -> x - F(x, u)`` locally invertible?

    Attributes:
        min_singular_value: smallest singular value of ``I - dF/dx`` (dimensionless).
        condition_number: its 2-norm condition number.
        locally_unique: ``min_singular_value > tol * max_singular_value``.
        size: number of unknowns in the Jacobian.
    """

    min_singular_value: Float[Array, ""]
    condition_number: Float[Array, ""]
    locally_unique: Bool[Array, ""]
    size: Int[Array, ""]


def solvability(
    scm: EquilibriumSCM,
    values: Mapping[str, Array],
    noise: Mapping[str, Array],
    *,
    tol: float | None = None,
    raise_if_singular: bool = False,
) -> Solvability:
    """Check Proposition 1 (local unique solvability) at a solution ``values`` of ``scm``.

    The Jacobian of ``x -> x - F(x, u)`` with respect to all node values is formed densely
    (``jax.jacfwd``) and its singular values computed, so this is meant for systems with up to a
    few thousand unknowns (all units together; units are independent blocks).

    Args:
        scm: the model (interventions included).
        values: an equilibrium ``{node: (n, *shape)}`` (e.g. from :func:`solve`).
        noise: the exogenous values it was solved for.
        tol: relative threshold on singular values (default ``100 * n * eps``).
        raise_if_singular: raise ``ValueError`` when the Jacobian is (numerically) singular.
    """
    J, _ = residual_jacobian(scm, values, noise)
    d = J.shape[0]
    s = jnp.linalg.svd(J, compute_uv=False)
    smax, smin = s[0], s[-1]
    if tol is None:
        tol = 100 * d * float(jnp.finfo(J.dtype).eps)
    unique = smin > tol * smax
    report = Solvability(
        min_singular_value=smin,
        condition_number=smax / jnp.maximum(smin, jnp.finfo(smin.dtype).tiny),
        locally_unique=unique,
        size=jnp.asarray(d),
    )
    if raise_if_singular and not bool(unique):
        raise ValueError(
            f"the Jacobian of x - F(x) is singular at this equilibrium (smallest singular value "
            f"{float(smin):.3g}, largest {float(smax):.3g}): the equilibrium is not locally "
            "unique (Proposition 1 fails), so small changes of the parameters or interventions "
            "may jump to another solution or have none; check the model near this point"
        )
    return report


__all__ = [
    "EquilibriumSCM",
    "Solvability",
    "Solver",
    "residual_jacobian",
    "solvability",
    "solve",
]
