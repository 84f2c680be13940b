"""Multi-codebook vector quantisation (CT-VAE's MCQ-VAE, sec. 3.3) on disjoint channel slices.

A latent vector of ``D`` channels is cut into ``C`` sub-vectors of ``D / C`` channels; codebook
``c`` (``K`` codes of dimension ``D / C``) quantises channels ``[c D/C, (c + 1) D/C)`` and only
those. (The seed's code gives codebook ``c`` the channels ``[c, c + D/C)``, so neighbouring
codebooks overlap and the last channels are never quantised; here the slices are disjoint and
cover ``D``, which the tests check.)

The quantised vector passes gradients to the encoder with the straight-through estimator
(van den Oord et al. 2017): ``z + stop_gradient(q - z)``. The codebook loss
``||sg(z) - q||^2`` moves the codes, the commitment loss ``beta ||z - sg(q)||^2`` the encoder.

Alternatively the codes follow exponential moving averages of the encoder outputs assigned to
them (van den Oord et al. 2017, App. A.1): build the quantiser with ``ema=True`` and update it
with :meth:`MultiCodebook.ema_update` inside the loss; :func:`ema_buffers` marks the codebook
and its averages as :func:`jcausal.train.buffer` leaves so that ``fit`` carries the update
from step to step.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree


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

    Args:
        dim: latent channels ``D``.
        num_codebooks: ``C`` (must divide ``D``).
        num_codes: ``K`` codes per codebook.
        ema: keep the moving averages of EMA codebook updates (see :meth:`ema_update`).
        key: initialisation key.

    Attributes:
        codebooks: ``(C, K, D / C)`` code vectors.
        ema_counts: with ``ema``, ``(C, K)`` moving average of how many vectors each code
            received per batch (starts at 1: every code counts as its own first member);
            else ``None``.
        ema_sums: with ``ema``, ``(C, K, D / C)`` moving average of the sum of those vectors
            (starts at the codes themselves); else ``None``.
    """

    codebooks: Float[Array, "C K d"]
    ema_counts: Float[Array, "C K"] | None
    ema_sums: Float[Array, "C K d"] | None

    def __init__(
        self,
        dim: int,
        num_codebooks: int,
        num_codes: int,
        *,
        key: PRNGKeyArray,
        ema: bool = False,
    ):
        slices(dim, num_codebooks)
        if int(num_codes) < 2:
            raise ValueError(f"num_codes must be >= 2, got {num_codes}")
        d = dim // num_codebooks
        self.codebooks = jax.random.uniform(
            key, (num_codebooks, num_codes, d), minval=-1.0 / num_codes, maxval=1.0 / num_codes
        )
        self.ema_counts = jnp.ones((num_codebooks, num_codes)) if ema else None
        self.ema_sums = self.codebooks if ema else None

    @property
    def ema(self) -> bool:
        """Whether the codes are EMA-updated (the moving averages exist)."""
        return self.ema_counts is not None

    def ema_update(
        self,
        z: Float[Array, "*batch D"],
        idx: Int[Array, "*batch C"],
        decay: float = 0.99,
        eps: float = 1e-5,
    ) -> MultiCodebook:
        """The quantiser after one EMA step on a batch of latents and their code indices.

        Per codebook: ``N <- d N + (1 - d) n`` and ``S <- d S + (1 - d) s`` where ``n`` counts
        the vectors assigned to each code in the batch and ``s`` sums them; then the codes are
        ``S / N~`` with ``N~`` the counts Laplace-smoothed by ``eps`` (so a code that lost all
        its members keeps a finite value instead of dividing by zero).

        Args:
            z: latent vectors ``(..., D)`` (gradients are stopped).
            idx: their code indices ``(..., C)`` (e.g. from :meth:`indices`).
            decay: ``d`` in ``(0, 1)``.
            eps: Laplace smoothing of the counts, > 0.

        Raises:
            ValueError: the quantiser was built without ``ema=True``, or ``decay``/``eps``
                out of range.
        """
        if not self.ema:
            raise ValueError(
                "MultiCodebook.ema_update needs the moving averages: build it with ema=True"
            )
        if not 0.0 < float(decay) < 1.0 or not float(eps) > 0.0:
            raise ValueError(f"decay must be in (0, 1) and eps > 0, got {decay}, {eps}")
        zs = jax.lax.stop_gradient(self._split(z)).reshape(-1, *self.codebooks.shape[::2])
        onehot = jax.nn.one_hot(jnp.asarray(idx).reshape(-1, self.num_codebooks), self.num_codes)
        n = jnp.sum(onehot, 0)  # (C, K)
        s = jnp.einsum("mck,mcd->ckd", onehot, zs)
        counts = decay * self.ema_counts + (1.0 - decay) * n
        sums = decay * self.ema_sums + (1.0 - decay) * s
        total = jnp.sum(counts, -1, keepdims=True)
        smoothed = (counts + eps) / (total + self.num_codes * eps) * total
        codes = sums / smoothed[..., None]
        new = eqx.tree_at(lambda q: (q.codebooks, q.ema_counts, q.ema_sums), self,
                          (codes, counts, sums))  # fmt: skip
        return new

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


def ema_buffers(model: PyTree) -> PyTree:
    """``model`` with every EMA quantiser's codes and averages marked as training buffers.

    ``jcausal.train.fit`` then keeps no optimiser state for them and stores the values the loss
    returns (see :func:`jcausal.train.buffer`); :func:`jcausal.train.unfreeze` removes the marks.
    """
    from ..train import buffer

    def mark(x):
        if isinstance(x, MultiCodebook) and x.ema:
            return eqx.tree_at(
                lambda q: (q.codebooks, q.ema_counts, q.ema_sums),
                x,
                replace_fn=buffer,
            )
        return x

    return jax.tree_util.tree_map(mark, model, is_leaf=lambda x: isinstance(x, MultiCodebook))


__all__ = ["MultiCodebook", "ema_buffers", "perplexity", "slices", "usage"]
