"""SigLIP's pairwise sigmoid loss, chunked so the ``[B, B]`` logits never exist.

Each image/text pair is a binary problem: the logit ``exp(t) <img_i, txt_j> + b`` with label 1 on
the diagonal (matching pairs) and 0 elsewhere, i.e. SigLIP's ``+1 / -1`` labels. The elementwise
loss and its gradient are the core's (``loss_value``, ``logits_grad``), applied to one block of
image rows at a time: ``-log_sigmoid(y * l)`` is the core loss with label ``(1 + y) / 2`` at logit
``l``. The loss is a scalar, so a custom VJP's forward rule adds each chunk's share of the
gradients as it goes (three matrix products per chunk, not four) and the backward pass only scales
them; neither the forward pass nor ``value_and_grad`` ever holds more than ``chunk_size x B``
logits.

:func:`siglip_loss_ring` is the multi-device form of the SigLIP paper: inside ``jax.shard_map``
each device keeps its images and passes its texts around the device ring with ``lax.ppermute``;
when differentiated, each text shard's gradient travels alongside it and takes one more hop home.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from sigmoid_xent import _checks
from sigmoid_xent._chunks import check_chunk_size, scan_chunks
from sigmoid_xent._core import logits_grad, loss_value
from sigmoid_xent._mesh_axes import (
    AxisName,
    bound_axes_size,
    pcast_varying,
    psum_over,
    union_varying_axes,
)
from sigmoid_xent.reductions import safe_divide

Array = jax.Array

__all__ = ["siglip_loss", "siglip_loss_ring"]

# Elements of one logits block [chunk, B] when chunk_size is None (16 MiB in float32): large
# enough for efficient matmuls on CPU, small enough to stay far below the [B, B] matrix.
_BLOCK_ELEMENTS = 1 << 22
_MIN_CHUNK = 256


def _default_chunk(rows: int, cols: int) -> int:
    return max(_MIN_CHUNK, _BLOCK_ELEMENTS // max(cols, 1))


# --------------------------------------------------------------------------------------------
# One block: images [n, D] against texts [m, D], with positives on the diagonal when `diag`.


def _block_labels(start: Any, size: int, cols: int, diag: bool, dtype: Any) -> Array:
    if not diag:
        return jnp.zeros((size, cols), dtype)
    rows = lax.broadcasted_iota(jnp.int32, (size, cols), 0) + start
    return (rows == lax.broadcasted_iota(jnp.int32, (size, cols), 1)).astype(dtype)


def _id_labels(row_ids: Array, col_ids: Array, dtype: Any) -> tuple[Array, Array]:
    """Labels 1 where the ids match, and which pairs are present (both ids >= 0)."""
    z = (row_ids[:, None] == col_ids[None, :]).astype(dtype)
    return z, (row_ids >= 0)[:, None] & (col_ids >= 0)[None, :]


def _block_logits(rows: Array, txt: Array, bias: Array) -> Array:
    # `rows` already carry the temperature: one multiply per embedding, not per logit.
    return lax.dot_general(rows, txt, (((1,), (1,)), ((), ()))) + bias


def _block_sweep(
    acc: dict[str, Array],
    img: Array,
    txt: Array,
    scale: Array,
    bias: Array,
    diag: bool,
    chunk: int,
    axes: frozenset,
    inv: Array,
    ids: tuple[Array, Array] | None = None,
) -> dict[str, Array]:
    """Adds the block's loss to ``acc["total"]``, ``chunk`` image rows at a time, and, when
    ``acc`` holds them, its gradients of ``inv * loss`` to ``acc["img"]``, ``acc["txt"]`` and
    ``acc["b"]``: each chunk's logits serve its loss and its three products at once. With
    ``ids`` (of the images and of these texts) the labels are 1 where they match and the pairs
    of a padding row (id < 0) are left out; without, the labels are ``diag``'s."""
    cols = txt.shape[0]

    def body(acc: dict[str, Array], start: Any, size: int, fresh: Array | None):
        rows = lax.dynamic_slice_in_dim(img, start, size) * scale
        logits = _block_logits(rows, txt, bias)
        kept = None if fresh is None else fresh[:, None]  # rows counted by the previous chunk
        if ids is None:
            z = _block_labels(start, size, cols, diag, logits.dtype)
        else:
            z, present = _id_labels(
                lax.dynamic_slice_in_dim(ids[0], start, size), ids[1], logits.dtype
            )
            kept = present if kept is None else present & kept
        loss = loss_value(logits, z)
        if kept is not None:
            loss = jnp.where(kept, loss, 0)
        out = dict(acc, total=acc["total"] + jnp.sum(loss))
        if "txt" in acc:
            dlogits = inv * logits_grad(logits, z)
            if kept is not None:
                dlogits = jnp.where(kept, dlogits, 0)
            d_rows = (dlogits @ txt) * scale
            old = lax.dynamic_slice_in_dim(acc["img"], start, size)
            out["img"] = lax.dynamic_update_slice_in_dim(acc["img"], old + d_rows, start, 0)
            out["txt"] = acc["txt"] + lax.dot_general(dlogits, rows, (((0,), (0,)), ((), ())))
            out["b"] = acc["b"] + jnp.sum(dlogits)
        return out

    return scan_chunks(body, acc, img.shape[0], chunk, axes)


def _start(img: Array, txt: Array, grads: bool) -> dict[str, Array]:
    acc = {"total": jnp.zeros((), img.dtype)}
    if grads:
        acc.update(img=jnp.zeros_like(img), txt=jnp.zeros_like(txt), b=jnp.zeros((), img.dtype))
    return acc


def _inverse(count: Any, dtype: Any) -> Array:
    """``1 / count`` (0 for no present image), for a static or a traced count."""
    if isinstance(count, int):
        return jnp.asarray(1 / count, dtype)
    return safe_divide(jnp.ones((), dtype), count)


def _finish(acc: dict[str, Array], img: Array, count: Any) -> tuple[Array, tuple | None]:
    if isinstance(count, int):
        value = acc["total"] / jnp.asarray(count, img.dtype)
    else:  # the number of present images, traced
        value = safe_divide(acc["total"], count)
    if "txt" not in acc:
        return value, None
    # d/dt of exp(t) <img_i, txt_j> is the logit's own term, so dt = sum_i <img_i, d_img_i>.
    return value, (acc["img"], acc["txt"], jnp.sum(img * acc["img"]), acc["b"])


def _scaled(grads: tuple, g: Any) -> tuple:
    g = jnp.asarray(g)  # a Python scalar under jax.checkpoint.
    return tuple(g.astype(d.dtype) * d for d in grads)


# --------------------------------------------------------------------------------------------
# Single-device (or per-shard) loss over the whole [B, B] block. The loss is a scalar, so the
# forward rule forms the gradients for a unit cotangent as it goes (three products per chunk
# instead of recomputing every chunk: four) and the backward pass only scales them. Both are
# plain jnp, so the forward rule can be differentiated again (jax.hessian).


def _siglip_sweep(img, txt, t, b, ids, chunk, count, grads):
    """``ids``: None (the diagonal, ``count`` images), or the image ids, the text ids and the
    traced number of present images."""
    axes = union_varying_axes(img, txt, t, b, ids)
    if ids is not None:
        *ids, count = ids
    inv = _inverse(count, img.dtype)
    acc = _start(img, txt, grads)
    acc = _block_sweep(acc, img, txt, jnp.exp(t), b, True, chunk, axes, inv, ids)
    return _finish(acc, img, count)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _siglip_part(img, txt, t, b, ids, chunk: int, count: int) -> Array:
    return _siglip_sweep(img, txt, t, b, ids, chunk, count, False)[0]


def _siglip_part_fwd(img, txt, t, b, ids, chunk, count):
    return _siglip_sweep(img, txt, t, b, ids, chunk, count, True)


def _siglip_part_bwd(chunk, count, grads, g):
    return (*_scaled(grads, g), None)


_siglip_part.defvjp(_siglip_part_fwd, _siglip_part_bwd)


# --------------------------------------------------------------------------------------------
# Ring: device k holds images k and, after s steps, the texts of device k - s.


def _ring_perm(n: int) -> list[tuple[int, int]]:
    return [(j, (j + 1) % n) for j in range(n)]


def _ring_sweep(img, txt, t, b, ids, axis_name, chunk, count, grads):
    """This device's images against every text shard: its part of the global mean, and with
    ``grads`` the gradients of that part. The gradient of a text shard travels with it around
    the ring and, after visiting every device, takes one more hop home; with ``ids`` (as
    :func:`_siglip_sweep`'s) each text shard carries its ids."""
    n = lax.axis_size(axis_name)
    perm = _ring_perm(n)
    axes = union_varying_axes(img, txt, t, b, ids)
    scale = jnp.exp(t)
    img_ids, shard = None, txt
    if ids is not None:
        img_ids, txt_ids, count = ids
        shard = (txt, txt_ids)  # a text shard travels with its ids
    inv = _inverse(count, img.dtype)

    def block(acc: dict[str, Array], cur: Any, diag: bool) -> dict[str, Array]:
        if img_ids is None:
            return _block_sweep(acc, img, cur, scale, b, diag, chunk, axes, inv)
        emb, cur_ids = cur
        return _block_sweep(acc, img, emb, scale, b, diag, chunk, axes, inv, (img_ids, cur_ids))

    acc = block(_start(img, txt, grads), shard, True)
    if n > 1 and not grads:
        # The shard for the next step is sent before the block is computed, so the transfer
        # can overlap the compute.
        def step(carry, _):
            cur, acc = carry
            nxt = lax.ppermute(cur, axis_name, perm)
            return pcast_varying((nxt, block(acc, cur, False)), axes), None

        carry = pcast_varying((lax.ppermute(shard, axis_name, perm), acc), axes)
        (cur, acc), _ = lax.scan(step, carry, None, length=n - 2)
        acc = block(acc, cur, False)
    elif n > 1:
        # acc["txt"] holds the gradient of the shard last scored here; before each block the
        # accumulator of the arriving shard arrives with it.
        def visit(cur: Array, d_prev: Array, acc: dict[str, Array]) -> dict[str, Array]:
            d_cur = lax.ppermute(d_prev, axis_name, perm)  # the accumulator that belongs to cur.
            return block(dict(acc, txt=d_cur), cur, False)

        def step(carry, _):
            cur, acc = carry
            nxt = lax.ppermute(cur, axis_name, perm)
            return pcast_varying((nxt, visit(cur, acc["txt"], acc)), axes), None

        carry = pcast_varying((lax.ppermute(shard, axis_name, perm), acc), axes)
        (cur, acc), _ = lax.scan(step, carry, None, length=n - 2)
        acc = visit(cur, acc["txt"], acc)
        acc["txt"] = lax.ppermute(acc["txt"], axis_name, perm)  # home.
    return _finish(acc, img, count)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _ring_part(img, txt, t, b, ids, axis_name: Any, chunk: int, count: int) -> Array:
    return _ring_sweep(img, txt, t, b, ids, axis_name, chunk, count, False)[0]


def _ring_part_fwd(img, txt, t, b, ids, axis_name, chunk, count):
    return _ring_sweep(img, txt, t, b, ids, axis_name, chunk, count, True)


def _ring_part_bwd(axis_name, chunk, count, grads, g):
    return (*_scaled(grads, g), None)


_ring_part.defvjp(_ring_part_fwd, _ring_part_bwd)


# --------------------------------------------------------------------------------------------
# Public API.


class _Prepared(NamedTuple):
    img: Array
    txt: Array
    t: Array
    b: Array
    ids: tuple[Array, Array] | None
    chunk: int
    out_dtype: Any


def _prepare(img_emb, txt_emb, t, b, img_ids, txt_ids, chunk_size, fn, names) -> _Prepared:
    img = _checks.float_array(img_emb, fn, name=names[0])
    txt = _checks.float_array(txt_emb, fn, name=names[1])
    if (img_ids is None) != (txt_ids is None):
        given, missing = ("img_ids", "txt_ids") if txt_ids is None else ("txt_ids", "img_ids")
        raise ValueError(
            f"{fn}: `{given}` given without `{missing}`: pass both (pair (i, j) is positive "
            "where the ids match) or neither (the diagonal)."
        )
    for name, x in zip(names, (img, txt), strict=True):
        if x.ndim != 2:
            raise ValueError(f"{fn}: `{name}` must be [batch, dim], got shape {x.shape}.")
    if img_ids is None and img.shape != txt.shape:
        raise ValueError(
            f"{fn}: `{names[0]}` and `{names[1]}` must have the same shape [batch, dim] (without "
            f"ids, row i of each is a pair), got {names[0]} {img.shape} and {names[1]} "
            f"{txt.shape}."
        )
    if img.shape[1] != txt.shape[1]:
        raise ValueError(
            f"{fn}: `{names[0]}` and `{names[1]}` must have the same dim, got {names[0]} "
            f"{img.shape} and {names[1]} {txt.shape}."
        )
    if img.shape[0] == 0 or txt.shape[0] == 0:
        raise ValueError(
            f"{fn}: the batch is empty (`{names[0]}` {img.shape}, `{names[1]}` {txt.shape})."
        )
    ids: Any = None
    if img_ids is not None:
        ids = tuple(
            _ids(x, name, rows, fn)
            for x, name, rows in (
                (img_ids, "img_ids", img.shape[0]),
                (txt_ids, "txt_ids", txt.shape[0]),
            )
        )
    out_dtype = jnp.promote_types(img.dtype, txt.dtype)
    cd = _checks.compute_dtype(out_dtype)
    scalars = []
    for name, value in (("t", t), ("b", 0.0 if b is None else b)):
        arr = _checks.as_float(value, cd, name, fn)
        if arr.shape not in ((), (1,)):
            raise ValueError(
                f"{fn}: `{name}` must be a scalar or of shape (1,), got shape {arr.shape}."
            )
        scalars.append(arr)
    chunk = check_chunk_size(chunk_size, "chunk_size", fn)
    if chunk is None:
        chunk = _default_chunk(img.shape[0], txt.shape[0])
    return _Prepared(img, txt, scalars[0], scalars[1], ids, chunk, out_dtype)


def _ids(x: Any, name: str, rows: int, fn: str) -> Array:
    ids = jnp.asarray(x)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"{fn}: `{name}` must be integer ids, got {_checks.describe(ids)}.")
    if ids.shape != (rows,):
        raise ValueError(
            f"{fn}: `{name}` must have shape ({rows},), one id per row, got shape {ids.shape}."
        )
    return ids


def _present(ids: tuple[Array, Array] | None, img: Array, txt: Array) -> tuple:
    """Padding rows (id < 0) hidden before anything reads them (a NaN there reaches nothing)."""
    if ids is None:
        return img, txt
    return tuple(
        jnp.where((i >= 0)[:, None], x, jnp.zeros_like(x))
        for i, x in zip(ids, (img, txt), strict=True)
    )


def siglip_loss(
    img_emb: ArrayLike,
    txt_emb: ArrayLike,
    t: ArrayLike,
    b: ArrayLike | None = None,
    *,
    img_ids: ArrayLike | None = None,
    txt_ids: ArrayLike | None = None,
    chunk_size: int | None = None,
) -> Array:
    r"""The pairwise sigmoid loss of SigLIP, computed in chunks of image rows.

    With logits :math:`l_{ij} = e^{t} \langle x_i, y_j \rangle + b` between image ``i`` and text
    ``j``, labels :math:`s_{ij} = +1` for a matching pair and :math:`-1` otherwise, and
    :math:`P` the pairs of present rows:

    .. math::

        L = -\frac{1}{\#\{i \text{ present}\}} \sum_{(i, j) \in P} \log \sigma(s_{ij} \, l_{ij})

    Without ids, row ``i`` of each batch is a pair (the diagonal). With ``img_ids`` and
    ``txt_ids``, pair ``(i, j)`` matches where the ids are equal (several captions of one
    image, duplicates), the batches may differ in size, and rows with an id < 0 are padding,
    absent from every pair (with no image present the loss is 0). Each term is the stable core
    loss with label :math:`(1 + s_{ij})/2`. The logits exist ``chunk_size`` image rows at a
    time, in the forward pass and in ``value_and_grad`` alike, which forms each chunk once
    (three matrix products). Computed in float32 at least; returns the embeddings' dtype.
    Custom VJP: gradients to both embeddings, ``t`` and ``b``; ``jax.hessian`` works,
    ``jax.jvp`` is refused by JAX. Inside ``shard_map`` it is the device's own loss
    (:func:`siglip_loss_ring` is the global one).

    Args:
      img_emb: Image embeddings ``[N, D]`` (SigLIP normalises them first).
      txt_emb: Text embeddings ``[M, D]``.
      t: Log-temperature, a scalar or ``(1,)``: the logits are scaled by ``exp(t)``.
      b: Logit bias, a scalar or ``(1,)``; None for none.
      img_ids: Integer ``[N]`` ids of the images (< 0: padding); needs ``txt_ids``.
      txt_ids: Integer ``[M]`` ids of the texts (< 0: padding); needs ``img_ids``.
      chunk_size: Image rows per chunk (None: about ``2**22 / M`` rows, at least 256).

    Returns:
      The scalar loss in the embeddings' dtype.

    Raises:
      TypeError: integer embeddings, non-integer ids, complex ``t``/``b``, a non-int chunk.
      ValueError: embeddings not 2-D, empty or of different dims (or, without ids, shapes);
        ids of the wrong shape or only one of them; ``t``/``b`` not scalar; ``chunk_size < 1``.

    Examples:
      >>> import jax.numpy as jnp
      >>> import sigmoid_xent as sx
      >>> img = jnp.array([[1., 0.], [0., 1.], [0.6, 0.8]])
      >>> txt = jnp.array([[0.8, 0.6], [0., 1.], [0.6, 0.8]])
      >>> sx.siglip_loss(img, txt, jnp.log(10.), -10., chunk_size=2)
      Array(1.4388129, dtype=float32)
      >>> caps = jnp.concatenate([txt, img])  # two captions per image, one padding image
      >>> sx.siglip_loss(img, caps, jnp.log(10.), -10., img_ids=jnp.array([0, 1, -1]),
      ...                txt_ids=jnp.array([0, 1, 2, 0, 1, 2]))
      Array(2.2574055, dtype=float32)

    References:
      Zhai et al., "Sigmoid Loss for Language Image Pre-Training" (SigLIP), 2023.
    """
    fn = "siglip_loss"
    p = _prepare(img_emb, txt_emb, t, b, img_ids, txt_ids, chunk_size, fn, ("img_emb", "txt_emb"))
    return _siglip_mean(p.img, p.txt, p.t, p.b, p.ids, p.chunk, p.out_dtype)


# jit: one compiled program when called eagerly (op-by-op dispatch of the scans is slow); inlined
# when traced inside an outer jit, vmap or shard_map.
@functools.partial(jax.jit, static_argnums=(5, 6))
def _siglip_mean(img, txt, t, b, ids, chunk: int, out_dtype: Any) -> Array:
    cd = _checks.compute_dtype(out_dtype)
    img, txt = _present(ids, img, txt)
    img, txt = img.astype(cd), txt.astype(cd)
    t, b = t.reshape(()).astype(cd), b.reshape(()).astype(cd)
    # Replicated t/b inside shard_map must vary like the embeddings, so that their transposes
    # sum the per-device gradients the custom rule returns.
    t, b = pcast_varying((t, b), union_varying_axes(img, txt, ids))
    if ids is not None:
        ids = (*ids, jnp.sum(ids[0] >= 0).astype(cd))
    return _siglip_part(img, txt, t, b, ids, chunk, img.shape[0]).astype(out_dtype)


def siglip_loss_ring(
    img_shard: ArrayLike,
    txt_shard: ArrayLike,
    t: ArrayLike,
    b: ArrayLike | None = None,
    *,
    img_ids: ArrayLike | None = None,
    txt_ids: ArrayLike | None = None,
    axis_name: AxisName,
    chunk_size: int | None = None,
) -> Array:
    r"""The SigLIP loss of the global batch, inside ``jax.shard_map``, texts passed on a ring.

    Each of the ``n`` devices on ``axis_name`` holds a shard of the images and one of the texts
    (with their ids, when given); ``t`` and ``b`` are replicated (``P()``). In ``n`` steps every
    device scores its images against the text shard it holds, then hands the texts (and their
    ids) to its ring neighbour with ``lax.ppermute``, never an all-gather, so it holds one text
    shard at a time. The result, replicated, is :func:`siglip_loss` of the gathered arrays:

    .. math::

        L = -\frac{1}{\#\{i \text{ present}\}} \sum_{k=1}^{n} \sum_{i \in \mathrm{shard}_k}
        \sum_{j} \log \sigma(s_{ij} \, l_{ij}) \quad \text{(one } \mathrm{psum} \text{)}

    When differentiated, each text shard travels with the gradient accumulated for it, which
    arrives home after one more hop; the backward pass only scales the gradients. Blocks are
    chunked as in :func:`siglip_loss`. Works with ``check_vma`` True and False, and across
    processes (``jax.distributed.initialize``, a mesh over every process's devices).

    Args:
      img_shard: This device's image embeddings ``[N / n, D]``.
      txt_shard: This device's text embeddings ``[M / n, D]``.
      t: Log-temperature, a replicated scalar or ``(1,)``.
      b: Logit bias, a replicated scalar or ``(1,)``; None for none.
      img_ids: This device's ``[N / n]`` image ids (< 0: padding), with ``txt_ids``.
      txt_ids: This device's ``[M / n]`` text ids (< 0: padding), with ``img_ids``.
      axis_name: The ``shard_map`` mesh axis the batch is sharded over.
      chunk_size: Image rows per chunk within each block (None: as :func:`siglip_loss`).

    Returns:
      The global scalar loss, identical on every device (``out_specs=P()``).

    Raises:
      TypeError, ValueError: as :func:`siglip_loss`, for the shards; and an ``axis_name`` that
        no enclosing ``shard_map`` binds (a ``ValueError`` that is also a ``NameError``).

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from jax.sharding import Mesh, PartitionSpec as P
      >>> import sigmoid_xent as sx
      >>> mesh = Mesh(np.array(jax.devices()), ("batch",))
      >>> img = jax.random.normal(jax.random.key(0), (8, 4))
      >>> txt = jax.random.normal(jax.random.key(1), (8, 4))
      >>> ring = jax.jit(jax.shard_map(
      ...     lambda i, x, t, b: sx.siglip_loss_ring(i, x, t, b, axis_name="batch"),
      ...     mesh=mesh, in_specs=(P("batch"), P("batch"), P(), P()), out_specs=P()))
      >>> t, b = jnp.log(10.), -10.
      >>> bool(jnp.allclose(ring(img, txt, t, b), sx.siglip_loss(img, txt, t, b)))
      True
    """
    fn = "siglip_loss_ring"
    p = _prepare(
        img_shard, txt_shard, t, b, img_ids, txt_ids, chunk_size, fn, ("img_shard", "txt_shard")
    )
    n = bound_axes_size((axis_name,), fn)
    cd = _checks.compute_dtype(p.out_dtype)
    img, txt = _present(p.ids, p.img, p.txt)
    img, txt = img.astype(cd), txt.astype(cd)
    t_c, b_c = p.t.reshape(()).astype(cd), p.b.reshape(()).astype(cd)
    t_c, b_c = pcast_varying((t_c, b_c), union_varying_axes(img, txt, p.ids))
    ids: Any = None
    if p.ids is not None:  # with the global number of present images
        ids = (*p.ids, psum_over(jnp.sum(p.ids[0] >= 0).astype(cd), (axis_name,)))
    part = _ring_part(img, txt, t_c, b_c, ids, axis_name, p.chunk, n * img.shape[0])
    # The psum stays outside the custom VJP: its transpose hands each device its cotangent.
    return lax.psum(part, axis_name).astype(p.out_dtype)
