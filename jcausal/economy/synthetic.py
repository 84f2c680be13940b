"""A synthetic multi-regional input-output table shaped like Exiobase 3 (any size, seeded).

Exiobase 3 (49 regions × 200 products = 9,800 sectors) cannot be shipped, so benchmarks and
tests of the multi-regional design run on a table built here with the same *shape*:

* **Block structure.** Every region shares one sparse, skewed technology (which products are
  used to make which; ~30 % of the entries, most of them tiny, like real tables); its domestic
  block carries ``1 - τ_s`` of each column's inputs and the ``R - 1`` trade blocks the rest,
  ``τ_s`` (region ``s``'s import share of intermediate inputs, around ``trade_share``), split
  over the exporting regions in proportion to their (random) market share of each product.
  Trade blocks thus have the sparsity pattern of the domestic ones, and the diagonal blocks
  dominate, as in Fig. 1a of Besserve & Schölkopf (UAI 2022).
* **Spectral radius.** The matrix is built with every column summing to ``rho`` (then ``rho``
  is its Perron root exactly), then changed to other units by a diagonal similarity
  ``A = D M D^{-1}`` (``D`` within a factor 1.25 of one: column sums then vary between about
  ``0.64 rho`` and ``1.56 rho``, like real tables') which leaves the spectrum unchanged: the
  spectral radius is ``rho`` by construction, with no eigen-decomposition of 9,800 × 9,800.
  The default ``rho = 0.55`` is an estimate: intermediate inputs are about half of world
  gross output, and a nonnegative matrix's Perron root lies between its smallest and largest
  column sums; the real table's radius could not be measured offline.
* **Stressors.** ``"GHG"`` per unit output: a few heavy emitters (5 % of products, 30-300 ×
  the others, like power, cement, steel) times a regional factor; ``"Employment"``: a
  lognormal per product times a regional factor (labour-intensive regions). Both positive.
* **Demand.** Final demand is lognormal per product times the region's size (lognormal,
  σ = 1: a few large economies); output ``x = (I - A)^{-1} y`` by the Neumann series (exact to
  rounding, one matrix-vector product per term: no 9,800 LU).

The table is built one column slab (one region) at a time: peak memory is about twice the
dense ``A`` (768 MB at 9,800 sectors in float64).
"""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np

from .leontief import IOModel

#: Exiobase 3's shape: regions × products.
EXIOBASE_SHAPE = (49, 200)


def parse_shape(text: str) -> tuple[int, int]:
    """``"49x200"`` -> ``(49, 200)`` (regions, sectors per region).

    Raises:
        ValueError: not ``RxS`` with ``R >= 2`` regions and ``S >= 2`` sectors.
    """
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", str(text))
    if m is None or int(m.group(1)) < 2 or int(m.group(2)) < 2:
        raise ValueError(
            f"--synthetic-mrio {text!r} is not REGIONSxSECTORS with at least 2 of each "
            "(e.g. 49x200 for Exiobase's shape, 4x10 for a quick run)"
        )
    return int(m.group(1)), int(m.group(2))


def synthetic_mrio(
    regions: int,
    sectors: int,
    *,
    seed: int = 0,
    rho: float = 0.55,
    trade_share: float = 0.2,
    density: float = 0.3,
    dtype: jnp.dtype | str | None = None,
) -> IOModel:
    """A seeded multi-regional table of ``regions × sectors`` sectors (see the module docstring).

    Args:
        regions: number of regions ``R`` (>= 2).
        sectors: products per region ``S`` (>= 2).
        seed: numpy seed; the same arguments give the same table.
        rho: spectral radius of ``A`` in ``(0, 1)`` (exact by construction).
        trade_share: mean share of intermediate inputs that are imported, in ``[0, 1)``.
        density: fraction of nonzero technical coefficients in the shared technology.
        dtype: the model's float dtype (default float64 under ``jax_enable_x64``).

    Returns:
        An :class:`IOModel` of ``R·S`` sectors labelled ``"R01:p001"``..., with stressor rows
        ``"GHG"`` (kg CO2-eq per currency unit) and ``"Employment"`` (persons per currency
        unit); ``A`` has spectral radius ``rho``.

    Raises:
        ValueError: a size below 2 or a parameter out of range.
    """
    if isinstance(regions, bool) or int(regions) != regions or regions < 2:
        raise ValueError(f"regions must be an integer >= 2, got {regions!r}")
    if isinstance(sectors, bool) or int(sectors) != sectors or sectors < 2:
        raise ValueError(f"sectors must be an integer >= 2, got {sectors!r}")
    if not 0 < rho < 1:
        raise ValueError(f"rho (the spectral radius) must be in (0, 1), got {rho!r}")
    if not 0 <= trade_share < 1:
        raise ValueError(f"trade_share must be in [0, 1), got {trade_share!r}")
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density!r}")
    R, S = int(regions), int(sectors)
    n = R * S
    rng = np.random.default_rng(seed)
    # Shared technology: which products feed which, skewed like real coefficients; every
    # product uses itself a little (a diagonal), so no column is empty.
    tech = (rng.random((S, S)) ** 4) * (rng.random((S, S)) < density)
    tech[np.arange(S), np.arange(S)] += 0.05 * rng.random(S) + 1e-3
    # Market share of each exporting region for each product (columns of a Dirichlet).
    share = rng.dirichlet(np.full(R, 0.5), size=S).T  # (R, S)
    tau = np.clip(trade_share * rng.uniform(0.5, 1.5, R), 0.0, 0.95)
    d = rng.uniform(0.8, 1.25, n)  # units of each sector's product (the similarity D)
    A = np.empty((n, n))
    for s in range(R):  # one column slab (region s's sectors) at a time
        cols = slice(s * S, (s + 1) * S)
        dom = tech * rng.lognormal(0.0, 0.3, (S, S))
        dom *= (1 - tau[s]) / dom.sum(0)
        imp = tech[None] * share[:, :, None]  # (R, S, S): from region r, product i, to j
        imp[s] = 0.0
        total = imp.sum((0, 1))
        imp *= tau[s] / total  # (every column has inputs: the diagonal, all shares > 0)
        slab = imp.reshape(n, S)
        slab[s * S : (s + 1) * S] = dom
        slab *= rho  # every column sums to rho: its Perron root
        A[:, cols] = slab * d[:, None] / d[None, cols]
    size = rng.lognormal(0.0, 1.0, R)
    y = (rng.lognormal(0.0, 1.0, (R, S)) * size[:, None]).ravel()
    # x = sum_k A^k y; the terms fall like rho^k (up to the similarity's factor 1.56).
    x, term = y.copy(), y.copy()
    for _ in range(10_000):
        term = A @ term
        x += term
        if np.max(term) <= 1e-17 * np.max(x):
            break
    residual = float(np.linalg.norm(x - A @ x - y) / np.linalg.norm(x))
    heavy = rng.random(S) < 0.05
    heavy[rng.integers(S)] = True  # at least one heavy emitter
    ghg = np.where(heavy, rng.uniform(30, 300, S), 1.0) * rng.lognormal(0.0, 0.5, S)
    ghg = (ghg[None] * rng.lognormal(0.0, 0.5, (R, 1))).ravel()
    emp = (rng.lognormal(0.0, 0.7, S)[None] * rng.lognormal(0.0, 0.7, (R, 1))).ravel()
    regs = [f"R{r + 1:0{len(str(R))}d}" for r in range(R)]
    prods = [f"p{p + 1:0{len(str(S))}d}" for p in range(S)]
    return IOModel(
        A,
        y,
        x_observed=x,
        S=np.stack([ghg, emp]),
        sectors=prods * R,
        regions=[r for r in regs for _ in range(S)],
        stressors=("GHG", "Employment"),
        stressor_units=("kg CO2-eq", "persons"),
        extensions=("synthetic", "synthetic"),
        dtype=dtype,
        reproduction_error=residual,
        note=(
            f"synthetic Exiobase-shaped table: {R} regions x {S} products, seed {seed}, "
            f"spectral radius {rho:g}, import share of inputs ~{trade_share:g}"
        ),
    )


__all__ = ["EXIOBASE_SHAPE", "parse_shape", "synthetic_mrio"]
