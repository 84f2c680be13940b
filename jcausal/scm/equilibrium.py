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

from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Bool, Float, Int

from ..solvers import FixedPointReport, fixed_point
from .interventions import Hard, Intervention
from .mechanisms import Mechanism
from .model import SCM, Values, node_value


class Solver(eqx.Module):
    """Options of the fixed-point solve behind an :class:`EquilibriumSCM`.

    See :func:`jcausal.solvers.fixed_point` for their meaning. ``strict`` defaults to ``True``
    here: ``sample`` and ``counterfactual`` return values only, so a solve that fails to
    converge must raise rather than hand back a number (use :func:`solve` to get the report).
    """

    method: str = eqx.field(static=True, default="anderson")
    backend: str | None = eqx.field(static=True, default=None)
    history: int = eqx.field(static=True, default=5)
    beta: float = eqx.field(static=True, default=1.0)
    ridge: float = eqx.field(static=True, default=1e-6)
    rtol: float | None = eqx.field(static=True, default=None)
    atol: float = eqx.field(static=True, default=1e-12)
    max_steps: int = eqx.field(static=True, default=500)
    strict: bool = eqx.field(static=True, default=True)

    def __call__(self, fn, x0, params=None, *, strict: bool | None = None):
        opts = dict(
            method=self.method,
            history=self.history,
            beta=self.beta,
            ridge=self.ridge,
            rtol=self.rtol,
            atol=self.atol,
            max_steps=self.max_steps,
            strict=self.strict if strict is None else strict,
        )
        if self.backend is not None:
            opts["backend"] = self.backend
        return fixed_point(fn, x0, params, **opts)


class EquilibriumSCM(SCM):
    """A smooth SCM whose graph may contain cycles; its values solve ``x = F(x, u)``.

    Example (the motivating example, eq. 4, of the Lie-interventions paper)::

        scm = EquilibriumSCM(
            x=Root(distrax.Uniform(0.5, 1.5)),                       # x = tau
            y=Additive(lambda p, pa: p["a"] * pa["x"] + p["b"] * pa["z"], {"a": .5, "b": .4},
                       distrax.Normal(0.0, 0.0), ["x", "z"]),
            z=Additive(lambda p, pa: p * pa["y"], 0.8, distrax.Normal(0.0, 0.0), ["y"]),
        )

    Args:
        mechanisms: ``{node: Mechanism}`` (or keyword arguments). Self-loops and cycles are
            allowed. Every node's value must have the shape of its noise (true of ``Root``,
            ``Additive`` and ``Invertible``); categorical mechanisms cannot take part in a
            fixed point and are refused.
        interventions: interventions in force (normally set with ``do``).
        solver: a :class:`Solver` with the fixed-point options.
        init: optional initial guess ``{node: value for one unit}`` (broadcast over units).
            Models with several equilibria converge to the one this guess leads to; zeros
            otherwise. Counterfactuals start from the observed equilibrium.
    """

    solver: Solver
    init: dict[str, Array] | None
    acyclic = False

    def __init__(
        self,
        mechanisms: Mapping[str, Mechanism] | None = None,
        /,
        interventions: Mapping[str, Intervention] | None = None,
        *,
        solver: Solver | None = None,
        init: Mapping[str, Array] | None = None,
        **kw: Mechanism,
    ):
        super().__init__(mechanisms, interventions=interventions, **kw)
        for node, mech in self.mechanisms.items():
            if mech.discrete:
                raise ValueError(
                    f"node {node!r} is categorical ({type(mech).__name__}); an equilibrium SCM "
                    "solves for continuous values only"
                )
        self.solver = Solver() if solver is None else solver
        if init is not None:
            unknown = set(init) - set(self.mechanisms)
            if unknown:
                raise ValueError(f"init names unknown nodes {sorted(unknown)}")
            init = {k: jnp.asarray(v) for k, v in init.items()}
        self.init = init

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

    def _equations(self, noise, fixed, targets, interventions, shapes):
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
        strict: bool | None = None,
    ) -> tuple[Values, FixedPointReport]:
        """Like ``predict`` but also returns the solver's report."""
        # Hard-intervened nodes are constants: take them out of the unknowns, so they come out
        # exactly as set and the solver has fewer unknowns.
        hard = {}
        for t in targets:
            if isinstance(interventions.get(t), Hard):
                ref = self._initial_guess(t, noise, fixed, init)
                shape = jax.ShapeDtypeStruct(ref.shape, ref.dtype)
                hard[t] = interventions[t].apply(t, self.mechanisms[t], {}, None, shape)
        fixed = {**fixed, **hard}
        targets = tuple(t for t in targets if t not in hard)
        if not targets:
            return hard, None
        x0 = {t: self._initial_guess(t, noise, fixed, init) for t in targets}
        shapes = {t: jax.ShapeDtypeStruct(v.shape, v.dtype) for t, v in x0.items()}
        F = self._equations(noise, fixed, targets, interventions, shapes)
        out = jax.eval_shape(lambda x: F(x, None), x0)
        for t in targets:
            if out[t].shape != x0[t].shape:
                raise ValueError(
                    f"node {t!r}: its mechanism returns shape {out[t].shape[1:]} per unit but "
                    f"its noise / initial value has shape {x0[t].shape[1:]}; in an equilibrium "
                    "SCM each node's value must have the shape of its noise"
                )
        x0 = {t: x0[t].astype(out[t].dtype) for t in targets}
        values, report = self.solver(F, x0, None, strict=strict)
        return {**values, **hard}, report

    def predict(self, noise, fixed, targets, interventions, init=None):
        values, _ = self.solve_targets(noise, fixed, targets, interventions, init)
        return values


def solve(
    scm: EquilibriumSCM,
    noise: Mapping[str, Array],
    *,
    init: Mapping[str, Array] | None = None,
    strict: bool | None = None,
) -> tuple[Values, FixedPointReport]:
    """The equilibrium ``x*(u)`` for a batch of exogenous inputs, with the solver's report.

    Args:
        scm: the equilibrium model (its interventions are applied).
        noise: ``{node: (n, *shape)}`` exogenous values for every node (e.g. from
            ``scm.sample_noise(key, n)`` or ``abduct``).
        init: optional initial guess ``{node: (n, *shape)}``.
        strict: override the model's ``Solver.strict`` (``False`` to inspect a failed solve).

    Returns:
        ``({node: (n, *shape)}, FixedPointReport)``; the report covers the whole batch (one joint
        solve; ``jax.vmap`` over units for per-unit reports).
    """
    if not isinstance(scm, EquilibriumSCM):
        raise TypeError(f"solve expects an EquilibriumSCM, got {type(scm).__name__}")
    missing = [k for k in scm.order if k not in noise]
    if missing:
        raise ValueError(f"noise lacks nodes {missing}; give exogenous values for every node")
    return _solve_jit(scm, dict(noise), None if init is None else dict(init), strict)


@eqx.filter_jit
def _solve_jit(scm, noise, init, strict):
    return scm.solve_targets(noise, {}, scm.order, scm.interventions, init, strict)


class Solvability(eqx.Module):
    """Proposition 1 diagnostics at an equilibrium: is ``x -> x - F(x, u)`` locally invertible?

    Fields:
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
    targets = scm.order
    x0 = {t: jnp.asarray(values[t]) for t in targets}
    shapes = {t: jax.ShapeDtypeStruct(v.shape, v.dtype) for t, v in x0.items()}
    F = scm._equations(dict(noise), {}, targets, scm.interventions, shapes)
    flat, unravel = ravel_pytree(x0)

    def G(v):
        x = unravel(v)
        return v - ravel_pytree(F(x, None))[0]

    J = jax.jacfwd(G)(flat)
    s = jnp.linalg.svd(J, compute_uv=False)
    smax, smin = s[0], s[-1]
    if tol is None:
        tol = 100 * flat.size * float(jnp.finfo(flat.dtype).eps)
    unique = smin > tol * smax
    report = Solvability(
        min_singular_value=smin,
        condition_number=smax / jnp.maximum(smin, jnp.finfo(smin.dtype).tiny),
        locally_unique=unique,
        size=jnp.asarray(flat.size),
    )
    if raise_if_singular and not bool(unique):
        raise ValueError(
            f"the Jacobian of x - F(x) is singular at this equilibrium (smallest singular value "
            f"{float(smin):.3g}, largest {float(smax):.3g}): the equilibrium is not locally "
            "unique (Proposition 1 fails), so small changes of the parameters or interventions "
            "may jump to another solution or have none; check the model near this point"
        )
    return report


__all__ = ["EquilibriumSCM", "Solvability", "Solver", "solvability", "solve"]
