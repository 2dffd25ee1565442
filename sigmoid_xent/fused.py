"""A linear layer fused with the sigmoid cross-entropy, for multi-label heads with many classes.

``h @ w.T + bias`` followed by the elementwise loss materialises ``[batch, classes]`` logits (and
as much again for their gradient). Here the logits are formed one tile of classes (and, on request,
of batch rows) at a time inside ``lax.scan`` and reduced at once, using the core's loss and
gradient (``loss_value``, ``logits_grad``). The loss is a scalar, so a custom VJP's forward rule
adds each tile's share of the parameter gradients as it goes and the backward pass only scales
them: three matrix products per tile, not four. Labels are read tile by tile in their own dtype,
so int or bool labels are never copied to float in full. With ``axis_name`` inside
``jax.shard_map`` the elements are split over devices by rows, classes or both (a model-parallel
multi-label head); one scalar ``psum`` makes the global mean.
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
from sigmoid_xent._core import absorbing_mul, logits_grad, loss_value
from sigmoid_xent._mesh_axes import (
    AxisName,
    axis_names,
    bound_axes_size,
    check_sharded_over,
    pcast_varying,
    psum_over,
    union_varying_axes,
)

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


def _tile(h, w, bias, labels, r0, rows, c0, cols, cd):
    h_t = lax.dynamic_slice_in_dim(h, r0, rows)
    w_t = lax.dynamic_slice_in_dim(w, c0, cols)
    b_t = lax.dynamic_slice_in_dim(bias, c0, cols)
    logits = lax.dot_general(h_t, w_t, (((1,), (1,)), ((), ()))) + b_t[None, :]
    z = lax.dynamic_slice(labels, (r0, c0), (rows, cols)).astype(cd)
    return h_t, w_t, logits, z


def _add_slice(acc: Array, start: Any, value: Array) -> Array:
    old = lax.dynamic_slice_in_dim(acc, start, value.shape[0])
    return lax.dynamic_update_slice_in_dim(acc, old + value, start, 0)


_GRAD_NAMES = ("h", "w", "bias", "labels")


def _sweep(
    h: Array, w: Array, bias: Array, labels: Array, bn: int, cc: int, count: int, want: tuple
) -> tuple[Array, dict[str, Array]]:
    """``sum(loss) / count`` over every tile, and the gradients of it named in ``want``.

    One pass over the tiles: each tile's logits give its loss and, when asked, its share of the
    gradients (``d/dlogits`` scaled by ``1 / count`` before the products, so sums stay in range),
    so a differentiated call forms each tile once and does three products per tile, not four.
    Plain jnp (no custom rule inside), so the custom VJP's forward rule, which calls this, can be
    differentiated again (``jax.hessian``).
    """
    cd = h.dtype
    axes = union_varying_axes(h, w, bias, labels)
    inv = jnp.asarray(1 / count, cd)
    carry: dict[str, Array] = {"total": jnp.zeros((), cd)}
    for name, x in zip(_GRAD_NAMES, (h, w, bias, labels), strict=True):
        if name in want:
            carry[name] = jnp.zeros_like(x)
    dense = [name for name in ("h", "w", "bias") if name in want]

    def body(carry, r0, rows, c0, cols, fresh):
        h_t, w_t, logits, z = _tile(h, w, bias, labels, r0, rows, c0, cols, cd)
        loss = loss_value(logits, z)
        if fresh is not None:  # overlapped elements were counted by an earlier tile.
            loss = jnp.where(fresh, loss, 0)
        out = dict(carry, total=carry["total"] + jnp.sum(loss))
        if dense:
            dlogits = inv * logits_grad(logits, z)
            if fresh is not None:
                dlogits = jnp.where(fresh, dlogits, 0)
            if "h" in out:
                out["h"] = _add_slice(carry["h"], r0, dlogits @ w_t)
            if "w" in out:
                d_w = lax.dot_general(dlogits, h_t, (((0,), (0,)), ((), ())))
                out["w"] = _add_slice(carry["w"], c0, d_w)
            if "bias" in out:
                out["bias"] = _add_slice(carry["bias"], c0, jnp.sum(dlogits, axis=0))
        if "labels" in out:  # d/dz of the core loss is -x; overlaps rewrite equal values.
            d_z = (-inv * logits).astype(out["labels"].dtype)
            out["labels"] = lax.dynamic_update_slice(carry["labels"], d_z, (r0, c0))
        return out

    out = _tiles(h.shape[0], w.shape[0], bn, cc, body, carry, axes)
    total = out.pop("total")
    return total / jnp.asarray(count, cd), out


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _fused_part(
    h: Array, w: Array, bias: Array, labels: Array, bn: int, cc: int, count: int
) -> Array:
    """``sum(loss) / count`` over every (row, class) of the core loss on ``h @ w.T + bias``."""
    return _sweep(h, w, bias, labels, bn, cc, count, ())[0]


def _fused_part_fwd(h, w, bias, labels, bn, cc, count):
    # symbolic_zeros: form only the gradients somebody asked for (above all, the labels' one is
    # [batch, classes]). The loss is a scalar, so the gradients for a unit cotangent are the
    # residuals and the backward pass only scales them.
    want = tuple(
        name for name, x in zip(_GRAD_NAMES, (h, w, bias, labels), strict=True) if x.perturbed
    )
    value, grads = _sweep(h.value, w.value, bias.value, labels.value, bn, cc, count, want)
    return value, grads


def _fused_part_bwd(bn, cc, count, grads, g):
    if isinstance(g, jax.custom_derivatives.SymbolicZero):
        return None, None, None, None
    out = []
    for name in _GRAD_NAMES:
        d = grads.get(name)
        if d is not None:
            gd = jnp.asarray(g).astype(d.dtype)  # a Python scalar under jax.checkpoint.
            # A zero cotangent gives a zero label gradient also where a logit is infinite.
            d = absorbing_mul(gd, d) if name == "labels" else gd * d
        out.append(d)
    return tuple(out)


_fused_part.defvjp(_fused_part_fwd, _fused_part_bwd, symbolic_zeros=True)


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
    *,
    axis_name: AxisName | None = None,
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
    ``lax.scan``, so neither the forward pass nor ``value_and_grad`` holds ``[batch, classes]``
    temporaries (except the labels' gradient, which has that shape, computed only when asked
    for). The loss is a scalar, so a differentiated call forms each tile once: its forward rule
    adds every tile's share of the gradients (three matrix products per tile) and the backward
    pass only scales them by the cotangent; the plain forward pass does the one product. Sizes
    need not divide the chunks. Computed in float32 at least; the result has the dtype of ``h``
    and ``w`` promoted. Works under ``jit``, ``vmap``, ``grad``, ``jax.checkpoint``, and second
    order (``jax.hessian``, ``jax.grad`` of ``jax.grad``, ``jax.jacrev`` twice); ``jax.jvp`` and
    ``jax.jacfwd`` directly on it are refused by JAX (a ``custom_vjp``): use ``jax.jacrev``.

    **Model parallel** (``axis_name``): inside ``jax.shard_map`` the ``batch x classes`` elements
    can be split over mesh axes, by batch rows (``h`` and ``labels`` sharded on rows, ``w`` and
    ``bias`` replicated), by classes (``w``, ``bias`` and ``labels``' last axis sharded, ``h``
    replicated: the head of a model with too many classes for one device), or both on a 2-D
    mesh, e.g. ``in_specs=(P("data"), P("model"), P("data", "model"), P("model"))`` with
    ``axis_name=("data", "model")``. Each device reduces its own block, and one ``psum`` of a
    scalar gives the global mean :math:`L` over :math:`N C` elements (``N``, ``C`` the global
    sizes); every gradient equals the unsharded call's. A replicated ``h`` gets its cotangent
    summed over the class axes (and a replicated ``w``/``bias`` over the batch axes) as
    ``shard_map`` does for replicated inputs. No device gathers ``w``, its gradient or another
    device's classes: its temp memory is that of its own ``[N / rows, C / classes]`` share.
    Works with ``check_vma`` True and False, in one process or across processes started with
    ``jax.distributed.initialize``.

    Args:
      h: Features ``[..., H]`` (float).
      w: Class weights ``[C, H]`` (float), as a ``Dense`` kernel transposed.
      labels: Dense targets ``[..., C]`` matching ``h``'s leading dimensions: soft (float in
        [0, 1]), int or bool; read tile by tile in their own dtype.
      bias: Optional ``[C]`` class bias.
      chunk_size: Classes per tile (int), or a ``(batch, classes)`` pair of rows and classes per
        tile. None: every row and about ``2**22 / N`` classes per tile (16 MiB of float32
        logits), at least 128. Inside ``shard_map`` these count this device's rows/classes.
      axis_name: None (the default): the mean over the elements given (inside ``shard_map``:
        this device's local mean). A ``shard_map`` mesh axis name, or a tuple of them: the axes
        the elements are split over (batch rows, classes, or both); the result is the global
        mean, identical on every device (``out_specs=P()``).

    Returns:
      The scalar mean loss.

    Raises:
      TypeError: integer ``h``/``w``, complex ``labels``/``bias``, or a non-int chunk size.
      ValueError: mismatched shapes (each named with both shapes; inside ``shard_map`` the
        shapes of this device's shards), empty batch or classes, a chunk size < 1, an
        ``axis_name`` no enclosing ``shard_map`` binds (a ``ValueError`` that is also a
        ``NameError``), or (with ``check_vma=True``) labels replicated over an axis in
        ``axis_name`` (each element would count once per device).

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

      Classes split over the devices of a mesh (a model-parallel head):

      >>> import numpy as np
      >>> from jax.sharding import Mesh, PartitionSpec as P
      >>> mesh = Mesh(np.array(jax.devices()[:1]), ("model",))
      >>> head = jax.shard_map(
      ...     lambda h, w, z: sx.linear_sigmoid_cross_entropy(h, w, z, axis_name="model"),
      ...     mesh=mesh, in_specs=(P(), P("model"), P(None, "model")), out_specs=P())
      >>> head(h, w, labels)
      Array(0.6798208, dtype=float32)
    """
    fn = "linear_sigmoid_cross_entropy"
    names = () if axis_name is None else axis_names(axis_name, fn)
    # Inside shard_map the shapes below are this device's shards: say so when they disagree.
    hint = (
        f" (per-device shards inside shard_map over {names}: `h` and `labels` must be split "
        "alike over batch rows, `w`, `bias` and `labels`' last axis alike over classes)"
        if names
        else ""
    )
    h_arr = _checks.float_array(h, fn, name="h")
    w_arr = _checks.float_array(w, fn, name="w")
    if h_arr.ndim < 1:
        raise ValueError(f"{fn}: `h` must be [..., H], got a scalar.")
    if w_arr.ndim != 2 or w_arr.shape[1] != h_arr.shape[-1]:
        raise ValueError(
            f"{fn}: `w` must be [C, H] with H = h.shape[-1] = {h_arr.shape[-1]}, got `w` of shape "
            f"{w_arr.shape} and `h` of shape {h_arr.shape}{hint}."
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
            f"shape {z.shape} (`h` {h_arr.shape}, `w` {w_arr.shape}){hint}."
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
                f"{bias_arr.shape} (`w` {w_arr.shape}){hint}."
            )
        bias_arr = bias_arr.astype(cd)
    n = int(np.prod(h_arr.shape[:-1], dtype=np.int64))
    if n == 0 or num_classes == 0:
        raise ValueError(f"{fn}: empty batch or classes (`h` {h_arr.shape}, `w` {w_arr.shape}).")
    bn, cc = _chunks(chunk_size, n, num_classes, fn)
    devices = 1
    if names:
        devices = bound_axes_size(names, fn)
        check_sharded_over(z, names, "labels", fn)
    return _fused_mean(
        h_arr.reshape(n, hidden),
        w_arr,
        z.reshape(n, num_classes),
        bias_arr,
        bn,
        cc,
        n * num_classes * devices,
        names,
        cd,
        out_dtype,
    )


# jit: one compiled program when called eagerly; inlined inside an outer jit/vmap/shard_map.
@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7, 8, 9))
def _fused_mean(
    h: Array,
    w: Array,
    labels: Array,
    bias: Array,
    bn: int,
    cc: int,
    count: int,
    names: tuple,
    cd: Any,
    out_dtype: Any,
) -> Array:
    h, w = h.astype(cd), w.astype(cd)
    axes = union_varying_axes(h, w, bias, labels)
    # Replicated parameters inside shard_map vary like the data, so that the transposes of the
    # casts sum the per-device gradients of the custom rule (over the batch axes for `w` and
    # `bias`, over the class axes for `h`).
    h, w, bias = pcast_varying((h, w, bias), axes)
    if jnp.issubdtype(labels.dtype, jnp.floating):
        labels = pcast_varying(labels, axes)
    part = _fused_part(h, w, bias, labels, bn, cc, count)
    if names:  # the psum stays outside the custom VJP: its transpose hands each device its part.
        part = psum_over(part, names)
    return part.astype(out_dtype)
