"""The linear systems of the Fig. 3a experiment (:mod:`.equilibrium_accuracy`).

Exiobase-like random technical-coefficient matrices, the pymrio test system's regional blocks,
and the paper's own systems: leading sub-blocks of country tables of Exiobase 3 archives.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: Countries of the paper's Fig. 3a.
EXIOBASE_REGIONS = ("FR", "DE", "IT", "US", "GB")


def exiobase_like(
    rng: np.random.Generator, n: int, column_sums: tuple[float, float], block: int = 10
) -> np.ndarray:
    """A random ``(n, n)`` technical-coefficient matrix that looks like an Exiobase block.

    Sectors come in groups of ``block`` that trade densely with each other (60 % nonzero) and
    sparsely with the rest (8 %); entries are log-normal, every sector uses some of its own
    output, and column ``j`` is rescaled to sum to ``s_j ~ U(column_sums)``, so the spectral
    radius is below ``max(column_sums) < 1``.
    """
    lo, hi = column_sums
    if not 0 <= lo <= hi < 1:
        raise ValueError(f"column sums must satisfy 0 <= lo <= hi < 1, got {column_sums}")
    group = np.arange(n) // block
    density = np.where(group[:, None] == group[None, :], 0.6, 0.08)
    M = rng.lognormal(0.0, 1.0, (n, n)) * (rng.random((n, n)) < density)
    M[np.arange(n), np.arange(n)] += rng.lognormal(0.0, 1.0, n)
    return M / M.sum(axis=0) * rng.uniform(lo, hi, n)


def pymrio_blocks(sizes: Sequence[int]) -> dict[int, list[tuple[np.ndarray, np.ndarray]]]:
    """``{n: [(A_r[:n, :n], y_r[:n]) for each region r]}`` from ``pymrio.load_test()``."""
    import pymrio

    io = pymrio.load_test()
    io.calc_all()
    regions = list(io.get_regions())
    out = {}
    for n in sizes:
        blocks = []
        for r in regions:
            A = io.A.loc[r, r].to_numpy()
            if n > A.shape[0]:
                raise ValueError(f"pymrio test regions have {A.shape[0]} sectors, asked for {n}")
            y = io.Y.loc[r].to_numpy().sum(axis=1)
            blocks.append((A[:n, :n], y[:n]))
        out[n] = blocks
    return out


def exiobase_blocks(
    paths: Sequence[str | Path],
    sizes: Sequence[int],
    regions: Sequence[str] = EXIOBASE_REGIONS,
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The paper's systems from Exiobase 3 archives: leading blocks of each country's table.

    For each archive and region ``r``: ``A_rr[:n, :n]`` (the domestic block of the technical
    coefficients) and ``y_r[:n]`` with ``y_r = Y[r, r] 1`` (the region's final demand for its
    own products, summed over the final-demand categories), as in the authors' code.

    Args:
        paths: Exiobase 3 archives (zip or folder, e.g. ``IOT_2018_pxp.zip``), read with
            :func:`jcausal.economy.load_exiobase` (which checks them first).
        sizes: the sub-block sizes ``n``.
        regions: region codes to take from each archive.

    Returns:
        ``{n: (As (len(paths) * len(regions), n, n), ys (len(paths) * len(regions), n))}``,
        in M EUR for ``y`` (the table's unit).

    Raises:
        ValueError: an unreadable archive, a missing region (the archive's regions are
            listed), a block smaller than a requested ``n``, NaN/inf in a block, or a block
            with no final demand (its equilibrium is 0).
    """
    import pymrio

    from ..economy import load_exiobase
    from ..economy import regions as region_names

    if not paths:
        raise ValueError("exiobase_blocks needs at least one archive")
    blocks: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {n: [] for n in sizes}
    for path in paths:
        io = load_exiobase(path)
        if io.Y is None:
            raise ValueError(f"the Exiobase archive {str(path)!r} has no final demand Y")
        A = io.A
        if A is None:
            if io.Z is None:
                raise ValueError(f"the Exiobase archive {str(path)!r} has neither A nor Z")
            A = pymrio.calc_A(io.Z, pymrio.calc_x(io.Z, io.Y))
        have = region_names(io)
        for r in regions:
            if r not in have:
                raise ValueError(
                    f"region {r!r} is not in the Exiobase archive {str(path)!r} "
                    f"(it has {', '.join(have[:12])}{', ...' if len(have) > 12 else ''})"
                )
            a = A.loc[r, r].to_numpy(float)
            y = io.Y.loc[r, r].to_numpy(float).sum(axis=1)
            for n in sizes:
                if n > a.shape[0]:
                    raise ValueError(
                        f"region {r!r} of {str(path)!r} has {a.shape[0]} sectors, asked for "
                        f"n = {n}; the paper's sizes need a pxp table (200 products)"
                    )
                sub, ys = a[:n, :n], y[:n]
                if not (np.isfinite(sub).all() and np.isfinite(ys).all()):
                    raise ValueError(f"NaN or inf in region {r!r} of {str(path)!r} (n = {n})")
                if not np.any(ys):
                    # x* = 0 then, and ||x - f(x)|| / ||x|| is 0 / 0.
                    raise ValueError(
                        f"region {r!r} of {str(path)!r} has no domestic final demand for its "
                        f"first {n} products: the equilibrium is x = 0 and its relative error "
                        "is undefined; use larger sizes"
                    )
                blocks[n].append((sub, ys))
    return {
        n: (np.stack([b[0] for b in v]), np.stack([b[1] for b in v])) for n, v in blocks.items()
    }


def padded(systems) -> tuple[np.ndarray, np.ndarray, list[tuple[str, int, int]]]:
    """Stack every system, zero-padded to the largest size, with (system, n, count) keys."""
    nmax = max(n for by_size in systems.values() for n in by_size)
    As, ys, keys = [], [], []
    for sname, by_size in systems.items():
        for n, (A, y) in sorted(by_size.items()):
            Ap = np.zeros((A.shape[0], nmax, nmax))
            Ap[:, :n, :n] = A
            yp = np.zeros((y.shape[0], nmax))
            yp[:, :n] = y
            As.append(Ap)
            ys.append(yp)
            keys.append((sname, n, A.shape[0]))
    return np.concatenate(As), np.concatenate(ys), keys


__all__ = ["EXIOBASE_REGIONS", "exiobase_blocks", "exiobase_like", "padded", "pymrio_blocks"]
