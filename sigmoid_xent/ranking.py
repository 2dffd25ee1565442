"""Listwise sigmoid cross-entropy for ranking, exact to TF-Ranking, in two layouts.

Lists of items, each with a label and a score (logit); labels ``< 0`` mark padding, as in
TF-Ranking. The *dense* layout is TF-Ranking's ``[batch, list_size]``, padded with label ``-1``;
the *packed* layout keeps only real items, flat, with integer ``segment_ids`` naming each item's
list and a static ``num_segments``. Both give the same numbers; :func:`pack` and :func:`pad`
convert between them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from sigmoid_xent import _checks
from sigmoid_xent._core import sigmoid_cross_entropy_with_logits
from sigmoid_xent._lists import (
    check_segment_ids,
    reduce_lists,
    sort_into_lists,
)
from sigmoid_xent._mask import hide
from sigmoid_xent.reductions import LISTWISE, Reduction

Array = jax.Array

__all__ = ["SigmoidCrossEntropyLoss", "pack", "pad", "sigmoid_cross_entropy"]

_FN = "ranking.sigmoid_cross_entropy"


def sigmoid_cross_entropy(
    labels: ArrayLike,
    logits: ArrayLike,
    *,
    segment_ids: ArrayLike | None = None,
    num_segments: int | None = None,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: str | Reduction | None = "auto",
) -> Array:
    r"""TF-Ranking's sigmoid cross-entropy over lists, dense or packed.

    An item is padding where its label is < 0 or ``where`` is False: its label, logit and weight
    become 0 before the loss, so nothing there reaches the value or a gradient. With
    :math:`\ell_i` the elementwise loss, :math:`w_i` the item weights, :math:`K` lists and
    :math:`n_k` the items of list :math:`k` (padding included):

    .. math::

        \mathrm{auto} = \frac{\sum_i w_i \ell_i}{K \max_k n_k}, \quad
        \mathrm{mean} = \frac{\sum_i w_i \ell_i}{\sum_i w_i}, \quad
        \mathrm{per\_list}_k = \frac{\sum_{i \in k} w_i \ell_i}{\sum_{i \in k} w_i}

    A quotient whose denominator is 0 is 0. Labels are used as given (graded labels can make the
    loss negative); a NaN label is not padding.

    Args:
      labels: Relevance labels, dense ``[..., list_size]`` or packed ``[n]``.
      logits: Float scores of the labels' shape.
      segment_ids: Packed layout only: integer ``[n]`` list ids in ``[0, num_segments)``.
      num_segments: Packed layout only, required there: the number of lists, a static int.
      weights: None, a scalar, per item or per list (``[num_segments]``; dense ``[batch]``).
      where: Optional bool mask broadcastable to the labels; False items are padding.
      reduction: ``auto`` (= ``sum_over_batch_size``), ``mean``, ``sum``, ``none``,
        ``sum_by_nonzero_weights``, ``per_list`` or ``list_mean`` (``per_list`` averaged over
        the lists of non-zero weight).

    Returns:
      A scalar in the logits' dtype; per item for ``none``; per list for ``per_list``.

    Raises:
      TypeError: integer ``logits``, a non-bool ``where`` or a non-integer ``num_segments``.
      ValueError: mismatched shapes or ranks, non-integer or out-of-range ``segment_ids`` (under
        ``jit`` such an id makes the whole result NaN), a missing, traced or unused
        ``num_segments``, or an unknown reduction.

    Examples:
      >>> import jax.numpy as jnp
      >>> from sigmoid_xent import ranking
      >>> labels = jnp.array([[1., 0., -1.], [0., 1., 0.]])  # -1: padding
      >>> ranking.sigmoid_cross_entropy(labels, jnp.array([[0.6, 0.8, 0.], [0.5, 0.8, 0.4]]))
      Array(0.6444636, dtype=float32)

    References:
      TF-Ranking, ``tfr.keras.losses.SigmoidCrossEntropyLoss``.
    """
    fn = _FN
    red = Reduction.parse(reduction, fn, accepted=LISTWISE)
    x = _checks.float_array(logits, fn)
    z = _checks.as_float(labels, x.dtype, "labels", fn)
    ns = None
    if segment_ids is not None:
        ns = _checks.static_count(num_segments, "num_segments", fn, " with `segment_ids`")
        # Range checks need concrete ids, so they run here, outside the jitted body.
        segment_ids = check_segment_ids(segment_ids, np.shape(segment_ids), ns, fn)
    elif num_segments is not None:
        raise ValueError(
            f"{fn}: `num_segments` ({num_segments!r}) is only used with `segment_ids` (packed "
            "layout); the dense layout takes the number of lists from the labels' leading "
            "dimensions."
        )
    if weights is not None:
        weights = _checks.as_float(weights, _checks.compute_dtype(x.dtype), "weights", fn)
    if where is not None:
        where = jnp.asarray(where)
    return _sigmoid_cross_entropy(z, x, segment_ids, weights, where, num_segments=ns, reduction=red)


def _as_list_batch(
    z: Array, x: Array, weights: Array | None, where: Array | None, fn: str
) -> tuple[Array, Array, Array | None, Array | None]:
    """Dense ``[..., list_size]`` arrays as ``[lists, list_size]`` (weights per list or item)."""
    if z.ndim == 0:
        raise ValueError(
            f"{fn}: dense `labels` must be [..., list_size] (a [list_size] vector is one list), "
            f"got {_checks.describe(z)}; pass `segment_ids` and `num_segments` for packed items."
        )
    if z.ndim == 2:
        return z, x, weights, where
    lead, size = z.shape[:-1], z.shape[-1]
    lists = int(np.prod(lead, dtype=np.int64))
    if weights is not None and weights.ndim:
        if weights.shape == lead:
            weights = weights.reshape(lists)
        elif weights.shape == lead + (1,):
            weights = weights.reshape(lists, 1)
        elif weights.shape == z.shape:
            weights = weights.reshape(lists, size)
        else:
            raise ValueError(
                f"{fn}: `weights` must have shape (), per item {z.shape} or per list {lead} or "
                f"{lead + (1,)}, got {_checks.describe(weights)}."
            )
    if where is not None:
        mask = _checks.where_mask(where, z.shape, fn, target="labels")
        assert mask is not None
        where = jnp.broadcast_to(mask, z.shape).reshape(lists, size)
    return z.reshape(lists, size), x.reshape(lists, size), weights, where


# Jitted whole, so that an eager call runs one compiled program (small inputs are common).
@functools.partial(jax.jit, static_argnames=("num_segments", "reduction"))
def _sigmoid_cross_entropy(
    z: Array,
    x: Array,
    segment_ids: Array | None,
    weights: Array | None,
    where: Array | None,
    *,
    num_segments: int | None,
    reduction: str,
) -> Array:
    fn = _FN
    _checks.same_shape(z, x, fn)
    shape = z.shape
    if segment_ids is not None:
        if z.ndim != 1:
            raise ValueError(
                f"{fn}: with `segment_ids` (packed layout) `labels` must be 1-D [num_items], got "
                f"{_checks.describe(z)}; for [batch, n] rows of packed items use jax.vmap over "
                "rows."
            )
        assert num_segments is not None  # checked by the public function
        ns: int = num_segments
        segment_ids = check_segment_ids(segment_ids, z.shape, ns, fn)
    else:
        z, x, weights, where = _as_list_batch(z, x, weights, where, fn)
        ns = z.shape[0]

    cd = _checks.compute_dtype(x.dtype)
    lists = sort_into_lists(z, where, segment_ids, ns, weights, cd, fn)
    # Padded items get label 0 and logit 0 before the loss, so nothing there reaches it.
    zc = hide(lists.valid, z).astype(cd)
    xc = hide(lists.valid, x).astype(cd)
    out = reduce_lists(sigmoid_cross_entropy_with_logits(zc, xc), lists, reduction, fn)
    if segment_ids is None and reduction == "none":
        out = out.reshape(shape)
    elif segment_ids is None and reduction == "per_list":
        out = out.reshape(shape[:-1])
    return out.astype(x.dtype)


def pack(lists: Sequence[ArrayLike]) -> tuple[Array, Array]:
    r"""Concatenates lists of unequal lengths into flat items and their segment ids.

    .. math::

        \mathrm{values} = (x_{0,0}, \dots, x_{0,n_0-1}, x_{1,0}, \dots), \qquad
        \mathrm{segment\_ids} = (\underbrace{0, \dots, 0}_{n_0}, \underbrace{1, \dots, 1}_{n_1},
        \dots)

    The inverse of :func:`pad` (with ``num_segments = len(lists)``). An empty list contributes no
    items but keeps its id. Traced arrays work too (their lengths are static shapes).

    Args:
      lists: A sequence of 1-D (or ``[n_k, ...]``) array-likes.

    Returns:
      ``(values, segment_ids)``: ``values`` ``[sum n_k, ...]`` in the lists' common dtype and
      ``segment_ids`` int32 ``[sum n_k]``, sorted.

    Raises:
      ValueError: ``lists`` is None or a scalar, a list is a scalar, or non-empty lists disagree in
        their trailing dimensions.

    Examples:
      >>> from sigmoid_xent import ranking
      >>> ranking.pack([[1., 0.], [], [0., 1., 0.]])
      (Array([1., 0., 0., 1., 0.], dtype=float32), Array([0, 0, 2, 2, 2], dtype=int32))
    """
    fn = "ranking.pack"
    _checks.not_none(lists, "lists", fn)
    if np.isscalar(lists) or getattr(lists, "ndim", 1) == 0:
        raise ValueError(
            f"{fn}: `lists` must be a sequence of lists, got {_checks.describe(lists)}."
        )
    traced = any(_checks.is_traced(leaf) for leaf in jax.tree_util.tree_leaves(list(lists)))
    # Concrete lists are joined in numpy: one transfer, no compilation per new shape.
    xp = jnp if traced else np
    rows = [xp.asarray(row) for row in lists]
    for k, row in enumerate(rows):
        if row.ndim == 0:
            raise ValueError(
                f"{fn}: every element of `lists` must be a list of items, got lists[{k}] of "
                f"{_checks.describe(row)}."
            )
    filled = [row for row in rows if row.shape[0] > 0]
    trailing = {row.shape[1:] for row in filled}
    if len(trailing) > 1:
        raise ValueError(
            f"{fn}: the items of all lists must have the same trailing shape, got "
            f"{sorted(trailing)}."
        )
    # jnp's rules (Python floats -> the default float dtype, no float64 without x64).
    dtype = jnp.result_type(*(filled or rows)) if rows else jnp.result_type(float)
    if filled:
        values = jnp.asarray(xp.concatenate([row.astype(dtype) for row in filled]), dtype)
    else:
        values = jnp.zeros((0,), dtype)
    lengths = [row.shape[0] for row in rows]
    segment_ids = np.repeat(np.arange(len(rows), dtype=np.int32), lengths)
    return values, jnp.asarray(segment_ids, jnp.int32)


def pad(
    values: ArrayLike,
    segment_ids: ArrayLike,
    num_segments: int,
    list_size: int | None = None,
    fill_value: ArrayLike = -1,
) -> Array:
    r"""Scatters packed items into TF-Ranking's dense ``[num_segments, list_size]`` layout.

    .. math::

        \mathrm{out}[k, j] = x_{k,j} \text{ if } j < n_k \text{ else } \mathrm{fill\_value}

    with :math:`x_{k,j}` the :math:`j`-th item with id :math:`k`; the inverse of :func:`pack`.
    Items beyond ``list_size``, and out-of-range ids under ``jit``, are dropped.

    Args:
      values: ``[n]`` (or ``[n, ...]``) packed items.
      segment_ids: Integer ``[n]`` list ids.
      num_segments: The number of lists, a static int.
      list_size: The dense width, a static int; default the longest list (concrete ids only).
      fill_value: The padding value: -1 (default) for labels, 0 for logits and weights.

    Returns:
      ``[num_segments, list_size, ...]`` in ``values``' dtype.

    Raises:
      ValueError: bad ``segment_ids``, a missing or traced ``num_segments``, or no ``list_size``
        under ``jit``.
      TypeError: a non-integer ``num_segments`` or ``list_size``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from sigmoid_xent import ranking
      >>> ranking.pad(jnp.array([1., 0., 0., 1., 0.]), jnp.array([0, 0, 2, 2, 2]), 3)
      Array([[ 1.,  0., -1.],
             [-1., -1., -1.],
             [ 0.,  1.,  0.]], dtype=float32)
    """
    fn = "ranking.pad"
    _checks.not_none(values, "values", fn)
    v = jnp.asarray(values)
    if v.ndim == 0:
        raise ValueError(f"{fn}: `values` must be [n] packed items, got {_checks.describe(v)}.")
    ns = _checks.static_count(num_segments, "num_segments", fn, "")
    ids = check_segment_ids(segment_ids, v.shape[:1], ns, fn)
    if list_size is None:
        if _checks.is_traced(ids):
            raise ValueError(
                f"{fn}: `list_size` is required inside jit/vmap (the longest list is not known "
                "at trace time); pass a static Python int."
            )
        host = np.asarray(ids)
        size = int(np.bincount(host, minlength=ns).max(initial=0)) if host.size else 0
    else:
        size = _checks.static_count(list_size, "list_size", fn, "")
    return _pad(v, ids, jnp.asarray(fill_value, v.dtype), num_segments=ns, list_size=size)


@functools.partial(jax.jit, static_argnames=("num_segments", "list_size"))
def _pad(
    values: Array, ids: Array, fill_value: Array, *, num_segments: int, list_size: int
) -> Array:
    n, ns = values.shape[0], num_segments
    # Out-of-range ids go to an extra bucket `ns`, which the final scatter drops.
    key = jnp.where((ids >= 0) & (ids < ns), ids, ns).astype(jnp.int32)
    counts = jax.ops.segment_sum(jnp.ones((n,), jnp.int32), key, ns + 1)
    order = jnp.argsort(key, stable=True)
    starts = jnp.cumsum(counts) - counts
    rank_sorted = jnp.arange(n, dtype=jnp.int32) - starts[key[order]]
    position = jnp.zeros((n,), jnp.int32).at[order].set(rank_sorted)
    out = jnp.full((ns, list_size) + values.shape[1:], fill_value, values.dtype)
    return out.at[key, position].set(values, mode="drop")


def _is_ragged(value: Any) -> bool:
    """A Python sequence of per-list sequences (possibly of unequal lengths)."""
    return isinstance(value, (list, tuple)) and all(np.ndim(row) >= 1 for row in value)


def _densify(rows: Sequence[Any], list_size: int, fill_value: float) -> Array:
    values, segment_ids = pack(rows)
    return pad(values, segment_ids, len(rows), list_size=list_size, fill_value=fill_value)


@dataclasses.dataclass(frozen=True)
class SigmoidCrossEntropyLoss:
    r"""TF-Ranking's ``tfr.keras.losses.SigmoidCrossEntropyLoss`` as an immutable loss object.

    Calling it computes :func:`sigmoid_cross_entropy` with ``weights=sample_weight``:

    .. math::

        L = \mathrm{reduce}\big(w_i \, \ell(y_i, s_i)\big), \quad \text{items with } y_i < 0
        \text{ excluded}

    With ``ragged=True``, ``y_true`` and ``y_pred`` may be Python lists of lists of unequal
    lengths (TF's ragged tensors), padded to ``[lists, longest]``. A frozen dataclass: hashable,
    so it can be closed over or passed as a static argument to ``jax.jit``.

    Args:
      reduction: A reduction name of :func:`sigmoid_cross_entropy` (default ``auto``), kept as
        given in the config.
      name: A name, for the config.
      ragged: Accept ragged Python lists.

    Raises:
      ValueError: an unknown reduction.

    Examples:
      >>> from sigmoid_xent import ranking
      >>> loss = ranking.SigmoidCrossEntropyLoss(ragged=True)
      >>> loss([[1., 0.], [0., 1., 0.]], [[0.6, 0.8], [0.5, 0.8, 0.4]])
      Array(0.6444636, dtype=float32)
    """

    reduction: str | Reduction | None = "auto"
    name: str | None = None
    ragged: bool = False

    def __post_init__(self) -> None:
        Reduction.parse(self.reduction, "ranking.SigmoidCrossEntropyLoss", accepted=LISTWISE)

    def __call__(
        self,
        y_true: ArrayLike | Sequence[ArrayLike],
        y_pred: ArrayLike | Sequence[ArrayLike],
        sample_weight: ArrayLike | Sequence[ArrayLike] | None = None,
        *,
        segment_ids: ArrayLike | None = None,
        num_segments: int | None = None,
        where: ArrayLike | None = None,
    ) -> Array:
        """The reduced loss of ``y_pred`` (logits) against ``y_true`` (labels, < 0 padding).

        Args:
          y_true: Labels as :func:`sigmoid_cross_entropy` takes them; with ``ragged=True`` also a
            list of lists (padded with -1).
          y_pred: Logits of the labels' shape (ragged like ``y_true``, padded with 0).
          sample_weight: :func:`sigmoid_cross_entropy`'s ``weights``; with ragged input also ragged
            per item (padded with 0) or per list (``[lists, 1]`` or ``[lists]``).
          segment_ids: Packed layout only; not with ``ragged=True``.
          num_segments: Packed layout only: the number of lists.
          where: :func:`sigmoid_cross_entropy`'s ``where`` (False = padding); not with ragged
            input.

        Returns:
          As :func:`sigmoid_cross_entropy`; for ragged input and ``none``, ``[lists, longest]``.

        Raises:
          ValueError: :func:`sigmoid_cross_entropy`'s errors, ragged ``y_true`` and ``y_pred`` of
            different list lengths, or ``segment_ids`` with ``ragged=True``.

        Examples:
          >>> from sigmoid_xent import ranking
          >>> ranking.SigmoidCrossEntropyLoss()([[1., 0.]], [[0.6, 0.8]])
          Array(0.8042943, dtype=float32)
        """
        fn = "ranking.SigmoidCrossEntropyLoss"
        labels: Any = y_true
        logits: Any = y_pred
        weights: Any = sample_weight
        if self.ragged:
            if segment_ids is not None or where is not None:
                name = "segment_ids" if segment_ids is not None else "where"
                raise ValueError(
                    f"{fn}: `{name}` cannot be combined with ragged=True; pass packed "
                    "items with ragged=False."
                )
            labels, logits, weights = self._to_dense(labels, logits, weights, fn)
        return sigmoid_cross_entropy(
            labels,
            logits,
            segment_ids=segment_ids,
            num_segments=num_segments,
            weights=weights,
            where=where,
            reduction=self.reduction,
        )

    @staticmethod
    def _to_dense(y_true: Any, y_pred: Any, sample_weight: Any, fn: str) -> tuple[Any, Any, Any]:
        _checks.not_none(y_true, "y_true", fn)
        _checks.not_none(y_pred, "y_pred", fn)
        if not (_is_ragged(y_true) or _is_ragged(y_pred)):
            return y_true, y_pred, sample_weight
        lengths = [int(np.shape(row)[0]) for row in y_true]
        pred_lengths = [int(np.shape(row)[0]) for row in y_pred]
        if lengths != pred_lengths:
            raise ValueError(
                f"{fn}: ragged `y_true` and `y_pred` must have lists of equal lengths, got "
                f"y_true lengths {lengths} and y_pred lengths {pred_lengths}."
            )
        size = max(lengths, default=0)
        dense_true = _densify(list(y_true), size, -1)
        dense_pred = _densify(list(y_pred), size, 0)
        if _is_ragged(sample_weight):
            w_lengths = [int(np.shape(row)[0]) for row in sample_weight]
            if w_lengths == lengths:
                sample_weight = _densify(list(sample_weight), size, 0)
            elif all(k == 1 for k in w_lengths) and len(w_lengths) == len(lengths):
                sample_weight = jnp.stack([jnp.asarray(row) for row in sample_weight])
            else:
                raise ValueError(
                    f"{fn}: ragged `sample_weight` must be per item (list lengths {lengths}) or "
                    f"per list ([{len(lengths)}, 1]), got list lengths {w_lengths}."
                )
        return dense_true, dense_pred, sample_weight

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments as a dict, the reduction as given.

        Returns:
          ``{"reduction": ..., "name": ..., "ragged": ...}``.

        Examples:
          >>> from sigmoid_xent import ranking
          >>> ranking.SigmoidCrossEntropyLoss(ragged=True).get_config()
          {'reduction': 'auto', 'name': None, 'ragged': True}
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SigmoidCrossEntropyLoss:
        """Rebuilds the object from :meth:`get_config`'s dict.

        Args:
          config: A dict of constructor arguments.

        Returns:
          A loss object equal to the one the config came from.

        Examples:
          >>> from sigmoid_xent import ranking
          >>> loss = ranking.SigmoidCrossEntropyLoss(reduction="list_mean")
          >>> ranking.SigmoidCrossEntropyLoss.from_config(loss.get_config()) == loss
          True
        """
        return cls(**config)
