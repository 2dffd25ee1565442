"""sigmoid_xent.ranking: TF-Ranking values, packed == dense, masking, transforms, errors."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ref_loss, x64
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.experimental import checkify

import sigmoid_xent as sx
from sigmoid_xent import ranking
from sigmoid_xent.reductions import LISTWISE

sce = ranking.sigmoid_cross_entropy
REDUCTIONS = [r.value for r in sx.Reduction if r in LISTWISE]
SCALAR_REDUCTIONS = [r for r in REDUCTIONS if r not in ("none", "per_list")]
WEIGHT_FORMS = ["none", "scalar", "item", "list"]

SEED_TRUE = [[1.0, 0.0], [0.0, 1.0, 0.0]]
SEED_PRED = [[0.6, 0.8], [0.5, 0.8, 0.4]]


# --------------------------------------------------------------------------- references


def ref_ranking(z_lists, x_lists, w_lists, reduction):
    """float64 numpy reference from ragged lists; ``w_lists`` per item (any value at padding)."""
    num_lists = len(z_lists)
    longest = max((len(z) for z in z_lists), default=0)
    per_num, per_den, items_l, items_w = [], [], [], []
    for z, x, w in zip(z_lists, x_lists, w_lists, strict=True):
        z, x, w = (np.asarray(a, np.float64).reshape(-1) for a in (z, x, w))
        valid = ~(z < 0)
        loss = ref_loss(np.where(valid, z, 0), np.where(valid, x, 0))
        w = np.where(valid, w, 0.0)
        items_l.append(loss)
        items_w.append(w)
        per_num.append(np.sum(w * loss))
        per_den.append(np.sum(w))
    loss = np.concatenate(items_l) if items_l else np.zeros(0)
    w = np.concatenate(items_w) if items_w else np.zeros(0)
    total = np.sum(w * loss)

    def div(a, b):
        return a / b if b != 0 else 0.0

    per_list = np.array([div(a, b) for a, b in zip(per_num, per_den, strict=True)])
    if reduction == "sum":
        return total
    if reduction == "mean":
        return div(total, np.sum(w))
    if reduction == "sum_by_nonzero_weights":
        return div(total, np.count_nonzero(w))
    if reduction == "sum_over_batch_size":
        return div(total, num_lists * longest)
    if reduction == "per_list":
        return per_list
    if reduction == "list_mean":
        keep = np.array(per_den) != 0
        return div(np.sum(per_list[keep]), np.count_nonzero(keep))
    raise AssertionError(reduction)


def dense_from_lists(lists, fill, list_size=None, dtype=np.float32):
    longest = max((len(r) for r in lists), default=0)
    size = longest if list_size is None else list_size
    out = np.full((len(lists), size), fill, dtype)
    for k, row in enumerate(lists):
        out[k, : len(row)] = row
    return out


# Fixed (lists, longest list, packed capacity) buckets keep the number of compilations small
# (each costs seconds): one list of each example is stretched to the bucket's longest length.
BUCKETS = [(4, 6, 24)]


@st.composite
def ragged_lists(draw):
    """Random lists: lengths (0 allowed), labels with padding (-1), hard, soft and graded."""
    num, longest, _ = draw(st.sampled_from(BUCKETS))
    lengths = draw(st.lists(st.integers(0, longest), min_size=num, max_size=num))
    lengths[draw(st.integers(0, num - 1))] = longest
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    pool = np.array([-1.0, 0.0, 1.0, 0.3, 0.8, 2.0], np.float32)
    z = [rng.choice(pool, size=n).astype(np.float32) for n in lengths]
    x = [rng.normal(scale=3.0, size=n).astype(np.float32) for n in lengths]
    w_item = [rng.choice([0.0, 0.5, 1.0, 2.0], size=n).astype(np.float32) for n in lengths]
    w_list = rng.choice([0.0, 1.0, 3.0], size=len(lengths)).astype(np.float32)
    return z, x, w_item, w_list


def weight_args(form, z, w_item, w_list):
    """(packed weights, dense weights, per-item weights for the reference)."""
    if form == "none":
        return None, None, [np.ones_like(a) for a in z]
    if form == "scalar":
        return 1.5, 1.5, [np.full_like(a, 1.5) for a in z]
    if form == "item":
        packed = np.concatenate(w_item)
        # NaN in the dense padding must never leak.
        return packed, dense_from_lists(w_item, np.nan), w_item
    return w_list, w_list, [np.full_like(a, w_list[k]) for k, a in enumerate(z)]


def assert_close(got, want, rtol=2e-5, atol=2e-6):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------- seeds


def test_seed_standalone_usage():
    got = sce(jnp.array([[1.0, 0.0]]), jnp.array([[0.6, 0.8]]))
    np.testing.assert_allclose(got, 0.8042943, rtol=1e-7)
    np.testing.assert_allclose(
        ranking.SigmoidCrossEntropyLoss()([[1.0, 0.0]], [[0.6, 0.8]]), 0.8042943, rtol=1e-7
    )


def test_seed_ragged_all_layouts():
    loss = ranking.SigmoidCrossEntropyLoss(ragged=True)
    np.testing.assert_allclose(loss(SEED_TRUE, SEED_PRED), 0.6444636, rtol=1e-7)
    dense = sce(
        jnp.asarray(dense_from_lists(SEED_TRUE, -1)), jnp.asarray(dense_from_lists(SEED_PRED, 0))
    )
    np.testing.assert_allclose(dense, 0.6444636, rtol=1e-7)
    z, ids = ranking.pack(SEED_TRUE)
    x, _ = ranking.pack(SEED_PRED)
    packed = sce(z, x, segment_ids=ids, num_segments=2)
    np.testing.assert_allclose(packed, 0.6444636, rtol=1e-7)
    # Padded slots count: sum / 6, not sum / 5.
    total = sce(z, x, segment_ids=ids, num_segments=2, reduction="sum")
    np.testing.assert_allclose(total / 6, 0.6444636, rtol=1e-6)
    assert abs(float(total) / 5 - 0.6444636) > 0.1
    assert_close(
        packed, ref_ranking(SEED_TRUE, SEED_PRED, [[1, 1], [1, 1, 1]], "sum_over_batch_size")
    )


def test_seed_ragged_under_jit_with_array_lists():
    loss = ranking.SigmoidCrossEntropyLoss(ragged=True)
    rows_z = [jnp.asarray(r) for r in SEED_TRUE]
    rows_x = [jnp.asarray(r) for r in SEED_PRED]
    got = jax.jit(loss)(rows_z, rows_x)
    np.testing.assert_allclose(got, 0.6444636, rtol=1e-7)
    grads = jax.grad(lambda xs: loss(rows_z, xs))(rows_x)
    assert [g.shape for g in grads] == [(2,), (3,)]
    np.testing.assert_allclose(grads[0][0], (jax.nn.sigmoid(0.6) - 1) / 6, rtol=1e-6)


# --------------------------------------------------------------------------- packed == dense


def fill_to(a, capacity, value):
    a = np.asarray(a)
    return np.concatenate([a, np.full((capacity - a.shape[0],), value, a.dtype)])


@functools.partial(jax.jit, static_argnames=("num_segments",))
def all_reductions(z, x, ids, w, num_segments):
    return {
        r: sce(z, x, segment_ids=ids, num_segments=num_segments, weights=w, reduction=r)
        for r in REDUCTIONS
    }


@jax.jit
def all_dense_reductions(z, x, w):
    return {r: sce(z, x, weights=w, reduction=r) for r in REDUCTIONS}


@functools.partial(jax.jit, static_argnames=("num_segments",))
def every_weight_form(z, x, ids, w_item, w_list, num_segments):
    """Packed losses for every weight form and reduction: one compilation per bucket."""
    forms = {"none": None, "scalar": 1.5, "item": w_item, "list": w_list}
    return {f: all_reductions(z, x, ids, w, num_segments=num_segments) for f, w in forms.items()}


@jax.jit
def every_weight_form_dense(z, x, w_item, w_list):
    forms = {"none": None, "scalar": 1.5, "item": w_item, "list": w_list}
    return {f: all_dense_reductions(z, x, w) for f, w in forms.items()}


@settings(max_examples=30)
@given(data=ragged_lists())
def test_packed_equals_dense_and_reference(data):
    z_lists, x_lists, w_item, w_list = data
    num = len(z_lists)
    capacity = next(c for k, _, c in BUCKETS if k == num)
    # One compilation serves a whole bucket: the items are filled up to a fixed capacity with
    # padding (label -1, NaN logits and weights) in one extra list, on both sides.
    fill = capacity - sum(len(r) for r in z_lists)
    z_lists = [*z_lists, np.full((fill,), -1.0, np.float32)]
    x_lists = [*x_lists, np.zeros((fill,), np.float32)]
    w_item = [*w_item, np.ones((fill,), np.float32)]
    w_list = np.append(w_list, np.float32(1.0))
    z, ids = ranking.pack(z_lists)
    x, _ = ranking.pack(x_lists)
    n = z.shape[0] - fill
    nan_fill = np.where(np.arange(capacity) < n, 1.0, np.nan).astype(np.float32)
    packed = every_weight_form(
        z, x * nan_fill, ids, np.concatenate(w_item) * nan_fill, w_list, num_segments=num + 1
    )
    # inf logits and NaN weights in the dense padding must never leak either.
    dense = every_weight_form_dense(
        dense_from_lists(z_lists, -1),
        np.where(dense_from_lists(z_lists, -1) < 0, np.inf, dense_from_lists(x_lists, np.inf)),
        dense_from_lists(w_item, np.nan),
        w_list,
    )
    lengths = np.array([len(r) for r in z_lists[:-1]] + [0])
    real = np.arange(dense["none"]["none"].shape[1]) < lengths[:, None]
    for form in WEIGHT_FORMS:
        w_ref = weight_args(form, z_lists, w_item, w_list)[2]
        for reduction in REDUCTIONS:
            got = np.asarray(packed[form][reduction])
            want = np.asarray(dense[form][reduction])
            assert np.all(np.isfinite(got)) and np.all(np.isfinite(want))
            if reduction == "none":
                np.testing.assert_array_equal(got[n:], 0.0)
                np.testing.assert_array_equal(want[~real], 0.0)
                np.testing.assert_allclose(got[:n], want[real], rtol=1e-6, atol=1e-7)
                continue
            np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
            assert_close(got, ref_ranking(z_lists, x_lists, w_ref, reduction))


def test_out_of_range_ids_under_jit_give_nan_everywhere():
    # Three packed lists summed as two: NaN, never a plausible finite number, under jit.
    z = jnp.array([1.0, 0.0, 0.0, 1.0, 0.0, 1.0])
    x = jnp.array([0.6, 0.8, 0.5, 0.8, 0.4, 0.3])
    ids = jnp.array([0, 0, 1, 1, 1, 2])
    for reduction, out in all_reductions(z, x, ids, None, num_segments=2).items():
        assert np.all(np.isnan(np.asarray(out))), reduction
    right = sce(z, x, segment_ids=ids, num_segments=3)
    np.testing.assert_allclose(right, 0.4912374, rtol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        sce(z, x, segment_ids=ids, num_segments=2)


def test_packed_eager_equals_pad_then_dense():
    z_lists = [[1.0, -1.0, 0.0], [], [0.5, 2.0], [0.0]]
    x_lists = [[0.3, 8.0, -1.0], [], [1.5, -0.5], [4.0]]
    z, ids = ranking.pack(z_lists)
    x, _ = ranking.pack(x_lists)
    packed = all_reductions(z, x, ids, None, num_segments=4)
    dense = all_dense_reductions(
        ranking.pad(z, ids, 4), ranking.pad(x, ids, 4, fill_value=np.nan), None
    )
    packed["none"] = ranking.pad(packed["none"], ids, 4, fill_value=0)
    for reduction in REDUCTIONS:
        np.testing.assert_allclose(packed[reduction], dense[reduction], rtol=1e-6)
    np.testing.assert_allclose(
        sce(z, x, segment_ids=ids, num_segments=4), dense["sum_over_batch_size"], rtol=1e-6
    )


@pytest.mark.parametrize("form", WEIGHT_FORMS)
def test_dense_per_list_weight_forms_agree(form):
    z_lists, x_lists = SEED_TRUE, SEED_PRED
    z = jnp.asarray(dense_from_lists(z_lists, -1))
    x = jnp.asarray(dense_from_lists(x_lists, 0))
    w_list = np.array([2.0, 0.5], np.float32)
    w_packed, w_dense, w_ref = weight_args(form, z_lists, [np.ones(2), np.ones(3)], w_list)
    for reduction in SCALAR_REDUCTIONS:
        got = sce(z, x, weights=w_dense, reduction=reduction)
        assert_close(got, ref_ranking(z_lists, x_lists, w_ref, reduction))
        if form == "list":
            col = sce(z, x, weights=w_list[:, None], reduction=reduction)
            np.testing.assert_allclose(got, col, rtol=1e-7)


def test_dense_batch_vector_is_per_list_even_when_batch_equals_list_size():
    z = jnp.array([[1.0, 0.0], [0.0, -1.0]])
    x = jnp.array([[0.6, 0.8], [0.5, 0.3]])
    w = jnp.array([2.0, 0.0])  # TF-Ranking would apply this per position
    got = sce(z, x, weights=w, reduction="sum")
    want = 2.0 * (ref_loss(1.0, 0.6) + ref_loss(0.0, 0.8))
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_packed_vector_of_both_lengths_is_per_item():
    z = jnp.array([1.0, 0.0])
    x = jnp.array([0.6, 0.8])
    ids = jnp.array([0, 1])
    got = sce(
        z, x, segment_ids=ids, num_segments=2, weights=jnp.array([1.0, 0.0]), reduction="none"
    )
    np.testing.assert_allclose(got, [ref_loss(1.0, 0.6), 0.0], rtol=1e-6)


# --------------------------------------------------------------------------- reductions


def test_reduction_names_are_case_insensitive_with_tf_spellings():
    z = jnp.asarray(dense_from_lists(SEED_TRUE, -1))
    x = jnp.asarray(dense_from_lists(SEED_PRED, 0))
    pairs = [
        ("AUTO", "sum_over_batch_size"),
        ("SUM_OVER_BATCH_SIZE", "sum_over_batch_size"),
        ("SUM_OVER_NONZERO_WEIGHTS", "sum_by_nonzero_weights"),
        ("SUM_BY_NONZERO_WEIGHTS", "sum_by_nonzero_weights"),
        ("MEAN", "mean"),
        ("Sum", "sum"),
        ("NONE", "none"),
        (None, "none"),
        ("PER_LIST", "per_list"),
        ("List_Mean", "list_mean"),
        (sx.Reduction.SUM, "sum"),
    ]
    for given_name, canonical in pairs:
        np.testing.assert_array_equal(
            sce(z, x, reduction=given_name), sce(z, x, reduction=canonical)
        )


def test_per_list_and_list_mean_semantics():
    # List 0: two items weighted 1 and 3; list 1: all padding; list 2: one item; list 3 empty.
    z = jnp.array([1.0, 0.0, -1.0, -1.0, 0.0])
    x = jnp.array([0.5, -1.0, 7.0, 2.0, 2.0])
    ids = jnp.array([0, 0, 1, 1, 2])
    w = jnp.array([1.0, 3.0, 1.0, 1.0, 1.0])
    l0, l1, l4 = ref_loss(1, 0.5), ref_loss(0, -1.0), ref_loss(0, 2.0)
    per_list = sce(z, x, segment_ids=ids, num_segments=4, weights=w, reduction="per_list")
    np.testing.assert_allclose(per_list, [(l0 + 3 * l1) / 4, 0.0, l4, 0.0], rtol=1e-6)
    list_mean = sce(z, x, segment_ids=ids, num_segments=4, weights=w, reduction="list_mean")
    np.testing.assert_allclose(list_mean, ((l0 + 3 * l1) / 4 + l4) / 2, rtol=1e-6)
    # Per-list weights include or exclude lists; they do not re-weight them.
    by_list = functools.partial(sce, z, x, segment_ids=ids, num_segments=4, reduction="list_mean")
    np.testing.assert_allclose(
        by_list(weights=jnp.array([1.0, 1.0, 5.0, 1.0])),
        by_list(weights=jnp.array([1.0, 1.0, 1.0, 1.0])),
        rtol=1e-7,
    )
    np.testing.assert_allclose(by_list(weights=jnp.array([0.0, 1.0, 5.0, 1.0])), l4, rtol=1e-6)
    # auto: 4 lists (the empty one too) x longest list 2 (padding items count in its length).
    auto = sce(z, x, segment_ids=ids, num_segments=4, weights=w)
    np.testing.assert_allclose(auto, (l0 + 3 * l1 + l4) / 8, rtol=1e-6)
    mean = sce(z, x, segment_ids=ids, num_segments=4, weights=w, reduction="mean")
    np.testing.assert_allclose(mean, (l0 + 3 * l1 + l4) / 5, rtol=1e-6)
    nonzero = sce(
        z,
        x,
        segment_ids=ids,
        num_segments=4,
        weights=w.at[0].set(0.0),
        reduction="sum_by_nonzero_weights",
    )
    np.testing.assert_allclose(nonzero, (3 * l1 + l4) / 2, rtol=1e-6)


def test_dense_auto_counts_padding_columns_no_list_reaches():
    z = jnp.array([[1.0, 0.0, -1.0, -1.0]])
    x = jnp.array([[0.6, 0.8, 0.0, 0.0]])
    np.testing.assert_allclose(sce(z, x), 2 * 0.8042943 / 4, rtol=1e-6)


def test_all_padding_and_empty_segments():
    z = jnp.full((3,), -1.0)
    x = jnp.array([jnp.nan, jnp.inf, -jnp.inf])
    ids = jnp.array([0, 0, 2])

    def f(x, z):
        out = all_reductions(z, x, ids, None, num_segments=4)
        return sum(jnp.sum(v) for v in out.values()), out

    (value, out), grads = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(x, z)
    assert float(value) == 0.0
    for reduction in REDUCTIONS:
        np.testing.assert_array_equal(out[reduction], 0.0)
    for g in grads:
        np.testing.assert_array_equal(g, 0.0)
    dense = all_dense_reductions(jnp.full((2, 3), -1.0), jnp.full((2, 3), jnp.nan), None)
    for reduction in REDUCTIONS:
        np.testing.assert_array_equal(dense[reduction], 0.0)
    # No items at all; no lists at all.
    for num in (2, 0):
        empty = all_reductions(
            jnp.zeros(0), jnp.zeros(0), jnp.zeros(0, jnp.int32), None, num_segments=num
        )
        for reduction in REDUCTIONS:
            assert empty[reduction].shape == (
                (num,) if reduction == "per_list" else (0,) if reduction == "none" else ()
            )
            np.testing.assert_array_equal(empty[reduction], 0.0)


def test_one_item_lists():
    z = jnp.array([1.0, 0.0, 1.0])
    x = jnp.array([2.0, -1.0, 0.0])
    ids = jnp.arange(3)
    loss = ref_loss(np.asarray(z), np.asarray(x))
    np.testing.assert_allclose(sce(z, x, segment_ids=ids, num_segments=3), loss.mean(), rtol=1e-6)
    np.testing.assert_allclose(
        sce(z, x, segment_ids=ids, num_segments=3, reduction="per_list"), loss, rtol=1e-6
    )
    np.testing.assert_allclose(
        sce(z[:, None], x[:, None], reduction="list_mean"), loss.mean(), rtol=1e-6
    )


def test_graded_labels_are_used_as_given_and_can_give_a_negative_loss():
    got = sce(jnp.array([[2.0]]), jnp.array([[5.0]]))
    np.testing.assert_allclose(got, ref_loss(2.0, 5.0), rtol=1e-6)
    assert float(got) < 0


def test_nan_label_is_not_padding():
    got = sce(jnp.array([[jnp.nan, 1.0]]), jnp.array([[0.0, 1.0]]))
    assert np.isnan(got)


# --------------------------------------------------------------------------- padding never leaks


@pytest.mark.parametrize("layout", ["dense", "packed"])
def test_nonfinite_padding_never_leaks_into_value_or_gradients(layout):
    z = jnp.array([[1.0, 0.0, -1.0, -jnp.inf], [0.0, 1.0, 0.0, 0.5]])
    x = jnp.array([[0.6, 0.8, jnp.nan, jnp.inf], [0.5, 0.8, -jnp.inf, jnp.nan]])
    w = jnp.array([[1.0, 2.0, jnp.nan, jnp.inf], [1.0, 1.0, jnp.nan, 3.0]])
    # where=False on item [1, 3] (a valid label) must act exactly like padding.
    where = jnp.array([[True, True, True, True], [True, True, False, False]])
    padding = ~(where & (z >= 0))
    clean_z = jnp.where(padding, -1.0, z)
    clean_x = jnp.where(padding, 0.0, x)
    clean_w = jnp.where(padding, 0.0, w)
    if layout == "dense":

        def losses(x, z, w, where):
            return {r: sce(z, x, weights=w, where=where, reduction=r) for r in REDUCTIONS}
    else:
        ids = jnp.array([0, 0, 0, 0, 1, 1, 1, 1])

        def losses(x, z, w, where):
            return {
                r: sce(
                    z.ravel(),
                    x.ravel(),
                    segment_ids=ids,
                    num_segments=2,
                    weights=w.ravel(),
                    where=where.ravel(),
                    reduction=r,
                )
                for r in REDUCTIONS
            }

    def totals(x, z, w, where):
        return {r: jnp.sum(v) for r, v in losses(x, z, w, where).items()}

    values = jax.jit(totals)(x, z, w, where)
    grads = jax.jit(jax.jacrev(totals, argnums=(0, 1, 2)))(x, z, w, where)
    clean = jax.jit(totals)(clean_x, clean_z, clean_w, jnp.ones_like(where))
    for reduction in REDUCTIONS:
        assert np.isfinite(values[reduction])
        np.testing.assert_allclose(values[reduction], clean[reduction], rtol=1e-6)
        for g in grads[reduction]:
            assert np.all(np.isfinite(g))
            np.testing.assert_array_equal(np.asarray(g)[np.asarray(padding)], 0.0)


# --------------------------------------------------------------------------- gradients


def ref_scalar(z_dense, x_dense, w_dense, reduction):
    z_lists = [list(r) for r in np.asarray(z_dense)]
    x_lists = [list(r) for r in np.asarray(x_dense)]
    w_lists = [list(r) for r in np.asarray(w_dense)]
    return ref_ranking(z_lists, x_lists, w_lists, reduction)


@pytest.mark.parametrize("layout", ["dense", "packed"])
def test_gradients_match_central_differences_float64(layout):
    rng = np.random.default_rng(0)
    with x64():
        z = rng.uniform(0.1, 0.9, size=(3, 4))
        z[0, 3] = z[2, 2] = z[2, 3] = -1.0
        x = rng.normal(size=(3, 4)) * 2
        w = rng.uniform(0.5, 2.0, size=(3, 4))
        zj, xj, wj = jnp.asarray(z), jnp.asarray(x), jnp.asarray(w)
        ids = jnp.repeat(jnp.arange(3), 4)

        @jax.jit
        def all_red(x, z, w):
            if layout == "dense":
                return {r: sce(z, x, weights=w, reduction=r) for r in SCALAR_REDUCTIONS}
            return {
                r: sce(
                    z.ravel(),
                    x.ravel(),
                    segment_ids=ids,
                    num_segments=3,
                    weights=w.ravel(),
                    reduction=r,
                )
                for r in SCALAR_REDUCTIONS
            }

        values = all_red(xj, zj, wj)
        jac = jax.jit(jax.jacrev(all_red, argnums=(0, 1, 2)))(xj, zj, wj)
        eps = 1e-6
        for reduction in SCALAR_REDUCTIONS:
            assert values[reduction].dtype == jnp.float64
            np.testing.assert_allclose(
                values[reduction], ref_scalar(z, x, w, reduction), rtol=1e-12
            )
            # Independent float64 numpy central differences w.r.t. logits, labels and weights.
            for which, arr in enumerate((x, z, w)):
                fd = np.zeros_like(arr)
                for idx in np.ndindex(arr.shape):
                    if which == 1 and z[idx] < 0:
                        continue  # a label crossing 0 changes padding: no derivative there
                    args = []
                    for sign in (1, -1):
                        moved = [x.copy(), z.copy(), w.copy()]
                        moved[which][idx] += sign * eps
                        args.append(ref_scalar(moved[1], moved[0], moved[2], reduction))
                    fd[idx] = (args[0] - args[1]) / (2 * eps)
                np.testing.assert_allclose(jac[reduction][which], fd, rtol=1e-6, atol=1e-9)


def test_second_derivatives_through_the_core():
    z = jnp.array([1.0, 0.0, 1.0, -1.0])
    x = jnp.array([0.3, -0.2, 1.5, jnp.nan])
    ids = jnp.array([0, 0, 1, 1])
    hess = jax.hessian(lambda x: sce(z, x, segment_ids=ids, num_segments=2, reduction="list_mean"))(
        x
    )
    assert np.all(np.isfinite(hess))
    s = jax.nn.sigmoid(x[:3])
    np.testing.assert_allclose(
        jnp.diag(hess)[:3], s * (1 - s) * jnp.array([0.25, 0.25, 0.5]), rtol=1e-5
    )


# --------------------------------------------------------------------------- transforms


def make_rows(num_rows, n, num_segments, seed):
    rng = np.random.default_rng(seed)
    z = rng.choice([-1.0, 0.0, 1.0, 0.5], size=(num_rows, n)).astype(np.float32)
    x = rng.normal(size=(num_rows, n)).astype(np.float32)
    ids = np.sort(rng.integers(0, num_segments, size=(num_rows, n)), axis=1).astype(np.int32)
    w = rng.uniform(0.0, 2.0, size=(num_rows, num_segments)).astype(np.float32)
    return z, x, ids, w


def test_vmap_over_packed_rows_equals_python_loop():
    z, x, ids, w = make_rows(4, 9, 3, seed=1)

    def row(z, x, ids, w):
        return all_reductions(z, x, ids, w, num_segments=3)

    batched = jax.jit(jax.vmap(row))(z, x, ids, w)
    looped = [row(z[r], x[r], ids[r], w[r]) for r in range(4)]
    # vmap over a batch of dense layouts, too.
    dense = jax.vmap(all_dense_reductions)(
        z.reshape(4, 3, 3), x.reshape(4, 3, 3), w.reshape(4, 3, 1)
    )
    dense_loop = [
        all_dense_reductions(z[r].reshape(3, 3), x[r].reshape(3, 3), w[r].reshape(3, 1))
        for r in range(4)
    ]
    for reduction in REDUCTIONS:
        want = np.stack([out[reduction] for out in looped])
        np.testing.assert_allclose(batched[reduction], want, rtol=1e-6, atol=1e-7)
        want = np.stack([out[reduction] for out in dense_loop])
        np.testing.assert_allclose(dense[reduction], want, rtol=1e-6, atol=1e-7)


def test_vmap_rows_gradients_match_loop():
    z, x, ids, _ = make_rows(3, 8, 4, seed=2)

    def row(x, z, ids):
        return sce(z, x, segment_ids=ids, num_segments=4)

    batched = jax.jit(jax.vmap(jax.grad(row)))(x, z, ids)
    grad = jax.jit(jax.grad(row))
    looped = np.stack([grad(x[r], z[r], ids[r]) for r in range(3)])
    np.testing.assert_allclose(batched, looped, rtol=1e-6, atol=1e-8)


def test_validate_inputs_names_out_of_range_ids_under_checkify():
    z = jnp.array([1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    x = jnp.array([0.6, 0.8, 0.5, 0.8, 0.4, 9.0, -9.0])
    ids = jnp.array([0, 0, 1, 1, 1, 2, -1])  # the last two lie outside [0, 2)
    # validate_inputs under checkify reports them.
    check = jax.jit(
        checkify.checkify(
            lambda z, x, ids: sx.validate_inputs(z, x, segment_ids=ids, num_segments=2)
        )
    )
    err, _ = check(z, x, ids)
    assert err.get() is not None and "segment ids" in err.get()


def test_grad_wrt_weights_and_labels_jitted():
    z, ids = ranking.pack(SEED_TRUE)
    x, _ = ranking.pack(SEED_PRED)

    @jax.jit
    def f(x, z, w):
        return sce(z, x, segment_ids=ids, num_segments=2, weights=w, reduction="mean")

    gx, gz, gw = jax.grad(f, argnums=(0, 1, 2))(x, z, jnp.array([1.0, 2.0]))
    for g in (gx, gz, gw):
        assert np.all(np.isfinite(g))
    np.testing.assert_allclose(gz, -x * jnp.array([1, 1, 2, 2, 2]) / 8, rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_16_bit_inputs_computed_in_float32(dtype):
    z = jnp.asarray(dense_from_lists(SEED_TRUE, -1))
    x = jnp.asarray(dense_from_lists(SEED_PRED, 0))
    got = all_dense_reductions(z.astype(dtype), x.astype(dtype), None)
    want = all_dense_reductions(z, x.astype(dtype).astype(jnp.float32), None)
    for reduction in REDUCTIONS:
        assert got[reduction].dtype == dtype
        np.testing.assert_allclose(
            np.asarray(got[reduction], np.float32), want[reduction], rtol=1e-2
        )
    np.testing.assert_allclose(
        np.float32(sce(z.astype(dtype), x.astype(dtype))), 0.6444636, rtol=1e-2
    )


def test_float64_stays_float64_and_int_labels_cast():
    with x64():
        z = jnp.array([[1, 0, -1], [0, 1, 0]])
        x = jnp.asarray(dense_from_lists(SEED_PRED, 0, dtype=np.float64))
        got = sce(z, x)
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(
            got,
            ref_ranking(SEED_TRUE, SEED_PRED, [[1, 1], [1, 1, 1]], "sum_over_batch_size"),
            rtol=1e-14,
        )
    got32 = sce(jnp.array([[True, False]]), jnp.array([[0.6, 0.8]]))
    np.testing.assert_allclose(got32, 0.8042943, rtol=1e-7)


# --------------------------------------------------------------------------- pack / pad


MAX_LISTS, MAX_LEN, CAPACITY = 6, 5, 30
# One compilation for every example: fixed capacity, the unused tail dropped (ids out of range).
jit_pad = jax.jit(ranking.pad, static_argnames=("num_segments", "list_size", "fill_value"))


@settings(max_examples=50)
@given(
    lengths=st.lists(st.integers(0, MAX_LEN), min_size=0, max_size=MAX_LISTS),
    seed=st.integers(0, 2**31 - 1),
)
def test_pack_and_pad_are_inverse(lengths, seed):
    rng = np.random.default_rng(seed)
    lists = [rng.normal(size=n).astype(np.float32) for n in lengths]
    values, ids = ranking.pack(lists)
    n = sum(lengths)
    assert values.shape == ids.shape == (n,)
    assert ids.dtype == jnp.int32
    np.testing.assert_array_equal(ids, np.repeat(np.arange(len(lengths)), lengths))
    perm = np.concatenate([rng.permutation(n), np.arange(n, CAPACITY)])
    padded_values = np.concatenate([values, np.full(CAPACITY - n, np.nan, np.float32)])
    padded_ids = np.concatenate([ids, np.full(CAPACITY - n, MAX_LISTS, np.int32)])
    for order in (np.arange(CAPACITY), perm):  # sorted ids, then shuffled ids
        dense = np.asarray(
            jit_pad(
                padded_values[order],
                padded_ids[order],
                num_segments=MAX_LISTS,
                list_size=MAX_LEN + 1,
                fill_value=7.0,
            )
        )
        assert dense.shape == (MAX_LISTS, MAX_LEN + 1)
        for k in range(MAX_LISTS):
            # Items keep their order of appearance within each list.
            row = padded_values[order][padded_ids[order] == k]
            np.testing.assert_array_equal(dense[k, : len(row)], row)
            np.testing.assert_array_equal(dense[k, len(row) :], 7.0)
    dense = np.asarray(
        jit_pad(
            padded_values, padded_ids, num_segments=MAX_LISTS, list_size=MAX_LEN + 1, fill_value=7.0
        )
    )
    again, again_ids = ranking.pack([dense[k, : len(row)] for k, row in enumerate(lists)])
    np.testing.assert_array_equal(again, values)
    np.testing.assert_array_equal(again_ids, ids)


def test_pack_and_pad_details():
    values, ids = ranking.pack([[1, 2], [], [3]])
    assert values.dtype == jnp.int32
    np.testing.assert_array_equal(ranking.pad(values, ids, 3), [[1, 2], [-1, -1], [3, -1]])
    # Trailing item dimensions.
    feats, fids = ranking.pack([np.ones((2, 3)), np.zeros((0, 3)), 2 * np.ones((1, 3))])
    assert feats.shape == (3, 3)
    assert ranking.pad(feats, fids, 3, fill_value=0).shape == (3, 2, 3)
    # Truncation to list_size.
    np.testing.assert_array_equal(ranking.pad(values, ids, 3, list_size=1), [[1], [-1], [3]])
    # All lists empty.
    empty, empty_ids = ranking.pack([[], []])
    assert empty.shape == empty_ids.shape == (0,)
    assert ranking.pad(empty, empty_ids, 2).shape == (2, 0)
    # jit: list_size given; pack of traced arrays; vmap of pad.
    padded = jax.jit(functools.partial(ranking.pad, num_segments=3, list_size=2))(values, ids)
    np.testing.assert_array_equal(padded, [[1, 2], [-1, -1], [3, -1]])
    packed = jax.jit(lambda a, b: ranking.pack([a, b]))(jnp.ones(2), jnp.zeros(3))
    np.testing.assert_array_equal(packed[1], [0, 0, 1, 1, 1])
    rows = jax.vmap(lambda v, i: ranking.pad(v, i, 2, list_size=3))(
        jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), jnp.array([[0, 1, 1], [1, 1, 1]])
    )
    np.testing.assert_array_equal(rows, [[[1, -1, -1], [2, 3, -1]], [[-1, -1, -1], [4, 5, 6]]])
    # Gradients flow through pad to the values.
    g = jax.grad(lambda v: jnp.sum(ranking.pad(v, ids, 3, fill_value=0) ** 2))(
        values.astype(jnp.float32)
    )
    np.testing.assert_array_equal(g, 2 * np.asarray(values))


def test_pad_errors():
    values, ids = ranking.pack([[1.0, 2.0], [3.0]])
    with pytest.raises(ValueError, match="list_size.*required inside jit"):
        jax.jit(lambda v, i: ranking.pad(v, i, 2))(values, ids)
    with pytest.raises(ValueError, match=r"segment_ids.*\[0, 1\)"):
        ranking.pad(values, ids, 1)
    with pytest.raises(ValueError, match="segment_ids.*integer"):
        ranking.pad(values, ids.astype(jnp.float32), 2)
    with pytest.raises(ValueError, match="num_segments.*required"):
        ranking.pad(values, ids, None)
    with pytest.raises(TypeError, match="list_size"):
        ranking.pad(values, ids, 2, list_size=2.5)
    with pytest.raises(ValueError, match="values"):
        ranking.pad(jnp.float32(1.0), ids, 2)
    with pytest.raises(ValueError, match="lists\\[1\\]"):
        ranking.pack([[1.0], 2.0])
    with pytest.raises(ValueError, match="trailing shape"):
        ranking.pack([np.ones((1, 2)), np.ones((1, 3))])


# --------------------------------------------------------------------------- errors


def test_errors_name_the_argument():
    z, ids = ranking.pack(SEED_TRUE)
    x, _ = ranking.pack(SEED_PRED)
    with pytest.raises(ValueError, match=r"segment_ids.*integer.*float32"):
        sce(z, x, segment_ids=ids.astype(jnp.float32), num_segments=2)
    with pytest.raises(ValueError, match=r"segment_ids.*\[0, 2\).*first 5 at index 4"):
        sce(z, x, segment_ids=ids.at[4].set(5), num_segments=2)
    with pytest.raises(ValueError, match=r"segment_ids.*first -1 at index 0"):
        sce(z, x, segment_ids=ids.at[0].set(-1), num_segments=2)
    with pytest.raises(ValueError, match="num_segments.*required with `segment_ids`"):
        sce(z, x, segment_ids=ids)
    with pytest.raises(ValueError, match="num_segments.*static.*traced"):
        jax.jit(lambda n: sce(z, x, segment_ids=ids, num_segments=n))(2)
    with pytest.raises(TypeError, match="num_segments.*int"):
        sce(z, x, segment_ids=ids, num_segments=2.0)
    with pytest.raises(ValueError, match="num_segments.*>= 0"):
        sce(z, x, segment_ids=ids, num_segments=-1)
    with pytest.raises(ValueError, match="num_segments.*only used with `segment_ids`"):
        sce(z[None], x[None], num_segments=1)
    with pytest.raises(ValueError, match=r"segment_ids.*\(5,\).*\(4,\)"):
        sce(z, x, segment_ids=ids[:4], num_segments=2)
    with pytest.raises(ValueError, match=r"labels.*\(5,\).*logits.*\(4,\)"):
        sce(z, x[:4], segment_ids=ids, num_segments=2)
    with pytest.raises(ValueError, match="1-D.*vmap"):
        sce(z[None], x[None], segment_ids=ids[None], num_segments=2)
    with pytest.raises(ValueError, match=r"\[\.\.\., list_size\].*segment_ids"):
        sce(z[0], x[0])
    with pytest.raises(ValueError, match=r"weights.*per list \(2, 3\) or \(2, 3, 1\)"):
        sce(jnp.zeros((2, 3, 4)), jnp.zeros((2, 3, 4)), weights=jnp.ones((3,)))
    with pytest.raises(ValueError, match=r"weights.*\(5,\).*\(2,\).*\(3,\)"):
        sce(z, x, segment_ids=ids, num_segments=2, weights=jnp.ones(3))
    with pytest.raises(ValueError, match=r"weights.*\(2,\) or \(2, 1\).*\(1, 3\)"):
        sce(jnp.zeros((2, 3)), jnp.zeros((2, 3)), weights=jnp.ones((1, 3)))
    with pytest.raises(TypeError, match="where.*bool"):
        sce(z, x, segment_ids=ids, num_segments=2, where=jnp.ones(5))
    with pytest.raises(ValueError, match=r"where.*\(5,\)"):
        sce(z, x, segment_ids=ids, num_segments=2, where=jnp.ones(4, bool))
    with pytest.raises(ValueError, match="unknown reduction 'avg'.*list_mean"):
        sce(z, x, segment_ids=ids, num_segments=2, reduction="avg")
    with pytest.raises(ValueError, match="unknown reduction"):
        sce(z, x, segment_ids=ids, num_segments=2, reduction="mean_with_sample_weight")
    with pytest.raises(TypeError, match="logits"):
        sce(z, jnp.ones(5, jnp.int32), segment_ids=ids, num_segments=2)
    with pytest.raises(ValueError, match="labels.*None"):
        sce(None, x, segment_ids=ids, num_segments=2)


# --------------------------------------------------------------------------- loss object


def test_loss_object_config_hash_and_static_jit():
    loss = ranking.SigmoidCrossEntropyLoss(reduction="SUM_OVER_NONZERO_WEIGHTS", name="sce")
    config = loss.get_config()
    assert config == {"reduction": "SUM_OVER_NONZERO_WEIGHTS", "name": "sce", "ragged": False}
    again = ranking.SigmoidCrossEntropyLoss.from_config(config)
    assert again == loss and hash(again) == hash(loss)
    assert ranking.SigmoidCrossEntropyLoss().get_config() == {
        "reduction": "auto",
        "name": None,
        "ragged": False,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        loss.reduction = "sum"
    with pytest.raises(ValueError, match="unknown reduction"):
        ranking.SigmoidCrossEntropyLoss(reduction="avg")

    @functools.partial(jax.jit, static_argnums=0)
    def step(loss_fn, z, x):
        return loss_fn(z, x)

    z = jnp.asarray(dense_from_lists(SEED_TRUE, -1))
    x = jnp.asarray(dense_from_lists(SEED_PRED, 0))
    np.testing.assert_allclose(step(ranking.SigmoidCrossEntropyLoss(), z, x), 0.6444636, rtol=1e-7)
    np.testing.assert_allclose(step(again, z, x), sce(z, x, reduction="sum_by_nonzero_weights"))


def test_loss_object_ragged_weights_and_none():
    loss = ranking.SigmoidCrossEntropyLoss(reduction="none", ragged=True)
    out = loss(SEED_TRUE, SEED_PRED)
    assert out.shape == (2, 3)
    assert float(out[0, 2]) == 0.0
    np.testing.assert_allclose(out[1], ref_loss([0, 1, 0], [0.5, 0.8, 0.4]), rtol=1e-6)
    w_item = [[1.0, 2.0], [0.0, 1.0, 3.0]]
    mean = ranking.SigmoidCrossEntropyLoss(reduction="mean", ragged=True)
    assert_close(
        mean(SEED_TRUE, SEED_PRED, w_item), ref_ranking(SEED_TRUE, SEED_PRED, w_item, "mean")
    )
    per_list = [[2.0], [0.5]]
    w_ref = [[2.0, 2.0], [0.5, 0.5, 0.5]]
    for reduction in SCALAR_REDUCTIONS:
        obj = ranking.SigmoidCrossEntropyLoss(reduction=reduction, ragged=True)
        assert_close(
            obj(SEED_TRUE, SEED_PRED, per_list), ref_ranking(SEED_TRUE, SEED_PRED, w_ref, reduction)
        )
        assert_close(
            obj(SEED_TRUE, SEED_PRED, [2.0, 0.5]),
            ref_ranking(SEED_TRUE, SEED_PRED, w_ref, reduction),
        )
    # Packed through the loss object.
    z, ids = ranking.pack(SEED_TRUE)
    x, _ = ranking.pack(SEED_PRED)
    packed = ranking.SigmoidCrossEntropyLoss()(z, x, segment_ids=ids, num_segments=2)
    np.testing.assert_allclose(packed, 0.6444636, rtol=1e-7)
    with pytest.raises(ValueError, match=r"y_true lengths \[2, 3\].*y_pred lengths \[2, 2\]"):
        ranking.SigmoidCrossEntropyLoss(ragged=True)(SEED_TRUE, [[0.6, 0.8], [0.5, 0.8]])
    with pytest.raises(ValueError, match="sample_weight"):
        ranking.SigmoidCrossEntropyLoss(ragged=True)(SEED_TRUE, SEED_PRED, [[1.0, 2.0], [1.0]])
    with pytest.raises(ValueError, match="segment_ids.*ragged"):
        ranking.SigmoidCrossEntropyLoss(ragged=True)(z, x, segment_ids=ids, num_segments=2)


def test_public_exports():
    assert "ranking" in sx.__all__
    assert sx.ranking is ranking
    assert set(ranking.__all__) == {
        "SigmoidCrossEntropyLoss",
        "pack",
        "pad",
        "sigmoid_cross_entropy",
    }


def test_seed_values_bit_exact_in_every_layout():
    # TF-Ranking prints 0.6444636 and 0.8042943: the correctly rounded values. Each layout must
    # give exactly these floats, not a neighbour (a flat fused sum gives 0.64446354).
    want = np.float32(0.6444636)
    loss = ranking.SigmoidCrossEntropyLoss(ragged=True)
    assert loss([[1.0, 0.0], [0.0, 1.0, 0.0]], [[0.6, 0.8], [0.5, 0.8, 0.4]]) == want
    dense_z = jnp.array([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    dense_x = jnp.array([[0.6, 0.8, 0.0], [0.5, 0.8, 0.4]])
    assert jax.jit(ranking.sigmoid_cross_entropy)(dense_z, dense_x) == want
    packed = ranking.sigmoid_cross_entropy(
        jnp.array([1.0, 0.0, 0.0, 1.0, 0.0]),
        jnp.array([0.6, 0.8, 0.5, 0.8, 0.4]),
        segment_ids=jnp.array([0, 0, 1, 1, 1]),
        num_segments=2,
    )
    assert packed == want
    assert ranking.SigmoidCrossEntropyLoss()([[1.0, 0.0]], [[0.6, 0.8]]) == np.float32(0.8042943)


_REDUCTIONS = ["auto", "sum", "mean", "sum_by_nonzero_weights", "per_list", "list_mean", "none"]
_LEADS = [(), (3,), (2, 3), (2, 1, 3)]
_WEIGHTS = ["none", "per_list", "per_list_1", "per_item"]
# Every pair of (reduction, weights), (reduction, lead) and (lead, weights) once: 28 calls
# instead of the 112 of the full product (each a compile of its own).
_PAIRWISE = [
    (_LEADS[(i + j) % len(_LEADS)], reduction, weights)
    for i, reduction in enumerate(_REDUCTIONS)
    for j, weights in enumerate(_WEIGHTS)
]


@pytest.mark.parametrize("lead,reduction,weights", _PAIRWISE)
def test_dense_lists_of_any_rank_equal_the_2d_call(lead, reduction, weights):
    # [..., list_size]: every leading index is one list (a [list_size] vector is one list),
    # per-list weights [...] or [..., 1]; the result equals the [lists, list_size] call on the
    # reshaped arrays, with `none` / `per_list` keeping the leading shape.
    rng = np.random.default_rng(len(lead))
    size = 5
    shape = lead + (size,)
    labels = rng.integers(-1, 2, size=shape).astype(np.float32)
    logits = rng.normal(size=shape).astype(np.float32)
    lists = int(np.prod(lead, dtype=int))
    w = {
        "none": None,
        "per_list": rng.uniform(0.5, 2, size=lead).astype(np.float32),
        "per_list_1": rng.uniform(0.5, 2, size=lead + (1,)).astype(np.float32),
        "per_item": rng.uniform(0.5, 2, size=shape).astype(np.float32),
    }[weights]
    if w is not None and w.ndim == 0:  # one list: a per-list weight is a scalar
        w = np.float32(w)
    w2 = None if w is None else np.reshape(w, (lists, -1) if w.ndim == len(shape) else (lists,))
    got = ranking.sigmoid_cross_entropy(labels, logits, weights=w, reduction=reduction)
    want = ranking.sigmoid_cross_entropy(
        labels.reshape(lists, size), logits.reshape(lists, size), weights=w2, reduction=reduction
    )
    if reduction == "none":
        want = want.reshape(shape)
    elif reduction == "per_list":
        want = want.reshape(lead)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
