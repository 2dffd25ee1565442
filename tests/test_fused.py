"""Fused linear + sigmoid cross-entropy: values and gradients against a float64 dense reference.

The shared behaviours (strict modes, debug_nans, jit equals eager, vmap, dtypes, `where` with
NaN) are in test_shared_behaviour.py; here: every option against the reference, label ids,
tiles, memory, errors and the sharded forms.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import count_dots, ref_loss, x64
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import sigmoid_xent as sx

ARGNUMS = (0, 1, 2, 3)  # h, w, labels, bias


def head(h, w, labels, bias, **kwargs):
    """The call of the tests before the options became keyword-only: (h, w, labels, bias)."""
    return sx.linear_sigmoid_cross_entropy(h, w, labels, bias=bias, **kwargs)


def naive_linear(h, w, labels, bias):
    """The plain jnp formula: [batch, classes] logits, then the stable loss, then the mean."""
    x = h @ w.T + bias
    z = labels
    return jnp.mean(jnp.maximum(x, 0) - x * z + jnp.log1p(jnp.exp(-jnp.abs(x))))


def make(batch_shape, classes, hidden, dtype=jnp.float32, seed=0, label_kind="soft"):
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((*batch_shape, hidden))
    w = rng.standard_normal((classes, hidden)) / np.sqrt(hidden)
    bias = rng.standard_normal((classes,))
    u = rng.uniform(size=(*batch_shape, classes))
    labels = {"soft": u.astype(dtype), "int": (u > 0.5).astype(np.int32), "bool": u > 0.5}
    return (
        jnp.asarray(h, dtype),
        jnp.asarray(w, dtype),
        jnp.asarray(labels[label_kind]),
        jnp.asarray(bias, dtype),
    )


def ref_linear(h, w, labels, bias):
    """float64 numpy value and gradients (h, w, labels, bias)."""
    h, w, z, bias = (np.asarray(x, np.float64) for x in (h, w, labels, bias))
    x = h @ w.T + bias
    size = x.size
    dlogits = (0.5 * (1 + np.tanh(x / 2)) - z) / size
    hidden = h.shape[-1]
    flat = dlogits.reshape(-1, w.shape[0])
    grads = (dlogits @ w, flat.T @ h.reshape(-1, hidden), -x / size, flat.sum(0))
    return np.mean(ref_loss(z, x)), grads


VALUE_AND_GRAD = jax.jit(jax.value_and_grad(head, ARGNUMS), static_argnames="chunk_size")
# Integer and bool labels have no gradient.
VALUE_AND_GRAD_H_W_BIAS = jax.jit(jax.value_and_grad(head, (0, 1, 3)), static_argnames="chunk_size")


def assert_tree_close(got, want, rtol, atol):
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


@pytest.mark.parametrize(
    "batch_shape,classes,hidden,chunk,label_kind",
    [
        ((13,), 37, 8, 5, "soft"),  # classes: 7 whole chunks and an overlapping last one.
        ((2, 7), 29, 4, (4, 6), "int"),  # batch dims; tiles in both directions, ragged both.
        ((16,), 64, 8, None, "bool"),
    ],
)
def test_value_and_grads_match_naive(batch_shape, classes, hidden, chunk, label_kind):
    h, w, labels, bias = make(batch_shape, classes, hidden, seed=classes, label_kind=label_kind)
    z = labels.astype(jnp.float32)
    want_value, want_grads = ref_linear(h, w, labels, bias)
    if label_kind == "soft":
        value, grads = VALUE_AND_GRAD(h, w, labels, bias, chunk_size=chunk)
        naive_value, naive_grads = jax.jit(jax.value_and_grad(naive_linear, ARGNUMS))(h, w, z, bias)
    else:  # int/bool labels: no gradient; soft ones get d/dz = -logits / (N C) checked below.
        value, grads = VALUE_AND_GRAD_H_W_BIAS(h, w, labels, bias, chunk_size=chunk)
        naive_value, naive_grads = jax.jit(jax.value_and_grad(naive_linear, (0, 1, 3)))(
            h, w, z, bias
        )
        want_grads = want_grads[:2] + want_grads[3:]
    np.testing.assert_allclose(value, naive_value, rtol=2e-6)
    np.testing.assert_allclose(value, want_value, rtol=2e-6)
    assert_tree_close(grads, naive_grads, rtol=1e-5, atol=1e-8)
    for g, want in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-8)


# --------------------------------------------------------------------------------------------
# Every option against a float64 dense reference (jnp under x64, plain autodiff).


def dense_from_ids(ids, values, classes):
    """The dense labels of ``label_ids``, and which entry holds each listed class (the first of
    the largest values: the only one that gets a gradient)."""
    ids, values = np.asarray(ids), np.asarray(values, np.float64)
    rows = ids.reshape(-1, ids.shape[-1])
    vals = np.broadcast_to(values, ids.shape).reshape(rows.shape)
    z = np.zeros((rows.shape[0], classes))
    first = np.zeros(rows.shape, bool)
    for i, row in enumerate(rows):
        best = {}
        for k, c in enumerate(row):
            if c >= 0 and (c not in best or vals[i, k] > vals[i, best[c]]):
                best[c] = k
        for c, k in best.items():
            z[i, c], first[i, k] = vals[i, k], True
    return z.reshape((*ids.shape[:-1], classes)), first.reshape(ids.shape)


def ref_head(h, w, z, bias, weights, where, pos_weight, smoothing, reduction):
    """reduce_loss(weighted loss of the smoothed labels, weights, reduction, where=where),
    densely in float64: the contract's definition."""
    x = h @ w.T + (0.0 if bias is None else bias)
    s = 0.0 if smoothing is None else smoothing
    zs = z * (1 - s) + 0.5 * s
    p = 1.0 if pos_weight is None else pos_weight
    loss = p * zs * jnp.logaddexp(0.0, -x) + (1 - zs) * jnp.logaddexp(0.0, x)
    keep = jnp.broadcast_to(True if where is None else where, x.shape)
    wt = jnp.broadcast_to(1.0 if weights is None else weights, x.shape)
    wl = jnp.where(keep, wt * loss, 0.0)
    if reduction == "none":
        return jnp.sum(wl, axis=-1)
    if reduction == "sum":
        return jnp.sum(wl)
    if reduction == "mean":
        den = jnp.sum(jnp.where(keep, wt, 0.0))
    elif reduction == "sum_by_nonzero_weights" and weights is not None:
        den = jnp.sum(keep & (wt != 0))
    else:
        den = jnp.sum(keep)
    return jnp.sum(wl) / den


def _options(rng, batch, classes, spec):
    """The arrays of one case: ``spec`` maps an option to the shape kind it takes."""
    shapes = {"row": (*batch, 1), "class": (classes,), "element": (*batch, classes), "scalar": ()}
    out = {}
    for name, kind in spec.items():
        if name == "where":
            out[name] = rng.uniform(size=shapes[kind]) < 0.7
        elif name == "pos_weight":
            out[name] = rng.uniform(0.5, 2.0, size=shapes[kind])
        elif name == "label_smoothing":
            out[name] = rng.uniform(0.0, 0.3, size=shapes[kind])
        else:  # weights, some zero
            out[name] = rng.uniform(size=shapes[kind]) * (rng.uniform(size=shapes[kind]) < 0.8)
    return out


# (batch, classes, hidden, K (None: dense labels), options, reduction, chunk_size)
CASES = {
    "dense_plain_mean": ((9,), 17, 4, None, {}, "mean", (4, 5)),
    "dense_element_options": (
        (3, 4),
        13,
        3,
        None,
        {"weights": "element", "where": "element", "label_smoothing": "scalar"},
        "sum_by_nonzero_weights",
        (5, 4),
    ),
    "dense_class_weights_row_where": (
        (10,),
        11,
        3,
        None,
        {"weights": "class", "where": "row", "pos_weight": "scalar"},
        "mean",
        3,
    ),
    "ids_row_weights_class_where": (
        (11,),
        23,
        5,
        4,
        {"weights": "row", "where": "class", "pos_weight": "class", "label_smoothing": "scalar"},
        "mean",
        (4, 5),
    ),
    "ids_sum_class_smoothing": (
        (2, 5),
        19,
        4,
        3,
        {"weights": "scalar", "label_smoothing": "class"},
        "sum",
        (3, 7),
    ),
    "ids_sum_over_batch_size_where": (
        (12,),
        16,
        4,
        5,
        {"where": "element", "weights": "element"},
        "sum_over_batch_size",
        None,
    ),
    "ids_none": (
        (8,),
        21,
        3,
        4,
        {"weights": "class", "where": "element", "pos_weight": "class"},
        "none",
        (3, 8),
    ),
    "dense_none_row": ((2, 3), 9, 2, None, {"weights": "row", "label_smoothing": "row"}, "none", 4),
}


def case_data(name, seed=0):
    batch, classes, hidden, k, spec, reduction, chunk = CASES[name]
    rng = np.random.default_rng(seed)
    args = {
        "h": rng.standard_normal((*batch, hidden)),
        "w": rng.standard_normal((classes, hidden)) / np.sqrt(hidden),
        "bias": rng.standard_normal(classes),
    }
    if k is None:
        args["labels"] = rng.uniform(size=(*batch, classes))
    else:
        ids = rng.integers(-2, classes, size=(*batch, k))
        ids.reshape(-1, k)[0, :2] = 3  # a duplicate: the larger value counts,
        ids.reshape(-1, k)[1, :2] = 5  # or the first of two equal ones.
        values = rng.uniform(size=ids.shape)
        values.reshape(-1, k)[1, :2] = 0.5
        args["label_ids"], args["label_values"] = ids, values
    args.update(_options(rng, batch, classes, spec))
    return args, reduction, chunk


def _floats(args):
    return [k for k, v in args.items() if k != "label_ids" and np.asarray(v).dtype != bool]


@pytest.mark.parametrize("name", list(CASES))
def test_value_and_gradients_equal_the_float64_dense_reference(name):
    args, reduction, chunk = case_data(name)
    floats = _floats(args)
    fixed = {k: v for k, v in args.items() if k not in floats}
    cotangent = np.random.default_rng(1).standard_normal(args["h"].shape[:-1])

    def total(out):  # `none` returns rows: a random cotangent checks every row's gradient.
        return jnp.sum(out * cotangent) if reduction == "none" else out

    def ours(*values):
        kw = dict(zip(floats, values, strict=True)) | fixed
        h, w, labels = kw.pop("h"), kw.pop("w"), kw.pop("labels", None)
        kw = {k: jnp.asarray(v) for k, v in kw.items()}
        out = sx.linear_sigmoid_cross_entropy(
            h, w, labels, reduction=reduction, chunk_size=chunk, **kw
        )
        return total(out)

    def reference(*values):
        kw = dict(zip(floats, values, strict=True)) | fixed
        if "label_ids" in kw:
            classes = kw["w"].shape[0]
            _, first = dense_from_ids(kw["label_ids"], args["label_values"], classes)
            onehot = jax.nn.one_hot(np.where(first, kw["label_ids"], -1), classes)
            kw["labels"] = jnp.einsum("...k,...kc->...c", kw["label_values"], onehot)
        out = ref_head(
            kw["h"],
            kw["w"],
            kw["labels"],
            kw["bias"],
            kw.get("weights"),
            kw.get("where"),
            kw.get("pos_weight"),
            kw.get("label_smoothing"),
            reduction,
        )
        return total(out)

    argnums = tuple(range(len(floats)))
    value, grads = jax.jit(jax.value_and_grad(ours, argnums))(
        *(jnp.asarray(args[k], jnp.float32) for k in floats)
    )
    with x64():
        want, want_grads = jax.jit(jax.value_and_grad(reference, argnums))(
            *(jnp.asarray(args[k], jnp.float64) for k in floats)
        )
    np.testing.assert_allclose(value, want, rtol=2e-6)
    for k, g, want_g in zip(floats, grads, want_grads, strict=True):
        assert g.shape == np.shape(args[k]) and g.dtype == jnp.float32, k
        scale = float(np.max(np.abs(want_g)))
        np.testing.assert_allclose(g, want_g, rtol=1e-5, atol=2e-6 * scale, err_msg=k)


def test_label_ids_equal_their_dense_labels():
    # Hard and soft labels given both ways, in every layout of tiles.
    h, w, _, bias = make((13,), 37, 8, seed=2)
    rng = np.random.default_rng(2)
    ids = jnp.asarray(rng.integers(-1, 37, size=(13, 6)))
    values = jnp.asarray(rng.uniform(size=(13, 6)), jnp.float32)
    for v in (None, values):
        dense = jnp.asarray(dense_from_ids(ids, 1.0 if v is None else v, 37)[0], jnp.float32)
        for chunk in (5, (4, 9), None):
            got = sx.linear_sigmoid_cross_entropy(
                h, w, label_ids=ids, label_values=v, bias=bias, chunk_size=chunk
            )
            np.testing.assert_allclose(got, head(h, w, dense, bias, chunk_size=chunk), rtol=1e-6)


def test_out_of_range_class_id_is_an_error_or_nan():
    h, w, _, bias = make((4,), 5, 3)
    ids = jnp.array([[0, 5], [1, -1], [2, 3], [4, 4]])
    with pytest.raises(ValueError, match=r"`label_ids` must be < C = 5.*got 5"):
        sx.linear_sigmoid_cross_entropy(h, w, label_ids=ids)
    # Under jit the values are unknown: the whole result, and every gradient, is NaN.
    for reduction in ("mean", "none"):

        def f(h, ids, reduction=reduction):
            out = sx.linear_sigmoid_cross_entropy(h, w, label_ids=ids, reduction=reduction)
            return jnp.sum(out), out

        (_, out), grad = jax.jit(jax.value_and_grad(f, has_aux=True))(h, ids)
        assert np.all(np.isnan(out)) and np.all(np.isnan(grad)), reduction
        (_, out), grad = jax.jit(jax.value_and_grad(f, has_aux=True))(h, ids.at[0, 1].set(-7))
        assert np.all(np.isfinite(out)) and np.all(np.isfinite(grad))


def test_masked_and_padded_entries_reach_nothing():
    # NaN label values of padding ids and of masked elements, NaN weights of masked rows, a NaN
    # bias of a masked class: the same value as with finite ones there, and zero gradients.
    h, w, _, _ = make((6,), 9, 3, seed=4)
    ids = jnp.array([[0, 2, -1], [1, 1, 8], [3, -1, -1], [4, 5, 6], [7, 0, 0], [2, 3, 4]])
    values = jnp.asarray(np.random.default_rng(4).uniform(size=(6, 3)), jnp.float32)
    rows = jnp.array([True, False, True, True, False, True])[:, None]
    classes = jnp.arange(9) != 3
    where = rows & classes
    bad_values = jnp.where(rows & (ids >= 0) & (ids != 3), values, jnp.nan)
    bad_weights = jnp.where(rows, 2.0, jnp.nan)
    bad_bias = jnp.where(classes, 0.5, jnp.nan)

    def f(values, weights, bias):
        return sx.linear_sigmoid_cross_entropy(
            h, w, label_ids=ids, label_values=values, bias=bias, weights=weights, where=where,
            reduction="mean", chunk_size=(4, 4),
        )  # fmt: skip

    vg = jax.jit(jax.value_and_grad(f, (0, 1, 2)))
    value, grads = vg(bad_values, bad_weights, bad_bias)
    clean_value, clean_grads = vg(values, jnp.full((6, 1), 2.0), jnp.full(9, 0.5))
    assert value == clean_value
    assert all(np.all(np.isfinite(g)) for g in grads)
    absent = ~np.asarray(rows & (ids >= 0) & (ids != 3))
    np.testing.assert_array_equal(grads[0][absent], 0.0)
    np.testing.assert_array_equal(grads[0][~absent], clean_grads[0][~absent])
    np.testing.assert_array_equal(grads[1][~np.asarray(rows)], 0.0)
    assert grads[2][3] == 0.0
    r, c = np.asarray(rows[:, 0]), np.asarray(classes)
    dense = dense_from_ids(ids, values, 9)[0][r][:, c]
    kept = ref_head(h[r], w[c], dense, jnp.full(8, 0.5), 2.0, None, None, None, "mean")
    np.testing.assert_allclose(value, kept, rtol=1e-6)


def test_a_class_listed_twice_counts_once_with_its_larger_value():
    h, w, _, _ = make((2,), 4, 3, seed=5)
    ids = jnp.array([[2, 2, 2, 1], [3, 0, 3, -1]])
    values = jnp.array([[0.3, 0.7, 0.7, 1.0], [0.2, 1.0, 0.6, 0.9]])
    dense = jnp.array([[0.0, 1.0, 0.7, 0.0], [1.0, 0.0, 0.0, 0.6]])
    f = lambda v: sx.linear_sigmoid_cross_entropy(h, w, label_ids=ids, label_values=v)  # noqa: E731
    np.testing.assert_allclose(f(values), sx.linear_sigmoid_cross_entropy(h, w, dense), rtol=1e-6)
    g = np.asarray(jax.grad(f)(values))
    assert np.all(g[[0, 0, 1, 1], [1, 3, 1, 2]] != 0)
    np.testing.assert_array_equal(g[[0, 0, 1, 1], [0, 2, 0, 3]], 0.0)


def test_float64_and_no_bias():
    with x64():
        h, w, labels, _ = make((11,), 23, 6, jnp.float64)
        f = jax.jit(
            jax.value_and_grad(
                lambda *a: sx.linear_sigmoid_cross_entropy(*a, chunk_size=(4, 5)), (0, 1, 2)
            )
        )
        value, grads = f(h, w, labels)
        assert value.dtype == jnp.float64
        want_value, want_grads = ref_linear(h, w, labels, np.zeros(23))
        np.testing.assert_allclose(value, want_value, rtol=1e-14)
        for g, want in zip(grads, want_grads[:3], strict=True):
            assert g.dtype == jnp.float64
            np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-16)


def test_stable_for_huge_logits():
    h, w, labels, bias = make((13,), 37, 8, seed=1)
    ids = jnp.asarray(np.random.default_rng(1).integers(-1, 37, size=(13, 4)))
    dense = jnp.asarray(dense_from_ids(ids, 1.0, 37)[0], jnp.float32)
    pw = jnp.linspace(0.5, 2.0, 37)
    for scale in (1e4, 1e30):
        value, grads = VALUE_AND_GRAD(h * scale, w, labels, bias, chunk_size=5)
        assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads)
        logits = np.asarray(h, np.float64) * scale @ np.asarray(w, np.float64).T
        logits = logits + np.asarray(bias)
        np.testing.assert_allclose(value, np.mean(ref_loss(labels, logits)), rtol=1e-5)
        # With label ids and pos_weight.
        value, grads = jax.value_and_grad(
            lambda h: sx.linear_sigmoid_cross_entropy(
                h, w, label_ids=ids, bias=bias, pos_weight=pw, chunk_size=(4, 5)
            )
        )(h * scale)
        want = np.asarray(pw) * dense * ref_loss(1.0, logits) + (1 - dense) * ref_loss(0.0, logits)
        np.testing.assert_allclose(value, np.mean(want), rtol=1e-5)
        assert np.all(np.isfinite(grads))


def test_checkpoint_vmap_value_and_grad():
    h, w, labels, bias = make((3, 6), 21, 4)
    f = jax.checkpoint(lambda h, z: head(h, w, z, bias, chunk_size=8))
    values, grads = jax.jit(jax.vmap(jax.value_and_grad(f, (0, 1))))(h, labels)
    for k in range(3):
        want_value, want_grads = ref_linear(h[k], w, labels[k], bias)
        np.testing.assert_allclose(values[k], want_value, rtol=2e-6)
        np.testing.assert_allclose(grads[0][k], want_grads[0], rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(grads[1][k], want_grads[2], rtol=1e-5, atol=1e-8)


def _all_shapes(jaxpr):
    shapes = set()

    def visit(jp):
        jp = getattr(jp, "jaxpr", jp)
        for v in list(jp.invars) + list(jp.outvars) + list(jp.constvars):
            shapes.add(tuple(getattr(v.aval, "shape", ())))
        for eqn in jp.eqns:
            shapes.update(tuple(getattr(v.aval, "shape", ())) for v in eqn.outvars)
            for param in eqn.params.values():
                for p in param if isinstance(param, (tuple, list)) else (param,):
                    if isinstance(p, (jax.extend.core.Jaxpr, jax.extend.core.ClosedJaxpr)):
                        visit(p)

    visit(jaxpr)
    return shapes


def test_no_batch_by_classes_value_unless_label_gradient_is_asked():
    h, w, labels, bias = make((24,), 40, 4)
    f = lambda *a: head(*a, chunk_size=(8, 16))  # noqa: E731
    for g in (f, jax.value_and_grad(f, (0, 1, 3))):
        shapes = _all_shapes(jax.make_jaxpr(g)(h, w, labels, bias))
        assert (8, 16) in shapes
        assert not any(s[-2:] == (24, 40) for s in shapes if s != (24, 40)), shapes
        # The only [24, 40] value is the labels argument itself.
        jp = jax.make_jaxpr(g)(h, w, labels, bias).jaxpr
        produced = {tuple(v.aval.shape) for e in jp.eqns for v in e.outvars}
        assert (24, 40) not in produced


def test_label_ids_never_form_batch_by_classes_values():
    h, w, _, bias = make((24,), 40, 4)
    ids = jnp.zeros((24, 3), jnp.int32)
    values = jnp.ones((24, 3))

    def f(h, w, bias, values, reduction):
        return sx.linear_sigmoid_cross_entropy(
            h, w, label_ids=ids, label_values=values, bias=bias, weights=values[:, :1],
            where=jnp.arange(40) > 2, pos_weight=jnp.ones(40), label_smoothing=0.1,
            reduction=reduction, chunk_size=(8, 16),
        )  # fmt: skip

    for reduction in ("mean", "none"):
        g = lambda *a, r=reduction: jnp.sum(f(*a, r))  # noqa: E731
        for t in (g, jax.value_and_grad(g, (0, 1, 2, 3))):
            shapes = _all_shapes(jax.make_jaxpr(t)(h, w, bias, values))
            assert (8, 16) in shapes
            assert not any(s[-2:] == (24, 40) or 24 * 40 in s for s in shapes), shapes


def test_compiled_temp_memory_much_smaller_than_naive():
    n, c, hidden = 256, 2048, 32
    shapes = [
        jax.ShapeDtypeStruct(s, jnp.float32) for s in ((n, hidden), (c, hidden), (n, c), (c,))
    ]

    def temp(f, args=shapes):
        return jax.jit(f).lower(*args).compile().memory_analysis().temp_size_in_bytes

    chunked = lambda *a: head(*a, chunk_size=64)  # noqa: E731
    naive_bytes = temp(jax.value_and_grad(naive_linear, (0, 1, 3)))
    chunked_bytes = temp(jax.value_and_grad(chunked, (0, 1, 3)))
    assert naive_bytes >= n * c * 4
    assert chunked_bytes <= naive_bytes / 8, (chunked_bytes, naive_bytes)
    # The forward pass alone: [n, 64] tiles, never [n, c]. (XLA:CPU may fuse the naive dot
    # and reduction into one YNNPACK call whose scratch it does not report, so compare to n * c.)
    assert temp(chunked) <= n * c * 4 / 8
    # Label ids with every option: as far below the naive program.
    ids = jax.ShapeDtypeStruct((n, 8), jnp.int32)

    def from_ids(h, w, bias, ids):
        return sx.linear_sigmoid_cross_entropy(
            h, w, label_ids=ids, bias=bias, weights=h[:, :1], where=bias > 0,
            pos_weight=bias, label_smoothing=0.1, chunk_size=64,
        )  # fmt: skip

    ids_args = [shapes[0], shapes[1], shapes[3], ids]
    assert temp(jax.value_and_grad(from_ids, (0, 1, 2)), ids_args) <= naive_bytes / 8
    assert temp(from_ids, ids_args) <= n * c * 4 / 8


@pytest.mark.parametrize(
    "args,kwargs,error,match",
    [
        ((np.ones((4, 3), np.int32), np.ones((5, 3)), np.ones((4, 5))), {}, TypeError, "`h`"),
        (
            (np.ones((4, 3)), np.ones((5, 2)), np.ones((4, 5))),
            {},
            ValueError,
            r"`w`.*\(5, 2\).*\(4, 3\)",
        ),
        (
            (np.ones((4, 3)), np.ones((5, 3)), np.ones((4, 6))),
            {},
            ValueError,
            r"`labels`.*\(4, 5\).*\(4, 6\)",
        ),
        ((np.ones((4, 3)), np.ones((5, 3)), np.ones((4, 5)) * 1j), {}, TypeError, "`labels`"),
        (
            (np.ones((4, 3)), np.ones((5, 3)), np.ones((4, 5))),
            {"bias": np.ones(4)},
            ValueError,
            r"`bias`.*\(4,\)",
        ),
        (
            (np.ones((4, 3)), np.ones((5, 3)), np.ones((4, 5))),
            {"chunk_size": 0},
            ValueError,
            "chunk_size",
        ),
        (
            (np.ones((4, 3)), np.ones((5, 3)), np.ones((4, 5))),
            {"chunk_size": (2, 2, 2)},
            ValueError,
            "chunk_size",
        ),
        (
            (np.ones((4, 3)), np.ones((5, 3)), np.ones((4, 5))),
            {"chunk_size": (2, "a")},
            TypeError,
            r"chunk_size\[1\]",
        ),
        ((np.ones((0, 3)), np.ones((5, 3)), np.ones((0, 5))), {}, ValueError, "empty"),
        ((np.ones((4, 3)), np.ones((5, 3))), {}, ValueError, "exactly one.*neither"),
        (
            (np.ones((4, 3)), np.ones((5, 3)), np.ones((4, 5))),
            {"label_ids": np.zeros((4, 2), int)},
            ValueError,
            "exactly one.*both",
        ),
        (
            (np.ones((4, 3)), np.ones((5, 3)), np.ones((4, 5))),
            {"label_values": np.ones((4, 2))},
            ValueError,
            "`label_values` needs `label_ids`",
        ),
        (
            (np.ones((4, 3)), np.ones((5, 3))),
            {"label_ids": np.zeros((4, 2))},
            TypeError,
            "`label_ids` must be integer",
        ),
        (
            (np.ones((4, 3)), np.ones((5, 3))),
            {"label_ids": np.zeros((3, 2), int)},
            ValueError,
            r"`label_ids`.*\(3, 2\)",
        ),
        (
            (np.ones((4, 3)), np.ones((5, 3))),
            {"label_ids": np.zeros((4, 2), int), "label_values": np.ones((4, 3))},
            ValueError,
            r"`label_values` of shape \(4, 3\)",
        ),
        (
            (np.ones((4, 3)), np.ones((5, 3)), np.ones((4, 5))),
            {"weights": np.ones((5,))[:4]},
            ValueError,
            r"`weights` of shape \(4,\)",
        ),
        (
            (np.ones((4, 3)), np.ones((5, 3)), np.ones((4, 5))),
            {"where": np.ones((4, 5))},
            TypeError,
            "`where` must be a boolean",
        ),
        (
            (np.ones((4, 3)), np.ones((5, 3)), np.ones((4, 5))),
            {"pos_weight": np.ones((2,))},
            ValueError,
            "`pos_weight`",
        ),
        (
            (np.ones((4, 3)), np.ones((5, 3)), np.ones((4, 5))),
            {"label_smoothing": 1.5},
            ValueError,
            r"`label_smoothing` must lie in \[0, 1\]",
        ),
        (
            (np.ones((4, 3)), np.ones((5, 3)), np.ones((4, 5))),
            {"reduction": "mean_with_sample_weight"},
            ValueError,
            "unknown reduction",
        ),
    ],
)
def test_errors_name_the_argument(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        sx.linear_sigmoid_cross_entropy(*args, **kwargs)


def test_value_and_grad_forms_each_tile_once():
    # The forward does one product per tile; value_and_grad three (logits, d_h, d_w), all in
    # the forward rule's scan: the backward pass only scales the gradients. Also with label
    # ids and every option.
    h, w, labels, bias = make((24,), 40, 4)
    ids = jnp.zeros((24, 3), jnp.int32)
    f = lambda *a: head(*a, chunk_size=(8, 16))  # noqa: E731

    def g(h, w, z, bias):
        return sx.linear_sigmoid_cross_entropy(
            h, w, label_ids=ids, bias=bias, weights=h[:, :1], where=bias > 0, pos_weight=bias,
            label_smoothing=0.1, reduction="mean", chunk_size=(8, 16),
        )  # fmt: skip

    for loss in (f, g):
        assert count_dots(jax.make_jaxpr(loss)(h, w, labels, bias)) == 1
        vg = jax.value_and_grad(loss, (0, 1, 3))
        assert count_dots(jax.make_jaxpr(vg)(h, w, labels, bias)) == 3
    # Only the gradients asked for: d_w alone needs the logits and one more product.
    assert count_dots(jax.make_jaxpr(jax.grad(f, 1))(h, w, labels, bias)) == 2


def naive_definition(h, w, labels, bias):
    """The contract's definition, unchunked, through the core (plain autodiff for second order)."""
    return jnp.mean(sx.sigmoid_cross_entropy_with_logits(labels, h @ w.T + bias[None, :]))


@pytest.mark.parametrize("chunk", [(4, 3)])  # ragged tiles both ways
def test_second_derivatives_match_naive_autodiff(chunk):
    with x64():
        h, w, labels, bias = make((5,), 7, 3, jnp.float64, seed=11)
        args = (h, w, labels, bias)
        f = lambda *a: head(*a, chunk_size=chunk)  # noqa: E731
        hess = jax.jit(jax.hessian(f, ARGNUMS))(*args)
        want = jax.jit(jax.hessian(naive_definition, ARGNUMS))(*args)
        for got_row, want_row in zip(hess, want, strict=True):
            for got, expected in zip(got_row, want_row, strict=True):
                np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-15)
        assert np.max(np.abs(want[0][0])) > 1e-3 and np.max(np.abs(want[0][2])) > 1e-3

        def grad_norm(fn):  # grad of grad (a gradient penalty), and jacrev of jacrev.
            return lambda h: jnp.sum(jax.grad(fn, 1)(h, w, labels, bias) ** 2)

        np.testing.assert_allclose(
            jax.grad(grad_norm(f))(h), jax.grad(grad_norm(naive_definition))(h), rtol=1e-10
        )
        jac2 = jax.jacrev(jax.jacrev(f, 3), 3)(*args)
        np.testing.assert_allclose(jac2, want[3][3], rtol=1e-10, atol=1e-15)
        # With label ids, weights and reduction "none" (its gradients in the backward pass).
        ids = jnp.array([[0, 2], [1, -1], [6, 6], [3, 4], [5, 0]])
        dense = jnp.asarray(dense_from_ids(ids, 1.0, 7)[0])
        rw = jnp.linspace(0.5, 1.5, 5)[:, None]

        def rows(h, w):
            out = sx.linear_sigmoid_cross_entropy(
                h, w, label_ids=ids, weights=rw, reduction="none", chunk_size=chunk
            )
            return jnp.sum(out * jnp.arange(1.0, 6.0))

        def dense_rows(h, w):
            out = jnp.sum(rw * sx.sigmoid_cross_entropy_with_logits(dense, h @ w.T), axis=1)
            return jnp.sum(out * jnp.arange(1.0, 6.0))

        for got, expected in zip(
            jax.tree.leaves(jax.jit(jax.hessian(rows, (0, 1)))(h, w)),
            jax.tree.leaves(jax.jit(jax.hessian(dense_rows, (0, 1)))(h, w)),
            strict=True,
        ):
            np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-14)


# --------------------------------------------------------------------------------------------
# Model parallel: the elements split over a mesh inside shard_map (8 virtual devices; `make
# test` runs these in their own process).

sharded = pytest.mark.sharded
needs_8 = pytest.mark.skipif(
    jax.device_count() < 8,
    reason="needs 8 devices: set XLA_FLAGS=--xla_force_host_platform_device_count=8",
)

# layout: (mesh shape, mesh axes, h spec, w and bias spec, labels spec, axis_name)
LAYOUTS = {
    "rows": ((8,), ("data",), P("data"), P(), P("data"), "data"),
    "classes": ((8,), ("model",), P(), P("model"), P(None, "model"), "model"),
    "2d": ((4, 2), ("data", "model"), P("data"), P("model"), P("data", "model"), ("data", "model")),
}


def sharded_linear(layout, check_vma=True, chunk=None):
    """The loss inside shard_map over 8 devices, its mesh and in_specs (h, w, labels, bias)."""
    shape, axes, h_spec, w_spec, z_spec, axis_name = LAYOUTS[layout]
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(shape), axes)
    specs = (h_spec, w_spec, z_spec, w_spec)

    def local(h, w, z, bias):
        return sx.linear_sigmoid_cross_entropy(
            h, w, z, bias=bias, chunk_size=chunk, axis_name=axis_name
        )

    f = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P(), check_vma=check_vma))
    return f, mesh, specs


def put(arrays, mesh, specs):
    return [jax.device_put(x, NamedSharding(mesh, s)) for x, s in zip(arrays, specs, strict=True)]


@sharded
@needs_8
@pytest.mark.parametrize(
    "layout,check_vma,chunk",
    [
        ("rows", True, 3),
        ("rows", False, None),
        ("classes", True, (5, 3)),  # 5 classes per device in tiles of 3: a ragged last tile.
        ("classes", False, 2),
        ("2d", True, (3, 4)),
        ("2d", False, None),
    ],
)
def test_sharded_equals_unsharded(layout, check_vma, chunk):
    h, w, labels, bias = make((16,), 40, 6, seed=5)
    f, mesh, specs = sharded_linear(layout, check_vma, chunk)
    args = put((h, w, labels, bias), mesh, specs)
    value, grads = jax.jit(jax.value_and_grad(f, ARGNUMS))(*args)
    want_value, want_grads = VALUE_AND_GRAD(h, w, labels, bias, chunk_size=5)
    ref_value, ref_grads = ref_linear(h, w, labels, bias)
    np.testing.assert_allclose(value, want_value, rtol=2e-6)
    np.testing.assert_allclose(value, ref_value, rtol=2e-6)
    for g, want, ref, x in zip(grads, want_grads, ref_grads, (h, w, labels, bias), strict=True):
        assert g.shape == x.shape and g.dtype == x.dtype
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(g, ref, rtol=1e-5, atol=1e-9)
    # The forward pass alone, and int labels (no label gradient).
    np.testing.assert_allclose(jax.jit(f)(*args), want_value, rtol=2e-6)
    hard = (labels > 0.5).astype(jnp.int32)
    args[2] = put((hard,), mesh, specs[2:3])[0]
    np.testing.assert_allclose(jax.jit(f)(*args), head(h, w, hard, bias), rtol=2e-6)


# Per-row arrays are split like h's rows, per-class ones like w's classes.
def _spec(layout, kind):
    _, _, h_spec, w_spec, z_spec, _ = LAYOUTS[layout]
    return {"row": h_spec, "class": w_spec, "element": z_spec, "scalar": P()}[kind]


@sharded
@needs_8
@pytest.mark.parametrize(
    "layout,reduction,options",
    [
        ("rows", "mean", {"weights": "row", "where": "class", "pos_weight": "class"}),
        ("classes", "none", {"weights": "class", "where": "row", "label_smoothing": "scalar"}),
        ("2d", "sum_by_nonzero_weights", {"weights": "element", "where": "element"}),
        ("2d", "none", {"weights": "row", "pos_weight": "class", "label_smoothing": "class"}),
        ("classes", "sum", {"where": "class", "pos_weight": "scalar"}),
    ],
)
def test_sharded_label_ids_and_options_equal_unsharded(layout, reduction, options):
    # Global class ids: each device offsets them by its classes' first index.
    rng = np.random.default_rng(6)
    h, w, _, bias = make((16,), 40, 6, seed=6)
    ids = jnp.asarray(rng.integers(-1, 40, size=(16, 5)))
    values = jnp.asarray(rng.uniform(size=(16, 5)), jnp.float32)
    opts = {k: jnp.asarray(v) for k, v in _options(rng, (16,), 40, options).items()}
    floats = [k for k in opts if opts[k].dtype != bool]
    shape, axes, h_spec, w_spec, _, axis_name = LAYOUTS[layout]
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(shape), axes)
    names = ("h", "w", "bias", "label_ids", "label_values", *opts)
    specs = (h_spec, w_spec, w_spec, h_spec, h_spec, *(_spec(layout, options[k]) for k in opts))
    out_spec = P() if reduction != "none" else h_spec
    cotangent = jnp.asarray(rng.standard_normal(16), jnp.float32)

    def call(axis_name, *arrays):
        kw = dict(zip(names, arrays, strict=True))
        h, w = kw.pop("h"), kw.pop("w")
        return sx.linear_sigmoid_cross_entropy(
            h, w, **kw, reduction=reduction, chunk_size=(3, 2), axis_name=axis_name
        )

    sharded = jax.jit(
        jax.shard_map(
            functools.partial(call, axis_name), mesh=mesh, in_specs=specs, out_specs=out_spec
        )
    )
    args = [h, w, bias, ids, values, *opts.values()]
    argnums = (0, 1, 2, 4, *(5 + list(opts).index(k) for k in floats))

    def total(f):
        return lambda *a: jnp.sum(f(*a) * (cotangent if reduction == "none" else 1.0))

    value, grads = jax.jit(jax.value_and_grad(total(sharded), argnums))(*put(args, mesh, specs))
    want, want_grads = jax.jit(jax.value_and_grad(total(functools.partial(call, None)), argnums))(
        *args
    )
    np.testing.assert_allclose(value, want, rtol=2e-6)
    for i, g, want_g in zip(argnums, grads, want_grads, strict=True):
        assert g.shape == args[i].shape, names[i]
        np.testing.assert_allclose(g, want_g, rtol=1e-5, atol=1e-7, err_msg=names[i])
    if reduction == "none":  # each device's rows, summed over the class axes.
        rows = jax.jit(sharded)(*put(args, mesh, specs))
        np.testing.assert_allclose(rows, call(None, *args), rtol=2e-6)


@sharded
@needs_8
def test_class_sharded_all_reduces_only_scalars_and_the_h_gradient():
    h, w, labels, bias = make((16,), 40, 6, seed=5)
    f, mesh, specs = sharded_linear("classes", True, 2)
    args = put((h, w, labels, bias), mesh, specs)
    hlo = jax.jit(jax.value_and_grad(f, (0, 1, 3))).lower(*args).compile().as_text()
    assert "all-gather" not in hlo and "all-to-all" not in hlo
    lines = [ln for ln in hlo.splitlines() if re.search(r" all-reduce(-start)?\(", ln)]
    # The result types left of the op (XLA may combine several all-reduces into one tuple).
    shapes = [s for ln in lines for s in re.findall(r"\w+\[[\d,]*\]", ln.split(" all-reduce")[0])]
    assert shapes, hlo
    # Scalars (the loss) and h's [16, 6] gradient; never w's [5, 6] shard or a gathered w.
    assert all(s.endswith(("[]", "[16,6]")) for s in shapes), shapes


def _vg_temp(f, args):
    compiled = jax.jit(jax.value_and_grad(f, (0, 1, 3))).lower(*args).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def class_sharded_memory(n=256, c=65536, hidden=64, devices=8):
    """Per-device temp bytes of a class-sharded value_and_grad and its unsharded references."""
    shapes = [(n, hidden), (c, hidden), (n, c), (c,)]
    full = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
    share = [jax.ShapeDtypeStruct(s, jnp.float32) for s in [(n, hidden), (c // devices, hidden)]]
    share += [jax.ShapeDtypeStruct(s, jnp.float32) for s in [(n, c // devices), (c // devices,)]]
    out = {}
    for tiles, chunk in (("one tile", c), ("default tiles", None)):
        f, mesh, specs = sharded_linear("classes", True, chunk)
        sharded_args = [
            jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=NamedSharding(mesh, p))
            for s, p in zip(full, specs, strict=True)
        ]
        local = lambda *a, chunk=chunk: head(*a, chunk_size=chunk)  # noqa: E731
        out[tiles] = {
            "sharded": _vg_temp(f, sharded_args),
            "unsharded": _vg_temp(local, full),
            "unsharded C/8": _vg_temp(local, share),
        }
    return out


@sharded
@needs_8
def test_class_sharded_temp_memory_is_one_devices_share():
    mem = class_sharded_memory()
    one, default = mem["one tile"], mem["default tiles"]
    assert one["sharded"] <= one["unsharded"] / 4, one
    # One device's share, plus the few bytes of the all-reduced scalars (16 measured).
    assert default["sharded"] <= default["unsharded C/8"] + 1024, default


@sharded
@needs_8
def test_sharding_errors_say_what_is_wrong():
    h, w, labels, bias = make((16,), 40, 6, seed=5)
    mesh = Mesh(np.array(jax.devices()[:8]), ("model",))

    def call(specs, axis_name="model", check_vma=True):
        f = jax.jit(
            jax.shard_map(
                lambda *a: head(*a, axis_name=axis_name),
                mesh=mesh,
                in_specs=specs,
                out_specs=P(),
                check_vma=check_vma,
            )
        )
        return jax.jit(f)(*put((h, w, labels, bias), mesh, specs))

    with pytest.raises(ValueError, match=r"`axis_name`.*'classes'.*binds \('model',\)"):
        call((P(), P("model"), P(None, "model"), P("model")), axis_name="classes")
    with pytest.raises(NameError, match="outside jax.shard_map"):  # also a NameError.
        head(h, w, labels, bias, axis_name="model")
    # Labels not sharded like w: 5 classes of w against 40 of labels, on every device.
    with pytest.raises(ValueError, match=r"`labels`.*\(16, 5\).*\(16, 40\).*shard_map"):
        call((P(), P("model"), P(), P("model")))
    with pytest.raises(ValueError, match=r"`bias`.*\(5,\).*\(40,\).*shard_map"):
        call((P(), P("model"), P(None, "model"), P()))
    # Rows of h split, rows of labels not: 2 rows of h against 16 of labels.
    with pytest.raises(ValueError, match=r"`labels`.*\(2, 5\).*\(16, 5\).*batch rows"):
        call((P("model"), P("model"), P(None, "model"), P("model")))
    # Label ids need the axes that split `w`, which check_vma=False does not record.
    ids = jnp.zeros((16, 2), jnp.int32)
    f = jax.jit(
        jax.shard_map(
            lambda h, w, ids: sx.linear_sigmoid_cross_entropy(
                h, w, label_ids=ids, axis_name="model"
            ),
            mesh=mesh,
            in_specs=(P(), P("model"), P()),
            out_specs=P(),
            check_vma=False,
        )
    )
    with pytest.raises(ValueError, match=r"`label_ids`.*check_vma=True"):
        jax.jit(f)(*put((h, w, ids), mesh, (P(), P("model"), P())))
