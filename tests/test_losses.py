"""TF v1 `sigmoid_cross_entropy`, Keras `binary_crossentropy` and `BinaryCrossentropy`."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ref_loss, x64

import sigmoid_xent as sx

LABELS = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]], np.float32)
LOGITS = np.array([[-1.5, 2.0, 0.3], [0.7, -0.2, 4.0]], np.float32)
ELEMENT = ref_loss(LABELS, LOGITS)

# --------------------------------------------------------------------------- TF v1


def test_v1_default_is_sum_by_nonzero_weights():
    w = np.array([[0.0], [2.0]], np.float32)
    got = sx.sigmoid_cross_entropy(LABELS, LOGITS, weights=w)
    np.testing.assert_allclose(got, (2 * ELEMENT[1]).sum() / 3, rtol=1e-6)


def test_v1_nonzero_count_includes_negative_weights():
    w = np.array([[1.0, -1.0, 0.0]], np.float32)  # broadcast: 4 non-zero of 6
    got = sx.sigmoid_cross_entropy(LABELS, LOGITS, weights=w)
    np.testing.assert_allclose(got, (ELEMENT * w).sum() / 4, rtol=1e-6)


def test_v1_mean_divides_by_sum_of_broadcast_weights():
    w = np.array([[1.0], [3.0]], np.float32)
    got = sx.sigmoid_cross_entropy(LABELS, LOGITS, weights=w, reduction="MEAN")
    np.testing.assert_allclose(got, (ELEMENT * w).sum() / 12.0, rtol=1e-6)


@pytest.mark.parametrize("reduction", ["MEAN", "SUM_BY_NONZERO_WEIGHTS"])
def test_v1_zero_denominator_gives_zero(reduction):
    assert float(sx.sigmoid_cross_entropy(LABELS, LOGITS, 0.0, reduction=reduction)) == 0.0
    w = jnp.array([[1.0], [-1.0]])
    if reduction == "MEAN":  # weights summing to 0
        assert float(sx.sigmoid_cross_entropy(LABELS, LOGITS, w, reduction=reduction)) == 0.0


def test_v1_other_reductions_and_scalar_weight():
    np.testing.assert_allclose(
        sx.sigmoid_cross_entropy(LABELS, LOGITS, 2.0, reduction="SUM"), 2 * ELEMENT.sum(), rtol=1e-6
    )
    np.testing.assert_allclose(
        sx.sigmoid_cross_entropy(LABELS, LOGITS, 2.0, reduction="NONE"), 2 * ELEMENT, rtol=1e-6
    )
    np.testing.assert_allclose(
        sx.sigmoid_cross_entropy(LABELS, LOGITS, 2.0, reduction="SUM_OVER_BATCH_SIZE"),
        2 * ELEMENT.mean(),
        rtol=1e-6,
    )


def test_v1_label_smoothing():
    s = 0.2
    got = sx.sigmoid_cross_entropy(LABELS, LOGITS, label_smoothing=s, reduction="none")
    np.testing.assert_allclose(got, ref_loss(LABELS * (1 - s) + 0.5 * s, LOGITS), rtol=1e-6)


def test_v1_integer_labels_and_mixed_dtype_weights_and_smoothing():
    with x64():
        got = sx.sigmoid_cross_entropy(
            LABELS.astype(np.int32),
            jnp.asarray(LOGITS, jnp.bfloat16),
            weights=jnp.array([[1.0], [2.0]], jnp.float64),
            label_smoothing=np.float64(0.1),
        )
        assert got.dtype == jnp.bfloat16
        smooth = LABELS * 0.9 + 0.05
        x = np.asarray(jnp.asarray(LOGITS, jnp.bfloat16).astype(np.float32))
        want = (ref_loss(smooth, x) * [[1.0], [2.0]]).sum() / 6
        np.testing.assert_allclose(float(got), want, rtol=1e-2)


@pytest.mark.parametrize("shape", [(2, 1), (1, 3), (2, 3), (1, 1)])
def test_v1_weights_rank_rules_accepted(shape):
    w = np.ones(shape, np.float32)
    np.testing.assert_allclose(
        sx.sigmoid_cross_entropy(LABELS, LOGITS, w), ELEMENT.mean(), rtol=1e-6
    )


@pytest.mark.parametrize("shape", [(2,), (3,), (2, 2), (2, 3, 1), (6,)])
def test_v1_weights_rank_rules_rejected(shape):
    with pytest.raises(
        ValueError, match=rf"weights.*{tuple(shape)}".replace("(", r"\(").replace(")", r"\)")
    ):
        sx.sigmoid_cross_entropy(LABELS, LOGITS, np.ones(shape, np.float32))


def test_v1_none_arguments():
    for args in [(None, LOGITS), (LABELS, None)]:
        with pytest.raises(ValueError, match="None"):
            sx.sigmoid_cross_entropy(*args)
    with pytest.raises(ValueError, match="weights"):
        sx.sigmoid_cross_entropy(LABELS, LOGITS, weights=None)


def test_v1_shape_mismatch():
    with pytest.raises(ValueError, match=r"multi_class_labels.*\(2, 3\).*logits.*\(3, 2\)"):
        sx.sigmoid_cross_entropy(LABELS, LOGITS.T)


def test_v1_gradient_with_weights_and_smoothing():
    def f(z, x):
        return sx.sigmoid_cross_entropy(
            z, x, weights=jnp.array([[1.0], [0.5]]), label_smoothing=0.1
        )

    g = jax.grad(f, argnums=1)(LABELS, LOGITS)
    smooth = LABELS * 0.9 + 0.05
    sig = 1 / (1 + np.exp(-LOGITS.astype(np.float64)))
    np.testing.assert_allclose(g, (sig - smooth) * [[1.0], [0.5]] / 6, rtol=1e-5)


# --------------------------------------------------------------------------- Keras seeds

Y_TRUE = [[0.0, 1.0], [0.0, 0.0]]
Y_PRED = [[0.6, 0.4], [0.4, 0.6]]


def test_keras_seed_auto():
    np.testing.assert_allclose(sx.BinaryCrossentropy()(Y_TRUE, Y_PRED), 0.815, atol=5e-4)


def test_keras_seed_sample_weight():
    got = sx.BinaryCrossentropy()(Y_TRUE, Y_PRED, sample_weight=[1, 0])
    np.testing.assert_allclose(got, 0.458, atol=5e-4)


def test_keras_seed_sum():
    np.testing.assert_allclose(
        sx.BinaryCrossentropy(reduction="sum")(Y_TRUE, Y_PRED), 1.630, atol=5e-4
    )


def test_keras_seed_none():
    got = sx.BinaryCrossentropy(reduction=sx.Reduction.NONE)(Y_TRUE, Y_PRED)
    np.testing.assert_allclose(got, [0.916, 0.714], atol=5e-4)
    assert got.dtype == jnp.float32 and got.shape == (2,)


def test_keras_function_from_logits_and_smoothing_and_axis():
    z = np.array([[[0.0, 1.0], [1.0, 1.0]]], np.float32)
    x = np.array([[[2.0, -1.0], [0.5, 3.0]]], np.float32)
    s = 0.3
    got = sx.binary_crossentropy(z, x, from_logits=True, label_smoothing=s, axis=1)
    np.testing.assert_allclose(got, ref_loss(z * (1 - s) + 0.5 * s, x).mean(axis=1), rtol=1e-6)
    assert got.shape == (1, 2)
    with pytest.raises(ValueError, match="axis"):
        sx.binary_crossentropy(z, x, axis=3)


# --------------------------------------------------------------------------- Keras object


def test_sample_weight_rules():
    z = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0]], np.float32)
    x = np.array([[0.2, 0.9], [0.7, 0.4], [0.1, 0.5]], np.float32)
    per_sample = np.asarray(sx.binary_crossentropy(z, x))
    bce = sx.BinaryCrossentropy(reduction="sum")
    for w in ([1.0, 2.0, 0.0], [[1.0], [2.0], [0.0]], np.array([1.0, 2.0, 0.0])):
        np.testing.assert_allclose(bce(z, x, w), per_sample @ [1.0, 2.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(bce(z, x, 3.0), 3 * per_sample.sum(), rtol=1e-6)
    for bad in (np.ones(2), np.ones((3, 2)), np.ones((3, 1, 1))):
        with pytest.raises(ValueError, match="sample_weight"):
            bce(z, x, bad)


def test_sample_weight_batch_vector_on_higher_rank_losses():
    z = np.zeros((2, 3, 4), np.float32)
    x = np.linspace(-2, 2, 24, dtype=np.float32).reshape(2, 3, 4)
    per_sample = np.asarray(sx.binary_crossentropy(z, x, from_logits=True))  # (2, 3)
    bce = sx.BinaryCrossentropy(from_logits=True, reduction="none")
    np.testing.assert_allclose(bce(z, x, [2.0, 0.5]), per_sample * [[2.0], [0.5]], rtol=1e-6)
    np.testing.assert_allclose(bce(z, x, np.ones((2, 3, 1))), per_sample, rtol=1e-6)


def test_y_shapes_must_match():
    with pytest.raises(ValueError, match=r"y_true.*\(2, 1\).*y_pred.*\(2, 2\)"):
        sx.BinaryCrossentropy()(np.zeros((2, 1)), np.full((2, 2), 0.5))


def test_config_round_trip_and_hashable():
    bce = sx.BinaryCrossentropy(from_logits=True, label_smoothing=0.1, reduction="SUM", name="bce")
    config = bce.get_config()
    assert config == {
        "from_logits": True,
        "label_smoothing": 0.1,
        "axis": -1,
        "reduction": "SUM",
        "name": "bce",
    }
    assert type(config) is dict
    clone = sx.BinaryCrossentropy.from_config(config)
    assert clone == bce and hash(clone) == hash(bce)
    np.testing.assert_allclose(clone(Y_TRUE, Y_PRED), bce(Y_TRUE, Y_PRED))
    with pytest.raises(dataclasses.FrozenInstanceError):
        bce.from_logits = False  # type: ignore[misc]


def test_object_as_static_jit_argument_and_closure():
    @jax.jit
    def closed(z, x):
        return sx.BinaryCrossentropy(from_logits=True)(z, x)

    static = jax.jit(lambda loss, z, x: loss(z, x), static_argnums=0)
    obj = sx.BinaryCrossentropy(from_logits=True)
    z, x = jnp.asarray(LABELS), jnp.asarray(LOGITS)
    np.testing.assert_allclose(static(obj, z, x), closed(z, x), rtol=1e-6)
    np.testing.assert_allclose(closed(z, x), ELEMENT.mean(), rtol=1e-6)


def test_object_grad():
    obj = sx.BinaryCrossentropy(from_logits=True)
    g = jax.grad(lambda x: obj(LABELS, x))(jnp.asarray(LOGITS))
    np.testing.assert_allclose(g, (1 / (1 + np.exp(-LOGITS)) - LABELS) / 6, rtol=1e-5)


def test_unknown_reduction_fails_at_construction():
    with pytest.raises(ValueError, match="unknown reduction"):
        sx.BinaryCrossentropy(reduction="batchwise")


# --------------------------------------------------------------------------- ragged rows


def _ragged_reference(rows_true, rows_pred, from_logits, smoothing):
    """float64: each row's mean over its own length (tf.keras 2 on ragged tensors)."""
    out = []
    for z, p in zip(rows_true, rows_pred, strict=True):
        z = np.asarray(z, np.float64) * (1 - smoothing) + 0.5 * smoothing
        p = np.asarray(p, np.float64)
        if from_logits:
            losses = ref_loss(z, p)
        else:
            q = np.clip(p, 1e-7, 1 - 1e-7)
            losses = -(z * np.log(q + 1e-7) + (1 - z) * np.log(1 - q + 1e-7))
        out.append(losses.mean())
    return np.array(out)


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("reduction", ["auto", "sum", "none", "mean"])
@pytest.mark.parametrize("weights", [None, 2.0, [1.0, 0.0, 3.0], [[1.0], [0.5], [2.0]]])
def test_keras_object_ragged_rows(from_logits, reduction, weights):
    rows_true = [[0.0, 1.0], [1.0, 0.0, 0.0, 1.0], [0.5]]
    rows_pred = [[0.6, 0.4], [0.9, 0.2, 0.3, 0.7], [0.1]]
    if from_logits:
        rows_pred = [[2.0, -1.0], [3.0, -0.5, 0.2, 4.0], [-2.0]]
    bce = sx.BinaryCrossentropy(from_logits=from_logits, label_smoothing=0.1, reduction=reduction)
    got = bce(rows_true, rows_pred, sample_weight=None if weights is None else jnp.array(weights))
    per_row = _ragged_reference(rows_true, rows_pred, from_logits, 0.1)
    w = np.ones(3) if weights is None else np.broadcast_to(np.reshape(weights, -1), (3,))
    want = {
        "auto": (per_row * w).sum() / 3,
        "sum": (per_row * w).sum(),
        "none": per_row * w,
        "mean": (per_row * w).sum() / w.sum(),
    }[reduction]
    np.testing.assert_allclose(got, want, rtol=2e-6)


def test_keras_object_ragged_rows_jit_and_grad():
    bce = sx.BinaryCrossentropy(from_logits=True)
    rows_true = [jnp.array([0.0, 1.0]), jnp.array([1.0, 0.0, 1.0])]

    def f(a, b):
        return bce(rows_true, [a, b])

    a, b = jnp.array([0.5, -1.0]), jnp.array([2.0, 0.1, -3.0])
    np.testing.assert_allclose(jax.jit(f)(a, b), f(a, b), rtol=1e-6)
    ga, gb = jax.grad(f, argnums=(0, 1))(a, b)
    # d/dx of (mean of row k) / rows = (sigmoid(x) - z) / (rows * len_k)
    np.testing.assert_allclose(ga, (jax.nn.sigmoid(a) - rows_true[0]) / 4, rtol=1e-5)
    np.testing.assert_allclose(gb, (jax.nn.sigmoid(b) - rows_true[1]) / 6, rtol=1e-5)


@pytest.mark.parametrize(
    "y_true, y_pred, kwargs, pattern",
    [
        (
            [[0.0, 1.0], [1.0]],
            [[0.2, 0.4], [0.3, 0.1]],
            {},
            r"BinaryCrossentropy: ragged `y_true` and `y_pred` must have rows of equal lengths, "
            r"got y_true lengths \[2, 1\] and y_pred lengths \[2, 2\]",
        ),
        ([[0.0, 1.0], []], [[0.2, 0.4], []], {}, r"at least one value .* got row lengths \[2, 0\]"),
        (
            [[0.0, 1.0], [1.0]],
            [[0.2, 0.4], [0.3]],
            {"axis": 0},
            r"`axis` must be -1 \(or 1\), got 0",
        ),
    ],
)
def test_keras_object_ragged_errors(y_true, y_pred, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        sx.BinaryCrossentropy(**kwargs)(y_true, y_pred)
