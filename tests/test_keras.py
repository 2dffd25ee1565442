"""sigmoid_xent.keras: Keras 3 ``Loss`` subclasses, compared against the installed Keras itself.

Skipped when keras is not installed. Values are compared with Keras's own losses on the same
inputs (in float64 where Keras's float32 rounding would dominate: its ``1 - sigmoid(x)``), and
inside ``compile``/``fit``/``evaluate`` on the same model. The only hard-coded numbers are the
examples of the TensorFlow, Keras and TF-Ranking reference pages.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

os.environ.setdefault("KERAS_BACKEND", "jax")

import pytest  # noqa: E402

keras = pytest.importorskip("keras")
if keras.backend.backend() != "jax":  # pragma: no cover - depends on the environment
    pytest.skip(f"Keras runs on {keras.backend.backend()!r}, not jax", allow_module_level=True)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from conftest import ci_examples  # noqa: E402
from hypothesis import example, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import sigmoid_xent as sx  # noqa: E402
from sigmoid_xent import keras as sk  # noqa: E402
from sigmoid_xent import ranking  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
REDUCTIONS = ["sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none", None]
PAIRS = [
    (sk.BinaryCrossentropy, keras.losses.BinaryCrossentropy),
    (sk.BinaryFocalCrossentropy, keras.losses.BinaryFocalCrossentropy),
]


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter that imports this checkout's sigmoid_xent."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", **env}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=300,
    )


def _data(shape, from_logits, seed=0, scale=4.0):
    rng = np.random.default_rng(seed)
    y_true = (rng.random(shape) < 0.5).astype(np.float64)
    y_true[..., :1] = rng.random(shape[:-1] + (1,))  # soft labels too
    logits = scale * rng.standard_normal(shape)
    y_pred = logits if from_logits else 1 / (1 + np.exp(-logits))
    return y_true, y_pred


def _weights(kind: str, per_sample_shape, y_shape, seed=1):
    rng = np.random.default_rng(seed)
    shapes = {
        "none": None,
        "scalar": (),
        "batch": per_sample_shape[:1],
        "batch_1": per_sample_shape[:1] + (1,),
        "per_sample": per_sample_shape,
        "per_sample_1": per_sample_shape + (1,),
        "leading_1": (1,) + per_sample_shape[1:],
    }
    shape = shapes[kind]
    if shape is None:
        return None
    return rng.random(shape) * 2  # non-uniform, some near 0


def _both(ours_cls, keras_cls, kwargs, y_true, y_pred, sw, dtype="float64"):
    """(ours, Keras's) on the same float64 inputs; Keras computes float64 (its means in float32)."""
    with jax.enable_x64(True):
        ours = ours_cls(**kwargs, dtype=dtype)(y_true, y_pred, sample_weight=sw)
        theirs = keras_cls(**kwargs, dtype=dtype)(y_true, y_pred, sample_weight=sw)
        return np.asarray(ours), np.asarray(theirs), ours.dtype, theirs.dtype


# --------------------------------------------------------------------------- values vs Keras


@pytest.mark.parametrize("ours_cls, keras_cls", PAIRS)
@ci_examples(15)  # shapes and options drawn: each example compiles ours and Keras's ops
# [batch, 2] per-sample losses with [batch, 2, 1] weights (Keras drops the weights' last 1).
@example(
    from_logits=True,
    label_smoothing=0.0,
    reduction=REDUCTIONS[0],
    weights="per_sample_1",
    layout=((4, 2, 3), -1),
    focal={"apply_class_balancing": False, "alpha": 0.25, "gamma": 2.0},
    seed=0,
)
@given(
    from_logits=st.booleans(),
    label_smoothing=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    reduction=st.sampled_from(REDUCTIONS),
    weights=st.sampled_from(
        ["none", "scalar", "batch", "batch_1", "per_sample", "per_sample_1", "leading_1"]
    ),
    layout=st.sampled_from(
        [((6, 3), -1), ((6, 3), 0), ((4, 2, 3), -1), ((4, 2, 3), 1), ((5, 1), -1)]
    ),
    focal=st.fixed_dictionaries(
        {
            "apply_class_balancing": st.booleans(),
            "alpha": st.sampled_from([0.0, 0.25, 0.9]),
            "gamma": st.sampled_from([0.0, 0.5, 2.0, 3.7]),
        }
    ),
    seed=st.integers(0, 2**16),
)
def test_values_equal_keras(
    ours_cls, keras_cls, from_logits, label_smoothing, reduction, weights, layout, focal, seed
):
    shape, axis = layout
    kwargs = dict(from_logits=from_logits, label_smoothing=label_smoothing, axis=axis)
    kwargs["reduction"] = reduction
    if ours_cls is sk.BinaryFocalCrossentropy:
        kwargs.update(focal)
    # |logit| < 15: Keras's focal loss goes through a clipped sigmoid, which binds beyond ~16.
    y_true, y_pred = _data(shape, from_logits, seed, scale=3.0)
    per_sample = tuple(d for i, d in enumerate(shape) if i != axis % len(shape))
    sw = _weights(weights, per_sample, shape, seed + 1)
    try:
        with jax.enable_x64(True):
            keras_cls(**kwargs, dtype="float64")(y_true, y_pred, sample_weight=sw)
    except ValueError:  # a weight shape Keras cannot apply ([batch] for 3-D inputs): ours names it
        with pytest.raises(ValueError, match=r"`sample_weight` of shape"):
            ours_cls(**kwargs)(y_true, y_pred, sample_weight=sw)
        return
    ours, theirs, ours_dtype, theirs_dtype = _both(ours_cls, keras_cls, kwargs, y_true, y_pred, sw)
    assert ours_dtype == theirs_dtype
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=2e-6, atol=1e-12)


@pytest.mark.parametrize("ours_cls, keras_cls", PAIRS)
@pytest.mark.parametrize("from_logits", [False, True])
def test_float32_values_equal_keras(ours_cls, keras_cls, from_logits):
    """The default dtype: Keras's float32 result (its own rounding) to a few ulp."""
    y_true, y_pred = _data((8, 5), from_logits, scale=2.0)
    y_true, y_pred = y_true.astype(np.float32), y_pred.astype(np.float32)
    sw = np.linspace(0.0, 2.0, 8, dtype=np.float32)
    ours = ours_cls(from_logits=from_logits)(y_true, y_pred, sample_weight=sw)
    theirs = keras_cls(from_logits=from_logits)(y_true, y_pred, sample_weight=sw)
    assert ours.dtype == theirs.dtype == jnp.float32
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


@pytest.mark.parametrize("ours_cls, keras_cls", PAIRS)
def test_labels_batch_with_predictions_batch_1(ours_cls, keras_cls):
    """Labels [batch] and predictions [batch, 1]: Keras expands the labels, so do we."""
    y_true = np.array([0.0, 1.0, 1.0, 0.0])
    y_pred = np.array([[0.2], [0.7], [0.1], [0.9]])
    sw = np.array([1.0, 0.5, 2.0, 0.0])
    for reduction in ("sum_over_batch_size", "none"):
        ours, theirs, _, _ = _both(
            ours_cls, keras_cls, {"reduction": reduction}, y_true, y_pred, sw
        )
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, rtol=2e-6)


@pytest.mark.parametrize("ours_cls, keras_cls", PAIRS)
def test_epsilon_is_keras3_clipping(ours_cls, keras_cls):
    """p = 0 and 1 on probabilities: Keras 3's clip (not tf.keras 2's extra epsilon)."""
    y_true = np.array([[0.0, 1.0, 1.0, 0.0]], np.float32)
    y_pred = np.array([[1.0, 0.0, 1.0, 0.0]], np.float32)
    kwargs = {"reduction": "none", "axis": 0}
    ours = ours_cls(**kwargs)(y_true, y_pred)
    theirs = keras_cls(**kwargs)(y_true, y_pred)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    tf_keras_2 = sx.binary_cross_entropy(y_true, y_pred)[0]
    if ours_cls is sk.BinaryCrossentropy:
        assert not np.allclose(ours, tf_keras_2, rtol=1e-3)
    keras.config.set_epsilon(1e-4)  # read at call time, as Keras does
    try:
        np.testing.assert_allclose(
            ours_cls(**kwargs)(y_true, y_pred), keras_cls(**kwargs)(y_true, y_pred), rtol=1e-6
        )
    finally:
        keras.config.set_epsilon(1e-7)


def test_focal_from_logits_exact_where_keras_saturates():
    """Beyond |logit| ~ 16 Keras's clipped sigmoid saturates; ours stays exact."""
    x = np.array([[-40.0, 25.0, 60.0]], np.float32)
    z = np.array([[1.0, 0.0, 1.0]], np.float32)
    loss = sk.BinaryFocalCrossentropy(from_logits=True, gamma=2.0, reduction="none", axis=0)
    got = np.asarray(loss(z, x))
    np.testing.assert_allclose(got, np.asarray(sx.sigmoid_focal_loss(z, x, alpha=None))[0])
    np.testing.assert_allclose(got[:2], [40.0, 25.0], rtol=1e-6)  # u -> 1, bce -> |x|
    keras_own = keras.losses.BinaryFocalCrossentropy(
        from_logits=True, gamma=2.0, reduction="none", axis=0
    )(z, x)
    assert np.all(np.asarray(keras_own)[:2] < 17)  # -log(1e-7): Keras's ceiling


@pytest.mark.parametrize("ours_cls, keras_cls", PAIRS)
def test_gradients_equal_keras(ours_cls, keras_cls):
    y_true, y_pred = _data((6, 4), True, seed=3, scale=3.0)
    sw = np.linspace(0.1, 2.0, 6)
    for from_logits in (True, False):
        pred = y_pred if from_logits else 1 / (1 + np.exp(-y_pred))
        kw = {"from_logits": from_logits, "label_smoothing": 0.1, "dtype": "float64"}
        with jax.enable_x64(True):
            g_ours = jax.jit(jax.grad(lambda p, kw=kw: ours_cls(**kw)(y_true, p, sw)))(pred)
            g_keras = jax.jit(jax.grad(lambda p, kw=kw: keras_cls(**kw)(y_true, p, sw)))(pred)
        np.testing.assert_allclose(g_ours, g_keras, rtol=1e-5, atol=1e-12)


def test_gradient_of_the_core_at_30():
    loss = sk.BinaryCrossentropy(from_logits=True, reduction="sum")
    g = jax.grad(lambda x: loss(jnp.ones((1, 1)), x))(jnp.full((1, 1), 30.0))
    assert float(g[0, 0]) == pytest.approx(-9.357623e-14, rel=1e-6)


@pytest.mark.parametrize(
    "loss, keras_nan",
    [
        (sk.BinaryCrossentropy(from_logits=True), True),
        (sk.BinaryCrossentropy(from_logits=True, reduction="sum"), True),
        (sk.BinaryFocalCrossentropy(from_logits=True), False),
        (sk.BinaryFocalCrossentropy(True, gamma=0.5, from_logits=True), False),
        (sk.BinaryFocalCrossentropy(from_logits=True, gamma=0.0), False),
    ],
    ids=["bce", "bce_sum", "focal", "focal_balanced_gamma_half", "focal_gamma_0"],
)
def test_finite_at_infinite_logits(loss, keras_nan):
    z = jnp.array([[1.0, 0.0, 1.0, 0.0]])
    x = jnp.array([[jnp.inf, -jnp.inf, 3.0, -2.0]])
    value, grad = jax.jit(jax.value_and_grad(lambda x: loss(z, x)))(x)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    finite_part = loss(z[:, 2:], x[:, 2:])
    # One sample, the mean over its 4 items: the 2 agreeing infinite logits add 0.
    assert float(value) == pytest.approx(0.5 * float(finite_part), rel=1e-6)
    if keras_nan:  # the reason for this test: Keras's own loss is NaN there
        config = {k: v for k, v in loss.get_config().items() if k not in ("dtype", "requires")}
        assert np.isnan(keras.losses.BinaryCrossentropy(**config)(z, x))


def test_focal_probability_gradient_finite_at_the_edges():
    """p_t = 1 with gamma = 0 or 0 < gamma < 1: no NaN from the factor's derivative."""
    z = jnp.array([[1.0, 0.0, 1.0]])
    p = jnp.array([[1.0, 0.0, 0.5]])
    for gamma in (0.0, 0.5, 2.0):
        loss = sk.BinaryFocalCrossentropy(gamma=gamma)
        value, grad = jax.jit(jax.value_and_grad(lambda p, loss=loss: loss(z, p)))(p)
        keras_value = keras.losses.BinaryFocalCrossentropy(gamma=gamma)(z, p)
        np.testing.assert_allclose(value, keras_value, rtol=1e-6)
        assert np.all(np.isfinite(grad))


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("ours_cls, keras_cls", PAIRS)
@pytest.mark.parametrize("dtype", [None, "bfloat16", "mixed_float16", "policy_bfloat16"])
def test_dtype_argument_as_keras(ours_cls, keras_cls, dtype):
    if dtype == "policy_bfloat16":
        dtype = keras.DTypePolicy("mixed_bfloat16")
    y_true, y_pred = _data((6, 3), True, seed=5, scale=2.0)
    sw = np.linspace(0.5, 1.5, 6)
    ours = ours_cls(from_logits=True, dtype=dtype)(y_true, y_pred, sw)
    theirs = keras_cls(from_logits=True, dtype=dtype)(y_true, y_pred, sw)
    assert ours.dtype == theirs.dtype
    # Ours is computed in float32 and rounded once; compare with the float64 value.
    with jax.enable_x64(True):
        exact = ours_cls(from_logits=True, dtype="float64")(
            np.asarray(jnp.asarray(y_true, ours.dtype), np.float64),
            np.asarray(jnp.asarray(y_pred, ours.dtype), np.float64),
            np.asarray(jnp.asarray(sw, ours.dtype), np.float64),
        )
    tol = float(jnp.finfo(ours.dtype).eps)
    np.testing.assert_allclose(np.float64(ours), exact, rtol=2 * tol)


def test_16_bit_logits_computed_in_float32():
    """A bfloat16 y_pred (a mixed-precision model's output) is converted to float32 first."""
    z = jnp.array([[1.0, 0.0, 1.0]])
    x = jnp.array([[1.5, -0.1, 7.0]], jnp.bfloat16)
    got = sk.BinaryCrossentropy(from_logits=True)(z, x)
    assert got.dtype == jnp.float32
    want = sx.sigmoid_cross_entropy_with_logits(z, x.astype(jnp.float32)).mean()
    assert float(got) == pytest.approx(float(want), rel=1e-6)


# --------------------------------------------------------------------------- masks


def test_keras_mask_applied_as_for_keras_losses():
    """A Masking layer's mask reaches our loss through Keras's base, as for its own losses."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 5, 3)).astype(np.float32)
    x[:, 3:] = 0.0  # masked time steps
    x[::2, 2] = 0.0
    y = (rng.random((8, 5, 1)) < 0.5).astype(np.float32)
    sw = np.linspace(0.2, 2.0, 8).astype(np.float32)[:, None]  # per sample: [batch, 1]
    values = {}
    for key, loss in {
        "keras": keras.losses.BinaryCrossentropy(from_logits=True),
        "ours": sk.BinaryCrossentropy(from_logits=True),
    }.items():
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((5, 3)), keras.layers.Masking(0.0), keras.layers.Dense(1)]
        )
        model.compile(loss=loss)
        values[key] = model.evaluate(x, y, sample_weight=sw, batch_size=8, verbose=0)
        if key == "ours":  # np.asarray drops the mask Keras attached to the output
            unmasked = loss(y, np.asarray(model(x)), sample_weight=sw)
    assert values["ours"] == pytest.approx(values["keras"], rel=1e-6)
    assert abs(values["ours"] - float(unmasked)) > 1e-3  # the mask did something


# --------------------------------------------------------------------------- training


def _model(seed=0, outputs=1, inputs=4):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(outputs),
        ]
    )


def _train_data(n=48, outputs=1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    y = (rng.random((n, outputs)) < 0.4).astype(np.float32)
    sw = rng.random(n).astype(np.float32) * 3
    return x, y, sw


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (
            sk.BinaryCrossentropy(from_logits=True, label_smoothing=0.1),
            keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.1),
        ),
        (
            sk.BinaryFocalCrossentropy(from_logits=True, apply_class_balancing=True, gamma=1.5),
            keras.losses.BinaryFocalCrossentropy(
                from_logits=True, apply_class_balancing=True, gamma=1.5
            ),
        ),
    ],
    ids=["bce", "focal"],
)
def test_fit_and_evaluate_with_sample_weight_equal_keras(ours, theirs):
    x, y, sw = _train_data(outputs=3)
    results = []
    for loss in (ours, theirs):
        model = _model(outputs=3)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
        before = model.evaluate(x, y, sample_weight=sw, batch_size=16, verbose=0)
        history = model.fit(x, y, sample_weight=sw, batch_size=16, epochs=2, verbose=0)
        results.append((before, history.history["loss"]))
    (before_ours, hist_ours), (before_keras, hist_keras) = results
    assert before_ours == pytest.approx(before_keras, rel=1e-5)
    np.testing.assert_allclose(hist_ours, hist_keras, rtol=1e-5)


def test_plain_jax_object_is_wrong_in_keras():
    """The issue's premise: Keras weights the scalar of sigmoid_xent.BinaryCrossentropy again."""
    x, y, sw = _train_data()
    values = []
    for loss in (sx.BinaryCrossentropy(from_logits=True), sk.BinaryCrossentropy(from_logits=True)):
        model = _model()
        model.compile(loss=loss)
        values.append(model.evaluate(x, y, sample_weight=sw, batch_size=48, verbose=0))
    model = _model()
    model.compile(loss=keras.losses.BinaryCrossentropy(from_logits=True))
    reference = model.evaluate(x, y, sample_weight=sw, batch_size=48, verbose=0)
    assert values[1] == pytest.approx(reference, rel=1e-6)
    assert abs(values[0] - reference) > 1e-3


def test_mixed_bfloat16_loss_in_float32():
    x, y, sw = _train_data()
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        values = []
        for loss in (
            sk.BinaryCrossentropy(from_logits=True),
            keras.losses.BinaryCrossentropy(from_logits=True),
        ):
            model = _model()
            model.compile(optimizer="sgd", loss=loss)
            values.append(model.evaluate(x, y, sample_weight=sw, batch_size=48, verbose=0))
            out = model(x)
            assert out.dtype == jnp.bfloat16
        assert loss.dtype == "float32"
        ours = sk.BinaryCrossentropy(from_logits=True)(y, out, sw)
        assert ours.dtype == jnp.float32
        want = sx.reduce_loss(
            sx.sigmoid_cross_entropy_with_logits(y, out.astype(jnp.float32))[:, 0],
            sw,
            "sum_over_batch_size",
        )
        assert float(ours) == pytest.approx(float(want), rel=1e-6)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert values[0] == pytest.approx(values[1], rel=1e-5)


# --------------------------------------------------------------------------- ranking


def test_ranking_seed_values():
    loss = sk.SigmoidCrossEntropyLoss()
    assert float(loss(np.array([[1.0, 0.0]]), np.array([[0.6, 0.8]]))) == pytest.approx(
        0.8042943, abs=1e-7
    )
    labels = np.array([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    logits = np.array([[0.6, 0.8, 0.0], [0.5, 0.8, 0.4]])
    assert float(loss(labels, logits)) == np.float32(0.6444636)
    assert float(jax.jit(loss)(labels, logits)) == np.float32(0.6444636)  # as inside fit
    assert float(sk.SigmoidCrossEntropyLoss(reduction="auto")(labels, logits)) == np.float32(
        0.6444636
    )


@pytest.mark.parametrize(
    "reduction, core",
    [
        ("sum_over_batch_size", "sum_over_batch_size"),
        ("auto", "sum_over_batch_size"),
        ("mean", "sum_over_batch_size"),
        ("SUM", "sum"),
        (None, "none"),
        ("mean_with_sample_weight", "mean"),
        ("sum_by_nonzero_weights", "sum_by_nonzero_weights"),
        ("per_list", "per_list"),
        ("list_mean", "list_mean"),
    ],
)
@pytest.mark.parametrize("weights", ["none", "batch", "item"])
def test_ranking_reductions_and_weights(reduction, core, weights):
    rng = np.random.default_rng(7)
    labels = (rng.random((4, 5)) < 0.4).astype(np.float32)
    labels[0, 3:] = -1.0
    labels[2, 1] = -1.0
    logits = rng.standard_normal((4, 5)).astype(np.float32)
    sw = {
        "none": None,
        "batch": np.array([1.0, 0.0, 2.0, 0.5], np.float32),
        "batch_1": np.array([[1.0], [0.0], [2.0], [0.5]], np.float32),
        "item": rng.random((4, 5)).astype(np.float32),
        "scalar": np.float32(1.5),
    }[weights]
    loss = sk.SigmoidCrossEntropyLoss(reduction=reduction)
    got = loss(labels, logits, sample_weight=sw)
    want = ranking.sigmoid_cross_entropy(labels, logits, weights=sw, reduction=core)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert loss.get_config()["reduction"] == reduction


def test_ranking_batch_weights_are_per_list_not_per_position():
    labels = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, -1.0]], np.float32)
    logits = np.array([[0.3, -1.0, 2.0], [0.5, 0.1, -0.4], [1.0, -2.0, 0.0]], np.float32)
    w = np.array([1.0, 0.0, 3.0], np.float32)
    loss = sk.SigmoidCrossEntropyLoss(reduction="sum")
    per_item = sx.sigmoid_cross_entropy_with_logits(labels, logits) * (labels >= 0)
    np.testing.assert_allclose(loss(labels, logits, w), (per_item * w[:, None]).sum(), rtol=1e-6)
    np.testing.assert_allclose(loss(labels, logits, w[:, None]), loss(labels, logits, w))
    # Keras's base would have weighted the positions (columns) instead.
    assert not np.isclose(float(loss(labels, logits, w)), float((per_item * w[None, :]).sum()))


def test_ranking_mask_is_padding():
    from keras.src.backend import set_keras_mask  # how Keras attaches masks to tensors

    labels = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], np.float32)
    logits = jnp.array([[0.6, 0.8, 0.3], [0.5, 0.8, 0.4]])
    mask = jnp.array([[True, True, False], [True, True, True]])
    set_keras_mask(logits, mask)
    got = sk.SigmoidCrossEntropyLoss()(labels, logits)
    padded = np.where(np.asarray(mask), labels, -1.0)
    assert float(got) == float(ranking.sigmoid_cross_entropy(padded, logits))


def test_ranking_fit_and_evaluate_with_per_list_weights():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((32, 4)).astype(np.float32)
    y = (rng.random((32, 6)) < 0.3).astype(np.float32)
    y[::3, 4:] = -1.0  # padded items
    sw = rng.random(32).astype(np.float32) * 2
    model = _model(outputs=6)
    model.compile(optimizer="sgd", loss=sk.SigmoidCrossEntropyLoss())
    evaluated = model.evaluate(x, y, sample_weight=sw, batch_size=32, verbose=0)
    want = ranking.sigmoid_cross_entropy(y, model(x), weights=sw)
    assert evaluated == pytest.approx(float(want), rel=1e-6)
    history = model.fit(x, y, sample_weight=sw, batch_size=8, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


# --------------------------------------------------------------------------- serialization


CONFIGURED = [
    sk.BinaryCrossentropy(from_logits=True, label_smoothing=0.2, axis=0, reduction="SUM"),
    sk.BinaryCrossentropy(dtype="bfloat16", name="bce", reduction="auto"),
    sk.BinaryFocalCrossentropy(
        apply_class_balancing=True, alpha=0.4, gamma=1.5, from_logits=True, reduction=None
    ),
    sk.BinaryFocalCrossentropy(dtype=keras.DTypePolicy("mixed_bfloat16")),
    sk.SigmoidCrossEntropyLoss(reduction="auto", name="rank"),
    sk.SigmoidCrossEntropyLoss(reduction="list_mean", dtype="float16"),
]


@pytest.mark.parametrize("loss", CONFIGURED, ids=lambda loss: loss.name)
def test_config_round_trip(loss):
    config = loss.get_config()
    again = type(loss).from_config(config)
    assert again.get_config() == config
    assert again.dtype == loss.dtype and again.reduction == loss.reduction
    serialized = keras.saving.serialize_keras_object(loss)
    assert serialized["registered_name"] == f"sigmoid_xent>{type(loss).__name__}"
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is type(loss) and revived.get_config() == config
    y_true, y_pred = np.array([[1.0, 0.0, 1.0]]), np.array([[0.3, -0.2, 2.0]])
    if getattr(loss, "from_logits", True) is False:
        y_pred = 1 / (1 + np.exp(-y_pred))
    np.testing.assert_array_equal(revived(y_true, y_pred), loss(y_true, y_pred))


def test_saved_model_loads_in_a_new_process(tmp_path):
    x, y, sw = _train_data(n=16, outputs=3)
    model = _model(outputs=3)
    loss = sk.BinaryFocalCrossentropy(from_logits=True, gamma=1.5, reduction="auto")
    model.compile(optimizer="sgd", loss=loss)
    model.fit(x, y, sample_weight=sw, epochs=1, verbose=0)
    value = model.evaluate(x, y, sample_weight=sw, batch_size=16, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    np.savez(tmp_path / "data.npz", x=x, y=y, sw=sw)
    result = _run(
        f"""
        import json, numpy as np, keras
        import sigmoid_xent.keras
        model = keras.models.load_model({str(path)!r})
        d = np.load({str(tmp_path / "data.npz")!r})
        value = model.evaluate(d["x"], d["y"], sample_weight=d["sw"], batch_size=16, verbose=0)
        print(json.dumps({{"cls": type(model.loss).__module__ + "." + type(model.loss).__name__,
                          "config": model.loss.get_config(), "value": value}}))
        """,
        KERAS_BACKEND="jax",
    )
    assert result.returncode == 0, result.stderr
    import json

    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["cls"] == "sigmoid_xent.keras.BinaryFocalCrossentropy"
    assert out["config"] == loss.get_config()
    assert out["value"] == pytest.approx(value, rel=1e-6)


def test_loading_without_the_import_names_it(tmp_path):
    model = _model(outputs=3)
    model.compile(optimizer="sgd", loss=sk.BinaryCrossentropy(from_logits=True))
    path = tmp_path / "model.keras"
    model.save(path)
    result = _run(
        f"""
        import keras
        keras.models.load_model({str(path)!r})
        """,
        KERAS_BACKEND="jax",
    )
    assert result.returncode != 0
    assert "Could not locate class 'BinaryCrossentropy'" in result.stderr
    assert "import sigmoid_xent.keras" in result.stderr


# --------------------------------------------------------------------------- optional dependency

_BLOCK_KERAS = """
import importlib.abc, sys
class _NoKeras(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "keras" or name.startswith("keras."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _NoKeras())
"""


def test_without_keras():
    result = _run(
        _BLOCK_KERAS
        + """
import sigmoid_xent as sx
assert "sigmoid_xent.keras" not in sys.modules
assert float(sx.BinaryCrossentropy()([[0., 1.]], [[0.6, 0.4]])) > 0
try:
    import sigmoid_xent.keras
except ImportError as err:
    print("IMPORT ERROR:", err)
else:
    raise SystemExit("sigmoid_xent.keras imported without keras")
"""
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'sigmoid_xent[keras]'" in result.stdout


def test_other_backend_is_a_clear_error():
    result = _run(
        """
        try:
            import sigmoid_xent.keras
        except ImportError as err:
            print("IMPORT ERROR:", err)
        """,
        KERAS_BACKEND="numpy",
    )
    assert result.returncode == 0, result.stderr
    assert "'numpy' backend" in result.stdout and "KERAS_BACKEND=jax" in result.stdout


# --------------------------------------------------------------------------- bad arguments

BCE = "sigmoid_xent.keras.BinaryCrossentropy"
FOCAL = "sigmoid_xent.keras.BinaryFocalCrossentropy"
RANK = "sigmoid_xent.keras.SigmoidCrossEntropyLoss"


@pytest.mark.parametrize(
    "make, error, pattern",
    [
        (
            lambda: sk.BinaryCrossentropy(from_logits="yes"),
            TypeError,
            rf"{BCE}: `from_logits` must be a bool .* got 'yes' of type str",
        ),
        (
            lambda: sk.BinaryCrossentropy(label_smoothing=1.5),
            ValueError,
            rf"{BCE}: `label_smoothing` must lie in \[0, 1\], got 1.5\.",
        ),
        (
            lambda: sk.BinaryCrossentropy(label_smoothing="0.1"),
            TypeError,
            rf"{BCE}: `label_smoothing` must be a real number, got '0.1' of type str",
        ),
        (
            lambda: sk.BinaryCrossentropy(axis=1.0),
            TypeError,
            rf"{BCE}: `axis` must be an int .* got 1.0 of type float",
        ),
        (
            lambda: sk.BinaryCrossentropy(reduction="batch"),
            ValueError,
            rf"{BCE}: unknown reduction 'batch'; expected one of .*'sum_over_batch_size'.*"
            r"Keras's 'mean' is 'sum_over_batch_size'",
        ),
        (
            lambda: sk.BinaryCrossentropy(name=3),
            TypeError,
            rf"{BCE}: `name` must be a str or None, got 3 of type int",
        ),
        (
            lambda: sk.BinaryCrossentropy(dtype="int32"),
            ValueError,
            rf"{BCE}: `dtype` must give a floating compute dtype, got 'int32'",
        ),
        (
            lambda: sk.BinaryCrossentropy(dtype="float33"),
            ValueError,
            rf"{BCE}: `dtype` must be None, a float dtype name .* got 'float33'",
        ),
        (
            lambda: sk.BinaryFocalCrossentropy(alpha=1.2),
            ValueError,
            rf"{FOCAL}: `alpha` must lie in \[0, 1\], got 1.2\.",
        ),
        (
            lambda: sk.BinaryFocalCrossentropy(gamma=-1.0),
            ValueError,
            rf"{FOCAL}: `gamma` must lie in \[0, inf\), got -1\.",
        ),
        (
            lambda: sk.BinaryFocalCrossentropy(gamma=float("inf")),
            ValueError,
            rf"{FOCAL}: `gamma` must lie in \[0, inf\), got inf\.",
        ),
        (
            lambda: sk.BinaryFocalCrossentropy(apply_class_balancing=1),
            TypeError,
            rf"{FOCAL}: `apply_class_balancing` must be a bool .* got 1 of type int",
        ),
        (
            lambda: sk.SigmoidCrossEntropyLoss(reduction="weighted"),
            ValueError,
            rf"{RANK}: unknown reduction 'weighted'; expected one of .*'list_mean'.*",
        ),
        (
            lambda: sk.SigmoidCrossEntropyLoss(dtype="int32"),
            ValueError,
            rf"{RANK}: `dtype` must give a floating compute dtype, got 'int32'",
        ),
    ],
)
def test_construction_errors(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


@pytest.mark.parametrize(
    "call, pattern",
    [
        (
            lambda: sk.BinaryCrossentropy()(np.zeros((2, 3)), np.zeros((2, 4))),
            rf"{BCE}: `y_true` and `y_pred` must have the same shape .* y_true of shape \(2, 3\) "
            r"and y_pred of shape \(2, 4\)",
        ),
        (
            lambda: sk.BinaryCrossentropy(axis=2)(np.zeros((2, 3)), np.zeros((2, 3))),
            rf"{BCE}: `axis` 2 is out of range for y_pred of shape \(2, 3\)",
        ),
        (
            lambda: sk.BinaryFocalCrossentropy()(
                np.zeros((2, 3)), np.zeros((2, 3)), sample_weight=np.ones(3)
            ),
            rf"{FOCAL}: `sample_weight` of shape \(3,\) cannot be applied to the per-sample losses "
            r"of shape \(2,\)",
        ),
        (
            lambda: sk.SigmoidCrossEntropyLoss()(
                np.zeros((2, 3)), np.zeros((2, 3)), sample_weight=np.ones(3)
            ),
            rf"{RANK}: `sample_weight` must be a scalar, per list \(2,\) or \(2, 1\), or per item "
            r"\(2, 3\), got shape \(3,\)",
        ),
        (
            lambda: sk.SigmoidCrossEntropyLoss()(np.zeros(3), np.zeros(3)),
            rf"{RANK}: `y_true` and `y_pred` must both be \[batch, list_size\], got y_true of "
            r"shape \(3,\)",
        ),
    ],
)
def test_call_errors(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


@pytest.mark.parametrize("shape", [(3,), (1, 3), (4,), (2, 3)])
def test_sample_weight_shapes_keras_rejects(shape):
    """Where Keras's own loss fails on a weight shape, ours names it instead."""
    y = np.zeros((2, 3))
    with pytest.raises((ValueError, TypeError), match="ncompatible shapes"):
        keras.losses.BinaryCrossentropy()(y, y + 0.5, sample_weight=np.ones(shape))
    with pytest.raises(ValueError, match=r"`sample_weight` of shape"):
        sk.BinaryCrossentropy()(y, y + 0.5, sample_weight=np.ones(shape))


# --------------------------------------------------------------------------- where


def _nan_data(from_logits, shape=(6, 3), seed=3):
    """Labels, predictions and per-sample weights; a mask, and NaN/inf wherever it is False."""
    y_true, y_pred = _data(shape, from_logits, seed=seed)
    kept = np.ones(shape, bool)
    kept[1] = False  # a sample with no present element
    kept[3, 0] = kept[4, 1:] = False
    sw = np.linspace(0.5, 2.0, shape[0])
    y_true = np.where(kept, y_true, np.nan).astype(np.float32)
    y_pred = np.where(kept, y_pred, np.inf).astype(np.float32)
    sw = np.where(kept.any(-1), sw, np.nan).astype(np.float32)
    return y_true, y_pred, sw, kept


WHERE_LOSSES = [
    sk.BinaryCrossentropy(from_logits=True, label_smoothing=0.1),
    sk.BinaryCrossentropy(),
    sk.BinaryFocalCrossentropy(from_logits=True, apply_class_balancing=True),
    sk.BinaryFocalCrossentropy(gamma=1.5),
]
WHERE_IDS = ["bce_logits", "bce_probs", "focal_logits", "focal_probs"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("loss", WHERE_LOSSES, ids=WHERE_IDS)
def test_where_per_sample_is_the_call_on_the_kept_samples(loss, reduction):
    y_true, y_pred, sw, kept = _nan_data(loss.from_logits)
    rows = kept.all(-1)
    ours = type(loss).from_config({**loss.get_config(), "reduction": reduction})
    got = np.asarray(ours(y_true, y_pred, sw, where=rows[:, None]))
    want = np.asarray(ours(y_true[rows], y_pred[rows], sample_weight=sw[rows]))
    if reduction == "none" or reduction is None:
        assert np.all(got[~rows] == 0)
        got = got[rows]
    np.testing.assert_allclose(got, want, rtol=2e-6)


@pytest.mark.parametrize("loss", WHERE_LOSSES, ids=WHERE_IDS)
def test_where_sample_loss_is_the_mean_over_its_present_elements(loss):
    y_true, y_pred, sw, kept = _nan_data(loss.from_logits)
    none = type(loss).from_config({**loss.get_config(), "reduction": "none"})
    per_sample = np.array(
        [
            float(none(y_true[i, kept[i]][None], y_pred[i, kept[i]][None])[0])
            if kept[i].any()
            else 0.0
            for i in range(len(kept))
        ]
    )
    np.testing.assert_allclose(none(y_true, y_pred, where=kept), per_sample, rtol=2e-6)
    present = kept.any(-1)  # the empty sample counts nowhere: not in the size, not its weight
    np.testing.assert_allclose(
        loss(y_true, y_pred, sw, where=kept),
        np.sum(sw[present] * per_sample[present]) / 5,
        rtol=2e-6,
    )
    weighted = type(loss).from_config({**loss.get_config(), "reduction": "mean_with_sample_weight"})
    np.testing.assert_allclose(
        weighted(y_true, y_pred, sw, where=kept),
        np.sum(sw[present] * per_sample[present]) / np.sum(sw[present]),
        rtol=2e-6,
    )


RANKING_WHERE = [
    sk.SigmoidCrossEntropyLoss(reduction=r)
    for r in ["sum_over_batch_size", "sum", "mean_with_sample_weight", "per_list", "list_mean"]
]


@pytest.mark.parametrize("loss", RANKING_WHERE, ids=lambda loss: loss.get_config()["reduction"])
def test_ranking_where_is_padding(loss):
    y_true, y_pred, sw, kept = _nan_data(True)
    y_true = np.where(kept, np.round(np.nan_to_num(y_true)), np.nan).astype(np.float32)
    padded = np.where(kept, y_true, -1.0)
    got = loss(y_true, y_pred, sw, where=kept)
    want = loss(padded, np.where(kept, y_pred, 0.0), np.nan_to_num(sw))
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("loss", WHERE_LOSSES + RANKING_WHERE[:1], ids=WHERE_IDS + ["ranking"])
def test_where_gives_zero_gradients_and_no_nan_under_debug_nans(loss):
    # Eagerly: debug_nans checks every primitive's output (jit equals eager is the battery's).
    y_true, y_pred, sw, kept = _nan_data(loss.from_logits if hasattr(loss, "from_logits") else 1)
    args = tuple(map(jnp.asarray, (y_true, y_pred, sw)))
    where = jnp.asarray(kept)
    grad = jax.value_and_grad(lambda t, p, w: loss(t, p, w, where=where), argnums=(0, 1, 2))
    with jax.debug_nans(True):
        value, grads = grad(*args)
    assert np.isfinite(value)
    for g, absent in zip(grads, (~kept, ~kept, ~kept.any(-1)), strict=True):
        g = np.asarray(g)
        assert np.all(np.isfinite(g)) and np.all(g[absent] == 0)


def test_where_with_a_keras_mask_counts_both():
    from keras.src.backend import set_keras_mask

    y_true, y_pred, sw, kept = _nan_data(True)
    y_pred = jnp.asarray(np.nan_to_num(y_pred, posinf=3.0))
    keras_mask = jnp.array([True, True, False, True, True, True])  # per sample
    set_keras_mask(y_pred, keras_mask)
    loss = sk.BinaryCrossentropy(from_logits=True)
    both = np.asarray(kept) & np.asarray(keras_mask)[:, None]
    np.testing.assert_allclose(
        loss(y_true, y_pred, sw, where=kept),
        loss(y_true, np.asarray(y_pred), sw, where=both),
        rtol=1e-7,
    )


def test_where_errors_name_the_class():
    y = np.zeros((2, 3))
    with pytest.raises(TypeError, match=rf"{BCE}: `where` must be a boolean mask"):
        sk.BinaryCrossentropy()(y, y, where=np.ones((2, 3)))
    with pytest.raises(ValueError, match=rf"{RANK}: `where` of shape \(4,\) cannot be broadcast"):
        sk.SigmoidCrossEntropyLoss()(y, y, where=np.ones(4, bool))


def test_where_compiles_once_for_equal_losses():
    y_true, y_pred, sw, kept = _nan_data(True)
    sk.BinaryCrossentropy(from_logits=True)(y_true, y_pred, sw, where=kept)
    before = sk._masked_call._cache_size()
    for _ in range(2):  # a new, equal object each call
        sk.BinaryCrossentropy(from_logits=True)(y_true, y_pred, sw, where=kept)
    assert sk._masked_call._cache_size() == before
