"""sigmoid_xent: every sigmoid cross-entropy loss for JAX, exact to TF, Keras and TF-Ranking."""

from sigmoid_xent._core import (
    binary_cross_entropy,
    sigmoid_cross_entropy_with_logits,
    sigmoid_focal_loss,
    weighted_sigmoid_cross_entropy_with_logits,
)
from sigmoid_xent.losses import BinaryCrossentropy, binary_crossentropy, sigmoid_cross_entropy
from sigmoid_xent.reductions import Reduction, reduce_loss
from sigmoid_xent.validation import validate_inputs

__version__ = "0.1.0"

__all__ = [
    "BinaryCrossentropy",
    "Reduction",
    "binary_cross_entropy",
    "binary_crossentropy",
    "reduce_loss",
    "sigmoid_cross_entropy",
    "sigmoid_cross_entropy_with_logits",
    "sigmoid_focal_loss",
    "validate_inputs",
    "weighted_sigmoid_cross_entropy_with_logits",
]
