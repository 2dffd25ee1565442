"""Fused linear + sigmoid cross-entropy: value and gradients against the naive formula."""

from __future__ import annotations

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


VALUE_AND_GRAD = jax.jit(
    jax.value_and_grad(sx.linear_sigmoid_cross_entropy, ARGNUMS), static_argnames="chunk_size"
)
# Integer and bool labels have no gradient.
VALUE_AND_GRAD_H_W_BIAS = jax.jit(
    jax.value_and_grad(sx.linear_sigmoid_cross_entropy, (0, 1, 3)), static_argnames="chunk_size"
)


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
    for scale in (1e4, 1e30):
        value, grads = VALUE_AND_GRAD(h * scale, w, labels, bias, chunk_size=5)
        assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads)
        logits = np.asarray(h, np.float64) * scale @ np.asarray(w, np.float64).T
        np.testing.assert_allclose(
            value, np.mean(ref_loss(labels, logits + np.asarray(bias))), rtol=1e-5
        )


def test_low_precision_inputs():
    h, w, labels, bias = make((8,), 16, 4, jnp.bfloat16)
    value, grads = jax.jit(jax.value_and_grad(sx.linear_sigmoid_cross_entropy, (0, 1)))(
        h, w, labels, bias
    )
    assert value.dtype == jnp.bfloat16 and grads[0].dtype == grads[1].dtype == jnp.bfloat16
    np.testing.assert_allclose(float(value), ref_linear(h, w, labels, bias)[0], rtol=1e-2)


def test_vmap_of_value_and_grad_of_checkpoint():
    h, w, labels, bias = make((3, 6), 21, 4)
    f = jax.checkpoint(lambda h, z: sx.linear_sigmoid_cross_entropy(h, w, z, bias, chunk_size=8))
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
    f = lambda *a: sx.linear_sigmoid_cross_entropy(*a, chunk_size=(8, 16))  # noqa: E731
    for g in (f, jax.value_and_grad(f, (0, 1, 3))):
        shapes = _all_shapes(jax.make_jaxpr(g)(h, w, labels, bias))
        assert (8, 16) in shapes
        assert not any(s[-2:] == (24, 40) for s in shapes if s != (24, 40)), shapes
        # The only [24, 40] value is the labels argument itself.
        jp = jax.make_jaxpr(g)(h, w, labels, bias).jaxpr
        produced = {tuple(v.aval.shape) for e in jp.eqns for v in e.outvars}
        assert (24, 40) not in produced


def test_compiled_temp_memory_much_smaller_than_naive():
    n, c, hidden = 256, 2048, 32
    shapes = [
        jax.ShapeDtypeStruct(s, jnp.float32) for s in ((n, hidden), (c, hidden), (n, c), (c,))
    ]

    def temp(f):
        return jax.jit(f).lower(*shapes).compile().memory_analysis().temp_size_in_bytes

    chunked = lambda *a: sx.linear_sigmoid_cross_entropy(*a, chunk_size=64)  # noqa: E731
    naive_bytes = temp(jax.value_and_grad(naive_linear, (0, 1, 3)))
    chunked_bytes = temp(jax.value_and_grad(chunked, (0, 1, 3)))
    assert naive_bytes >= n * c * 4
    assert chunked_bytes <= naive_bytes / 8, (chunked_bytes, naive_bytes)
    # The forward pass alone: [n, 64] tiles, never [n, c]. (XLA:CPU may fuse the naive dot
    # and reduction into one YNNPACK call whose scratch it does not report, so compare to n * c.)
    assert temp(chunked) <= n * c * 4 / 8


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
            (np.ones((4, 3)), np.ones((5, 3)), np.ones((4, 5)), np.ones(4)),
            {},
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
        ((np.ones((4, 3)), np.ones((5, 3)), None), {}, ValueError, "`labels`"),
    ],
)
def test_errors_name_the_argument(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        sx.linear_sigmoid_cross_entropy(*args, **kwargs)


def test_value_and_grad_forms_each_tile_once():
    # The forward does one product per tile; value_and_grad three (logits, d_h, d_w), all in
    # the forward rule's scan: the backward pass only scales the gradients.
    h, w, labels, bias = make((24,), 40, 4)
    f = lambda *a: sx.linear_sigmoid_cross_entropy(*a, chunk_size=(8, 16))  # noqa: E731
    assert count_dots(jax.make_jaxpr(f)(h, w, labels, bias)) == 1
    assert count_dots(jax.make_jaxpr(jax.value_and_grad(f, (0, 1, 3)))(h, w, labels, bias)) == 3
    # Only the gradients asked for: d_w alone needs the logits and one more product.
    assert count_dots(jax.make_jaxpr(jax.grad(f, 1))(h, w, labels, bias)) == 2


def naive_definition(h, w, labels, bias):
    """SPEC §5's definition, unchunked, through the core (plain autodiff for second order)."""
    return jnp.mean(sx.sigmoid_cross_entropy_with_logits(labels, h @ w.T + bias[None, :]))


@pytest.mark.parametrize("chunk", [(4, 3)])  # ragged tiles both ways
def test_second_derivatives_match_naive_autodiff(chunk):
    with x64():
        h, w, labels, bias = make((5,), 7, 3, jnp.float64, seed=11)
        args = (h, w, labels, bias)
        f = lambda *a: sx.linear_sigmoid_cross_entropy(*a, chunk_size=chunk)  # noqa: E731
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


def test_strict_modes_no_nan_and_no_rank_promotion():
    h, w, labels, bias = make((13,), 37, 8, seed=1)
    with jax.debug_nans(True), jax.numpy_rank_promotion("raise"):
        for scale in (1.0, 1e30):
            value, grads = jax.value_and_grad(sx.linear_sigmoid_cross_entropy, ARGNUMS)(
                h * scale, w, labels, bias, chunk_size=(4, 5)
            )
            assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads)
        hess = jax.hessian(sx.linear_sigmoid_cross_entropy, 3)(h, w, labels, bias, 5)
        assert np.all(np.isfinite(hess))


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
        return sx.linear_sigmoid_cross_entropy(h, w, z, bias, chunk_size=chunk, axis_name=axis_name)

    f = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P(), check_vma=check_vma)
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
    np.testing.assert_allclose(
        jax.jit(f)(*args), sx.linear_sigmoid_cross_entropy(h, w, hard, bias), rtol=2e-6
    )


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
        local = lambda *a, chunk=chunk: sx.linear_sigmoid_cross_entropy(*a, chunk_size=chunk)  # noqa: E731
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
        f = jax.shard_map(
            lambda *a: sx.linear_sigmoid_cross_entropy(*a, axis_name=axis_name),
            mesh=mesh,
            in_specs=specs,
            out_specs=P(),
            check_vma=check_vma,
        )
        return jax.jit(f)(*put((h, w, labels, bias), mesh, specs))

    with pytest.raises(ValueError, match=r"`axis_name`.*'classes'.*binds \('model',\)"):
        call((P(), P("model"), P(None, "model"), P("model")), axis_name="classes")
    with pytest.raises(NameError, match="outside jax.shard_map"):  # also a NameError.
        sx.linear_sigmoid_cross_entropy(h, w, labels, bias, axis_name="model")
    # Labels not sharded like w: 5 classes of w against 40 of labels, on every device.
    with pytest.raises(ValueError, match=r"`labels`.*\(16, 5\).*\(16, 40\).*shard_map"):
        call((P(), P("model"), P(), P("model")))
    with pytest.raises(ValueError, match=r"`bias`.*\(5,\).*\(40,\).*shard_map"):
        call((P(), P("model"), P(None, "model"), P()))
    # Rows of h split, rows of labels not: 2 rows of h against 16 of labels.
    with pytest.raises(ValueError, match=r"`labels`.*\(2, 5\).*\(16, 5\).*batch rows"):
        call((P("model"), P("model"), P(None, "model"), P("model")))
