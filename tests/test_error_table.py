"""The table of bad inputs and the exact exception each gets (issue 11).

``TABLE`` is the data: one row per bad input, with the exception type and the exact message.
tests/README.md shows the same table rendered as markdown (``render_markdown()``; a test keeps
the two in sync: regenerate with ``python tests/test_error_table.py > /dev/null``, which rewrites
the block between the markers in tests/README.md). Rows marked ``bug`` are defects in a module
we could not edit during the campaign: strict xfails that describe the message we want.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sigmoid_xent as sx
from sigmoid_xent import ranking

Z2 = np.zeros((2, 3), np.float32)
Z3 = np.zeros(3, np.float32)


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    call: Callable[[], Any]
    error: type[Exception]
    message: str
    bug: str | None = None  # a known defect: the row is a strict xfail with this reason


def _jit_num_segments():
    f = jax.jit(
        lambda z, x, n: ranking.sigmoid_cross_entropy(
            z, x, segment_ids=jnp.array([0, 0, 1]), num_segments=n
        )
    )
    return f(Z3, Z3, 2)


def _jit_validate_num_segments():
    f = jax.jit(lambda n: sx.validate_inputs(Z3, segment_ids=jnp.array([0, 0, 1]), num_segments=n))
    return f(2)


def _jit_pad_without_list_size():
    return jax.jit(lambda v, ids: ranking.pad(v, ids, 2))(Z3, jnp.array([0, 0, 1]))


SCE = "sigmoid_cross_entropy_with_logits"
SAME = "must have the same shape (no broadcasting, as in TensorFlow), got"
FLOATING = "must have a floating dtype (float16, bfloat16, float32, float64), got"
VALID = (
    "expected one of ['none', 'sum', 'mean', 'sum_over_batch_size', "
    "'sum_by_nonzero_weights', 'mean_with_sample_weight'] (any case), or 'auto', "
    "'sum_over_nonzero_weights' or None."
)
RANKING_VALID = (
    "expected one of ['none', 'sum', 'mean', 'sum_over_batch_size', "
    "'sum_by_nonzero_weights', 'per_list', 'list_mean'] (any case), or 'auto', "
    "'sum_over_nonzero_weights' or None."
)
KERAS_SW = (
    "cannot be applied to the per-sample losses of shape (2,): expected a scalar, [batch], "
    "or a shape broadcastable to the per-sample losses (one trailing dimension of 1 is "
    "squeezed or added, as Keras does)."
)

TABLE = [
    # ----------------------------------------------------------------- elementwise losses
    Row(
        "labels and logits of different shapes",
        lambda: sx.sigmoid_cross_entropy_with_logits(Z3, Z2),
        ValueError,
        f"{SCE}: `labels` and `logits` {SAME} labels shape (3,) and dtype float32 and logits "
        "shape (2, 3) and dtype float32.",
    ),
    Row(
        "a scalar label for vector logits (TF does not broadcast)",
        lambda: sx.sigmoid_cross_entropy_with_logits(1.0, Z3),
        ValueError,
        f"{SCE}: `labels` and `logits` {SAME} labels shape () and dtype float32 and logits "
        "shape (3,) and dtype float32.",
    ),
    Row(
        "integer logits",
        lambda: sx.sigmoid_cross_entropy_with_logits(Z3, np.zeros(3, np.int32)),
        TypeError,
        f"{SCE}: `logits` {FLOATING} shape (3,) and dtype int32. Cast it explicitly, e.g. "
        "`logits.astype(jnp.float32)`.",
    ),
    Row(
        "bool logits",
        lambda: sx.sigmoid_cross_entropy_with_logits(Z3, np.zeros(3, bool)),
        TypeError,
        f"{SCE}: `logits` {FLOATING} shape (3,) and dtype bool. Cast it explicitly, e.g. "
        "`logits.astype(jnp.float32)`.",
    ),
    Row(
        "complex labels",
        lambda: sx.sigmoid_cross_entropy_with_logits(np.zeros(3, np.complex64), Z3),
        TypeError,
        f"{SCE}: `labels` must be real, got shape (3,) and dtype complex64.",
    ),
    Row(
        "None labels",
        lambda: sx.sigmoid_cross_entropy_with_logits(None, Z3),
        ValueError,
        f"{SCE}: `labels` must be an array, got None.",
    ),
    Row(
        "None logits",
        lambda: sx.sigmoid_cross_entropy_with_logits(Z3, None),
        ValueError,
        f"{SCE}: `logits` must be an array, got None.",
    ),
    Row(
        "a string as labels",
        lambda: sx.sigmoid_cross_entropy_with_logits("1", Z3),
        TypeError,
        f"{SCE}: `labels` must be an array of numbers, got str '1'.",
    ),
    Row(
        "ragged nested lists as logits",
        lambda: sx.sigmoid_cross_entropy_with_logits([[0.0], [1.0, 2.0]], [[0.0], [1.0, 2.0]]),
        ValueError,
        f"{SCE}: `logits` must be a rectangular (not ragged) nested list of numbers, got one "
        "that cannot be converted to an array.",
    ),
    Row(
        "pos_weight not broadcastable to the logits",
        lambda: sx.weighted_sigmoid_cross_entropy_with_logits(Z2, Z2, np.ones(4)),
        ValueError,
        "weighted_sigmoid_cross_entropy_with_logits: `pos_weight` of shape (4,) cannot be "
        "broadcast to the logits shape (2, 3).",
    ),
    Row(
        "None pos_weight",
        lambda: sx.weighted_sigmoid_cross_entropy_with_logits(Z3, Z3, None),
        ValueError,
        "weighted_sigmoid_cross_entropy_with_logits: `pos_weight` must be an array, got None.",
    ),
    Row(
        "negative focal gamma",
        lambda: sx.sigmoid_focal_loss(Z3, Z3, alpha=0.25, gamma=-1.0),
        ValueError,
        "sigmoid_focal_loss: `gamma` must be >= 0, got -1.0.",
    ),
    Row(
        "None focal gamma",
        lambda: sx.sigmoid_focal_loss(Z3, Z3, alpha=0.25, gamma=None),
        ValueError,
        "sigmoid_focal_loss: `gamma` must be an array, got None.",
    ),
    Row(
        "focal alpha not broadcastable to the logits",
        lambda: sx.sigmoid_focal_loss(Z3, Z3, alpha=np.ones(2)),
        ValueError,
        "sigmoid_focal_loss: `alpha` of shape (2,) cannot be broadcast to the logits shape (3,).",
    ),
    Row(
        "integer probabilities",
        lambda: sx.binary_cross_entropy(Z3, np.zeros(3, np.int32)),
        TypeError,
        f"binary_cross_entropy: `probs` {FLOATING} shape (3,) and dtype int32. Cast it "
        "explicitly, e.g. `probs.astype(jnp.float32)`.",
    ),
    Row(
        "labels and probabilities of different shapes",
        lambda: sx.binary_cross_entropy(Z3, Z2),
        ValueError,
        f"binary_cross_entropy: `labels` and `probs` {SAME} labels shape (3,) and dtype float32 "
        "and probs shape (2, 3) and dtype float32.",
    ),
    Row(
        "None epsilon",
        lambda: sx.binary_cross_entropy(Z3, Z3, epsilon=None),
        ValueError,
        "binary_cross_entropy: `epsilon` must be an array, got None.",
    ),
    # ----------------------------------------------------------------- reduce_loss
    Row(
        "unknown reduction",
        lambda: sx.reduce_loss(Z3, None, "average"),
        ValueError,
        f"reduce_loss: unknown reduction 'average'; {VALID}",
    ),
    Row(
        "a reduction that is not a string",
        lambda: sx.reduce_loss(Z3, None, 3),
        ValueError,
        f"reduce_loss: unknown reduction 3; {VALID}",
    ),
    Row(
        "weights not broadcastable to the losses",
        lambda: sx.reduce_loss(Z2, np.ones((3, 1))),
        ValueError,
        "reduce_loss: `weights` of shape (3, 1) cannot be broadcast to the losses shape (2, 3).",
    ),
    Row(
        "weights that would grow the losses",
        lambda: sx.reduce_loss(Z2, np.ones((2, 3, 1))),
        ValueError,
        "reduce_loss: `weights` of shape (2, 3, 1) cannot be broadcast to the losses shape (2, 3).",
    ),
    Row(
        "integer losses",
        lambda: sx.reduce_loss(np.ones(3, np.int32)),
        TypeError,
        f"reduce_loss: `losses` {FLOATING} shape (3,) and dtype int32. Cast it explicitly, e.g. "
        "`losses.astype(jnp.float32)`.",
    ),
    Row(
        "None losses",
        lambda: sx.reduce_loss(None),
        ValueError,
        "reduce_loss: `losses` must be an array, got None.",
    ),
    Row(
        "string weights",
        lambda: sx.reduce_loss(Z3, "w"),
        TypeError,
        "reduce_loss: `weights` must be an array of numbers, got str 'w'.",
    ),
    # ----------------------------------------------------------------- TF v1
    Row(
        "TF v1: a bare [batch] weights vector for 2-D losses",
        lambda: sx.sigmoid_cross_entropy(Z2, Z2, np.ones(2)),
        ValueError,
        "sigmoid_cross_entropy: `weights` of shape (2,) must be a scalar or have the losses' rank "
        "2 with every dimension 1 or equal to the losses shape (2, 3) (use [batch, 1] for "
        "per-sample weights).",
    ),
    Row(
        "TF v1: weights of a larger rank",
        lambda: sx.sigmoid_cross_entropy(Z2, Z2, np.ones((2, 3, 1))),
        ValueError,
        "sigmoid_cross_entropy: `weights` of shape (2, 3, 1) must be a scalar or have the losses' "
        "rank 2 with every dimension 1 or equal to the losses shape (2, 3) (use [batch, 1] for "
        "per-sample weights).",
    ),
    Row(
        "TF v1: None weights",
        lambda: sx.sigmoid_cross_entropy(Z2, Z2, None),
        ValueError,
        "sigmoid_cross_entropy: `weights` must be an array, got None.",
    ),
    Row(
        "TF v1: None labels",
        lambda: sx.sigmoid_cross_entropy(None, Z2),
        ValueError,
        "sigmoid_cross_entropy: `multi_class_labels` must be an array, got None.",
    ),
    Row(
        "TF v1: labels and logits of different shapes",
        lambda: sx.sigmoid_cross_entropy(Z2, Z2.T),
        ValueError,
        f"sigmoid_cross_entropy: `multi_class_labels` and `logits` {SAME} multi_class_labels "
        "shape (2, 3) and dtype float32 and logits shape (3, 2) and dtype float32.",
    ),
    Row(
        "TF v1: integer logits",
        lambda: sx.sigmoid_cross_entropy(Z2, np.zeros((2, 3), np.int32)),
        TypeError,
        f"sigmoid_cross_entropy: `logits` {FLOATING} shape (2, 3) and dtype int32. Cast it "
        "explicitly, e.g. `logits.astype(jnp.float32)`.",
    ),
    Row(
        "TF v1: None label_smoothing",
        lambda: sx.sigmoid_cross_entropy(Z2, Z2, label_smoothing=None),
        ValueError,
        "sigmoid_cross_entropy: `label_smoothing` must be an array, got None.",
    ),
    Row(
        "TF v1: label_smoothing not broadcastable to the labels",
        lambda: sx.sigmoid_cross_entropy(Z2, Z2, label_smoothing=np.ones(2)),
        ValueError,
        "sigmoid_cross_entropy: `label_smoothing` of shape (2,) cannot be broadcast to the labels "
        "shape (2, 3).",
    ),
    # ----------------------------------------------------------------- Keras
    Row(
        "Keras: y_true and y_pred of different shapes (Keras 2 broadcasts silently)",
        lambda: sx.binary_crossentropy(np.zeros((2, 1)), Z2),
        ValueError,
        f"binary_crossentropy: `y_true` and `y_pred` {SAME} y_true shape (2, 1) and dtype "
        "float32 and y_pred shape (2, 3) and dtype float32.",
    ),
    Row(
        "Keras: axis out of range",
        lambda: sx.binary_crossentropy(Z2, Z2, axis=2),
        ValueError,
        "binary_crossentropy: `axis` 2 is out of range for y_pred of shape (2, 3).",
    ),
    Row(
        "Keras: a scalar y_pred (no axis to average)",
        lambda: sx.binary_crossentropy(0.0, 0.5),
        ValueError,
        "binary_crossentropy: `axis` -1 is out of range for y_pred of shape ().",
    ),
    Row(
        "Keras: axis not an int",
        lambda: sx.binary_crossentropy(Z2, Z2, axis=(0, 1)),
        TypeError,
        "binary_crossentropy: `axis` must be an int (one axis, as Keras), got (0, 1) of type "
        "tuple.",
    ),
    Row(
        "Keras: None y_true",
        lambda: sx.BinaryCrossentropy()(None, Z2),
        ValueError,
        "binary_crossentropy: `y_true` must be an array, got None.",
    ),
    Row(
        "Keras: sample_weight of a bad rank",
        lambda: sx.BinaryCrossentropy()(Z2, Z2, np.ones((2, 1, 1))),
        ValueError,
        f"BinaryCrossentropy: `sample_weight` of shape (2, 1, 1) {KERAS_SW}",
    ),
    Row(
        "Keras: sample_weight of a bad length",
        lambda: sx.BinaryCrossentropy()(Z2, Z2, np.ones(3)),
        ValueError,
        f"BinaryCrossentropy: `sample_weight` of shape (3,) {KERAS_SW}",
    ),
    Row(
        "Keras: unknown reduction (at construction)",
        lambda: sx.BinaryCrossentropy(reduction="batchwise"),
        ValueError,
        f"BinaryCrossentropy: unknown reduction 'batchwise'; {VALID}",
    ),
    # ----------------------------------------------------------------- compat
    Row(
        "compat.torch: a reduction PyTorch does not have",
        lambda: sx.compat.torch.binary_cross_entropy_with_logits(Z3, Z3, reduction="auto"),
        ValueError,
        "compat.torch.binary_cross_entropy_with_logits: unknown reduction 'auto'; expected one of "
        "['none', 'mean', 'sum'] (any case), or None.",
    ),
    Row(
        "compat.optax: negative focal gamma",
        lambda: sx.compat.optax.sigmoid_focal_loss(Z3, Z3, gamma=-1.0),
        ValueError,
        "compat.optax.sigmoid_focal_loss: `gamma` must lie in [0, inf), got -1.",
    ),
    Row(
        "compat: a where that is not boolean",
        lambda: sx.compat.torch.sigmoid_focal_loss(Z3, Z3, where=np.ones(3)),
        TypeError,
        "compat.torch.sigmoid_focal_loss: `where` must be a boolean mask (True = present), got "
        "shape (3,) and dtype float32.",
    ),
    # ----------------------------------------------------------------- validate_inputs
    Row(
        "validate_inputs: None labels",
        lambda: sx.validate_inputs(None),
        ValueError,
        "validate_inputs: `labels` must be an array, got None.",
    ),
    Row(
        "validate_inputs: logits of another shape",
        lambda: sx.validate_inputs(Z3, Z2),
        ValueError,
        f"validate_inputs: `labels` and `logits` {SAME} labels shape (3,) and dtype float32 and "
        "logits shape (2, 3) and dtype float32.",
    ),
    Row(
        "validate_inputs: float segment ids",
        lambda: sx.validate_inputs(Z3, segment_ids=Z3, num_segments=2),
        ValueError,
        "validate_inputs: `segment_ids` must be integers, got dtype float32.",
    ),
    Row(
        "validate_inputs: segment ids of another shape",
        lambda: sx.validate_inputs(Z3, segment_ids=np.zeros(2, np.int32), num_segments=2),
        ValueError,
        f"validate_inputs: `labels` and `segment_ids` {SAME} labels shape (3,) and dtype float32 "
        "and segment_ids shape (2,) and dtype int32.",
    ),
    Row(
        "validate_inputs: segment ids without num_segments",
        lambda: sx.validate_inputs(Z3, segment_ids=np.zeros(3, np.int32)),
        ValueError,
        "validate_inputs: `num_segments` is required with `segment_ids` (a static Python int), "
        "got None.",
    ),
    Row(
        "validate_inputs: a traced num_segments under jit",
        _jit_validate_num_segments,
        ValueError,
        "validate_inputs: `num_segments` must be a static Python int (it fixes an output shape), "
        "got a traced value of shape () and dtype int32. Close over it or mark it static, e.g. "
        "`jax.jit(f, static_argnames='num_segments')`.",
    ),
    Row(
        "validate_inputs: a float num_segments",
        lambda: sx.validate_inputs(Z3, segment_ids=np.zeros(3, np.int32), num_segments=2.5),
        TypeError,
        "validate_inputs: `num_segments` must be a Python int, got 2.5 of type float.",
    ),
    # ----------------------------------------------------------------- ranking
    Row(
        "ranking: segment ids out of range (eagerly)",
        lambda: ranking.sigmoid_cross_entropy(
            Z3, Z3, segment_ids=np.array([0, 2, 5]), num_segments=2
        ),
        ValueError,
        "ranking.sigmoid_cross_entropy: `segment_ids` must lie in [0, num_segments) = [0, 2); "
        "found 2 out of range, the first 2 at index 1. (Inside jit/vmap such an id makes the whole "
        "result NaN.)",
    ),
    Row(
        "ranking: float segment ids",
        lambda: ranking.sigmoid_cross_entropy(Z3, Z3, segment_ids=Z3, num_segments=2),
        ValueError,
        "ranking.sigmoid_cross_entropy: `segment_ids` must have an integer dtype (int32, int64, "
        "...), got shape (3,) and dtype float32.",
    ),
    Row(
        "ranking: segment ids of another shape",
        lambda: ranking.sigmoid_cross_entropy(
            Z3, Z3, segment_ids=np.zeros(2, np.int32), num_segments=2
        ),
        ValueError,
        "ranking.sigmoid_cross_entropy: `segment_ids` must have one id per item, shape (3,), got "
        "shape (2,) and dtype int32.",
    ),
    Row(
        "ranking: segment ids without num_segments",
        lambda: ranking.sigmoid_cross_entropy(Z3, Z3, segment_ids=np.zeros(3, np.int32)),
        ValueError,
        "ranking.sigmoid_cross_entropy: `num_segments` is required with `segment_ids` (a static "
        "Python int), got None.",
    ),
    Row(
        "ranking: a traced num_segments under jit",
        _jit_num_segments,
        ValueError,
        "ranking.sigmoid_cross_entropy: `num_segments` must be a static Python int (it fixes an "
        "output shape), got a traced value of shape () and dtype int32. Close over it or mark it "
        "static, e.g. `jax.jit(f, static_argnames='num_segments')`.",
    ),
    Row(
        "ranking: a float num_segments",
        lambda: ranking.sigmoid_cross_entropy(
            Z3, Z3, segment_ids=np.zeros(3, np.int32), num_segments=2.0
        ),
        TypeError,
        "ranking.sigmoid_cross_entropy: `num_segments` must be a Python int, got 2.0 of type "
        "float.",
    ),
    Row(
        "ranking: num_segments without segment ids",
        lambda: ranking.sigmoid_cross_entropy(Z2, Z2, num_segments=2),
        ValueError,
        "ranking.sigmoid_cross_entropy: `num_segments` (2) is only used with `segment_ids` "
        "(packed layout); the dense layout takes the number of lists from the labels' leading "
        "dimensions.",
    ),
    Row(
        "ranking: scalar labels without segment ids",
        lambda: ranking.sigmoid_cross_entropy(1.0, 0.5),
        ValueError,
        "ranking.sigmoid_cross_entropy: dense `labels` must be [..., list_size] (a [list_size] "
        "vector is one list), got shape () and dtype float32; pass `segment_ids` and "
        "`num_segments` for packed items.",
    ),
    Row(
        "ranking: per-list weights of the wrong leading shape",
        lambda: ranking.sigmoid_cross_entropy(
            np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), weights=np.ones(3)
        ),
        ValueError,
        "ranking.sigmoid_cross_entropy: `weights` must have shape (), per item (2, 3, 4) or per "
        "list (2, 3) or (2, 3, 1), got shape (3,) and dtype float32.",
    ),
    Row(
        "sharded ranking: a bool num_segments",
        lambda: sx.sharding.reduce_ranking_loss_sharded(
            Z3, Z3, axis_name="d", segment_ids=np.zeros(3, np.int32), num_segments=True
        ),
        TypeError,
        "reduce_ranking_loss_sharded: `num_segments` must be a Python int, got the bool True.",
    ),
    Row(
        "sharded ranking: a negative num_segments",
        lambda: sx.sharding.reduce_ranking_loss_sharded(
            Z3, Z3, axis_name="d", segment_ids=np.zeros(3, np.int32), num_segments=-1
        ),
        ValueError,
        "reduce_ranking_loss_sharded: `num_segments` must be >= 0, got -1.",
    ),
    Row(
        "sigmoid_cross_entropy: unknown reduction",
        lambda: sx.sigmoid_cross_entropy(Z2, Z2, reduction="bogus"),
        ValueError,
        f"sigmoid_cross_entropy: unknown reduction 'bogus'; {VALID}",
    ),
    Row(
        "ranking: a non-bool where mask",
        lambda: ranking.sigmoid_cross_entropy(Z2, Z2, where=np.ones((2, 3))),
        TypeError,
        "ranking.sigmoid_cross_entropy: `where` must be a boolean mask (True = present), got "
        "shape (2, 3) and dtype float32.",
    ),
    Row(
        "ranking: dense weights of a bad shape",
        lambda: ranking.sigmoid_cross_entropy(Z2, Z2, weights=np.ones(3)),
        ValueError,
        "ranking.sigmoid_cross_entropy: `weights` must have shape (), per item (2, 3) or per "
        "list (2,) or (2, 1), got shape (3,) and dtype float32.",
    ),
    Row(
        "ranking: unknown reduction",
        lambda: ranking.sigmoid_cross_entropy(Z2, Z2, reduction="average"),
        ValueError,
        f"ranking.sigmoid_cross_entropy: unknown reduction 'average'; {RANKING_VALID}",
    ),
    Row(
        "ranking.pad: no list_size under jit",
        _jit_pad_without_list_size,
        ValueError,
        "ranking.pad: `list_size` is required inside jit/vmap (the longest list is not known at "
        "trace time); pass a static Python int.",
    ),
    Row(
        "ranking.pack: a scalar",
        lambda: ranking.pack(1.0),
        ValueError,
        "ranking.pack: `lists` must be a sequence of lists, got shape () and dtype float32.",
    ),
    Row(
        "ranking loss object: ragged lists of different lengths",
        lambda: ranking.SigmoidCrossEntropyLoss(ragged=True)([[1.0, 0.0], [0.0]], [[0.5], [0.1]]),
        ValueError,
        "ranking.SigmoidCrossEntropyLoss: ragged `y_true` and `y_pred` must have lists of equal "
        "lengths, got y_true lengths [2, 1] and y_pred lengths [1, 1].",
    ),
    Row(
        "ranking loss object: unknown reduction",
        lambda: ranking.SigmoidCrossEntropyLoss(reduction="average"),
        ValueError,
        f"ranking.SigmoidCrossEntropyLoss: unknown reduction 'average'; {RANKING_VALID}",
    ),
    # where, label smoothing and validate_inputs: one check each, for every function.
    Row(
        "where: not boolean",
        lambda: sx.sigmoid_cross_entropy_with_logits(Z3, Z3, where=np.ones(3)),
        TypeError,
        "sigmoid_cross_entropy_with_logits: `where` must be a boolean mask (True = present), "
        "got shape (3,) and dtype float32.",
    ),
    Row(
        "where: not broadcastable",
        lambda: sx.reduce_loss(Z3, where=np.ones((2,), bool)),
        ValueError,
        "reduce_loss: `where` of shape (2,) cannot be broadcast to the losses shape (3,).",
    ),
    Row(
        "label_smoothing above 1",
        lambda: sx.sigmoid_cross_entropy(Z2, Z2, label_smoothing=1.5),
        ValueError,
        "sigmoid_cross_entropy: `label_smoothing` must lie in [0, 1], got 1.5.",
    ),
    Row(
        "label_smoothing below 0 (Keras function)",
        lambda: sx.binary_crossentropy(Z2, Z2, from_logits=True, label_smoothing=-0.1),
        ValueError,
        "binary_crossentropy: `label_smoothing` must lie in [0, 1], got -0.1.",
    ),
    Row(
        "validate_inputs: concrete bad labels",
        lambda: sx.validate_inputs(np.array([0.0, 2.0])),
        ValueError,
        "validate_inputs: labels must lie in [0, 1]; found 1 bad label(s), first at flat index 1.",
    ),
    Row(
        "negative ASL gamma_neg",
        lambda: sx.asymmetric_loss(Z3, Z3, gamma_neg=-1.0),
        ValueError,
        "asymmetric_loss: `gamma_neg` must lie in [0, inf), got -1.",
    ),
    Row(
        "ASL clip of 1",
        lambda: sx.asymmetric_loss(Z3, Z3, clip=1.0),
        ValueError,
        "asymmetric_loss: `clip` must lie in [0, 1), got 1.",
    ),
    Row(
        "negative quality focal beta",
        lambda: sx.quality_focal_loss(Z3, Z3, beta=-2.0),
        ValueError,
        "quality_focal_loss: `beta` must lie in [0, inf), got -2.",
    ),
    Row(
        "Poly-1 epsilon below -1",
        lambda: sx.poly1_sigmoid_loss(Z3, Z3, epsilon=-2.0),
        ValueError,
        "poly1_sigmoid_loss: `epsilon` must lie in [-1, inf), got -2.",
    ),
    Row(
        "class-balanced beta of 1",
        lambda: sx.class_balanced_weights([3, 1], beta=1.0),
        ValueError,
        "class_balanced_weights: `beta` must lie in [0, 1), got 1.",
    ),
    Row(
        "negative class counts",
        lambda: sx.class_balanced_weights([3, -1]),
        ValueError,
        "class_balanced_weights: `counts` must lie in [0, inf), got -1.",
    ),
]


def _param(row: Row):
    marks = [pytest.mark.xfail(strict=True, reason=row.bug)] if row.bug else []
    return pytest.param(row, id=row.name, marks=marks)


@pytest.mark.parametrize("row", [_param(r) for r in TABLE])
def test_bad_input_gets_exact_error(row: Row):
    with pytest.raises(row.error) as err:
        row.call()
    assert type(err.value) is row.error
    assert str(err.value) == row.message


def render_markdown() -> str:
    lines = ["| bad input | exception | message |", "| --- | --- | --- |"]
    for row in TABLE:
        message = row.message.replace("|", "\\|")
        if row.bug:
            message += f" **(xfail: {row.bug.replace('|', '/')})**"
        lines.append(f"| {row.name} | `{row.error.__name__}` | {message} |")
    return "\n".join(lines) + "\n"


README = pathlib.Path(__file__).with_name("README.md")
BEGIN, END = "<!-- error table: begin -->\n", "<!-- error table: end -->\n"


def test_readme_shows_this_table():
    text = README.read_text()
    block = re.search(re.escape(BEGIN) + "(.*)" + re.escape(END), text, re.S)
    assert block is not None, "tests/README.md lacks the error-table markers"
    assert block.group(1) == render_markdown(), (
        "tests/README.md is out of date: run `python tests/test_error_table.py`"
    )


if __name__ == "__main__":
    text = README.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    README.write_text(text[:start] + render_markdown() + text[end:])
    print(render_markdown())
