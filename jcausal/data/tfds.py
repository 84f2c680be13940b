"""TensorFlow-Datasets adapter: numpy arrays from ``tfds.data_source`` (ArrayRecord, no TensorFlow).

Used for MNIST and for the factors-of-variation sets (dSprites, Shapes3D). Requires the ``data``
extra (``pip install 'jcausal[data]'``, i.e. ``tensorflow-datasets`` with ``array_record``); the
data must already be prepared in the TFDS data directory, since this machine has no data hub.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from jaxtyping import Shaped

_CHUNK = 1024


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise ImportError(
            "tensorflow-datasets is needed to read TFDS data; install it with "
            "`pip install 'jcausal[data]'` (or `pip install tensorflow-datasets`)"
        ) from err
    return tfds


def _read(source, start: int, stop: int) -> list[dict]:
    try:
        return list(source.__getitems__(list(range(start, stop))))
    except TypeError:
        # tfds.testing.mock_data's random-access mock has no batched read; read one by one.
        return [source[i] for i in range(start, stop)]


def tfds_arrays(
    name: str,
    split: str,
    keys: Sequence[str],
    limit: int | None = None,
    data_dir: str | None = None,
) -> dict[str, Shaped[np.ndarray, "N ..."]]:
    """Stack the features ``keys`` of a TFDS split into numpy arrays.

    Args:
        name: TFDS dataset name, e.g. ``"mnist"``, ``"dsprites"``, ``"shapes3d"``.
        split: TFDS split string, e.g. ``"train"``, ``"test[:1000]"``.
        keys: feature names to keep (nested features are not supported).
        limit: read only the first ``limit`` examples (all when ``None``).
        data_dir: TFDS data directory (default: TFDS's own).

    Returns:
        dict key -> array of shape ``(N, *feature_shape)`` with the feature's dtype.

    Raises:
        ImportError: tensorflow-datasets is not installed.
        FileNotFoundError: the dataset is not prepared in ``data_dir`` (never downloads).
        ValueError: a key is not a feature of the dataset, or ``limit`` < 1.
    """
    keys = tuple(keys)
    if not keys:
        raise ValueError("keys is empty; name at least one feature, e.g. ('image', 'label')")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be None or >= 1, got {limit}")
    tfds = _import_tfds()
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as err:  # tfds raises several types (NotImplementedError, AssertionError, ...)
        raise FileNotFoundError(
            f"TFDS dataset {name!r} split {split!r} is not prepared as ArrayRecord in "
            f"data_dir={data_dir or '~/tensorflow_datasets'} ({type(err).__name__}: {err})"
        ) from err
    n = len(source) if limit is None else min(limit, len(source))
    if n == 0:
        raise ValueError(f"TFDS dataset {name!r} split {split!r} gives no examples (limit={limit})")
    columns: dict[str, list] = {k: [] for k in keys}
    for start in range(0, n, _CHUNK):
        for example in _read(source, start, min(start + _CHUNK, n)):
            missing = [k for k in keys if k not in example]
            if missing:
                raise ValueError(
                    f"TFDS dataset {name!r} has no feature(s) {missing}; "
                    f"available: {sorted(example)}"
                )
            for k in keys:
                columns[k].append(np.asarray(example[k]))
    return {k: np.stack(v) for k, v in columns.items()}
