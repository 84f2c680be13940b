"""Sample quality of digits: a classifier trained on real MNIST digits, and its summaries."""

import jax
import numpy as np
import pytest

from jcausal.data import load_mnist_5k
from jcausal.metrics import digits as dq


@pytest.fixture(scope="module")
def classifier():
    x, y = load_mnist_5k("train")
    return dq.train_digit_classifier(x, y, jax.random.key(0), steps=300)


def test_classifier_recognises_held_out_digits(classifier):
    x, y = load_mnist_5k("test")
    q = dq.sample_quality(classifier, x, y)
    # 300 steps on 3,500 digits: well above chance (0.1) on 1,000 unseen digits.
    assert q["accuracy"] >= 0.85, q
    assert q["mean_top_prob"] >= 0.8
    # The test split is balanced (100 per class), so the predicted classes nearly are.
    assert q["kl_from_uniform"] < 0.05 and q["max_class"] < 0.15
    p = dq.predict_proba(classifier, x[:7])
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
    assert q["mean_top_prob"] == pytest.approx(
        float(np.mean(dq.predict_proba(classifier, x).max(-1))), rel=1e-6
    )


def test_balance_summaries_by_hand(classifier):
    blank = np.zeros((20, 28, 28))
    q = dq.sample_quality(classifier, blank)
    # Identical images all fall in one class: KL from uniform is log 10.
    assert q["max_class"] == 1.0 and q["min_class"] == 0.0
    assert q["kl_from_uniform"] == pytest.approx(np.log(10))
    assert sum(q["class_fractions"]) == pytest.approx(1.0)


def test_bad_input_is_named(classifier):
    x, y = load_mnist_5k("val")
    with pytest.raises(ValueError, match="images must be"):
        dq.train_digit_classifier(x[:, :27], y, jax.random.key(0), steps=1)
    with pytest.raises(ValueError, match="labels"):
        dq.train_digit_classifier(x[:4], np.array([0, 1, 2, 10]), jax.random.key(0), steps=1)
    with pytest.raises(ValueError, match="NaN"):
        dq.sample_quality(classifier, np.full((2, 28, 28), np.nan))
