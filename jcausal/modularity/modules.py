"""Modules: groups of channels with similar influence maps, by non-negative matrix factorisation.

The channel x pixel influence matrix ``I`` (rows: channels' flattened influence maps) is
factorised ``I ≈ W H`` with ``W, H >= 0`` and rank ``r`` (scikit-learn's ``NMF``). Each row
of ``H`` is a module's spatial footprint; each channel belongs to the factor that dominates
its row of ``W`` (Besserve et al. 2020, Proposition 3 and sec. 4).

Purity of channel ``c``: the share of its largest loading minus the share of its second
largest, ``(w_(1) - w_(2)) / sum_k w_ck`` in ``[0, 1]``. A channel whose loadings are nearly
tied between two factors (purity < ``min_purity``, 0.1 as in the seed authors' code), or
whose loadings are all zero (a channel with no influence), is left unassigned (``-1``).

Rank criterion (when ``rank`` is not given): the smallest ``r`` whose factorisation explains
at least ``explained`` (default 0.9) of the matrix's sum of squares,
``1 - ||I - W H||_F^2 / ||I||_F^2``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from jaxtyping import Bool, Float, Int
from sklearn.decomposition import NMF


@dataclasses.dataclass(frozen=True)
class Modules:
    """The result of :func:`find_modules`.

    Attributes:
        rank: number of factors ``r``.
        loadings: ``W``, ``(C, r)``.
        footprints: ``H``, ``(r, P)``, each row a module's (flattened) influence pattern.
        assignment: ``(C,)`` module of each channel, ``-1`` for unassigned.
        purity: ``(C,)`` purity of each channel's assignment.
        explained: ``{rank: explained fraction of the sum of squares}`` for the ranks tried.
    """

    rank: int
    loadings: Float[np.ndarray, "C r"]
    footprints: Float[np.ndarray, "r P"]
    assignment: Int[np.ndarray, " C"]
    purity: Float[np.ndarray, " C"]
    explained: dict[int, float]

    def masks(self) -> Bool[np.ndarray, "r C"]:
        """Boolean channel masks of the modules, ``(r, C)`` (unassigned channels in none)."""
        return self.assignment[None, :] == np.arange(self.rank)[:, None]


def _nmf(matrix: np.ndarray, rank: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    model = NMF(rank, init="nndsvda", max_iter=2000, tol=1e-6, random_state=seed)
    w = model.fit_transform(matrix)
    h = model.components_
    ss = float(np.sum(matrix**2))
    return w, h, 1.0 - float(np.sum((matrix - w @ h) ** 2)) / ss


def find_modules(
    influence: Float[np.ndarray, "C ..."],
    rank: int | None = None,
    *,
    max_rank: int = 6,
    explained: float = 0.9,
    min_purity: float = 0.1,
    normalise: bool = True,
    seed: int = 0,
) -> Modules:
    """NMF modules of a layer's influence maps.

    Args:
        influence: ``(C, *out)`` non-negative influence maps (one per channel).
        rank: number of modules; ``None`` chooses it (the rank criterion above).
        max_rank: largest rank tried when choosing (capped at ``C``).
        explained: explained sum-of-squares fraction the chosen rank must reach.
        min_purity: channels with a lower purity are unassigned.
        normalise: scale each channel's map to unit sum first, so that modules group
            channels by *where* they act rather than by how strongly (zero maps stay zero).
        seed: NMF initialisation seed.

    Returns:
        The :class:`Modules`.

    Raises:
        ValueError: negative or non-finite influence, an all-zero matrix, fewer than two
            channels, a rank outside ``[1, C]``, or ``explained``/``min_purity`` outside (0, 1).
    """
    m = np.asarray(influence, dtype=float)
    if m.ndim < 2 or m.shape[0] < 2:
        raise ValueError(f"influence must be (C, ...) with C >= 2 channels, got {m.shape}")
    m = m.reshape(m.shape[0], -1)
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise ValueError("influence maps must be finite and non-negative")
    if not np.any(m > 0):
        raise ValueError("every influence map is zero: no channel affects the output")
    if not 0.0 < explained < 1.0 or not 0.0 <= min_purity < 1.0:
        raise ValueError(
            f"explained must lie in (0, 1) and min_purity in [0, 1), got {explained}, {min_purity}"
        )
    c = m.shape[0]
    if normalise:
        sums = m.sum(1, keepdims=True)
        m = np.where(sums > 0, m / np.where(sums > 0, sums, 1.0), 0.0)
    fits: dict[int, tuple] = {}
    if rank is None:
        for r in range(1, min(max_rank, c) + 1):
            fits[r] = _nmf(m, r, seed)
            if fits[r][2] >= explained:
                break
        rank = r
    else:
        if isinstance(rank, bool) or int(rank) != rank or not 1 <= rank <= c:
            raise ValueError(f"rank must be an integer in [1, {c}] (the channels), got {rank!r}")
        rank = int(rank)
        fits[rank] = _nmf(m, rank, seed)
    w, h, _ = fits[rank]
    # Scale so every footprint has unit maximum: loadings are then comparable across factors.
    scale = h.max(1)
    scale = np.where(scale > 0, scale, 1.0)
    w, h = w * scale, h / scale[:, None]
    total = w.sum(1)
    shares = np.where(total[:, None] > 0, w / np.where(total > 0, total, 1.0)[:, None], 0.0)
    top = np.sort(shares, 1)[:, ::-1]
    purity = top[:, 0] - (top[:, 1] if rank > 1 else 0.0)
    assignment = np.where((total > 0) & (purity >= min_purity), np.argmax(w, 1), -1)
    return Modules(
        rank=rank,
        loadings=w,
        footprints=h,
        assignment=assignment.astype(int),
        purity=purity,
        explained={k: v[2] for k, v in fits.items()},
    )


__all__ = ["Modules", "find_modules"]
