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
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from sigmoid_xent import _checks
from sigmoid_xent._chunks import check_chunk_size, scan_chunks
from sigmoid_xent._core import logits_grad, loss_value
from sigmoid_xent._mesh_axes import AxisName, bound_axes_size, pcast_varying, union_varying_axes

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
) -> dict[str, Array]:
    """Adds the block's loss to ``acc["total"]``, ``chunk`` image rows at a time, and, when
    ``acc`` holds them, its gradients of ``inv * loss`` to ``acc["img"]``, ``acc["txt"]`` and
    ``acc["b"]``: each chunk's logits serve its loss and its three products at once."""
    cols = txt.shape[0]

    def body(acc: dict[str, Array], start: Any, size: int, fresh: Array | None):
        rows = lax.dynamic_slice_in_dim(img, start, size) * scale
        logits = _block_logits(rows, txt, bias)
        z = _block_labels(start, size, cols, diag, logits.dtype)
        loss = loss_value(logits, z)
        if fresh is not None:  # rows already counted by the previous chunk.
            loss = jnp.where(fresh[:, None], loss, 0)
        out = dict(acc, total=acc["total"] + jnp.sum(loss))
        if "txt" in acc:
            dlogits = inv * logits_grad(logits, z)
            if fresh is not None:
                dlogits = jnp.where(fresh[:, None], dlogits, 0)
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


def _finish(acc: dict[str, Array], img: Array, count: int) -> tuple[Array, tuple | None]:
    value = acc["total"] / jnp.asarray(count, img.dtype)
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


def _siglip_sweep(img, txt, t, b, chunk, count, grads):
    axes = union_varying_axes(img, txt, t, b)
    inv = jnp.asarray(1 / count, img.dtype)
    acc = _block_sweep(_start(img, txt, grads), img, txt, jnp.exp(t), b, True, chunk, axes, inv)
    return _finish(acc, img, count)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _siglip_part(img: Array, txt: Array, t: Array, b: Array, chunk: int, count: int) -> Array:
    return _siglip_sweep(img, txt, t, b, chunk, count, False)[0]


def _siglip_part_fwd(img, txt, t, b, chunk, count):
    return _siglip_sweep(img, txt, t, b, chunk, count, True)


def _siglip_part_bwd(chunk, count, grads, g):
    return _scaled(grads, g)


_siglip_part.defvjp(_siglip_part_fwd, _siglip_part_bwd)


# --------------------------------------------------------------------------------------------
# Ring: device k holds images k and, after s steps, the texts of device k - s.


def _ring_perm(n: int) -> list[tuple[int, int]]:
    return [(j, (j + 1) % n) for j in range(n)]


def _ring_sweep(img, txt, t, b, axis_name, chunk, count, grads):
    """This device's images against every text shard: its part of the global mean, and with
    ``grads`` the gradients of that part. The gradient of a text shard travels with it around
    the ring and, after visiting every device, takes one more hop home."""
    n = lax.axis_size(axis_name)
    perm = _ring_perm(n)
    axes = union_varying_axes(img, txt, t, b)
    scale = jnp.exp(t)
    inv = jnp.asarray(1 / count, img.dtype)

    def block(acc: dict[str, Array], cur: Array, diag: bool) -> dict[str, Array]:
        return _block_sweep(acc, img, cur, scale, b, diag, chunk, axes, inv)

    acc = block(_start(img, txt, grads), txt, True)
    if n > 1 and not grads:
        # The shard for the next step is sent before the block is computed, so the transfer
        # can overlap the compute.
        def step(carry, _):
            cur, acc = carry
            nxt = lax.ppermute(cur, axis_name, perm)
            return pcast_varying((nxt, block(acc, cur, False)), axes), None

        carry = pcast_varying((lax.ppermute(txt, axis_name, perm), acc), axes)
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

        carry = pcast_varying((lax.ppermute(txt, axis_name, perm), acc), axes)
        (cur, acc), _ = lax.scan(step, carry, None, length=n - 2)
        acc = visit(cur, acc["txt"], acc)
        acc["txt"] = lax.ppermute(acc["txt"], axis_name, perm)  # home.
    return _finish(acc, img, count)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _ring_part(
    img: Array, txt: Array, t: Array, b: Array, axis_name: Any, chunk: int, count: int
) -> Array:
    return _ring_sweep(img, txt, t, b, axis_name, chunk, count, False)[0]


def _ring_part_fwd(img, txt, t, b, axis_name, chunk, count):
    return _ring_sweep(img, txt, t, b, axis_name, chunk, count, True)


def _ring_part_bwd(axis_name, chunk, count, grads, g):
    return _scaled(grads, g)


_ring_part.defvjp(_ring_part_fwd, _ring_part_bwd)


# --------------------------------------------------------------------------------------------
# Public API.


def _prepare(
    img_emb: ArrayLike,
    txt_emb: ArrayLike,
    t: ArrayLike,
    b: ArrayLike,
    chunk_size: Any,
    fn: str,
    names: tuple[str, str],
) -> tuple[Array, Array, Array, Array, int, Any]:
    img = _checks.float_array(img_emb, fn, name=names[0])
    txt = _checks.float_array(txt_emb, fn, name=names[1])
    if img.ndim != 2:
        raise ValueError(f"{fn}: `{names[0]}` must be [batch, dim], got shape {img.shape}.")
    if img.shape != txt.shape:
        raise ValueError(
            f"{fn}: `{names[0]}` and `{names[1]}` must have the same shape [batch, dim], got "
            f"{names[0]} {img.shape} and {names[1]} {txt.shape}."
        )
    if img.shape[0] == 0:
        raise ValueError(f"{fn}: the batch is empty (`{names[0]}` of shape {img.shape}).")
    out_dtype = jnp.promote_types(img.dtype, txt.dtype)
    cd = _checks.compute_dtype(out_dtype)
    scalars = []
    for name, value in (("t", t), ("b", b)):
        arr = _checks.as_float(value, cd, name, fn)
        if arr.shape not in ((), (1,)):
            raise ValueError(
                f"{fn}: `{name}` must be a scalar or of shape (1,), got shape {arr.shape}."
            )
        scalars.append(arr.reshape(()).astype(cd))
    chunk = check_chunk_size(chunk_size, "chunk_size", fn)
    if chunk is None:
        chunk = _default_chunk(img.shape[0], txt.shape[0])
    return img.astype(cd), txt.astype(cd), scalars[0], scalars[1], chunk, out_dtype


def siglip_loss(
    img_emb: ArrayLike,
    txt_emb: ArrayLike,
    t: ArrayLike,
    b: ArrayLike,
    *,
    chunk_size: int | None = None,
) -> Array:
    r"""The pairwise sigmoid loss of SigLIP, computed in chunks of image rows.

    With logits :math:`l_{ij} = e^{t} \langle x_i, y_j \rangle + b` between image ``i`` and text
    ``j`` and labels :math:`s_{ij} = +1` for ``i = j``, :math:`-1` otherwise:

    .. math::

        L = -\frac{1}{B} \sum_{i=1}^{B} \sum_{j=1}^{B} \log \sigma(s_{ij} \, l_{ij})

    Each term is the stable core loss (:func:`~sigmoid_xent.sigmoid_cross_entropy_with_logits`
    with label :math:`(1 + s_{ij})/2`), exact for any finite logit. The logits are formed
    ``chunk_size`` image rows at a time inside ``lax.scan`` and reduced at once. When the call
    is differentiated, a custom VJP's forward rule adds each chunk's share of the gradients
    (three matrix products per chunk) and the backward pass only scales them by the cotangent;
    the plain forward pass does the one product. Memory is ``O(chunk_size * B)`` in the forward
    pass and in ``value_and_grad`` alike; ``B`` need not divide ``chunk_size``. Computed in float32
    at least (float64 stays float64); the result has the embeddings' dtype. Works under ``jit``,
    ``vmap``, ``grad``, ``jax.checkpoint``, second order (``jax.hessian``, ``jax.grad`` of
    ``jax.grad``, ``jax.jacrev`` twice; ``jax.jvp``/``jax.jacfwd`` directly are refused by JAX,
    as for every ``custom_vjp``) and inside ``shard_map`` on per-device data (then it is that
    device's loss; see :func:`siglip_loss_ring` for the global one).

    Args:
      img_emb: Image embeddings ``[B, D]`` (float; SigLIP normalises them first).
      txt_emb: Text embeddings ``[B, D]``; row ``i`` matches image ``i``.
      t: Log-temperature, a scalar or shape ``(1,)``: the logits are scaled by ``exp(t)``.
      b: Logit bias, a scalar or shape ``(1,)``.
      chunk_size: Image rows per chunk (so each chunk holds ``chunk_size x B`` logits). None
        picks about ``2**22 / B`` rows (16 MiB of float32 logits per chunk), at least 256.

    Returns:
      The scalar loss in the embeddings' dtype.

    Raises:
      TypeError: integer/bool embeddings, complex ``t``/``b``, or a non-int ``chunk_size``.
      ValueError: embeddings not 2-D, of different shapes or empty; ``t``/``b`` not a scalar
        or ``(1,)``; ``chunk_size < 1``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import sigmoid_xent as sx
      >>> img = jnp.array([[1., 0.], [0., 1.], [0.6, 0.8]])
      >>> txt = jnp.array([[0.8, 0.6], [0., 1.], [0.6, 0.8]])
      >>> sx.siglip_loss(img, txt, jnp.log(10.), -10., chunk_size=2)
      Array(1.4388129, dtype=float32)
      >>> grads = jax.grad(sx.siglip_loss, argnums=(0, 1, 2, 3))(img, txt, jnp.log(10.), -10.)
      >>> [g.shape for g in grads]
      [(3, 2), (3, 2), (), ()]

    References:
      Zhai et al., "Sigmoid Loss for Language Image Pre-Training" (SigLIP), 2023.
    """
    fn = "siglip_loss"
    img, txt, t_c, b_c, chunk, out_dtype = _prepare(
        img_emb, txt_emb, t, b, chunk_size, fn, ("img_emb", "txt_emb")
    )
    return _siglip_mean(img, txt, t_c, b_c, chunk, out_dtype)


# jit: one compiled program when called eagerly (op-by-op dispatch of the scans is slow); inlined
# when traced inside an outer jit, vmap or shard_map.
@functools.partial(jax.jit, static_argnums=(4, 5))
def _siglip_mean(img: Array, txt: Array, t: Array, b: Array, chunk: int, out_dtype: Any) -> Array:
    # Replicated t/b inside shard_map must vary like the embeddings, so that their transposes
    # sum the per-device gradients the custom rule returns.
    t, b = pcast_varying((t, b), union_varying_axes(img, txt))
    return _siglip_part(img, txt, t, b, chunk, img.shape[0]).astype(out_dtype)


def siglip_loss_ring(
    img_shard: ArrayLike,
    txt_shard: ArrayLike,
    t: ArrayLike,
    b: ArrayLike,
    *,
    axis_name: AxisName,
    chunk_size: int | None = None,
) -> Array:
    r"""The SigLIP loss of the global batch, inside ``jax.shard_map``, texts passed on a ring.

    Each device holds a shard of ``B / n`` images and their ``B / n`` texts (``n`` devices on
    ``axis_name``); ``t`` and ``b`` are replicated (``P()``). In ``n`` steps every device scores
    its images against the text shard it holds, then hands the texts to its ring neighbour with
    ``lax.ppermute`` (never an all-gather), so each device sees every text once and holds one text
    shard at a time. The result is the global loss of :func:`siglip_loss`, replicated:

    .. math::

        L = -\frac{1}{B} \sum_{k=1}^{n} \sum_{i \in \mathrm{shard}_k} \sum_{j=1}^{B}
        \log \sigma(s_{ij} \, l_{ij}) \quad \text{(one } \mathrm{psum} \text{ over devices)}

    When the call is differentiated, each text shard travels with the gradient accumulated for
    it so far, which arrives home after one more hop; the backward pass only scales the
    gradients by the cotangent (no second trip around the ring). Blocks are chunked as in
    :func:`siglip_loss`. Runs unchanged across processes (``jax.distributed.initialize``, a mesh
    over every process's devices). Value and gradients (both embeddings, ``t``, ``b``) equal
    :func:`siglip_loss` on the gathered arrays. Works with ``check_vma`` True (the default) and
    False.

    Args:
      img_shard: This device's image embeddings ``[B / n, D]``.
      txt_shard: This device's text embeddings ``[B / n, D]``, row ``i`` matching image ``i``.
      t: Log-temperature, a replicated scalar or ``(1,)``.
      b: Logit bias, a replicated scalar or ``(1,)``.
      axis_name: The ``shard_map`` mesh axis the batch is sharded over.
      chunk_size: Image rows per chunk within each block (None: as :func:`siglip_loss`).

    Returns:
      The global scalar loss, identical on every device (``out_specs=P()``).

    Raises:
      TypeError: integer/bool embeddings, complex ``t``/``b``, or a non-int ``chunk_size``.
      ValueError: shards not 2-D, of different shapes or empty; ``t``/``b`` not a scalar or
        ``(1,)``; ``chunk_size < 1``.
      ValueError: ``axis_name`` not bound by an enclosing ``shard_map`` (also a ``NameError``).

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from jax.sharding import Mesh, PartitionSpec as P
      >>> import sigmoid_xent as sx
      >>> mesh = Mesh(np.array(jax.devices()), ("batch",))
      >>> img = jax.random.normal(jax.random.key(0), (8, 4))
      >>> txt = jax.random.normal(jax.random.key(1), (8, 4))
      >>> ring = jax.shard_map(
      ...     lambda i, x, t, b: sx.siglip_loss_ring(i, x, t, b, axis_name="batch"),
      ...     mesh=mesh, in_specs=(P("batch"), P("batch"), P(), P()), out_specs=P())
      >>> t, b = jnp.log(10.), -10.
      >>> bool(jnp.allclose(ring(img, txt, t, b), sx.siglip_loss(img, txt, t, b)))
      True
    """
    fn = "siglip_loss_ring"
    img, txt, t_c, b_c, chunk, out_dtype = _prepare(
        img_shard, txt_shard, t, b, chunk_size, fn, ("img_shard", "txt_shard")
    )
    n = bound_axes_size((axis_name,), fn)
    axes = union_varying_axes(img, txt)
    t_c, b_c = pcast_varying((t_c, b_c), axes)
    part = _ring_part(img, txt, t_c, b_c, axis_name, chunk, n * img.shape[0])
    # The psum stays outside the custom VJP: its transpose hands each device its cotangent.
    return lax.psum(part, axis_name).astype(out_dtype)
