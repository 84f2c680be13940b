"""One-factor transitions read from factorial sets by index arithmetic (TFDS mock, npz)."""

import numpy as np
import pytest

from jcausal.data.factorial import (
    FactorialSource,
    _packed_binary_images,
    dsprites_npz,
    tfds_factorial,
)

CARD = (3, 2, 4, 5)


def _grid_set(card=CARD):
    """An in-memory factorial set whose image pixel (0, 0) stores the scene index."""
    grid = np.stack(np.unravel_index(np.arange(np.prod(card)), card), -1)
    images = np.zeros((len(grid), 4, 4, 1), np.uint8)
    images[:, 0, 0, 0] = np.arange(len(grid)) % 256
    return images, grid


def test_pairs_by_index_arithmetic():
    images, grid = _grid_set()
    src = FactorialSource(lambda i: (images[i], grid[i]), CARD, ["a", "b", "c", "d"])
    t = src.transitions(500, seed=1)
    diff = t["fy"] - t["fx"]
    assert np.all(np.count_nonzero(diff, 1) == 1)
    f = t["a"] // 2
    np.testing.assert_array_equal(np.nonzero(diff)[1], f)
    np.testing.assert_array_equal(diff[np.arange(500), f], np.where(t["a"] % 2, -1, 1))
    # The images are those of the scenes (pixel (0, 0) holds the scene index).
    idx = np.ravel_multi_index(t["fx"].T, CARD)
    np.testing.assert_allclose(t["x"][:, 0, 0, 0], (idx % 256) / 255.0)
    assert set(np.unique(t["a"])) == set(range(8))


def test_tfds_sets_not_in_factor_order_are_refused():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=4):  # random labels: not a factorial grid
        src = tfds_factorial("dsprites")
        assert src.cardinalities == (3, 6, 40, 32, 32)
        with pytest.raises(ValueError, match="factor order"):
            src.transitions(8)
        assert tfds_factorial("shapes3d").num_actions == 12
    with pytest.raises(ValueError, match="unsupported"):
        tfds_factorial("mnist")


def test_smallnorb_lookup_from_labels():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=30):
        src = tfds_factorial("smallnorb")
        flat = src.lookup.ravel()
        assert np.count_nonzero(flat >= 0) >= 25  # a few random label rows may coincide
        for cell in np.nonzero(flat >= 0)[0][:10]:
            _, labels = src.read(np.array([flat[cell]]))
            assert np.ravel_multi_index(labels[0], src.cardinalities) == cell


def test_tfds_missing_set(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(FileNotFoundError, match="not prepared"):
        tfds_factorial("shapes3d", data_dir=str(tmp_path))


def test_dsprites_npz(tmp_path):
    card = (1, 3, 2, 2, 3, 2)  # colour, shape, scale, orientation, x, y (dSprites' layout)
    grid = np.stack(np.unravel_index(np.arange(np.prod(card)), card), -1)
    imgs = np.zeros((len(grid), 64, 64), np.uint8)
    imgs[:, 0, 0] = np.arange(len(grid)) % 2  # binary images, as in dSprites
    imgs[:, 0, 1] = 1
    path = tmp_path / "dsprites.npz"
    np.savez(path, imgs=imgs, latents_classes=grid)
    src = dsprites_npz(path)
    assert src.cardinalities == card[1:]
    t = src.transitions(64, seed=2)
    assert t["x"].shape == (64, 64, 64, 1)
    np.testing.assert_array_equal(np.count_nonzero(t["fy"] - t["fx"], 1), 1)
    np.testing.assert_allclose(t["x"][:, 0, 1, 0], 1.0)
    parity = np.ravel_multi_index(np.c_[np.zeros(64, int), t["fx"]].T, card) % 2
    np.testing.assert_allclose(t["x"][:, 0, 0, 0], parity)
    with pytest.raises(FileNotFoundError, match="dsprites-dataset"):
        dsprites_npz(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", imgs=imgs)
    with pytest.raises(ValueError, match="latents_classes"):
        dsprites_npz(tmp_path / "other.npz")
    # DeepMind's archive is compressed: the images are streamed in chunks and bit-packed.
    np.savez_compressed(tmp_path / "z.npz", imgs=imgs, latents_classes=grid)
    z = dsprites_npz(tmp_path / "z.npz").transitions(64, seed=2)
    np.testing.assert_array_equal(z["x"], t["x"])
    packed, shape = _packed_binary_images(tmp_path / "z.npz", chunk=5)  # 15 chunks, 1 partial
    assert shape == imgs.shape
    np.testing.assert_array_equal(np.unpackbits(packed, axis=-1, count=64), imgs)
    np.savez(tmp_path / "grey.npz", imgs=imgs * 3, latents_classes=grid)
    with pytest.raises(ValueError, match="binary"):
        dsprites_npz(tmp_path / "grey.npz")


def test_cars3d_mat(tmp_path):
    from scipy.io import savemat

    from jcausal.data.factorial import cars3d_mat

    for c in range(3):
        im = np.zeros((128, 128, 3, 24, 4), np.uint8)
        az, el = np.meshgrid(np.arange(24), np.arange(4), indexing="ij")
        im[:, :, 0] = az  # red = azimuth, green = elevation, blue = car
        im[:, :, 1] = el
        im[:, :, 2] = c
        savemat(tmp_path / f"car_{c:03d}_mesh.mat", {"im": im})
    src = cars3d_mat(tmp_path, size=32)
    assert src.cardinalities == (4, 24, 3)
    t = src.transitions(40, seed=3)
    assert t["x"].shape == (40, 32, 32, 3)
    np.testing.assert_array_equal(np.count_nonzero(t["fy"] - t["fx"], 1), 1)
    read = np.round(t["x"][:, 5, 7] * 255).astype(int)  # one pixel: (azimuth, elevation, car)
    np.testing.assert_array_equal(read, t["fx"][:, [1, 0, 2]])
    with pytest.raises(ValueError, match="divide 128"):
        cars3d_mat(tmp_path, size=48)
    with pytest.raises(FileNotFoundError, match="nips2015"):
        cars3d_mat(tmp_path / "none")
    savemat(tmp_path / "car_003_mesh.mat", {"im": np.zeros((128, 128, 3, 24, 4))})  # floats
    with pytest.raises(ValueError, match="uint8"):
        cars3d_mat(tmp_path, size=32).transitions(200, seed=0)


def _flat_set(card=CARD, side=4):
    """A factorial set whose grey images are constant, equal to (scene index) % 256."""
    grid = np.stack(np.unravel_index(np.arange(np.prod(card)), card), -1)
    images = np.broadcast_to(
        (np.arange(len(grid)) % 256).astype(np.uint8)[:, None, None, None],
        (len(grid), side, side, 1),
    )
    return FactorialSource(
        lambda i: (images[i], grid[i]), card, [f"f{k}" for k in range(len(card))]
    )


def test_split_by_edge_hash_is_disjoint_and_70_15_15():
    src = _flat_set(card=(10, 10, 10, 8, 4, 15))
    rng = np.random.default_rng(0)
    lower = rng.integers(0, 4, (60_000, 6))
    factor = rng.integers(0, 6, 60_000)
    s = src.split_of(lower, factor)
    np.testing.assert_allclose(np.bincount(s) / len(s), [0.70, 0.15, 0.15], atol=0.01)
    np.testing.assert_array_equal(src.split_of(lower, factor), s)  # deterministic
    assert np.mean(src.split_of(lower, (factor + 1) % 6) == s) < 0.6  # the factor matters
    small = _flat_set()
    for split, code in (("train", 0), ("test", 2)):
        t = small.transitions(200, seed=4, split=split)
        f = t["a"] // 2
        lower = np.minimum(t["fx"], t["fy"])
        np.testing.assert_array_equal(small.split_of(lower, f), code)
        assert set(np.unique(t["a"] % 2)) == {0, 1}  # both directions of the split's edges
    with pytest.raises(ValueError, match="unknown split"):
        small.transitions(4, split="valid")
    one_edge = _flat_set(card=(2,))
    where = int(one_edge.split_of(np.zeros((1, 1), int), np.zeros(1, int))[0])
    assert one_edge.transitions(3, split=("train", "val", "test")[where])["a"].shape == (3,)
    with pytest.raises(ValueError, match="too small"):
        one_edge.transitions(3, split=("train", "val", "test")[(where + 1) % 3])


def test_factorial_set_reads_under_jit():
    import jax

    from jcausal.data.factorial import FactorialSet

    data = FactorialSet(_flat_set(), size=16)
    assert data.num_actions == 8 and data.native == (4, 4, 1)
    sampler = data.sampler("test", 6)
    np.testing.assert_allclose(sampler.factor_probs, np.array([2, 1, 3, 4]) / 10)
    t = jax.jit(sampler)(jax.random.key(1))
    assert t["x"].shape == (6, 16, 16, 3) and t["action"].shape == (6, 8)
    for img, f in (("x", "fx"), ("y", "fy")):
        idx = np.ravel_multi_index(np.asarray(t[f]).T, CARD) % 256
        np.testing.assert_allclose(np.asarray(t[img]) * 255, np.broadcast_to(
            idx[:, None, None, None], (6, 16, 16, 3)), atol=1e-3)  # fmt: skip
    np.testing.assert_array_equal(np.count_nonzero(t["fy"] - t["fx"], 1), 1)
    again = jax.jit(sampler)(jax.random.key(1))
    np.testing.assert_array_equal(again["fx"], t["fx"])  # the key decides the draw
    s = jax.jit(lambda k: data.sample_scenes(k, 5))(jax.random.key(2))
    idx = np.ravel_multi_index(np.asarray(s["factors"]).T, CARD) % 256
    np.testing.assert_allclose(np.asarray(s["image"])[:, 3, 3, 2] * 255, idx, atol=1e-3)
    images, grid = _grid_set()
    wide = FactorialSource(lambda i: (images[i][:, :, :3], grid[i]), CARD, ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="square"):
        FactorialSet(wide, size=16)


def test_experiment_data_choice_errors(tmp_path):
    from jcausal.data.transitions import Shapes
    from jcausal.experiments.ctvae import transition_set

    assert isinstance(transition_set("embedded", None, 32), Shapes)
    with pytest.raises(ValueError, match="--data must be"):
        transition_set("mnist", None, 32)
    with pytest.raises(ValueError, match="rendered"):
        transition_set("embedded", tmp_path, 32)
    with pytest.raises(ValueError, match="--data-path"):
        transition_set("cars3d", None, 32)
    with pytest.raises(FileNotFoundError, match="nips2015"):
        transition_set("cars3d", tmp_path, 32)
    with pytest.raises(FileNotFoundError, match="dsprites-dataset"):
        transition_set("dsprites", tmp_path / "missing.npz", 32)


def test_factorial_balance_mixes_factor_frequencies_towards_uniform():
    import jax

    from jcausal.data.factorial import FactorialSet

    card = (3, 1, 4, 9)  # a factor with one value has no transitions at any balance
    src = _flat_set(card=card)
    np.testing.assert_allclose(src.factor_probs(0.0), np.array([2, 0, 3, 8]) / 13)
    np.testing.assert_allclose(src.factor_probs(1.0), [1 / 3, 0, 1 / 3, 1 / 3])
    half = 0.5 * np.array([2, 0, 3, 8]) / 13 + [1 / 6, 0, 1 / 6, 1 / 6]
    np.testing.assert_allclose(src.factor_probs(0.5), half)
    # balance 0 draws exactly what the natural recipe drew (the same seed, the same stream)
    a0 = src.transitions(300, seed=3, split="train", balance=0.0)
    np.testing.assert_array_equal(a0["fx"], src.transitions(300, seed=3, split="train")["fx"])
    n = 6000
    for b in (1.0, 0.5):
        # (on all edges: a split of this small grid holds each factor's edges unevenly)
        t = src.transitions(n, seed=5, balance=b)
        f = t["a"] // 2
        freq = np.bincount(f, minlength=4) / n
        # multinomial: 4 standard errors at n = 6000 is < 0.025
        np.testing.assert_allclose(freq, src.factor_probs(b), atol=0.025)
        # the pair is uniform within its factor: factor 3's 8 lower values about even
        lower = np.minimum(t["fx"], t["fy"])[f == 3, 3]
        counts = np.bincount(lower, minlength=8)
        assert counts.min() > 0.6 * counts.mean()
        np.testing.assert_array_equal(np.count_nonzero(t["fy"] - t["fx"], 1), 1)
        t = src.transitions(500, seed=6, split="train", balance=b)
        np.testing.assert_array_equal(src.split_of(np.minimum(t["fx"], t["fy"]), t["a"] // 2), 0)
    data = FactorialSet(src, size=16)
    s = data.sampler("train", 500, balance=1.0)
    np.testing.assert_allclose(s.factor_probs, src.factor_probs(1.0))
    freq = np.bincount(np.asarray(jax.jit(s)(jax.random.key(0))["a"]) // 2, minlength=4) / 500
    np.testing.assert_allclose(freq, [1 / 3, 0, 1 / 3, 1 / 3], atol=0.09)
    with pytest.raises(ValueError, match="no factor of this set has two values"):
        _flat_set(card=(1, 1)).transitions(4)
    for bad in (-0.1, 1.5, float("nan"), True, "1"):
        with pytest.raises(ValueError, match="balance must be a number in"):
            src.transitions(4, balance=bad)
        with pytest.raises(ValueError, match="balance must be a number in"):
            data.sampler("train", 4, balance=bad)
