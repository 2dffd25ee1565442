"""Behaviours every public loss shares, each one test parameterised over every loss (as rax).

A new loss gets the whole battery by being added to ``LOSSES``: jit equals eager, vmap equals a
loop, gradients finite for finite input (extremes included), dtype kept, a shape mismatch is a
clear error, a zero weight gives a zero gradient, repeated calls never retrace, and the strict
JAX modes (rank promotion "raise", dtype promotion "strict", x64, debug_nans) change nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sigmoid_xent as sx
from sigmoid_xent import compat, ranking
from sigmoid_xent.focal import plain_focal_loss

INF = float("inf")


@dataclasses.dataclass(frozen=True)
class Loss:
    """``fn(labels, logits, weights=None, where=None)`` of one public loss.

    ``weights`` (labels' shape) is ignored where unsupported; ``where`` is the loss's own mask.
    """

    name: str
    fn: Callable[..., jax.Array]
    weighted: bool = True  # whether ``weights`` (labels' shape) reaches the loss
    reduces: bool = False  # whether the result is a scalar
    # The weights the loss takes, from labels-shaped ones (outside debug_nans: slicing NaN
    # weights is the caller's operation, not the loss's).
    prepare: Callable[[jax.Array], jax.Array] = lambda w: w
    keeps_dtype: bool = True  # Keras computes in its dtype policy's float32, by design
    # Whether an infinite logit is an input (the linear head's logits are h @ w.T, where an
    # infinite h is a NaN row: not a finite input).
    infinite_logits: bool = True


def _elementwise(f: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    # An elementwise loss "weighted" the way users weight it: reduce_loss with weights.
    def loss(z, x, w=None, where=None):
        out = f(z, x, where=where)
        return out if w is None else sx.reduce_loss(out, w, "sum", where=where)

    return loss


def _keras_object(z, x, w=None, where=None):
    # Per-sample weights [batch, 1]: the first column of w.
    bce = sx.BinaryCrossentropy(from_logits=True, reduction="sum")
    if w is not None and w.shape[-1] != 1:
        w = w[:, :1]
    return bce(z, x, where=where) if w is None else bce(z, x, w, where=where)


def _ranking_object(z, x, w=None, where=None):
    return ranking.SigmoidCrossEntropyLoss(reduction="sum")(z, x, sample_weight=w, where=where)


LOSSES = [
    Loss("sigmoid_cross_entropy_with_logits", _elementwise(sx.sigmoid_cross_entropy_with_logits)),
    Loss(
        "weighted_sigmoid_cross_entropy_with_logits",
        _elementwise(
            lambda z, x, where: sx.weighted_sigmoid_cross_entropy_with_logits(
                z, x, 1.5, where=where
            )
        ),
    ),
    Loss(
        "sigmoid_focal_loss",
        _elementwise(
            lambda z, x, where: sx.sigmoid_focal_loss(z, x, alpha=0.25, gamma=2.0, where=where)
        ),
    ),
    # A real gamma takes the two-float exponential, an integer one the products.
    Loss(
        "sigmoid_focal_loss_real_gamma",
        _elementwise(
            lambda z, x, where: sx.sigmoid_focal_loss(z, x, alpha=0.25, gamma=2.5, where=where)
        ),
    ),
    Loss(
        "sigmoid_cross_entropy",
        lambda z, x, w=None, where=None: sx.sigmoid_cross_entropy(
            z, x, weights=1.0 if w is None else w, reduction="sum", where=where
        ),
        reduces=True,
    ),
    Loss(
        "binary_crossentropy",
        lambda z, x, w=None, where=None: sx.binary_crossentropy(
            z, x, from_logits=True, where=where
        ),
        weighted=False,
    ),
    Loss("BinaryCrossentropy", _keras_object, reduces=True, prepare=lambda w: w[:, :1]),
    Loss(
        "ranking.sigmoid_cross_entropy",
        lambda z, x, w=None, where=None: ranking.sigmoid_cross_entropy(
            z, x, weights=w, where=where, reduction="sum"
        ),
        reduces=True,
    ),
    Loss("ranking.SigmoidCrossEntropyLoss", _ranking_object, reduces=True),
    Loss(
        "reduce_loss",
        lambda z, x, w=None, where=None: sx.reduce_loss(
            sx.sigmoid_cross_entropy_with_logits(z, x, where=where), w, where=where
        ),
        reduces=True,
    ),
]
LOSSES += [
    Loss(
        "compat.optax.sigmoid_binary_cross_entropy",
        _elementwise(
            lambda z, x, where: compat.optax.sigmoid_binary_cross_entropy(x, z, where=where)
        ),
    ),
    Loss(
        "compat.optax.sigmoid_focal_loss",
        _elementwise(
            lambda z, x, where: compat.optax.sigmoid_focal_loss(x, z, alpha=0.25, where=where)
        ),
    ),
    Loss(
        "compat.torch.binary_cross_entropy_with_logits",
        lambda z, x, w=None, where=None: compat.torch.binary_cross_entropy_with_logits(
            x, z, w, "sum", pos_weight=1.5, where=where
        ),
        reduces=True,
    ),
    Loss(
        "compat.torch.sigmoid_focal_loss",
        _elementwise(lambda z, x, where: compat.torch.sigmoid_focal_loss(x, z, where=where)),
    ),
    Loss(
        "compat.rax.pointwise_sigmoid_loss",
        lambda z, x, w=None, where=None: compat.rax.pointwise_sigmoid_loss(
            x, z, where=where, weights=w, reduce_fn=jnp.sum
        ),
        reduces=True,
    ),
]


LOSSES += [
    Loss(
        "asymmetric_loss",
        _elementwise(lambda z, x, where: sx.asymmetric_loss(z, x, where=where)),
    ),
    Loss(
        "poly1_sigmoid_loss",
        _elementwise(lambda z, x, where: sx.poly1_sigmoid_loss(z, x, epsilon=1.0, where=where)),
    ),
    Loss(
        "quality_focal_loss",
        _elementwise(lambda z, x, where: sx.quality_focal_loss(z, x, beta=2.0, where=where)),
    ),
]


def _linear_head(z, x, w=None, where=None):
    # The fused head with an identity weight matrix: its logits are x itself, so every shared
    # behaviour (weights, where, NaN data, dtypes, vmap) is checked against the same data.
    eye = jnp.eye(x.shape[-1], dtype=x.dtype)
    return sx.linear_sigmoid_cross_entropy(x, eye, z, weights=w, where=where, reduction="sum")


LOSSES.append(
    Loss("linear_sigmoid_cross_entropy", _linear_head, reduces=True, infinite_logits=False)
)


def _keras_losses() -> list[Loss]:
    try:
        import sigmoid_xent.keras as sk
    except ImportError:
        return []

    def per_sample(cls, **kwargs):
        def fn(z, x, w=None, where=None):
            if w is not None and w.ndim == 2:
                w = w[:, 0]
            return cls(reduction="sum", **kwargs)(z, x, sample_weight=w, where=where)

        return fn

    return [
        Loss(
            f"keras.{cls.__name__}",
            per_sample(cls, **kwargs),
            weighted=False,  # per-sample weights: the battery's weights are per element
            reduces=True,
            keeps_dtype=False,
        )
        for cls, kwargs in [
            (sk.BinaryCrossentropy, {"from_logits": True}),
            (sk.BinaryFocalCrossentropy, {"from_logits": True}),
            (sk.SigmoidCrossEntropyLoss, {}),
        ]
    ]


LOSSES += _keras_losses()
IDS = [loss.name for loss in LOSSES]


def _data(shape=(4, 5), dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    z = (rng.uniform(size=shape) < 0.5).astype(np.float32)
    x = rng.normal(size=shape).astype(np.float32) * 4
    return jnp.asarray(z, dtype), jnp.asarray(x, dtype)


def _total(loss: Loss, w=None) -> Callable[[jax.Array, jax.Array], jax.Array]:
    def f(z, x):
        return jnp.sum(loss.fn(z, x) if w is None else loss.fn(z, x, w))

    return f


@pytest.mark.parametrize("loss", LOSSES, ids=IDS)
def test_vmap_equals_loop(loss):
    zs, xs = _data((3, 4, 5))
    batched = jax.vmap(loss.fn)(zs, xs)
    looped = jnp.stack([loss.fn(zs[i], xs[i]) for i in range(3)])
    chex.assert_trees_all_close(batched, looped, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("loss", LOSSES, ids=IDS)
@pytest.mark.parametrize("scale", [1.0, 1e3, 1e30, 3e38])
def test_gradients_finite_for_finite_input(loss, scale):
    z, x = _data()
    x = jnp.clip(x * scale, -3e38, 3e38)
    value = loss.fn(z, x)
    grads = jax.grad(lambda x: jnp.sum(loss.fn(z, x) * 1e-38))(x)
    assert not np.any(np.isnan(np.asarray(value))), loss.name
    chex.assert_tree_all_finite(grads)


@pytest.mark.parametrize(
    "loss", [loss for loss in LOSSES if loss.keeps_dtype], ids=lambda c: c.name
)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_dtype_kept(loss, dtype):
    z, x = _data(dtype=dtype)
    out = loss.fn(z, x)
    chex.assert_type(out, dtype)
    chex.assert_type(jax.grad(_total(loss), argnums=1)(z, x), dtype)


@pytest.mark.parametrize(
    "loss", [loss for loss in LOSSES if loss.keeps_dtype], ids=lambda c: c.name
)
def test_float64_kept_with_x64(loss):
    with jax.enable_x64(True):
        z, x = _data(dtype=jnp.float64)
        chex.assert_type(loss.fn(z, x), jnp.float64)
        chex.assert_type(jax.grad(_total(loss), argnums=1)(z, x), jnp.float64)


@pytest.mark.parametrize("loss", LOSSES, ids=IDS)
def test_shape_mismatch_is_a_clear_error(loss):
    z, x = _data()
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(4, 5\)|\(4, 5\).*\(4, 4\)"):
        loss.fn(z[:, :4], x)


@pytest.mark.parametrize(
    "loss", [c for c in LOSSES if c.weighted and c.infinite_logits], ids=lambda c: c.name
)
def test_zero_weight_gives_zero_gradient(loss):
    # Infinite logits that disagree with their labels (the loss is inf there) and that agree
    # (d/dz = -x is infinite): with weight 0 every gradient is 0, never NaN.
    z = jnp.array([[1.0, 0.0, 1.0, 0.0], [0.5, 1.0, 0.0, 0.25]])
    x = jnp.array([[-INF, INF, INF, -INF], [INF, -3.0, 2.0, -INF]])
    w = jnp.array([[0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0]])
    grads = jax.grad(_total(loss, w), argnums=(0, 1))(z, x)
    chex.assert_tree_all_finite(grads)
    for g in grads:
        np.testing.assert_array_equal(np.asarray(g)[w == 0], 0.0)
    value = _total(loss, w)(z, x)
    assert np.isfinite(value), (loss.name, value)
    # The weighted elements alone decide the value.
    keep = _total(loss, w[1:2])(z[1:2], x[1:2])
    np.testing.assert_allclose(value, keep, rtol=1e-6)


@pytest.mark.parametrize("loss", LOSSES, ids=IDS)
def test_where_false_elements_are_absent(loss):
    # Whole rows masked, holding NaN labels, NaN/inf logits and NaN weights (missing labels
    # stored as NaN): the value equals the call on the kept rows, every gradient at a masked
    # element is exactly 0, and no NaN is formed anywhere (debug_nans, eagerly: each primitive
    # is checked on its own, a stronger check than the jitted program's outputs).
    z, x = _data()
    w = jnp.linspace(0.5, 2.0, 20).reshape(4, 5)
    keep = np.array([True, False, True, False])
    where = jnp.asarray(np.broadcast_to(keep[:, None], (4, 5)))
    garbage = jnp.asarray(np.resize(np.array([np.nan, np.inf, -np.inf, np.nan, 3.0]), (4, 5)))
    z_bad = jnp.where(where, z, jnp.full_like(z, np.nan))
    x_bad = jnp.where(where, x, garbage)
    w_bad = jnp.where(where, w, jnp.full_like(w, np.nan))
    w_bad, w_kept = loss.prepare(w_bad), loss.prepare(w[keep])
    kept = loss.fn(z[keep], x[keep], w_kept if loss.weighted else None)
    with jax.debug_nans(True):
        value = loss.fn(z_bad, x_bad, w_bad if loss.weighted else None, where=where)
        grads = jax.grad(
            lambda z, x, w: jnp.sum(loss.fn(z, x, w if loss.weighted else None, where=where)),
            argnums=(0, 1, 2),
        )(z_bad, x_bad, w_bad)
    if np.ndim(value) == 0:
        np.testing.assert_allclose(value, kept, rtol=1e-6)
    else:
        np.testing.assert_array_equal(np.asarray(value)[~keep], 0.0)
        np.testing.assert_allclose(np.asarray(value)[keep], kept, rtol=1e-6)
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g))), loss.name
        np.testing.assert_array_equal(np.asarray(g)[~keep], 0.0)


@pytest.mark.parametrize("loss", LOSSES, ids=IDS)
def test_compiled_once_for_repeated_calls(loss):
    z, x = _data()
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(z, x):
        return jax.value_and_grad(_total(loss), argnums=1)(z, x)

    for seed in range(3):
        z, x = _data(seed=seed)
        step(z, x)


def test_loss_objects_as_static_arguments_compile_once():
    chex.clear_trace_counter()
    z, x = _data()

    @chex.assert_max_traces(n=2)
    def step(loss_object, z, x):
        return loss_object(z, x)

    compiled = jax.jit(step, static_argnums=0)
    for _ in range(3):
        compiled(sx.BinaryCrossentropy(from_logits=True), z, x)  # equal objects: one trace
        compiled(ranking.SigmoidCrossEntropyLoss(reduction="sum"), z, x)


def test_public_functions_compile_once_eagerly():
    # Eager calls go through one cached program: the second call with equal shapes and
    # options compiles nothing.
    z, x = _data()
    for loss in LOSSES:
        loss.fn(z, x)
    with jax.log_compiles(True), _count_compiles() as count:
        for loss in LOSSES:
            loss.fn(z, x)
    assert count() == 0


@contextlib.contextmanager
def _count_compiles():
    import logging

    records: list[str] = []

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "Compiling" in record.getMessage():
                records.append(record.getMessage())

    handler = Handler()
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        yield lambda: len(records)
    finally:
        logger.removeHandler(handler)


@contextlib.contextmanager
def _strict():
    # The three trace-time checks at once: each raises its own error (rank promotion, dtype
    # promotion, FloatingPointError for a NaN), so one run tells which failed.
    with jax.numpy_rank_promotion("raise"), jax.numpy_dtype_promotion("strict"):
        with jax.debug_nans(True):
            yield


STRICT_MODES: dict[str, Callable[[], Any]] = {
    "strict": _strict,  # rank promotion "raise", dtype promotion "strict", debug_nans
    "x64": lambda: jax.enable_x64(True),
}


EXTREME_LABELS = jnp.array([[1.0, 0.0, 1.0, 0.0, 0.5], [0.0, 1.0, 1.0, 0.0, 0.25]])
EXTREME_LOGITS = jnp.array([[INF, -INF, 3e38, -3e38, 0.5], [1.0, 30.0, -30.0, INF, -INF]])


def _strict_cases() -> list[tuple[str, Callable[..., Any], tuple[Any, ...]]]:
    """Every loss of ``LOSSES`` at ±inf and finite extremes, then the option combinations
    that take paths of their own (traced options, weights, packed lists, the scale losses).

    Each entry is ``(name, fn, args)``; gradients are taken w.r.t. every float argument.
    """
    z, x = EXTREME_LABELS, EXTREME_LOGITS
    cases: list[tuple[str, Callable[..., Any], tuple[Any, ...]]] = [
        (
            loss.name,
            lambda z, x, fn=loss.fn: fn(z, x),
            (z, x if loss.infinite_logits else jnp.nan_to_num(x)),
        )
        for loss in LOSSES
    ]
    per_class = jnp.array([0.5, 1.0, 2.0, 1.5, 1.0])
    h = jnp.linspace(-1.0, 1.0, 20).reshape(5, 4)
    w = jnp.linspace(-0.5, 0.5, 12).reshape(3, 4)
    labels = (jnp.arange(15).reshape(5, 3) % 2).astype(jnp.float32)
    img = jnp.linspace(-1.0, 1.0, 24).reshape(6, 4)
    txt = jnp.linspace(1.0, -1.0, 24).reshape(6, 4)
    ranked = jnp.array([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    ids = jnp.array([0, 0, 1, 1, 1])
    probs = jax.nn.sigmoid(jnp.clip(x, -80.0, 80.0))
    return cases + [
        ("weighted_per_class", sx.weighted_sigmoid_cross_entropy_with_logits, (z, x, per_class)),
        ("focal_plain", lambda z, x: plain_focal_loss(z, x, alpha=0.25, gamma=2.0), (z, x)),
        (
            "focal_no_alpha",
            lambda z, x: sx.sigmoid_focal_loss(z, x, alpha=None, gamma=0.5),
            (z, x),
        ),
        ("probs", sx.binary_cross_entropy, (z, probs)),
        ("tf_v1", lambda z, x, w: sx.sigmoid_cross_entropy(z, x, weights=w), (z, x, z[:, :1])),
        (
            "tf_v1_smoothing",
            lambda z, x, s: sx.sigmoid_cross_entropy(z, x, label_smoothing=s),
            (z, x, per_class / 2),
        ),
        (
            "keras_obj",
            lambda z, x, w: sx.BinaryCrossentropy(from_logits=True)(z, x, w),
            (z, x, jnp.array([1.0, 0.0])),
        ),
        ("reduce_row_weights", lambda v, w: sx.reduce_loss(v, w, "mean"), (z, per_class)),
        ("ranking_3d_ranked", ranking.sigmoid_cross_entropy, (ranked[None], x[None, :, :3])),
        (
            "ranking_packed",
            lambda z, x: ranking.sigmoid_cross_entropy(z, x, segment_ids=ids, num_segments=2),
            (z[0], x[0]),
        ),
        (
            "linear",
            lambda h, w, z, b: sx.linear_sigmoid_cross_entropy(h, w, z, bias=b),
            (h, w, labels, jnp.ones(3)),
        ),
        ("siglip", sx.siglip_loss, (img, txt, jnp.asarray(0.5), jnp.asarray(-1.0))),
        (
            "linear_ids_options",
            lambda h, w, v, b: sx.linear_sigmoid_cross_entropy(
                h,
                w,
                label_ids=jnp.array([[0, 2], [1, -1], [2, 2], [0, 1], [-1, -1]]),
                label_values=v,
                bias=b,
                weights=v[:, :1],
                where=jnp.array([True, False, True]),
                pos_weight=b + 1,
                label_smoothing=0.1,
                reduction="mean",
                chunk_size=(2, 2),
            ),
            (h, w, jnp.full((5, 2), 0.75), jnp.ones(3)),
        ),
        (
            "linear_none",
            lambda h, w, z: sx.linear_sigmoid_cross_entropy(h, w, z, reduction="none"),
            (h, w, labels),
        ),
        (
            "siglip_ids",
            lambda i, x, t: sx.siglip_loss(
                i,
                x,
                t,
                img_ids=jnp.array([0, 0, 1, -1, 2, 3]),
                txt_ids=jnp.array([0, 1, 1, 2, 3, -1]),
                chunk_size=4,
            ),
            (img, txt, jnp.asarray(0.5)),
        ),
        (
            "compat_torch",
            lambda x, z, q: compat.torch.binary_cross_entropy_with_logits(x, z, pos_weight=q),
            (x, z, per_class),
        ),
        # compat broadcasts as its peers do: labels [N, C] against logits [C], a column alpha
        (
            "compat_optax_broadcast",
            lambda x, z: compat.optax.sigmoid_binary_cross_entropy(x, z),
            (x[0], z),
        ),
        (
            "compat_optax_focal_alpha_column",
            lambda x, z, a: compat.optax.sigmoid_focal_loss(x, z, alpha=a, gamma=2.0),
            (x[0], z, jnp.full((2, 1), 0.25)),
        ),
        # optax takes a negative alpha as given (alpha_t = -1 at z = 1: a -inf loss, no NaN)
        (
            "compat_optax_focal_neg_alpha",
            lambda x, z: compat.optax.sigmoid_focal_loss(x, z, alpha=-1.0),
            (x, z),
        ),
        # where=False at the two disagreeing infinite logits: the reduced loss stays finite
        (
            "compat_rax_weights_where",
            lambda s, y, w: compat.rax.pointwise_sigmoid_loss(
                s, y, weights=w, where=jnp.array([[True] * 5, [True, True, True, False, False]])
            ),
            (x, z, jnp.ones((2, 1))),
        ),
        (
            "compat_rax_none",
            lambda s, y: compat.rax.pointwise_sigmoid_loss(s, y, reduce_fn=None),
            (x, z),
        ),
        (
            "compat_torch_weight",
            lambda x, z, w: compat.torch.binary_cross_entropy_with_logits(x, z, weight=w),
            (x, z, jnp.array([[1.0], [0.0]])),
        ),
        (
            "compat_torchvision_gamma_half",
            lambda x, z, a: compat.torch.sigmoid_focal_loss(
                x, z, alpha=a, gamma=0.5, reduction="mean"
            ),
            (x, z, per_class * 0.25),
        ),
    ]


STRICT_CASES = _strict_cases()


def _value_and_grads(fn: Callable[..., Any]) -> Callable[..., Any]:
    # The loss as a plain call (the primal function, which a derivative rule does not run) and
    # its gradients w.r.t. every argument, in one program. Infinite losses (a disagreeing
    # infinite logit) receive a zero cotangent, as a select leaving them out of a total would
    # give them: that must give zero gradients, not NaN.
    def both(*args):
        out, vjp = jax.vjp(fn, *args)
        cotangent = jnp.where(jnp.isfinite(out), jnp.ones_like(out), jnp.zeros_like(out))
        return fn(*args), vjp(cotangent)

    return both


@pytest.mark.parametrize("mode", list(STRICT_MODES), ids=list(STRICT_MODES))
@pytest.mark.parametrize("name,fn,args", STRICT_CASES, ids=[case[0] for case in STRICT_CASES])
def test_strict_modes(mode, name, fn, args):
    # "strict": eager (debug_nans checks every primitive) equals jit, values and gradients.
    # "x64": the jitted program in float64 (eager equals jit is the strict run's check).
    with STRICT_MODES[mode]():
        if mode == "x64":
            args = tuple(jnp.asarray(a, jnp.float64) for a in args)
        runs = [jax.jit(_value_and_grads(fn))(*args)]
        if mode == "strict":
            runs.append(_value_and_grads(fn)(*args))
    for out in jax.tree.leaves(runs):
        assert not np.any(np.isnan(np.asarray(out, np.float64))), name
    if mode == "strict":
        (jitted, jitted_grads), (eager, grads) = runs
        np.testing.assert_allclose(np.asarray(eager), np.asarray(jitted), rtol=1e-6)
        for g, jg in zip(grads, jitted_grads, strict=True):
            np.testing.assert_allclose(np.asarray(g), np.asarray(jg), rtol=1e-5, atol=1e-30)
