"""A conditional-VAE image mechanism (Deep SCM, section 2.2, eqs. 2-5), generic over networks.

The image's exogenous noise splits into a high-level latent ``z`` (16-d, standard normal) and a
low-level per-pixel ``u`` (standard normal). The assignment is

    x := P^{-1}( mu(z, pa) + sigma * u ),

where ``mu`` is the decoder ``g(z; pa)`` (eq. A.5), ``sigma`` is fixed
(``log sigma^2 = -5`` in the paper), and ``P`` is RealNVP's logit preprocessing that maps
intensities in ``[0, 256)`` to the real line. Abduction follows eq. 5: sample ``z`` from the
encoder's ``q(z | x, pa)`` (eq. A.6) and invert the low-level part exactly,
``u = (P(x) - mu(z, pa)) / sigma``, so the prediction step reproduces the observed image
bit for bit when the parents are unchanged, and a counterfactual keeps its pixel-level detail.

In the engine: the noise is ``{"z", "u"}`` (both described by :attr:`VAEImage.noise`);
abduction is amortized and stochastic (needs a key); the likelihood is only bounded, so
``jc.log_prob(scm, obs, key, bound=True)`` gives the ELBO for this node
(:meth:`VAEImage.log_prob_bound`) and exact terms for the others; ``jc.counterfactual`` uses
the constant-variance shortcut (:meth:`VAEImage.counterfactual_value`), equal to eq. (6).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import distrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..scm import Mechanism, Parents, as_parents

#: RealNVP's boundary offset: intensities are squeezed into [alpha, 1 - alpha] before the logit.
ALPHA = 0.05


def logit_preprocessing(levels: float = 256.0, alpha: float = ALPHA) -> distrax.Bijector:
    """The bijector ``y -> x = levels (sigmoid(y) - alpha) / (1 - 2 alpha)`` (its inverse is P).

    Args:
        levels: number of grey levels (256 for 8-bit images).
        alpha: margin that keeps ``x`` in the open interval, so the logit stays finite.
    """
    scale = levels / (1.0 - 2.0 * alpha)
    return distrax.Chain(
        [distrax.ScalarAffine(shift=-alpha * scale, scale=scale), distrax.Sigmoid()]
    )


class VAEImage(Mechanism):
    """Conditional-VAE image mechanism with exact low-level inversion (eq. 5).

    Args:
        encoder: ``encoder(y, context) -> (mean, log_var)`` of ``q(z | x, pa)``, where
            ``y = P(x)`` is the preprocessed image of shape ``image_shape``.
        decoder: ``decoder(z, context) -> mu`` of shape ``image_shape`` (preprocessed space).
        context: ``context(parents) -> (k,)`` features of the parents (e.g. normalised
            thickness and intensity); ``None`` for no parents.
        parents: parent names.
        latent: latent dimension.
        image_shape: shape of one image, e.g. ``(28, 28)``.
        log_var: fixed log-variance of the low-level Gaussian (``-5`` in the paper).
        levels: number of intensity levels (256 for 8-bit images).

    ``encoder``, ``decoder`` and ``context`` are pytrees (e.g. :class:`jcausal.nn.Pure`
    wrappers of flax networks), so their parameters are trained like any other leaves;
    ``log_var`` is fixed (gradients are stopped). ``kl_weight`` other than 1 makes
    :meth:`log_prob_bound` a beta-VAE objective rather than a bound (for training only).
    """

    encoder: Any
    decoder: Any
    context: Any
    log_var: Array
    parents: tuple[str, ...] = eqx.field(static=True)
    latent: int = eqx.field(static=True)
    image_shape: tuple[int, ...] = eqx.field(static=True)
    levels: float = eqx.field(static=True)
    kl_weight: float = eqx.field(static=True)
    stochastic_abduction: ClassVar[bool] = True
    checks_values: ClassVar[bool] = True
    exact_likelihood: ClassVar[bool] = False
    has_shortcut: ClassVar[bool] = True

    def __init__(
        self,
        encoder: Callable,
        decoder: Callable,
        context: Callable | None = None,
        parents=(),
        *,
        latent: int = 16,
        image_shape=(28, 28),
        log_var: float = -5.0,
        levels: float = 256.0,
        kl_weight: float = 1.0,
    ):
        self.encoder = encoder
        self.decoder = decoder
        self.context = context
        # A concrete dtype (not weak): fit would otherwise recompile once the update makes it
        # strong.
        self.log_var = jnp.asarray(float(log_var), jnp.result_type(float))
        self.parents = as_parents(parents, "VAEImage")
        self.latent = int(latent)
        self.image_shape = tuple(image_shape)
        self.levels = float(levels)
        self.kl_weight = float(kl_weight)

    # -- noise -----------------------------------------------------------------------------

    @property
    def noise(self) -> distrax.Distribution:
        """The whole exogenous noise of one image: ``{"z": (latent,), "u": image_shape}``.

        Independent standard normals (the latent's prior and the pixel noise).
        """
        dtype = jnp.result_type(self.log_var)
        shape = self.image_shape
        return distrax.Joint(
            {
                "z": distrax.MultivariateNormalDiag(jnp.zeros(self.latent, dtype)),
                "u": distrax.Independent(
                    distrax.Normal(jnp.zeros(shape, dtype), jnp.ones(shape, dtype)), len(shape)
                ),
            }
        )

    def sample_noise(self, key: PRNGKeyArray, n: int) -> dict[str, Array]:
        # The same draws as noise.sample, without building the distributions (cheaper).
        kz, ku = jax.random.split(key)
        dtype = jnp.result_type(self.log_var)
        return {
            "z": jax.random.normal(kz, (n, self.latent), dtype),
            "u": jax.random.normal(ku, (n, *self.image_shape), dtype),
        }

    # -- pieces ----------------------------------------------------------------------------

    def _ctx(self, parents: Parents) -> Array | None:
        return None if self.context is None else self.context(parents)

    def preprocess(self, x: Array) -> Array:
        """``P(x)``: intensities in ``[0, levels)`` -> the real line (elementwise)."""
        return logit_preprocessing(self.levels).inverse(x)

    def postprocess(self, y: Array) -> Array:
        """``P^{-1}(y)``."""
        return logit_preprocessing(self.levels).forward(y)

    @property
    def sigma(self) -> Array:
        """Standard deviation of the pixel noise in preprocessed space (fixed, not trained)."""
        return jnp.exp(0.5 * jax.lax.stop_gradient(self.log_var))

    def mean(self, z: Float[Array, " latent"], parents: Parents) -> Array:
        """Decoder output ``mu(z, pa)`` in preprocessed space."""
        return self.decoder(z, self._ctx(parents))

    def posterior(self, x: Array, parents: Parents) -> distrax.Distribution:
        """``q(z | x, pa)`` for one image."""
        m, lv = self.encoder(self.preprocess(x), self._ctx(parents))
        return distrax.MultivariateNormalDiag(m, jnp.exp(0.5 * lv))

    # -- mechanism -------------------------------------------------------------------------

    def forward(self, parents: Parents, noise: dict[str, Array]) -> Array:
        return self.postprocess(self.mean(noise["z"], parents) + self.sigma * noise["u"])

    def abduct(self, value: Array, parents: Parents, key: PRNGKeyArray | None) -> dict:
        z = self.posterior(value, parents).sample(seed=key)
        u = (self.preprocess(value) - self.mean(z, parents)) / self.sigma
        return {"z": z, "u": u}

    def shortcut(
        self,
        x: Float[Array, "*image"],
        parents: Parents,
        new_parents: Parents,
        z: Float[Array, " latent"],
    ) -> Float[Array, "*image"]:
        """Counterfactual of one image for one latent draw, by the constant-variance shortcut.

        With a fixed decoder variance the abducted pixel noise ``u = (P(x) - mu(z, pa)) / sigma``
        cancels against the prediction ``mu(z, pa') + sigma u`` (section 2.2 of Pawlowski et
        al.), so ``P(x') = P(x) + mu(z, pa') - mu(z, pa)``: no noise is formed, and the
        observed pixel detail is carried over by construction. Equal to eq. (6) for the same
        ``z`` up to rounding (``x`` in grey levels, ``z`` from :meth:`posterior`).
        """
        y = self.preprocess(x)
        return self.postprocess(y + self.mean(z, new_parents) - self.mean(z, parents))

    def counterfactual_value(
        self, value: Array, parents: Parents, new_parents: Parents, key: PRNGKeyArray | None
    ) -> Array:
        """Eq. (6) for one image in one step; ``jc.counterfactual`` uses it.

        Draws ``z ~ q(z | x, pa)`` with ``key`` (the same draw as :meth:`abduct`), then applies
        :meth:`shortcut`.
        """
        z = self.posterior(value, parents).sample(seed=key)
        return self.shortcut(value, parents, new_parents, z)

    def counterfactual_images(
        self,
        x: Float[Array, "*image"],
        parents: Parents,
        new_parents: Parents,
        key: PRNGKeyArray,
        num_samples: int = 32,
    ) -> Float[Array, " samples *image"]:
        """Monte Carlo counterfactuals of one image.

        ``num_samples`` draws of :meth:`counterfactual_value` (keys split from ``key``). Average
        over the first axis for the paper's point estimate. ``jc.counterfactual(...,
        num_samples=S)`` does the same for a batch of units through the engine.
        """
        keys = jax.random.split(key, num_samples)
        return jax.vmap(lambda k: self.counterfactual_value(x, parents, new_parents, k))(keys)

    def reconstruct(
        self, x: Float[Array, "*image"], parents: Parents, key: PRNGKeyArray, num_samples: int = 32
    ) -> Float[Array, "*image"]:
        """``P^{-1}(E_q[mu(z, pa)])`` for one image (the reconstructions of Table 1's MAE).

        A Monte Carlo average over ``num_samples`` draws of ``z ~ q(z | x, pa)``.
        """
        zs = self.posterior(x, parents).sample(seed=key, sample_shape=(num_samples,))
        mu = jax.vmap(lambda z: self.mean(z, parents))(zs)
        return self.postprocess(jnp.mean(mu, 0))

    def log_likelihood(self, x: Array, z: Array, parents: Parents) -> Float[Array, ""]:
        """``log p(x | z, pa)`` (eq. 4): Gaussian in preprocessed space plus log-Jacobian of P."""
        y, log_det = logit_preprocessing(self.levels).inverse_and_log_det(x)
        resid = (y - self.mean(z, parents)) / self.sigma
        d = resid.size
        log_var = jax.lax.stop_gradient(self.log_var)
        gauss = -0.5 * jnp.sum(resid**2) - d * (0.5 * jnp.log(2 * jnp.pi) + 0.5 * log_var)
        return gauss + jnp.sum(log_det)

    def elbo(
        self,
        x: Array,
        parents: Parents,
        key: PRNGKeyArray,
        particles: int = 4,
        kl_weight: float | None = None,
    ) -> Float[Array, ""]:
        """Evidence lower bound on ``log p(x | pa)`` (eq. 3) with ``particles`` samples of ``z``.

        The KL term is in closed form (two diagonal Gaussians); the expectation is a Monte
        Carlo average with reparametrised samples, so the bound is differentiable.
        ``kl_weight`` scales the KL term (a beta-VAE objective; default: the mechanism's
        ``kl_weight``); only ``1`` gives a bound.
        """
        kl_weight = self.kl_weight if kl_weight is None else kl_weight
        q = self.posterior(x, parents)
        zs = q.sample(seed=key, sample_shape=(particles,))
        rec = jnp.mean(jax.vmap(lambda z: self.log_likelihood(x, z, parents))(zs))
        kl = q.kl_divergence(distrax.MultivariateNormalDiag(jnp.zeros_like(q.loc)))
        return rec - kl_weight * kl

    def log_prob_bound(
        self, value: Array, parents: Parents, key: PRNGKeyArray | None, num_samples: int = 1
    ) -> Float[Array, ""]:
        """The ELBO (:meth:`elbo`) with ``num_samples`` particles.

        What ``jc.log_prob(..., bound=True)`` gives for this node. ``value`` in grey levels
        (dequantised for 8-bit data).
        """
        # The networks are float32; keep their input float32 under jax_enable_x64 too.
        value = jnp.asarray(value, jnp.float32)
        return self.elbo(value, parents, key, num_samples)

    def out_of_support(self, value: Array) -> Array:
        # P is defined on the open interval that [alpha, 1 - alpha] stretches to.
        lo, hi = self._open_range()
        return jnp.any((value <= lo) | (value >= hi) | jnp.isnan(value))

    @property
    def support_messages(self) -> tuple[str, ...]:
        lo, hi = self._open_range()
        return (
            f"image intensities must lie in ({lo:.1f}, {hi:.1f}) for the logit preprocessing "
            f"(8-bit data: [0, {self.levels:g})); got a value outside (or NaN)",
        )

    def _open_range(self) -> tuple[float, float]:
        scale = self.levels / (1.0 - 2.0 * ALPHA)
        return -ALPHA * scale, (1.0 - ALPHA) * scale


def dequantise(key: PRNGKeyArray, x: Array) -> Array:
    """Uniform dequantisation of integer intensities: ``x + U(0, 1)`` (as for RealNVP).

    Args:
        key: random key of the uniform noise.
        x: integer intensities (grey levels), any shape.
    """
    return jnp.asarray(x, jnp.result_type(float)) + jax.random.uniform(key, jnp.shape(x))
