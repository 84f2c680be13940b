"""Engine-internal mechanisms that a counterfactual swaps in for one call.

They are never part of a user's model: they have no noise to sample and no likelihood.
"""

from __future__ import annotations

from typing import Any

import distrax
import equinox as eqx
from jaxtyping import Array

from .mechanisms import Mechanism, Parents, as_parents


class Given(Mechanism):
    """Internal: a node whose value is handed in as its "noise" (``x := u``), parents kept.

    Counterfactuals use it for an intervened node whose parents are unchanged and whose
    mechanism is exactly invertible: its pre-intervention value is then the observation itself,
    so ``Shift`` gives ``x + delta`` exactly and no abduction or re-evaluation is needed.
    """

    parents: tuple[str, ...] = eqx.field(static=True)

    def __init__(self, parents):
        self.parents = as_parents(parents, "Given")

    @property
    def noise(self) -> distrax.Distribution:
        # Never sampled: the value is always handed in.
        return distrax.Deterministic(0.0)

    def forward(self, parents: Parents, noise: Array) -> Array:
        return noise


class Shortcut(Mechanism):
    """Internal: a node whose counterfactual its mechanism computes in one step.

    Its "noise" is ``{"value", "parents"[, "key"]}`` (the unit's observation, observed parents
    and posterior key), and ``forward`` calls :meth:`Mechanism.counterfactual_value`.
    """

    mech: Mechanism

    def __init__(self, mech: Mechanism):
        self.mech = mech

    @property
    def parents(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.mech.parents

    @property
    def noise(self) -> distrax.Distribution:
        return distrax.Deterministic(0.0)  # never sampled: the observation is handed in

    def forward(self, parents: Parents, noise: Any) -> Array:
        return self.mech.counterfactual_value(
            noise["value"], noise["parents"], parents, noise.get("key")
        )


__all__ = ["Given", "Shortcut"]
