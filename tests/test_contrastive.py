"""Chunked SigLIP loss: values and gradients against float64 references, ids, memory, errors.

The shared behaviours (strict modes, debug_nans, jit equals eager, vmap, dtypes) are in
test_shared_behaviour.py. The ring on 8 devices: here with ids (``-m sharded``), without in
test_sharding.py.
"""

from __future__ import annotations

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import count_dots, x64
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

import sigmoid_xent as sx

ARGNUMS = (0, 1, 2, 3)


def naive_siglip(img, txt, t, b):
    """The plain jnp formula of the SigLIP paper: materialises the [B, B] logits."""
    logits = img @ txt.T * jnp.exp(t) + b
    labels = 2 * jnp.eye(img.shape[0], dtype=logits.dtype) - 1
    return -jnp.sum(jax.nn.log_sigmoid(labels * logits)) / img.shape[0]


def ref_siglip(img, txt, t, b):
    """float64 numpy value and gradients (img, txt, t, b), stable for any logit."""
    img, txt = np.asarray(img, np.float64), np.asarray(txt, np.float64)
    t, b = np.float64(np.reshape(t, ())), np.float64(np.reshape(b, ()))
    batch = img.shape[0]
    logits = img @ txt.T * np.exp(t) + b
    labels = 2 * np.eye(batch) - 1
    value = np.sum(np.logaddexp(0, -labels * logits)) / batch
    dlogits = (0.5 * (1 + np.tanh(logits / 2)) - np.eye(batch)) / batch  # sigmoid(l) - z
    grads = (
        np.exp(t) * dlogits @ txt,
        np.exp(t) * dlogits.T @ img,
        np.sum(dlogits * (logits - b)),
        np.sum(dlogits),
    )
    return value, grads


def ref_siglip_ids(img, txt, t, b, img_ids, txt_ids):
    """float64 value and gradients (img, txt, t, b) with ids: positives where the ids match,
    rows with an id < 0 absent, divided by the number of present images."""
    img, txt = np.asarray(img, np.float64), np.asarray(txt, np.float64)
    t, b = np.float64(np.reshape(t, ())), np.float64(np.reshape(b, ()))
    img_ids, txt_ids = np.asarray(img_ids), np.asarray(txt_ids)
    present = (img_ids >= 0)[:, None] & (txt_ids >= 0)[None, :]
    z = (img_ids[:, None] == txt_ids[None, :]).astype(np.float64)
    count = max(int(np.sum(img_ids >= 0)), 1)
    logits = img @ txt.T * np.exp(t) + b
    value = np.sum(np.where(present, np.logaddexp(0, -(2 * z - 1) * logits), 0)) / count
    dlogits = np.where(present, 0.5 * (1 + np.tanh(logits / 2)) - z, 0) / count
    grads = (
        np.exp(t) * dlogits @ txt,
        np.exp(t) * dlogits.T @ img,
        np.sum(dlogits * (logits - b)),
        np.sum(dlogits),
    )
    return value, grads


def make(batch, dim, dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(jnp.asarray(rng.standard_normal((batch, dim)), dtype) for _ in range(2))


# Shared compiled functions: tests with equal shapes and chunk sizes reuse one executable
# (XLA:CPU compiles of the scans take about a second each).
VALUE = jax.jit(sx.siglip_loss, static_argnames="chunk_size")
VALUE_AND_GRAD = jax.jit(jax.value_and_grad(sx.siglip_loss, ARGNUMS), static_argnames="chunk_size")


def assert_close_to_ref(value, grads, img, txt, t, b, rtol):
    want_value, want_grads = ref_siglip(img, txt, t, b)
    np.testing.assert_allclose(value, want_value, rtol=rtol)
    for g, w, x in zip(grads, want_grads, (img, txt, t, b), strict=True):
        assert g.shape == np.shape(x) and g.dtype == x.dtype
        scale = np.max(np.abs(w))
        np.testing.assert_allclose(np.reshape(g, np.shape(w)), w, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("batch,dim,chunk", [(37, 8, 8), (64, 16, None), (5, 3, 100)])
def test_value_and_grads_match_naive(batch, dim, chunk):
    # 37 rows in chunks of 8: 4 whole chunks and an overlapping last one. t and b of shape (1,)
    # there, scalars elsewhere; their gradients keep their shapes.
    img, txt = make(batch, dim, seed=batch)
    shape = (1,) if chunk == 8 else ()
    t, b = jnp.full(shape, 0.7), jnp.full(shape, -2.0)
    value, grads = VALUE_AND_GRAD(img, txt, t, b, chunk_size=chunk)
    want_value, want_grads = jax.jit(jax.value_and_grad(naive_siglip, ARGNUMS))(img, txt, t, b)
    np.testing.assert_allclose(value, want_value, rtol=2e-6)
    for g, w in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6 * float(jnp.max(jnp.abs(w))))
    assert_close_to_ref(value, grads, img, txt, t, b, rtol=1e-5)
    if chunk == 8:  # the forward pass alone (the primal path, not the VJP's forward rule).
        np.testing.assert_allclose(VALUE(img, txt, t, b, chunk_size=chunk), value, rtol=1e-6)


def test_float64_matches_reference():
    with x64():
        img, txt = make(23, 6, jnp.float64)
        t, b = jnp.asarray(1.1, jnp.float64), jnp.asarray(-4.0, jnp.float64)
        value, grads = jax.jit(
            jax.value_and_grad(lambda *a: sx.siglip_loss(*a, chunk_size=5), ARGNUMS)
        )(img, txt, t, b)
        assert value.dtype == jnp.float64
        assert_close_to_ref(value, grads, img, txt, t, b, rtol=1e-12)


def test_stable_for_huge_logits():
    # Logits up to ~1e4 and ~1e30 (float32 log_sigmoid of the naive formula saturates there).
    img, txt = make(37, 8, seed=37)
    for t in (np.log(1e4), np.log(1e30)):
        t_b = jnp.full((1,), t, jnp.float32), jnp.full((1,), 3.0)
        value, grads = VALUE_AND_GRAD(img, txt, *t_b, chunk_size=8)
        assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads)
        np.testing.assert_allclose(value, ref_siglip(img, txt, *t_b)[0], rtol=1e-5)


def test_perfect_separation_is_not_cancelled():
    # Matching pairs with logit +20, all others -20: the loss is tiny and must come out as such,
    # not as the rounding error of softplus(l) - l.
    img = jnp.eye(4)
    t, b = jnp.log(40.0), jnp.float32(-20.0)
    value = VALUE(img, img, t, b, chunk_size=3)
    np.testing.assert_allclose(value, ref_siglip(img, img, t, b)[0], rtol=1e-5)
    assert 0 < value < 1e-7


def test_checkpoint_vmap_value_and_grad():
    img, txt = make(3 * 12, 4)
    img, txt = img.reshape(3, 12, 4), txt.reshape(3, 12, 4)
    f = jax.checkpoint(lambda i, x: sx.siglip_loss(i, x, 0.2, -1.0, chunk_size=5))
    values, grads = jax.jit(jax.vmap(jax.value_and_grad(f, (0, 1))))(img, txt)
    for k in range(3):
        want_value, want_grads = ref_siglip(img[k], txt[k], 0.2, -1.0)
        np.testing.assert_allclose(values[k], want_value, rtol=1e-5)
        np.testing.assert_allclose(grads[0][k], want_grads[0], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(grads[1][k], want_grads[1], rtol=1e-5, atol=1e-7)


def _all_shapes(jaxpr):
    """Shapes of every value in a jaxpr and all its sub-jaxprs (scan bodies, custom rules...)."""
    shapes = set()

    def visit(jp):
        jp = getattr(jp, "jaxpr", jp)
        for v in list(jp.invars) + list(jp.outvars) + list(jp.constvars):
            shapes.add(tuple(getattr(v.aval, "shape", ())))
        for eqn in jp.eqns:
            for v in eqn.outvars:
                shapes.add(tuple(getattr(v.aval, "shape", ())))
            for param in eqn.params.values():
                for p in param if isinstance(param, (tuple, list)) else (param,):
                    if isinstance(p, (jax.extend.core.Jaxpr, jax.extend.core.ClosedJaxpr)):
                        visit(p)

    visit(jaxpr)
    return shapes


def test_no_batch_by_batch_value_anywhere():
    batch = 40
    img, txt = make(batch, 4)
    ids = jnp.arange(batch) // 2
    with_ids = lambda *a: sx.siglip_loss(*a, img_ids=ids, txt_ids=ids, chunk_size=8)  # noqa: E731
    for f in (
        lambda *a: sx.siglip_loss(*a, chunk_size=8),
        jax.value_and_grad(lambda *a: sx.siglip_loss(*a, chunk_size=8), ARGNUMS),
        with_ids,
        jax.value_and_grad(with_ids, ARGNUMS),
    ):
        shapes = _all_shapes(jax.make_jaxpr(f)(img, txt, 0.0, 0.0))
        assert (batch, batch) not in shapes and (8, batch) in shapes
    naive = _all_shapes(jax.make_jaxpr(naive_siglip)(img, txt, 0.0, 0.0))
    assert (batch, batch) in naive  # the check can see a [B, B] value when there is one.


def test_compiled_temp_memory_much_smaller_than_naive():
    batch, dim = 1024, 32
    shapes = (jax.ShapeDtypeStruct((batch, dim), jnp.float32),) * 2 + (
        jax.ShapeDtypeStruct((), jnp.float32),
    ) * 2

    def temp(f):
        return jax.jit(f).lower(*shapes).compile().memory_analysis().temp_size_in_bytes

    chunked = lambda *a: sx.siglip_loss(*a, chunk_size=32)  # noqa: E731
    for wrap in (lambda f: f, lambda f: jax.value_and_grad(f, ARGNUMS)):
        naive_bytes, chunked_bytes = temp(wrap(naive_siglip)), temp(wrap(chunked))
        assert naive_bytes >= batch * batch * 4
        assert chunked_bytes <= naive_bytes / 8, (chunked_bytes, naive_bytes)


def test_value_and_grad_forms_each_chunk_once():
    # One product per chunk forward; three in value_and_grad, all in the forward rule's scan.
    img, txt = make(40, 4)
    ids = jnp.arange(40) % 7
    for f in (
        lambda *a: sx.siglip_loss(*a, chunk_size=8),
        lambda *a: sx.siglip_loss(*a, img_ids=ids, txt_ids=ids[::-1], chunk_size=8),
    ):
        assert count_dots(jax.make_jaxpr(f)(img, txt, 0.0, 0.0)) == 1
        assert count_dots(jax.make_jaxpr(jax.value_and_grad(f, ARGNUMS))(img, txt, 0.0, 0.0)) == 3


@pytest.mark.parametrize("chunk", [3])  # 7 rows: two whole chunks and an overlapping one
def test_second_derivatives_match_naive_autodiff(chunk):
    with x64():
        img, txt = make(7, 3, jnp.float64, seed=4)
        t, b = jnp.asarray(0.6, jnp.float64), jnp.asarray(-2.0, jnp.float64)
        args = (img, txt, t, b)
        f = lambda *a: sx.siglip_loss(*a, chunk_size=chunk)  # noqa: E731
        hess = jax.jit(jax.hessian(f, ARGNUMS))(*args)
        want = jax.jit(jax.hessian(naive_siglip, ARGNUMS))(*args)
        for got_row, want_row in zip(hess, want, strict=True):
            for got, expected in zip(got_row, want_row, strict=True):
                scale = np.max(np.abs(expected))
                np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12 * scale)
        assert np.max(np.abs(want[0][1])) > 1e-3 and abs(want[2][2]) > 1e-3

        def grad_norm(fn):  # grad of grad, as in a gradient penalty.
            return lambda x: jnp.sum(jax.grad(fn, 0)(img, x, t, b) ** 2)

        np.testing.assert_allclose(
            jax.grad(grad_norm(f))(txt), jax.grad(grad_norm(naive_siglip))(txt), rtol=1e-9
        )
        jac2 = jax.jacrev(jax.jacrev(f, 2), 2)(*args)
        np.testing.assert_allclose(jac2, want[2][2], rtol=1e-9)


def test_ring_on_a_one_device_mesh_equals_siglip_loss():
    mesh = Mesh(np.array(jax.devices()[:1]), ("batch",))
    img, txt = make(13, 4)
    ring = jax.jit(
        jax.shard_map(
            lambda i, x, t, b: sx.siglip_loss_ring(i, x, t, b, axis_name="batch", chunk_size=5),
            mesh=mesh,
            in_specs=(P("batch"), P("batch"), P(), P()),
            out_specs=P(),
        )
    )
    t, b = jnp.asarray(0.4), jnp.asarray(-1.5)
    value, grads = jax.jit(jax.value_and_grad(ring, ARGNUMS))(img, txt, t, b)
    assert_close_to_ref(value, grads, img, txt, t, b, rtol=1e-5)


@pytest.mark.parametrize(
    "args,kwargs,error,match",
    [
        ((np.ones((4, 2), np.int32), np.ones((4, 2)), 0.0, 0.0), {}, TypeError, "img_emb"),
        ((np.ones((4, 2)), np.ones((4, 2), bool), 0.0, 0.0), {}, TypeError, "txt_emb"),
        (
            (np.ones((4, 2)), np.ones((5, 2)), 0.0, 0.0),
            {},
            ValueError,
            r"without ids.*\(4, 2\).*\(5, 2\)",
        ),
        (
            (np.ones((4, 2)), np.ones((5, 3)), 0.0),
            {"img_ids": np.zeros(4, int), "txt_ids": np.zeros(5, int)},
            ValueError,
            r"same dim.*\(4, 2\).*\(5, 3\)",
        ),
        (
            (np.ones((4, 2)), np.ones((4, 2)), 0.0),
            {"img_ids": np.zeros(4, int)},
            ValueError,
            "`img_ids` given without `txt_ids`",
        ),
        (
            (np.ones((4, 2)), np.ones((4, 2)), 0.0),
            {"txt_ids": np.zeros(4, int)},
            ValueError,
            "`txt_ids` given without `img_ids`",
        ),
        (
            (np.ones((4, 2)), np.ones((4, 2)), 0.0),
            {"img_ids": np.zeros(4), "txt_ids": np.zeros(4, int)},
            TypeError,
            "`img_ids` must be integer",
        ),
        (
            (np.ones((4, 2)), np.ones((5, 2)), 0.0),
            {"img_ids": np.zeros(4, int), "txt_ids": np.zeros(4, int)},
            ValueError,
            r"`txt_ids` must have shape \(5,\)",
        ),
        ((np.ones((4,)), np.ones((4,)), 0.0, 0.0), {}, ValueError, "img_emb.*batch, dim"),
        ((np.ones((0, 2)), np.ones((0, 2)), 0.0, 0.0), {}, ValueError, "empty"),
        ((np.ones((4, 2)), np.ones((4, 2)), np.ones(2), 0.0), {}, ValueError, "`t`.*\\(2,\\)"),
        ((np.ones((4, 2)), np.ones((4, 2)), 0.0, np.ones((1, 1))), {}, ValueError, "`b`"),
        ((np.ones((4, 2)), np.ones((4, 2)), 1j, 0.0), {}, TypeError, "`t`"),
        ((np.ones((4, 2)), np.ones((4, 2)), 0.0, 0.0), {"chunk_size": 0}, ValueError, "chunk_size"),
        (
            (np.ones((4, 2)), np.ones((4, 2)), 0.0, 0.0),
            {"chunk_size": 2.5},
            TypeError,
            "chunk_size",
        ),
    ],
)
def test_errors_name_the_argument(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        sx.siglip_loss(*args, **kwargs)


def test_ring_axis_name_must_be_bound():
    img, txt = make(8, 4)
    with pytest.raises(ValueError, match=r"siglip_loss_ring.*`axis_name`.*outside jax.shard_map"):
        sx.siglip_loss_ring(img, txt, 0.0, 0.0, axis_name="batch")
    mesh = Mesh(np.array(jax.devices()[:1]), ("batch",))
    ring = jax.jit(
        jax.shard_map(
            lambda i, x: sx.siglip_loss_ring(i, x, 0.0, 0.0, axis_name="devices"),
            mesh=mesh,
            in_specs=(P("batch"), P("batch")),
            out_specs=P(),
        )
    )
    with pytest.raises(NameError, match=r"'devices'.*binds \('batch',\)"):  # also a NameError
        ring(img, txt)


# --------------------------------------------------------------------------------------------
# Ids: several captions per image, duplicates, padding, N != M, no bias.

ID_CASES = {
    # (images, texts, dim, chunk, bias): ids drawn from few values, so many positives.
    "two_captions_per_image": (9, 18, 4, 4, True),
    "fewer_texts_no_bias": (17, 6, 3, 5, False),
    "one_chunk": (8, 8, 5, None, True),
}


def id_data(images, texts, dim, seed=0):
    rng = np.random.default_rng(seed)
    img, txt = (jnp.asarray(rng.standard_normal((n, dim)), jnp.float32) for n in (images, texts))
    img_ids = jnp.asarray(rng.integers(-1, 5, images))
    txt_ids = jnp.asarray(rng.integers(-1, 5, texts))
    return img, txt, img_ids, txt_ids


@pytest.mark.parametrize("name", list(ID_CASES))
def test_ids_value_and_grads_equal_the_float64_reference(name):
    images, texts, dim, chunk, with_bias = ID_CASES[name]
    img, txt, img_ids, txt_ids = id_data(images, texts, dim)
    t, b = jnp.asarray(0.6), jnp.asarray(-1.5 if with_bias else 0.0)

    def f(img, txt, t, b):
        return sx.siglip_loss(
            img, txt, t, b if with_bias else None, img_ids=img_ids, txt_ids=txt_ids,
            chunk_size=chunk,
        )  # fmt: skip

    value, grads = jax.jit(jax.value_and_grad(f, ARGNUMS))(img, txt, t, b)
    want, want_grads = ref_siglip_ids(img, txt, t, b, img_ids, txt_ids)
    np.testing.assert_allclose(value, want, rtol=2e-6)
    for g, w in zip(grads[: 4 if with_bias else 3], want_grads, strict=False):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6 * np.max(np.abs(w)))


def test_diagonal_ids_equal_no_ids_and_padding_rows_reach_nothing():
    img, txt = make(12, 4, seed=3)
    t, b = 0.4, -2.0
    ids = jnp.arange(12)
    plain = VALUE_AND_GRAD(img, txt, t, b, chunk_size=5)
    with_ids = jax.value_and_grad(
        lambda *a: sx.siglip_loss(*a, img_ids=ids, txt_ids=ids, chunk_size=5), ARGNUMS
    )(img, txt, t, b)
    for got, want in zip(jax.tree.leaves(with_ids), jax.tree.leaves(plain), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)
    # Padding rows holding NaN, on both sides: the value of the batch without them, and zero
    # gradients there, with no NaN anywhere (debug_nans, eager and jitted).
    pad_img = jnp.concatenate([img[:3], jnp.full((2, 4), jnp.nan), img[3:]])
    pad_txt = jnp.concatenate([jnp.full((1, 4), jnp.inf), txt])
    img_ids = jnp.concatenate([ids[:3], jnp.array([-1, -3]), ids[3:]])
    txt_ids = jnp.concatenate([jnp.array([-1]), ids])

    def f(i, x, t, b):
        return sx.siglip_loss(i, x, t, b, img_ids=img_ids, txt_ids=txt_ids, chunk_size=5)

    with jax.debug_nans(True):
        for g in (f, jax.jit(f)):
            value, grads = jax.value_and_grad(g, ARGNUMS)(pad_img, pad_txt, t, b)
            np.testing.assert_allclose(value, plain[0], rtol=1e-6)
            np.testing.assert_array_equal(grads[0][3:5], 0.0)
            np.testing.assert_array_equal(grads[1][0], 0.0)
            np.testing.assert_allclose(grads[0][jnp.r_[0:3, 5:14]], plain[1][0], rtol=1e-5)
    # No image present: 0, with zero gradients.
    none = jnp.full(12, -1)
    value, grads = jax.value_and_grad(
        lambda *a: sx.siglip_loss(*a, img_ids=none, txt_ids=ids), ARGNUMS
    )(img, txt, t, b)
    assert value == 0 and all(np.all(g == 0) for g in grads)


def test_ring_with_ids_on_a_one_device_mesh():
    mesh = Mesh(np.array(jax.devices()[:1]), ("batch",))
    img, txt, img_ids, txt_ids = id_data(10, 15, 4, seed=2)

    def local(i, x, ii, xi, t):
        return sx.siglip_loss_ring(i, x, t, img_ids=ii, txt_ids=xi, axis_name="batch", chunk_size=4)

    ring = jax.jit(
        jax.shard_map(local, mesh=mesh, in_specs=(P("batch"),) * 4 + (P(),), out_specs=P())
    )
    value, grads = jax.jit(jax.value_and_grad(ring, (0, 1, 4)))(img, txt, img_ids, txt_ids, 0.3)
    want, want_grads = ref_siglip_ids(img, txt, 0.3, 0.0, img_ids, txt_ids)
    np.testing.assert_allclose(value, want, rtol=2e-6)
    for g, w in zip(grads, want_grads[:3], strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6 * np.max(np.abs(w)))


@pytest.mark.sharded
@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices")
@pytest.mark.parametrize("check_vma,chunk", [(True, 3), (False, None)])
def test_ring_with_ids_equals_the_gathered_loss(check_vma, chunk):
    # 8 devices, 24 images and 40 texts (3 and 5 per device), ids with duplicates and padding:
    # each text shard travels the ring with its ids.
    img, txt, img_ids, txt_ids = id_data(24, 40, 4, seed=7)
    ring = jax.jit(
        jax.shard_map(
            lambda i, x, ii, xi, t, b: sx.siglip_loss_ring(
                i, x, t, b, img_ids=ii, txt_ids=xi, axis_name="batch", chunk_size=chunk
            ),
            mesh=Mesh(np.array(jax.devices()[:8]), ("batch",)),
            in_specs=(P("batch"),) * 4 + (P(), P()),
            out_specs=P(),
            check_vma=check_vma,
        )
    )
    t, b = jnp.asarray(0.5), jnp.asarray(-1.0)
    value, grads = jax.jit(jax.value_and_grad(ring, (0, 1, 4, 5)))(img, txt, img_ids, txt_ids, t, b)
    want, want_grads = ref_siglip_ids(img, txt, t, b, img_ids, txt_ids)
    np.testing.assert_allclose(value, want, rtol=2e-6)
    for g, w in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6 * np.max(np.abs(w)))
    np.testing.assert_allclose(
        value, sx.siglip_loss(img, txt, t, b, img_ids=img_ids, txt_ids=txt_ids), rtol=2e-6
    )
