"""The tiles of :func:`sigmoid_xent.linear_sigmoid_cross_entropy`: one sweep over the grid.

The ``[rows, classes]`` grid of a linear head is walked one tile at a time (classes outer, rows
inner, :func:`~sigmoid_xent._chunks.scan_chunks` both ways). Options that broadcast to the grid
keep their own size (:func:`grid_operand`: a scalar, a row ``[N, 1]``, a class ``[1, C]`` or an
element ``[N, C]`` array) and are sliced per tile. Each tile's logits give its loss and, when
asked, its share of every gradient, so a differentiated call forms each tile once.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from sigmoid_xent._chunks import scan_chunks
from sigmoid_xent._core import (
    absorbing_mul,
    bce_parts,
    logits_grad,
    loss_value,
    neg_abs,
    smooth_labels,
)
from sigmoid_xent._mask import hide, keep
from sigmoid_xent._mesh_axes import union_varying_axes

Array = jax.Array

SCALAR, ROW, COL, FULL = "scalar", "row", "col", "full"


# --------------------------------------------------------------------------------------------
# Operands of the grid.


def grid_operand(x: Array, batch_shape: tuple[int, ...], classes: int) -> tuple[Array, str]:
    """``x`` (broadcastable to ``batch_shape + (classes,)``) at its own size, and its kind."""
    shape = (1,) * (len(batch_shape) + 1 - x.ndim) + tuple(x.shape)
    x = x.reshape(shape)
    n = math.prod(batch_shape)
    if all(d == 1 for d in shape[:-1]):
        return (x.reshape(1, 1), SCALAR) if shape[-1] == 1 else (x.reshape(1, classes), COL)
    if shape[-1] == 1:
        return jnp.broadcast_to(x, (*batch_shape, 1)).reshape(n, 1), ROW
    return jnp.broadcast_to(x, (*batch_shape, classes)).reshape(n, classes), FULL


def present_at(mask: Array | None, kind: str, shape: tuple[int, int]) -> Array | None:
    """Where an operand of ``kind`` (of grid ``shape``) covers a kept element: its values
    elsewhere are hidden before they are used, so that a NaN there reaches nothing."""
    if mask is None:
        return None
    if kind == FULL:
        return jnp.broadcast_to(mask, shape)
    if kind == ROW:
        return jnp.any(mask, axis=1, keepdims=True)
    if kind == COL:
        return jnp.any(mask, axis=0, keepdims=True)
    return jnp.any(mask).reshape(1, 1)


def hide_absent(x: Array, kind: str, mask: Array | None, shape: tuple[int, int]) -> Array:
    present = present_at(mask, kind, shape)
    return x if present is None else hide(jnp.broadcast_to(present, x.shape), x)


def gather_at(x: Array, kind: str, idx: Array) -> Array:
    """``x`` at the ``[N, K]`` grid columns ``idx`` of each row (``idx`` within range)."""
    if kind == SCALAR:
        return jnp.broadcast_to(x, idx.shape)
    if kind == ROW:
        return jnp.broadcast_to(x, idx.shape)
    if kind == COL:
        return x[0][idx]
    return jnp.take_along_axis(x, idx, axis=1)


def grid_sum(factors: list[tuple[Array, str]], shape: tuple[int, int]) -> Array:
    """The sum over the grid of the product of the factors, each summed at its own size where
    none is per element (a per-row times a per-class array is the product of their sums)."""
    n, c = shape
    if any(kind == FULL for _, kind in factors):
        total = jnp.ones(shape, factors[0][0].dtype)
        for x, _ in factors:
            total = total * x
        return jnp.sum(total)
    out = jnp.asarray(1, factors[0][0].dtype)
    rows = [x for x, kind in factors if kind == ROW]
    cols = [x for x, kind in factors if kind == COL]
    for x, kind in factors:
        if kind == SCALAR:
            out = out * x.reshape(())
    out = out * (_prod_sum(rows) if rows else n) * (_prod_sum(cols) if cols else c)
    return out


def _prod_sum(xs: list[Array]) -> Array:
    p = xs[0]
    for x in xs[1:]:
        p = p * x
    return jnp.sum(p)


def _tile(x: Array | None, kind: str | None, r0: Any, rows: int, c0: Any, cols: int) -> Any:
    if x is None or kind == SCALAR:
        return x
    if kind == ROW:
        return lax.dynamic_slice_in_dim(x, r0, rows, 0)
    if kind == COL:
        return lax.dynamic_slice_in_dim(x, c0, cols, 1)
    return lax.dynamic_slice(x, (r0, c0), (rows, cols))


def _add_slice(acc: Array, start: Any, value: Array, axis: int = 0) -> Array:
    old = lax.dynamic_slice_in_dim(acc, start, value.shape[axis], axis)
    return lax.dynamic_update_slice_in_dim(acc, old + value, start, axis)


def _reduce_to(acc: Array, kind: str, g: Array, fresh: Array | None, r0: Any, c0: Any) -> Array:
    """Adds the tile's elementwise gradient ``g`` to an operand's gradient of ``kind``.

    A per-element gradient is written (overlapping tiles write equal values); the others are
    sums, which leave out the elements an earlier tile covered."""
    if kind == FULL:
        return lax.dynamic_update_slice(acc, g, (r0, c0))
    if fresh is not None:
        g = jnp.where(fresh, g, jnp.zeros_like(g))
    if kind == ROW:
        return _add_slice(acc, r0, jnp.sum(g, axis=1, keepdims=True))
    if kind == COL:
        return _add_slice(acc, c0, jnp.sum(g, axis=0, keepdims=True), axis=1)
    return acc + jnp.sum(g).reshape(1, 1)


# --------------------------------------------------------------------------------------------
# The weighted logistic loss ``pos * softplus(-x) + neg * softplus(x)`` (TF's weighted loss with
# ``pos = pos_weight * z``, ``neg = 1 - z``), with the core's pieces: one ``exp(-|x|)``, no
# ``0 * inf`` at infinite logits, and no ``1 - sigmoid`` cancellation in the gradient.


def weighted_value(x: Array, pos: Array, neg: Array) -> Array:
    """``coef |x| + (pos + neg) log1p(e)`` from the core's :func:`bce_parts`, guarded as its
    ``loss_value`` (``coef`` the weight on the saturating side)."""
    parts = bce_parts(x, pos)
    log_term = (pos + neg) * parts.log1p_e
    coef = jnp.where(x >= 0, neg, pos)
    absent = (coef == 0) & jnp.isinf(x)
    value = coef * jnp.where(absent, jnp.zeros_like(x), -parts.minus_abs) + log_term
    return jnp.where(absent, log_term, value)


def weighted_grad(x: Array, pos: Array, neg: Array) -> Array:
    """``neg * sigmoid(x) - pos * sigmoid(-x)``, each sigmoid as ``s`` or ``1 - s`` exactly."""
    e = jnp.exp(neg_abs(x))
    s = e / (1 + e)
    ahead = x >= 0
    return jnp.where(ahead, neg, -pos) + jnp.where(ahead, -1.0, 1.0) * (pos + neg) * s


def label_grad(x: Array, pos_weight: Array | None) -> Array:
    """d loss / d z: ``-x``, or ``pos_weight * softplus(-x) - softplus(x)``."""
    if pos_weight is None:
        return -x
    return weighted_value(x, jnp.broadcast_to(pos_weight, x.shape), -jnp.ones_like(x))


# --------------------------------------------------------------------------------------------
# The sweep.


def _ids_labels(
    rel: Array, values: Array, rows: int, cols: int, dtype: Any, fill: Array | None = None
) -> Array:
    """The tile's labels from the row's class indices (relative to the tile, -1 = none), every
    other class ``fill`` (default 0): each class compared with the tile's columns, so no labels
    outside the tile are ever formed."""
    shape = (rows, cols)
    z = jnp.zeros(shape, dtype) if fill is None else jnp.broadcast_to(fill, shape).astype(dtype)
    iota = lax.broadcasted_iota(jnp.int32, (1, cols), 1)
    for k in range(rel.shape[1]):
        z = jnp.where(rel[:, k : k + 1] == iota, values[:, k : k + 1], z)
    return z


def sweep(
    h: Array,
    w: Array,
    bias: Array,
    labels: Array,
    ids: Array | None,
    ops: dict[str, Array | None],
    kinds: dict[str, str],
    bn: int,
    cc: int,
    inv: float | None,
    want: tuple[str, ...],
    rows_ct: Array | None = None,
    per_row: bool = False,
) -> tuple[Array, dict[str, Array]]:
    """The weighted loss summed over every kept element (or per row), and its gradients.

    ``labels`` are dense ``[N, C]`` when ``ids`` is None, else the ``[N, K]`` values of the
    classes ``ids`` (this device's class indices, -1 for none). ``ops`` holds the grid operands
    ``weights``, ``mask``, ``pos_weight`` and ``smoothing`` (or None), ``kinds`` their kinds.
    ``inv`` (static) scales the gradients; ``rows_ct`` is the cotangent of the per-row sums.
    ``want`` names the gradients to form (the labels' values' one is :func:`values_grad`'s).
    Plain jnp, so the custom rules that call it can be differentiated again.
    """
    cd = h.dtype
    n, c = h.shape[0], w.shape[0]
    weights, mask = ops.get("weights"), ops.get("mask")
    pw, smooth = ops.get("pos_weight"), ops.get("smoothing")
    wk = kinds.get("weights")
    axes = union_varying_axes(h, w, bias, labels, ids, ops, rows_ct)
    carry: dict[str, Any] = {"value": jnp.zeros((n,) if per_row else (), cd)}
    sources = {"h": h, "w": w, "bias": bias, "labels": labels}
    sources.update((k, v) for k, v in ops.items() if v is not None)
    for name in want:
        if name in sources:
            carry[name] = jnp.zeros_like(sources[name])
    products = [name for name in ("h", "w", "bias") if name in want]
    # Per-row (or scalar) smoothing of label ids smooths the K listed values and fills the other
    # classes with s / 2: no elementwise smoothing over the tile.
    row_smoothing = ids is not None and kinds.get("smoothing") in (SCALAR, ROW)

    def body(carry, r0, rows, c0, cols, fresh):
        h_t = lax.dynamic_slice_in_dim(h, r0, rows)
        v_t = lax.dynamic_slice_in_dim(w, c0, cols)  # the tile's class vectors
        b_t = lax.dynamic_slice_in_dim(bias, c0, cols)
        x = lax.dot_general(h_t, v_t, (((1,), (1,)), ((), ()))) + b_t[None, :]
        m_t = _tile(mask, kinds.get("mask"), r0, rows, c0, cols)
        s_t = _tile(smooth, kinds.get("smoothing"), r0, rows, c0, cols)
        if ids is None:
            z = hide(m_t, lax.dynamic_slice(labels, (r0, c0), (rows, cols))).astype(cd)
            zs = smooth_labels(z, s_t, cd)
        else:
            rel = lax.dynamic_slice_in_dim(ids, r0, rows) - c0
            listed = lax.dynamic_slice_in_dim(labels, r0, rows)
            if row_smoothing:  # labels smoothed per row: the listed ones, and all the others
                zs = _ids_labels(rel, smooth_labels(listed, s_t, cd), rows, cols, cd, 0.5 * s_t)
            else:
                zs = smooth_labels(_ids_labels(rel, listed, rows, cols, cd), s_t, cd)
            if "smoothing" in want:
                z = _ids_labels(rel, listed, rows, cols, cd)
        p_t = _tile(pw, kinds.get("pos_weight"), r0, rows, c0, cols)
        if p_t is None:
            loss = loss_value(x, zs)
        else:
            pos, neg = p_t * zs, 1 - zs
            loss = weighted_value(x, pos, neg)
        kept = m_t if fresh is None else (fresh if m_t is None else fresh & m_t)
        lk = keep(kept, loss)
        u_t = _tile(weights, wk, r0, rows, c0, cols)
        out = dict(carry, value=_add_value(carry["value"], lk, u_t, wk, r0, per_row))
        g_t = None if rows_ct is None else lax.dynamic_slice_in_dim(rows_ct, r0, rows)[:, None]
        if products:
            # Per-row factors scale the products' rows, per-class ones their class vectors.
            d = keep(kept, logits_grad(x, zs) if p_t is None else weighted_grad(x, pos, neg))
            if wk in (FULL, SCALAR):
                d = d * u_t
            if inv is not None:
                d = inv * d
            r = g_t if wk != ROW else (u_t if g_t is None else u_t * g_t)
            if r is not None:  # in the loop that forms d: no pass of its own
                d = d * r
            k = u_t[0][:, None] if wk == COL else None
            if "h" in out:
                out["h"] = _add_slice(carry["h"], r0, d @ (v_t if k is None else v_t * k))
            if "w" in out:
                d_w = lax.dot_general(d, h_t, (((0,), (0,)), ((), ())))
                out["w"] = _add_slice(carry["w"], c0, d_w if k is None else d_w * k)
            if "bias" in out:
                d_b = jnp.sum(d, axis=0)
                out["bias"] = _add_slice(carry["bias"], c0, d_b if k is None else d_b * k[:, 0])
        # The rarer gradients, elementwise and masked by `where` (the sums drop overlaps).
        scale = _elementwise_scale(u_t, g_t, inv, cd)
        if "labels" in out:
            d_z = label_grad(x, p_t)
            if s_t is not None:
                d_z = d_z * jnp.broadcast_to(1 - s_t, d_z.shape)
            d_z = keep(m_t, _scaled(scale, d_z)).astype(labels.dtype)
            out["labels"] = lax.dynamic_update_slice(carry["labels"], d_z, (r0, c0))
        if "weights" in out:
            g = keep(m_t, _scaled(_elementwise_scale(None, g_t, inv, cd), loss))
            out["weights"] = _reduce_to(carry["weights"], kinds["weights"], g, fresh, r0, c0)
        if "pos_weight" in out:
            g = keep(m_t, _scaled(_times(scale, zs), loss_value(x, jnp.ones_like(x))))
            pk = kinds["pos_weight"]
            out["pos_weight"] = _reduce_to(carry["pos_weight"], pk, g, fresh, r0, c0)
        if "smoothing" in out:
            g = keep(m_t, _scaled(_times(scale, 0.5 - z), label_grad(x, p_t)))
            sk = kinds["smoothing"]
            out["smoothing"] = _reduce_to(carry["smoothing"], sk, g, fresh, r0, c0)
        return out

    def over_classes(carry, c0, cols, fresh_c):
        def over_rows(carry, r0, rows, fresh_r):
            fresh = None
            if fresh_r is not None:
                fresh = jnp.broadcast_to(fresh_r[:, None], (rows, cols))
            if fresh_c is not None:
                fresh_cols = jnp.broadcast_to(fresh_c[None, :], (rows, cols))
                fresh = fresh_cols if fresh is None else fresh & fresh_cols
            return body(carry, r0, rows, c0, cols, fresh)

        return scan_chunks(over_rows, carry, n, bn, axes)

    out = scan_chunks(over_classes, carry, c, cc, axes)
    return out.pop("value"), out


def _add_value(acc: Array, lk: Array, w_t: Any, wk: str | None, r0: Any, per_row: bool) -> Array:
    """Adds the tile's weighted, kept losses: per row, or to the total. Per-row and per-class
    weights multiply the row or class sums (``0 * inf = 0``: a zero weight drops an infinite
    loss); per-element ones multiply each loss."""
    if wk == ROW:
        rows = absorbing_mul(w_t[:, 0], jnp.sum(lk, axis=1))
    elif wk == COL and not per_row:
        return acc + jnp.sum(absorbing_mul(w_t[0], jnp.sum(lk, axis=0)))
    elif wk is not None:
        rows = jnp.sum(absorbing_mul(w_t, lk), axis=1)
    else:
        rows = jnp.sum(lk, axis=1)
    return _add_slice(acc, r0, rows) if per_row else acc + jnp.sum(rows)


def _elementwise_scale(w_t: Array | None, g_t: Array | None, inv: float | None, cd: Any):
    scale = w_t
    if g_t is not None:
        scale = g_t if scale is None else scale * g_t
    if inv is not None:
        scale = jnp.asarray(inv, cd) if scale is None else scale * inv
    return scale


def _times(scale: Array | None, x: Array) -> Array:
    return x if scale is None else scale * x


def _scaled(scale: Array | None, x: Array) -> Array:
    """``scale * x`` with ``0 * inf = 0`` (``x`` may be infinite at infinite logits)."""
    if scale is None:
        return x
    return absorbing_mul(jnp.broadcast_to(scale, x.shape), x)


def values_grad(
    h: Array,
    w: Array,
    bias: Array,
    values: Array,
    ids: Array,
    ops: dict[str, Array | None],
    kinds: dict[str, str],
    inv: float | None,
    rows_ct: Array | None,
) -> Array:
    """The gradient w.r.t. the ``[N, K]`` label values: d loss / d z at each listed class,
    from that class's logit alone (``[N, K, H]`` gathered rows of ``w``, never the grid)."""
    cd = h.dtype
    present = ids >= 0
    idx = jnp.where(present, ids, 0)
    x = jnp.sum(h[:, None, :] * w[idx], axis=-1) + bias[idx]
    at: dict[str, Array | None] = {}
    for name in ("weights", "mask", "pos_weight", "smoothing"):
        op = ops.get(name)
        at[name] = None if op is None else gather_at(op, kinds[name], idx)
    scale = _elementwise_scale(
        at["weights"], rows_ct[:, None] if rows_ct is not None else None, inv, cd
    )
    if at["smoothing"] is not None:
        scale = _times(scale, 1 - at["smoothing"])
    d = _scaled(scale, label_grad(x, at["pos_weight"]))
    kept = present if at["mask"] is None else present & at["mask"]
    return keep(kept, d).astype(values.dtype)
