"""Measurements of generated data: sample quality of digit images (`digits`)."""

from . import digits
from .digits import DigitClassifier, sample_quality, train_digit_classifier

__all__ = ["DigitClassifier", "digits", "sample_quality", "train_digit_classifier"]
