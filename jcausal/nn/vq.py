"""Multi-codebook vector quantisation (CT-VAE's MCQ-VAE, sec. 3.3) on disjoint channel slices.

A latent vector of ``D`` channels is cut into ``C`` sub-vectors of ``D / C`` channels; codebook
``c`` (``K`` codes of dimension ``D / C``) quantises channels ``[c D/C, (c + 1) D/C)`` and only
those. (The seed's code gives codebook ``c`` the channels ``[c, c + D/C)``, so neighbouring
codebooks overlap and the last channels are never quantised; here the slices are disjoint and
cover ``D``, which the tests check.)

The quantised vector passes gradients to the encoder with the straight-through estimator
(van den Oord et al. 2017): ``z + stop_gradient(q - z)``. The codebook loss
``||sg(z) - q||^2`` moves the codes, the commitment loss ``beta ||z - sg(q)||^2`` the encoder.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray


def slices(dim: int, num_codebooks: int) -> tuple[tuple[int, int], ...]:
    """The channel slice ``(start, stop)`` of every codebook.

    Args:
        dim: latent channels ``D``.
        num_codebooks: number of codebooks ``C``; must divide ``D``.

    Raises:
        ValueError: ``C`` does not divide ``D`` (or either is < 1).
    """
    dim, num_codebooks = int(dim), int(num_codebooks)
    if dim < 1 or num_codebooks < 1 or dim % num_codebooks:
        raise ValueError(
            f"the number of codebooks C={num_codebooks} must divide the latent channels "
            f"D={dim} (each codebook quantises its own D/C channels); choose D a multiple of C"
        )
    d = dim // num_codebooks
    return tuple((c * d, (c + 1) * d) for c in range(num_codebooks))


class MultiCodebook(eqx.Module):
    """``C`` codebooks of ``K`` codes, each on its own slice of the latent channels.

    Attributes:
        codebooks: ``(C, K, D / C)`` code vectors.
    """

    codebooks: Float[Array, "C K d"]

    def __init__(self, dim: int, num_codebooks: int, num_codes: int, *, key: PRNGKeyArray):
        slices(dim, num_codebooks)
        if int(num_codes) < 2:
            raise ValueError(f"num_codes must be >= 2, got {num_codes}")
        d = dim // num_codebooks
        self.codebooks = jax.random.uniform(
            key, (num_codebooks, num_codes, d), minval=-1.0 / num_codes, maxval=1.0 / num_codes
        )

    @property
    def num_codebooks(self) -> int:
        """``C``."""
        return self.codebooks.shape[0]

    @property
    def num_codes(self) -> int:
        """``K``."""
        return self.codebooks.shape[1]

    @property
    def dim(self) -> int:
        """``D = C * d``."""
        return self.codebooks.shape[0] * self.codebooks.shape[2]

    def _split(self, z: Array) -> Array:
        if z.shape[-1] != self.dim:
            raise ValueError(
                f"MultiCodebook: latent vectors must have {self.dim} channels "
                f"(C={self.num_codebooks} codebooks of {self.codebooks.shape[2]}), "
                f"got shape {z.shape}"
            )
        return z.reshape(*z.shape[:-1], self.num_codebooks, self.codebooks.shape[2])

    def indices(self, z: Float[Array, "*batch D"]) -> Int[Array, "*batch C"]:
        """Nearest code of every sub-vector (squared Euclidean distance)."""
        zs = self._split(z)
        # ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2, per codebook c.
        dots = jnp.einsum("...cd,ckd->...ck", zs, self.codebooks)
        dist = jnp.sum(self.codebooks**2, -1) - 2 * dots
        return jnp.argmin(dist, axis=-1).astype(jnp.int32)

    def lookup(self, idx: Int[Array, "*batch C"]) -> Float[Array, "*batch D"]:
        """The quantised vector of code indices (the inverse of :meth:`indices` on codes)."""
        idx = jnp.asarray(idx, jnp.int32)
        if idx.shape[-1:] != (self.num_codebooks,):
            raise ValueError(
                f"MultiCodebook.lookup: indices need a last axis of C={self.num_codebooks}, "
                f"got shape {idx.shape}"
            )
        q = jax.vmap(lambda e, i: e[i], in_axes=(0, -1), out_axes=-2)(self.codebooks, idx)
        return q.reshape(*idx.shape[:-1], self.dim)

    def __call__(
        self, z: Float[Array, "*batch D"]
    ) -> tuple[Float[Array, "*batch D"], Int[Array, "*batch C"], dict[str, Array]]:
        """Quantise ``z`` with the straight-through estimator.

        Returns:
            ``(z_st, idx, losses)``: the straight-through quantised vectors (value of the codes,
            gradient of the identity to ``z``), the code indices, and ``{"codebook",
            "commitment"}`` mean squared errors (weight the commitment by ``beta`` yourself).
        """
        idx = self.indices(z)
        q = self.lookup(idx)
        losses = {
            "codebook": jnp.mean((jax.lax.stop_gradient(z) - q) ** 2),
            "commitment": jnp.mean((z - jax.lax.stop_gradient(q)) ** 2),
        }
        return z + jax.lax.stop_gradient(q - z), idx, losses


def usage(idx: Int[Array, "*batch C"], num_codes: int) -> Float[Array, "C K"]:
    """Frequency of every code of every codebook in a batch of indices."""
    flat = jnp.asarray(idx).reshape(-1, idx.shape[-1])
    return jnp.mean(jax.nn.one_hot(flat, num_codes), axis=0)


def perplexity(idx: Int[Array, "*batch C"], num_codes: int) -> Float[Array, " C"]:
    """``exp(entropy)`` of each codebook's code frequencies (``K`` when all are used evenly)."""
    p = usage(idx, num_codes)
    return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), -1))


__all__ = ["MultiCodebook", "perplexity", "slices", "usage"]
