"""Invariant and compartmentalized soft interventions in equilibrium SCMs.

(About 620 lines: Propositions 3 and 4 and the learned compensator, with its input features and
standardization, share the equilibrium helpers; one section per result.)

Besserve & Schölkopf (UAI 2022), sections 3.3-3.4 and 4: an intervention on node ``i`` (e.g. a
Lie intervention ``u``) usually moves every node downstream, feedback included. An *invariant*
soft intervention compensates it on an *auxiliary* node ``k`` so that an *invariant* node ``j``
keeps its unintervened equilibrium value ``x*_j(θ)`` for a whole range of parameters ``θ`` and
interventions ``u`` (Definition 4). The compensating mechanism may only use what node ``k``
sees, its parents in the unintervened graph, plus ``u``; here it is a small MLP trained with
optax through the equilibrium solver's implicit gradients (Fig. 2c).

Proposition 3 gives sufficient conditions for such an intervention to exist, checked by
:func:`invariance_conditions`; Proposition 4 says when several of them, one per compartment of a
partition, confine each intervention's effect to its own compartment, checked by
:func:`check_compartments` and built by :func:`learn_compartmentalized`.

A *model* here is a function ``model(theta) -> (scm, noise)`` returning an
:class:`~jcausal.scm.EquilibriumSCM` and its exogenous inputs (a dict of arrays with a leading
axis of one unit); ``theta`` is any pytree of parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, PyTree

from .flows import zero_head_mlp
from .scm import EquilibriumSCM, Hard, Intervention, Soft, do, residual_jacobian, solve
from .train import fit

Model = Callable[[PyTree], tuple[EquilibriumSCM, dict[str, Array]]]
Intervene = Callable[[Array], dict[str, Intervention]]


def _equilibrium(model: Model, theta, interventions=None) -> dict[str, Array]:
    scm, noise = model(theta)
    if interventions:
        scm = do(scm, interventions)
    values, _ = solve(scm, noise)
    return values


# ----------------------------------------------------------------------------------------------
# Proposition 3


class InvarianceConditions(eqx.Module):
    """Proposition 3's sufficient conditions at a reference point.

    Attributes:
        jacobian_min_singular: smallest singular value of the Jacobian of
            ``x_{-j} -> x_{-j} - f_{-j}(x_{-j}, θ)`` (j's row and column removed).
        parents_jacobian_rank: rank of ``d x*_{Pa_k} / d θ`` (parents of the auxiliary node).
        num_theta: number of scalar parameters in ``θ`` (full column rank means rank == this).
        sensitivity: ``d x*_j / d x_k`` under a hard intervention on ``k`` at ``x*_k``.
        holds: all three conditions hold.
        reasons: a sentence for each condition that fails.
    """

    jacobian_min_singular: float
    parents_jacobian_rank: int
    num_theta: int
    sensitivity: float
    holds: bool
    reasons: tuple[str, ...]


def invariance_conditions(
    model: Model,
    theta: PyTree,
    *,
    invariant: str,
    auxiliary: str,
    intervened: str | None = None,
    tol: float = 1e-8,
) -> InvarianceConditions:
    """Check Proposition 3 for an (intervened, invariant, auxiliary) triplet at ``theta``.

    Scalar nodes are assumed for ``invariant`` and ``auxiliary`` (as in the paper).

    Args:
        model: ``model(theta) -> (EquilibriumSCM, noise)`` with one unit.
        theta: reference parameters ``θ_ref``.
        invariant: node ``j`` to keep invariant.
        auxiliary: node ``k`` whose assignment is replaced.
        intervened: node ``i`` (only checked to differ from ``j`` and ``k``).
        tol: relative threshold for singular values and for the sensitivity.
    """
    if intervened is not None and intervened in (invariant, auxiliary):
        raise ValueError(
            f"the intervened node {intervened!r} must differ from the invariant and auxiliary "
            "nodes (Proposition 3)"
        )
    scm, noise = model(theta)
    for node in (invariant, auxiliary):
        if node not in scm.mechanisms:
            raise ValueError(f"unknown node {node!r}; known nodes: {list(scm.order)}")
    values, report = solve(scm, noise)
    reasons = []

    # (1) Jacobian of x_{-j} -> x_{-j} - f_{-j}: the full Jacobian of x - F(x) minus j's rows
    # and columns (x_j held at its reference value).
    J, index = residual_jacobian(scm, values, noise)
    J = np.asarray(J)
    keep = np.setdiff1d(np.arange(J.shape[0]), index[invariant])
    s = np.linalg.svd(J[np.ix_(keep, keep)], compute_uv=False)
    smin = float(s[-1]) if s.size else 1.0
    if s.size and smin <= tol * float(s[0]):
        reasons.append(
            f"the Jacobian of x_-j - f_-j (without {invariant!r}) is singular "
            f"(smallest singular value {smin:.3g})"
        )

    # (2) d x*_{Pa_k} / d theta has full column rank.
    parents = scm.mechanisms[auxiliary].parents
    flat_theta, unravel_theta = ravel_pytree(theta)

    def pa_of(th):
        vals = _equilibrium(model, unravel_theta(th))
        return jnp.concatenate([jnp.ravel(vals[p]) for p in parents]) if parents else jnp.zeros(0)

    if parents:
        Jt = np.asarray(jax.jacrev(pa_of)(flat_theta)).reshape(-1, flat_theta.size)
        sv = np.linalg.svd(Jt, compute_uv=False)
        rank = int(np.sum(sv > tol * max(float(sv[0]), 1e-300))) if sv.size else 0
    else:
        rank = 0
    if rank < flat_theta.size:
        reasons.append(
            f"d x*_Pa(k) / d theta has rank {rank} < {flat_theta.size} parameters: the parents "
            f"{list(parents)} of {auxiliary!r} do not carry enough information about theta "
            "(use fewer free parameters or an auxiliary node with more parents)"
        )

    # (3) d x*_j / d x_k != 0 through a hard intervention on k at its equilibrium value.
    xk = values[auxiliary]

    def j_of(lam):
        vals = _equilibrium(model, theta, {auxiliary: Hard(lam)})
        return jnp.sum(vals[invariant])

    sens = float(jnp.sum(jax.grad(j_of)(xk)))
    if abs(sens) <= tol * (1.0 + abs(float(jnp.sum(values[invariant])))):
        reasons.append(
            f"x*_{invariant} does not respond to a hard intervention on {auxiliary!r} "
            f"(derivative {sens:.3g}): the auxiliary node cannot steer the invariant node"
        )
    del report
    return InvarianceConditions(
        jacobian_min_singular=smin,
        parents_jacobian_rank=rank,
        num_theta=int(flat_theta.size),
        sensitivity=sens,
        holds=not reasons,
        reasons=tuple(reasons),
    )


# ----------------------------------------------------------------------------------------------
# learning an invariant intervention


class Compensator(eqx.Module):
    """The auxiliary node's learned mechanism: an MLP of its parents and the intervention ``u``.

    ``form`` says how the MLP output ``h`` modifies the node's own assignment ``f_k``:
    ``"multiplicative"`` (default) ``x_k := f_k(pa, u_k) exp(h)``, ``"additive"``
    ``x_k := f_k(pa, u_k) + h``, or ``"replace"`` ``x_k := h``. The first two start as the
    identity (the last layer is zero-initialised) so training begins at the unintervened model.

    The MLP's input is ``(φ(pa, u) - loc) / spread``: ``φ`` is ``features`` (default: the
    parents' entries, flattened, then ``u``), ``loc`` and ``spread`` a fixed standardization
    (default 0 and 1; :func:`learn_invariant` sets them with ``standardize=True``).
    """

    mlp: eqx.nn.MLP
    parents: tuple[str, ...] = eqx.field(static=True)
    form: str = eqx.field(static=True)
    features: Callable | None = eqx.field(static=True, default=None)
    loc: Array | float = 0.0
    spread: Array | float = 1.0

    def __init__(
        self,
        parents: Sequence[str],
        u_size: int,
        key: PRNGKeyArray,
        *,
        width: int = 32,
        depth: int = 2,
        form: Literal["multiplicative", "additive", "replace"] = "multiplicative",
        dtype=None,
        parent_sizes: Sequence[int] | None = None,
        features: Callable[[Mapping[str, Array], Array], Array] | None = None,
        n_features: int | None = None,
        loc: ArrayLike = 0.0,
        spread: ArrayLike = 1.0,
    ):
        if form not in ("multiplicative", "additive", "replace"):
            raise ValueError(f"unknown form {form!r}; use multiplicative, additive or replace")
        if (features is None) != (n_features is None):
            raise ValueError("give features and n_features together (n_features = len(φ(pa, u)))")
        dtype = dtype or jnp.result_type(float)
        # Parents may be vectors: the MLP sees all their entries, flattened.
        n_in = (len(parents) if parent_sizes is None else int(sum(parent_sizes))) + u_size
        if features is not None:
            n_in = int(n_features)
        if form == "replace":
            mlp = eqx.nn.MLP(n_in, 1, width, depth, activation=jax.nn.tanh, key=key, dtype=dtype)
        else:  # starts as the identity: the output layer is zero
            mlp = zero_head_mlp(n_in, 1, width, depth, key=key, activation=jax.nn.tanh, dtype=dtype)
        self.mlp = mlp
        self.parents = tuple(parents)
        self.form = form
        self.features = features
        self.loc = loc if isinstance(loc, float) else jnp.asarray(loc, dtype)
        self.spread = spread if isinstance(spread, float) else jnp.asarray(spread, dtype)

    def inputs(self, parents: Mapping[str, Array], u: Array) -> Array:
        """``φ(pa, u)`` before standardization, shape ``(n_in,)``."""
        if self.features is not None:
            return jnp.ravel(self.features({p: parents[p] for p in self.parents}, u))
        return jnp.concatenate(
            [jnp.ravel(jnp.asarray(parents[p])) for p in self.parents] + [jnp.ravel(u)]
        )

    def __call__(self, parents: Mapping[str, Array], u: Array, base: Array) -> Array:
        # The standardization is fixed, not trained.
        loc, spread = jax.lax.stop_gradient((self.loc, self.spread))
        h = self.mlp((self.inputs(parents, u) - loc) / spread)[0]
        if self.form == "multiplicative":
            return base * jnp.exp(h)
        if self.form == "additive":
            return base + h
        return h + 0.0 * base


def compensate(
    scm: EquilibriumSCM, auxiliary: str, comp: Compensator, u: Array
) -> dict[str, Intervention]:
    """The soft intervention on ``auxiliary`` that a trained :class:`Compensator` defines."""
    mech = scm.mechanisms[auxiliary]
    if tuple(mech.parents) != comp.parents:
        raise ValueError(
            f"the compensator was built for parents {comp.parents} but {auxiliary!r} has "
            f"parents {mech.parents} in the unintervened graph"
        )

    # A module-level function with the mechanism in its params: a closure made here would be
    # a new static argument on every call and recompile the solve each time.
    return {auxiliary: Soft(_compensated, (comp, u, mech))}


def _compensated(params, pa, noise):
    comp, u, mech = params
    return comp(pa, u, mech.forward(pa, noise))


class InvariantIntervention(eqx.Module):
    """A trained invariant soft intervention (Definition 4).

    Call it with ``u`` to get the intervention dict ``{intervened..., auxiliary: Soft}`` for an
    equilibrium model: ``do(scm, inv(u))``.

    Attributes:
        intervene: the user's ``u -> {node: Intervention}``.
        compensator: the auxiliary node's learned mechanism.
        invariant: the invariant node's name.
        auxiliary: the auxiliary node's name.
        history: training loss per step (mean squared deviation of the invariant node, on
            ``scale``).
        scale: how a deviation is measured: ``"relative"`` ``|x - x*| / |x*|`` or ``"log"``
            ``|log x - log x*|`` (see :func:`learn_invariant`).
    """

    intervene: Callable = eqx.field(static=True)
    compensator: Compensator
    invariant: str = eqx.field(static=True)
    auxiliary: str = eqx.field(static=True)
    history: Array
    scale: str = eqx.field(static=True, default="relative")

    def __call__(self, scm: EquilibriumSCM, u: Array) -> dict[str, Intervention]:
        return {**self.intervene(u), **compensate(scm, self.auxiliary, self.compensator, u)}

    def deviation(
        self,
        model: Model,
        thetas: PyTree,
        us: Array,
        *,
        compensated: bool = True,
        scale: Literal["relative", "log"] | None = None,
    ) -> Float[Array, " b"]:
        """Deviation of the invariant node from its unintervened value over a batch of (θ, u).

        ``"relative"``: ``|x_j^(u)(θ) - x*_j(θ)| / |x*_j(θ)|``; ``"log"``:
        ``|log x_j^(u)(θ) - log x*_j(θ)|`` (positive nodes). ``scale=None`` uses the scale the
        intervention was trained on. With ``compensated=False`` only the user's intervention is
        applied: how far the invariant node would move without the learned compensation.
        """
        return _deviation(model, self, thetas, us, compensated, scale or self.scale)


def _deviation(model, inv, thetas, us, compensated=True, scale="relative"):
    _check_scale(scale)

    def one(theta, u):
        scm, noise = model(theta)
        ref, _ = solve(scm, noise)
        ivs = inv(scm, u) if compensated else inv.intervene(u)
        new, _ = solve(do(scm, ivs), noise)
        a, b = new[inv.invariant], jax.lax.stop_gradient(ref[inv.invariant])
        if scale == "log":
            # A non-positive value gives NaN here, which fit's guard reports with its step.
            return jnp.linalg.norm(jnp.ravel(jnp.log(a) - jnp.log(b)))
        return jnp.linalg.norm(jnp.ravel(a - b)) / jnp.maximum(jnp.linalg.norm(jnp.ravel(b)), 1e-12)

    return jax.vmap(one)(thetas, us)


def _check_scale(scale):
    if scale not in ("relative", "log"):
        raise ValueError(f"unknown scale {scale!r}; use 'relative' or 'log'")


def learn_invariant(
    model: Model,
    intervene: Intervene,
    *,
    invariant: str,
    auxiliary: str,
    sample_theta: Callable[[PRNGKeyArray, int], PyTree],
    sample_u: Callable[[PRNGKeyArray, int], Array],
    key: PRNGKeyArray,
    steps: int = 500,
    batch: int = 32,
    learning_rate: float | optax.Schedule = 1e-2,
    width: int = 32,
    depth: int = 2,
    form: Literal["multiplicative", "additive", "replace"] = "multiplicative",
    scale: Literal["relative", "log"] = "relative",
    features: Callable[[Mapping[str, Array], Array], Array] | None = None,
    standardize: bool = False,
    progress: bool = False,
) -> InvariantIntervention:
    """Learn an auxiliary mechanism that keeps ``invariant`` at its unintervened equilibrium.

    Minimises the mean over ``(θ, u)`` batches of the squared deviation of the invariant node,
    ``(|x_j^(u)(θ) - x*_j(θ)| / |x*_j(θ)|)^2`` (``scale="relative"``) or
    ``|log x_j^(u)(θ) - log x*_j(θ)|^2`` (``scale="log"``), with Adam (optax), trained by
    :func:`jcausal.fit` on a fresh batch of ``(θ, u)`` per step. The loss flows through two
    equilibrium solves per sample with implicit gradients.

    Args:
        model: ``model(theta) -> (EquilibriumSCM, noise)`` with one unit.
        intervene: ``u -> {node: Intervention}``, the (Lie) intervention to compensate.
        invariant: node ``j`` kept invariant.
        auxiliary: node ``k`` whose assignment the MLP replaces; it sees ``k``'s parents in the
            unintervened graph and ``u``.
        sample_theta: ``(key, b) -> θ`` batch (leading axis ``b`` on every leaf).
        sample_u: ``(key, b) -> u`` batch of shape ``(b, *u_shape)``.
        key: random key (MLP initialisation and batches).
        steps: number of Adam steps.
        batch: number of ``(θ, u)`` samples per step.
        learning_rate: Adam's step size; a float is decayed to zero over ``steps`` with a cosine
            schedule (optax), or pass any optax schedule.
        width: hidden width of the compensator's MLP (see :class:`Compensator`).
        depth: hidden layers of the compensator's MLP.
        form: how the MLP output modifies the auxiliary node's assignment
            (``"multiplicative"``, ``"additive"`` or ``"replace"``; see :class:`Compensator`).
        scale: ``"relative"`` or ``"log"``: the deviation measured by the loss. ``"log"``
            needs a positive invariant node; it weights every unit by its relative error even
            when the node spans orders of magnitude (e.g. a demand on a steep curve).
        features: ``φ(parents, u) -> (n,)``, the compensator's input (default: the parents'
            entries and ``u``). It may only use the auxiliary node's parents and ``u``
            (Definition 4); e.g. ``log price - u`` isolates what a price still says about ``θ``
            after a multiplicative intervention ``u``.
        standardize: standardize the compensator's input by its mean and standard deviation
            at the uncompensated intervened equilibria of 256 fresh ``(θ, u)`` draws (fixed
            during training). Helps when the information about ``θ`` is a small variation of
            an input dominated by ``u``.
        progress: show a progress bar.

    Returns:
        The trained :class:`InvariantIntervention` (``history``: the loss of every step).

    Raises:
        ValueError: an unknown node or ``scale``, or ``scale="log"`` with an invariant node that
            is not positive at the first sampled ``θ``.
        FloatingPointError: a non-finite loss or gradient (from :func:`jcausal.fit`, naming
            the step); lower the learning rate or narrow the ranges of theta and u.
    """
    _check_scale(scale)
    k_init, k_data = jax.random.split(key)
    theta0 = jax.tree_util.tree_map(lambda a: a[0], sample_theta(k_data, 1))
    scm0, noise0 = model(theta0)
    for node in (invariant, auxiliary):
        if node not in scm0.mechanisms:
            raise ValueError(f"unknown node {node!r}; known nodes: {list(scm0.order)}")
    if scale == "log":
        ref0 = np.asarray(solve(scm0, noise0)[0][invariant])
        if not np.all(ref0 > 0):
            raise ValueError(
                f"scale='log' needs a positive invariant node, but {invariant!r} is "
                f"{ref0.ravel()[:4]} at the first sampled theta; use scale='relative'"
            )
    u_example = sample_u(k_data, 1)[0]
    shapes = scm0.node_shapes()
    parents = scm0.mechanisms[auxiliary].parents
    dtype = jnp.result_type(u_example)
    n_features = None
    if features is not None:
        ref0 = solve(scm0, noise0)[0]
        example = features({p: ref0[p][0] for p in parents}, u_example)
        n_features = int(np.size(example))
    comp = Compensator(
        parents,
        int(np.prod(jnp.shape(u_example))),
        k_init,
        width=width,
        depth=depth,
        form=form,
        dtype=dtype,
        parent_sizes=[int(np.prod(shapes[p].shape)) for p in parents],
        features=features,
        n_features=n_features,
    )
    if standardize:
        loc, spread = _input_statistics(
            model, intervene, comp, sample_theta, sample_u, jax.random.fold_in(k_init, 1)
        )
        comp = eqx.tree_at(lambda c: (c.loc, c.spread), comp, (loc, spread))
    if not callable(learning_rate):
        learning_rate = optax.cosine_decay_schedule(float(learning_rate), max(int(steps), 1))

    def draw(k):
        kt, ku = jax.random.split(k)
        return sample_theta(kt, batch), sample_u(ku, batch)

    def loss(c, data, _key):
        thetas, us = data
        inv = InvariantIntervention(intervene, c, invariant, auxiliary, jnp.zeros(0), scale)
        return jnp.mean(_deviation(model, inv, thetas, us, True, scale) ** 2)

    # The one training loop (jcausal.train.fit): a fresh (theta, u) batch per step, drawn
    # inside the compiled step from the step's key; its NaN guard names the step at fault.
    comp, hist = fit(
        loss,
        comp,
        draw,
        optimizer=optax.adam(learning_rate),
        steps=int(steps),
        key=k_data,
        progress=progress,
    )
    return InvariantIntervention(
        intervene, comp, invariant, auxiliary, jnp.asarray(hist.loss), scale
    )


def _input_statistics(model, intervene, comp, sample_theta, sample_u, key, n=256):
    """Mean and standard deviation of the compensator's raw input over ``n`` (θ, u) draws.

    Measured at the intervened equilibrium without compensation (where training starts).
    """
    kt, ku = jax.random.split(key)
    thetas, us = sample_theta(kt, n), sample_u(ku, n)

    def one(theta, u):
        vals = _equilibrium(model, theta, intervene(u))
        return comp.inputs({p: vals[p][0] for p in comp.parents}, u)

    x = np.asarray(eqx.filter_jit(jax.vmap(one))(thetas, us))
    if not np.all(np.isfinite(x)):
        raise ValueError(
            "the compensator's inputs are not finite at some sampled (theta, u); check features "
            "and the sampling ranges"
        )
    spread = x.std(0)
    # A constant input carries nothing: leave it unscaled rather than divide by zero.
    spread = np.where(spread > 1e-12 * (1.0 + np.abs(x.mean(0))), spread, 1.0)
    dt = comp.mlp.layers[0].weight.dtype
    return jnp.asarray(x.mean(0), dt), jnp.asarray(spread, dt)


# ----------------------------------------------------------------------------------------------
# compartments (Definition 5, Proposition 4)


class CompartmentCheck(eqx.Module):
    """Proposition 4's condition for a partition and one triplet per compartment.

    A triplet is (intervened, invariant, auxiliary) node names.

    Attributes:
        holds: the condition holds.
        boundary: for each compartment, its nodes with an edge into another compartment.
        reasons: a sentence for each violation.
    """

    holds: bool
    boundary: tuple[tuple[str, ...], ...]
    reasons: tuple[str, ...]


def check_compartments(
    scm: EquilibriumSCM,
    partition: Sequence[Iterable[str]],
    triplets: Sequence[tuple[str, str, str]],
) -> CompartmentCheck:
    """Check Proposition 4: compartmentalized interventions from invariant ones.

    Args:
        scm: the (unintervened) model; only its graph is used.
        partition: compartments ``C_1 .. C_K`` (sets of node names covering every node once).
        triplets: ``(intervened, invariant, auxiliary)`` for each compartment, in order.
    """
    parts = [tuple(c) for c in partition]
    seen: dict[str, int] = {}
    for ci, comp in enumerate(parts):
        for node in comp:
            if node not in scm.mechanisms:
                raise ValueError(f"compartment {ci} names unknown node {node!r}")
            if node in seen:
                raise ValueError(f"node {node!r} is in compartments {seen[node]} and {ci}")
            seen[node] = ci
    missing = [n for n in scm.order if n not in seen]
    if missing:
        raise ValueError(f"the partition leaves out nodes {missing}")
    if len(triplets) != len(parts):
        raise ValueError(f"{len(parts)} compartments but {len(triplets)} triplets")
    children = scm.children
    reasons = []
    boundary = []
    for ci, (comp, (i, j, k)) in enumerate(zip(parts, triplets, strict=True)):
        for role, node in (("intervened", i), ("invariant", j), ("auxiliary", k)):
            if seen.get(node) != ci:
                reasons.append(f"compartment {ci}: the {role} node {node!r} is not in it")
        out = tuple(n for n in comp if any(seen[c] != ci for c in children[n]))
        boundary.append(out)
        leaking = [n for n in out if n != j]
        if leaking:
            reasons.append(
                f"compartment {ci}: nodes {leaking} have edges into other compartments but are "
                f"not the invariant node {j!r}; their changes would leak out"
            )
    return CompartmentCheck(holds=not reasons, boundary=tuple(boundary), reasons=tuple(reasons))


def learn_compartmentalized(
    model: Model,
    partition: Sequence[Iterable[str]],
    interventions: Sequence[tuple[Intervene, str, str]],
    **kwargs: Any,
) -> list[InvariantIntervention]:
    """Build one invariant intervention per compartment (Proposition 4).

    Args:
        model: ``model(theta) -> (EquilibriumSCM, noise)``.
        partition: the compartments.
        interventions: per compartment ``(intervene, invariant, auxiliary)``, where
            ``intervene(u)`` must only touch nodes of that compartment.
        **kwargs: passed to :func:`learn_invariant` (``sample_theta``, ``sample_u``, ``key``,
            ``steps``, ...); ``key`` is split between compartments.

    Returns:
        The trained interventions; apply them together with
        ``do(scm, {**inv_1(scm, u_1), **inv_2(scm, u_2), ...})``.

    Raises:
        ValueError: when Proposition 4's condition fails (the message says why).
    """
    key = kwargs.pop("key")
    theta0 = jax.tree_util.tree_map(lambda a: a[0], kwargs["sample_theta"](key, 1))
    scm0, _ = model(theta0)
    triplets = []
    for intervene, j, k in interventions:
        u0 = kwargs["sample_u"](key, 1)[0]
        touched = tuple(intervene(u0))
        if len(touched) != 1:
            raise ValueError(
                f"each compartment's intervention must act on one node, got {list(touched)}"
            )
        triplets.append((touched[0], j, k))
    check = check_compartments(scm0, partition, triplets)
    if not check.holds:
        raise ValueError("Proposition 4 does not hold: " + "; ".join(check.reasons))
    out = []
    for c, (intervene, j, k) in enumerate(interventions):
        out.append(
            learn_invariant(
                model,
                intervene,
                invariant=j,
                auxiliary=k,
                key=jax.random.fold_in(key, c),
                **kwargs,
            )
        )
    return out


__all__ = [
    "CompartmentCheck",
    "Compensator",
    "InvarianceConditions",
    "InvariantIntervention",
    "check_compartments",
    "compensate",
    "invariance_conditions",
    "learn_compartmentalized",
    "learn_invariant",
]
