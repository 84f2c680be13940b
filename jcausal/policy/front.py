"""An amortised Pareto front: one policy ``λ -> α(λ)`` for the whole GHG–employment trade-off.

:mod:`jcausal.economy.design` optimises one intervention vector per trade-off weight λ (eq. 5
of the Lie-interventions paper). Here one :class:`~jcausal.policy.Policy`, conditioned on λ,
is trained on λ drawn over the whole range and then answers any λ — between the grid points
too — with one forward pass and one equilibrium solve.

The intervention is the paper's: every sector's assignment scaled,
``x_i := α_i (A x + y)_i``, with ``α = 2·sigmoid(z)`` (``Scale`` with ``Box(0, 2)``: exactly
``DesignProblem(..., bounded=True)``'s parameterisation), so the exact front to compare with is
:func:`jcausal.economy.design.bounded_front` (HiGHS). The unit is the observed economy: its
exogenous demand ``y`` is abducted from the table's output once, and each step predicts the
counterfactual equilibrium under the policy (:class:`~jcausal.policy.Problem`, unit level).

Training weights eq. 5 at λ by ``1 / (1 + λ)``: a positive factor per λ leaves every λ's
optimum unchanged, and keeps the large-λ end (where the loss is large) from drowning the
small-λ end in the mean over λ. Losses and excess losses reported are eq. 5 unweighted.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..economy.design import DesignProblem, analytic_front
from .actions import Action
from .bounds import Box
from .module import Policy
from .problem import Problem, Stacked


def front_problem(design: DesignProblem) -> tuple[Problem, dict]:
    """Eq. 5 of ``design`` as a unit-level policy problem, and its data (the observed economy).

    Args:
        design: a bounded :class:`~jcausal.economy.design.DesignProblem`.

    Returns:
        ``(problem, data)``; the outcome is eq. 5 weighted by ``1 / (1 + λ)``, its numbers
        (``c, r, x*, G*, E*``) in the problem's ``constants``.

    Raises:
        ValueError: an unbounded design (its optimum closes sectors with unbounded factors,
            which a bounded policy cannot represent).
    """
    if not design.bounded:
        raise ValueError(
            "the amortised front uses the paper's bounded factors α = 2·sigmoid(z); build the "
            "DesignProblem with bounded=True"
        )
    k = {"c": design.c, "r": design.r, "x_ref": design.x_ref, "G": design.G, "E": design.E}
    problem = Problem(design.model.scm(), _eq5, constants=k)
    return problem, problem.prepare({"x": design.model.x_observed[None]})


def _eq5(values, theta, lam, k):
    # Module level, with the numbers in `k`: problems of several regions stack (Stacked).
    x = values["x"]
    loss = k["c"] @ x / k["G"] + lam[0] * jnp.sum(jnp.abs(k["r"] * (x - k["x_ref"]))) / k["E"]
    return loss / (1.0 + lam[0])


def region_features(design: DesignProblem) -> np.ndarray:
    """What a per-region policy reads of a region: ``(3n,)`` numbers per sector.

    Each sector's share of the region's GHG and of its employment, and the log of their ratio
    (the unbounded optimum closes a sector exactly when that ratio exceeds λ).
    """
    x = np.asarray(design.x_ref, float)
    gs = np.asarray(design.c, float) * x / float(design.G)
    es = np.asarray(design.r, float) * x / float(design.E)
    tiny = 1e-12
    return np.concatenate([gs, es, np.log((gs + tiny) / (es + tiny))])


def region_data(stacked: Stacked, data: dict, i: int) -> tuple[Problem, dict]:
    """Region ``i``'s problem and data out of :func:`regions_problem`'s (for evaluation)."""
    one = {"obs": {k: v[i] for k, v in data["obs"].items()},
           "noise": {k: v[i] for k, v in data["noise"].items()},
           "features": data["features"][i][None]}  # fmt: skip
    return stacked.model(i), one


def regions_problem(designs: list[DesignProblem]) -> tuple[Stacked, dict]:
    """Eq. 5 of several regions (same sectors) as one :class:`Stacked` problem, and its data.

    The data's features are :func:`region_features` of each region, unnormalised (give the
    policy their mean and std: ``features_loc``, ``features_scale``).
    """
    pairs = [front_problem(d) for d in designs]
    stacked = Stacked([p for p, _ in pairs])
    feats = np.stack([region_features(d) for d in designs])
    obs = [{"x": d.model.x_observed[None]} for d in designs]
    return stacked, stacked.prepare(obs, feats)


def front_policy(
    design: DesignProblem,
    lambdas: Float[ArrayLike, " L"],
    *,
    key: PRNGKeyArray,
    width: int = 64,
    depth: int = 2,
    output_scale: float = 10.0,
    sharpness: float = 5.0,
    features: np.ndarray | None = None,
) -> Policy:
    """A λ-conditioned policy of the design's ``n`` factors ``α`` in ``(0, 2)``, at the identity.

    Args:
        design: the design problem (its model gives ``n``).
        lambdas: the λ grid it will be used on (its positive range sets the λ scale).
        key: initial weights.
        width: hidden units.
        depth: hidden layers.
        output_scale: see :class:`Policy` (closing a sector needs ``z`` of order -20).
        sharpness: factor on the first layer's initial weights of the λ input. The optimum
            jumps at each sector's switch point (bang-bang); steeper initial units resolve
            switches a fraction of a decade of λ apart (measured on ``reg1``, 6000 steps:
            mean excess 0.02 -> 0.008, largest 0.085 -> 0.043 with 5 instead of 1).
        features: ``(R, d)`` features of the regions a per-region policy will read
            (:func:`regions_problem`); they set its input size and normalisation.
    """
    lam = np.asarray(lambdas, float)
    pos = lam[lam > 0]
    lo, hi = (float(pos.min()), float(pos.max())) if pos.size >= 2 else (1e-2, 1e2)
    action = Action("x", "scale", Box(0.0, 2.0), size=design.model.n)
    d, loc, scale = 0, None, None
    if features is not None:
        f = np.asarray(features, float)
        d, loc, scale = f.shape[1], f.mean(0), np.maximum(f.std(0), 1e-6)
    pol = Policy([action], d, 1, key=key, width=width, depth=depth, lambda_range=(lo, hi),
                 log_lambda=True, output_scale=output_scale, features_loc=loc,
                 features_scale=scale)  # fmt: skip
    if depth < 1:
        return pol
    w = pol.net.layers[0].weight  # (width, d + 1): the λ input is the last column
    return eqx.tree_at(lambda p: p.net.layers[0].weight, pol, w.at[:, -1].multiply(sharpness))


def front_losses(
    policy: Policy, problem: Problem, data: dict, lambdas: Float[ArrayLike, " L"]
) -> tuple[Float[Array, " L"], Array]:
    """Eq. 5 (unweighted) of the policy at each λ, and whether every solve converged."""
    lam = jnp.asarray(np.asarray(lambdas, float), data["obs"]["x"].dtype)
    f, _, ok = _losses(policy, problem, data, lam)
    return f * (1.0 + lam), ok


@eqx.filter_jit
def _losses(policy, problem, data, lam):
    f, _, ok = jax.vmap(lambda v: problem.terms(policy, data, v.reshape(1, 1)))(lam)
    return f[:, 0], None, jnp.all(ok)


def front_excess(
    design: DesignProblem, policy: Policy, problem: Problem, data: dict, lambdas: ArrayLike
) -> np.ndarray:
    """Eq. 5 of the policy minus its exact infimum (HiGHS), at each λ (dimensionless, ``(L,)``).

    Raises:
        ValueError: an equilibrium solve did not converge at some λ.
    """
    lam = np.asarray(lambdas, float)
    f, ok = front_losses(policy, problem, data, lam)
    if not bool(ok):
        raise ValueError("an equilibrium solve under the policy did not converge")
    ref = analytic_front(design, lam)
    best = ref["ghg"] / float(design.G) + lam * ref["deviation"] / float(design.E)
    return np.asarray(f, float) - best


__all__ = [
    "front_excess",
    "front_losses",
    "front_policy",
    "front_problem",
    "region_data",
    "region_features",
    "regions_problem",
]
