"""The policy: a pytree mapping what is known of a unit (and trade-off weights) to interventions.

``Policy(actions, num_features, num_lambdas, key=...)`` holds a small network (an
``equinox.nn.MLP`` by default, or any equinox module mapping a feature vector to the
unconstrained outputs) and the :class:`~jcausal.policy.Action` s it sets. For ``n`` units with
features ``(n, d)`` (their observed pre-treatment covariates) and trade-off weights ``(n, k)``
it returns the bounded parameters of every action, one row per unit, and the engine's
interventions built from them. Bounds are in the policy's output map (:class:`Box`), so they
hold for every input. The last layer starts at zero with the bias of the identity
intervention (``Shift(0)``, ``Scale(1)``, ``Lie(0)``): an untrained policy leaves every unit
as observed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..scm import SCM, Intervention
from .actions import Action, identity_raw


def _finite(name: str, x: Array) -> Array:
    """``x`` unchanged; a named ValueError (or a runtime error under jit) if it is not finite."""
    bad = ~jnp.all(jnp.isfinite(x))
    msg = f"policy {name} contain NaN or infinite values; impute or drop those units first"
    try:
        concrete_bad = bool(bad)
    except jax.errors.ConcretizationTypeError:  # traced (under jit/vmap/grad): check at run
        return eqx.error_if(x, bad, msg)
    if concrete_bad:
        raise ValueError(msg)
    return x


class Policy(eqx.Module):
    """A policy network with bounded outputs.

    Args:
        actions: the :class:`Action` s set, in order (their parameters are the network's
            outputs, concatenated).
        num_features: ``d``, covariates per unit (0: the policy ignores the unit).
        num_lambdas: ``k``, trade-off weights the policy is conditioned on (0: none).
        key: ``jax.random`` key for the network's initial weights.
        width: hidden units of the default MLP.
        depth: hidden layers of the default MLP (0: a linear policy).
        features_loc: ``(d,)`` subtracted from the features (e.g. their mean).
        features_scale: ``(d,)`` the features are divided by (e.g. their std).
        lambda_range: ``(lo, hi)`` of the trade-off weights seen in training; with
            ``log_lambda`` the network reads ``log(λ + lo/10 + tiny)`` rescaled to about
            ``[-1, 1]`` on that range, else ``λ`` rescaled linearly.
        log_lambda: read the weights on a log scale (for weights spanning decades).
        output_scale: the network's outputs are multiplied by it before the bounds: a larger
            value lets a policy reach the ends of a sigmoid box (bang-bang optima, e.g. closing
            a sector: ``α = 2·sigmoid(z) -> 0``) in fewer steps.
        net: optional equinox module ``net(features (d + k,)) -> (sum of sizes,)`` replacing
            the default MLP (its outputs then are not initialised at the identity).

    Raises:
        ValueError: no actions, a soft action in a policy with covariates, or a network whose
            output has the wrong shape.
    """

    net: eqx.Module
    actions: tuple[Action, ...]
    num_features: int = eqx.field(static=True)
    num_lambdas: int = eqx.field(static=True)
    features_loc: Array
    features_scale: Array
    lambda_range: tuple[float, float] = eqx.field(static=True)
    log_lambda: bool = eqx.field(static=True)
    output_scale: float = eqx.field(static=True)

    def __init__(
        self,
        actions: Sequence[Action],
        num_features: int = 0,
        num_lambdas: int = 0,
        *,
        key: PRNGKeyArray,
        width: int = 32,
        depth: int = 2,
        features_loc: ArrayLike | None = None,
        features_scale: ArrayLike | None = None,
        lambda_range: tuple[float, float] = (0.0, 1.0),
        log_lambda: bool = False,
        output_scale: float = 1.0,
        net: eqx.Module | None = None,
    ):
        actions = tuple(actions)
        if not actions or not all(isinstance(a, Action) for a in actions):
            raise ValueError("Policy needs a non-empty sequence of Action(...)")
        nodes = [a.node for a in actions]
        if len(set(nodes)) != len(nodes):
            raise ValueError(f"Policy: two actions on one node: {nodes}")
        for name, v in (("num_features", num_features), ("num_lambdas", num_lambdas)):
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0:
                raise ValueError(f"Policy {name} must be an integer >= 0, got {v!r}")
        if num_features and any(a.kind == "soft" for a in actions):
            raise ValueError(
                "Policy: a soft action's parameters are shared by every unit (its mechanism "
                "reads the unit through the node's parents); use num_features=0 with it"
            )
        lo, hi = (float(v) for v in lambda_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi and lo >= 0):
            raise ValueError(
                f"lambda_range must be finite (lo, hi) with 0 <= lo < hi, got {lambda_range}"
            )
        self.actions, self.num_features, self.num_lambdas = (
            actions,
            int(num_features),
            int(num_lambdas),
        )
        self.lambda_range, self.log_lambda = (lo, hi), bool(log_lambda)
        if not (math.isfinite(output_scale) and output_scale > 0):
            raise ValueError(f"output_scale must be a positive number, got {output_scale!r}")
        self.output_scale = float(output_scale)
        d = self.num_features
        loc = np.zeros(d) if features_loc is None else np.asarray(features_loc, float)
        scale = np.ones(d) if features_scale is None else np.asarray(features_scale, float)
        if loc.shape != (d,) or scale.shape != (d,) or not np.all(scale > 0):
            raise ValueError(
                f"features_loc and features_scale must have shape ({d},), scale > 0; got "
                f"{loc.shape} and {scale.shape}"
            )
        self.features_loc, self.features_scale = jnp.asarray(loc), jnp.asarray(scale)
        width_in = max(1, d + self.num_lambdas)
        out = self.num_outputs
        if net is None:
            net = eqx.nn.MLP(width_in, out, width, depth, activation=jax.nn.tanh, key=key)
            last = net.layers[-1]
            bias = np.concatenate([identity_raw(a) for a in actions]) / self.output_scale
            net = eqx.tree_at(
                lambda m: (m.layers[-1].weight, m.layers[-1].bias),
                net,
                (jnp.zeros_like(last.weight), jnp.asarray(bias, last.bias.dtype)),
            )
        got = jax.eval_shape(net, jax.ShapeDtypeStruct((width_in,), jnp.result_type(float)))
        if getattr(got, "shape", None) != (out,):
            raise ValueError(
                f"the policy network maps ({width_in},) features to {getattr(got, 'shape', got)}"
                f"; the actions need ({out},) outputs (sizes {[a.size for a in actions]})"
            )
        self.net = net

    @property
    def num_outputs(self) -> int:
        """Unconstrained outputs per unit (sum of the actions' sizes)."""
        return sum(a.size for a in self.actions)

    def trainable(self) -> Policy:
        """Filter spec for :func:`jcausal.train.fit` and the peers: the network's arrays only."""
        spec = jax.tree_util.tree_map(lambda _: False, self)
        net_spec = jax.tree_util.tree_map(eqx.is_inexact_array, self.net)
        return eqx.tree_at(lambda p: p.net, spec, net_spec)

    def _lambda_features(self, lam: Array) -> Array:
        lo, hi = self.lambda_range
        if self.log_lambda:
            eps = lo / 10 if lo > 0 else hi * 1e-4
            a, b = math.log(lo + eps), math.log(hi + eps)
            return 2 * (jnp.log(lam + eps) - a) / (b - a) - 1
        return 2 * (lam - lo) / (hi - lo) - 1

    def inputs(
        self, features: Float[ArrayLike, "n d"] | None, lam: Float[ArrayLike, "n k"] | None, n: int
    ) -> Float[Array, "n m"]:
        """The network's input rows: normalised features and trade-off weights."""
        cols = []
        if self.num_features:
            if features is None:
                raise ValueError(
                    f"this policy reads {self.num_features} features per unit; pass them"
                )
            f = _finite("covariates", jnp.asarray(features))
            if f.shape != (n, self.num_features):
                raise ValueError(
                    f"policy features have shape {f.shape}, expected ({n}, {self.num_features})"
                )
            cols.append((f - self.features_loc) / self.features_scale)
        if self.num_lambdas:
            if lam is None:
                raise ValueError(
                    f"this policy is conditioned on {self.num_lambdas} trade-off weights; pass lam"
                )
            lam = _finite("trade-off weights", jnp.asarray(lam))
            lam = jnp.broadcast_to(
                lam.reshape(-1, self.num_lambdas) if lam.ndim else lam, (n, self.num_lambdas)
            )
            cols.append(self._lambda_features(lam))
        if not cols:
            return jnp.zeros((n, 1))
        return jnp.concatenate([c.astype(jnp.result_type(float)) for c in cols], axis=1)

    def raw(self, features, lam, n: int) -> Float[Array, "n p"]:
        """Unconstrained outputs ``(n, num_outputs)``."""
        z = jax.vmap(self.net)(self.inputs(features, lam, n)) * self.output_scale
        if z.shape != (n, self.num_outputs):
            raise ValueError(
                f"policy network returned shape {z.shape}, expected ({n}, {self.num_outputs})"
            )
        return z

    def parameters(
        self,
        features: Float[ArrayLike, "n d"] | None,
        lam: Float[ArrayLike, "n k"] | None = None,
        n: int | None = None,
    ) -> dict[str, Float[Array, "n size"]]:
        """Bounded parameters ``{node: (n, size)}`` of every action.

        Args:
            features: ``(n, d)`` covariates (``None`` when ``num_features == 0``).
            lam: ``(n, k)`` (or ``(k,)``, or a scalar when ``k == 1``) trade-off weights.
            n: number of units when there are no features (default 1).
        """
        if n is None:
            n = jnp.shape(features)[0] if features is not None else 1
        z = self.raw(features, lam, n)
        out, i = {}, 0
        for a in self.actions:
            out[a.node] = a.bounds(z[:, i : i + a.size])
            i += a.size
        return out

    def interventions(
        self, scm: SCM, theta: dict[str, Float[Array, "n size"]]
    ) -> dict[str, Intervention]:
        """The engine's interventions ``{node: Intervention}`` for bounded parameters."""
        shapes = scm.node_shapes()
        out = {}
        for a in self.actions:
            out[a.node] = a.intervention(theta[a.node], tuple(shapes[a.node].shape))
        return out

    def check(self, scm: SCM, covariates: Sequence[str] = ()) -> None:
        """Refuse a policy that does not fit ``scm`` (named ``ValueError``).

        The covariates a policy reads must not descend from a node it acts on: their
        counterfactual values would depend on the policy's own choice.
        """
        for a in self.actions:
            a.check(scm)
        acted = [a.node for a in self.actions]
        desc = scm.descendants(*acted) | set(acted)
        bad = [c for c in covariates if c in desc]
        if bad:
            raise ValueError(
                f"policy covariates {bad} are the acted nodes {acted} or descend from them; a "
                "policy may only read pre-treatment covariates"
            )


__all__ = ["Policy"]
