"""`Reduction` and `reduce_loss` against numpy, with TF's and Keras' rules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import x64
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import sigmoid_xent as sx
from sigmoid_xent.reductions import ELEMENTWISE

LOSSES = np.array([[0.5, 1.5, 2.0], [3.0, 0.25, 1.0]], np.float32)


def np_reduce(losses, weights, reduction):
    losses = np.asarray(losses, np.float64)
    given = np.asarray(1.0 if weights is None else weights, np.float64)
    w = np.broadcast_to(given, losses.shape)
    total = (losses * w).sum()

    def div(a, b):
        return a / b if b != 0 else 0.0

    return {
        "none": losses * w,
        "sum": total,
        "mean": div(total, w.sum()),
        "sum_over_batch_size": div(total, losses.size),
        "sum_by_nonzero_weights": div(total, np.count_nonzero(w)),
        "mean_with_sample_weight": div(total, given.sum() if weights is not None else losses.size),
    }[reduction]


WEIGHTS = [
    None,
    2.0,
    np.array([[1.0], [0.0]], np.float32),
    np.array([[1.0, -2.0, 0.0]], np.float32),
    np.array([[0.5, 0.0, 3.0], [1.0, 1.0, -1.0]], np.float32),
    np.zeros((2, 1), np.float32),
]


@pytest.mark.parametrize("reduction", [r.value for r in sx.Reduction if r in ELEMENTWISE])
@pytest.mark.parametrize("w_index", range(len(WEIGHTS)))
def test_matches_numpy(reduction, w_index):
    weights = WEIGHTS[w_index]
    got = sx.reduce_loss(LOSSES, weights, reduction)
    np.testing.assert_allclose(got, np_reduce(LOSSES, weights, reduction), rtol=1e-6)
    assert got.dtype == jnp.float32


def test_sum_by_nonzero_weights_counts_broadcast_and_negative_weights():
    # [[1], [-1]] broadcast to 2x3: six non-zero weights, negative ones included.
    got = sx.reduce_loss(LOSSES, jnp.array([[1.0], [-1.0]]), "SUM_BY_NONZERO_WEIGHTS")
    np.testing.assert_allclose(got, (LOSSES[0].sum() - LOSSES[1].sum()) / 6, rtol=1e-6)


def test_mean_with_sample_weight_divides_by_unbroadcast_weights():
    w = jnp.array([[2.0], [1.0]])
    got = sx.reduce_loss(LOSSES, w, "mean_with_sample_weight")
    np.testing.assert_allclose(got, (2 * LOSSES[0].sum() + LOSSES[1].sum()) / 3.0, rtol=1e-6)
    # TF v1's `mean` divides by the broadcast weights instead.
    got = sx.reduce_loss(LOSSES, w, "mean")
    np.testing.assert_allclose(got, (2 * LOSSES[0].sum() + LOSSES[1].sum()) / 9.0, rtol=1e-6)


@pytest.mark.parametrize(
    "reduction",
    ["mean", "sum_by_nonzero_weights", "mean_with_sample_weight", "sum_over_batch_size"],
)
def test_zero_denominator_gives_zero_and_finite_gradients(reduction):
    w = jnp.zeros((2, 1))

    def f(losses, w):
        return sx.reduce_loss(losses, w, reduction)

    assert float(f(jnp.asarray(LOSSES), w)) == 0.0
    gl, gw = jax.grad(f, argnums=(0, 1))(jnp.asarray(LOSSES), w)
    assert np.all(np.isfinite(gl)) and np.all(np.isfinite(gw))
    assert float(sx.reduce_loss(jnp.zeros((0, 3)), None, reduction)) == 0.0


@pytest.mark.parametrize(
    "name, member",
    [
        ("SUM_BY_NONZERO_WEIGHTS", "sum_by_nonzero_weights"),
        ("sum_over_nonzero_weights", "sum_by_nonzero_weights"),
        ("SUM_OVER_NONZERO_WEIGHTS", "sum_by_nonzero_weights"),
        ("SUM_OVER_BATCH_SIZE", "sum_over_batch_size"),
        ("AUTO", "sum_over_batch_size"),
        ("auto", "sum_over_batch_size"),
        ("MEAN", "mean"),
        ("NONE", "none"),
        (None, "none"),
        ("Sum", "sum"),
        (sx.Reduction.MEAN_WITH_SAMPLE_WEIGHT, "mean_with_sample_weight"),
    ],
)
def test_names_case_insensitive_with_aliases(name, member):
    assert sx.Reduction.parse(name) == member
    assert sx.Reduction.parse(name) is sx.Reduction(member)


def test_unknown_reduction_lists_valid_names():
    with pytest.raises(ValueError, match="sum_over_batch_size.*mean_with_sample_weight"):
        sx.reduce_loss(LOSSES, None, "average")
    with pytest.raises(ValueError, match="unknown reduction"):
        sx.Reduction.parse(3)


def test_weights_not_broadcastable_names_both_shapes():
    with pytest.raises(ValueError, match=r"weights.*\(3, 1\).*\(2, 3\)"):
        sx.reduce_loss(LOSSES, jnp.ones((3, 1)))
    with pytest.raises(ValueError, match=r"\(2, 3, 1\)"):
        sx.reduce_loss(LOSSES, jnp.ones((2, 3, 1)))  # would grow the losses


def test_integer_losses_rejected():
    with pytest.raises(TypeError, match="losses"):
        sx.reduce_loss(jnp.ones(3, jnp.int32))


def test_bfloat16_accumulates_in_float32():
    losses = jnp.full((4096,), 1.001, jnp.bfloat16)  # bf16 sum would stall at 256
    got = sx.reduce_loss(losses, None, "sum")
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(float(got), 4096 * float(losses[0]), rtol=1e-2)


def test_float64_stays_float64():
    with x64():
        losses = jnp.asarray(LOSSES, jnp.float64) + 1e-12
        for r in ELEMENTWISE:
            assert sx.reduce_loss(losses, jnp.ones((2, 1), jnp.float32), r).dtype == jnp.float64
        np.testing.assert_allclose(
            sx.reduce_loss(losses, None, "sum"), LOSSES.astype(np.float64).sum() + 6e-12, rtol=1e-15
        )


@pytest.mark.parametrize(
    "reduction", [r.value for r in sx.Reduction if r in ELEMENTWISE and r != "none"]
)
def test_gradient_is_the_weights_over_the_denominator(reduction):
    # (jit and vmap of every reduction: tests/test_robustness_losses.py)
    w = jnp.array([[1.0], [2.0]])
    f = lambda losses, w: sx.reduce_loss(losses, w, reduction)  # noqa: E731
    gl = jax.grad(f)(jnp.asarray(LOSSES), w)
    want = (
        np.broadcast_to(np.asarray(w), LOSSES.shape)
        / {
            "sum": 1.0,
            "mean": 9.0,
            "sum_over_batch_size": 6.0,
            "sum_by_nonzero_weights": 6.0,
            "mean_with_sample_weight": 3.0,
        }[reduction]
    )
    np.testing.assert_allclose(gl, want, rtol=1e-6)


@given(
    hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=1, max_dims=3, max_side=4),
        elements=st.floats(0, 100, width=32),
    ),
    st.sampled_from([r.value for r in sx.Reduction if r in ELEMENTWISE]),
    st.floats(-2, 2, width=32),
)
def test_property_matches_numpy(losses, reduction, scale):
    weights = np.where(np.arange(losses.shape[-1]) % 2 == 0, scale, 0.0).astype(np.float32)
    got = sx.reduce_loss(losses, weights, reduction)
    want = np_reduce(losses, weights, reduction)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
