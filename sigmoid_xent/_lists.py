"""TF-Ranking's list rules, shared by :mod:`sigmoid_xent.ranking` and :mod:`sigmoid_xent.sharding`.

The one copy of: which items are padding, how ``weights`` become one weight per item (per list,
never per position), and TF-Ranking's list reductions. :func:`reduce_lists` is parameterised by
how a local tensor becomes a global one (``jnp.sum`` / ``jnp.max`` on one device, ``psum`` /
``pmax`` inside ``shard_map``), so the sharded reductions are the same formulas.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sigmoid_xent import _checks
from sigmoid_xent._checks import describe
from sigmoid_xent._mask import hide
from sigmoid_xent.reductions import safe_divide, weighted_reduction

Array = jax.Array


def check_segment_ids(
    segment_ids: Any, shape: tuple[int, ...], num_segments: int, fn: str
) -> Array:
    """Checks dtype, shape and (when concrete) range of ``segment_ids``."""
    _checks.not_none(segment_ids, "segment_ids", fn)
    ids = jnp.asarray(segment_ids)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise ValueError(
            f"{fn}: `segment_ids` must have an integer dtype (int32, int64, ...), got "
            f"{describe(ids)}."
        )
    if ids.shape != tuple(shape):
        raise ValueError(
            f"{fn}: `segment_ids` must have one id per item, shape {tuple(shape)}, got "
            f"{describe(ids)}."
        )
    if not _checks.is_traced(ids):
        host = np.asarray(ids)
        bad = (host < 0) | (host >= num_segments)
        if bad.any():
            first = int(np.argmax(bad))
            raise ValueError(
                f"{fn}: `segment_ids` must lie in [0, num_segments) = [0, {num_segments}); "
                f"found {int(bad.sum())} out of range, the first {host[first]} at index {first}. "
                "(Inside jit/vmap such an id makes the whole result NaN.)"
            )
    return ids


def item_weights(
    weights: Any,
    shape: tuple[int, ...],
    segment_ids: Array | None,
    num_segments: int,
    dtype: Any,
    fn: str,
) -> Array:
    """Weights broadcast to one per item: scalar, per item, or per list (never per position)."""
    if weights is None:
        return jnp.ones(shape, dtype)
    w = _checks.as_float(weights, dtype, "weights", fn)
    if w.shape == ():
        return jnp.broadcast_to(w, shape)
    if w.shape == tuple(shape):
        return w
    if segment_ids is not None:
        if w.shape == (num_segments,):
            return w[segment_ids]
        expected = f"(), per item {tuple(shape)} or per list ({num_segments},)"
    else:
        batch = shape[0]
        if w.shape in ((batch,), (batch, 1)):
            return jnp.broadcast_to(w.reshape(batch, 1), shape)
        expected = f"(), per item {tuple(shape)} or per list ({batch},) or ({batch}, 1)"
    raise ValueError(f"{fn}: `weights` must have shape {expected}, got {describe(weights)}.")


def list_sum(values: Array, segment_ids: Array | None, num_segments: int) -> Array:
    if segment_ids is None:
        return jnp.sum(values, axis=-1)
    return jax.ops.segment_sum(values, segment_ids, num_segments)


class Lists(NamedTuple):
    """Items sorted into lists: what is padding, and each valid item's weight."""

    valid: Array  # bool, labels' shape: False at padding
    weights: Array  # per item, 0 at padding
    segment_ids: Array | None  # packed: ids in [0, num_lists) (dropped items moved to 0)
    in_range: Array | None  # packed: ids inside [0, num_lists) (they count in list lengths)
    num_lists: int


def sort_into_lists(
    labels: Array,
    where: Any,
    segment_ids: Array | None,
    num_lists: int,
    weights: Any,
    dtype: Any,
    fn: str,
) -> Lists:
    """Padding (label < 0, ``where`` False, ids out of range) and per-item weights.

    A NaN label is not padding (NaN out, never silently dropped). Dense ``labels`` are
    ``[lists, list_size]``; packed ones ``[n]`` with ``segment_ids``.
    """
    valid = ~(labels < 0)
    mask = _checks.where_mask(where, labels.shape, fn, target="labels")
    if mask is not None:
        valid = valid & jnp.broadcast_to(mask, labels.shape)
    in_range = None
    if segment_ids is not None:
        in_range = (segment_ids >= 0) & (segment_ids < num_lists)
        valid = valid & in_range
        segment_ids = jnp.where(in_range, segment_ids, jnp.zeros_like(segment_ids))
    w = hide(valid, item_weights(weights, labels.shape, segment_ids, num_lists, dtype, fn))
    return Lists(valid, w.astype(dtype), segment_ids, in_range, num_lists)


def _local_longest(x: Array) -> Array:
    return jnp.max(x, initial=0)


def reduce_lists(
    losses: Array,
    lists: Lists,
    reduction: str,
    fn: str,
    *,
    total: Callable[[Array], Array] = jnp.sum,
    longest: Callable[[Array], Array] = _local_longest,
    shards: int = 1,
) -> Array:
    """TF-Ranking's reductions of per-item ``losses`` (any value at padding: it is masked).

    ``total`` sums a local array over every shard, ``longest`` takes the maximum over every
    shard, and ``shards`` is how many shards hold lists of this shape. Returns the
    accumulation dtype; ``none`` and ``per_list`` are local.
    """
    out = _reduce_lists(losses, lists, reduction, fn, total, longest, shards)
    if lists.in_range is None:
        return out
    # An id outside [0, num_lists) (only possible under jit) makes every entry NaN, on every
    # shard (counted through `total`): the result without its item would be a wrong number.
    bad = total((~lists.in_range).astype(jnp.int32))
    return jnp.where(bad == 0, out, jnp.full_like(out, jnp.nan))


def _reduce_lists(
    losses: Array,
    lists: Lists,
    reduction: str,
    fn: str,
    total: Callable[[Array], Array],
    longest: Callable[[Array], Array],
    shards: int,
) -> Array:
    ids, num_lists = lists.segment_ids, lists.num_lists
    w = lists.weights
    clean = hide(lists.valid, losses).astype(w.dtype)
    if reduction in ("none", "sum", "mean", "sum_by_nonzero_weights"):
        # w is 0 at padding, so these are reduce_loss's formulas over the valid items.
        return weighted_reduction(clean, w, reduction, fn, total=total, shards=shards)
    weighted = clean * w
    if reduction == "sum_over_batch_size":
        # Each list first, then the lists: TF-Ranking's 0.6444636 (not 0.64446354), one order for
        # both layouts. The barrier keeps XLA from merging the two sums into one flat sum.
        num = total(jax.lax.optimization_barrier(list_sum(weighted, ids, num_lists)))
        if ids is None:  # dense: every slot of every list, padding columns included
            slots = jnp.asarray(int(np.prod(weighted.shape)) * shards, w.dtype)
        else:  # packed: lists x the longest list, a list's length counting all its items
            assert lists.in_range is not None
            lengths = list_sum(lists.in_range.astype(jnp.int32), ids, num_lists)
            slots = longest(jnp.max(lengths, initial=0)).astype(w.dtype) * (num_lists * shards)
        return safe_divide(num, slots)
    weight_sum = list_sum(w, ids, num_lists)
    per_list = safe_divide(list_sum(weighted, ids, num_lists), weight_sum)
    if reduction == "per_list":
        return per_list
    # list_mean: every list with a non-zero weight sum counts once.
    return weighted_reduction(
        per_list, weight_sum != 0, "sum_by_nonzero_weights", fn, total=total, shards=shards
    )
