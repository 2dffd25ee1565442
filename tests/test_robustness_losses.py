"""Robustness campaign (issue 11): reductions, the TF/Keras losses and validate_inputs.

Property-based: random shapes from scalars to rank 4, weights of every broadcastable shape (and
of shapes that are not), every reduction, mixed dtypes, under jit and vmap, against longdouble
references. Helpers and strategies come from test_robustness.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.experimental import checkify
from test_robustness import (
    LD,
    N,
    assert_within,
    dtype_scope,
    finfo,
    fuzz,
    ld,
    logits,
    r_bce,
    r_sigmoid,
    record,
    to_dtype,
    ulp,
)

import sigmoid_xent as sx
from sigmoid_xent.reductions import ELEMENTWISE

REDUCTIONS = [r.value for r in sx.Reduction if r in ELEMENTWISE]
SHAPES = [(), (3,), (2, 3), (2, 1, 3), (2, 2, 1, 3)]

# --------------------------------------------------------------------------- references


def r_reduce(losses, weights, reduction):
    """Every reduction of ``reduce_loss`` (0 where a denominator is 0) in longdouble."""
    losses = np.asarray(losses, LD)
    given_w = np.asarray(1.0 if weights is None else weights, LD)
    w = np.broadcast_to(given_w, losses.shape)
    total = (losses * w).sum()

    def div(a, b):
        return a / b if b != 0 else LD(0)

    return {
        "none": losses * w,
        "sum": total,
        "mean": div(total, w.sum()),
        "sum_over_batch_size": div(total, LD(losses.size)),
        "sum_by_nonzero_weights": div(total, LD(np.count_nonzero(w))),
        "mean_with_sample_weight": div(
            total, given_w.sum() if weights is not None else LD(losses.size)
        ),
    }[reduction]


def broadcastable_shapes(shape):
    """Shapes that broadcast *to* ``shape``: each trailing dimension 1 or equal, rank <= its."""
    return st.integers(0, len(shape)).flatmap(
        lambda rank: st.tuples(
            *[st.sampled_from(sorted({1, d})) for d in shape[len(shape) - rank :]]
        )
    )


def not_broadcastable_shapes(shape):
    """Shapes that do not broadcast to ``shape`` (a wrong dimension, or a larger rank)."""

    def bad(s):
        try:
            return np.broadcast_shapes(s, shape) != tuple(shape)
        except ValueError:
            return True

    dims = st.integers(1, 5)
    return st.lists(dims, min_size=1, max_size=len(shape) + 1).map(tuple).filter(bad)


weights_values = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.5]),
    st.floats(-10, 10, width=32, allow_subnormal=False),
)
loss_values = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0, 1e3, width=32))


# --------------------------------------------------------------------------- reduce_loss


# The six reductions of one example in one program: a compile per shape pair, not per reduction.
EVERY_REDUCTION = jax.jit(lambda losses, w: {r: sx.reduce_loss(losses, w, r) for r in REDUCTIONS})


@fuzz()
@given(data=st.data())
def test_reduce_loss_every_reduction_and_weight_shape(data):
    """All six reductions against their longdouble formulas, for weights of every broadcastable
    shape, negative and zero weights included (negative ones count as non-zero, -0.0 does not)."""
    shape = data.draw(st.sampled_from(SHAPES), "shape")
    losses = data.draw(hnp.arrays(np.float32, shape, elements=loss_values), "losses")
    w_shape = data.draw(broadcastable_shapes(shape), "weights shape")
    weights = data.draw(
        st.one_of(st.none(), hnp.arrays(np.float32, w_shape, elements=weights_values)), "weights"
    )
    every = EVERY_REDUCTION(losses, weights)
    for reduction in REDUCTIONS:
        got = np.asarray(every[reduction], np.float64)
        want = r_reduce(losses, weights, reduction)
        scale = r_reduce(np.abs(losses), None if weights is None else np.abs(weights), reduction)
        n = max(losses.size, 1)
        # float32 sums: a few roundings per term, relative to the sum of magnitudes.
        tol = (2 * n + 4) * np.finfo(np.float32).eps * np.abs(np.asarray(scale, np.float64))
        if weights is not None and reduction in ("mean", "mean_with_sample_weight"):
            # The denominator is a sum of weights of both signs: it cancels too.
            w = (
                weights
                if reduction == "mean_with_sample_weight"
                else np.broadcast_to(weights, shape)
            )
            w_sum, w_abs = abs(float(np.sum(w, dtype=np.float64))), float(np.sum(np.abs(w)))
            if w_sum > 0:
                tol = (
                    tol
                    + (2 * n + 4)
                    * np.finfo(np.float32).eps
                    * np.abs(np.asarray(want, np.float64))
                    * w_abs
                    / w_sum
                )
        err = np.abs(got - np.asarray(want, np.float64))
        assert np.all(err <= tol + 1e-30), (reduction, got, want)
        if reduction == "none":
            assert got.shape == shape


def ALL_REDUCTIONS(losses, weights):  # noqa: N802 - used like a constant table
    """Every scalar reduction at once (one trace per example instead of five)."""
    return jnp.stack([sx.reduce_loss(losses, weights, r) for r in REDUCTIONS[1:]])


ALL_REDUCTIONS_AND_JACOBIANS = jax.jit(
    lambda losses, weights: (
        ALL_REDUCTIONS(losses, weights),
        jax.jacrev(ALL_REDUCTIONS, argnums=(0, 1))(losses, weights),
    )
)


@fuzz(ci_examples=15)
@given(data=st.data())
def test_all_zero_weights_give_zero_with_finite_gradients(data):
    shape = (2, 1, 3)
    losses = data.draw(hnp.arrays(np.float32, shape, elements=loss_values), "losses")
    w_shape = data.draw(st.sampled_from([(), (3,), (2, 1, 1), (2, 1, 3)]), "weights shape")
    weights = np.zeros(w_shape, np.float32)
    if data.draw(st.booleans(), "negative zeros"):
        weights = -weights
    values, grads = ALL_REDUCTIONS_AND_JACOBIANS(losses, weights)
    np.testing.assert_array_equal(values, 0.0)
    assert all(np.all(np.isfinite(g)) for g in grads)
    # Weights that sum to 0 without being 0: `mean` and `mean_with_sample_weight` give 0 too.
    w = np.array([1.0, -1.0], np.float32)
    for reduction in ("mean", "mean_with_sample_weight"):
        g = jax.grad(sx.reduce_loss, argnums=(0, 1))(jnp.ones(2), jnp.asarray(w), reduction)
        assert float(sx.reduce_loss(jnp.ones(2), w, reduction)) == 0.0
        assert all(np.all(np.isfinite(x)) for x in g)


@fuzz()
@given(data=st.data())
def test_weights_not_broadcastable_is_value_error_naming_both_shapes(data):
    shape = data.draw(st.sampled_from(SHAPES), "shape")
    w_shape = data.draw(not_broadcastable_shapes(shape), "weights shape")
    msg = (
        f"reduce_loss: `weights` of shape {w_shape} cannot be broadcast to the losses shape "
        f"{shape}."
    )
    with pytest.raises(ValueError) as err:
        sx.reduce_loss(np.ones(shape, np.float32), np.ones(w_shape, np.float32))
    assert str(err.value) == msg


def test_mean_with_sample_weight_divides_by_unbroadcast_weights():
    losses = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    for w_shape in [(), (4,), (3, 1), (1, 3, 4), (2, 1, 1)]:
        w = np.linspace(0.5, 2.0, int(np.prod(w_shape))).astype(np.float32).reshape(w_shape)
        got = sx.reduce_loss(losses, w, "mean_with_sample_weight")
        want = (losses * w).sum() / w.sum()  # not broadcast: Keras 3
        np.testing.assert_allclose(got, want, rtol=1e-6)
        if w.size != losses.size:
            assert not np.isclose(
                float(got), (losses * w).sum() / np.broadcast_to(w, losses.shape).sum(), rtol=1e-4
            )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@fuzz()
@given(data=st.data())
def test_16bit_losses_accumulate_in_float32(dtype, data):
    """A sum of 16-bit losses is the float32 sum rounded once: within 1 ulp of the exact one."""
    n = 1024
    losses = to_dtype(
        data.draw(hnp.arrays(np.float64, n, elements=st.floats(0, 60)), "losses"), dtype
    )
    weights = to_dtype(data.draw(hnp.arrays(np.float64, n, elements=st.floats(0, 1)), "w"), dtype)
    with dtype_scope(dtype):
        for reduction in ("sum", "mean", "sum_over_batch_size"):
            got = SUMS[reduction](jnp.asarray(losses), jnp.asarray(weights))
            assert got.dtype == jnp.dtype(dtype)
            want = r_reduce(ld(losses), ld(weights), reduction)
            err = np.abs(ld(got) - want) / ulp(want, dtype)
            # XLA:CPU flushes products below float32's tiny (a weight of 1e-38 times a loss) to
            # 0, also in a weighted mean's numerator: compare with that flushed sum too.
            tiny = LD(np.finfo(np.float32).tiny)
            prods = ld(losses) * ld(weights)
            flushed = np.where(np.abs(prods) < tiny, LD(0), ld(losses))
            want_ftz = r_reduce(flushed, ld(weights), reduction)
            err_ftz = np.abs(ld(got) - want_ftz) / ulp(want_ftz, dtype)
            err = np.minimum(err, err_ftz)
            err = np.where(np.abs(ld(got) - want) <= n * tiny, 0, err)
            assert_within(f"reduce_loss {reduction} {dtype}", err, 1.0)


SUMS = {
    r: jax.jit(lambda losses, w, r=r: sx.reduce_loss(losses, w, r))
    for r in ("sum", "mean", "sum_over_batch_size")
}


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_reduce_loss_jit_vmap_match_eager(reduction):
    rng = np.random.default_rng(3)
    losses = rng.uniform(0, 5, (4, 2, 3)).astype(np.float32)
    weights = np.where(rng.uniform(size=(4, 2, 1)) < 0.3, 0, rng.normal(size=(4, 2, 1)))
    weights = weights.astype(np.float32)
    pairs = zip(losses, weights, strict=True)
    eager = np.stack([sx.reduce_loss(l_, w_, reduction) for l_, w_ in pairs])
    f = jax.jit(jax.vmap(lambda l_, w_: sx.reduce_loss(l_, w_, reduction)))
    np.testing.assert_allclose(f(losses, weights), eager, rtol=1e-6)


# --------------------------------------------------------------------------- TF v1


def v1_weights_ok(w_shape, shape):
    return w_shape == () or (
        len(w_shape) == len(shape)
        and all(w in (1, d) for w, d in zip(w_shape, shape, strict=False))
    )


@fuzz()
@given(data=st.data())
def test_v1_weights_rule_accepts_exactly_tf_shapes(data):
    """Rank 0, or the losses' rank with each dimension 1 or equal; anything else: ValueError."""
    shape = data.draw(st.sampled_from(SHAPES[1:]), "shape")
    w_shape = data.draw(
        st.one_of(
            broadcastable_shapes(shape),
            not_broadcastable_shapes(shape),
            st.lists(st.integers(1, 3), max_size=4).map(tuple),
        ),
        "w shape",
    )
    z, x, w = np.zeros(shape), np.zeros(shape, np.float32), np.ones(w_shape, np.float32)
    if v1_weights_ok(w_shape, shape):  # traced only (eval_shape): nothing to compile
        assert jax.eval_shape(sx.sigmoid_cross_entropy, z, x, w).shape == ()
    else:
        msg = (
            f"sigmoid_cross_entropy: `weights` of shape {w_shape} must be a scalar or have the "
            f"losses' rank {len(shape)} with every dimension 1 or equal to the losses shape "
            f"{shape} (use [batch, 1] for per-sample weights)."
        )
        with pytest.raises(ValueError) as err:
            sx.sigmoid_cross_entropy(z, x, w)
        assert str(err.value) == msg


def _v1_all(x, z, w, s):
    return jnp.stack([sx.sigmoid_cross_entropy(z, x, w, s, r) for r in REDUCTIONS[1:]])


V1 = jax.jit(lambda *args: (_v1_all(*args), jax.jacrev(_v1_all, argnums=(0, 1, 2, 3))(*args)))


@pytest.mark.parametrize("dtype", ["bfloat16", "float32", "float64"])
@fuzz(ci_examples=20)
@given(data=st.data())
def test_v1_value_and_gradients(dtype, data):
    """Smoothing, weights and every reduction against the reference; all gradients finite."""
    shape = (4, 8)
    x = data.draw(logits(dtype, 32), "x").reshape(shape)
    z = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(0, 1)), "z")
    w = data.draw(hnp.arrays(np.float64, (4, 1), elements=weights_values), "weights")
    s = data.draw(st.sampled_from([0.0, 0.1, 1.0]) | st.floats(0, 1), "label_smoothing")
    with dtype_scope(dtype):
        xj = jnp.asarray(x.astype(np.float64), jnp.dtype(dtype))
        values, jacobians = V1(
            xj, jnp.asarray(z, jnp.float32), jnp.asarray(w, jnp.float32), jnp.float32(s)
        )
        assert values.dtype == jnp.dtype(dtype)
        values = np.asarray(values)
    for i, reduction in enumerate(REDUCTIONS[1:]):
        check_v1(dtype, x, z, w, s, reduction, values[i], [j[i] for j in jacobians])


def check_v1(dtype, x, z, w, s, reduction, value, grads):
    cd = np.float64 if dtype == "float64" else np.float32
    zs = z.astype(np.float32).astype(cd) * (1 - cd(np.float32(s))) + 0.5 * cd(np.float32(s))
    elementwise = r_bce(ld(zs), ld(x))
    want = r_reduce(elementwise, ld(np.asarray(w, np.float32)), reduction)
    # The weighted sum is a growth factor too: where it overflows the (at least float32)
    # accumulator, inf is the answer even if the mean would fit.
    total = r_reduce(elementwise, ld(np.abs(np.asarray(w, np.float32))), "sum")
    acc_max = float(finfo("float64" if dtype == "float64" else "float32").max)
    if float(total) >= acc_max or abs(float(want)) > float(finfo(dtype).max):
        return  # inf is the right answer
    scale = r_reduce(elementwise, ld(np.abs(np.asarray(w, np.float32))), reduction)
    # XLA:CPU flushes products below float32's tiny (a weight of 1e-38 times a loss): n tiny.
    tol = 3 * 32 * float(finfo(dtype).eps) * float(np.abs(scale)) + x.size * float(
        finfo("float32").tiny
    )
    w32 = np.asarray(w, np.float32)
    w_sum, w_abs = abs(float(np.sum(w32, dtype=np.float64))), float(np.sum(np.abs(w32)))
    if reduction in ("mean", "mean_with_sample_weight") and w_sum > 0:
        # The denominator is a sum of weights of both signs: it cancels too.
        tol += 3 * 32 * float(finfo(dtype).eps) * abs(float(want)) * w_abs / w_sum * 4
    assert abs(float(value) - float(want)) <= tol, (float(value), float(want))
    f32_max = float(finfo("float32").max)  # labels, weights and smoothing are float32 here
    # A weighted mean divides by the sum of the weights, which can be small.
    div = (
        max(1.0, 1 / max(w_sum, 1e-300))
        if reduction in ("mean", "mean_with_sample_weight")
        else 1.0
    )
    overflow = {  # where the exact gradient itself overflows
        "labels": np.max(np.abs(ld(x))) * np.max(np.abs(ld(w)), initial=1) * div >= f32_max,
        "label_smoothing": np.sum(np.abs(ld(x))) * np.max(np.abs(ld(w)), initial=1) * div
        >= f32_max,
        # d/dw of a weighted mean is (row loss - mean) / sum(w): over a small weight sum it
        # can reach the float32 maximum (rounding to inf right at it).
        "weights": (np.sum(elementwise) + abs(want)) * max(1.0, 1 / max(w_sum, 1e-300))
        >= 0.999 * f32_max,
    }
    for name, g in zip(("logits", "labels", "weights", "label_smoothing"), grads, strict=False):
        if not overflow.get(name, False):
            assert np.all(np.isfinite(np.asarray(g, np.float64))), (name, g)


V1_NONE = jax.jit(
    lambda z, x, s: sx.sigmoid_cross_entropy(z, x, label_smoothing=s, reduction="none")
)


def test_v1_label_smoothing_edges():
    """s = 1 makes every label 1/2; a traced s = 0 is the plain loss; d/ds is finite and right.
    (Other float dtypes for s: test_mixed_precision_just_works.)"""
    z = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.3]], np.float32)
    x = np.array([[-3.0, 2.0, 40.0], [0.5, -0.2, 1.0]], np.float32)
    np.testing.assert_array_equal(V1_NONE(z, x, 1.0), V1_NONE(np.full_like(z, 0.5), x, 0.0))
    np.testing.assert_array_equal(
        V1_NONE(z, x, 0.0), sx.sigmoid_cross_entropy(z, x, reduction="none")
    )
    g = jax.grad(lambda s: V1_NONE(z, x, s).sum())(0.5)
    want = ((0.5 - z) * -x).sum()  # d/ds of z (1 - s) + s / 2 is 1/2 - z; d/dz' = -x
    np.testing.assert_allclose(g, want, rtol=1e-5)


# --------------------------------------------------------------------------- Keras


def keras_weight_as(w_shape, loss_shape):
    """The shape tf.keras 2 gives weights of ``w_shape`` against per-sample ``loss_shape``."""
    w_shape, loss_shape = tuple(w_shape), tuple(loss_shape)
    if len(w_shape) == 1 and len(loss_shape) > 1 and w_shape[0] == loss_shape[0]:
        return w_shape + (1,) * (len(loss_shape) - 1)  # [batch]: one weight per sample
    if len(w_shape) == len(loss_shape) + 1 and w_shape[-1] == 1:
        return w_shape[:-1]  # the weights' extra trailing 1 is squeezed
    if len(w_shape) + 1 == len(loss_shape) and loss_shape[-1] == 1:
        return w_shape + (1,)  # the losses' trailing 1 is matched: leading axes align
    return w_shape


def keras_weight_ok(w_shape, loss_shape):
    try:
        as_shape = keras_weight_as(w_shape, loss_shape)
        return np.broadcast_shapes(as_shape, loss_shape) == tuple(loss_shape)
    except ValueError:
        return False


@fuzz(ci_examples=20)
@given(data=st.data())
def test_keras_sample_weight_rules_and_values(data):
    """Scalar, [batch], broadcastable, or one more trailing 1; every reduction; vs reference."""
    shape = data.draw(st.sampled_from(SHAPES[1:]), "shape")
    loss_shape = shape[:-1]
    w_shape = data.draw(
        st.one_of(
            broadcastable_shapes(loss_shape),
            st.just(shape[:1]),
            st.just(loss_shape + (1,)),
            st.lists(st.integers(1, 3), max_size=4).map(tuple),
        ),
        "w shape",
    )
    from_logits = data.draw(st.booleans(), "from_logits")
    s = data.draw(st.sampled_from([0.0, 0.2]), "label_smoothing")
    reduction = data.draw(
        st.sampled_from(
            ["auto", "none", "sum", "mean", "sum_by_nonzero_weights", "mean_with_sample_weight"]
        ),
        "reduction",
    )
    rng = np.random.default_rng(data.draw(st.integers(0, 99), "seed"))
    z = rng.integers(0, 2, shape).astype(np.float32)
    y = rng.normal(size=shape) * 4 if from_logits else rng.uniform(size=shape)
    y = y.astype(np.float32)
    w = rng.uniform(-1, 2, w_shape).astype(np.float32)
    loss = sx.BinaryCrossentropy(from_logits, s, reduction=reduction)
    if not keras_weight_ok(w_shape, loss_shape):
        with pytest.raises(
            ValueError, match=r"BinaryCrossentropy: `sample_weight` of shape " + re_shape(w_shape)
        ):
            jax.eval_shape(loss, z, y, w)
        return
    out = jax.eval_shape(loss, z, y, w)
    assert out.shape == (loss_shape if reduction == "none" else ())
    if shape != (2, 2, 1, 3):
        return  # values: one shape (every weight shape) keeps the compiles few
    got = np.asarray(loss(z, y, w), np.float64)
    zs = z * (1 - np.float32(s)) + 0.5 * np.float32(s)
    if from_logits:
        per_sample = r_bce(ld(zs), ld(y)).mean(axis=-1)
    else:
        p = np.clip(ld(y), LD(float(np.float32(1e-7))), LD(float(np.float32(1) - np.float32(1e-7))))
        e = LD(float(np.float32(1e-7)))
        per_sample = (-(zs * np.log(p + e) + (1 - zs) * np.log(1 - p + e))).mean(axis=-1)
    wk = w.reshape(keras_weight_as(w_shape, loss_shape))
    red = "sum_over_batch_size" if reduction == "auto" else reduction
    want = np.asarray(r_reduce(per_sample, ld(wk), red), np.float64)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


def re_shape(shape):
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


# --------------------------------------------------------------------------- mixed precision

MIXED = {  # logits dtype -> dtypes of (labels, weights, label_smoothing, pos_weight, alpha, gamma)
    "float32": ("float64", "bfloat16", "float16", "float64", "float16", "bfloat16"),
    "bfloat16": ("float16", "float64", "float32", "float16", "float64", "float32"),
    "float16": ("bfloat16", "float32", "float64", "bfloat16", "float32", "float64"),
    "float64": ("float32", "float16", "bfloat16", "float32", "bfloat16", "float16"),
}


def _mixed_losses(x, z, w, s, pw, a, g, p):
    """Every public loss, each argument in its own dtype (``p``: probabilities, logits' dtype)."""
    return {
        "core": sx.sigmoid_cross_entropy_with_logits(z, x),
        "weighted": sx.weighted_sigmoid_cross_entropy_with_logits(z, x, pw),
        "focal": sx.sigmoid_focal_loss(z, x, alpha=a, gamma=g),
        "probs": sx.binary_cross_entropy(z, p),
        "v1": sx.sigmoid_cross_entropy(z, x, w, s),
        "keras": sx.binary_crossentropy(z, x, True, s),
        "keras probs": sx.binary_crossentropy(z, p, False, s),
        "object": sx.BinaryCrossentropy(True, 0.1)(z, x, w[:, 0]),
        "reduce": sx.reduce_loss(x, w, "mean"),
    }


def _mixed_total(*args):
    return sum(v.astype(jnp.float32).sum() for v in _mixed_losses(*args).values())


MIXED_JIT = jax.jit(lambda *a: (_mixed_losses(*a), jax.grad(_mixed_total, range(8))(*a)))


@pytest.mark.parametrize("logits_dtype", list(MIXED))
def test_mixed_precision_just_works(logits_dtype):
    """Labels, weights, label smoothing, pos_weight, alpha and gamma each in another float dtype
    than the logits (Keras users hit dtype errors there): no error, the logits' dtype out, every
    gradient finite and in its argument's dtype, values as in float64."""
    z0 = np.array([[0.0, 1.0, 0.3], [1.0, 0.0, 0.75]])
    x0 = np.array([[-3.0, 2.0, 9.0], [0.5, -0.25, 4.0]])
    with jax.enable_x64(True):
        dtypes = (logits_dtype,) + MIXED[logits_dtype]
        p0 = np.asarray(jax.nn.sigmoid(jnp.asarray(x0, logits_dtype)), np.float64)
        values = (x0, z0, [[1.0], [2.0]], 0.1, 2.0, 0.25, 2.0, p0)
        args = [jnp.asarray(v, d) for v, d in zip(values, dtypes + (logits_dtype,), strict=False)]
        out, grads = MIXED_JIT(*args)
        ref = MIXED_JIT(*[jnp.asarray(v, jnp.float64) for v in values])[0]
    for name, v in out.items():
        assert v.dtype == jnp.dtype(logits_dtype), (name, v.dtype)
        tol = 8 * max(float(jnp.finfo(d).eps) for d in dtypes)
        np.testing.assert_allclose(
            np.asarray(v, np.float64), np.asarray(ref[name]), rtol=tol, atol=tol, err_msg=name
        )
    for a, g in zip(args, grads, strict=False):
        assert g.dtype == a.dtype
        assert np.all(np.isfinite(np.asarray(g, np.float64)))


# --------------------------------------------------------------------------- shapes, jit, vmap


def _all_elementwise(z, x):
    """Value and (labels, logits) gradients of every elementwise loss, in one program."""
    out = []
    for fn in (
        lambda z, x: sx.sigmoid_cross_entropy_with_logits(z, x),
        lambda z, x: sx.weighted_sigmoid_cross_entropy_with_logits(z, x, 1.5),
        lambda z, x: sx.sigmoid_focal_loss(z, x, alpha=0.25, gamma=0.5),
        lambda z, x: sx.binary_cross_entropy(z, jax.nn.sigmoid(x)),
    ):
        v, vjp = jax.vjp(fn, z, x)
        out.append((v,) + vjp(jnp.ones_like(v)))
    return out


ALL_JIT = jax.jit(_all_elementwise)
ALL_VMAP = jax.jit(jax.vmap(_all_elementwise))


def test_shapes_scalar_to_rank_4_under_jit_and_vmap():
    """Every elementwise loss and its gradients keep the logits' shape from scalars to rank 4
    (traced only), and jit and vmap (over the leading axis) agree with each other and with the
    flat evaluation on a scalar and a rank-4 input."""
    for shape in SHAPES:
        spec = jax.ShapeDtypeStruct(shape, jnp.float32)
        for out in jax.eval_shape(_all_elementwise, spec, spec):
            assert all(o.shape == shape for o in out)
        for loss in (
            lambda z, x: sx.sigmoid_cross_entropy(z, x),
            lambda z, x: sx.BinaryCrossentropy(from_logits=True)(z, x),
        ):
            if shape:
                assert jax.eval_shape(loss, spec, spec).shape == ()
            if len(shape) >= 2:
                assert jax.eval_shape(jax.vmap(loss), spec, spec).shape == shape[:1]
    rng = np.random.default_rng(4)
    for shape in (SHAPES[0], SHAPES[-1]):
        x = (rng.normal(size=shape) * 5).astype(np.float32)
        z = rng.uniform(size=shape).astype(np.float32)
        jitted = ALL_JIT(z, x)
        flat = ALL_JIT(np.resize(z.ravel(), N), np.resize(x.ravel(), N))  # one compiled size
        for got, want in zip(jitted, flat, strict=False):
            for a, b in zip(got, want, strict=False):
                np.testing.assert_allclose(a.ravel(), b[: a.size], rtol=4e-7, atol=1e-30)
        if shape:
            for got, want in zip(ALL_VMAP(z, x), jitted, strict=False):
                for a, b in zip(got, want, strict=False):
                    np.testing.assert_allclose(a, b, rtol=4e-7, atol=1e-30)


# --------------------------------------------------------------------------- checkify

CHECKED = jax.jit(
    checkify.checkify(lambda z, x, ids: sx.validate_inputs(z, x, segment_ids=ids, num_segments=4))
)
CHECKED_DENSE = jax.jit(checkify.checkify(lambda z, x: sx.validate_inputs(z, x)))


@fuzz()
@given(data=st.data())
def test_checkify_reports_exactly_the_bad_inputs(data):
    """Labels outside [0, 1] (NaN included; < 0 allowed as padding with segment ids), non-finite
    logits, segment ids outside [0, 4): reported, with the first bad flat index; valid inputs:
    no error."""
    n = N
    z = data.draw(
        hnp.arrays(
            np.float32,
            n,
            elements=st.one_of(
                st.floats(0, 1, width=32),
                st.sampled_from([0.0, 1.0]),
                st.sampled_from([-1.0, 1.5, np.nan, -np.inf, np.inf]),
            ),
        ),
        "labels",
    )
    x = data.draw(
        hnp.arrays(
            np.float32,
            n,
            elements=st.one_of(
                st.floats(width=32, allow_nan=False, allow_infinity=False),
                st.sampled_from([np.nan, np.inf, -np.inf]),
            ),
        ),
        "logits",
    )
    ids = data.draw(hnp.arrays(np.int32, n, elements=st.integers(-2, 5)), "segment ids")
    if data.draw(st.booleans(), "all valid"):
        z = np.where((z >= 0) & (z <= 1), z, 0.5).astype(np.float32)
        x = np.where(np.isfinite(x), x, 0.0).astype(np.float32)
        ids = np.clip(ids, 0, 3)
    err, _ = CHECKED_DENSE(z, x)
    bad_z = ~((z >= 0) & (z <= 1))
    bad_x = ~np.isfinite(x)
    msg = err.get()
    if bad_z.any():
        assert (
            f"labels must lie in [0, 1]; found {bad_z.sum()} bad label(s), first at flat index "
            f"{np.argmax(bad_z)}." in msg
        )
    elif bad_x.any():
        assert (
            f"logits must be finite; found {bad_x.sum()} NaN/inf logit(s), first at flat "
            f"index {np.argmax(bad_x)}." in msg
        )
    else:
        assert msg is None
    err, _ = CHECKED(z, x, ids)
    bad_z = ~((z <= 1) & ~np.isnan(z))  # padding (< 0) is fine with segment ids
    bad_ids = (ids < 0) | (ids >= 4)
    msg = err.get()
    if bad_z.any():
        assert f"first at flat index {np.argmax(bad_z)}." in msg and "labels" in msg
    elif bad_x.any():
        assert "logits must be finite" in msg
    elif bad_ids.any():
        assert (
            f"segment ids must lie in [0, 4); found {bad_ids.sum()} out of range, first at "
            f"flat index {np.argmax(bad_ids)}."
        ) in msg
    else:
        assert msg is None
    record("checkify examples", np.zeros(1))


def test_checkify_integer_labels_and_eager():
    err, _ = CHECKED_DENSE(
        jnp.array([0, 1, 2] + [0] * (N - 3), jnp.int32).astype(jnp.float32), jnp.zeros(N)
    )
    assert "first at flat index 2" in err.get()
    with pytest.raises(ValueError, match="validate_inputs: labels must lie in") as raised:
        sx.validate_inputs(jnp.array([0, 3]))  # int labels are used as is: checked too
    assert type(raised.value) is ValueError  # eagerly a plain ValueError, not checkify's
    sx.validate_inputs(jnp.array([True, False]), jnp.array([1.0, -1.0]))


# --------------------------------------------------------------------------- sanity of helpers


def test_reference_helpers():
    np.testing.assert_allclose(np.asarray(r_sigmoid(LD(0)), np.float64), 0.5)
    assert float(r_reduce(np.ones(3), np.array([0.0, -0.0, 1.0]), "sum_by_nonzero_weights")) == 1
    assert keras_weight_ok((2,), (2, 3)) and not keras_weight_ok((4,), (2, 3))
    assert v1_weights_ok((2, 1), (2, 3)) and not v1_weights_ok((2,), (2, 3))
