"""Global reductions inside ``jax.shard_map``, and the chunk loops of the scale losses.

Under sharded ``jit`` every loss and :func:`~sigmoid_xent.reduce_loss` is already global: XLA
inserts the collectives. Inside ``jax.shard_map`` each device sees only its shard, so a reduction
such as ``sum(w * l) / count(w != 0)`` computed locally is the ratio of one shard's sums, not the
global one. The helpers here sum numerators and denominators separately with ``lax.psum`` (the only
correct way: the mean of per-shard means is wrong as soon as shards hold different weight sums),
and give the single-device result on the gathered arrays.

- :func:`reduce_loss_sharded`: every :class:`~sigmoid_xent.Reduction` of ``reduce_loss``.
- :func:`reduce_ranking_loss_sharded`: TF-Ranking's reductions of per-item losses when every list
  lives on one shard (a batch-sharded dense ``[batch, list_size]`` array, or packed items whose
  segment ids are local to their shard).

Both work with ``check_vma`` True (the default) and False.

The other functions here (``scan_chunks``, ``pcast_varying``, ``varying_axes``...) are internal:
the chunk loop and varying-type bookkeeping shared by :mod:`sigmoid_xent.contrastive` and
:mod:`sigmoid_xent.fused`; they are not in ``__all__``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from sigmoid_xent import _checks
from sigmoid_xent.ranking import (  # the one copy of TF-Ranking's weight rules and reductions
    REDUCTIONS,
    _item_weights,
)
from sigmoid_xent.reductions import Reduction, canonical_name, reduce_loss, safe_divide

Array = jax.Array
AxisName = Hashable | Sequence[Hashable]
Carry = TypeVar("Carry")

__all__ = ["reduce_loss_sharded", "reduce_ranking_loss_sharded"]


# --------------------------------------------------------------------------------------------
# Varying-manual-axes (vma) helpers and the chunk loop shared by the contrastive and fused losses.


def varying_axes(x: Any) -> frozenset:
    """The shard_map axes ``x`` varies over (empty outside shard_map or with check_vma=False)."""
    try:
        return frozenset(jax.typeof(x).mat.varying)
    except AttributeError:
        return frozenset()


def union_varying_axes(*xs: Any) -> frozenset:
    """Union of :func:`varying_axes` over the leaves of ``xs`` (None leaves ignored)."""
    axes: frozenset = frozenset()
    for leaf in jax.tree_util.tree_leaves(xs):
        axes = axes | varying_axes(leaf)
    return axes


def pcast_varying(x: Any, axes: frozenset) -> Any:
    """Marks every leaf of ``x`` as varying over ``axes`` (``lax.pcast`` refuses a repeat)."""

    def cast(leaf: Array) -> Array:
        missing = tuple(sorted(set(axes) - varying_axes(leaf), key=str))
        return lax.pcast(leaf, missing, to="varying") if missing else leaf

    return jax.tree_util.tree_map(cast, x)


def scan_chunks(
    body: Callable[[Carry, Any, int, Array | None], Carry],
    carry: Carry,
    n: int,
    size: int,
    axes: frozenset = frozenset(),
) -> Carry:
    """``carry = body(carry, start, size, fresh)`` over ``[0, n)`` in chunks of ``size``.

    One ``lax.scan`` over ``ceil(n / size)`` chunks of one static size, so the body is compiled
    once. When ``n`` is not a multiple of ``size``, the last chunk is shifted back to end at
    ``n`` and overlaps its predecessor; ``fresh`` is then a bool ``[size]`` vector, False on the
    overlapped rows, which the body must leave out (weight 0), and None when every chunk is
    whole. ``start`` is int32 (also with x64). Carries are cast to vary over ``axes`` so a carry
    that starts as ``jnp.zeros`` keeps one type under ``shard_map(check_vma=True)``.
    """
    size = min(size, n)
    count = -(-n // size)
    ragged = n % size != 0

    def run(c: Carry, i: Any) -> Carry:
        first = i * size
        if not ragged:
            return pcast_varying(body(c, first, size, None), axes)
        start = jnp.minimum(first, n - size)
        fresh = start + lax.iota(jnp.int32, size) >= first
        return pcast_varying(body(c, start, size, fresh), axes)

    carry = pcast_varying(carry, axes)
    if count == 1:
        return run(carry, np.int32(0))
    carry, _ = lax.scan(lambda c, i: (run(c, i), None), carry, jnp.arange(count, dtype=jnp.int32))
    return carry


def check_chunk_size(value: Any, name: str, fn: str) -> int | None:
    """A positive Python int (or None); TypeError/ValueError naming ``name`` otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{fn}: `{name}` must be a positive int or None, got {value!r}.")
    if value < 1:
        raise ValueError(f"{fn}: `{name}` must be a positive int or None, got {value}.")
    return int(value)


# --------------------------------------------------------------------------------------------
# Global reductions.


def _axis_tuple(axis_name: AxisName, fn: str) -> tuple:
    if axis_name is None:
        raise ValueError(
            f"{fn}: `axis_name` must name the shard_map axes the losses are sharded over, got None."
        )
    names = tuple(axis_name) if isinstance(axis_name, (tuple, list)) else (axis_name,)
    if not names:
        raise ValueError(f"{fn}: `axis_name` must name at least one shard_map axis, got ().")
    return names


def _axes_size(names: tuple) -> int:
    size = 1
    for name in names:
        size *= lax.axis_size(name)
    return size


def _check_sharded_over(x: Array, names: tuple, what: str, fn: str) -> None:
    # With check_vma=True the varying axes are known: summing a value that is replicated over an
    # axis would count it once per device, a silent wrong number.
    vary = varying_axes(x)
    missing = [n for n in names if n not in vary]
    if vary and missing:
        raise ValueError(
            f"{fn}: `{what}` is replicated over shard_map axes {missing} (it varies only over "
            f"{sorted(vary, key=str)}), but `axis_name` {names} asks to sum over them. Pass only "
            "the axes the losses are sharded over."
        )


def _psum(x: Array, names: tuple) -> Array:
    # psum needs a value varying over every summed axis under check_vma=True.
    return lax.psum(pcast_varying(x, frozenset(names)), names)


def reduce_loss_sharded(
    losses: ArrayLike,
    weights: ArrayLike | None = None,
    reduction: str | Reduction | None = Reduction.SUM_BY_NONZERO_WEIGHTS,
    *,
    axis_name: AxisName,
    weights_axis_name: AxisName | None = None,
) -> Array:
    r""":func:`~sigmoid_xent.reduce_loss` of a loss tensor sharded over ``shard_map`` axes.

    Called inside ``jax.shard_map`` on each device's shard of the losses (and of the weights),
    it returns the reduction of the *global* arrays, replicated on every device:

    .. math::

        \mathrm{mean} = \frac{\mathrm{psum}\big(\sum w \ell\big)}{\mathrm{psum}\big(\sum w\big)},
        \quad
        \mathrm{sum\_by\_nonzero\_weights} = \frac{\mathrm{psum}\big(\sum w \ell\big)}
        {\mathrm{psum}\big(\#\{w \ne 0\}\big)},
        \quad
        \mathrm{sum\_over\_batch\_size} = \frac{\mathrm{psum}\big(\sum w \ell\big)}
        {\mathrm{size}(\ell_{\mathrm{local}}) \cdot \prod_a |a|}

    Numerators and denominators are summed separately (the mean of per-shard means is wrong
    whenever shards differ in weight). ``none`` returns the local ``losses * weights`` (no
    communication). Sums accumulate in at least float32; 0 when a denominator is 0, as
    ``reduce_loss``. Works with ``check_vma`` True and False, and under ``grad``.

    Args:
      losses: This device's shard of the loss tensor.
      weights: None, or this device's shard of the weights, broadcastable to ``losses``' shape
        (a scalar or ``[batch, 1]`` per-sample weights are fine).
      reduction: A :class:`~sigmoid_xent.Reduction` or its name (any case, TF/Keras aliases).
      axis_name: The shard_map axis name, or a tuple of names, the losses are sharded over
        (``("data", "model")`` for a batch x class sharded ``[batch, classes]`` loss).
      weights_axis_name: Only for ``mean_with_sample_weight``, whose denominator sums the weights
        as given: the axes the given weights are sharded over. Default: inferred under
        ``check_vma=True``; with ``check_vma=False`` rank-0 weights are taken as replicated and
        others as sharded over ``axis_name``.

    Returns:
      The global reduction (a scalar, identical on every device), or for ``none`` the local
      weighted losses.

    Raises:
      ValueError: ``weights`` not broadcastable to ``losses``, an unknown reduction, a missing
        ``axis_name``, or (under ``check_vma=True``) losses replicated over a summed axis.
      TypeError: integer ``losses``.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from jax.sharding import Mesh, PartitionSpec as P
      >>> import sigmoid_xent as sx
      >>> mesh = Mesh(np.array(jax.devices()), ("batch",))
      >>> losses = jnp.arange(8.0).reshape(8, 1)
      >>> weights = jnp.array([[1.], [1.], [0.], [0.], [1.], [1.], [0.], [2.]])
      >>> def local(losses, weights):
      ...     return sx.reduce_loss_sharded(
      ...         losses, weights, "sum_by_nonzero_weights", axis_name="batch")
      >>> f = jax.shard_map(local, mesh=mesh, in_specs=(P("batch"), P("batch")), out_specs=P())
      >>> f(losses, weights)
      Array(4., dtype=float32)
      >>> sx.reduce_loss(losses, weights, "sum_by_nonzero_weights")
      Array(4., dtype=float32)
    """
    fn = "reduce_loss_sharded"
    red = Reduction.parse(reduction)
    names = _axis_tuple(axis_name, fn)
    losses = _checks.as_logits(losses, fn, name="losses")
    if red is Reduction.NONE:
        return reduce_loss(losses, weights, red)
    _check_sharded_over(losses, names, "losses", fn)
    acc = jnp.promote_types(losses.dtype, jnp.float32)
    if weights is None:
        w_given = None
        w = jnp.ones((), acc)
    else:
        w_given = _checks.as_float(weights, acc, "weights", fn)
        _checks.broadcastable_to(w_given, losses.shape, "weights", fn)
        w = w_given.astype(acc)
    total = _psum(jnp.sum(losses.astype(acc) * w), names)
    if red is Reduction.SUM:
        out = total
    elif red is Reduction.MEAN:
        out = safe_divide(total, _psum(jnp.sum(jnp.broadcast_to(w, losses.shape)), names))
    elif red is Reduction.SUM_OVER_BATCH_SIZE or (
        red is Reduction.MEAN_WITH_SAMPLE_WEIGHT and w_given is None
    ):
        size = int(np.prod(losses.shape, dtype=np.int64)) * _axes_size(names)
        out = safe_divide(total, jnp.asarray(size, acc))
    elif red is Reduction.SUM_BY_NONZERO_WEIGHTS:
        count = jnp.sum(jnp.broadcast_to(w != 0, losses.shape), dtype=acc)
        out = safe_divide(total, _psum(count, names))
    else:  # MEAN_WITH_SAMPLE_WEIGHT: the weights as given, each element counted once.
        if weights_axis_name is not None:
            w_names = _axis_tuple(weights_axis_name, fn)
        elif varying_axes(losses):
            w_names = tuple(n for n in names if n in varying_axes(w_given))
        else:
            w_names = names if w_given is not None and w_given.ndim else ()
        den = jnp.sum(w)
        out = safe_divide(total, _psum(den, w_names) if w_names else den)
    return out.astype(losses.dtype)


def reduce_ranking_loss_sharded(
    losses: ArrayLike,
    labels: ArrayLike,
    *,
    axis_name: AxisName,
    segment_ids: ArrayLike | None = None,
    num_segments: int | None = None,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: str | None = "auto",
) -> Array:
    r"""TF-Ranking's reductions of per-item losses whose lists each live on one shard.

    For lists sharded whole over ``shard_map`` axes: dense ``[batch, list_size]`` arrays sharded
    over the batch, or packed items with ``segment_ids`` local to their shard (segment ``s`` on
    device ``k`` is global list ``k * num_segments + s``). Items with label ``< 0`` or ``where``
    False are padding (weight 0; a NaN label is not padding). With :math:`v` the valid items and
    :math:`w` the per-item weights, summed over every shard:

    .. math::

        \mathrm{mean} = \frac{\sum_v w \ell}{\sum_v w}, \quad
        \mathrm{sum\_by\_nonzero\_weights} = \frac{\sum_v w \ell}{\#\{v: w \ne 0\}}, \quad
        \mathrm{sum\_over\_batch\_size} = \frac{\sum_v w \ell}{L \cdot S}

    where ``L`` is the global number of lists and ``S`` the list size: ``list_size`` for dense
    arrays, and for packed items the longest list over all shards (``lax.pmax``), counting every
    item of the list, padding included, and empty segments as lists, exactly as
    ``sigmoid_xent.ranking`` on the gathered arrays. ``list_mean`` averages the per-list weighted
    means over lists with a non-zero weight sum on every shard; ``per_list`` (a local
    ``[num_segments]`` or ``[batch]`` vector) and ``none`` (local per-item ``w * l``, 0 at padding)
    need no communication. ``sum`` is the global weighted sum.

    Args:
      losses: Per-item losses on this device, labels' shape, e.g.
        ``sx.sigmoid_cross_entropy_with_logits(labels, logits)``; values at padding are ignored
        (replaced by 0).
      labels: Per-item labels on this device; ``< 0`` marks padding.
      axis_name: The shard_map axis name (or tuple of names) the lists are sharded over.
      segment_ids: Packed layout: integer list id of each item, in ``[0, num_segments)`` on this
        device (out-of-range items are dropped). None for the dense layout.
      num_segments: Packed layout: the static number of lists on each device.
      weights: None, a scalar, per item (labels' shape), or per list (packed ``[num_segments]``,
        dense ``[batch]`` or ``[batch, 1]``).
      where: Optional bool mask of labels' shape; False items are padding.
      reduction: ``auto`` (= ``sum_over_batch_size``), ``sum``, ``mean``,
        ``sum_by_nonzero_weights``, ``list_mean``, ``per_list`` or ``none`` (any case).

    Returns:
      A scalar identical on every device, or the local vector/array for ``per_list``/``none``.

    Raises:
      ValueError: mismatched shapes, bad ``weights`` shape, an unknown reduction, a missing or
        traced ``num_segments`` with ``segment_ids``, or non-integer ``segment_ids``.
      TypeError: integer ``losses``.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from jax.sharding import Mesh, PartitionSpec as P
      >>> import sigmoid_xent as sx
      >>> mesh = Mesh(np.array(jax.devices()), ("batch",))
      >>> labels = jnp.array([[1., 0., -1.], [0., 1., 1.]] * 4)
      >>> logits = jnp.zeros((8, 3))
      >>> def local(labels, logits):
      ...     losses = sx.sigmoid_cross_entropy_with_logits(jnp.maximum(labels, 0), logits)
      ...     return sx.sharding.reduce_ranking_loss_sharded(
      ...         losses, labels, axis_name="batch", reduction="auto")
      >>> jax.shard_map(local, mesh=mesh, in_specs=P("batch"), out_specs=P())(labels, logits)
      Array(0.5776227, dtype=float32)
    """
    fn = "reduce_ranking_loss_sharded"
    red = canonical_name(reduction, REDUCTIONS, fn)
    names = _axis_tuple(axis_name, fn)
    losses = _checks.as_logits(losses, fn, name="losses")
    _checks.not_none(labels, "labels", fn)
    labels = jnp.asarray(labels)
    _checks.same_shape(labels, losses, fn, names=("labels", "losses"))
    shape = tuple(losses.shape)
    acc = jnp.promote_types(losses.dtype, jnp.float32)
    seg = None
    num_seg = 0  # static lists per device (packed layout)
    if segment_ids is not None:
        seg = jnp.asarray(segment_ids)
        if not jnp.issubdtype(seg.dtype, jnp.integer):
            raise ValueError(f"{fn}: `segment_ids` must be integers, got dtype {seg.dtype}.")
        _checks.same_shape(seg, losses, fn, names=("segment_ids", "losses"))
        if num_segments is None or not isinstance(num_segments, (int, np.integer)):
            raise ValueError(
                f"{fn}: packed items need a static Python int `num_segments`, got {num_segments!r}."
            )
        num_seg = int(num_segments)
        if losses.ndim != 1:
            raise ValueError(
                f"{fn}: packed `losses` must be 1-D (vmap over rows), got shape {shape}."
            )
    elif losses.ndim != 2:
        raise ValueError(f"{fn}: dense `losses` must be [batch, list_size], got shape {shape}.")

    valid = ~(labels < 0)
    if where is not None:
        where = jnp.asarray(where)
        _checks.same_shape(where, losses, fn, names=("where", "losses"))
        valid = valid & where.astype(bool)
    if seg is not None:
        valid = valid & (seg >= 0) & (seg < num_seg)
    w = jnp.where(valid, _item_weights(weights, shape, seg, num_seg, acc, fn), 0)
    wl = jnp.where(valid, losses.astype(acc), 0) * w
    if red == "none":
        return wl.astype(losses.dtype)

    if seg is not None:
        safe_seg = jnp.where(valid, seg, num_seg)  # dropped items go to an extra bucket.

        def per_segment(x: Array) -> Array:
            return jax.ops.segment_sum(x, safe_seg, num_seg + 1)[:num_seg]

        list_loss, list_weight = per_segment(wl), per_segment(w)
    else:
        list_loss, list_weight = jnp.sum(wl, axis=1), jnp.sum(w, axis=1)
    if red == "per_list":
        return safe_divide(list_loss, list_weight).astype(losses.dtype)

    _check_sharded_over(losses, names, "losses", fn)
    total = _psum(jnp.sum(wl), names)
    if red == "sum":
        out = total
    elif red == "mean":
        out = safe_divide(total, _psum(jnp.sum(w), names))
    elif red == "sum_by_nonzero_weights":
        out = safe_divide(total, _psum(jnp.sum(valid & (w != 0), dtype=acc), names))
    elif red == "list_mean":
        has_weight = list_weight != 0
        means = jnp.where(has_weight, safe_divide(list_loss, list_weight), 0)
        out = safe_divide(
            _psum(jnp.sum(means), names), _psum(jnp.sum(has_weight, dtype=acc), names)
        )
    else:  # sum_over_batch_size: TF-Ranking's slots, num_lists x list_size, over all shards.
        if seg is not None:
            in_range = (seg >= 0) & (seg < num_seg)
            lengths = jax.ops.segment_sum(
                in_range.astype(jnp.int32), jnp.where(in_range, seg, num_seg), num_seg + 1
            )[:num_seg]
            longest = lax.pmax(pcast_varying(jnp.max(lengths, initial=0), frozenset(names)), names)
            slots = longest.astype(acc) * (num_seg * _axes_size(names))
        else:
            slots = jnp.asarray(shape[0] * shape[1] * _axes_size(names), acc)
        out = safe_divide(total, slots)
    return out.astype(losses.dtype)
