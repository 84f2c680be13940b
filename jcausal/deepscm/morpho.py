"""The three Morpho-MNIST deep SCMs of Pawlowski, Castro & Glocker (2020), Fig. 2 and appendix A.

Nodes: thickness ``t`` (pixels), intensity ``i`` (grey levels) and image ``x`` (28x28, grey
levels in ``[0, 256)``). The models differ only in their graphs:

* ``independent``: ``t``, ``i`` and ``x`` mutually independent (Fig. 2a);
* ``conditional``: ``x`` depends on ``t`` and ``i``; ``t`` and ``i`` independent (Fig. 2b);
* ``full``: ``i`` depends on ``t``; ``x`` on ``t`` and ``i`` (Fig. 2c, the true graph of eq. 7).

Mechanisms (appendix A.2):

* ``t := (exp ∘ AffineNormalisation ∘ Spline)(e_T)`` (eq. A.1), a linear-rational spline flow;
* ``i := (AffineNormalisation ∘ sigmoid ∘ ConditionalAffine(t̂))(e_I)`` with a linear context map
  of the normalised thickness ``t̂`` (eq. A.2, full model), or
  ``(AffineNormalisation ∘ sigmoid ∘ Spline ∘ Affine)(e_I)`` (eq. A.3, the other models);
* ``x``: :class:`jcausal.deepscm.VAEImage` (conditional VAE, latent 16, fixed decoder
  log-variance -5, RealNVP logit preprocessing) with the parents standardised as context.

Parameters are a plain dict of pytrees (the two flows, the encoder, the decoder and the fixed
context normalisation) so they can be trained with :func:`jcausal.train.fit`;
:func:`build` turns them into a :class:`jcausal.SCM` inside the loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .. import flows
from ..nn import MNISTDecoder, MNISTEncoder, Pure
from ..scm import SCM
from .image import VAEImage, dequantise

Kind = Literal["independent", "conditional", "full"]
KINDS: tuple[str, ...] = ("independent", "conditional", "full")

#: Parents of each node in each model (Fig. 2).
GRAPHS: dict[str, dict[str, tuple[str, ...]]] = {
    "independent": {"t": (), "i": (), "x": ()},
    "conditional": {"t": (), "i": (), "x": ("t", "i")},
    "full": {"t": (), "i": ("t",), "x": ("t", "i")},
}


def _check_kind(kind: str) -> None:
    if kind not in GRAPHS:
        raise ValueError(f"model kind must be one of {KINDS}, got {kind!r}")


class ParentContext(eqx.Module):
    """Standardised parents of the image, ``((log t, i) - loc) / scale`` (the paper's "hats").

    Thickness is positive, so it is standardised in log space like its flow; intensity is
    standardised directly. Without this the networks would mostly follow the parent with the
    largest magnitude (appendix A.2, footnote 5). ``loc`` and ``scale`` are fixed.
    """

    loc: Array
    scale: Array
    parents: tuple[str, ...] = eqx.field(static=True)

    def __init__(self, loc: ArrayLike, scale: ArrayLike, parents=("t", "i")):
        # float32 like the networks it feeds: a float64 context (under jax_enable_x64) would
        # promote every layer after the concatenation to float64.
        self.loc = jnp.asarray(loc, dtype=jnp.float32)
        self.scale = jnp.asarray(scale, dtype=jnp.float32)
        self.parents = tuple(parents)

    def __call__(self, parents: Mapping[str, Array]) -> Float[Array, " k"]:
        vals = [jnp.log(parents[p]) if p == "t" else parents[p] for p in self.parents]
        c = jnp.stack([jnp.asarray(v, dtype=self.loc.dtype) for v in vals])
        return (c - jax.lax.stop_gradient(self.loc)) / jax.lax.stop_gradient(self.scale)


def init_params(
    kind: Kind,
    key: PRNGKeyArray,
    data: Mapping[str, ArrayLike],
    *,
    latent: int = 16,
    width: int = 64,
    num_bins: int = 8,
    condition: str = "input",
    encoder_condition: str = "input",
) -> dict[str, Any]:
    """Initial parameters of a Morpho-MNIST model.

    Args:
        kind: ``"independent"``, ``"conditional"`` or ``"full"``.
        key: initialises the flows' context networks and the encoder/decoder.
        data: training attributes ``{"t": (n,), "i": (n,)}`` (pixels, grey levels), used only
            for the fixed normalisations (log-space whitening of ``t``; the range of ``i``).
        latent: dimension of the image's latent ``z`` (16 in the paper).
        width: channels of the encoder's/decoder's first convolution (64 in the paper).
        num_bins: bins of the spline flows.
        condition: how the decoder sees the parents: ``"input"`` (the paper, eq. A.5) or
            ``"film"`` (also a modulation of every layer; see :class:`jcausal.nn.MNISTDecoder`).

    Returns:
        ``{"t": Flow, "i": Flow, "encoder": Pure, "decoder": Pure, "context": ParentContext |
        None}``.
    """
    _check_kind(kind)
    t = np.asarray(data["t"], dtype=float)
    i = np.asarray(data["i"], dtype=float)
    if t.ndim != 1 or t.shape != i.shape or len(t) < 2:
        raise ValueError(
            f"data['t'] and data['i'] must be 1-D with the same length >= 2, got {t.shape}, "
            f"{i.shape}"
        )
    kt, ki, ke = jax.random.split(key, 3)
    t_norm = flows.normalisation(t, "exp")
    i_norm = flows.normalisation(i, "sigmoid")
    t_mech = flows.spline_mechanism(
        kt, num_bins=num_bins, order="linear", constraint="exp", normalise=t_norm
    )
    if GRAPHS[kind]["i"]:
        # Eq. A.2: a conditional affine whose context map is linear (depth 0) in t-hat.
        i_mech = flows.affine_mechanism(
            ki,
            ["t"],
            depth=0,
            constraint="sigmoid",
            normalise=i_norm,
            log_parents=["t"],
            context_normalise=t_norm,
        )
    else:
        i_mech = flows.spline_mechanism(
            ki, num_bins=num_bins, order="linear", affine=True, constraint="sigmoid",
            normalise=i_norm,
        )  # fmt: skip
    x_parents = GRAPHS[kind]["x"]
    c = len(x_parents)
    seed = int(jax.random.randint(ke, (), 0, 2**31 - 1))
    encoder = Pure(
        MNISTEncoder(latent, c, rngs=nnx.Rngs(seed), width=width, condition=encoder_condition)
    )
    decoder = Pure(
        MNISTDecoder(latent, c, rngs=nnx.Rngs(seed + 1), width=width, condition=condition)
    )
    context = None
    if c:
        loc = [t_norm[0], np.mean(i)]
        scale = [t_norm[1], np.std(i)]
        context = ParentContext(loc, scale, x_parents)
    return {
        "t": t_mech.params,
        "i": i_mech.params,
        "encoder": encoder,
        "decoder": decoder,
        "context": context,
    }


def build(kind: Kind, params: Mapping[str, Any], *, log_var: float = -5.0) -> SCM:
    """The SCM ``{t, i, x}`` of model ``kind`` with these parameters (see :func:`init_params`).

    Cheap (no computation): call it inside a loss so the parameters stay a plain pytree.
    """
    _check_kind(kind)
    latent = _latent(params["decoder"])
    image = VAEImage(
        params["encoder"],
        params["decoder"],
        params["context"],
        GRAPHS[kind]["x"],
        latent=latent,
        log_var=log_var,
    )
    return SCM(
        t=flows.flow_mechanism(params["t"]),
        i=flows.flow_mechanism(params["i"]),
        x=image,
    )


def _latent(decoder: Pure) -> int:
    return int(decoder.module.fc1.in_features - decoder.module.context)


def attributes(scm: SCM) -> SCM:
    """The ``(t, i)`` part of a Morpho-MNIST SCM (no image): for sampling and interventions."""
    return SCM(t=scm.mechanisms["t"], i=scm.mechanisms["i"])


def log_densities(
    kind: Kind,
    params: Mapping[str, Any],
    batch: Mapping[str, Array],
    key: PRNGKeyArray,
    *,
    particles: int = 4,
    dequantize: bool = True,
    kl_weight: float = 1.0,
) -> dict[str, Float[Array, " n"]]:
    """Per-unit ``log p(t)``, ``log p(i | pa_i)`` and the ELBO on ``log p(x | pa_x)`` (nats).

    Args:
        kind, params: the model.
        batch: ``{"t": (n,), "i": (n,), "x": (n, 28, 28)}``; ``x`` in grey levels (integers
            for 8-bit data).
        key: for the dequantisation noise and the ELBO's posterior samples.
        particles: Monte Carlo samples of ``z`` per image in the ELBO.
        dequantize: add ``U(0, 1)`` noise to ``x`` (training and evaluating the continuous
            density of 8-bit data).
        kl_weight: weight of the ELBO's KL term (1: the ELBO; see :meth:`VAEImage.elbo`).

    Returns:
        ``{"t": (n,), "i": (n,), "x": (n,)}``.
    """
    scm = build(kind, params)
    kd, kx = jax.random.split(key)
    x = dequantise(kd, batch["x"]) if dequantize else jnp.asarray(batch["x"], float)
    # The networks are float32; keep their input float32 under jax_enable_x64 too (speed).
    x = x.astype(jnp.float32)
    mt, mi, mx = (scm.mechanisms[k] for k in ("t", "i", "x"))
    lt = jax.vmap(mt.log_prob)(batch["t"], {})
    li = jax.vmap(mi.log_prob)(batch["i"], {p: batch[p] for p in mi.parents})
    keys = jax.random.split(kx, x.shape[0])
    pa = {p: batch[p] for p in mx.parents}
    lx = jax.vmap(lambda xi, p, k: mx.elbo(xi, p, k, particles, kl_weight))(x, pa, keys)
    return {"t": lt, "i": li, "x": lx}


def loss_fn(kind: Kind, particles: int = 4, kl_weight: float = 1.0):
    """``loss(params, batch, key) -> (nll, aux)`` for :func:`jcausal.train.fit`.

    ``nll = -mean[log p(t) + log p(i | t) + ELBO(x | t, i)]`` over the batch (nats per unit),
    with uniform dequantisation of the images and ``particles`` ELBO samples. ``kl_weight``
    other than 1 trains a beta-VAE image mechanism (the image term is then not a bound).
    """
    _check_kind(kind)

    def loss(params, batch, key):
        terms = log_densities(kind, params, batch, key, particles=particles, kl_weight=kl_weight)
        total = terms["t"] + terms["i"] + terms["x"]
        aux = {"log_p_t": jnp.mean(terms["t"]), "log_p_i": jnp.mean(terms["i"])}
        aux["elbo_x"] = jnp.mean(terms["x"])
        return -jnp.mean(total), aux

    return loss


def optimizer(flow_lr: float = 5e-3, net_lr: float = 1e-4) -> optax.GradientTransformation:
    """Adam with two learning rates: ``flow_lr`` for the ``t``/``i`` flows, ``net_lr`` for the
    encoder/decoder (appendix A.2: 5e-3 and 1e-4)."""

    def labels(params):
        return {
            k: jax.tree_util.tree_map(lambda _, k=k: "flow" if k in ("t", "i") else "net", v)
            for k, v in params.items()
        }

    return optax.multi_transform({"flow": optax.adam(flow_lr), "net": optax.adam(net_lr)}, labels)


def reconstruct(
    kind: Kind,
    params: Mapping[str, Any],
    batch: Mapping[str, Array],
    key: PRNGKeyArray,
    samples: int = 32,
) -> Float[Array, "n 28 28"]:
    """Reconstructions ``P^{-1}(E_q[g(z; pa)])`` by a Monte Carlo average over ``samples`` z."""
    scm = build(kind, params)
    mx = scm.mechanisms["x"]
    x = jnp.asarray(batch["x"], jnp.float32)
    pa = {p: batch[p] for p in mx.parents}

    def one(xi, p, k):
        zs = mx.posterior(xi, p).sample(seed=k, sample_shape=(samples,))
        mu = jax.vmap(lambda z: mx.mean(z, p))(zs)
        return mx.postprocess(jnp.mean(mu, 0))

    return jax.vmap(one)(x, pa, jax.random.split(key, x.shape[0]))


__all__ = [
    "GRAPHS",
    "KINDS",
    "ParentContext",
    "attributes",
    "build",
    "init_params",
    "log_densities",
    "loss_fn",
    "optimizer",
    "reconstruct",
]
