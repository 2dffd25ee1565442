"""Global reductions inside ``jax.shard_map``.

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
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from sigmoid_xent import _checks
from sigmoid_xent._lists import check_segment_ids, reduce_lists, sort_into_lists
from sigmoid_xent._mesh_axes import (
    AxisName,
    axes_size,
    axis_names,
    check_sharded_over,
    pcast_varying,
    psum_over,
    varying_axes,
)
from sigmoid_xent.reductions import LISTWISE, Reduction, accumulation_dtype, weighted_reduction

Array = jax.Array

__all__ = ["reduce_loss_sharded", "reduce_ranking_loss_sharded"]


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
    red = Reduction.parse(reduction, fn)
    names = axis_names(axis_name, fn)
    losses = _checks.float_array(losses, fn, name="losses")
    if red is Reduction.NONE:
        return weighted_reduction(losses, weights, red, fn)
    check_sharded_over(losses, names, "losses", fn)
    # mean_with_sample_weight sums the weights as given: over the axes they are sharded over.
    if weights_axis_name is not None:
        w_names = axis_names(weights_axis_name, fn)
    elif varying_axes(losses):
        w_names = tuple(n for n in names if n in varying_axes(weights))
    else:
        w_names = names if weights is not None and np.ndim(weights) else ()
    return weighted_reduction(
        losses,
        weights,
        red,
        fn,
        total=_global_total(names),
        shards=axes_size(names),
        given_total=_global_total(w_names),
    )


def _global_total(names: tuple) -> Callable[[Array], Array]:
    """The sum of a local array over every device of the ``names`` axes (local for none)."""

    def total(x: Array) -> Array:
        return psum_over(jnp.sum(x), names) if names else jnp.sum(x)

    return total


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
    red = Reduction.parse(reduction, fn, accepted=LISTWISE)
    names = axis_names(axis_name, fn)
    losses = _checks.float_array(losses, fn, name="losses")
    _checks.not_none(labels, "labels", fn)
    labels = jnp.asarray(labels)
    _checks.same_shape(labels, losses, fn, names=("labels", "losses"))
    shape = tuple(losses.shape)
    if segment_ids is not None:
        num_lists = _checks.static_count(num_segments, "num_segments", fn, " with `segment_ids`")
        if losses.ndim != 1:
            raise ValueError(
                f"{fn}: packed `losses` must be 1-D (vmap over rows), got shape {shape}."
            )
        segment_ids = check_segment_ids(segment_ids, shape, num_lists, fn)
    elif losses.ndim != 2:
        raise ValueError(f"{fn}: dense `losses` must be [batch, list_size], got shape {shape}.")
    else:
        num_lists = shape[0]
    acc = accumulation_dtype(losses.dtype)
    lists = sort_into_lists(labels, where, segment_ids, num_lists, weights, acc, fn)
    if red not in ("none", "per_list"):
        check_sharded_over(losses, names, "losses", fn)

    def longest(x: Array) -> Array:
        return lax.pmax(pcast_varying(jnp.max(x, initial=0), frozenset(names)), names)

    out = reduce_lists(
        losses,
        lists,
        red,
        fn,
        total=_global_total(names),
        longest=longest,
        shards=axes_size(names),
    )
    return out.astype(losses.dtype)
