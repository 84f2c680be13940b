"""Procedural factors-of-variation images and their one-factor transitions (CT-VAE, sec. 4.1).

A scene is a coloured shape on a plain background, drawn in JAX from five factors with
imbalanced cardinalities (the imbalance question of the paper's Fig. 4):

=========== ===== =====================================================
factor      card. values
=========== ===== =====================================================
shape       3     circle, square, triangle (equal areas)
scale       4     radius 0.10 ... 0.205 of the image side
background  5     a ramp from dark slate to pale green
colour      6     six saturated hues of the object
x           12    horizontal position, 0.22 ... 0.78 of the image side
=========== ===== =====================================================

The factorial grid has 4,320 scenes. A *transition* ``(X, Y, a)`` changes exactly one factor
``f`` to an adjacent value: action ``2 f`` raises it by one (``X_f = v``, ``Y_f = v + 1``),
action ``2 f + 1`` lowers it; both directions are drawn with probability 1/2. The undirected
transitions (edges of the grid: a scene and a factor it can raise) are split 70/15/15 into
train/val/test with a fixed seed, so held-out transitions are pairs never trained on.
Sampling follows the paper's recipe "for each factor and pair of adjacent values, random
configurations of the other factors": the pair ``(f, v)`` is uniform over all
``sum_f (card_f - 1)`` pairs, the rest of the scene uniform among the split's edges, so the
frequency of factor ``f`` is proportional to ``card_f - 1`` (2 : 3 : 4 : 5 : 11). A sampler
with ``balance = b`` draws the factor from ``(1 - b) x`` those frequencies ``+ b x`` uniform
(then the pair uniform within the factor, the context as before): at ``b = 1`` every factor
has 1/5 of the transitions, a data choice (the rare factors are seen more often) rather than a
loss weight.

Images are rendered per batch inside the compiled training step (``fit(data=sampler)``)
rather than stored: 100k pairs at 64x64 RGB would be 2.4 GB. Pixel values are in ``[0, 1]``.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

NAMES = ("shape", "scale", "background", "colour", "x")
CARDINALITIES = (3, 4, 5, 6, 12)
SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
SPLIT_SEED = 0

# Background ramp endpoints (RGB) and the object's hue wheel (value 1, saturation 0.9):
# every object colour stands out from every background.
_BG_LO = np.array([0.12, 0.12, 0.22], np.float32)
_BG_HI = np.array([0.55, 0.70, 0.55], np.float32)


def _hue_rgb(h: Array) -> Array:
    """HSV (h, 0.9, 1.0) -> RGB for hue ``h`` in [0, 1)."""
    k = jnp.mod(jnp.array([5.0, 3.0, 1.0]) + 6.0 * h, 6.0)
    return 1.0 - 0.9 * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class Shapes:
    """The factors-of-variation image generator.

    Attributes:
        size: image side in pixels (64 in the full configuration, 32 in smoke runs).
        cardinalities: number of values of each factor, in the order of :data:`NAMES`.
    """

    size: int = 64
    cardinalities: tuple[int, ...] = CARDINALITIES

    def __post_init__(self):
        if int(self.size) < 16:
            raise ValueError(f"Shapes: size must be >= 16 pixels, got {self.size}")
        if len(self.cardinalities) != len(NAMES) or min(self.cardinalities) < 2:
            raise ValueError(
                f"Shapes: cardinalities must be {len(NAMES)} integers >= 2 (one per factor "
                f"{NAMES}), got {self.cardinalities}"
            )

    @property
    def names(self) -> tuple[str, ...]:
        """The factor names."""
        return NAMES

    @property
    def num_factors(self) -> int:
        """Number of factors ``F``."""
        return len(self.cardinalities)

    @property
    def num_actions(self) -> int:
        """Number of actions ``2 F`` (raise and lower each factor)."""
        return 2 * self.num_factors

    @property
    def num_scenes(self) -> int:
        """Number of scenes in the factorial grid."""
        return int(np.prod(self.cardinalities))

    def render(self, factors: Int[Array, "*batch F"]) -> Float[Array, "*batch S S 3"]:
        """Draw scenes: RGB images in ``[0, 1]``, anti-aliased over about one pixel.

        Args:
            factors: integer factor values, last axis in the order of :data:`NAMES`.

        Returns:
            Images of shape ``(*batch, size, size, 3)``, float32.
        """
        factors = jnp.asarray(factors, jnp.int32)
        if factors.shape[-1:] != (self.num_factors,):
            raise ValueError(
                f"Shapes.render: factors must have last axis {self.num_factors} "
                f"({', '.join(NAMES)}), got shape {factors.shape}"
            )
        flat = factors.reshape(-1, self.num_factors)
        card = jnp.asarray(self.cardinalities)
        flat = eqx.error_if(
            flat,
            jnp.any((flat < 0) | (flat >= card)),
            f"Shapes.render: a factor value is out of range; the factors {NAMES} take "
            f"values 0..n-1 with n = {self.cardinalities}",
        )
        out = jax.vmap(self._render_one)(flat)
        return out.reshape(*factors.shape[:-1], self.size, self.size, 3)

    def _render_one(self, f: Array) -> Array:
        c = self.cardinalities
        s = self.size
        coords = (jnp.arange(s, dtype=jnp.float32) + 0.5) / s
        py, px = jnp.meshgrid(coords, coords, indexing="ij")
        cx = 0.22 + 0.56 * f[4] / (c[4] - 1)
        cy = 0.5
        r = 0.10 + 0.105 * f[1] / (c[1] - 1)
        dx, dy = px - cx, py - cy
        circle = jnp.sqrt(dx**2 + dy**2) - r
        square = jnp.maximum(jnp.abs(dx), jnp.abs(dy)) - 0.886 * r  # same area as the circle
        # Equilateral triangle, apex up (image y points down), same area: inradius 0.778 r.
        tri = jnp.maximum(dy, jnp.maximum(0.866 * dx - 0.5 * dy, -0.866 * dx - 0.5 * dy))
        tri = tri - 0.778 * r
        sdf = jnp.stack([circle, square, tri])[f[0]]
        alpha = jax.nn.sigmoid(-2.0 * s * sdf)[..., None]
        t = f[2] / (c[2] - 1)
        bg = jnp.asarray(_BG_LO) * (1 - t) + jnp.asarray(_BG_HI) * t
        col = _hue_rgb(f[3] / c[3])
        return (1 - alpha) * bg + alpha * col

    # ------------------------------------------------------------------------------------------
    # the grid and its transitions

    def unravel(self, index: Int[Array, "*batch"]) -> Int[Array, "*batch F"]:
        """Scene index (row-major over the factors) -> factor values."""
        return jnp.stack(jnp.unravel_index(index, self.cardinalities), axis=-1).astype(jnp.int32)

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """All undirected transitions: ``(scene, factor)`` with the factor below its maximum.

        Returns:
            ``(scene, factor)``, two int32 arrays of equal length (17,136 for the default grid).
        """
        grid = np.stack(np.unravel_index(np.arange(self.num_scenes), self.cardinalities), -1)
        scenes, factors = [], []
        for f, card in enumerate(self.cardinalities):
            keep = np.nonzero(grid[:, f] < card - 1)[0]
            scenes.append(keep)
            factors.append(np.full(len(keep), f))
        return (
            np.concatenate(scenes).astype(np.int32),
            np.concatenate(factors).astype(np.int32),
        )

    def split(self, name: str, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
        """The edges of one split (70/15/15 of a fixed-seed permutation of :meth:`edges`).

        Args:
            name: ``"train"``, ``"val"`` or ``"test"``.
            seed: seed of the permutation (the default is the library's fixed split).

        Returns:
            ``(scene, factor)`` of the split's edges.
        """
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose from {SPLITS}")
        scene, factor = self.edges()
        perm = np.random.default_rng(seed).permutation(len(scene))
        n_train = round(SPLIT_FRACTIONS[0] * len(scene))
        n_val = round(SPLIT_FRACTIONS[1] * len(scene))
        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val)}
        lo, hi = bounds.get(name, (n_train + n_val, len(scene)))
        pick = np.sort(perm[lo:hi])
        return scene[pick], factor[pick]

    def sampler(
        self, split: str, batch_size: int, seed: int = SPLIT_SEED, balance: float = 0.0
    ) -> TransitionSampler:
        """A batch function ``sampler(key) -> batch`` of transitions of ``split``.

        Pass it as ``fit(..., data=sampler)``; the batch is rendered inside the compiled step.
        ``balance`` mixes the factors' frequencies towards uniform (:class:`TransitionSampler`).
        """
        return TransitionSampler(self, split, batch_size, seed, balance)

    def sample_scenes(self, key: PRNGKeyArray, n: int) -> dict[str, Array]:
        """``n`` uniformly random scenes: ``{"image": (n, S, S, 3), "factors": (n, F)}``."""
        idx = jax.random.randint(key, (n,), 0, self.num_scenes)
        f = self.unravel(idx)
        return {"image": self.render(f), "factors": f}


def check_balance(balance, name: str = "balance") -> float:
    """``balance`` as a float, or a ``ValueError`` naming ``name`` unless it is in ``[0, 1]``."""
    if (
        isinstance(balance, bool)
        or not isinstance(balance, (int, float, np.integer, np.floating))
        or not 0.0 <= balance <= 1.0  # also refuses NaN
    ):
        raise ValueError(f"{name} must be a number in [0, 1], got {balance!r}")
    return float(balance)


def mix_factor_probs(natural: np.ndarray, balance: float) -> np.ndarray:
    """Factor frequencies mixed towards uniform: ``(1 - b) natural + b uniform``.

    Args:
        natural: ``(F,)`` frequencies summing to one; a factor at 0 (no transitions) stays 0.
        balance: ``b`` in ``[0, 1]``.

    Returns:
        ``(F,)`` frequencies summing to one.
    """
    balance = check_balance(balance)
    present = natural > 0
    return (1 - balance) * natural + balance * present / present.sum()


class TransitionSampler:
    """Random transitions of one split, rendered on the fly (see the module docstring).

    Calling it with a key returns a batch dict: ``x`` and ``y`` ``(B, S, S, 3)`` images in
    ``[0, 1]``, ``a`` ``(B,)`` int32 actions in ``[0, 2F)``, ``action`` ``(B, 2F)`` its one-hot
    vector, ``fx`` and ``fy`` ``(B, F)`` int32 factor values of the two scenes.

    Args:
        shapes: the generator.
        split: ``"train"``, ``"val"`` or ``"test"``.
        batch_size: transitions per call.
        seed: seed of the split permutation.
        balance: the factor of a transition is drawn from ``(1 - balance) x`` the natural
            frequencies (proportional to ``card - 1``) ``+ balance x`` uniform over the factors;
            within a factor the pair ``(v, v + 1)`` stays uniform and the context uniform
            within the pair. 0 (the default) is the paper's recipe, 1 gives every factor the
            same share.

    Raises:
        ValueError: ``batch_size < 1`` or ``balance`` not a number in ``[0, 1]``.
    """

    def __init__(
        self,
        shapes: Shapes,
        split: str,
        batch_size: int,
        seed: int = SPLIT_SEED,
        balance: float = 0.0,
    ):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        balance = check_balance(balance)
        self.shapes = shapes
        self.batch_size = int(batch_size)
        scene, factor = shapes.split(split, seed)
        lower = np.stack(np.unravel_index(scene, shapes.cardinalities), -1)[
            np.arange(len(scene)), factor
        ]
        # Weight edges so that the pair (f, v) is uniform and the context uniform within it.
        pair = factor * max(shapes.cardinalities) + lower
        counts = np.bincount(pair)
        w = 1.0 / counts[pair]
        card = np.asarray(shapes.cardinalities)
        if balance > 0:
            # Reweight each factor's edges from its natural share to the mixed one (a factor
            # the split lacks keeps none); balance 0 leaves the weights as they were exactly.
            natural = np.bincount(factor, weights=w, minlength=len(card)) / w.sum()
            target = mix_factor_probs(natural, balance)
            w = w * (target / np.where(natural > 0, natural, 1.0))[factor]
        self.scene = jnp.asarray(scene)
        self.factor = jnp.asarray(factor)
        self.logits = jnp.asarray(np.log(w / w.sum()), jnp.float32)
        #: probability of each factor under this sampler (prop. to card - 1 up to the split,
        #: mixed towards uniform by ``balance``)
        self.factor_probs = np.bincount(factor, weights=w / w.sum(), minlength=len(card))

    def __call__(self, key: PRNGKeyArray) -> dict[str, Array]:
        return self.draw(key, self.batch_size)

    def draw(self, key: PRNGKeyArray, n: int) -> dict[str, Array]:
        """``n`` transitions (the batch dict described in the class docstring)."""
        k_edge, k_dir = jax.random.split(key)
        e = jax.random.categorical(k_edge, self.logits, shape=(n,))
        lo = self.shapes.unravel(self.scene[e])
        f = self.factor[e]
        hi = lo + jax.nn.one_hot(f, self.shapes.num_factors, dtype=jnp.int32)
        down = jax.random.bernoulli(k_dir, 0.5, (n,))
        fx = jnp.where(down[:, None], hi, lo)
        fy = jnp.where(down[:, None], lo, hi)
        a = (2 * f + down).astype(jnp.int32)
        both = self.shapes.render(jnp.concatenate([fx, fy]))
        return {
            "x": both[:n],
            "y": both[n:],
            "a": a,
            "action": jax.nn.one_hot(a, self.shapes.num_actions),
            "fx": fx,
            "fy": fy,
        }


def action_factor(a: Int[Array, "*batch"]) -> Int[Array, "*batch"]:
    """The factor an action changes (``a // 2``)."""
    return jnp.asarray(a) // 2


def action_name(a: int, names: tuple[str, ...] = NAMES) -> str:
    """Readable action name, e.g. ``"x+"`` for action 8."""
    return f"{names[a // 2]}{'+-'[a % 2]}"


__all__ = [
    "CARDINALITIES",
    "NAMES",
    "SPLITS",
    "Shapes",
    "TransitionSampler",
    "action_factor",
    "action_name",
]
