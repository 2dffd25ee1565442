"""Every sigmoid cross-entropy loss for JAX, exact to TensorFlow, Keras and TF-Ranking.

One calling convention: the data arrays are positional, in TensorFlow's order (``labels,
logits``); options are keyword-only unless a peer's signature (TF, Keras) fixes them; a boolean
``where`` makes an element absent. Listwise losses are in :mod:`sigmoid_xent.ranking`,
reductions inside ``shard_map`` in :mod:`sigmoid_xent.sharding`, Keras 3 losses in
:mod:`sigmoid_xent.keras` and peers' signatures in :mod:`sigmoid_xent.compat`.
"""

from importlib.metadata import version as _version

from sigmoid_xent import compat, ranking, sharding
from sigmoid_xent._core import (
    binary_cross_entropy,
    sigmoid_cross_entropy_with_logits,
    weighted_sigmoid_cross_entropy_with_logits,
)
from sigmoid_xent.contrastive import siglip_loss, siglip_loss_ring
from sigmoid_xent.focal import sigmoid_focal_loss
from sigmoid_xent.fused import linear_sigmoid_cross_entropy
from sigmoid_xent.imbalance import (
    asymmetric_loss,
    class_balanced_weights,
    poly1_sigmoid_loss,
    quality_focal_loss,
)
from sigmoid_xent.losses import BinaryCrossentropy, binary_crossentropy, sigmoid_cross_entropy
from sigmoid_xent.reductions import Reduction, reduce_loss
from sigmoid_xent.sharding import reduce_loss_sharded
from sigmoid_xent.validation import validate_inputs

# The one version string is pyproject.toml's, read from the installed metadata.
__version__ = _version("sigmoid_xent")

__all__ = [
    "BinaryCrossentropy",
    "Reduction",
    "asymmetric_loss",
    "binary_cross_entropy",
    "binary_crossentropy",
    "class_balanced_weights",
    "compat",
    "linear_sigmoid_cross_entropy",
    "poly1_sigmoid_loss",
    "quality_focal_loss",
    "ranking",
    "reduce_loss",
    "reduce_loss_sharded",
    "sharding",
    "sigmoid_cross_entropy",
    "sigmoid_cross_entropy_with_logits",
    "sigmoid_focal_loss",
    "siglip_loss",
    "siglip_loss_ring",
    "validate_inputs",
    "weighted_sigmoid_cross_entropy_with_logits",
]
