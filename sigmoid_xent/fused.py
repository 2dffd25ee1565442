"""A linear layer fused with the sigmoid cross-entropy, for multi-label heads with many classes.

``h @ w.T + bias`` followed by the elementwise loss materialises ``[batch, classes]`` logits (and
as much again for their gradient). Here the logits exist one tile at a time
(:mod:`sigmoid_xent._head_tiles`); labels come dense, read tile by tile in their own dtype, or
as a few class ids per row, compared with each tile's columns, so the ``[batch, classes]``
labels never exist either. The loss is a scalar, so a custom VJP's forward rule adds each
tile's share of the gradients as it goes and the backward pass only scales them: three matrix
products per tile, not four. With ``axis_name`` inside ``jax.shard_map`` the elements are split
over devices by rows, classes or both (a model-parallel multi-label head).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from sigmoid_xent import _checks
from sigmoid_xent._chunks import check_chunk_size
from sigmoid_xent._core import absorbing_mul
from sigmoid_xent._head_tiles import (
    COL,
    gather_at,
    grid_operand,
    grid_sum,
    hide_absent,
    sweep,
    values_grad,
)
from sigmoid_xent._mask import hide
from sigmoid_xent._mesh_axes import (
    AxisName,
    axes_index,
    axis_names,
    bound_axes_size,
    check_sharded_over,
    pcast_varying,
    psum_over,
    split_axes,
    union_varying_axes,
)
from sigmoid_xent.reductions import SCALE, Reduction, safe_divide

Array = jax.Array

__all__ = ["linear_sigmoid_cross_entropy"]

# Logits per tile when chunk_size is None (16 MiB in float32).
_TILE_ELEMENTS = 1 << 22
_MIN_CLASS_CHUNK = 128
_OPERANDS = ("weights", "mask", "pos_weight", "smoothing")


def _default_chunks(n: int, c: int) -> tuple[int, int]:
    """Whole batch rows and about 2**22 / n classes per tile; batch tiles only for huge n."""
    batch = min(n, _TILE_ELEMENTS // _MIN_CLASS_CHUNK)
    classes = max(_MIN_CLASS_CHUNK, _TILE_ELEMENTS // max(batch, 1))
    return batch, min(classes, c)


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


# --------------------------------------------------------------------------------------------
# The custom VJPs: the sum of the weighted loss over the kept elements (its gradients formed
# in the forward pass), and the per-row sums of reduction "none" (gradients in the backward
# pass, which needs the row cotangents).


def _wanted(primals: dict[str, Any]) -> tuple[str, ...]:
    return tuple(name for name, p in primals.items() if p is not None and p.perturbed)


def _values(*primals: Any) -> tuple:
    """The arrays of the fwd rule's ``CustomVJPPrimal`` arguments (the last: the operands)."""
    *arrays, ops = primals
    values = tuple(None if x is None else x.value for x in arrays)
    return (*values, {k: None if v is None else v.value for k, v in ops.items()})


def _primals(h, w, bias, labels, ops) -> dict[str, Any]:
    return {"h": h, "w": w, "bias": bias, "labels": labels, **ops}


def _cotangents(grads: dict[str, Array], ops: dict[str, Any]) -> tuple:
    """The bwd rule's output: h, w, bias, labels (or label values), ids, operands."""
    d_ops = {name: grads.get(name) for name in ops}
    return grads.get("h"), grads.get("w"), grads.get("bias"), grads.get("labels"), None, d_ops


def _all_grads(h, w, bias, labels, ids, ops, kinds, bn, cc, inv, want, rows_ct=None):
    kind = dict(kinds)
    sweep_want = tuple(n for n in want if ids is None or n != "labels")
    value, grads = sweep(h, w, bias, labels, ids, ops, kind, bn, cc, inv, sweep_want, rows_ct)
    if ids is not None and "labels" in want:
        grads["labels"] = values_grad(h, w, bias, labels, ids, ops, kind, inv, rows_ct)
    return value, grads


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8, 9))
def _head_sum(h, w, bias, labels, ids, ops, kinds, bn, cc, count):
    inv = None if count is None else 1 / count
    total = sweep(h, w, bias, labels, ids, ops, dict(kinds), bn, cc, inv, ())[0]
    return total if count is None else total / jnp.asarray(count, h.dtype)


def _head_sum_fwd(h, w, bias, labels, ids, ops, kinds, bn, cc, count):
    # symbolic_zeros: form only the gradients somebody asked for (above all, the dense labels'
    # one is [batch, classes]). The loss is a scalar, so the gradients for a unit cotangent are
    # the residuals and the backward pass only scales them.
    want = _wanted(_primals(h, w, bias, labels, ops))
    h, w, bias, labels, ids, ops = _values(h, w, bias, labels, ids, ops)
    inv = None if count is None else 1 / count
    total, grads = _all_grads(h, w, bias, labels, ids, ops, kinds, bn, cc, inv, want)
    value = total if count is None else total / jnp.asarray(count, total.dtype)
    return value, (grads, {k: None for k in ops})


def _head_sum_bwd(kinds, bn, cc, count, res, g):
    grads, ops = res
    if isinstance(g, jax.custom_derivatives.SymbolicZero):
        return None, None, None, None, None, ops
    scaled = {}
    for name, d in grads.items():
        gd = jnp.asarray(g).astype(d.dtype)  # a Python scalar under jax.checkpoint.
        # Losses and label gradients are infinite at infinite logits: a zero cotangent gives 0.
        scaled[name] = gd * d if name in ("h", "w", "bias") else absorbing_mul(gd, d)
    return _cotangents(scaled, ops)


_head_sum.defvjp(_head_sum_fwd, _head_sum_bwd, symbolic_zeros=True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8))
def _head_rows(h, w, bias, labels, ids, ops, kinds, bn, cc):
    return sweep(h, w, bias, labels, ids, ops, dict(kinds), bn, cc, None, (), per_row=True)[0]


def _head_rows_fwd(h, w, bias, labels, ids, ops, kinds, bn, cc):
    want = {name: None for name in _wanted(_primals(h, w, bias, labels, ops))}
    h, w, bias, labels, ids, ops = _values(h, w, bias, labels, ids, ops)
    rows = sweep(h, w, bias, labels, ids, ops, dict(kinds), bn, cc, None, (), per_row=True)[0]
    return rows, ((h, w, bias, labels, ids), ops, want)


def _head_rows_bwd(kinds, bn, cc, res, g):
    (h, w, bias, labels, ids), ops, want = res
    if isinstance(g, jax.custom_derivatives.SymbolicZero):
        return None, None, None, None, None, {k: None for k in ops}
    g = jnp.asarray(g).astype(h.dtype)
    want = tuple(want)
    _, grads = _all_grads(h, w, bias, labels, ids, ops, kinds, bn, cc, None, want, rows_ct=g)
    return _cotangents(grads, ops)


_head_rows.defvjp(_head_rows_fwd, _head_rows_bwd, symbolic_zeros=True)


# --------------------------------------------------------------------------------------------
# The jitted body: grid operands at their own size, masking first, then the sweep and the
# reduction's formulas (those of `reduce_loss`).


class _Config(NamedTuple):
    batch_shape: tuple[int, ...]
    bn: int
    cc: int
    red: Reduction
    names: tuple  # the axes the elements are split over (summed)
    class_axes: tuple  # those that split the classes (ids' offsets, "none")
    classes: int  # the global number of classes
    elements: int | None  # the static element count of the plain mean
    cd: Any
    out_dtype: Any


def _first_largest(idx: Array, listed: Array, values: Array) -> Array:
    """Of the entries of a row listing the same class, the one with the largest value (the first
    on a tie; a NaN counts as largest, so that it propagates)."""
    key = jnp.where(jnp.isnan(values), jnp.asarray(jnp.inf, values.dtype), values)
    same = (idx[:, :, None] == idx[:, None, :]) & listed[:, None, :]
    k = jnp.arange(idx.shape[1])
    earlier = k[None, :, None] > k[None, None, :]
    beaten = (key[:, None, :] > key[:, :, None]) | ((key[:, None, :] == key[:, :, None]) & earlier)
    return listed & ~jnp.any(same & beaten, axis=2)


def _class_ids(ids, values, mask, mask_kind, c, cfg):
    """This device's local class index of each listed class (-1: padding, a duplicate, another
    device's class), its value (masked values hidden first) and whether any id is >= C."""
    n = math.prod(cfg.batch_shape)
    ids = ids.reshape(n, -1)
    k = ids.shape[1]
    values = jnp.ones((n, k), cfg.cd) if values is None else values
    values = jnp.broadcast_to(values, (*cfg.batch_shape, k)).reshape(n, k)
    offset = axes_index(cfg.class_axes) * c if cfg.class_axes else 0
    local = ids - jnp.asarray(offset).astype(ids.dtype)
    listed = (ids >= 0) & (ids < cfg.classes) & (local >= 0) & (local < c)
    local = jnp.where(listed, local, 0).astype(jnp.int32)
    if mask is not None:
        listed = listed & gather_at(mask, mask_kind, local)
    values = hide(listed, values).astype(cfg.cd)
    first = _first_largest(local, listed, values)
    out_of_range = jnp.any(ids >= cfg.classes)
    return jnp.where(first, local, -1), hide(first, values), out_of_range


@functools.partial(jax.jit, static_argnames="cfg")
def _head(h, w, labels, ids, values, bias, weights, mask, pos_weight, smoothing, *, cfg):
    cd, red = cfg.cd, cfg.red
    n, c = math.prod(cfg.batch_shape), w.shape[0]
    grid = (n, c)
    h = h.reshape(n, h.shape[-1]).astype(cd)
    w = w.astype(cd)
    ops: dict[str, Array | None] = {}
    kinds: dict[str, str] = {}
    m = None
    if mask is not None:
        m, kinds["mask"] = grid_operand(mask, cfg.batch_shape, c)
    ops["mask"] = m
    # Every operand is masked before anything else reads it (a NaN of an absent element must
    # reach nothing), then cast.
    for name, x in (("weights", weights), ("pos_weight", pos_weight), ("smoothing", smoothing)):
        if x is not None:
            x, kinds[name] = grid_operand(x, cfg.batch_shape, c)
            ops[name] = hide_absent(x, kinds[name], m, grid).astype(cd)
    bias = jnp.zeros((1, c), cd) if bias is None else bias.reshape(1, c)
    bias = hide_absent(bias, COL, m, grid).reshape(c).astype(cd)
    out_of_range = None
    if ids is None:
        z, rel = labels.reshape(grid), None
    else:
        rel, z, out_of_range = _class_ids(ids, values, m, kinds.get("mask"), c, cfg)
    axes = union_varying_axes(h, w, bias, z, rel, ops)
    # Replicated parameters inside shard_map vary like the data, so that the transposes of the
    # casts sum the per-device gradients of the custom rule.
    h, w, bias = pcast_varying((h, w, bias), axes)
    ops = {k: v if k == "mask" or v is None else pcast_varying(v, axes) for k, v in ops.items()}
    if jnp.issubdtype(z.dtype, jnp.floating):
        z = pcast_varying(z, axes)
    static_kinds = tuple(sorted(kinds.items()))
    if red is Reduction.NONE:
        out = _head_rows(h, w, bias, z, rel, ops, static_kinds, cfg.bn, cfg.cc)
        if cfg.class_axes:
            out = psum_over(out, cfg.class_axes)
        out = out.reshape(cfg.batch_shape)
    else:
        out = _head_sum(h, w, bias, z, rel, ops, static_kinds, cfg.bn, cfg.cc, cfg.elements)
        if cfg.names:  # the psum stays outside the custom VJP: its transpose hands each
            out = psum_over(out, cfg.names)  # device its part.
        if cfg.elements is None and red is not Reduction.SUM:
            den = _denominator(red, ops, kinds, grid, cd)
            out = safe_divide(out, psum_over(den, cfg.names) if cfg.names else den)
    if out_of_range is not None:
        if cfg.names:
            out_of_range = psum_over(out_of_range.astype(cd), cfg.names) > 0
        # An id >= C under jit: every entry of the result (and its gradients) is NaN.
        out = out * jnp.where(out_of_range, jnp.asarray(jnp.nan, cd), jnp.ones((), cd))
    return out.astype(cfg.out_dtype)


def _denominator(red: Reduction, ops: dict, kinds: dict, grid: tuple[int, int], cd: Any) -> Array:
    """The local denominator of ``reduce_loss``'s formula for ``red`` over the kept elements."""
    factors = []
    if ops.get("mask") is not None:
        factors.append((ops["mask"].astype(cd), kinds["mask"]))
    weights = ops.get("weights")
    if weights is not None and red is Reduction.MEAN:
        factors.append((weights, kinds["weights"]))
    elif weights is not None and red is Reduction.SUM_BY_NONZERO_WEIGHTS:
        factors.append(((weights != 0).astype(cd), kinds["weights"]))
    if not factors:
        return jnp.asarray(grid[0] * grid[1], cd)
    return grid_sum(factors, grid)


# --------------------------------------------------------------------------------------------
# Public API.


def linear_sigmoid_cross_entropy(
    h: ArrayLike,
    w: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    label_ids: ArrayLike | None = None,
    label_values: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    label_smoothing: ArrayLike = 0.0,
    reduction: str | Reduction | None = Reduction.SUM_OVER_BATCH_SIZE,
    chunk_size: int | tuple[int, int] | None = None,
    axis_name: AxisName | None = None,
) -> Array:
    r"""Sigmoid cross-entropy of a linear layer's logits, reduced without materialising them.

    With logits :math:`x = h W^\top + \beta`, labels smoothed to :math:`z (1 - s) + s / 2` and
    :math:`p` the ``pos_weight``, each of the ``[..., C]`` elements has the loss

    .. math::

        \ell(z, x) = p \, z \log(1 + e^{-x}) + (1 - z) \log(1 + e^{x})

    and the result is ``reduce_loss(loss, weights, reduction, where=where)`` (``"none"``: each
    row's sum over classes). The logits exist one tile at a time, in the forward pass and in
    ``value_and_grad`` (which forms each tile once: three matrix products). Labels are dense, or
    ``label_ids``: the classes of each row whose label is ``label_values``, all others 0, never
    formed as ``[..., C]``. Computed in float32 at least, returned in ``h``'s and ``w``'s dtype.
    Custom VJP: gradients to every float input; ``jax.hessian`` works, ``jax.jvp`` does not.

    Inside ``jax.shard_map``, ``axis_name`` names the mesh axes the elements are split over:
    rows (``h``, labels and per-row arrays split alike), classes (``w``, ``bias``, the labels'
    last axis and per-class arrays split alike; ``label_ids`` stay global) or both. The result
    is global (``"none"``: this device's rows). A device's first class comes from the axes ``w``
    varies over, which JAX records under ``check_vma=True`` (the default): with
    ``check_vma=False``, ``label_ids`` and ``"none"`` under ``axis_name`` are refused.

    Args:
      h: Features ``[..., H]``.
      w: Class weights ``[C, H]`` (a ``Dense`` kernel transposed).
      labels: Dense targets ``[..., C]`` (float, int or bool), or None with ``label_ids``.
      label_ids: Integer ``[..., K]`` classes per row; ids < 0 are padding, a class listed
        twice counts once with its larger value (the first of equal ones gets the gradient).
      label_values: ``[..., K]`` labels of ``label_ids``' classes (default 1).
      bias: Optional ``[C]`` class bias.
      weights: Broadcastable to ``[..., C]``: per row ``[..., 1]``, class ``[C]`` or element.
      where: Bool, broadcastable likewise; a False element is absent: no share in any sum or
        count, zero gradients, even where its labels or weights are NaN.
      pos_weight: Scalar or ``[C]`` weight of the positive term.
      label_smoothing: In [0, 1] (a traced value is used as given).
      reduction: A :class:`Reduction` name but ``mean_with_sample_weight``.
      chunk_size: Classes per tile, or ``(rows, classes)`` (None: about ``2**22`` logits).
      axis_name: The ``shard_map`` axis name(s) the elements are split over.

    Returns:
      A scalar, or for ``"none"`` the per-row loss of shape ``h.shape[:-1]``.

    Raises:
      TypeError: non-float ``h``/``w``, non-integer ``label_ids``, complex or non-bool inputs.
      ValueError: disagreeing shapes (both named), both or none of ``labels``/``label_ids``, an
        id >= C (under ``jit``: NaN for every entry), a bad option, an unbound ``axis_name``.

    Examples:
      >>> import jax.numpy as jnp
      >>> import sigmoid_xent as sx
      >>> h = jnp.array([[1., 2.], [0., -1.], [3., 0.5]])
      >>> w = jnp.array([[0.5, -0.5], [1., 0.], [0., 1.], [-1., 1.], [2., 0.]])
      >>> labels = jnp.array([[1, 0, 1, 0, 1], [0, 0, 1, 1, 0], [1, 1, 0, 0, 1]])
      >>> sx.linear_sigmoid_cross_entropy(h, w, labels, chunk_size=2)
      Array(0.6798207, dtype=float32)
      >>> ids = jnp.array([[0, 2, 4], [3, 2, -1], [1, 0, 4]])  # the same labels
      >>> sx.linear_sigmoid_cross_entropy(h, w, label_ids=ids, chunk_size=2)
      Array(0.6798207, dtype=float32)
    """
    fn = "linear_sigmoid_cross_entropy"
    red = Reduction.parse(reduction, fn, accepted=SCALE)
    names = () if axis_name is None else axis_names(axis_name, fn)
    # Inside shard_map the shapes below are this device's shards: say so when they disagree.
    hint = (
        f" (per-device shards inside shard_map over {names}: `h` and the labels must be split "
        "alike over batch rows, `w`, `bias` and the labels' last axis alike over classes)"
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
    num_classes = w_arr.shape[0]
    batch_shape = tuple(h_arr.shape[:-1])
    grid_shape = (*batch_shape, num_classes)
    out_dtype = jnp.promote_types(h_arr.dtype, w_arr.dtype)
    cd = _checks.compute_dtype(out_dtype)
    ids, values = None, None
    if (labels is None) == (label_ids is None):
        raise ValueError(
            f"{fn}: pass exactly one of `labels` (dense [..., C]) and `label_ids` ([..., K] class "
            f"ids), got {'both' if labels is not None else 'neither'}."
        )
    if label_values is not None and label_ids is None:
        raise ValueError(f"{fn}: `label_values` needs `label_ids` (the classes they label).")
    if labels is not None:
        z = _labels(labels, grid_shape, h_arr, w_arr, hint, fn)
    else:
        z = None
        ids = jnp.asarray(label_ids)
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            raise TypeError(
                f"{fn}: `label_ids` must be integer class ids, got {_checks.describe(ids)}."
            )
        if ids.ndim != len(batch_shape) + 1 or tuple(ids.shape[:-1]) != batch_shape:
            raise ValueError(
                f"{fn}: `label_ids` must have shape h.shape[:-1] + (K,) = {batch_shape} + (K,), "
                f"got shape {ids.shape} (`h` {h_arr.shape}){hint}."
            )
        if label_values is not None:
            values = _checks.as_float(label_values, cd, "label_values", fn)
            _checks.broadcastable_to(values, ids.shape, "label_values", fn, target="label_ids")
    bias_arr = None
    if bias is not None:
        bias_arr = _checks.as_float(bias, cd, "bias", fn)
        if tuple(bias_arr.shape) != (num_classes,):
            raise ValueError(
                f"{fn}: `bias` must have shape (C,) = ({num_classes},), got shape "
                f"{bias_arr.shape} (`w` {w_arr.shape}){hint}."
            )
    operands = {}
    for name, value in (("weights", weights), ("pos_weight", pos_weight)):
        if value is not None:
            operands[name] = _checks.as_float(value, cd, name, fn)
            _checks.broadcastable_to(operands[name], grid_shape, name, fn, target="logits")
    mask = _checks.where_mask(where, grid_shape, fn)
    smoothing = _checks.label_smoothing(label_smoothing, grid_shape, cd, fn)
    n = math.prod(batch_shape)
    if n == 0 or num_classes == 0:
        raise ValueError(f"{fn}: empty batch or classes (`h` {h_arr.shape}, `w` {w_arr.shape}).")
    bn, cc = _chunks(chunk_size, n, num_classes, fn)
    devices, class_axes, class_devices = 1, (), 1
    if names:
        devices = bound_axes_size(names, fn)
        if z is not None:
            check_sharded_over(z, names, "labels", fn)
        if ids is not None or red is Reduction.NONE:
            class_axes = _class_axes(names, h_arr, w_arr, fn)
            class_devices = bound_axes_size(class_axes, fn) if class_axes else 1
    classes = num_classes * class_devices
    if ids is not None and not _checks.is_traced(ids) and ids.size:
        top = int(np.max(np.asarray(ids)))
        if top >= classes:
            raise ValueError(
                f"{fn}: `label_ids` must be < C = {classes} (the number of classes), got {top}."
            )
    static = mask is None and (
        red is Reduction.SUM_OVER_BATCH_SIZE
        or (red in (Reduction.MEAN, Reduction.SUM_BY_NONZERO_WEIGHTS) and weights is None)
    )
    cfg = _Config(
        batch_shape=batch_shape,
        bn=bn,
        cc=cc,
        red=red,
        names=names,
        class_axes=class_axes,
        classes=classes,
        elements=n * num_classes * devices if static else None,
        cd=cd,
        out_dtype=out_dtype,
    )
    return _head(
        h_arr,
        w_arr,
        z,
        ids,
        values,
        bias_arr,
        operands.get("weights"),
        mask,
        operands.get("pos_weight"),
        smoothing,
        cfg=cfg,
    )


def _labels(labels: Any, shape: tuple, h: Array, w: Array, hint: str, fn: str) -> Array:
    dtype = jnp.result_type(labels)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(f"{fn}: `labels` must be real (float, int or bool), got dtype {dtype}.")
    z = labels if isinstance(labels, jax.Array) else jnp.asarray(labels)
    if tuple(z.shape) != shape:
        raise ValueError(
            f"{fn}: `labels` must have shape h.shape[:-1] + (C,) = {shape}, got `labels` of "
            f"shape {z.shape} (`h` {h.shape}, `w` {w.shape}){hint}."
        )
    return z


def _class_axes(names: tuple, h: Array, w: Array, fn: str) -> tuple:
    split = split_axes(names, h, w)
    if split is None:
        raise ValueError(
            f"{fn}: with `label_ids` or reduction='none' under `axis_name` {names}, each "
            "device's classes are located from the mesh axes that split `w`, which JAX records "
            "only inside jax.shard_map(check_vma=True) (the default); here `h` and `w` vary over "
            "none of them (check_vma=False, or both replicated). Use check_vma=True, or dense "
            "`labels` with a scalar reduction."
        )
    rows, classes = split
    both = set(rows) & set(classes)
    if both:
        raise ValueError(
            f"{fn}: `h` and `w` are both split over mesh axes {sorted(both, key=str)}: each "
            "device would see only its own rows of its own classes."
        )
    return classes
