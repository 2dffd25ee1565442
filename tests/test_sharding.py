"""Losses on 8 devices: sharded jit, shard_map reductions, the SigLIP ring, the fused loss.

Needs ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` set before JAX starts (``make
test`` sets it for the whole run); skipped when fewer than 8 devices exist.
"""

from __future__ import annotations

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from test_contrastive import ref_siglip
from test_fused import ref_linear

import sigmoid_xent as sx
from sigmoid_xent.sharding import reduce_ranking_loss_sharded

pytestmark = [
    pytest.mark.sharded,
    pytest.mark.skipif(
        jax.device_count() < 8,
        reason="needs 8 devices: set XLA_FLAGS=--xla_force_host_platform_device_count=8",
    ),
]

REDUCTIONS = [
    "sum",
    "mean",
    "sum_over_batch_size",
    "sum_by_nonzero_weights",
    "mean_with_sample_weight",
]


def mesh_1d():
    return Mesh(np.array(jax.devices()[:8]), ("batch",))


def mesh_2d():
    return Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("batch", "classes"))


def data(seed=0, shape=(16, 8)):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal(shape) * 4).astype(np.float32)
    labels = rng.uniform(size=shape).astype(np.float32)
    weights = rng.integers(0, 3, size=(shape[0], 1)).astype(np.float32)  # some zero.
    return labels, logits, weights


def put(x, mesh, spec):
    return jax.device_put(x, NamedSharding(mesh, spec))


def assert_sharding(out, mesh, spec):
    assert out.sharding.is_equivalent_to(NamedSharding(mesh, spec), out.ndim), (out.sharding, spec)


# --------------------------------------------------------------------------------------------
# Sharded jit: XLA inserts the collectives; results equal one device, shardings follow inputs.


def all_losses(z, x, w):
    p = jax.nn.sigmoid(x)
    out = {
        "sce": sx.sigmoid_cross_entropy_with_logits(z, x),
        "weighted": sx.weighted_sigmoid_cross_entropy_with_logits(z, x, 1.5),
        "focal": sx.sigmoid_focal_loss(z, x),
        "bce": sx.binary_cross_entropy(z, p),
        "keras_fn": sx.binary_crossentropy(z, x, from_logits=True, label_smoothing=0.1),
        "keras_obj": sx.BinaryCrossentropy(from_logits=True)(z, x, sample_weight=w[:, 0]),
        "reduce_none": sx.reduce_loss(x, w, "none"),
    }
    for r in REDUCTIONS:
        out[f"reduce_{r}"] = sx.reduce_loss(sx.sigmoid_cross_entropy_with_logits(z, x), w, r)
        out[f"tf_{r}"] = sx.sigmoid_cross_entropy(z, x, w, label_smoothing=0.1, reduction=r)
    return out


@pytest.mark.parametrize("layout", ["batch", "batch_x_classes"])
def test_sharded_jit_equals_single_device(layout):
    labels, logits, weights = data()
    mesh, spec = (
        (mesh_1d(), P("batch", None)) if layout == "batch" else (mesh_2d(), P("batch", "classes"))
    )
    w_spec = P("batch", None)
    f = jax.jit(all_losses)
    got = f(put(labels, mesh, spec), put(logits, mesh, spec), put(weights, mesh, w_spec))
    want = jax.jit(all_losses)(
        *(jax.device_put(a, jax.devices()[0]) for a in (labels, logits, weights))
    )
    for name, value in got.items():
        np.testing.assert_allclose(value, want[name], rtol=2e-6, atol=1e-7, err_msg=name)
        if value.ndim == 2:  # elementwise: the inputs' sharding.
            assert_sharding(value, mesh, spec)
        elif value.ndim == 1:  # Keras' mean over the last axis: sharded over the batch.
            assert_sharding(value, mesh, P("batch"))
        else:
            assert value.sharding.is_fully_replicated, name


def test_sharded_jit_gradients_follow_the_input_sharding():
    labels, logits, weights = data(1)
    mesh, spec = mesh_2d(), P("batch", "classes")

    def loss(z, x):
        return sx.sigmoid_cross_entropy(
            z, x, weights, reduction="sum_by_nonzero_weights"
        ) + jnp.mean(sx.sigmoid_focal_loss(z, x))

    grad = jax.jit(jax.grad(loss, (0, 1)))
    got = grad(put(labels, mesh, spec), put(logits, mesh, spec))
    want = grad(labels, logits)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-8)
        assert_sharding(g, mesh, spec)


def test_sharded_jit_ranking_dense():
    ranking = pytest.importorskip("sigmoid_xent.ranking")
    labels, logits, _ = data(2, (16, 5))
    labels = np.where(labels < 0.3, -1.0, np.round(labels)).astype(np.float32)  # padding.
    mesh = mesh_1d()

    def f(z, x):
        return {
            r: ranking.sigmoid_cross_entropy(z, x, reduction=r)
            for r in ("auto", "mean", "sum_by_nonzero_weights", "list_mean", "none")
        }

    got = jax.jit(f)(put(labels, mesh, P("batch")), put(logits, mesh, P("batch")))
    want = jax.jit(f)(labels, logits)
    for r, value in got.items():
        np.testing.assert_allclose(value, want[r], rtol=2e-6, atol=1e-7, err_msg=r)
        if value.ndim == 2:
            assert_sharding(value, mesh, P("batch"))
        else:
            assert value.sharding.is_fully_replicated


def test_sharded_jit_scale_losses():
    rng = np.random.default_rng(3)
    img, txt = (jnp.asarray(rng.standard_normal((32, 8)), jnp.float32) for _ in range(2))
    h = jnp.asarray(rng.standard_normal((16, 8)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((24, 8)), jnp.float32)
    z = jnp.asarray(rng.uniform(size=(16, 24)), jnp.float32)
    mesh = mesh_2d()

    def f(img, txt, h, w, z):
        return jax.value_and_grad(
            lambda i, x, h, w: (
                sx.siglip_loss(i, x, 0.5, -1.0, chunk_size=5)
                + sx.linear_sigmoid_cross_entropy(h, w, z, chunk_size=(4, 7))
            ),
            (0, 1, 2, 3),
        )(img, txt, h, w)

    args = (
        put(img, mesh, P("batch")),
        put(txt, mesh, P("batch")),
        put(h, mesh, P("batch")),
        put(w, mesh, P("classes")),
        put(z, mesh, P("batch", "classes")),
    )
    value, grads = jax.jit(f)(*args)
    ref_s = ref_siglip(img, txt, 0.5, -1.0)
    ref_l = ref_linear(h, w, z, np.zeros(24))
    np.testing.assert_allclose(value, ref_s[0] + ref_l[0], rtol=1e-5)
    for g, want in zip(grads, ref_s[1][:2] + ref_l[1][:2], strict=True):
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-7)
    assert value.sharding.is_fully_replicated


# --------------------------------------------------------------------------------------------
# shard_map with explicit psum reductions.


@pytest.mark.parametrize("check_vma", [True, False])
@pytest.mark.parametrize("layout", ["batch", "batch_x_classes"])
@pytest.mark.parametrize("weights_kind", ["none", "per_sample", "per_element", "scalar"])
def test_reduce_loss_sharded_equals_reduce_loss(check_vma, layout, weights_kind):
    labels, logits, weights = data(4)
    losses = np.asarray(sx.sigmoid_cross_entropy_with_logits(labels, logits))
    if layout == "batch":
        mesh, spec, axis = mesh_1d(), P("batch", None), "batch"
    else:
        mesh, spec, axis = mesh_2d(), P("batch", "classes"), ("batch", "classes")
    weights = {
        "none": None,
        "per_sample": weights,
        "scalar": np.float32(2.0),
        "per_element": np.abs(logits) * (labels > 0.2),
    }[weights_kind]
    w_spec = {"none": None, "per_sample": P("batch", None), "scalar": P(), "per_element": spec}[
        weights_kind
    ]
    # Only mean_with_sample_weight cares which axes the given weights are sharded over, and only
    # check_vma=True can see it.
    w_axis = None if check_vma or weights_kind != "per_sample" else "batch"

    def local(losses, w=None):
        out = {
            r: sx.reduce_loss_sharded(losses, w, r, axis_name=axis, weights_axis_name=w_axis)
            for r in REDUCTIONS
        }
        return out, sx.reduce_loss_sharded(losses, w, "none", axis_name=axis)

    in_specs = (spec,) if weights is None else (spec, w_spec)
    args = (losses,) if weights is None else (losses, weights)
    f = jax.jit(
        jax.shard_map(
            local,
            mesh=mesh,
            in_specs=in_specs,
            out_specs=({r: P() for r in REDUCTIONS}, spec),
            check_vma=check_vma,
        )
    )
    got, none = f(*args)
    for r in REDUCTIONS:
        np.testing.assert_allclose(got[r], sx.reduce_loss(losses, weights, r), rtol=2e-6, err_msg=r)
    np.testing.assert_allclose(none, sx.reduce_loss(losses, weights, "none"), rtol=1e-6)


@pytest.mark.parametrize("check_vma", [True, False])
def test_reduce_loss_sharded_gradients(check_vma):
    labels, logits, weights = data(5)
    mesh = mesh_2d()

    def local(z, x, w):
        losses = sx.sigmoid_cross_entropy_with_logits(z, x)
        return sx.reduce_loss_sharded(
            losses, w, "sum_by_nonzero_weights", axis_name=("batch", "classes")
        )

    f = jax.jit(
        jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(P("batch", "classes"),) * 2 + (P("batch"),),
            out_specs=P(),
            check_vma=check_vma,
        )
    )
    got = jax.jit(jax.grad(f, (0, 1)))(labels, logits, weights)
    want = jax.grad(lambda z, x: sx.sigmoid_cross_entropy(z, x, weights), (0, 1))(labels, logits)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-8)


def test_reduce_loss_sharded_refuses_losses_replicated_over_a_summed_axis():
    mesh = mesh_2d()
    f = jax.jit(
        jax.shard_map(
            lambda losses: sx.reduce_loss_sharded(
                losses, None, "mean", axis_name=("batch", "classes")
            ),
            mesh=mesh,
            in_specs=P("batch", None),
            out_specs=P(),
        )
    )
    with pytest.raises(ValueError, match="replicated over shard_map axes \\['classes'\\]"):
        f(np.ones((16, 8), np.float32))


# --------------------------------------------------------------------------------------------
# Ranking lists that each live on one shard.

RANKING_REDUCTIONS = ["auto", "sum", "mean", "sum_by_nonzero_weights", "list_mean"]


def ref_ranking(losses, labels, seg, num_segments, w_item, reduction, list_size=None):
    """numpy float64 TF-Ranking reductions; `seg` global list ids (dense: row index)."""
    losses, w_item = np.asarray(losses, np.float64), np.asarray(w_item, np.float64)
    valid = ~(np.asarray(labels) < 0)
    w = np.where(valid, w_item, 0.0)
    wl = np.where(valid, losses, 0.0) * w
    if reduction == "sum":
        return wl.sum()
    if reduction == "mean":
        return wl.sum() / w.sum()
    if reduction == "sum_by_nonzero_weights":
        return wl.sum() / np.sum(valid & (w != 0))
    if reduction == "auto":
        longest = list_size or np.bincount(seg, minlength=num_segments).max()
        return wl.sum() / (num_segments * longest)
    list_loss = np.bincount(seg.ravel(), wl.ravel(), minlength=num_segments)
    list_w = np.bincount(seg.ravel(), w.ravel(), minlength=num_segments)
    keep = list_w != 0
    return np.mean(list_loss[keep] / list_w[keep])


def ranking_data(seed, n_items):
    rng = np.random.default_rng(seed)
    labels = rng.integers(-1, 3, size=n_items).astype(np.float32)  # -1 = padding; graded.
    logits = (rng.standard_normal(n_items) * 3).astype(np.float32)
    return labels, logits


@pytest.mark.parametrize("check_vma", [True, False])
def test_ranking_dense_lists_on_their_shards(check_vma):
    labels, logits = ranking_data(6, 16 * 5)
    labels, logits = labels.reshape(16, 5), logits.reshape(16, 5)
    weights = np.arange(1, 17, dtype=np.float32) % 3  # per list, some lists weight 0.
    losses = sx.sigmoid_cross_entropy_with_logits(np.maximum(labels, 0), logits)

    def local(losses, z, w):
        return {
            r: reduce_ranking_loss_sharded(losses, z, axis_name="batch", weights=w, reduction=r)
            for r in RANKING_REDUCTIONS
        }

    f = jax.jit(
        jax.shard_map(
            local,
            mesh=mesh_1d(),
            in_specs=P("batch"),
            out_specs={r: P() for r in RANKING_REDUCTIONS},
            check_vma=check_vma,
        )
    )
    got = f(losses, labels, weights)
    seg = np.repeat(np.arange(16), 5).reshape(16, 5)
    w_item = np.repeat(weights, 5).reshape(16, 5)
    for r in RANKING_REDUCTIONS:
        want = ref_ranking(losses, labels, seg, 16, w_item, r, list_size=5)
        np.testing.assert_allclose(got[r], want, rtol=2e-6, err_msg=r)
    ranking = getattr(sx, "ranking", None)
    if ranking is not None:  # the single-device ranking loss on the gathered lists agrees.
        want = jax.jit(
            lambda z, x, w: {
                r: ranking.sigmoid_cross_entropy(z, x, weights=w, reduction=r)
                for r in RANKING_REDUCTIONS
            }
        )(labels, logits, weights)
        for r in RANKING_REDUCTIONS:
            np.testing.assert_allclose(got[r], want[r], rtol=2e-6, err_msg=r)


@pytest.mark.parametrize("check_vma", [True, False])
def test_ranking_packed_segments_on_their_shards(check_vma):
    # Each device holds 6 items of its own 3 lists (local ids 0..2): list 2 of device 0 is empty,
    # device 5 has a list of 4 items (the longest overall), padding labels count in lengths.
    num_local, per_device, devices = 3, 6, 8
    rng = np.random.default_rng(7)
    local_ids = np.stack([np.sort(rng.integers(0, num_local, per_device)) for _ in range(devices)])
    local_ids[0] = [0, 0, 0, 1, 1, 1]
    local_ids[5] = [0, 1, 1, 1, 1, 2]
    labels, logits = ranking_data(8, devices * per_device)
    weights = rng.uniform(size=devices * num_local).astype(np.float32)  # per list.
    seg_local = local_ids.ravel().astype(np.int32)
    seg_global = (local_ids + num_local * np.arange(devices)[:, None]).ravel()
    losses = sx.sigmoid_cross_entropy_with_logits(np.maximum(labels, 0), logits)

    def local(losses, z, s, w):
        return {
            r: reduce_ranking_loss_sharded(
                losses,
                z,
                axis_name="batch",
                segment_ids=s,
                num_segments=num_local,
                weights=w,
                reduction=r,
            )
            for r in RANKING_REDUCTIONS
        }

    f = jax.jit(
        jax.shard_map(
            local,
            mesh=mesh_1d(),
            in_specs=P("batch"),
            out_specs={r: P() for r in RANKING_REDUCTIONS},
            check_vma=check_vma,
        )
    )
    got = f(losses, labels, seg_local, weights)
    num_global = devices * num_local
    for r in RANKING_REDUCTIONS:
        want = ref_ranking(losses, labels, seg_global, num_global, weights[seg_global], r)
        np.testing.assert_allclose(got[r], want, rtol=2e-6, err_msg=r)
    ranking = getattr(sx, "ranking", None)
    if ranking is not None:
        want = jax.jit(
            lambda z, x, s, w: {
                r: ranking.sigmoid_cross_entropy(
                    z, x, segment_ids=s, num_segments=num_global, weights=w, reduction=r
                )
                for r in RANKING_REDUCTIONS
            }
        )(labels, logits, seg_global, weights)
        for r in RANKING_REDUCTIONS:
            np.testing.assert_allclose(got[r], want[r], rtol=2e-6, err_msg=r)
    # One id out of range on one device: NaN on every device, for every reduction.
    bad = seg_local.copy()
    bad[7] = num_local
    for r, v in f(losses, labels, bad, weights).items():
        assert np.all(np.isnan(np.asarray(v))), r


# --------------------------------------------------------------------------------------------
# The SigLIP ring and the fused loss under shard_map.


def _count_primitives(jaxpr, names):
    counts = dict.fromkeys(names, 0)

    def visit(jp):
        jp = getattr(jp, "jaxpr", jp)
        for eqn in jp.eqns:
            if eqn.primitive.name in counts:
                counts[eqn.primitive.name] += 1
            for param in eqn.params.values():
                for p in param if isinstance(param, (tuple, list)) else (param,):
                    if isinstance(p, (jax.extend.core.Jaxpr, jax.extend.core.ClosedJaxpr)):
                        visit(p)

    visit(jaxpr)
    return counts


@pytest.mark.parametrize("check_vma,chunk,scalar_shape", [(True, 2, (1,)), (False, None, ())])
def test_siglip_ring_equals_siglip_loss(check_vma, chunk, scalar_shape):
    rng = np.random.default_rng(9)
    img, txt = (jnp.asarray(rng.standard_normal((40, 6)), jnp.float32) for _ in range(2))
    t, b = jnp.full(scalar_shape, 0.8), jnp.full(scalar_shape, -3.0)
    ring = jax.jit(
        jax.shard_map(
            lambda i, x, t, b: sx.siglip_loss_ring(i, x, t, b, axis_name="batch", chunk_size=chunk),
            mesh=mesh_1d(),
            in_specs=(P("batch"), P("batch"), P(), P()),
            out_specs=P(),
            check_vma=check_vma,
        )
    )
    vg = jax.value_and_grad(ring, (0, 1, 2, 3))
    value, grads = jax.jit(vg)(img, txt, t, b)
    want_value, want_grads = ref_siglip(img, txt, t, b)
    np.testing.assert_allclose(value, want_value, rtol=2e-6)
    for g, want, x in zip(grads, want_grads, (img, txt, t, b), strict=True):
        assert g.shape == x.shape
        np.testing.assert_allclose(np.reshape(g, np.shape(want)), want, rtol=1e-5, atol=1e-7)
    # Texts travel by ppermute only, in the forward and again in the backward pass.
    counts = _count_primitives(jax.make_jaxpr(vg)(img, txt, t, b), ["ppermute", "all_gather"])
    assert counts["all_gather"] == 0 and counts["ppermute"] >= 4, counts


@pytest.mark.parametrize("check_vma", [True, False])
def test_fused_loss_under_shard_map(check_vma):
    rng = np.random.default_rng(10)
    h = jnp.asarray(rng.standard_normal((16, 8)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((12, 8)) / 3, jnp.float32)
    bias = jnp.asarray(rng.standard_normal(12), jnp.float32)
    z = jnp.asarray(rng.uniform(size=(16, 12)), jnp.float32)

    def local(h, w, z, bias):  # equal shards: the global mean is the mean of the shard means.
        loss = sx.linear_sigmoid_cross_entropy(h, w, z, bias=bias, chunk_size=5)
        return jax.lax.pmean(loss, "batch")

    f = jax.jit(
        jax.shard_map(
            local,
            mesh=mesh_1d(),
            in_specs=(P("batch"), P(), P("batch"), P()),
            out_specs=P(),
            check_vma=check_vma,
        )
    )
    value, grads = jax.jit(jax.value_and_grad(f, (0, 1, 2, 3)))(h, w, z, bias)
    want_value, want_grads = ref_linear(h, w, z, bias)
    np.testing.assert_allclose(value, want_value, rtol=2e-6)
    for g, want in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-8)


def test_sharded_ranking_is_the_same_formula_as_ranking():
    # One engine: on a one-device mesh the sharded reduction is the local one to the ulp (XLA
    # may order a fused sum differently in the two programs), and the seed's rounding
    # (0.6444636, lists summed first) is exact.
    mesh = Mesh(np.array(jax.devices()[:1]), ("batch",))
    labels = jnp.array([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    logits = jnp.array([[0.6, 0.8, 0.0], [0.5, 0.8, 0.4]])
    weights = jnp.array([[2.0], [0.5]])
    losses = sx.sigmoid_cross_entropy_with_logits(jnp.maximum(labels, 0.0), logits)
    for reduction in ("auto", "sum", "mean", "sum_by_nonzero_weights", "list_mean", "per_list"):
        for w in (None, weights):

            def local(losses, labels, w=w, reduction=reduction):
                return reduce_ranking_loss_sharded(
                    losses, labels, axis_name="batch", weights=w, reduction=reduction
                )

            spec = P() if reduction != "per_list" else P("batch")
            got = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=P("batch"), out_specs=spec))(
                losses, labels
            )
            want = sx.ranking.sigmoid_cross_entropy(labels, logits, weights=w, reduction=reduction)
            np.testing.assert_allclose(got, want, rtol=2.5e-7, err_msg=f"{reduction}, {w}")
    auto = jax.jit(
        jax.shard_map(
            lambda a, b: reduce_ranking_loss_sharded(a, b, axis_name="batch"),
            mesh=mesh,
            in_specs=P("batch"),
            out_specs=P(),
        )
    )(losses, labels)
    assert float(auto) == np.float32(0.6444636)
