"""A linear layer fused with the sigmoid cross-entropy, for multi-label heads with many classes.

``h @ w.T + bias`` followed by the elementwise loss materialises ``[batch, classes]`` logits (and
as much again for their gradient). Here the logits are formed one tile of classes (and, on request,
of batch rows) at a time inside ``lax.scan``, reduced at once, and recomputed tile by tile in the
backward pass by a custom VJP, using the core's loss and gradient (``loss_value``,
``logits_grad``). Labels are read tile by tile in their own dtype, so int or bool labels are never
copied to float in full.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from sigmoid_xent import _checks
from sigmoid_xent._chunks import check_chunk_size, scan_chunks
from sigmoid_xent._core import logits_grad, loss_value
from sigmoid_xent._mesh_axes import pcast_varying, union_varying_axes

Array = jax.Array

__all__ = ["linear_sigmoid_cross_entropy"]

# Logits per tile when chunk_size is None (16 MiB in float32).
_TILE_ELEMENTS = 1 << 22
_MIN_CLASS_CHUNK = 128


def _default_chunks(n: int, c: int) -> tuple[int, int]:
    """Whole batch rows and about 2**22 / n classes per tile; batch tiles only for huge n."""
    batch = min(n, _TILE_ELEMENTS // _MIN_CLASS_CHUNK)
    classes = max(_MIN_CLASS_CHUNK, _TILE_ELEMENTS // max(batch, 1))
    return batch, min(classes, c)


def _tiles(n: int, c: int, bn: int, cc: int, body: Any, carry: Any, axes: frozenset) -> Any:
    """``carry = body(carry, r0, rows, c0, cols, fresh)`` over all tiles: classes outer, batch
    inner. ``fresh`` is None, or a bool ``[rows, cols]`` mask of the elements no earlier tile
    covered (the last tile of each direction overlaps its predecessor, see ``scan_chunks``)."""

    def over_classes(carry: Any, c0: Any, cols: int, fresh_c: Array | None) -> Any:
        def over_batch(carry: Any, r0: Any, rows: int, fresh_r: Array | None) -> Any:
            fresh = None
            if fresh_r is not None:
                fresh = jnp.broadcast_to(fresh_r[:, None], (rows, cols))
            if fresh_c is not None:
                fresh_cols = jnp.broadcast_to(fresh_c[None, :], (rows, cols))
                fresh = fresh_cols if fresh is None else fresh & fresh_cols
            return body(carry, r0, rows, c0, cols, fresh)

        return scan_chunks(over_batch, carry, n, bn, axes)

    return scan_chunks(over_classes, carry, c, cc, axes)


def _tile_inputs(h, w, bias, labels, r0, rows, c0, cols, cd):
    h_t = lax.dynamic_slice_in_dim(h, r0, rows)
    w_t = lax.dynamic_slice_in_dim(w, c0, cols)
    logits = lax.dot_general(h_t, w_t, (((1,), (1,)), ((), ()))) + lax.dynamic_slice_in_dim(
        bias, c0, cols
    )
    z = lax.dynamic_slice(labels, (r0, c0), (rows, cols)).astype(cd)
    return h_t, w_t, logits, z


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _fused_sum(h: Array, w: Array, bias: Array, labels: Array, bn: int, cc: int) -> Array:
    """Sum over every (row, class) of the core loss on ``h @ w.T + bias``."""
    cd = h.dtype
    axes = union_varying_axes(h, w, bias, labels)

    def body(total, r0, rows, c0, cols, fresh):
        _, _, logits, z = _tile_inputs(h, w, bias, labels, r0, rows, c0, cols, cd)
        loss = loss_value(logits, z)
        if fresh is not None:
            loss = jnp.where(fresh, loss, 0)
        return total + jnp.sum(loss)

    return _tiles(h.shape[0], w.shape[0], bn, cc, body, jnp.zeros((), cd), axes)


def _fused_sum_fwd(h, w, bias, labels, bn, cc):
    # symbolic_zeros: skip the gradients nobody asked for (above all the [batch, classes] one of
    # the labels). The dict's keys are static: they live in the residuals' tree structure.
    needs = {
        name: None
        for name, x in zip(("h", "w", "bias", "labels"), (h, w, bias, labels), strict=True)
        if x.perturbed
    }
    h, w, bias, labels = h.value, w.value, bias.value, labels.value
    return _fused_sum(h, w, bias, labels, bn, cc), ((h, w, bias, labels), needs)


def _fused_sum_bwd(bn, cc, res, g):
    (h, w, bias, labels), needs = res
    if isinstance(g, jax.custom_derivatives.SymbolicZero):
        return None, None, None, None
    cd = h.dtype
    axes = union_varying_axes(h, w, bias, labels)
    g = pcast_varying(jnp.asarray(g).astype(cd), axes)
    want_labels = "labels" in needs
    carry = (
        jnp.zeros_like(h),
        jnp.zeros_like(w),
        jnp.zeros_like(bias),
        jnp.zeros_like(labels) if want_labels else None,
    )

    def add_slice(acc: Array, start: Any, value: Array) -> Array:
        old = lax.dynamic_slice_in_dim(acc, start, value.shape[0])
        return lax.dynamic_update_slice_in_dim(acc, old + value, start, 0)

    def body(carry, r0, rows, c0, cols, fresh):
        d_h, d_w, d_bias, d_labels = carry
        h_t, w_t, logits, z = _tile_inputs(h, w, bias, labels, r0, rows, c0, cols, cd)
        dlogits = g * logits_grad(logits, z)
        if fresh is not None:  # overlapped elements were counted by an earlier tile.
            dlogits = jnp.where(fresh, dlogits, 0)
        d_h = add_slice(d_h, r0, dlogits @ w_t)
        d_w = add_slice(d_w, c0, lax.dot_general(dlogits, h_t, (((0,), (0,)), ((), ()))))
        d_bias = add_slice(d_bias, c0, jnp.sum(dlogits, axis=0))
        if d_labels is not None:  # d/dz of the core loss is -x; overlaps rewrite equal values.
            d_labels = lax.dynamic_update_slice(
                d_labels, (-g * logits).astype(d_labels.dtype), (r0, c0)
            )
        return d_h, d_w, d_bias, d_labels

    d_h, d_w, d_bias, d_labels = _tiles(h.shape[0], w.shape[0], bn, cc, body, carry, axes)
    return (
        d_h if "h" in needs else None,
        d_w if "w" in needs else None,
        d_bias if "bias" in needs else None,
        d_labels,
    )


_fused_sum.defvjp(_fused_sum_fwd, _fused_sum_bwd, symbolic_zeros=True)


def _chunks(chunk_size: Any, n: int, c: int, fn: str) -> tuple[int, int]:
    if chunk_size is None:
        return _default_chunks(n, c)
    if isinstance(chunk_size, (tuple, list)):
        if len(chunk_size) != 2:
            raise ValueError(
                f"{fn}: `chunk_size` must be an int (classes per tile) or a "
                f"(batch, classes) pair, got {chunk_size!r}."
            )
        bn = check_chunk_size(chunk_size[0], "chunk_size[0]", fn) or n  # None: every row.
        cc = check_chunk_size(chunk_size[1], "chunk_size[1]", fn) or c
        return min(bn, n), min(cc, c)
    return n, min(check_chunk_size(chunk_size, "chunk_size", fn) or c, c)


def linear_sigmoid_cross_entropy(
    h: ArrayLike,
    w: ArrayLike,
    labels: ArrayLike,
    bias: ArrayLike | None = None,
    chunk_size: int | tuple[int, int] | None = None,
) -> Array:
    r"""Mean sigmoid cross-entropy of a linear layer's logits, without materialising them.

    For features :math:`h` ``[..., H]``, class weights :math:`W` ``[C, H]`` and bias
    :math:`\beta` ``[C]``, with :math:`N` the number of feature rows:

    .. math::

        L = \frac{1}{N C} \sum_{n=1}^{N} \sum_{c=1}^{C}
        \ell\big(z_{nc},\; h_n^\top W_c + \beta_c\big), \quad
        \ell(z, x) = \max(x, 0) - x z + \log(1 + e^{-|x|})

    the mean of :func:`~sigmoid_xent.sigmoid_cross_entropy_with_logits` over all
    ``batch x classes`` elements, equal to
    ``jnp.mean(sigmoid_cross_entropy_with_logits(labels, h @ w.T + bias))``. The logits exist one
    tile at a time: ``chunk_size`` classes (and, given a pair, batch rows) per tile inside
    ``lax.scan``; a custom VJP recomputes each tile in the backward pass, so neither the forward
    pass nor ``value_and_grad`` holds ``[batch, classes]`` temporaries (except the labels'
    gradient, which has that shape, computed only when asked for). Sizes need not divide the
    chunks. Computed in float32 at least; the result has the dtype of ``h`` and ``w`` promoted.

    Args:
      h: Features ``[..., H]`` (float).
      w: Class weights ``[C, H]`` (float), as a ``Dense`` kernel transposed.
      labels: Dense targets ``[..., C]`` matching ``h``'s leading dimensions: soft (float in
        [0, 1]), int or bool; read tile by tile in their own dtype.
      bias: Optional ``[C]`` class bias.
      chunk_size: Classes per tile (int), or a ``(batch, classes)`` pair of rows and classes per
        tile. None: every row and about ``2**22 / N`` classes per tile (16 MiB of float32
        logits), at least 128.

    Returns:
      The scalar mean loss.

    Raises:
      TypeError: integer ``h``/``w``, complex ``labels``/``bias``, or a non-int chunk size.
      ValueError: mismatched shapes (each named with both shapes), empty batch or classes, or a
        chunk size < 1.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import sigmoid_xent as sx
      >>> h = jnp.array([[1., 2.], [0., -1.], [3., 0.5]])
      >>> w = jnp.array([[0.5, -0.5], [1., 0.], [0., 1.], [-1., 1.], [2., 0.]])
      >>> labels = jnp.array([[1, 0, 1, 0, 1], [0, 0, 1, 1, 0], [1, 1, 0, 0, 1]])
      >>> sx.linear_sigmoid_cross_entropy(h, w, labels, chunk_size=2)
      Array(0.6798207, dtype=float32)
      >>> jnp.mean(sx.sigmoid_cross_entropy_with_logits(labels, h @ w.T))
      Array(0.67982084, dtype=float32)
    """
    fn = "linear_sigmoid_cross_entropy"
    h_arr = _checks.as_logits(h, fn, name="h")
    w_arr = _checks.as_logits(w, fn, name="w")
    if h_arr.ndim < 1:
        raise ValueError(f"{fn}: `h` must be [..., H], got a scalar.")
    if w_arr.ndim != 2 or w_arr.shape[1] != h_arr.shape[-1]:
        raise ValueError(
            f"{fn}: `w` must be [C, H] with H = h.shape[-1] = {h_arr.shape[-1]}, got `w` of shape "
            f"{w_arr.shape} and `h` of shape {h_arr.shape}."
        )
    num_classes, hidden = w_arr.shape
    _checks.not_none(labels, "labels", fn)
    labels_dtype = jnp.result_type(labels)
    if jnp.issubdtype(labels_dtype, jnp.complexfloating):
        raise TypeError(
            f"{fn}: `labels` must be real (float, int or bool), got dtype {labels_dtype}."
        )
    z = jnp.asarray(labels)
    expected = tuple(h_arr.shape[:-1]) + (num_classes,)
    if tuple(z.shape) != expected:
        raise ValueError(
            f"{fn}: `labels` must have shape h.shape[:-1] + (C,) = {expected}, got `labels` of "
            f"shape {z.shape} (`h` {h_arr.shape}, `w` {w_arr.shape})."
        )
    out_dtype = jnp.promote_types(h_arr.dtype, w_arr.dtype)
    cd = _checks.compute_dtype(out_dtype)
    if bias is None:
        bias_arr = jnp.zeros((num_classes,), cd)
    else:
        bias_arr = _checks.as_float(bias, cd, "bias", fn)
        if tuple(bias_arr.shape) != (num_classes,):
            raise ValueError(
                f"{fn}: `bias` must have shape (C,) = ({num_classes},), got shape "
                f"{bias_arr.shape} (`w` {w_arr.shape})."
            )
        bias_arr = bias_arr.astype(cd)
    n = int(np.prod(h_arr.shape[:-1], dtype=np.int64))
    if n == 0 or num_classes == 0:
        raise ValueError(f"{fn}: empty batch or classes (`h` {h_arr.shape}, `w` {w_arr.shape}).")
    bn, cc = _chunks(chunk_size, n, num_classes, fn)

    return _fused_mean(
        h_arr.reshape(n, hidden), w_arr, z.reshape(n, num_classes), bias_arr, bn, cc, cd, out_dtype
    )


# jit: one compiled program when called eagerly; inlined inside an outer jit/vmap/shard_map.
@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7))
def _fused_mean(
    h: Array, w: Array, labels: Array, bias: Array, bn: int, cc: int, cd: Any, out_dtype: Any
) -> Array:
    h, w = h.astype(cd), w.astype(cd)
    axes = union_varying_axes(h, w, bias, labels)
    # Replicated parameters inside shard_map vary like the data, so that the transposes of the
    # casts sum the per-device gradients of the custom rule.
    h, w, bias = pcast_varying((h, w, bias), axes)
    if jnp.issubdtype(labels.dtype, jnp.floating):
        labels = pcast_varying(labels, axes)
    total = _fused_sum(h, w, bias, labels, bn, cc)
    return (total / labels.size).astype(out_dtype)
