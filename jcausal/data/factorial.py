"""One-factor transitions from real factorial image sets (dSprites, Shapes3D, smallNORB).

These sets are full factorial grids, so the partner of a scene that differs in factor ``f`` by
one is found by index arithmetic (``index + stride_f``), never by loading the set into lists.
:class:`FactorialSource` reads only the pairs it draws, by random access:

* TFDS (:func:`tfds_factorial`): ``dsprites`` (3 x 6 x 40 x 32 x 32 = 737,280, stored in
  factor order) and ``shapes3d`` (10 x 10 x 10 x 8 x 4 x 15 = 480,000, in factor order) use
  the arithmetic; ``smallnorb`` (whose split is not stored in factor order, and where each of
  5 categories holds 5 of the 10 instances) builds its lookup table from one pass over the
  labels. Prepare them once on a machine with internet: ``tfds build dsprites`` (or
  ``python -c "import tensorflow_datasets as tfds; tfds.builder('shapes3d')
  .download_and_prepare(file_format='array_record')"``), then copy ``~/tensorflow_datasets``.
* The dSprites ``.npz`` of DeepMind's repository
  (``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``, read with numpy only, no pickle):
  :func:`dsprites_npz`.

Every read checks that the labels of the examples read are the factors the arithmetic expects,
so a set that is not in factor order is refused instead of giving wrong pairs.

* Cars3D (Reed et al. 2015; not in TFDS): the folder of ``car_*_mesh.mat`` files from
  http://www.scottreed.info/files/nips2015-analogy-data.tar.gz (``data/cars/``), read with
  ``scipy.io.loadmat`` one car at a time: :func:`cars3d_mat`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .tfds import _import_tfds

#: TFDS name -> (label features in storage order, cardinalities, image feature)
TFDS_SETS = {
    "dsprites": (
        ("label_shape", "label_scale", "label_orientation", "label_x_position",
         "label_y_position"),
        (3, 6, 40, 32, 32),
        "image",
    ),
    "shapes3d": (
        ("label_floor_hue", "label_wall_hue", "label_object_hue", "label_scale", "label_shape",
         "label_orientation"),
        (10, 10, 10, 8, 4, 15),
        "image",
    ),
    "smallnorb": (
        ("label_category", "instance", "label_elevation", "label_azimuth", "label_lighting"),
        None,
        "image",
    ),
}  # fmt: skip


class FactorialSource:
    """Random one-factor transitions of a factorial image set, read by index.

    Args:
        read: ``read(indices) -> (images (n, H, W, ch) uint8, labels (n, F) int)``.
        cardinalities: number of values of every factor, in storage order.
        names: factor names.
        lookup: optional table ``(*cardinalities) -> index`` (-1 where the grid has a hole)
            for sets not stored in factor order; default: row-major arithmetic.
    """

    def __init__(
        self,
        read: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
        cardinalities: Sequence[int],
        names: Sequence[str],
        lookup: np.ndarray | None = None,
    ):
        self.read = read
        self.cardinalities = tuple(int(c) for c in cardinalities)
        self.names = tuple(names)
        self.lookup = lookup
        if len(self.names) != len(self.cardinalities):
            raise ValueError(f"{len(self.names)} names for {len(self.cardinalities)} factors")

    @property
    def num_actions(self) -> int:
        """``2 F``."""
        return 2 * len(self.cardinalities)

    def index(self, factors: np.ndarray) -> np.ndarray:
        """Storage index of scenes given their factors ``(n, F)``."""
        if self.lookup is not None:
            return self.lookup[tuple(np.asarray(factors).T)]
        return np.ravel_multi_index(np.asarray(factors).T, self.cardinalities)

    def transitions(self, n: int, seed: int = 0) -> dict[str, np.ndarray]:
        """``n`` random transitions (the batch layout of :class:`jcausal.data.TransitionSampler`).

        The pair ``(f, v)`` is uniform over the adjacent value pairs, the other factors
        uniform, the direction a fair coin; images are returned as float32 in ``[0, 1]``.

        Raises:
            ValueError: the labels read are not the factors expected (the set is not in
                factor order), or the scene has no partner in the set.
        """
        rng = np.random.default_rng(seed)
        card = np.array(self.cardinalities)
        pairs = np.array([(f, v) for f, c in enumerate(card) for v in range(c - 1)])
        fv = pairs[rng.integers(0, len(pairs), n)]
        lo = rng.integers(0, card, (n, len(card)))
        lo[np.arange(n), fv[:, 0]] = fv[:, 1]
        hi = lo.copy()
        hi[np.arange(n), fv[:, 0]] += 1
        down = rng.integers(0, 2, n).astype(bool)
        fx = np.where(down[:, None], hi, lo)
        fy = np.where(down[:, None], lo, hi)
        ix, iy = self.index(fx), self.index(fy)
        if np.any(ix < 0) or np.any(iy < 0):
            raise ValueError("some drawn scenes are missing from the set (holes in the grid)")
        images, labels = self.read(np.concatenate([ix, iy]))
        want = np.concatenate([fx, fy])
        if not np.array_equal(np.asarray(labels), want):
            bad = int(np.nonzero(np.any(np.asarray(labels) != want, 1))[0][0])
            raise ValueError(
                f"the example at index {np.concatenate([ix, iy])[bad]} has factors "
                f"{np.asarray(labels)[bad].tolist()}, not {want[bad].tolist()}: the set is not "
                "stored in the factor order assumed (pass a lookup table)"
            )
        img = np.asarray(images).astype(np.float32) / 255.0
        a = (2 * fv[:, 0] + down).astype(np.int32)
        return {
            "x": img[:n],
            "y": img[n:],
            "a": a,
            "action": np.eye(self.num_actions, dtype=np.float32)[a],
            "fx": fx.astype(np.int32),
            "fy": fy.astype(np.int32),
        }


def tfds_factorial(name: str, split: str = "train", data_dir: str | None = None):
    """A :class:`FactorialSource` over a prepared TFDS set, read by random access.

    ``dsprites``, ``shapes3d`` or ``smallnorb``, through ``tfds.data_source`` (no TensorFlow).

    Raises:
        ValueError: an unsupported set name.
        FileNotFoundError: the set is not prepared in ``data_dir`` (never downloads).
    """
    if name not in TFDS_SETS:
        raise ValueError(f"unsupported factorial set {name!r}; choose from {sorted(TFDS_SETS)}")
    keys, card, image_key = TFDS_SETS[name]
    tfds = _import_tfds()
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as err:  # tfds raises several types
        raise FileNotFoundError(
            f"TFDS dataset {name!r} split {split!r} is not prepared as ArrayRecord in "
            f"data_dir={data_dir or '~/tensorflow_datasets'} ({type(err).__name__}: {err})"
        ) from err

    def read(idx):
        ex = [source[int(i)] for i in idx]
        return (
            np.stack([e[image_key] for e in ex]),
            np.array([[int(e[k]) for k in keys] for e in ex]),
        )

    lookup = None
    if card is None:  # not in factor order: one pass over the labels builds the table
        labels = np.array([[int(source[i][k]) for k in keys] for i in range(len(source))])
        # Instances are numbered within the whole set; re-number them within each category.
        _, inst = np.unique(labels[:, :2], axis=0, return_inverse=True)
        first = {c: inst[labels[:, 0] == c].min() for c in np.unique(labels[:, 0])}
        labels[:, 1] = inst.ravel() - np.array([first[c] for c in labels[:, 0]])
        card = tuple(int(m) + 1 for m in labels.max(0))
        lookup = np.full(card, -1, np.int64)
        lookup[tuple(labels.T)] = np.arange(len(labels))
        table = labels

        def read(idx, _read=read):
            images, _ = _read(idx)
            return images, table[np.asarray(idx)]

    return FactorialSource(read, card, [k.removeprefix("label_") for k in keys], lookup)


def dsprites_npz(path: str | Path) -> FactorialSource:
    """DSprites from DeepMind's ``.npz`` (``imgs`` (737280, 64, 64) and ``latents_classes``).

    Read with ``np.load(..., allow_pickle=False)``; the colour factor (one value) is dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; download dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz from "
            "https://github.com/google-deepmind/dsprites-dataset"
        )
    data = np.load(path, allow_pickle=False)
    for k in ("imgs", "latents_classes"):
        if k not in data:
            raise ValueError(f"{path} has no array {k!r}; is it the dSprites npz?")
    imgs, classes = data["imgs"], data["latents_classes"][:, 1:]
    card = tuple(int(m) + 1 for m in classes.max(0))

    def read(idx):
        return imgs[idx][..., None] * 255, classes[idx]

    names = ("shape", "scale", "orientation", "x_position", "y_position")
    return FactorialSource(read, card, names)


def cars3d_mat(folder: str | Path, size: int | None = 64, cache: int = 8) -> FactorialSource:
    """Cars3D from its ``.mat`` files: factors elevation (4), azimuth (24), car (one per file).

    Each file holds ``im`` of shape ``(128, 128, 3, 24, 4)`` (height, width, RGB, azimuth,
    elevation); a car's file is read when one of its images is drawn (the last ``cache``
    cars are kept). ``size`` block-averages the images (128 must be a multiple of it;
    ``None`` keeps 128x128).

    Raises:
        FileNotFoundError: no ``*.mat`` file in ``folder``.
        ValueError: a file without ``im`` of the expected layout, or a bad ``size``.
    """
    import functools

    from scipy.io import loadmat

    files = sorted(Path(folder).glob("*.mat"))
    if not files:
        raise FileNotFoundError(
            f"no .mat files in {folder}; Cars3D is data/cars/ of "
            "http://www.scottreed.info/files/nips2015-analogy-data.tar.gz"
        )
    if size is not None and (int(size) < 1 or 128 % int(size)):
        raise ValueError(f"size must divide 128 (e.g. 64 or 32), got {size}")

    @functools.lru_cache(maxsize=int(cache))
    def car(i: int) -> np.ndarray:
        im = loadmat(str(files[i]))
        if "im" not in im or im["im"].shape[2:] != (3, 24, 4):
            raise ValueError(
                f"{files[i]}: expected an array 'im' of shape (H, W, 3, 24, 4), got "
                f"{im['im'].shape if 'im' in im else 'none'}"
            )
        out = np.asarray(im["im"])
        if size is not None and out.shape[0] != size:
            k = out.shape[0] // int(size)
            blocks = out.reshape(size, k, size, k, 3, 24, 4).astype(np.float32)
            out = np.round(blocks.mean((1, 3))).astype(np.uint8)
        return out

    card = (4, 24, len(files))

    def read(idx):
        f = np.stack(np.unravel_index(np.asarray(idx), card), -1)
        images = np.stack([car(int(c))[..., az, el] for el, az, c in f])
        return images, f

    return FactorialSource(read, card, ("elevation", "azimuth", "car"))


__all__ = ["TFDS_SETS", "FactorialSource", "cars3d_mat", "dsprites_npz", "tfds_factorial"]
