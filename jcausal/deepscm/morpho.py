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

The model is an :class:`jcausal.SCM` (an equinox Module, a pytree) built once by :func:`model`
and trained as it is: the loss of :func:`loss_fn` is ``-mean(jc.log_prob(scm, batch, key,
bound=True))`` (exact flow densities for ``t`` and ``i``, the ELBO for ``x``), minimised by
:func:`jcausal.train.fit` over the SCM's own leaves with two learning rates
(:func:`optimizer`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Literal

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jaxtyping import ArrayLike, PRNGKeyArray

from .. import flows
from ..flows import ParentContext
from ..image import VAEImage, dequantise
from ..nn import MNISTDecoder, MNISTEncoder, Pure
from ..scm import SCM, log_prob

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


def model(
    kind: Kind,
    key: PRNGKeyArray,
    data: Mapping[str, ArrayLike],
    *,
    latent: int = 16,
    width: int = 64,
    num_bins: int = 8,
    condition: str = "input",
    encoder_condition: str = "input",
    log_var: float = -5.0,
    kl_weight: float = 1.0,
) -> SCM:
    """A Morpho-MNIST SCM ``{t, i, x}`` of model ``kind``, ready to train.

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
        encoder_condition: the same for the encoder.
        log_var: fixed log-variance of the image's pixel noise.
        kl_weight: weight of the ELBO's KL term (1: the ELBO; see :meth:`VAEImage.elbo`).

    Returns:
        The :class:`jcausal.SCM`; its image node is a :class:`jcausal.image.VAEImage`.
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
        # Thickness is positive, so it is standardised in log space like its flow; intensity
        # directly. float32 like the networks it feeds.
        loc = [t_norm[0], np.mean(i)]
        scale = [t_norm[1], np.std(i)]
        logs = [p for p in x_parents if p == "t"]
        context = ParentContext(x_parents, logs, loc, scale, dtype=jnp.float32)
    image = VAEImage(
        encoder,
        decoder,
        context,
        x_parents,
        latent=latent,
        log_var=log_var,
        kl_weight=kl_weight,
    )
    return SCM(t=t_mech, i=i_mech, x=image)


def attributes(scm: SCM) -> SCM:
    """The ``(t, i)`` part of a Morpho-MNIST SCM (no image): for sampling and interventions."""
    return SCM(t=scm.mechanisms["t"], i=scm.mechanisms["i"])


def loss_fn(particles: int = 4, kl_warmup: int = 0):
    """``loss(scm, batch, key) -> (nll, aux)`` for :func:`jcausal.train.fit`.

    ``nll = -mean[log p(t) + log p(i | t) + ELBO(x | t, i)]`` over the batch (nats per unit):
    the engine's ``jc.log_prob(..., bound=True)`` of the whole SCM, after uniform
    dequantisation of the images, with ``particles`` ELBO samples. An SCM whose image has
    ``kl_weight`` other than 1 trains a beta-VAE (the image term is then not a bound).
    ``aux`` holds the per-node means ``log_p_t``, ``log_p_i`` and ``elbo_x`` (always the
    bound, also during a warm-up).

    Args:
        particles: ELBO samples of the latent per unit.
        kl_warmup: with ``kl_warmup > 0`` the loss takes fit's ``step`` and weighs the image's
            KL term by ``beta = min(1, (step + 1) / kl_warmup)`` (KL warm-up / annealing,
            Bowman et al. 2016; Sønderby et al. 2016): ``nll`` is then ``-[... + ELBO +
            (1 - beta) KL]``, the bound from ``kl_warmup`` steps on. ``aux`` gains ``kl_x``
            and ``kl_weight``. Evaluate such a run with ``loss_fn(particles)`` (the bound).

    Raises:
        ValueError: ``kl_warmup`` is negative or not an integer.
    """
    if isinstance(kl_warmup, bool) or int(kl_warmup) != kl_warmup or kl_warmup < 0:
        raise ValueError(f"kl_warmup must be a whole number of steps >= 0, got {kl_warmup!r}")
    kl_warmup = int(kl_warmup)

    def terms_of(scm, batch, key):
        kd, kl = jax.random.split(key)
        batch = {k: batch[k] for k in ("t", "i", "x")}
        # The networks are float32; keep their input float32 under jax_enable_x64 too.
        batch["x"] = dequantise(kd, batch["x"]).astype(jnp.float32)
        terms = log_prob(scm, batch, kl, per_node=True, bound=True, num_samples=particles)
        total = terms["t"] + terms["i"] + terms["x"]
        aux = {"log_p_t": jnp.mean(terms["t"]), "log_p_i": jnp.mean(terms["i"])}
        aux["elbo_x"] = jnp.mean(terms["x"])
        return total, batch, aux

    def loss(scm, batch, key):
        total, _, aux = terms_of(scm, batch, key)
        return -jnp.mean(total), aux

    def annealed(scm, batch, key, step):
        total, batch, aux = terms_of(scm, batch, key)
        image = scm.mechanisms["x"]
        kl = jax.vmap(
            lambda x, pa: image.posterior(x, pa).kl_divergence(
                distrax.MultivariateNormalDiag(jnp.zeros(image.latent, jnp.float32))
            )
        )(batch["x"], {p: batch[p] for p in image.parents})
        beta = jnp.minimum(1.0, (step + 1.0) / kl_warmup)
        aux |= {"kl_x": jnp.mean(kl), "kl_weight": beta}
        # ELBO + (1 - beta) KL = E[log p(x | z)] - beta KL.
        return -jnp.mean(total + (1.0 - beta) * kl), aux

    return annealed if kl_warmup else loss


def _label(path, _leaf) -> str:
    # Leaves under scm.mechanisms["t"] / ["i"] are the flows; everything else is a network.
    keys = [getattr(k, "key", getattr(k, "name", None)) for k in path]
    for a, b in itertools.pairwise(keys):
        if a == "mechanisms" and b in ("t", "i"):
            return "flow"
    return "net"


def optimizer(flow_lr: float = 5e-3, net_lr: float = 1e-4) -> optax.GradientTransformation:
    """Adam with two learning rates: ``flow_lr`` for the ``t``/``i`` flows, ``net_lr`` for the rest.

    ``net_lr`` applies to the encoder/decoder (appendix A.2: 5e-3 and 1e-4). Labels follow the
    SCM's own structure (``scm.mechanisms[node]``), so it applies to the model passed to ``fit``
    as it is.

    Args:
        flow_lr: Adam learning rate of the attribute flows.
        net_lr: Adam learning rate of the image networks.
    """

    def labels(tree):
        return jax.tree_util.tree_map_with_path(_label, tree)

    return optax.multi_transform({"flow": optax.adam(flow_lr), "net": optax.adam(net_lr)}, labels)


__all__ = [
    "GRAPHS",
    "KINDS",
    "ParentContext",
    "attributes",
    "loss_fn",
    "model",
    "optimizer",
]
