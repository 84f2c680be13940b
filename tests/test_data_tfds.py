"""TFDS adapter and MNIST loader, offline through tfds.testing.mock_data (no TensorFlow)."""

import numpy as np
import pytest

tfds = pytest.importorskip(
    "tensorflow_datasets", reason="the TFDS adapter needs the 'data' extra (tensorflow-datasets)"
)

from jcausal.data import load_mnist, tfds_arrays  # noqa: E402


def test_tfds_arrays_match_data_source():
    with tfds.testing.mock_data(num_examples=9):
        arrays = tfds_arrays("mnist", "train", ("image", "label"))
        source = tfds.data_source("mnist", split="train")
        expected = [source[i] for i in range(len(source))]
        limited = tfds_arrays("mnist", "train", ["label"], limit=4)
    assert arrays["image"].shape == (9, 28, 28, 1) and arrays["image"].dtype == np.uint8
    np.testing.assert_array_equal(arrays["image"], np.stack([e["image"] for e in expected]))
    np.testing.assert_array_equal(arrays["label"], np.array([e["label"] for e in expected]))
    np.testing.assert_array_equal(limited["label"], arrays["label"][:4])


def test_tfds_arrays_other_dataset_and_errors():
    with tfds.testing.mock_data(num_examples=3):
        sprites = tfds_arrays("dsprites", "train", ("image", "label_shape"))
        with pytest.raises(ValueError, match="available"):
            tfds_arrays("mnist", "train", ("pixels",))
    assert sprites["image"].shape == (3, 64, 64, 1)
    assert sprites["label_shape"].shape == (3,)
    with pytest.raises(ValueError, match="limit"):
        tfds_arrays("mnist", "train", ("image",), limit=0)


def test_load_mnist_mock_and_missing(tmp_path):
    with tfds.testing.mock_data(num_examples=6):
        images, labels = load_mnist("test")
        raw = tfds_arrays("mnist", "test", ("image", "label"))
    assert images.shape == (6, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, raw["image"][..., 0])
    assert labels.dtype == np.int64 and labels.min() >= 0 and labels.max() <= 9
    with pytest.raises(FileNotFoundError, match="load_digits_28"):
        load_mnist("train", data_dir=str(tmp_path))
