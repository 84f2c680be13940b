"""The classifier probe: how "realistic" hybrids at each layer are (Besserve et al. 2020, sec. 4).

A classifier trained on real data labels the hybrids; the entropy of its decision is low on
realistic hybrids and high on chimeras. Agreement with its label of the receiver and of the
donor says which source the hybrid is taken for.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from jaxtyping import Float


def classifier_probe(
    classify: Callable[[np.ndarray], np.ndarray],
    hybrid_images: Float[np.ndarray, "N M ..."],
    receivers: Float[np.ndarray, "N ..."],
    donors: Float[np.ndarray, "N ..."],
) -> dict[str, float]:
    """Entropy and source agreement of a classifier's decisions on hybrids.

    Args:
        classify: ``images (K, *image) -> class probabilities (K, classes)``.
        hybrid_images: ``(N, M, *image)`` hybrids of ``N`` pairs for ``M`` channel sets.
        receivers: ``(N, *image)`` outputs ``G(z1)``.
        donors: ``(N, *image)`` outputs ``G(z2)``.

    Returns:
        ``entropy`` (mean over hybrids of the decision's entropy, nats), ``entropy_sources``
        (the same on the receivers and donors: the reference), ``receiver_agreement`` and
        ``donor_agreement`` (fraction of hybrids labelled as the receiver / the donor is).

    Raises:
        ValueError: shapes do not match, or ``classify`` returns something that is not a
            probability table.
    """
    h = np.asarray(hybrid_images)
    r, d = np.asarray(receivers), np.asarray(donors)
    if r.shape != d.shape or h.shape[:1] != r.shape[:1] or h.shape[2:] != r.shape[1:]:
        raise ValueError(
            f"hybrids (N, M, *image), receivers and donors (N, *image) do not match: "
            f"{h.shape}, {r.shape}, {d.shape}"
        )
    n, m = h.shape[:2]
    p = np.asarray(classify(h.reshape(n * m, *h.shape[2:])))
    ps = np.asarray(classify(np.concatenate([r, d])))
    for q in (p, ps):
        if q.ndim != 2 or not np.allclose(q.sum(1), 1.0, atol=1e-4) or np.any(q < 0):
            raise ValueError("classify must return class probabilities (K, classes) summing to 1")

    def entropy(q):
        return float(np.mean(-np.sum(np.where(q > 0, q * np.log(np.where(q > 0, q, 1)), 0), 1)))

    label = np.argmax(p, 1).reshape(n, m)
    lr, ld = np.argmax(ps[:n], 1), np.argmax(ps[n:], 1)
    return {
        "entropy": entropy(p),
        "entropy_sources": entropy(ps),
        "receiver_agreement": float(np.mean(label == lr[:, None])),
        "donor_agreement": float(np.mean(label == ld[:, None])),
    }


__all__ = ["classifier_probe"]
