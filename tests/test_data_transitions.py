"""The procedural factors-of-variation generator and its one-factor transitions (CT-VAE data)."""

import jax
import numpy as np
import pytest
from scipy import stats

from jcausal.data.transitions import CARDINALITIES, Shapes, action_name

SHAPES = Shapes(32)


def test_transitions_change_exactly_one_factor_both_directions():
    batch = jax.jit(SHAPES.sampler("train", 2000))(jax.random.key(0))
    fx, fy, a = (np.asarray(batch[k]) for k in ("fx", "fy", "a"))
    diff = fy - fx
    assert np.all(np.count_nonzero(diff, axis=1) == 1)
    f = a // 2
    np.testing.assert_array_equal(np.nonzero(diff)[1], f)
    # Action 2f raises factor f by one, action 2f + 1 lowers it.
    np.testing.assert_array_equal(diff[np.arange(len(a)), f], np.where(a % 2 == 0, 1, -1))
    assert 0.45 < np.mean(a % 2) < 0.55
    assert np.all((fx >= 0) & (fx < np.array(CARDINALITIES)))
    assert np.all((fy >= 0) & (fy < np.array(CARDINALITIES)))
    np.testing.assert_array_equal(batch["action"], np.eye(10)[a])
    np.testing.assert_allclose(batch["x"], SHAPES.render(batch["fx"]), atol=1e-6)
    np.testing.assert_allclose(batch["y"], SHAPES.render(batch["fy"]), atol=1e-6)
    assert batch["x"].shape == (2000, 32, 32, 3)
    # Factor frequencies follow the number of adjacent pairs, card - 1 (the imbalance).
    counts = np.bincount(f, minlength=5)
    p = (np.array(CARDINALITIES) - 1) / (np.array(CARDINALITIES) - 1).sum()
    assert stats.chisquare(counts, p * len(f)).pvalue > 1e-3
    assert action_name(8) == "x+" and action_name(3) == "scale-"


def test_splits_are_disjoint_cover_and_sized():
    scene, factor = SHAPES.edges()
    expect = sum((c - 1) * SHAPES.num_scenes // c for c in CARDINALITIES)
    assert len(scene) == expect == 17_136
    parts = [set(zip(*SHAPES.split(s), strict=True)) for s in ("train", "val", "test")]
    assert sum(len(p) for p in parts) == len(scene)
    assert set.union(*parts) == set(zip(scene, factor, strict=True))
    np.testing.assert_allclose([len(p) / len(scene) for p in parts], [0.7, 0.15, 0.15], atol=1e-3)
    # Sampled test transitions come from the test edges only.
    b = SHAPES.sampler("test", 500)(jax.random.key(1))
    lo = np.minimum(np.asarray(b["fx"]), np.asarray(b["fy"]))
    idx = np.ravel_multi_index(lo.T, CARDINALITIES)
    assert set(zip(idx, np.asarray(b["a"]) // 2, strict=True)) <= parts[2]
    with pytest.raises(ValueError, match="unknown split"):
        SHAPES.split("dev")


def test_render_geometry():
    s = Shapes(64)
    # circle, largest scale, background 0, colour 0 (red hue), x = 0 (left)
    img = np.asarray(s.render(np.array([0, 3, 0, 0, 0])))
    assert img.shape == (64, 64, 3) and img.min() >= 0 and img.max() <= 1
    bg = img[2, 2]
    np.testing.assert_allclose(bg, [0.12, 0.12, 0.22], atol=1e-6)
    centre = img[32, int(0.22 * 64)]
    np.testing.assert_allclose(centre, [1.0, 0.1, 0.1], atol=1e-3)
    # Object area against pi r^2 (r = 0.205 of the side): the anti-aliased edge is symmetric.
    alpha = np.abs(img - bg).sum(-1) / np.abs(centre - bg).sum()
    np.testing.assert_allclose(alpha.sum(), np.pi * (0.205 * 64) ** 2, rtol=0.02)
    # Square and triangle have the same area as the circle.
    for shape in (1, 2):
        other = np.asarray(s.render(np.array([shape, 3, 0, 0, 5])))
        a2 = np.abs(other - bg).sum(-1) / np.abs(centre - bg).sum()
        np.testing.assert_allclose(a2.sum(), alpha.sum(), rtol=0.03)


def test_bad_input():
    with pytest.raises(ValueError, match="last axis 5"):
        SHAPES.render(np.zeros((3, 4), int))
    with pytest.raises(ValueError, match="size"):
        Shapes(8)
    with pytest.raises(ValueError, match="cardinalities"):
        Shapes(32, (3, 1, 5, 6, 12))
    with pytest.raises(ValueError, match="batch_size"):
        SHAPES.sampler("train", 0)


def test_factor_values_out_of_range_raise():
    with pytest.raises(Exception, match="out of range"):
        jax.block_until_ready(SHAPES.render(np.array([0, 0, 0, 0, 12])))


def test_balanced_sampling_mixes_factor_frequencies_towards_uniform():
    natural = SHAPES.sampler("train", 1)
    p = (np.array(CARDINALITIES) - 1) / (np.array(CARDINALITIES) - 1).sum()
    # balance 0 is the paper's recipe, weight for weight (the same draws as before the option).
    np.testing.assert_array_equal(SHAPES.sampler("train", 1, balance=0.0).logits, natural.logits)
    half = SHAPES.sampler("train", 1, balance=0.5)
    np.testing.assert_allclose(half.factor_probs, 0.5 * natural.factor_probs + 0.1, atol=1e-9)
    batch = jax.jit(SHAPES.sampler("train", 3000, balance=1.0))(jax.random.key(2))
    f = np.asarray(batch["a"]) // 2
    counts = np.bincount(f, minlength=5)
    assert stats.chisquare(counts).pvalue > 1e-3  # uniform over the five factors
    assert stats.chisquare(counts, p * len(f)).pvalue < 1e-6  # not the natural frequencies
    # Within a factor the pair (v, v + 1) stays uniform: x's 11 pairs at 1/11 each.
    lo = np.minimum(np.asarray(batch["fx"]), np.asarray(batch["fy"]))[f == 4, 4]
    assert stats.chisquare(np.bincount(lo, minlength=11)).pvalue > 1e-3
    # Still transitions of the split only, one factor changed.
    assert np.all(np.count_nonzero(np.asarray(batch["fy"] - batch["fx"]), axis=1) == 1)
    idx = np.ravel_multi_index(np.minimum(batch["fx"], batch["fy"]).T, CARDINALITIES)
    assert set(zip(idx, f, strict=True)) <= set(zip(*SHAPES.split("train"), strict=True))


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), True, "1", None])
def test_balanced_sampling_bad_balance_raises(bad):
    with pytest.raises(ValueError, match="balance must be a number in"):
        SHAPES.sampler("train", 4, balance=bad)
