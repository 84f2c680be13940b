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

Transitions are split 70/15/15 by a hash of the edge (:meth:`FactorialSource.split_of`).
:class:`FactorialSet` presents a source to the CT-VAE experiment like
:class:`jcausal.data.Shapes`: its samplers run inside the compiled training step and read the
batch on the host through ``jax.pure_callback``.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .tfds import _import_tfds
from .transitions import SPLIT_FRACTIONS, SPLIT_SEED, SPLITS, check_balance, mix_factor_probs


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (Steele et al. 2014): a bijective mix of uint64 values."""
    with np.errstate(over="ignore"):  # wrap-around multiplication is the point
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


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

    def _checked_read(self, factors: np.ndarray) -> np.ndarray:
        """Images (float32 in ``[0, 1]``) of scenes ``(n, F)``, their labels checked."""
        idx = self.index(factors)
        if np.any(idx < 0):
            raise ValueError("some drawn scenes are missing from the set (holes in the grid)")
        images, labels = self.read(idx)
        if not np.array_equal(np.asarray(labels), factors):
            bad = int(np.nonzero(np.any(np.asarray(labels) != factors, 1))[0][0])
            raise ValueError(
                f"the example at index {idx[bad]} has factors "
                f"{np.asarray(labels)[bad].tolist()}, not {factors[bad].tolist()}: the set is not "
                "stored in the factor order assumed (pass a lookup table)"
            )
        return np.asarray(images).astype(np.float32) / 255.0

    def scenes(self, n: int, seed: int = 0) -> dict[str, np.ndarray]:
        """``n`` uniformly random scenes: ``{"image": (n, H, W, ch) in [0, 1], "factors"}``."""
        rng = np.random.default_rng(seed)
        f = rng.integers(0, np.array(self.cardinalities), (int(n), len(self.cardinalities)))
        return {"image": self._checked_read(f), "factors": f.astype(np.int32)}

    def split_of(self, lower: np.ndarray, factor: np.ndarray) -> np.ndarray:
        """Split of transitions (0 train, 1 val, 2 test): 70/15/15 by a hash of the edge.

        An undirected transition (edge of the grid) is its lower scene ``(n, F)`` and the
        factor it raises ``(n,)``; both directions of an edge fall in the same split. The
        hash (splitmix64 of the edge's row-major number and :data:`SPLIT_SEED`) replaces the
        permutation of :class:`jcausal.data.Shapes`, whose edge list would not fit in memory
        for dSprites (3.6 million edges), so the fractions are 70/15/15 up to sampling noise.
        """
        edge = np.ravel_multi_index(np.asarray(lower).T, self.cardinalities).astype(np.uint64)
        edge = edge * np.uint64(len(self.cardinalities)) + np.asarray(factor).astype(np.uint64)
        u = _splitmix64(edge ^ np.uint64(SPLIT_SEED)) >> np.uint64(11)  # 53 uniform bits
        u = u.astype(np.float64) / float(2**53)
        bounds = np.cumsum(SPLIT_FRACTIONS)[:-1]
        return np.searchsorted(bounds, u, side="right")

    def factor_probs(self, balance: float = 0.0) -> np.ndarray:
        """Probability of each factor in :meth:`transitions` ``(F,)``.

        ``balance = 0``: proportional to ``card - 1`` (the pair ``(f, v)`` is uniform);
        ``balance = b``: ``(1 - b)`` times that plus ``b`` times uniform over the factors with
        at least two values (a factor with one value, dSprites' colour, has no transitions).
        """
        balance = check_balance(balance)
        card = np.asarray(self.cardinalities)
        if not np.any(card > 1):
            raise ValueError(
                f"no factor of this set has two values (cardinalities {self.cardinalities}): "
                "it has no one-factor transitions"
            )
        return mix_factor_probs((card - 1) / np.sum(card - 1), balance)

    def transitions(
        self, n: int, seed: int = 0, split: str | None = None, balance: float = 0.0
    ) -> dict[str, np.ndarray]:
        """``n`` random transitions (the batch layout of :class:`jcausal.data.TransitionSampler`).

        The pair ``(f, v)`` is uniform over the adjacent value pairs (with ``balance``, the
        factor is drawn from :meth:`factor_probs` and the pair uniform within it), the other
        factors uniform, the direction a fair coin; images are returned as float32 in
        ``[0, 1]``.

        Args:
            n: number of transitions.
            seed: seed of the draw.
            split: ``"train"``, ``"val"`` or ``"test"`` (see :meth:`split_of`), or ``None``
                for all transitions.
            balance: in ``[0, 1]``, mixes the factors' frequencies towards uniform as
                :class:`jcausal.data.TransitionSampler` does for the embedded set; 0 draws
                exactly what it drew before the option.

        Raises:
            ValueError: the labels read are not the factors expected (the set is not in
                factor order), the scene has no partner in the set, an unknown split, or a
                split without transitions (a grid too small to split).
        """
        if split is not None and split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose from {SPLITS} or None")
        probs = self.factor_probs(balance)
        rng = np.random.default_rng(seed)
        card = np.array(self.cardinalities)
        pairs = np.array([(f, v) for f, c in enumerate(card) for v in range(c - 1)])
        # Probability of each pair: its factor's, shared evenly among the factor's pairs.
        pair_p = probs[pairs[:, 0]] / (card - 1)[pairs[:, 0]]
        fv = np.zeros((0, 2), np.int64)
        lo = np.zeros((0, len(card)), np.int64)
        for _ in range(64):  # rejection: a split holds >= 15% of the edges on average
            m = max(n, 16) * (2 if split in (None, "train") else 8)
            if balance:
                fv_c = pairs[rng.choice(len(pairs), m, p=pair_p / pair_p.sum())]
            else:  # the draws of the natural recipe, unchanged by the option
                fv_c = pairs[rng.integers(0, len(pairs), m)]
            lo_c = rng.integers(0, card, (m, len(card)))
            lo_c[np.arange(m), fv_c[:, 0]] = fv_c[:, 1]
            if split is not None:
                keep = self.split_of(lo_c, fv_c[:, 0]) == SPLITS.index(split)
                fv_c, lo_c = fv_c[keep], lo_c[keep]
            fv, lo = np.concatenate([fv, fv_c]), np.concatenate([lo, lo_c])
            if len(fv) >= n:
                break
        if len(fv) < n:
            raise ValueError(
                f"the {split!r} split of this set holds (almost) no transitions: its grid "
                f"{self.cardinalities} is too small to split 70/15/15"
            )
        fv, lo = fv[:n], lo[:n]
        hi = lo.copy()
        hi[np.arange(n), fv[:, 0]] += 1
        down = rng.integers(0, 2, n).astype(bool)
        fx = np.where(down[:, None], hi, lo)
        fy = np.where(down[:, None], lo, hi)
        img = self._checked_read(np.concatenate([fx, fy]))
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


def _packed_binary_images(path: Path, chunk: int = 16384) -> tuple[np.ndarray, tuple[int, ...]]:
    """``imgs`` of a dSprites ``.npz``, streamed from the archive and bit-packed along width.

    DeepMind's archive is compressed, so ``np.load`` would inflate all 737,280 images at
    once (3 GB); read ``chunk`` images at a time and keep 1 bit per pixel (377 MB).
    """
    with zipfile.ZipFile(path) as z, z.open("imgs.npy") as f:
        version = np.lib.format.read_magic(f)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(f)
        if fortran or len(shape) != 3 or np.dtype(dtype).itemsize != 1:
            raise ValueError(
                f"{path}: imgs must be a C-ordered (N, H, W) array of 8-bit values, got shape "
                f"{shape}, dtype {dtype}, fortran_order={fortran}"
            )
        per = shape[1] * shape[2]
        packed = []
        for start in range(0, shape[0], chunk):
            n = min(chunk, shape[0] - start)
            block = np.frombuffer(f.read(n * per), np.uint8)
            if block.size != n * per:
                raise ValueError(f"{path}: imgs.npy is truncated at image {start}")
            if block.max(initial=0) > 1:
                raise ValueError(f"{path}: imgs must be binary (0/1) as in dSprites")
            packed.append(np.packbits(block.reshape(n, shape[1], shape[2]), axis=-1))
    return np.concatenate(packed), tuple(shape)


def dsprites_npz(path: str | Path) -> FactorialSource:
    """DSprites from DeepMind's ``.npz`` (``imgs`` (737280, 64, 64) and ``latents_classes``).

    Read with numpy only (no pickle): the binary images are streamed from the archive and kept
    bit-packed (377 MB instead of 3 GB); the colour factor (one value) is dropped.

    Raises:
        FileNotFoundError: no file at ``path`` (the message says where to get it).
        ValueError: the archive lacks ``imgs`` or ``latents_classes``, its images are not
            binary 8-bit, or the two disagree in length.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; download dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz from "
            "https://github.com/google-deepmind/dsprites-dataset"
        )
    with np.load(path, allow_pickle=False) as data:
        for k in ("imgs", "latents_classes"):
            if k not in data:
                raise ValueError(f"{path} has no array {k!r}; is it the dSprites npz?")
        classes = data["latents_classes"][:, 1:]
    packed, shape = _packed_binary_images(path)
    if shape[0] != len(classes):
        raise ValueError(f"{path}: {shape[0]} images but {len(classes)} rows of latents_classes")
    card = tuple(int(m) + 1 for m in classes.max(0))

    def read(idx):
        bits = np.unpackbits(packed[np.asarray(idx)], axis=-1, count=shape[2])
        return bits[..., None] * np.uint8(255), classes[idx]

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
        if out.dtype != np.uint8:  # Reed et al.'s files hold 8-bit RGB; floats would misread
            raise ValueError(f"{files[i]}: 'im' must be uint8 RGB, got dtype {out.dtype}")
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


class FactorialSet:
    """A :class:`FactorialSource` seen like :class:`jcausal.data.Shapes` by the CT-VAE experiment.

    Scenes and transitions are read on the host through ``jax.pure_callback`` (the random
    draw is seeded by the step's key), so ``fit(data=set.sampler("train", B))`` reads only the
    pairs of each batch. Grey images are repeated to RGB and every image is resized to
    ``size x size`` (``jax.image.resize``, linear with antialiasing) when its side differs.

    Args:
        source: the set (:func:`tfds_factorial`, :func:`dsprites_npz`, :func:`cars3d_mat`).
        size: side of the images handed to the model (a power of two for the MCQ-VAE).

    Raises:
        ValueError: the set's images are not square with 1 or 3 channels.
    """

    def __init__(self, source: FactorialSource, size: int = 64):
        self.source = source
        self.size = int(size)
        probe = source.scenes(1, seed=0)["image"]
        if probe.ndim != 4 or probe.shape[1] != probe.shape[2] or probe.shape[3] not in (1, 3):
            raise ValueError(
                f"factorial set images must be square with 1 or 3 channels (n, S, S, ch); got "
                f"shape {probe.shape[1:]}"
            )
        self.native = probe.shape[1:]

    @property
    def names(self) -> tuple[str, ...]:
        """The factor names."""
        return self.source.names

    @property
    def cardinalities(self) -> tuple[int, ...]:
        """Number of values of every factor."""
        return self.source.cardinalities

    @property
    def num_factors(self) -> int:
        """``F``."""
        return len(self.cardinalities)

    @property
    def num_actions(self) -> int:
        """``2 F``."""
        return 2 * self.num_factors

    def images(self, x: Float[Array, "n H W ch"]) -> Float[Array, "n S S 3"]:
        """Images of the set as the model's RGB ``size x size`` images."""
        x = jnp.asarray(x, jnp.float32)
        if x.shape[-1] == 1:
            x = jnp.repeat(x, 3, axis=-1)
        if x.shape[1:3] != (self.size, self.size):
            shape = (x.shape[0], self.size, self.size, 3)
            x = jnp.clip(jax.image.resize(x, shape, "linear", antialias=True), 0.0, 1.0)
        return x

    def sample_scenes(self, key: PRNGKeyArray, n: int) -> dict[str, Array]:
        """``n`` random scenes: ``{"image": (n, size, size, 3), "factors": (n, F)}``."""
        n = int(n)
        shapes = (
            jax.ShapeDtypeStruct((n, *self.native), jnp.float32),
            jax.ShapeDtypeStruct((n, self.num_factors), jnp.int32),
        )

        def host(seed):
            out = self.source.scenes(n, seed=int(seed))
            return out["image"], out["factors"]

        image, factors = jax.pure_callback(host, shapes, _seed(key))
        return {"image": self.images(image), "factors": factors}

    def sampler(self, split: str, batch_size: int, balance: float = 0.0) -> FactorialSampler:
        """A batch function ``sampler(key) -> batch`` of transitions of ``split``.

        ``balance`` mixes the factors' frequencies towards uniform
        (:meth:`FactorialSource.factor_probs`).
        """
        return FactorialSampler(self, split, batch_size, balance)


class FactorialSampler:
    """Transitions of one split of a :class:`FactorialSet` (layout of ``TransitionSampler``).

    Args:
        data: the set.
        split: ``"train"``, ``"val"`` or ``"test"``.
        batch_size: transitions per call.
        balance: in ``[0, 1]``: the factors' frequencies mixed towards uniform
            (:meth:`FactorialSource.factor_probs`).
    """

    def __init__(self, data: FactorialSet, split: str, batch_size: int, balance: float = 0.0):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data = data
        self.split = split
        self.batch_size = int(batch_size)
        self.balance = check_balance(balance)
        #: probability of each factor: prop. to card - 1 (the pair (f, v) is uniform), mixed
        #: towards uniform by ``balance``
        self.factor_probs = data.source.factor_probs(self.balance)

    def __call__(self, key: PRNGKeyArray) -> dict[str, Array]:
        return self.draw(key, self.batch_size)

    def draw(self, key: PRNGKeyArray, n: int) -> dict[str, Array]:
        """``n`` transitions: ``x``, ``y``, ``a``, ``action``, ``fx``, ``fy``."""
        n, f = int(n), self.data.num_factors
        img = jax.ShapeDtypeStruct((n, *self.data.native), jnp.float32)
        lab = jax.ShapeDtypeStruct((n, f), jnp.int32)
        shapes = (img, img, jax.ShapeDtypeStruct((n,), jnp.int32), lab, lab)

        def host(seed):
            t = self.data.source.transitions(
                n, seed=int(seed), split=self.split, balance=self.balance
            )
            return t["x"], t["y"], t["a"], t["fx"], t["fy"]

        x, y, a, fx, fy = jax.pure_callback(host, shapes, _seed(key))
        both = self.data.images(jnp.concatenate([x, y]))
        return {
            "x": both[:n],
            "y": both[n:],
            "a": a,
            "action": jax.nn.one_hot(a, self.data.num_actions),
            "fx": fx,
            "fy": fy,
        }


def _seed(key: PRNGKeyArray) -> Array:
    return jax.random.randint(key, (), 0, np.iinfo(np.int32).max, dtype=jnp.int32)


__all__ = [
    "TFDS_SETS",
    "FactorialSampler",
    "FactorialSet",
    "FactorialSource",
    "cars3d_mat",
    "dsprites_npz",
    "tfds_factorial",
]
