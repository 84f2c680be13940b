"""Counterfactual metrics of Diff-SCM (Sanchez & Tsaftaris 2022): IM1, IM2, CLD, effectiveness.

All take a batch of counterfactual images ``x_cf`` ``(B, 28, 28, 1)`` in ``[0, 1]`` with their
factual classes ``y_f`` and target classes ``y_cf`` ``(B,)``, and return one value per unit
(compiled, batched over units); :func:`mean_std` summarises them as in Table 1.

* IM1 and IM2 (Van Looveren & Klaise 2021; Diff-SCM App. G eqs. 19-20), with ``AE_k`` the
  autoencoder trained on class ``k`` and ``AE`` the one trained on all classes (squared L2 and
  L1 norms summed over pixels)::

      IM1 = |x_cf - AE_{y_cf}(x_cf)|_2^2 / (|x_cf - AE_{y_f}(x_cf)|_2^2 + eps)
      IM2 = |AE_{y_cf}(x_cf) - AE(x_cf)|_2^2 / (|x_cf|_1 + eps)

  ``eps = 1e-7`` (:data:`IM_EPS`, the value of Schut et al.'s evaluation code). App. G prints
  ``AE_{x_F}`` in the numerator of eq. 20, but its left-hand side ``IM2(x_cf, y_cf)`` takes no
  factual class, its text says "the autoencoder trained on the counterfactual class", and so do
  Van Looveren & Klaise (their eq. 9) and Schut et al.'s code: the counterfactual class is used.
  Lower is better for both: IM1 < 1 means the target class's autoencoder explains the image
  better than the factual class's.
* CLD (Sec. 5.2, eqs. 8-10): with ``(mu, sigma)`` the VAE posterior of an image and
  ``D(a, b) = KL(N(mu_a, sigma_a) || N(mu_b, sigma_b))``, ``div = D(x_cf, x_f)``, ``S_c`` the set
  of ``D(x, x_f)`` over the training images ``x`` of class ``c``::

      CLD = log(exp(P(S_{y_cf} <= div)) + exp(P(S_{y_f} >= div)))

  Both probabilities lie in [0, 1], so CLD lies in ``[log 2, 1 + log 2]`` = [0.693, 1.693]; it
  is lowest when the counterfactual is closer to the factual image than most target-class
  images (minimal) yet further than most factual-class images (the class changed).
* Effectiveness: the fraction of counterfactuals an oracle classifier on clean images (a
  :class:`jcausal.metrics.DigitClassifier`, not the guidance classifier) assigns to the target
  class, and the fraction it still assigns to the factual class.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .autoencoders import CLASSES, Autoencoders, check_images, check_labels
from .digits import DigitClassifier

IM_EPS = 1e-7
CHUNK = 256  # units per compiled CLD block: bounds the (units x training images) KL matrix


class LatentBank(eqx.Module):
    """VAE posteriors of the reference (training) images, the sets ``S_c`` of CLD are built on.

    Attributes:
        mean: ``(N, d)`` posterior means.
        logvar: ``(N, d)`` posterior log-variances.
        labels: ``(N,)`` classes.
    """

    mean: Float[Array, "N d"]
    logvar: Float[Array, "N d"]
    labels: Int[Array, " N"]


def _posterior(vae, x: Array) -> tuple[Array, Array]:
    enc = vae.encode if hasattr(vae, "encode") else vae
    return jax.vmap(enc)(x)


_posterior_jit = eqx.filter_jit(_posterior)


def latent_bank(vae, images, labels, chunk: int = 1000) -> LatentBank:
    """Encode reference images ``(N, 28, 28, 1)`` in ``[0, 1]`` with labels ``(N,)`` once.

    ``vae`` is a :class:`jcausal.metrics.autoencoders.VAE` or any object with
    ``encode(x (28, 28, 1)) -> (mean (d,), logvar (d,))`` (or such a callable).
    """
    x = check_images(images)
    y = check_labels(labels, len(x))
    counts = np.bincount(y, minlength=CLASSES)
    if np.any(counts == 0):
        raise ValueError(
            f"the reference set needs images of every class; classes {np.where(counts == 0)[0]} "
            "have none"
        )
    parts = [_posterior_jit(vae, jnp.asarray(x[i : i + chunk])) for i in range(0, len(x), chunk)]
    mean = jnp.concatenate([p[0] for p in parts])
    logvar = jnp.concatenate([p[1] for p in parts])
    return LatentBank(mean=mean, logvar=logvar, labels=jnp.asarray(y))


def gaussian_kl(
    mean_p: Float[Array, "... d"],
    logvar_p: Float[Array, "... d"],
    mean_q: Float[Array, "... d"],
    logvar_q: Float[Array, "... d"],
) -> Float[Array, "..."]:
    """``KL(N(mean_p, diag e^logvar_p) || N(mean_q, diag e^logvar_q))`` (nats, last axis)."""
    return 0.5 * jnp.sum(
        logvar_q
        - logvar_p
        + (jnp.exp(logvar_p) + (mean_p - mean_q) ** 2) / jnp.exp(logvar_q)
        - 1.0,
        axis=-1,
    )


# ----------------------------------------------------------------------------------------------
# input checks (host side, before anything is compiled)


def _check_batch(x_cf, *labels_and_names, name: str = "x_cf"):
    x = check_images(x_cf, name)
    ys = [check_labels(y, len(x), nm) for y, nm in labels_and_names]
    return (x, *ys)


# ----------------------------------------------------------------------------------------------
# IM1 / IM2


@eqx.filter_jit
def _im_scores(aes: Autoencoders, x, y_f, y_cf, eps):
    per, rec_all = aes.reconstruct_all(x)  # (K, B, 28, 28, 1), (B, 28, 28, 1)
    units = jnp.arange(x.shape[0])
    rec_cf, rec_f = per[y_cf, units], per[y_f, units]
    sq = lambda a: jnp.sum(a**2, axis=(1, 2, 3))  # noqa: E731
    im1 = sq(x - rec_cf) / (sq(x - rec_f) + eps)
    im2 = sq(rec_cf - rec_all) / (jnp.sum(jnp.abs(x), axis=(1, 2, 3)) + eps)
    return im1, im2


def im_scores(
    autoencoders: Autoencoders,
    x_cf: Float[np.ndarray, "B 28 28 1"],
    y_f: Int[np.ndarray, " B"],
    y_cf: Int[np.ndarray, " B"],
    *,
    eps: float = IM_EPS,
) -> tuple[Float[Array, " B"], Float[Array, " B"]]:
    """IM1 and IM2 of every counterfactual (App. G eqs. 19-20) from one reconstruction pass.

    Args:
        autoencoders: the class autoencoders and the all-class one
            (:func:`jcausal.metrics.autoencoders.train_autoencoders`, or any callables of one
            image ``(28, 28, 1)``).
        x_cf: counterfactual images ``(B, 28, 28, 1)`` in ``[0, 1]``.
        y_f: factual classes ``(B,)``.
        y_cf: target (counterfactual) classes ``(B,)``.
        eps: the ``epsilon`` of both denominators.

    Returns:
        ``(im1, im2)``, each ``(B,)``.

    Raises:
        ValueError: images not ``(B, 28, 28, 1)`` in ``[0, 1]`` or not finite; a class outside
            ``0..K-1`` (``K`` the number of class autoencoders) or of the wrong shape.
    """
    k = len(autoencoders.per_class)
    x = check_images(x_cf, "x_cf")
    yf = check_labels(y_f, len(x), "y_f", k)
    ycf = check_labels(y_cf, len(x), "y_cf", k)
    return _im_scores(autoencoders, jnp.asarray(x), jnp.asarray(yf), jnp.asarray(ycf), eps)


def im1(autoencoders, x_cf, y_f, y_cf, *, eps: float = IM_EPS) -> Float[Array, " B"]:
    """IM1 ``(B,)`` (eq. 19); see :func:`im_scores` for the arguments."""
    return im_scores(autoencoders, x_cf, y_f, y_cf, eps=eps)[0]


def im2(autoencoders, x_cf, y_cf, *, eps: float = IM_EPS) -> Float[Array, " B"]:
    """IM2 ``(B,)`` (eq. 20, with the counterfactual class's autoencoder; module docstring)."""
    return im_scores(autoencoders, x_cf, y_cf, y_cf, eps=eps)[1]


# ----------------------------------------------------------------------------------------------
# CLD


def _cld_unit(bank: LatentBank, post_cf, post_f, y_f, y_cf):
    (m_cf, lv_cf), (m_f, lv_f) = post_cf, post_f
    div = gaussian_kl(m_cf, lv_cf, m_f, lv_f)
    d = gaussian_kl(bank.mean, bank.logvar, m_f[None], lv_f[None])  # (N,) = D(x, x_f)
    in_cf, in_f = bank.labels == y_cf, bank.labels == y_f
    p_cf = jnp.sum(in_cf & (d <= div)) / jnp.sum(in_cf)
    p_f = jnp.sum(in_f & (d >= div)) / jnp.sum(in_f)
    return div, p_cf, p_f, jnp.logaddexp(p_cf, p_f)


@eqx.filter_jit
def _cld(vae, bank, x_cf, x_f, y_f, y_cf):
    post_cf, post_f = _posterior(vae, x_cf), _posterior(vae, x_f)
    return jax.lax.map(
        lambda a: _cld_unit(bank, *a),
        (post_cf, post_f, y_f, y_cf),
        batch_size=CHUNK,
    )


def cld_terms(
    vae,
    bank: LatentBank,
    x_cf: Float[np.ndarray, "B 28 28 1"],
    x_f: Float[np.ndarray, "B 28 28 1"],
    y_f: Int[np.ndarray, " B"],
    y_cf: Int[np.ndarray, " B"],
) -> dict[str, Float[Array, " B"]]:
    """CLD and its parts for every counterfactual (Diff-SCM eqs. 8-10).

    Args:
        vae: the VAE (or any object with ``encode(x) -> (mean, logvar)`` for one image).
        bank: posteriors of the reference images (:func:`latent_bank` on the training set).
        x_cf: counterfactual images ``(B, 28, 28, 1)`` in ``[0, 1]``.
        x_f: factual images ``(B, 28, 28, 1)`` in ``[0, 1]``.
        y_f: factual classes ``(B,)``.
        y_cf: target classes ``(B,)``.

    Returns:
        ``{"div", "p_cf", "p_f", "cld"}``, each ``(B,)``: ``div = D(x_cf, x_f)`` (nats),
        ``p_cf = P(S_CF <= div)``, ``p_f = P(S_F >= div)`` and ``cld = logaddexp(p_cf, p_f)``.

    Raises:
        ValueError: bad images (shape, range, NaN) or classes (shape, outside ``0..9``), or
            ``x_cf`` and ``x_f`` of different sizes.
    """
    x = check_images(x_cf, "x_cf")
    xf = check_images(x_f, "x_f")
    if xf.shape != x.shape:
        raise ValueError(f"x_f must match x_cf's shape {x.shape}; got {xf.shape}")
    yf = check_labels(y_f, len(x), "y_f")
    ycf = check_labels(y_cf, len(x), "y_cf")
    div, p_cf, p_f, c = _cld(vae, bank, jnp.asarray(x), jnp.asarray(xf), jnp.asarray(yf),
                             jnp.asarray(ycf))  # fmt: skip
    return {"div": div, "p_cf": p_cf, "p_f": p_f, "cld": c}


def cld(vae, bank, x_cf, x_f, y_f, y_cf) -> Float[Array, " B"]:
    """CLD ``(B,)`` (eq. 10); see :func:`cld_terms`."""
    return cld_terms(vae, bank, x_cf, x_f, y_f, y_cf)["cld"]


# ----------------------------------------------------------------------------------------------
# effectiveness


class UnitClassifier(eqx.Module):
    """A :class:`~jcausal.metrics.DigitClassifier` on the image convention.

    The classifier takes ``(28, 28)`` grey levels ``0..255``; this takes one image
    ``(28, 28, 1)`` in ``[0, 1]`` and returns its logits ``(10,)``.
    """

    model: DigitClassifier

    def __call__(self, x: Float[Array, "28 28 1"]) -> Float[Array, " 10"]:
        return self.model(x[..., 0] * 255.0)


def as_unit_classifier(oracle):
    """``oracle`` as a classifier of one ``(28, 28, 1)`` image in ``[0, 1]``."""
    return UnitClassifier(oracle) if isinstance(oracle, DigitClassifier) else oracle


@eqx.filter_jit
def _predict(oracle, x):
    return jnp.argmax(jax.vmap(oracle)(x), axis=-1)


def oracle_predict(oracle, x: Float[Array, "B 28 28 1"]) -> Int[Array, " B"]:
    """Classes ``(B,)`` an oracle gives images ``x`` ``(B, 28, 28, 1)`` in ``[0, 1]``.

    ``oracle``: one image ``(28, 28, 1)`` -> logits, or a :class:`DigitClassifier` (wrapped in
    :class:`UnitClassifier`).
    """
    return _predict(as_unit_classifier(oracle), jnp.asarray(x))


def effectiveness(
    oracle,
    x_cf: Float[np.ndarray, "B 28 28 1"],
    y_f: Int[np.ndarray, " B"],
    y_cf: Int[np.ndarray, " B"],
) -> dict[str, float]:
    """How often an oracle classifier on clean images sees the intended class change.

    Args:
        oracle: a trained :class:`jcausal.metrics.DigitClassifier` (separate from the guidance
            classifier), or any classifier of one ``(28, 28, 1)`` image in ``[0, 1]`` -> logits.
        x_cf: counterfactual images ``(B, 28, 28, 1)`` in ``[0, 1]``.
        y_f: factual classes ``(B,)``.
        y_cf: target classes ``(B,)``.

    Returns:
        ``{"target": fraction classified as y_cf, "factual": fraction classified as y_f, "n"}``.

    Raises:
        ValueError: bad images or classes.
    """
    x, yf, ycf = _check_batch(x_cf, (y_f, "y_f"), (y_cf, "y_cf"))
    pred = np.asarray(oracle_predict(oracle, jnp.asarray(x)))
    return {
        "target": float(np.mean(pred == ycf)),
        "factual": float(np.mean(pred == yf)),
        "n": len(x),
    }


def mean_std(values) -> dict[str, float]:
    """``{"mean", "std", "n"}`` of per-unit values (population std, as Table 1's sigma).

    Raises:
        ValueError: no values, or a non-finite one (a metric must never be averaged over NaN).
    """
    v = np.asarray(values, np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("mean_std of no values")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{int(np.sum(~np.isfinite(v)))} of {v.size} values are not finite")
    return {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}


__all__ = [
    "IM_EPS",
    "LatentBank",
    "UnitClassifier",
    "as_unit_classifier",
    "cld",
    "cld_terms",
    "effectiveness",
    "gaussian_kl",
    "im1",
    "im2",
    "im_scores",
    "latent_bank",
    "mean_std",
    "oracle_predict",
]
