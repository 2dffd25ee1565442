"""Robustness campaign (issue 11): the ranking API under garbage, shuffles and the whole range.

Goes beyond tests/test_ranking.py (packed == dense on ragged data, fixed padding examples): here
hypothesis puts NaN/inf/huge garbage in random padded and ``where=False`` slots of both layouts
and checks that values are bit-identical to clean inputs and every gradient is finite and 0
there; shuffles packed items; measures accuracy against a longdouble reference over the whole
logit range; and covers lists that are all padding. Shapes are fixed (dense [4, 6], packed 24
items with out-of-range fillers that jit drops), so each layout compiles once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_robustness import LD, assert_within, dtype_scope, fuzz, ld, logits, r_bce, ulp

import sigmoid_xent as sx
from sigmoid_xent import ranking
from sigmoid_xent.reductions import LISTWISE

sce = ranking.sigmoid_cross_entropy
REDUCTIONS = [r.value for r in sx.Reduction if r in LISTWISE]
LISTS, LONGEST, CAPACITY = 4, 6, 24

GARBAGE = [np.nan, np.inf, -np.inf, 3e38, -3e38]


def _all(z, x, w_item, w_list, where, ids=None, num_lists=LISTS):
    """Every reduction for per-item and per-list weights (dense, or packed with ``ids``)."""
    out = {}
    for form, w in (("item", w_item), ("list", w_list)):
        for r in REDUCTIONS:
            if ids is None:
                out[form, r] = sce(z, x, weights=w, where=where, reduction=r)
            else:
                out[form, r] = sce(
                    z,
                    x,
                    segment_ids=ids,
                    num_segments=num_lists,
                    weights=w,
                    where=where,
                    reduction=r,
                )
    return out


def _total(*args, **kwargs):
    return sum(jnp.sum(v) for v in _all(*args, **kwargs).values())


DENSE = jax.jit(lambda *a: (_all(*a), jax.grad(_total, argnums=(0, 1, 2, 3))(*a)))
# Packed cases hold one more list, id LISTS, that only fills the items up to CAPACITY (padding).
_packed = functools.partial(_all, num_lists=LISTS + 1)
# ``auto_scale`` turns the packed auto denominator into the dense one, for the gradients.


def _packed_total(z, x, wi, wl, wh, ids, auto_scale):
    out = _packed(z, x, wi, wl, wh, ids)
    return sum(
        jnp.sum(v) * (auto_scale if k[1] == "sum_over_batch_size" else 1) for k, v in out.items()
    )


PACKED = jax.jit(
    lambda z, x, wi, wl, wh, ids, auto_scale=1.0: (
        _packed(z, x, wi, wl, wh, ids),
        jax.grad(_packed_total, argnums=(0, 1, 2, 3))(z, x, wi, wl, wh, ids, auto_scale),
    )
)


@st.composite
def ranking_case(draw, dtype="float32", limit=1e4):
    """Dense [4, 6] lists: lengths 0..6 (one list of 6), labels hard/soft/graded/padding,
    ``where=False`` on some real items, garbage (NaN/inf/huge) in every padded slot; real
    logits within +-``limit`` (beyond, d/dlabels = -x w overflows: inf is then right)."""
    lengths = draw(st.lists(st.integers(0, LONGEST), min_size=LISTS, max_size=LISTS))
    lengths[draw(st.integers(0, LISTS - 1))] = LONGEST
    real = np.arange(LONGEST) < np.array(lengths)[:, None]
    z = draw(
        hnp.arrays(
            np.float64,
            (LISTS, LONGEST),
            elements=st.sampled_from([-1.0, -np.inf, 0.0, 1.0, 0.3, 0.8, 2.0]),
        )
    )
    if draw(st.booleans(), "all padding"):
        z[:] = -1.0
    x = draw(logits(dtype, LISTS * LONGEST)).astype(np.float64).reshape(LISTS, LONGEST)
    x = np.clip(x, -limit, limit)
    w_item = draw(
        hnp.arrays(
            np.float64, (LISTS, LONGEST), elements=st.sampled_from([0.0, 0.5, 1.0, 2.0, -1.0])
        )
    )
    w_list = draw(hnp.arrays(np.float64, LISTS, elements=st.sampled_from([0.0, 1.0, 3.0])))
    where = draw(hnp.arrays(bool, (LISTS, LONGEST), elements=st.booleans()))
    where |= draw(st.booleans())  # often no where=False at all
    padding = ~real | (z < 0) | ~where
    garbage = st.sampled_from(GARBAGE)
    x = np.where(padding, draw(hnp.arrays(np.float64, x.shape, elements=garbage)), x)
    w_item = np.where(padding, draw(hnp.arrays(np.float64, x.shape, elements=garbage)), w_item)
    # Labels of where=False slots may be anything, NaN included; beyond a list's end, padding.
    z = np.where(~where & real, draw(hnp.arrays(np.float64, x.shape, elements=garbage)), z)
    z = np.where(real, z, -1.0)
    return z, x, w_item, w_list, where, real, padding


def clean(z, x, w_item, padding):
    return (np.where(padding, -1.0, z), np.where(padding, 0.0, x), np.where(padding, 0.0, w_item))


def pack_case(z, x, w_item, where, real, seed):
    """The dense case as shuffled packed items, filled up to CAPACITY with garbage padding in
    one extra list (id LISTS)."""
    k, j = np.nonzero(real)
    rng = np.random.default_rng(seed)
    order = rng.permutation(k.size)
    k, j = k[order], j[order]
    fill = CAPACITY - k.size
    ids = np.concatenate([k, np.full(fill, LISTS)]).astype(np.int32)
    take = lambda a, f: np.concatenate([a[k, j], np.full(fill, f)])  # noqa: E731
    return (take(z, -1.0), take(x, np.nan), take(w_item, np.nan), take(where, True), ids, k, j)


def f32(*arrays):
    return [jnp.asarray(np.asarray(a, np.float64), jnp.float32) for a in arrays]


@fuzz(ci_examples=30)
@given(case=ranking_case(), seed=st.integers(0, 2**16))
def test_garbage_in_padding_never_leaks_dense_and_packed(case, seed):
    """NaN/inf/huge logits, NaN/inf weights and any labels in padded or where=False slots: the
    value of every reduction is bit-identical to clean inputs, and the gradients w.r.t. labels,
    logits and item weights are finite everywhere and exactly 0 there (list weights finite);
    the packed layout (items shuffled, dropped fillers) equals the dense one."""
    z, x, w_item, w_list, where, real, padding = case
    values, grads = DENSE(*f32(z, x, w_item, w_list), jnp.asarray(where))
    cz, cx, cw = clean(z, x, w_item, padding)
    clean_values, _ = DENSE(*f32(cz, cx, cw, w_list), jnp.ones_like(jnp.asarray(where)))
    for key, v in values.items():
        np.testing.assert_array_equal(v, clean_values[key], err_msg=str(key))
        assert np.all(np.isfinite(v)), key  # real logits are bounded: finite
    for name, g in zip(("labels", "logits", "item weights", "list weights"), grads, strict=False):
        g = np.asarray(g)
        assert np.all(np.isfinite(g)), name
        if name != "list weights":
            np.testing.assert_array_equal(g[padding], 0.0, err_msg=name)

    pz, px, pw, pwhere, ids, k, j = pack_case(z, x, w_item, where, real, seed)
    n = k.size
    # The extra list counts as a list, and is the longest if it holds most items.
    auto_scale = ((LISTS + 1) * max(LONGEST, CAPACITY - n)) / (LISTS * LONGEST)
    pvalues, pgrads = PACKED(
        *f32(pz, px, pw, np.append(w_list, 1.0)),
        jnp.asarray(pwhere),
        jnp.asarray(ids),
        jnp.float32(auto_scale),
    )
    for key, v in pvalues.items():
        v, d = np.asarray(v), np.asarray(values[key])
        if key[1] == "per_list":
            np.testing.assert_array_equal(v[LISTS:], 0.0)
            v = v[:LISTS]
        elif key[1] == "sum_over_batch_size":
            v = v * auto_scale
        if key[1] == "none":
            np.testing.assert_array_equal(v[n:], 0.0)
            np.testing.assert_allclose(v[:n], d[k, j], rtol=1e-6, atol=1e-37, err_msg=str(key))
        else:
            # Item weights of both signs can cancel a sum to (about) 0: absolute slack of a few
            # float32 roundings of the real items' weighted losses (each <= |x| + 1).
            with np.errstate(over="ignore", invalid="ignore"):
                terms = np.abs(w_item) * (np.abs(x) + 1) * max(1.0, float(np.max(np.abs(w_list))))
            mag = np.sum(np.where(real & np.isfinite(terms), terms, 0))
            atol = min(4e-6 * max(1.0, float(mag)), 1e30)  # never a vacuous (inf) tolerance
            np.testing.assert_allclose(v, d, rtol=4e-6, atol=atol, err_msg=str(key))
    for name, g, dg in zip(("labels", "logits", "item weights"), pgrads, grads, strict=False):
        g = np.asarray(g)
        assert np.all(np.isfinite(g)), name
        np.testing.assert_array_equal(g[n:], 0.0, err_msg=name)
        # A gradient entry can be a cancelling difference (d mean / d w = (loss - mean) / sum w):
        # absolute slack relative to the largest entry.
        want_g = np.asarray(dg)[k, j]
        g_atol = 1e-6 * float(np.max(np.abs(want_g), initial=0.0)) + 1e-30
        np.testing.assert_allclose(g[:n], want_g, rtol=1e-5, atol=g_atol, err_msg=name)


def r_ranking(z, x, w, reduction):
    """TF-Ranking's reductions (label < 0 is padding) in longdouble on dense [lists, slots]."""
    z, x, w = ld(z), ld(x), ld(w)
    valid = ~(z < 0)
    w = np.where(valid, w, LD(0))
    loss = np.where(valid, r_bce(np.where(valid, z, 0), np.where(valid, x, 0)), LD(0))
    total = (w * loss).sum()

    def div(a, b):
        return a / b if b != 0 else LD(0)

    per_num, per_den = (w * loss).sum(axis=1), w.sum(axis=1)
    per_list = np.array([div(a, b) for a, b in zip(per_num, per_den, strict=False)], LD)
    return {
        "sum": total,
        "mean": div(total, w.sum()),
        "sum_over_batch_size": div(total, LD(z.size)),
        "sum_by_nonzero_weights": div(total, LD(np.count_nonzero(w))),
        "per_list": per_list,
        "list_mean": div(per_list[per_den != 0].sum(), LD(np.count_nonzero(per_den))),
        "none": w * loss,
    }[reduction]


DENSE64 = jax.jit(lambda z, x, w: {r: sce(z, x, weights=w, reduction=r) for r in REDUCTIONS})


@fuzz(ci_examples=25)
@given(case=ranking_case(dtype="float64", limit=np.inf), use_x64=st.booleans())
def test_accuracy_against_longdouble_over_the_whole_range(case, use_x64):
    """Every reduction (float32 and float64) against the longdouble reference, logits over the
    whole range: within a few ulps of the sum of the magnitudes of its terms."""
    z, x, w_item, _, _, real, padding = case
    dtype = "float64" if use_x64 else "float32"
    z, x, w = clean(z, x, w_item, padding)
    if dtype == "float32":
        x = np.clip(x, -3e38, 3e38).astype(np.float32).astype(np.float64)
    with dtype_scope(dtype):
        got = DENSE64(*(jnp.asarray(a, jnp.dtype(dtype)) for a in (z, x, w)))
    for reduction in REDUCTIONS:
        want = r_ranking(z, x, w, reduction)
        scale = r_ranking(z, x, np.abs(w), reduction)
        if reduction in ("mean", "list_mean", "per_list"):  # signed weights: magnitudes only
            continue
        terms = 4 + 2 * LISTS * LONGEST
        err = np.abs(ld(np.asarray(got[reduction])) - want) / ulp(scale, dtype)
        ok = np.isfinite(want) & (np.abs(scale) < LD(float(jnp.finfo(dtype).max)) / 64)
        # Graded labels above 1 make a loss negative (-x (z - 1) at large x): then the weighted
        # sum of magnitudes is no scale for the error any more.
        ok &= bool(np.all((z[real] >= 0) & (z[real] <= 1)))
        assert_within(
            f"ranking {reduction} {dtype} (ulps of the term magnitudes)",
            np.where(ok, err, 0),
            terms,
        )
    positive = np.abs(w)
    got = (
        DENSE64(*(jnp.asarray(a, jnp.float32) for a in (z, x, positive)))
        if dtype == "float32"
        else None
    )
    if got is not None:
        for reduction in ("mean", "per_list", "list_mean"):
            want = r_ranking(z, x, positive, reduction)
            ok = np.isfinite(want) & (np.abs(want) < LD(1e36))
            err = np.abs(ld(np.asarray(got[reduction])) - want) / ulp(want, "float32")
            assert_within(
                f"ranking {reduction} float32 (ulps)", np.where(ok, err, 0), 4 + 2 * LISTS * LONGEST
            )


def test_everything_padding_gives_zero_with_finite_gradients():
    """All lists all padding (labels < 0, where=False, empty segments): 0 for every reduction,
    gradients finite and 0, in both layouts, even with garbage in every slot."""
    z = np.full((LISTS, LONGEST), -1.0)
    z[1] = -np.inf
    x = np.resize(np.array(GARBAGE), (LISTS, LONGEST))
    w = np.resize(np.array(GARBAGE[::-1]), (LISTS, LONGEST))
    where = np.ones((LISTS, LONGEST), bool)
    where[2] = False
    z[2] = np.nan  # where=False: NaN labels are padding too
    values, grads = DENSE(*f32(z, x, w, np.ones(LISTS)), jnp.asarray(where))
    for key, v in values.items():
        np.testing.assert_array_equal(v, 0.0, err_msg=str(key))
    for g in grads[:3]:
        np.testing.assert_array_equal(g, 0.0)
    ids = np.full(CAPACITY, LISTS, np.int32)  # every item padding, most segments empty
    ids[:3] = [0, 0, 3]
    pz = np.full(CAPACITY, -1.0)
    values, grads = PACKED(
        *f32(pz, np.full(CAPACITY, np.nan), np.full(CAPACITY, np.inf), np.ones(LISTS + 1)),
        jnp.ones(CAPACITY, bool),
        jnp.asarray(ids),
    )
    for key, v in values.items():
        np.testing.assert_array_equal(v, 0.0, err_msg=str(key))
    for g in grads[:3]:
        np.testing.assert_array_equal(g, 0.0)


def test_ranking_mixed_precision_and_16_bit():
    """Int/float64/bfloat16 labels and float16/float64 weights with any float logits."""
    z = np.array([[1, 0, -1], [0, 1, 0]])
    x = np.array([[0.6, 0.8, 0.0], [0.5, 0.8, 0.4]])
    with jax.enable_x64(True):
        want = float(sce(jnp.asarray(z, jnp.float64), jnp.asarray(x, jnp.float64)))
        for xd, zd, wd in [("bfloat16", "int32", "float64"), ("float32", "float16", "bfloat16")]:
            args = (jnp.asarray(z, zd), jnp.asarray(x, xd), jnp.ones((2, 1), wd))
            out = sce(args[0], args[1], weights=args[2])
            assert out.dtype == jnp.dtype(xd)
            np.testing.assert_allclose(float(out), want, rtol=8 * float(jnp.finfo(xd).eps))
            gx, gw = jax.grad(
                lambda x, w, z=args[0]: sce(z, x, weights=w).astype(jnp.float32), argnums=(0, 1)
            )(args[1], args[2])
            assert gx.dtype == jnp.dtype(xd) and gw.dtype == jnp.dtype(wd)
            assert np.all(np.isfinite(np.asarray(gx, np.float64)))


def test_one_item_lists_and_graded_labels_against_reference():
    z = np.array([[2.0] + [-1.0] * 5, [0.0] + [-1.0] * 5, [1.0] + [-1.0] * 5, [0.3] * 6])
    x = np.array(
        [
            [40.0] + [0.0] * 5,
            [-90.0] + [0.0] * 5,
            [3e38] + [0.0] * 5,
            [-1.0, 0.0, 1.0, 30.0, -30.0, 80.0],
        ]
    )
    with jax.enable_x64(True):
        got = DENSE64(jnp.asarray(z), jnp.asarray(x), jnp.ones_like(jnp.asarray(x)))
    for reduction in REDUCTIONS:
        want = np.asarray(r_ranking(z, x, np.ones_like(x), reduction), np.float64)
        np.testing.assert_allclose(got[reduction], want, rtol=1e-13, atol=1e-300)
    assert float(got["per_list"][0]) < 0  # graded label 2 at a large logit: a negative loss


def test_packed_rows_vmap_with_garbage():
    """[batch, n] rows of packed items under vmap, with garbage in padded items."""
    z = jnp.array([[1.0, 0.0, -1.0, 0.5], [0.0, -1.0, 1.0, -1.0]])
    x = jnp.array([[0.3, -2.0, jnp.nan, 1.0], [jnp.inf, 4.0, -1.0, jnp.nan]])
    ids = jnp.array([[0, 0, 1, 2], [2, 1, 0, 2]])
    z = z.at[1, 0].set(-1.0)  # the inf logit is padding

    def row(z, x, ids):
        return sce(z, x, segment_ids=ids, num_segments=3, reduction="per_list")

    got = jax.jit(jax.vmap(row))(z, x, ids)
    grads = jax.jit(jax.vmap(jax.grad(lambda x, z, ids: row(z, x, ids).sum())))(x, z, ids)
    assert np.all(np.isfinite(got)) and np.all(np.isfinite(grads))
    np.testing.assert_array_equal(np.asarray(grads)[[0, 1, 1], [2, 0, 3]], 0.0)
    want0 = [
        float(
            r_ranking(np.array([[1.0, 0.0]]), np.array([[0.3, -2.0]]), np.ones((1, 2)), "per_list")[
                0
            ]
        ),
        0.0,
        float(r_bce(LD(0.5), LD(1.0))),
    ]
    np.testing.assert_allclose(got[0], want0, rtol=1e-6)
    assert sx.ranking is ranking


PAD = jax.jit(lambda v, ids: ranking.pad(v, ids, 3, list_size=4, fill_value=-7.0))


@fuzz(ci_examples=25)
@given(
    ids=hnp.arrays(np.int32, 12, elements=st.integers(-1, 3)),
    values=hnp.arrays(np.float32, 12, elements=st.floats(-5, 5, width=32)),
)
def test_pad_under_jit_against_numpy(ids, values):
    """pad with unsorted ids: items keep their order within a list; ids outside [0, 3) and items
    beyond list_size are dropped (inside jit); padding slots get fill_value; pack inverts it."""
    got = np.asarray(PAD(values, ids))
    want = np.full((3, 4), -7.0, np.float32)
    filled = [0, 0, 0]
    for v, k in zip(values, ids, strict=True):
        if 0 <= k < 3 and filled[k] < 4:
            want[k, filled[k]] = v
            filled[k] += 1
    np.testing.assert_array_equal(got, want)
    rows = [got[k, : filled[k]] for k in range(3)]
    packed, seg = ranking.pack(rows)
    kept = [v for k in range(3) for v in values[ids == k][:4]]
    np.testing.assert_array_equal(packed, np.asarray(kept, np.float32).reshape(-1))
    np.testing.assert_array_equal(seg, np.repeat(np.arange(3), filled))


def test_loss_object_ragged_with_garbage_in_padding():
    """SigmoidCrossEntropyLoss(ragged=True): label -1 items with NaN/inf logits and NaN
    weights add nothing, value and gradients stay finite, for every reduction."""
    y_true = [[1.0, -1.0, 0.0], [], [0.5], [-1.0, -1.0]]
    y_pred = [[0.3, np.nan, -2.0], [], [np.inf], [np.nan, -np.inf]]
    w = [[1.0, np.nan, 2.0], [], [0.5], [np.inf, np.nan]]
    y_pred[2] = [4.0]
    for reduction in REDUCTIONS:
        loss = ranking.SigmoidCrossEntropyLoss(reduction=reduction, ragged=True)
        out = np.asarray(loss(y_true, y_pred, w))
        assert np.all(np.isfinite(out)), reduction
        clean = ranking.SigmoidCrossEntropyLoss(reduction=reduction, ragged=True)(
            [[1.0, -1.0, 0.0], [], [0.5], [-1.0, -1.0]],
            [[0.3, 0.0, -2.0], [], [4.0], [0.0, 0.0]],
            [[1.0, 0.0, 2.0], [], [0.5], [0.0, 0.0]],
        )
        np.testing.assert_array_equal(out, clean, err_msg=reduction)
