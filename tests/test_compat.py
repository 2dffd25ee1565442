"""sigmoid_xent.compat: the peers' signatures, broadcasting and values, exactly as each peer.

Every value is checked twice: against a numpy float64 transcription of the peer's code (always
runs), and against the peer itself run on float64 copies of the inputs (optax is a dependency;
the rax and torch tests skip when those are absent: ``pip install rax torch==2.13.0``). The
peers' own float32 results are off by up to 1e-4 in places, so they are never the reference.
torchvision's compiled ops do not load beside the CPU torch wheel and its ``sigmoid_focal_loss``
is pure Python: it is transcribed here with torch ops (and numpy), unless torchvision imports.

Peer ranges are where the peer's float64 formula is accurate: rax's ``log(1 + exp(-|s|))`` is
0 beyond ``|s| ~ 37`` and PyTorch's ``(1 - z) x - log_sigmoid(x)`` cancels for ``x << 0``, so
the peer comparisons keep ``|x| <= 12``; our own float64 transcriptions cover the rest.
"""

from __future__ import annotations

import functools
import inspect
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax as real_optax
import pytest
from conftest import ref_loss, ref_sigmoid, x64
from hypothesis import given
from hypothesis import strategies as st

import sigmoid_xent as sx
from sigmoid_xent.compat import optax as c_optax
from sigmoid_xent.compat import rax as c_rax
from sigmoid_xent.compat import torch as c_torch

F32 = np.float32
RTOL = 2e-6  # a few float32 ulps; our losses are within 2 ulp of the exact value


def _f64(a):
    return np.asarray(a, np.float64)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _logits(shape, seed=0, scale=5.0, limit=12.0):
    x = np.clip(_rng(seed).normal(0, scale, shape), -limit, limit).astype(F32)
    return np.where(x == 0, F32(0.25), x)  # rax's gradient is wrong at exactly 0 (see below)


def _labels(shape, kind, seed=1):
    u = _rng(seed).uniform(size=shape)
    if kind == "soft":
        return u.astype(F32)
    hard = u < 0.5
    return {"hard": hard.astype(F32), "int": hard.astype(np.int32), "bool": hard}[kind]


def _to64(v):
    """A float64 jax array of a float input (ints and bools kept); call inside x64()."""
    if v is None or callable(v):
        return v
    a = np.asarray(v)
    return jnp.asarray(a.astype(np.float64) if np.issubdtype(a.dtype, np.floating) else a)


def _peer64(fn, *args, **kwargs):
    """The peer on float64 copies of the inputs, as float64 numpy."""
    with x64():
        out = fn(*map(_to64, args), **{k: _to64(v) for k, v in kwargs.items()})
        return np.asarray(out, np.float64)


def _grads64(fn, argnums, *args, **kwargs):
    """float64 gradients of sum(fn(...)) for the peer."""
    with x64():
        args64 = tuple(map(_to64, args))
        kw64 = {k: _to64(v) for k, v in kwargs.items()}
        g = jax.grad(lambda *a: jnp.sum(fn(*a, **kw64)), argnums=argnums)(*args64)
        return [np.asarray(v, np.float64) for v in g]


def _grads(fn, argnums, *args, **kwargs):
    g = jax.grad(lambda *a: jnp.sum(fn(*a, **kwargs)), argnums=argnums)(*map(jnp.asarray, args))
    return [np.asarray(v, np.float64) for v in g]


def _softplus(x):
    return ref_loss(0.0, x)  # log(1 + e^x), stable, float64


# ---------------------------------------------------------------------------------------------
# numpy float64 transcriptions of the peers' code (they run without rax/torch installed)


def optax_bce_ref(logits, labels):
    x, z = np.broadcast_arrays(_f64(logits), _f64(labels))
    return ref_loss(z, x)


def optax_focal_ref(logits, labels, alpha=None, gamma=2.0):
    x, z = np.broadcast_arrays(_f64(logits), _f64(labels))
    p = ref_sigmoid(x)
    one_minus_p_t = (1 - z) * p + z * (1 - p)
    loss = ref_loss(z, x) * one_minus_p_t ** _f64(gamma)
    if alpha is None:
        return loss
    a = _f64(alpha)
    return (a * z + (1 - a) * (1 - z)) * loss


def rax_ref(scores, labels, *, where=None, weights=None, reduce_fn="mean"):
    """rax 0.4.0's pointwise_sigmoid_loss + utils.safe_reduce, in float64."""
    s, y = np.broadcast_arrays(_f64(scores), np.clip(_f64(labels), 0.0, 1.0))
    loss = ref_loss(y, s)
    if weights is not None:
        loss = loss * _f64(weights)
    if reduce_fn is None:
        return loss if where is None else np.where(where, loss, 0.0)
    if callable(reduce_fn):
        return reduce_fn(loss, where)
    mask = np.broadcast_to(True if where is None else np.asarray(where, bool), loss.shape)
    total = np.sum(np.where(mask, loss, 0.0))
    if reduce_fn == "sum":
        return total
    count = np.sum(mask)
    out = total / count if count else np.nan
    if np.isnan(out) and not np.isnan(loss).any():
        out = 0.0
    return np.float64(out)


def torch_bce_ref(x, t, weight=None, reduction="mean", pos_weight=None):
    """PyTorch's binary_cross_entropy_with_logits (aten Loss.cpp), written without cancellation."""
    x, t = _f64(x), _f64(t)
    pw = 1.0 if pos_weight is None else _f64(pos_weight)
    loss = pw * t * _softplus(-x) + (1 - t) * _softplus(x)
    if weight is not None:
        loss = loss * _f64(weight)
    return {"none": loss, "mean": np.mean(loss), "sum": np.sum(loss)}[reduction]


def torchvision_focal_ref(inputs, targets, alpha=0.25, gamma=2, reduction="none"):
    """torchvision.ops.sigmoid_focal_loss, line by line, in numpy float64."""
    x, t = _f64(inputs), _f64(targets)
    p = ref_sigmoid(x)
    ce_loss = ref_loss(t, x)
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * t + (1 - alpha) * (1 - t)
        loss = alpha_t * loss
    return {"none": loss, "mean": np.mean(loss), "sum": np.sum(loss)}[reduction]


def _torchvision_focal_torch(torch, inputs, targets, alpha, gamma, reduction):
    """torchvision's focal loss on float64 tensors: torchvision itself if it imports, else its
    code transcribed with torch ops."""
    try:
        from torchvision.ops import sigmoid_focal_loss  # type: ignore[import-not-found]

        return sigmoid_focal_loss(inputs, targets, alpha, gamma, reduction)
    except Exception:  # not installed, or its compiled ops fail to load beside this torch
        pass
    F = torch.nn.functional
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


# ---------------------------------------------------------------------------------------------
# Signatures


def _params(fn):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


_WHERE = ("where", inspect.Parameter.KEYWORD_ONLY, None)  # every loss's mask, after the peer's


@pytest.mark.parametrize("name", ["sigmoid_binary_cross_entropy", "sigmoid_focal_loss"])
def test_optax_signatures_are_optax(name):
    assert _params(getattr(c_optax, name)) == _params(getattr(real_optax, name)) + [_WHERE]


def test_rax_signature_is_rax():
    rax = pytest.importorskip("rax")
    assert _params(c_rax.pointwise_sigmoid_loss) == _params(rax.pointwise_sigmoid_loss)


def test_torch_signatures():
    # torch's own signature also has the deprecated size_average/reduce; the rest, in order,
    # with the same defaults, is ours. torchvision's is fixed here (it is not importable).
    K = inspect.Parameter.POSITIONAL_OR_KEYWORD
    E = inspect.Parameter.empty
    assert _params(c_torch.sigmoid_focal_loss) == [
        ("inputs", K, E),
        ("targets", K, E),
        ("alpha", K, 0.25),
        ("gamma", K, 2),
        ("reduction", K, "none"),
        _WHERE,
    ]
    ours = _params(c_torch.binary_cross_entropy_with_logits)
    assert ours[-1] == _WHERE
    ours = ours[:-1]
    assert ours == [
        ("input", K, E),
        ("target", K, E),
        ("weight", K, None),
        ("reduction", K, "mean"),
        ("pos_weight", K, None),
    ]
    torch = pytest.importorskip("torch")
    theirs = [
        p
        for p in _params(torch.nn.functional.binary_cross_entropy_with_logits)
        if p[0] not in ("size_average", "reduce")
    ]
    assert ours == theirs


def test_focal_alpha_gamma_keyword_only_as_optax():
    x, z = jnp.array([1.0, -1.0]), jnp.array([1.0, 0.0])
    for fn in (real_optax.sigmoid_focal_loss, c_optax.sigmoid_focal_loss):
        with pytest.raises(TypeError, match="positional"):
            fn(x, z, 0.25)


def test_compat_modules_import_no_peer():
    code = (
        "import sys, sigmoid_xent.compat, sigmoid_xent; "
        "assert sigmoid_xent.compat.optax.__name__ == 'sigmoid_xent.compat.optax'; "
        "print(sorted(m for m in ('torch', 'rax', 'optax', 'torchvision') if m in sys.modules))"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_exported():
    assert "compat" in sx.__all__ and sx.compat.__all__ == ["optax", "rax", "torch"]
    assert c_optax.__all__ == ["sigmoid_binary_cross_entropy", "sigmoid_focal_loss"]
    assert c_rax.__all__ == ["pointwise_sigmoid_loss"]
    assert c_torch.__all__ == ["binary_cross_entropy_with_logits", "sigmoid_focal_loss"]


# ---------------------------------------------------------------------------------------------
# optax

BROADCASTS = [
    ((6,), (6,)),
    ((4,), (3, 4)),  # logits [C], labels [N, C]
    ((3, 4), (4,)),
    ((3, 1), (1, 4)),
    ((), (2, 3)),
    ((2, 3), ()),
]


@pytest.mark.parametrize("kind", ["soft", "hard", "int", "bool"])
@pytest.mark.parametrize("shapes", BROADCASTS)
def test_optax_bce_matches_optax_float64(shapes, kind):
    x, z = _logits(shapes[0]), _labels(shapes[1], kind)
    got = c_optax.sigmoid_binary_cross_entropy(x, z)
    assert got.shape == np.broadcast_shapes(*shapes) and got.dtype == jnp.float32
    want = _peer64(real_optax.sigmoid_binary_cross_entropy, x, z)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=0)
    np.testing.assert_allclose(got, optax_bce_ref(x, z), rtol=RTOL, atol=0)


@pytest.mark.parametrize("shapes", [((4,), (3, 4)), ((3, 1), (1, 4))])
def test_optax_bce_gradients_match_optax_float64(shapes):
    x, z = _logits(shapes[0]), _labels(shapes[1], "soft")
    got = _grads(c_optax.sigmoid_binary_cross_entropy, (0, 1), x, z)
    want = _grads64(real_optax.sigmoid_binary_cross_entropy, (0, 1), x, z)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_optax_float64_inputs_stay_float64_and_match_tightly():
    x, z = _logits((5, 4), scale=8.0), _labels((4,), "soft")
    with x64():
        got = c_optax.sigmoid_binary_cross_entropy(_f64(x), _f64(z))
        assert got.dtype == jnp.float64
        want = real_optax.sigmoid_binary_cross_entropy(_f64(x), _f64(z))
        np.testing.assert_allclose(got, want, rtol=1e-13)


def test_optax_dtypes():
    x = _logits((8,))
    # float64 labels are cast to the logits' dtype (optax: labels.astype(logits.dtype))
    with x64():
        got = c_optax.sigmoid_binary_cross_entropy(jnp.asarray(x), _f64(_labels((8,), "soft")))
        assert got.dtype == jnp.float32
    # 16-bit logits: computed in float32, returned in their dtype
    h = jnp.asarray(x, jnp.bfloat16)
    got = c_optax.sigmoid_binary_cross_entropy(h, jnp.ones(8, jnp.int32))
    assert got.dtype == jnp.bfloat16
    want = c_optax.sigmoid_binary_cross_entropy(h.astype(jnp.float32), jnp.ones(8))
    np.testing.assert_array_equal(got, want.astype(jnp.bfloat16))


ALPHAS = [None, 0.25, 0.9, -1.0, "per-class"]


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 3.7])
@pytest.mark.parametrize("alpha", ALPHAS)
def test_optax_focal_matches_optax_float64(alpha, gamma):
    x, z = _logits((4,), seed=3), _labels((3, 4), "soft", seed=4)
    z[0] = np.round(z[0])  # a row of hard labels too
    if alpha == "per-class":
        alpha = np.array([0.1, 0.25, 0.5, 0.75], F32)
    got = c_optax.sigmoid_focal_loss(x, z, alpha=alpha, gamma=gamma)
    assert got.shape == (3, 4) and got.dtype == jnp.float32
    want = _peer64(real_optax.sigmoid_focal_loss, x, z, alpha=alpha, gamma=gamma)
    # optax uses a negative alpha as given: alpha_t = 2 - 3z crosses 0 (float32 cancellation)
    atol = 1e-6 * np.max(np.abs(want)) if alpha is not None and np.min(alpha) < 0 else 0
    np.testing.assert_allclose(got, want, rtol=4e-6, atol=atol)
    np.testing.assert_allclose(
        got, optax_focal_ref(x, z, alpha=alpha, gamma=gamma), rtol=4e-6, atol=atol
    )


def test_optax_focal_alpha_and_gamma_broadcast_the_output():
    # optax multiplies by alpha/gamma, so arrays of them broadcast the result's shape
    x, z = _logits((3,)), _labels((3,), "soft")
    alpha, gamma = np.array([[0.25], [0.75]], F32), np.array([[[1.0]], [[2.0]]], F32)
    got = c_optax.sigmoid_focal_loss(x, z, alpha=alpha, gamma=gamma)
    want = _peer64(real_optax.sigmoid_focal_loss, x, z, alpha=alpha, gamma=gamma)
    assert got.shape == want.shape == (2, 2, 3)
    np.testing.assert_allclose(got, want, rtol=4e-6)


@pytest.mark.parametrize("alpha", [0.25, -1.0])  # alpha_t inside the core, and after it
def test_optax_focal_gradients_match_optax_float64(alpha):
    x, z = _logits((4,), seed=5), _labels((2, 4), "soft", seed=6)
    kw = {"alpha": alpha, "gamma": 2.0}
    got = _grads(c_optax.sigmoid_focal_loss, (0, 1), x, z, **kw)
    want = _grads64(real_optax.sigmoid_focal_loss, (0, 1), x, z, **kw)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-6)


def test_optax_focal_traced_alpha_and_gamma():
    # Traced alpha (a learnable balance) and gamma: alpha_t applied after the core.
    x, z = _logits((6,)), _labels((6,), "soft")
    f = jax.jit(lambda a, g: c_optax.sigmoid_focal_loss(x, z, alpha=a, gamma=g))
    for a, g in [(0.25, 2.0), (-1.0, 0.5)]:
        want = _peer64(real_optax.sigmoid_focal_loss, x, z, alpha=a, gamma=g)
        np.testing.assert_allclose(f(a, g), want, rtol=4e-6, atol=1e-7)
    da = jax.grad(lambda a: jnp.sum(f(a, 2.0)))(0.25)
    (wa,) = _grads64(
        lambda a: real_optax.sigmoid_focal_loss(_f64(x), _f64(z), alpha=a, gamma=2.0), (0,), 0.25
    )
    np.testing.assert_allclose(da, wa, rtol=2e-5)


_OPTAX_FLOATS = st.floats(-30, 30, width=32)


@given(
    x=st.lists(_OPTAX_FLOATS, min_size=8, max_size=8),
    z=st.lists(st.floats(0, 1, width=32), min_size=8, max_size=8),
    alpha=st.one_of(st.none(), st.floats(0, 1, width=32)),
    gamma=st.floats(0, 4, width=32),
)
def test_optax_property(x, z, alpha, gamma):
    x, z = np.array(x, F32), np.array(z, F32)
    got = c_optax.sigmoid_binary_cross_entropy(x, z)
    np.testing.assert_allclose(
        got, _peer64(real_optax.sigmoid_binary_cross_entropy, x, z), rtol=RTOL, atol=1e-30
    )
    kw = {"alpha": alpha, "gamma": gamma}
    got = c_optax.sigmoid_focal_loss(x, z, **kw)
    np.testing.assert_allclose(
        got, _peer64(real_optax.sigmoid_focal_loss, x, z, **kw), rtol=1e-5, atol=1e-30
    )
    (g,) = _grads(c_optax.sigmoid_binary_cross_entropy, (0,), x, z)
    (w,) = _grads64(real_optax.sigmoid_binary_cross_entropy, (0,), x, z)
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)


def test_optax_hessian():
    x, z = jnp.array([-30.0, -1.0, 0.0, 2.0, 30.0]), jnp.array([0.0, 1.0, 0.5, 0.0, 1.0])
    h = jax.hessian(lambda v: jnp.sum(c_optax.sigmoid_binary_cross_entropy(v, z)))(x)
    want = ref_sigmoid(np.asarray(x)) * ref_sigmoid(-np.asarray(x))  # 9.357622e-14 at 30
    np.testing.assert_allclose(np.diag(h), want, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# rax


def _custom_masked_square_sum(a, where=None):
    """A custom reduce_fn that honours `where` (jnp or numpy arrays)."""
    xp = jnp if isinstance(a, jax.Array) else np
    return xp.sum(xp.where(True if where is None else where, a * a, 0))


def _custom_max_ignoring_where(a, where=None):
    """A custom reduce_fn that ignores `where`: it sees the masked items' losses, as in rax."""
    return (jnp if isinstance(a, jax.Array) else np).max(a)


REDUCE_FNS = {
    "mean": jnp.mean,
    "sum": jnp.sum,
    "none": None,
    "custom_where": _custom_masked_square_sum,
    "custom_ignores_where": _custom_max_ignoring_where,
}
_MASK = np.array([[True, False, True, True], [False, False, True, False], [True] * 4])


def _rax_case(name):
    """(scores, labels, kwargs) for one rax behaviour; labels include -1 and graded 2, 3."""
    s = _logits((3, 4), seed=7)
    y = np.array([[1, 0, -1, 2], [0.5, 1, 0, 3], [0.25, 0, 1, 1]], F32)
    cases = {
        "plain": (s, y, {}),
        "where": (s, y, {"where": _MASK}),
        "where_broadcast": (s, y, {"where": _MASK[0]}),
        "all_masked": (s, y, {"where": np.zeros((3, 4), bool)}),
        "weights_item": (s, y, {"weights": _rng(8).uniform(0, 2, (3, 4)).astype(F32)}),
        "weights_list": (s, y, {"weights": np.array([[2.0], [0.0], [0.5]], F32), "where": _MASK}),
        "weights_grow": (s, y, {"weights": np.array([[[1.0]], [[3.0]]], F32)}),  # [2, 3, 4]
        "labels_broadcast": (s, y[0], {}),
        "scores_broadcast": (s[0], y, {}),
        "int_labels": (s, y.astype(np.int32), {}),
        "bool_labels": (s, y > 0, {}),
        "segments": (s, y, {"segments": np.array([[0, 0, 1, 1], [0, 1, 1, 1], [2, 2, 2, 2]])}),
        "segments_where": (s, y, {"segments": np.array([[0, 0, 1, 1]] * 3), "where": _MASK}),
    }
    return cases[name]


RAX_CASES = [
    "plain",
    "where",
    "where_broadcast",
    "all_masked",
    "weights_item",
    "weights_list",
    "weights_grow",
    "labels_broadcast",
    "scores_broadcast",
    "int_labels",
    "bool_labels",
    "segments",
    "segments_where",
]


def _rax_ref_kwargs(kw, reduce_name):
    ref_kw = {k: v for k, v in kw.items() if k != "segments"}  # rax ignores segments
    named = {"mean": "mean", "sum": "sum", "none": None}
    ref_kw["reduce_fn"] = named[reduce_name] if reduce_name in named else REDUCE_FNS[reduce_name]
    return ref_kw


def _masked_custom(peer, s, y, kw, reduce_name):
    """A custom reduce_fn sees the per-item losses with 0 at masked items (rax passes their
    losses): the peer's ``reduce_fn=None`` result, reduced by it."""
    per_item = peer(s, y, **{**kw, "reduce_fn": None})
    return REDUCE_FNS[reduce_name](per_item, where=kw["where"])


@pytest.mark.parametrize("reduce_name", list(REDUCE_FNS))
@pytest.mark.parametrize("case", RAX_CASES)
def test_rax_matches_transcription(case, reduce_name):
    s, y, kw = _rax_case(case)
    got = c_rax.pointwise_sigmoid_loss(s, y, **kw, reduce_fn=REDUCE_FNS[reduce_name])
    want = rax_ref(s, y, **_rax_ref_kwargs(kw, reduce_name))
    if reduce_name.startswith("custom") and "where" in kw:
        want = _masked_custom(rax_ref, s, y, _rax_ref_kwargs(kw, reduce_name), reduce_name)
    assert np.shape(got) == np.shape(want) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=0)


@pytest.mark.parametrize("reduce_name", list(REDUCE_FNS))
@pytest.mark.parametrize("case", RAX_CASES)
def test_rax_matches_rax_float64(case, reduce_name):
    rax = pytest.importorskip("rax")
    s, y, kw = _rax_case(case)
    fn = REDUCE_FNS[reduce_name]
    got = c_rax.pointwise_sigmoid_loss(s, y, **kw, reduce_fn=fn)
    want = _peer64(rax.pointwise_sigmoid_loss, s, y, **kw, reduce_fn=fn)
    if reduce_name.startswith("custom") and "where" in kw:
        peer = functools.partial(_peer64, rax.pointwise_sigmoid_loss)
        want = _masked_custom(peer, s, y, kw, reduce_name)
    assert np.shape(got) == np.shape(want)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=0)


@pytest.mark.parametrize("case", ["plain", "where", "weights_list", "labels_broadcast"])
def test_rax_gradients_match_rax_float64(case):
    rax = pytest.importorskip("rax")
    s, y, kw = _rax_case(case)
    y = np.abs(y) % 1.5  # in and around [0, 1]: clip's derivative (1/2 at 0 and 1) too
    argnums = (0, 1)
    if "weights" in kw:
        w = kw.pop("weights")
        f_ours = lambda s, y, w: c_rax.pointwise_sigmoid_loss(s, y, weights=w, **kw)  # noqa: E731
        f_rax = lambda s, y, w: rax.pointwise_sigmoid_loss(s, y, weights=w, **_to64kw(kw))  # noqa: E731
        args, argnums = (s, y, w), (0, 1, 2)
    else:
        f_ours = functools.partial(c_rax.pointwise_sigmoid_loss, **kw)
        f_rax = lambda s, y: rax.pointwise_sigmoid_loss(s, y, **_to64kw(kw))  # noqa: E731
        args = (s, y)
    got = _grads(f_ours, argnums, *args)
    want = _grads64(f_rax, argnums, *args)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)


def _to64kw(kw):
    return {k: (v if np.asarray(v).dtype == bool else _to64(v)) for k, v in kw.items()}


def test_rax_gradient_at_zero_score_is_right_where_rax_is_not():
    # rax differentiates relu and |s| at s = 0 as 0, so its d/ds there is -y, not 1/2 - y.
    y = jnp.array([0.0, 1.0, 0.25])
    g = jax.grad(lambda s: c_rax.pointwise_sigmoid_loss(s, y, reduce_fn=jnp.sum))(jnp.zeros(3))
    np.testing.assert_allclose(g, 0.5 - np.asarray(y))


def test_rax_nan_rules():
    # A masked item is absent even if its score is NaN (rax: a NaN mean); a valid NaN item
    # gives NaN; the mean of no valid item is 0.
    s, y = jnp.array([np.nan, 1.0, 2.0]), jnp.array([1.0, 0.0, 1.0])
    assert np.isnan(c_rax.pointwise_sigmoid_loss(s, y, where=jnp.array([True, False, False])))
    assert c_rax.pointwise_sigmoid_loss(s, y, where=jnp.zeros(3, bool)) == 0
    assert np.isnan(rax_ref(s, y, where=np.zeros(3, bool)))
    got = c_rax.pointwise_sigmoid_loss(s, y, where=jnp.array([False, True, True]))
    np.testing.assert_allclose(got, rax_ref(s, y, where=np.array([False, True, True])))
    assert c_rax.pointwise_sigmoid_loss(jnp.zeros((0,)), jnp.zeros((0,))) == 0
    # inf - inf is NaN, loudly (rax's safe_reduce turns it into 0 when no input is NaN)
    got = c_rax.pointwise_sigmoid_loss(
        jnp.array([1.0, 1.0]), jnp.zeros(2), weights=jnp.array([np.inf, -np.inf])
    )
    assert np.isnan(got)


def test_rax_segments_are_ignored_also_traced():
    s, y, kw = _rax_case("segments")
    plain = c_rax.pointwise_sigmoid_loss(s, y)
    assert c_rax.pointwise_sigmoid_loss(s, y, **kw) == plain
    f = jax.jit(lambda seg: c_rax.pointwise_sigmoid_loss(s, y, segments=seg))
    np.testing.assert_allclose(f(jnp.asarray(kw["segments"])), plain, rtol=1e-7)


def test_rax_custom_reduce_fn_call_and_no_recompile():
    calls = []

    def reduce_fn(a, where=None):
        calls.append((a.shape, None if where is None else np.shape(where)))
        return jnp.max(a)

    s, y, _ = _rax_case("plain")
    c_rax.pointwise_sigmoid_loss(s, y, where=_MASK, reduce_fn=reduce_fn)
    assert calls == [((3, 4), (3, 4))]
    before = c_rax._pointwise._cache_size()
    for k in range(3):  # a new lambda per call: nothing is compiled again
        c_rax.pointwise_sigmoid_loss(s, y, reduce_fn=lambda a, where, k=k: jnp.sum(a) * k)
    assert c_rax._pointwise._cache_size() == before


@given(
    data=st.data(),
    reduce_name=st.sampled_from(["mean", "sum", "none"]),
)
def test_rax_property(data, reduce_name):
    n = 6
    s = np.array(data.draw(st.lists(st.floats(-40, 40, width=32), min_size=n, max_size=n)), F32)
    y = np.array(data.draw(st.lists(st.floats(-1, 3, width=32), min_size=n, max_size=n)), F32)
    where = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    w = np.array(data.draw(st.lists(st.floats(0, 4, width=32), min_size=n, max_size=n)), F32)
    got = c_rax.pointwise_sigmoid_loss(
        s, y, where=where, weights=w, reduce_fn=REDUCE_FNS[reduce_name]
    )
    want = rax_ref(
        s, y, where=where, weights=w, reduce_fn=None if reduce_name == "none" else reduce_name
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-30)


# ---------------------------------------------------------------------------------------------
# PyTorch / torchvision

TORCH_OPTIONS = [
    {},
    {"weight": "per-class"},
    {"weight": "per-item"},
    {"weight": "scalar"},
    {"pos_weight": "per-class"},
    {"pos_weight": "scalar"},
    {"pos_weight": "per-item"},
    {"weight": "per-row", "pos_weight": "per-class"},
]


def _torch_case(options, kind="soft"):
    x, t = _logits((3, 4), seed=9, limit=10.0), _labels((3, 4), kind, seed=10)
    shapes = {"per-class": (4,), "per-item": (3, 4), "scalar": (), "per-row": (3, 1)}
    kw = {k: _rng(11).uniform(0.0, 3.0, shapes[v]).astype(F32) for k, v in options.items()}
    if "weight" in kw and kw["weight"].ndim:
        kw["weight"].flat[0] = 0.0  # a zero weight too
    return x, t, kw


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("options", TORCH_OPTIONS, ids=str)
def test_torch_bce_matches_transcription(options, reduction):
    x, t, kw = _torch_case(options)
    got = c_torch.binary_cross_entropy_with_logits(x, t, reduction=reduction, **kw)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, torch_bce_ref(x, t, reduction=reduction, **kw), rtol=RTOL)


def _tensor64(torch, v, grad=False):
    return None if v is None else torch.tensor(_f64(v), requires_grad=grad)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("options", TORCH_OPTIONS, ids=str)
def test_torch_bce_matches_torch_float64(options, reduction):
    torch = pytest.importorskip("torch")
    x, t, kw = _torch_case(options)
    got = c_torch.binary_cross_entropy_with_logits(x, t, reduction=reduction, **kw)
    tx, tt = _tensor64(torch, x, True), _tensor64(torch, t, True)
    tkw = {k: _tensor64(torch, v) for k, v in kw.items()}  # torch: not differentiable in these
    out = torch.nn.functional.binary_cross_entropy_with_logits(tx, tt, reduction=reduction, **tkw)
    np.testing.assert_allclose(got, out.detach().numpy(), rtol=RTOL)
    out.sum().backward()
    gx, gt = jax.grad(
        lambda x, t: jnp.sum(
            c_torch.binary_cross_entropy_with_logits(x, t, reduction=reduction, **kw)
        ),
        argnums=(0, 1),
    )(x, t)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(gt, tt.grad.numpy(), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize(
    "options",
    [
        {"weight": "per-item", "pos_weight": "per-class"},
        {"weight": "scalar", "pos_weight": "scalar"},
    ],
    ids=str,
)
def test_torch_bce_weight_gradients(options):
    # PyTorch refuses gradients for weight and pos_weight; ours are the exact partials:
    # d sum / d w = the unweighted loss, d sum / d p = w z softplus(-x) (summed when broadcast)
    x, t, kw = _torch_case(options)
    w, p = kw["weight"], kw["pos_weight"]
    gw, gp = jax.grad(
        lambda w, p: c_torch.binary_cross_entropy_with_logits(x, t, w, "sum", p), argnums=(0, 1)
    )(w, p)
    unweighted = torch_bce_ref(x, t, reduction="none", pos_weight=p)
    per_item_p = _f64(w) * _f64(t) * _softplus(-_f64(x))
    if w.ndim == 0:
        unweighted, per_item_p = unweighted.sum(), per_item_p.sum()
    else:
        per_item_p = per_item_p.sum(axis=0) if p.ndim else per_item_p.sum()
    np.testing.assert_allclose(gw, unweighted, rtol=1e-5)
    np.testing.assert_allclose(gp, per_item_p, rtol=1e-5)


def test_torch_bce_hard_int_bool_targets():
    x = _logits((3, 4))
    want = torch_bce_ref(x, _labels((3, 4), "hard"), reduction="none")
    for kind in ("hard", "int", "bool"):
        got = c_torch.binary_cross_entropy_with_logits(x, _labels((3, 4), kind), reduction="none")
        np.testing.assert_allclose(got, want, rtol=RTOL)


def test_torch_mean_is_plain_mean_of_weighted_losses():
    # PyTorch's "mean" divides by the element count, not by the weight sum (TF v1's "mean").
    x, t = jnp.array([1.0, -2.0, 0.5]), jnp.array([1.0, 0.0, 1.0])
    w = jnp.array([2.0, 0.0, 3.0])
    losses = sx.sigmoid_cross_entropy_with_logits(t, x)
    got = c_torch.binary_cross_entropy_with_logits(x, t, weight=w)
    np.testing.assert_allclose(got, jnp.sum(w * losses) / 3, rtol=RTOL)
    assert not np.isclose(got, jnp.sum(w * losses) / jnp.sum(w))


FOCAL_PARAMS = [(0.25, 2), (-1, 2), (0.5, 0), (0.75, 0.5), (0.25, 3.7)]


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("alpha,gamma", FOCAL_PARAMS)
def test_torchvision_focal_matches_transcription(alpha, gamma, reduction):
    x, t = _logits((3, 4), seed=12, limit=10.0), _labels((3, 4), "soft", seed=13)
    t[0] = np.round(t[0])
    got = c_torch.sigmoid_focal_loss(x, t, alpha, gamma, reduction)
    want = torchvision_focal_ref(x, t, alpha, gamma, reduction)
    np.testing.assert_allclose(got, want, rtol=4e-6)


@pytest.mark.parametrize("reduction", ["none", "sum"])
@pytest.mark.parametrize("alpha,gamma", FOCAL_PARAMS)
def test_torchvision_focal_matches_torch_float64(alpha, gamma, reduction):
    torch = pytest.importorskip("torch")
    x, t = _logits((3, 4), seed=12, limit=10.0), _labels((3, 4), "soft", seed=13)
    t[0] = np.round(t[0])
    tx, tt = _tensor64(torch, x, True), _tensor64(torch, t, True)
    out = _torchvision_focal_torch(torch, tx, tt, alpha, gamma, reduction)
    got = c_torch.sigmoid_focal_loss(x, t, alpha, gamma, reduction)
    np.testing.assert_allclose(got, out.detach().numpy(), rtol=4e-6)
    out.sum().backward()
    gx, gt = jax.grad(
        lambda x, t: jnp.sum(c_torch.sigmoid_focal_loss(x, t, alpha, gamma)), argnums=(0, 1)
    )(x, t)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(gt, tt.grad.numpy(), rtol=2e-5, atol=1e-6)


def test_torchvision_focal_alpha_minus_one_drops_alpha_t():
    x, t = jnp.array([2.0, 2.0, -1.0]), jnp.array([1.0, 0.0, 0.3])
    got = c_torch.sigmoid_focal_loss(x, t, alpha=-1)
    np.testing.assert_allclose(got, c_optax.sigmoid_focal_loss(x, t), rtol=RTOL)
    np.testing.assert_allclose(got, torchvision_focal_ref(x, t, alpha=-1), rtol=RTOL)


@given(
    x=st.lists(st.floats(-30, 30, width=32), min_size=6, max_size=6),
    t=st.lists(st.floats(0, 1, width=32), min_size=6, max_size=6),
    w=st.lists(st.floats(0, 4, width=32), min_size=6, max_size=6),
    pw=st.floats(0, 4, width=32),
    reduction=st.sampled_from(["none", "mean", "sum"]),
)
def test_torch_property(x, t, w, pw, reduction):
    x, t, w = np.array(x, F32), np.array(t, F32), np.array(w, F32)
    got = c_torch.binary_cross_entropy_with_logits(x, t, w, reduction, pw)
    want = torch_bce_ref(x, t, w, reduction, pw)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-30)


# ---------------------------------------------------------------------------------------------
# Stability at ±inf, gradients, retracing (jit, vmap, strict modes and debug_nans: the battery
# in test_shared_behaviour.py)

X_INF = np.array([np.inf, -np.inf, np.inf, -np.inf, np.inf, 3.0], F32)
Z_INF = np.array([1.0, 0.0, 0.0, 1.0, 0.5, 1.0], F32)
AGREE = np.array([True, True, False, False, False, True])  # finite loss at these

# Each as the user would call it: (logits, labels) -> elementwise losses.
ELEMENTWISE = {
    "optax.bce": lambda x, z: c_optax.sigmoid_binary_cross_entropy(x, z),
    "optax.focal": lambda x, z: c_optax.sigmoid_focal_loss(x, z, alpha=0.25),
    "optax.focal_neg_alpha": lambda x, z: c_optax.sigmoid_focal_loss(x, z, alpha=-1.0),
    "rax": lambda x, z: c_rax.pointwise_sigmoid_loss(x, z, reduce_fn=None),
    "rax.weights": lambda x, z: c_rax.pointwise_sigmoid_loss(
        x, z, weights=jnp.full(x.shape, 2.0), reduce_fn=None
    ),
    "torch.bce": lambda x, z: c_torch.binary_cross_entropy_with_logits(x, z, reduction="none"),
    "torch.bce_pos_weight": lambda x, z: c_torch.binary_cross_entropy_with_logits(
        x, z, reduction="none", pos_weight=jnp.array(3.0)
    ),
    "torch.focal_gamma_half": lambda x, z: c_torch.sigmoid_focal_loss(x, z, 0.25, 0.5),
}


@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_infinite_logits_stable(name):
    f = ELEMENTWISE[name]
    v = np.asarray(f(jnp.asarray(X_INF), jnp.asarray(Z_INF)))
    assert not np.isnan(v).any(), v
    # optax uses a negative alpha as given: alpha_t = -1 for z = 1, so -inf there
    infinite = np.isinf(v[2:5]) if "neg_alpha" in name else np.isposinf(v[2:5])
    assert np.all(v[:2] == 0) and np.all(infinite) and np.isfinite(v[5]), v
    # logits gradient finite everywhere (the loss itself is inf at the disagreeing ones)
    g = jax.grad(lambda x: jnp.sum(f(x, jnp.asarray(Z_INF))))(jnp.asarray(X_INF))
    assert np.all(np.isfinite(g)), g


def test_masked_and_zero_weighted_infinite_logits_give_finite_values():
    x, z = jnp.asarray(X_INF[AGREE]), jnp.asarray(Z_INF[AGREE])
    assert np.isfinite(c_rax.pointwise_sigmoid_loss(x, z, where=jnp.array([True, False, True])))
    assert c_torch.binary_cross_entropy_with_logits(x, z, weight=jnp.zeros(3)) == 0


def test_strict_rank_promotion_gradients():
    x, z = jnp.linspace(-2, 2, 4), jnp.ones((3, 4))
    with jax.numpy_rank_promotion("raise"):
        g = jax.grad(lambda x: jnp.sum(c_optax.sigmoid_binary_cross_entropy(x, z)))(x)
        np.testing.assert_allclose(g, 3 * (ref_sigmoid(np.asarray(x)) - 1), rtol=1e-5)
        g = jax.grad(
            lambda p: c_torch.binary_cross_entropy_with_logits(jnp.ones((3, 4)), z, pos_weight=p)
        )(jnp.ones(4))
        np.testing.assert_allclose(g, np.full(4, 3 * _softplus(-1.0) / 12), rtol=1e-5)
        g = jax.grad(lambda w: c_rax.pointwise_sigmoid_loss(x, z, weights=w))(jnp.ones((3, 1)))
        np.testing.assert_allclose(
            g, np.full((3, 1), ref_loss(1, np.asarray(x)).sum() / 12), rtol=1e-5
        )


# (function of (x, z) reducing each row or not, whether it reduces)
BATCHED = {
    "optax.bce": lambda x, z: c_optax.sigmoid_binary_cross_entropy(x, z),
    "optax.focal": lambda x, z: c_optax.sigmoid_focal_loss(x, z, alpha=0.25, gamma=1.5),
    "rax.mean": lambda x, z: c_rax.pointwise_sigmoid_loss(x, z, where=z < 0.9),
    "rax.custom": lambda x, z: c_rax.pointwise_sigmoid_loss(x, z, reduce_fn=jnp.max),
    "torch.bce": lambda x, z: c_torch.binary_cross_entropy_with_logits(
        x, z, pos_weight=jnp.array(2.0)
    ),
}


@pytest.mark.parametrize("name", list(BATCHED))
def test_gradient_matches_central_differences(name):
    f = BATCHED[name]
    x, z = jnp.asarray(_logits((3, 5), seed=14)), jnp.asarray(_labels((3, 5), "soft", seed=15))
    gx = jax.jit(jax.grad(lambda x: jnp.sum(f(x, z))))(x)
    eps = 1e-3  # central differences in float64 of the float64 function
    with x64():
        x64_, z64 = jnp.asarray(_f64(x)), jnp.asarray(_f64(z))
        d = jnp.zeros_like(x64_).at[1, 2].set(eps)
        fd = (jnp.sum(f(x64_ + d, z64)) - jnp.sum(f(x64_ - d, z64))) / (2 * eps)
    np.testing.assert_allclose(gx[1, 2], fd, rtol=1e-4, atol=1e-6)


def test_no_retrace_on_repeated_calls():
    x, z = jnp.asarray(_logits((4,))), jnp.asarray(_labels((4,), "soft"))
    bodies = [c_optax._bce, c_optax._focal, c_rax._pointwise, c_torch._bce, c_torch._focal]

    def calls(k):
        c_optax.sigmoid_binary_cross_entropy(x, z)
        # gamma is a static option (one program per value, as documented): kept equal here.
        c_optax.sigmoid_focal_loss(x, z, alpha=0.1 * k, gamma=2.0)
        c_rax.pointwise_sigmoid_loss(x, z, weights=jnp.full(4, float(k)))
        c_torch.binary_cross_entropy_with_logits(x, z, reduction="MEAN" if k else "mean")
        c_torch.sigmoid_focal_loss(x, z, alpha=0.1 * k, gamma=2)

    calls(1)
    sizes = [b._cache_size() for b in bodies]
    calls(2)
    calls(3)
    assert [b._cache_size() for b in bodies] == sizes


# ---------------------------------------------------------------------------------------------
# Errors: the compat function and the argument are named

Z3 = np.zeros(3, F32)
Z23 = np.zeros((2, 3), F32)
ERRORS = [
    (
        lambda: c_optax.sigmoid_binary_cross_entropy(np.arange(3), Z3),
        TypeError,
        ["compat.optax.sigmoid_binary_cross_entropy", "`logits`", "int"],
    ),
    (
        lambda: c_optax.sigmoid_binary_cross_entropy(Z3, np.zeros(4)),
        ValueError,
        ["compat.optax.sigmoid_binary_cross_entropy", "`logits` (3,)", "`labels` (4,)"],
    ),
    (
        lambda: c_optax.sigmoid_binary_cross_entropy(None, Z3),
        ValueError,
        ["compat.optax.sigmoid_binary_cross_entropy", "`logits`", "None"],
    ),
    (
        lambda: c_optax.sigmoid_focal_loss(Z3, Z3, gamma=-1.0),
        ValueError,
        ["compat.optax.sigmoid_focal_loss", "`gamma`", "[0, inf)"],
    ),
    (
        lambda: c_optax.sigmoid_focal_loss(Z3, Z3, alpha=np.ones(2)),
        ValueError,
        ["compat.optax.sigmoid_focal_loss", "`alpha` (2,)"],
    ),
    (
        lambda: c_rax.pointwise_sigmoid_loss(np.arange(3), Z3),
        TypeError,
        ["compat.rax.pointwise_sigmoid_loss", "`scores`"],
    ),
    (
        lambda: c_rax.pointwise_sigmoid_loss(Z23, Z23, weights=np.ones(2)),
        ValueError,
        ["compat.rax.pointwise_sigmoid_loss", "`weights` (2,)", "`scores` (2, 3)"],
    ),
    (
        lambda: c_rax.pointwise_sigmoid_loss(Z23, Z23, where=np.ones(2, bool)),
        ValueError,
        ["compat.rax.pointwise_sigmoid_loss", "`where`", "(2,)", "(2, 3)"],
    ),
    (
        lambda: c_rax.pointwise_sigmoid_loss(Z23, Z23, segments=np.zeros(4, int)),
        ValueError,
        ["compat.rax.pointwise_sigmoid_loss", "`segments`", "(4,)"],
    ),
    (
        lambda: c_rax.pointwise_sigmoid_loss(Z3, Z3, reduce_fn="mean"),
        TypeError,
        ["compat.rax.pointwise_sigmoid_loss", "`reduce_fn`", "'mean'"],
    ),
    (
        lambda: c_torch.binary_cross_entropy_with_logits(Z3, Z3, reduction="bogus"),
        ValueError,
        ["compat.torch.binary_cross_entropy_with_logits", "unknown reduction", "'bogus'", "'mean'"],
    ),
    (
        lambda: c_torch.binary_cross_entropy_with_logits(Z23, Z3),
        ValueError,
        ["compat.torch.binary_cross_entropy_with_logits", "`target`", "(3,)", "(2, 3)"],
    ),
    (
        lambda: c_torch.binary_cross_entropy_with_logits(Z23, Z23, weight=np.ones(2)),
        ValueError,
        ["compat.torch.binary_cross_entropy_with_logits", "`weight`", "(2,)"],
    ),
    (
        lambda: c_torch.binary_cross_entropy_with_logits(Z3, Z3, pos_weight=np.ones((2, 3))),
        ValueError,
        ["compat.torch.binary_cross_entropy_with_logits", "`pos_weight`", "(2, 3)"],
    ),
    (
        lambda: c_torch.binary_cross_entropy_with_logits(np.arange(3), Z3),
        TypeError,
        ["compat.torch.binary_cross_entropy_with_logits", "`input`"],
    ),
    (
        lambda: c_torch.sigmoid_focal_loss(Z3, Z3, reduction="avg"),
        ValueError,
        ["compat.torch.sigmoid_focal_loss", "unknown reduction", "'avg'"],
    ),
    (
        lambda: c_torch.sigmoid_focal_loss(Z3, Z23),
        ValueError,
        ["compat.torch.sigmoid_focal_loss", "`targets`", "(2, 3)", "(3,)"],
    ),
    (
        lambda: c_torch.sigmoid_focal_loss(Z3, Z3, gamma=-2),
        ValueError,
        ["compat.torch.sigmoid_focal_loss", "`gamma`"],
    ),
    (
        lambda: c_torch.sigmoid_focal_loss(Z3, Z3, alpha=np.ones(4)),
        ValueError,
        ["compat.torch.sigmoid_focal_loss", "`alpha`", "(4,)"],
    ),
]


@pytest.mark.parametrize("call,error,fragments", ERRORS)
def test_errors_name_function_and_argument(call, error, fragments):
    with pytest.raises(error) as info:
        call()
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_torch_refuses_the_same_inputs():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    with pytest.raises(ValueError):
        F.binary_cross_entropy_with_logits(torch.zeros(2, 3), torch.zeros(3))
    with pytest.raises(ValueError):
        F.binary_cross_entropy_with_logits(torch.zeros(3), torch.zeros(3), reduction="bogus")


# ---------------------------------------------------------------------------------------------
# where: a masked element is absent, whatever its inputs hold

_KEPT = np.array([[True, False, True, True], [False, True, True, False], [True, True, False, True]])
_NAN_INPUTS = {  # per-element inputs; NaN or inf wherever _KEPT is False
    "x": np.where(_KEPT, _logits((3, 4), seed=3), np.nan).astype(F32),
    "z": np.where(_KEPT, _labels((3, 4), "soft", seed=4), np.inf).astype(F32),
    "w": np.where(_KEPT, _rng(5).uniform(0.5, 2.0, (3, 4)), np.nan).astype(F32),
    "a": np.where(_KEPT, _rng(6).uniform(0.0, 1.0, (3, 4)), np.nan).astype(F32),
    "n": np.where(_KEPT, _rng(7).uniform(-1.0, 0.0, (3, 4)), np.nan).astype(F32),
}
WHERE_CALLS = {  # (call(inputs, where), the inputs it takes, elementwise)
    "optax_bce": (
        lambda v, where: c_optax.sigmoid_binary_cross_entropy(v["x"], v["z"], where=where),
        "xz",
        True,
    ),
    "optax_focal": (
        lambda v, where: c_optax.sigmoid_focal_loss(
            v["x"], v["z"], alpha=v["a"], gamma=2.0, where=where
        ),
        "xza",
        True,
    ),
    "optax_focal_negative_alpha": (
        lambda v, where: c_optax.sigmoid_focal_loss(
            v["x"], v["z"], alpha=v["n"], gamma=1.5, where=where
        ),
        "xzn",
        True,
    ),
    "torch_bce_none": (
        lambda v, where: c_torch.binary_cross_entropy_with_logits(
            v["x"], v["z"], v["w"], "none", v["a"], where=where
        ),
        "xzwa",
        True,
    ),
    "torch_bce_mean": (
        lambda v, where: c_torch.binary_cross_entropy_with_logits(
            v["x"], v["z"], v["w"], pos_weight=v["a"], where=where
        ),
        "xzwa",
        False,
    ),
    "torch_bce_sum": (
        lambda v, where: c_torch.binary_cross_entropy_with_logits(
            v["x"], v["z"], reduction="sum", where=where
        ),
        "xz",
        False,
    ),
    "torchvision_focal_none": (
        lambda v, where: c_torch.sigmoid_focal_loss(v["x"], v["z"], v["a"], where=where),
        "xza",
        True,
    ),
    "torchvision_focal_mean": (
        lambda v, where: c_torch.sigmoid_focal_loss(v["x"], v["z"], 0.25, 2.5, "mean", where=where),
        "xz",
        False,
    ),
    "rax_mean": (
        lambda v, where: c_rax.pointwise_sigmoid_loss(v["x"], v["z"], weights=v["w"], where=where),
        "xzw",
        False,
    ),
    "rax_sum": (
        lambda v, where: c_rax.pointwise_sigmoid_loss(
            v["x"], v["z"], where=where, reduce_fn=jnp.sum
        ),
        "xz",
        False,
    ),
    "rax_none": (
        lambda v, where: c_rax.pointwise_sigmoid_loss(
            v["x"], v["z"], weights=v["w"], where=where, reduce_fn=None
        ),
        "xzw",
        True,
    ),
}


@pytest.mark.parametrize("name", list(WHERE_CALLS))
def test_where_is_the_call_on_the_kept_elements(name):
    call, names, elementwise = WHERE_CALLS[name]
    inputs = {k: jnp.asarray(_NAN_INPUTS[k]) for k in names}
    got = np.asarray(call(inputs, jnp.asarray(_KEPT)))
    kept = np.asarray(call({k: v[_KEPT] for k, v in inputs.items()}, None))
    if elementwise:
        assert got.shape == _KEPT.shape and np.all(got[~_KEPT] == 0)
        np.testing.assert_allclose(got[_KEPT], kept, rtol=RTOL)
    else:
        np.testing.assert_allclose(got, kept, rtol=RTOL)


@pytest.mark.parametrize("name", list(WHERE_CALLS))
def test_where_gives_zero_gradients_and_no_nan_under_debug_nans(name):
    # Eagerly: debug_nans checks every primitive's output (jit equals eager is the battery's).
    call, names, _ = WHERE_CALLS[name]
    inputs = {k: jnp.asarray(_NAN_INPUTS[k]) for k in names}
    where = jnp.asarray(_KEPT)

    def total(v):
        return jnp.sum(call(v, where))

    grad = jax.value_and_grad(total)
    with jax.debug_nans(True):
        value, grads = grad(inputs)
    assert np.isfinite(value)
    for k, g in grads.items():
        g = np.asarray(g)
        assert np.all(np.isfinite(g)), k
        assert np.all(g[~_KEPT] == 0), k


def test_where_must_be_boolean_and_broadcast():
    x = jnp.zeros((2, 3))
    with pytest.raises(TypeError, match=r"compat.optax.sigmoid_binary_cross_entropy: `where`"):
        c_optax.sigmoid_binary_cross_entropy(x, x, where=jnp.ones((2, 3)))
    with pytest.raises(
        ValueError,
        match=r"compat.torch.sigmoid_focal_loss: `where` of shape "
        r"\(2,\) cannot be broadcast to the inputs shape",
    ):
        c_torch.sigmoid_focal_loss(x, x, where=jnp.ones(2, bool))
    # rax's own convention: a numeric mask, nonzero = valid
    np.testing.assert_array_equal(
        c_rax.pointwise_sigmoid_loss(x, x, where=jnp.array([1, 0, 2]), reduce_fn=None),
        c_rax.pointwise_sigmoid_loss(x, x, where=jnp.array([True, False, True]), reduce_fn=None),
    )
