"""Global reductions inside ``jax.shard_map``.

Under sharded ``jit`` every loss and :func:`~sigmoid_xent.reduce_loss` is already global. Inside
``jax.shard_map`` each device sees only its shard: these helpers sum numerators and denominators
separately over the mesh axes and return the single-device result of the gathered arrays.

- :func:`reduce_loss_sharded`: every :class:`~sigmoid_xent.Reduction` of ``reduce_loss``.
- :func:`reduce_ranking_loss_sharded`: TF-Ranking's reductions when every list lives on one
  shard.
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

    Called inside ``jax.shard_map`` on each device's shard of the losses (and weights), it returns
    the reduction of the *global* arrays on every device: numerators and denominators are summed
    separately, as in

    .. math::

        \mathrm{mean} = \frac{\mathrm{psum}\big(\sum w \ell\big)}{\mathrm{psum}\big(\sum w\big)}

    ``none`` returns the local ``losses * weights``. Works with ``check_vma`` True and False.

    Args:
      losses: This device's shard of the loss tensor.
      weights: None, or this device's shard of the weights, broadcastable to ``losses``.
      reduction: A :class:`~sigmoid_xent.Reduction` or its name.
      axis_name: The axis name, or a tuple of names, the losses are sharded over.
      weights_axis_name: ``mean_with_sample_weight`` only: the axes the given weights are sharded
        over (default: inferred under ``check_vma=True``, else rank-0 weights are replicated).

    Returns:
      The global reduction, the same on every device; the local array for ``none``.

    Raises:
      ValueError: ``weights`` not broadcastable, an unknown reduction, a missing ``axis_name``,
        or (``check_vma=True``) losses replicated over a summed axis.
      TypeError: integer ``losses``.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> import sigmoid_xent as sx
      >>> mesh = jax.sharding.Mesh(np.array(jax.devices()), ("batch",))
      >>> local = lambda l, w: sx.reduce_loss_sharded(l, w, "mean", axis_name="batch")
      >>> P = jax.sharding.PartitionSpec
      >>> jax.jit(jax.shard_map(local, mesh=mesh, in_specs=P("batch"), out_specs=P()))(
      ...     jnp.arange(8.0), jnp.ones(8))
      Array(3.5, dtype=float32)
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

    For dense ``[batch, list_size]`` arrays sharded over the batch, or packed items whose segment
    ids are local to their shard; labels < 0 and ``where`` False are padding. With :math:`w` the
    item weights (0 at padding) summed over every shard, :math:`L` lists and :math:`S` the list
    size (packed: the longest list on any shard):

    .. math::

        \mathrm{auto} = \frac{\sum w \ell}{L \cdot S}, \qquad
        \mathrm{mean} = \frac{\sum w \ell}{\sum w}

    and every reduction as :func:`sigmoid_xent.ranking.sigmoid_cross_entropy` on the gathered
    arrays; ``per_list`` and ``none`` are local.

    Args:
      losses: This device's per-item losses, the labels' shape (any value at padding).
      labels: This device's labels; < 0 marks padding.
      axis_name: The axis name (or tuple of names) the lists are sharded over.
      segment_ids: Packed layout: integer list ids in ``[0, num_segments)`` on this device.
      num_segments: Packed layout: the static number of lists on each device.
      weights: None, a scalar, per item, or per list.
      where: Optional bool mask broadcastable to the labels; False items are padding.
      reduction: A reduction name of :func:`sigmoid_xent.ranking.sigmoid_cross_entropy`.

    Returns:
      A scalar, the same on every device; the local array for ``per_list`` and ``none``.

    Raises:
      ValueError: mismatched shapes, bad ``weights``, an unknown reduction, or bad
        ``segment_ids`` or ``num_segments``.
      TypeError: integer ``losses``.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> import sigmoid_xent as sx
      >>> mesh = jax.sharding.Mesh(np.array(jax.devices()), ("batch",))
      >>> local = lambda l, z: sx.sharding.reduce_ranking_loss_sharded(l, z, axis_name="batch")
      >>> P = jax.sharding.PartitionSpec
      >>> labels = jnp.array([[1., 0., -1.], [0., 1., 1.]] * 4)  # 20 items in 24 slots
      >>> jax.jit(jax.shard_map(local, mesh=mesh, in_specs=P("batch"), out_specs=P()))(
      ...     jnp.full((8, 3), 0.5), labels)
      Array(0.41666666, dtype=float32)
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
