"""Handwritten digits as 28x28 MNIST-style images.

* `load_digits_28` (offline default): scikit-learn's ``load_digits`` (1,797 real 8x8 handwritten
  digits from the UCI "optical recognition of handwritten digits" set, shipped with scikit-learn)
  resized the way MNIST was made: size-normalised into a 20x20 box with cubic interpolation,
  contrast-shaped into pen strokes, and centred by centre of mass in a 28x28 frame.
* `load_mnist`: the real MNIST through tensorflow-datasets (``tfds.data_source``, ArrayRecord,
  no TensorFlow needed) when the data has been prepared on this machine.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from jaxtyping import Int, UInt8
from scipy import ndimage

from .tfds import tfds_arrays

SIZE = 28
BOX = 20
TEST_SIZE = 300
"""Number of test digits in the fixed, class-stratified split of the 1,797 embedded digits."""

SPLIT_SEED = 0

# Contrast ramp on the interpolated [0, 1] image: below LOW is paper, above HIGH is full ink.
# The 8x8 digits are pixel counts of 4x4 blocks, so interpolation alone gives grey blobs; the ramp
# gives MNIST-like strokes (solid core, one- to two-pixel soft edge).
_LOW, _HIGH = 0.4, 0.7


def _to_28(img8: np.ndarray) -> np.ndarray:
    x = np.clip(ndimage.zoom(img8 / 16.0, BOX / img8.shape[0], order=3), 0.0, 1.0)
    x = np.clip((x - _LOW) / (_HIGH - _LOW), 0.0, 1.0)
    x = x * x * (3.0 - 2.0 * x)  # smoothstep: soft, C1 stroke edges
    canvas = np.zeros((SIZE, SIZE))
    offset = (SIZE - BOX) // 2
    canvas[offset : offset + BOX, offset : offset + BOX] = x
    # MNIST centres the centre of mass of the pixels in the 28x28 frame.
    cy, cx = ndimage.center_of_mass(canvas)
    shift = np.round([(SIZE - 1) / 2 - cy, (SIZE - 1) / 2 - cx])
    canvas = ndimage.shift(canvas, shift, order=0, mode="constant")
    return np.round(canvas * 255.0).astype(np.uint8)


@lru_cache(maxsize=1)
def _embedded() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.stack([_to_28(x) for x in bunch.images])
    labels = bunch.target.astype(np.int64)
    index = np.arange(len(labels))
    _, test_idx = train_test_split(
        index, test_size=TEST_SIZE, stratify=labels, random_state=SPLIT_SEED
    )
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_idx] = True
    for a in (images, labels, is_test):
        a.flags.writeable = False
    return images, labels, is_test


def load_digits_28(
    split: str = "train",
) -> tuple[UInt8[np.ndarray, "N 28 28"], Int[np.ndarray, " N"]]:
    """The embedded handwritten digits as 28x28 MNIST-style images.

    Args:
        split: ``"train"`` (1,497 digits), ``"test"`` (300 digits, stratified by class) or
            ``"all"`` (1,797 digits, in scikit-learn's order).

    Returns:
        ``(images, labels)``: uint8 grey levels ``(N, 28, 28)`` in ``[0, 255]`` (ink is bright,
        as in MNIST) and int64 class labels ``(N,)`` in ``0..9``. Fresh, writable copies.
    """
    images, labels, is_test = _embedded()
    if split == "all":
        keep = np.ones(len(labels), dtype=bool)
    elif split == "train":
        keep = ~is_test
    elif split == "test":
        keep = is_test
    else:
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    return images[keep].copy(), labels[keep].copy()


def load_mnist(
    split: str = "train", data_dir: str | None = None, limit: int | None = None
) -> tuple[UInt8[np.ndarray, "N 28 28"], Int[np.ndarray, " N"]]:
    """Real MNIST through tensorflow-datasets (ArrayRecord ``data_source``, no TensorFlow needed).

    Args:
        split: a TFDS split of ``mnist`` such as ``"train"``, ``"test"`` or ``"train[:10%]"``.
        data_dir: TFDS data directory (default: TFDS's own, ``~/tensorflow_datasets``).
        limit: read only the first ``limit`` examples.

    Returns:
        ``(images, labels)``: uint8 ``(N, 28, 28)`` and int64 ``(N,)``.

    Raises:
        ImportError: tensorflow-datasets is not installed.
        FileNotFoundError: MNIST has not been prepared in ``data_dir``; the message says how to get
            it and that `load_digits_28` is the offline default.
    """
    try:
        arrays = tfds_arrays("mnist", split, ("image", "label"), limit=limit, data_dir=data_dir)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{err}\nMNIST is not available offline here. On a machine with internet run "
            "`tfds build mnist --file_format=array_record` (or "
            "`tfds.data_source('mnist', download=True)`) and copy ~/tensorflow_datasets/mnist "
            "into your TFDS data_dir. Without it use jcausal.data.load_digits_28(split), the "
            "embedded offline default (1,797 real handwritten digits)."
        ) from err
    return arrays["image"].reshape(-1, SIZE, SIZE).astype(np.uint8), arrays["label"].astype(
        np.int64
    )
