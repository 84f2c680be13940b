"""Morpho-MNIST, beyond the paper: is any group of channels about a single attribute?

The NMF modules of :mod:`jcausal.experiments.modularity` group channels by *where* they act.
Two further searches, both measured with the same module x attribute transfer table:

* by rank: the table for every NMF rank ``2..max_rank`` (more, smaller modules);
* by attribute (supervised by the measurement, which the paper did not have): each channel's
  transfer of the four attributes by its single-channel hybrids; each attribute's transfers
  are divided by their mean over the layer's channels, and a channel joins the attribute it
  transfers most above that mean (if above it at all); each such group is then hybridised as
  a module.

A module's specificity is its largest positive transfer over the sum of its positive
transfers: 1 when it moves one attribute only, 0.25 when it moves all four alike.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Array, Bool, Float

from ..modularity import Stages, find_modules, hybrids
from .modularity import ATTRIBUTES, attributes, module_table


def specificity(table: dict[str, list[float]]) -> tuple[list[str | None], list[float]]:
    """Each module's top attribute and specificity from a ``{attribute: [T per module]}`` table.

    Returns:
        ``(top, spec)``: the attribute of the largest positive transfer (``None`` when a
        module transfers nothing) and the specificity (NaN then).
    """
    t = np.clip(np.nan_to_num(np.array([table[a] for a in ATTRIBUTES], float)), 0.0, None)
    total = t.sum(0)
    top = [ATTRIBUTES[i] if s > 0 else None for i, s in zip(t.argmax(0), total, strict=True)]
    spec = np.where(total > 0, t.max(0) / np.where(total > 0, total, 1.0), np.nan)
    return top, spec.tolist()


def attribute_groups(
    channel_table: dict[str, list[float]],
) -> Bool[np.ndarray, "A C"]:
    """Channels grouped by the attribute they transfer most relative to the layer's mean.

    Args:
        channel_table: ``{attribute: [T per channel]}`` from single-channel hybrids.

    Returns:
        ``(A, C)`` boolean masks, one per attribute of :data:`ATTRIBUTES` (possibly empty).
    """
    t = np.clip(np.nan_to_num(np.array([channel_table[a] for a in ATTRIBUTES], float)), 0, None)
    mean = t.mean(1, keepdims=True)
    rel = np.where(mean > 0, t / np.where(mean > 0, mean, 1.0), 0.0)
    best = rel.argmax(0)
    keep = rel.max(0) > 1.0
    return (best[None, :] == np.arange(len(ATTRIBUTES))[:, None]) & keep[None, :]


def padded_hybrids(stages: Stages, z1: Array, z2: Array, layer: str, masks) -> np.ndarray:
    """Hybrids ``(n, M, ...)``, the masks padded to ``C`` rows so every call shares a program."""
    masks = np.asarray(masks, bool)
    m, c = masks.shape
    padded = np.concatenate([masks, np.zeros((max(c - m, 0), c), bool)])
    return np.asarray(hybrids(stages, z1, z2, layer, padded))[:, :m]


def attribute_search(
    stages: Stages,
    maps: Float[np.ndarray, "C ..."],
    z1: Array,
    z2: Array,
    layer: str,
    rec: np.ndarray,
    don: np.ndarray,
    max_rank: int,
    seed: int = 0,
) -> dict:
    """The by-rank and by-attribute searches at one layer.

    Args:
        stages: the digit generator (grey-level outputs).
        maps: the layer's influence maps ``(C, 28, 28)``.
        z1: receivers ``(n, d)`` (the table's pairs).
        z2: donors.
        layer: the layer.
        rec: ``G(z1)``, ``(n, 28, 28)``.
        don: ``G(z2)``.
        max_rank: largest NMF rank.
        seed: NMF seed.

    Returns:
        ``{"by_rank": {r: {transfer, summary, top_attribute, specificity, assignment}},
        "channel_transfer": {attribute: [T per channel]}, "attribute_modules": {channels,
        transfer, top_attribute, specificity}, "most_specific": {...}}``; ``most_specific`` is
        the module (over all of them) of highest specificity among those whose top transfer
        is at least 0.3.
    """
    a_r, a_d = attributes(rec), attributes(don)
    c = len(maps)
    out: dict = {"by_rank": {}}
    candidates = []
    for r in range(2, min(max_rank, c) + 1):
        mods = find_modules(maps, rank=r, seed=seed)
        hyb = padded_hybrids(stages, z1, z2, layer, mods.masks())
        table, summary = module_table(hyb, rec, don, a_r, a_d)
        top, spec = specificity(table)
        out["by_rank"][r] = {
            "transfer": table,
            "summary": summary,
            "top_attribute": top,
            "specificity": spec,
            "assignment": mods.assignment.tolist(),
        }
        candidates += [(f"rank {r} M{k}", table, k, mods.masks()[k]) for k in range(r)]
    single, _ = module_table(
        padded_hybrids(stages, z1, z2, layer, np.eye(c, dtype=bool)), rec, don, a_r, a_d
    )
    out["channel_transfer"] = single
    groups = attribute_groups(single)
    names = [a for a, g in zip(ATTRIBUTES, groups, strict=True) if g.any()]
    groups = groups[groups.any(1)]
    channels = {a: np.flatnonzero(g).tolist() for a, g in zip(names, groups, strict=True)}
    entry: dict = {"channels": channels}
    if len(groups):
        table, _ = module_table(padded_hybrids(stages, z1, z2, layer, groups), rec, don, a_r, a_d)
        top, spec = specificity(table)
        entry |= {"transfer": table, "top_attribute": top, "specificity": spec}
        candidates += [(f"{a} group", table, k, groups[k]) for k, a in enumerate(names)]
    out["attribute_modules"] = entry
    best = None
    for name, table, k, mask in candidates:
        top, spec = specificity(table)
        if top[k] is None or table[top[k]][k] < 0.3:
            continue
        if best is None or spec[k] > best["specificity"]:
            best = {"module": name, "channels": np.flatnonzero(mask).tolist(),
                    "top_attribute": top[k], "specificity": spec[k],
                    "transfer": {a: table[a][k] for a in ATTRIBUTES}}  # fmt: skip
    out["most_specific"] = best
    return out


__all__ = ["attribute_groups", "attribute_search", "padded_hybrids", "specificity"]
