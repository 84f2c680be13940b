"""CT-VAE training losses (sec. 3.5, eqs. 6-15), causal mode, and the model as an SCM.

Training (the MCQ-VAE frozen, as in the seed): ``params = {"vae": jc.frozen(vae), "ct": ct}``
and :func:`ct_loss` with :func:`jcausal.train.fit`. Every step has the three modes:

* *standard* (eqs. 6-8): the null action must reproduce the input codes, with a sampled graph
  (eq. 6) and with the identity graph (eq. 7), and the null graph is pulled to the identity
  (eq. 8);
* *action* (eq. 9): the codes of ``Y`` under the true action, with the graph regularisers of
  eqs. 13-15: KL of the edge probabilities to the uniform prior, the graph's squared norm
  (sparsity) and "every node keeps a parent"; two terms of ours: the intervention mask's
  expected rate (:func:`mask_rate`, sparse masks) and the mean log-likelihood of the codes
  the action changed (``changed``, the same weight for every transition however many cells
  it changes);
* *causal* (eq. 10): ``q = softmax`` over actions of the log-likelihood of ``Y``'s codes,
  trained by cross-entropy against the true action. Scoring every action costs
  ``O(actions x N^2 x hidden)``, so training scores the true action against
  ``num_negatives`` sampled others; evaluation scores all.

The SCM (:func:`scm`): nodes ``x`` (source image, an exogenous root), ``a`` (the action, a
uniform categorical root) and ``y`` (:class:`jcausal.image.VQTransition`, i.e.
``decode o CT(codes(x), a)`` with a Gumbel-max per code). Then
``jc.counterfactual(scm, {"x": X, "a": A, "y": Y}, {"a": jc.Hard(a2)}, key)`` is "what would
``Y`` have been under ``a2``", and :func:`action_posterior` (causal mode) is ``P(a | x, y)``
from the engine's ``log_prob``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import distrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ..image.vq_transition import VQTransition
from ..scm import SCM, Hard, Root, do, log_prob
from ..scm import sample as _sample_scm
from .layer import CTLayer


@dataclasses.dataclass(frozen=True)
class Weights:
    """Weights of the CT-VAE loss terms (the seed's defaults are ones; these are tuned here).

    ``mask`` (the intervention mask's expected rate, :func:`mask_rate`), ``changed`` (the
    mean negative log-likelihood of the codes the action changed) and ``mask_target`` (the
    mask supervised by where the codes changed, :func:`mask_target_loss`) are ours, not the
    paper's; all are off by default.
    """

    standard: float = 1.0
    identity_graph: float = 1.0
    null_to_identity: float = 1.0
    action: float = 1.0
    causal: float = 1.0
    kl: float = 0.01
    sparsity: float = 0.01
    dependency: float = 0.1
    mask: float = 0.0
    changed: float = 0.0
    mask_target: float = 0.0

    def __post_init__(self):
        # A negative weight turns a likelihood into a term the optimiser drives to -inf (and
        # NaN poisons every step): refuse both before a training starts.
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            number = isinstance(v, numbers.Real) and not isinstance(v, bool)
            if not number or not math.isfinite(v) or v < 0:
                raise ValueError(f"Weights.{f.name} must be a finite number >= 0, got {v!r}")


def batch_codes(vae, images: Float[Array, "B S S 3"]) -> Int[Array, "B h w C"]:
    """``vae.codes`` of a batch of images.

    An MCQ-VAE (anything with ``encode_batch`` and a ``quantizer``) encodes the batch at once,
    one convolution per layer, which ``jax.vmap(vae.codes)`` also computes (tested); any other
    codec with a per-image ``codes`` is vmapped.
    """
    if hasattr(vae, "encode_batch") and hasattr(vae, "quantizer"):
        return vae.quantizer.indices(vae.encode_batch(images))
    return jax.vmap(vae.codes)(images)


def code_loglik(
    logits: Float[Array, "h w C K"], codes: Int[Array, "h w C"], where: Array | None = None
) -> Array:
    """``sum log softmax(logits)[codes]`` over the grid and codebooks (or the codes ``where``)."""
    lp = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), codes[..., None], -1)[..., 0]
    return jnp.sum(lp if where is None else jnp.where(where, lp, 0.0))


def mask_rate(mask_logits: Float[Array, " N"]) -> Array:
    """Expected fraction of nodes an action intervenes on, ``mean_i sigmoid(rho_i)``.

    The mask-sparsity penalty: an atomic action should touch few cells, and a node outside
    the mask sees neither the action nor the action's graph, so it can only keep its code.
    """
    return jnp.mean(jax.nn.sigmoid(mask_logits))


def mask_target_loss(
    mask_logits: Float[Array, " N"], cx: Int[Array, "h w C"], cy: Int[Array, "h w C"]
) -> Array:
    """Mean binary cross-entropy of the mask ``sigmoid(rho_i)`` against ``1[cell i changed]``.

    A cell changed if any of its codebooks' codes differs between ``X`` and ``Y``. The mask
    (eq. 4) is otherwise learned only through the likelihood, and a mask that covers every
    cell does not tell the readout where the action acts; observed pairs say it, so in
    training the mask can be taught it (the mask still sees only ``X``'s codes and the
    action, so at evaluation it predicts where ``a`` would act).
    """
    target = jnp.any(cx != cy, axis=-1).reshape(-1).astype(mask_logits.dtype)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(mask_logits, target))


def _unit_terms(ct: CTLayer, cx, cy, a, key, num_negatives: int) -> dict[str, Array]:
    n_act = ct.num_actions
    feats = ct.features(cx)
    null = ct.edge_logits(feats, n_act)
    k_std, k_neg, k_act = jax.random.split(key, 3)
    eye = jnp.eye(ct.num_nodes)
    g0 = ct.graph(feats, n_act, k_std, null)
    standard = code_loglik(ct.propagate(feats, n_act, g0["mask"], g0["adjacency"]), cx)
    ident = code_loglik(ct.propagate(feats, n_act, jnp.zeros(ct.num_nodes), eye), cx)
    null_to_id = jnp.mean((g0["adjacency"] - eye) ** 2)
    if num_negatives is None:
        # Every action, the true one first (eq. 10 as written: the ranking used in evaluation).
        acts = (a + jnp.arange(n_act)) % n_act
    else:
        # Negatives: uniform over the other actions (with replacement).
        shift = 1 + jax.random.randint(k_neg, (num_negatives,), 0, max(n_act - 1, 1))
        acts = jnp.concatenate([a[None], (a + shift) % n_act])

    def score(b, k):
        g = ct.graph(feats, b, k, null)
        return ct.propagate(feats, b, g["mask"], g["adjacency"]), g

    out, g = jax.vmap(score)(acts, jax.random.split(k_act, len(acts)))
    ll = jax.vmap(lambda o: code_loglik(o, cy))(out)
    p = jax.nn.sigmoid(g["edge_logits"][0])
    eps = 1e-6
    kl = jnp.mean(p * jnp.log(p + eps) + (1 - p) * jnp.log(1 - p + eps) + jnp.log(2.0))
    no_parent = jnp.exp(jnp.sum(jnp.log1p(-p + eps), axis=1))
    return {
        "standard": -standard,
        "identity_graph": -ident,
        "null_to_identity": null_to_id,
        "action": -ll[0],
        # The codes the action changed, averaged per unit: few cells change under a shape or
        # a colour action (and a copy of the input explains all the others), so in the summed
        # likelihood such a transition weighs less than a move that changes many cells.
        "changed": -code_loglik(out[0], cy, cy != cx) / jnp.maximum(jnp.sum(cy != cx), 1),
        "mask": mask_rate(g["mask_logits"][0]),
        "mask_target": mask_target_loss(g["mask_logits"][0], cx, cy),
        "causal": -jax.nn.log_softmax(ll)[0],
        "kl": kl,
        "sparsity": jnp.mean(g["adjacency"][0] ** 2),
        "dependency": jnp.mean(no_parent**2),
        "mask_rate": jnp.mean(g["mask"][0]),
        "edges": jnp.mean(g["adjacency"][0]),
        "negatives_acc": (jnp.argmax(ll) == 0).astype(jnp.float32),
    }


def ct_loss(
    num_negatives: int | None = 3,
    weights: Weights = Weights(),
    action_weights: Float[Array, " A"] | None = None,
):
    """The loss ``loss(params, batch, key) -> (loss, aux)`` of the CT layer for ``fit``.

    Args:
        num_negatives: actions sampled (with replacement) and scored against the true one in
            causal mode; ``None`` scores every action (eq. 10 exactly, the ranking evaluated;
            it costs ``A / (1 + num_negatives)`` times the action passes).
        weights: the terms' weights. Code log-likelihoods are divided by the number of codes
            per unit (``h w C``) so the weights are comparable; causal mode uses the raw sum.
        action_weights: optional weight of every true action in the action, changed and causal
            terms (e.g. inverse frequencies: class balance); the batch mean is weighted by them.

    The batch needs ``x``, ``y`` (images) and ``a`` (actions); ``params`` is
    ``{"vae": MCQVAE, "ct": CTLayer}`` (the VAE wrapped in ``jc.frozen`` for training).
    """
    if num_negatives is not None and int(num_negatives) < 1:
        raise ValueError(f"num_negatives must be >= 1 or None (every action), got {num_negatives}")
    if action_weights is not None:
        action_weights = jnp.asarray(action_weights, jnp.float32)
        if action_weights.ndim != 1 or not bool(jnp.all(action_weights > 0)):
            raise ValueError("action_weights must be a 1-D array of positive weights per action")

    def loss(params, batch, key):
        vae, ct = params["vae"], params["ct"]
        cx = jax.lax.stop_gradient(batch_codes(vae, batch["x"]))
        cy = jax.lax.stop_gradient(batch_codes(vae, batch["y"]))
        keys = jax.random.split(key, cx.shape[0])
        terms = jax.vmap(lambda x, y, a, k: _unit_terms(ct, x, y, a, k, num_negatives))(
            cx, cy, batch["a"], keys
        )
        if action_weights is not None:
            w = action_weights[batch["a"]]
            w = w / jnp.sum(w)
            terms = {
                k: jnp.sum(w * v) if k in _PER_ACTION else jnp.mean(v) for k, v in terms.items()
            }
        else:
            terms = {k: jnp.mean(v) for k, v in terms.items()}
        per_code = float(cx[0].size)
        total = 0.0
        for name, w in dataclasses.asdict(weights).items():
            total = total + w * (terms[name] / per_code if name in _LIKELIHOOD else terms[name])
        return total, terms

    return loss


_LIKELIHOOD = ("standard", "identity_graph", "action")
_PER_ACTION = ("action", "changed", "causal")


def action_logliks(
    ct: CTLayer, cx: Int[Array, "h w C"], cy: Int[Array, "h w C"]
) -> Float[Array, " A"]:
    """Log-likelihood of ``cy`` under every action (modes of mask and graph) for one unit."""
    acts = jnp.arange(ct.num_actions)
    return jax.vmap(lambda b: code_loglik(ct(cx, b), cy))(acts)


# ----------------------------------------------------------------------------------------------
# the SCM


def _ct_logits(ct, codec, parents):
    return ct(codec.codes(parents["x"]), jnp.asarray(parents["a"], jnp.int32))


def _ct_logits_drawn(params, codec, parents):
    # One fixed draw of the graph's noise (mask and adjacency), the same for every unit.
    ct, key = params
    return ct(codec.codes(parents["x"]), jnp.asarray(parents["a"], jnp.int32), key)


def scm(vae, ct: CTLayer, graph_key: PRNGKeyArray | None = None) -> SCM:
    """The image transition as an SCM with nodes ``x``, ``a`` and ``y`` (module docstring).

    ``x`` is a root with a uniform law on ``[0, 1]^(S, S, 3)`` (it is exogenous: the model
    does not describe the source images), ``a`` a uniform categorical over the actions.

    Args:
        vae: the MCQ-VAE (the codec of ``y``).
        ct: the CT layer.
        graph_key: ``None``: ``y``'s mechanism uses the modes of the mask and the graph (a
            deterministic transition); a key: one draw of the mask and graph (the same draw
            for every unit), i.e. the model conditioned on that value of the graph's noise.
    """
    s = vae.image_size
    x = Root(distrax.Independent(distrax.Uniform(jnp.zeros((s, s, 3)), jnp.ones((s, s, 3))), 3))
    a = Root(distrax.Categorical(logits=jnp.zeros(ct.num_actions)))
    if graph_key is None:
        y = VQTransition(vae, _ct_logits, ct, ("x", "a"))
    else:
        y = VQTransition(vae, _ct_logits_drawn, (ct, graph_key), ("x", "a"))
    return SCM(x=x, a=a, y=y)


def action_posterior(
    model: SCM,
    x: Float[Array, "B S S 3"],
    y: Float[Array, "B S S 3"],
    graph_keys: PRNGKeyArray | None = None,
) -> Float[Array, "B A"]:
    """Causal mode, eq. (10): ``P(a | x, y)`` from the engine's ``log_prob`` over actions.

    Args:
        model: the SCM of :func:`scm`.
        x: source images.
        y: target images.
        graph_keys: ``None``: ``log p(y | x, a)`` of ``model`` as it is (for ``scm(vae, ct)``,
            under the modes of the mask and graph). ``(S,)`` keys: the Monte Carlo marginal
            over the graph, ``log mean_s p(y | x, a, graph_s)`` with one draw of the mask and
            graph per key (eq. 10 samples ``M ~ Bernoulli``); ``model`` must then come from
            ``scm(vae, ct, graph_key=...)`` (its key is replaced by each of ``graph_keys``).

    Returns:
        ``(B, A)`` posterior probabilities (rows sum to one).

    Raises:
        ValueError: ``graph_keys`` with a model built without ``graph_key``.
    """
    n_act = model.mechanisms["a"].categories
    n = x.shape[0]

    def logliks(m):
        def joint(b):
            lp = log_prob(m, {"x": x, "a": jnp.full((n,), b, jnp.int32), "y": y}, per_node=True)
            return lp["a"] + lp["y"]

        return jax.vmap(joint)(jnp.arange(n_act))  # (A, B)

    if graph_keys is None:
        return jax.nn.softmax(logliks(model).T, axis=-1)
    mech = model.mechanisms["y"]
    if not (
        isinstance(mech, VQTransition)
        and getattr(mech.codes.logits, "fn", None) is _ct_logits_drawn
    ):
        raise ValueError(
            "action_posterior: graph_keys needs the SCM of scm(vae, ct, graph_key=key) "
            "(a mechanism of y that draws the graph)"
        )

    def drawn(k):
        return logliks(eqx.tree_at(lambda m: m.mechanisms["y"].codes.params[0][1], model, k))

    ll = jax.lax.map(drawn, graph_keys)  # (S, A, B), one draw at a time (memory)
    ll = jax.nn.logsumexp(ll, axis=0) - jnp.log(ll.shape[0])
    return jax.nn.softmax(ll.T, axis=-1)


def intervene(
    model: SCM, x: Float[Array, "B S S 3"], a: Int[Array, " B"], key: PRNGKeyArray | None = None
) -> Float[Array, "B S S 3"]:
    """``Y`` under ``do(x = X, a = a)``: the most likely image, or a sample with ``key``."""
    mech = model.mechanisms["y"]
    a = jnp.asarray(a, jnp.int32)
    if key is None:
        return jax.vmap(lambda xi, ai: mech.mode({"x": xi, "a": ai}))(x, a)
    return _sample_scm(key, do(model, {"x": Hard(x), "a": Hard(a)}), x.shape[0])["y"]


def repeat_action(
    model: SCM, x: Float[Array, "B S S 3"], a: Int[Array, " B"], times: int
) -> Float[Array, "T B S S 3"]:
    """Apply the same action ``times`` times (Fig. 5), each output the next input (a scan)."""

    def step(img, _):
        out = intervene(model, img, a)
        return out, out

    _, seq = jax.lax.scan(step, x, None, length=int(times))
    return seq


__all__ = [
    "Weights",
    "action_logliks",
    "action_posterior",
    "batch_codes",
    "code_loglik",
    "ct_loss",
    "intervene",
    "mask_rate",
    "mask_target_loss",
    "repeat_action",
    "scm",
]
