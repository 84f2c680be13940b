"""One-factor transitions read from factorial sets by index arithmetic (TFDS mock, npz)."""

import numpy as np
import pytest

from jcausal.data.factorial import FactorialSource, dsprites_npz, tfds_factorial

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
