"""Listwise sigmoid cross-entropy for ranking, exact to TF-Ranking, in two layouts.

Lists of items, each item with a label and a score (logit). Labels ``< 0`` mark padding, as in
TF-Ranking. The *dense* layout is TF-Ranking's ``[batch, list_size]`` padded with label ``-1``;
the *packed* layout keeps only real items, flat, with integer ``segment_ids`` naming each item's
list and a static ``num_segments``. Both give the same numbers; the packed one works in O(n)
with :func:`jax.ops.segment_sum` (rax's segment utilities build O(n²) ``[n, n]`` masks) and rows
of packed items (``[batch, n]`` with per-row segment ids) can be :func:`jax.vmap`-ped.

:func:`pack` and :func:`pad` convert between the layouts.
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

    Each item :math:`i` of list :math:`k` is valid unless its label is negative or ``where`` is
    False there. Padded items get label 0, logit 0 and weight 0 *before* the loss (as
    TF-Ranking), through selects, so NaN or inf in padded labels, logits or weights never reaches
    the value or any gradient. With :math:`\ell_i` the stable elementwise loss
    (:func:`sigmoid_xent.sigmoid_cross_entropy_with_logits`) and :math:`w_i` the item weights
    (0 at padding):

    .. math::

        \mathrm{sum} = \sum_i w_i \ell_i, \qquad
        \mathrm{auto} = \frac{\sum_i w_i \ell_i}{K \cdot \max_k n_k}, \qquad
        \mathrm{mean} = \frac{\sum_i w_i \ell_i}{\sum_i w_i}, \qquad
        \mathrm{sum\_by\_nonzero\_weights} = \frac{\sum_i w_i \ell_i}{\#\{i : w_i \ne 0\}}

        \mathrm{per\_list}_k = \frac{\sum_{i \in k} w_i \ell_i}{\sum_{i \in k} w_i}, \qquad
        \mathrm{list\_mean} = \frac{\sum_k \mathrm{per\_list}_k}
        {\#\{k : \sum_{i \in k} w_i \ne 0\}}

    where :math:`K` is the number of lists and :math:`n_k` the length of list :math:`k`. For
    ``auto`` (= ``sum_over_batch_size``, TF-Ranking's Keras default) the denominator counts
    *slots*: dense ``batch * list_size`` (padding columns count even if no list reaches them);
    packed ``num_segments * longest list``, where a list's length counts all its items, label < 0
    and ``where=False`` ones included, and empty segments count as lists. So the packed layout
    equals the dense one on :func:`pad`'s output (``0.6444636`` for TF-Ranking's ragged example).
    The longest list is computed inside the trace, so this works under ``jit`` and ``vmap``.
    ``none`` returns :math:`w_i \ell_i` per item (0 at padding; ``[n]`` packed,
    ``[batch, list_size]`` dense); ``per_list`` the ``[num_segments]`` (or ``[batch]``) vector
    above, 0 for a list with no weight (TF-Ranking's ``compute_per_list``). In ``list_mean`` every
    list counts once: per-list weights include or exclude lists, they do not re-weight them.
    Every quotient is 0 when its denominator is 0, with finite gradients.

    Labels are used as given: graded relevance labels (``2``, ``3``, ...) enter the formula
    :math:`\max(s, 0) - s z + \log(1 + e^{-|s|})` unchanged, as in TF-Ranking, so the loss can then
    be **negative** (and unbounded below in the logit). A NaN label is not padding: it gives NaN.

    Packed rows: for ``[batch, n]`` items with per-row segment ids, ``jax.vmap`` this function
    over the rows (``num_segments`` closed over); each row is reduced on its own. Items that only
    fill a row up should have a label < 0; for ``auto`` they count in the length of the list
    whose id they carry, so give them the id of a short list, or use another reduction.

    Segment ids are checked whenever they are concrete (eagerly, outside ``jit`` and ``vmap``).
    Inside ``jit``/``vmap``, where nothing can raise, an id outside ``[0, num_segments)`` makes
    the whole result NaN (every entry, for ``none`` and ``per_list`` too), never a number
    computed without that item. :func:`sigmoid_xent.validate_inputs` under
    ``jax.experimental.checkify`` names such ids.

    Works under ``jit``, ``vmap``, ``grad`` (w.r.t. logits, labels and weights). 16-bit inputs
    are computed in float32; the result has the logits' dtype (float64 stays float64).

    Args:
      labels: Relevance labels, ``[batch, list_size]`` (dense) or ``[n]`` (packed); < 0 is
        padding. Int and bool labels are cast to the logits' dtype.
      logits: Float scores of the labels' shape.
      segment_ids: Packed layout only: integer ``[n]`` ids in ``[0, num_segments)``, the list of
        each item (any order).
      num_segments: Packed layout only, required there: the number of lists, a static Python
        int (close over it or mark it static under ``jit``).
      weights: None (ones); a scalar; per item (the labels' shape); or per list: ``[num_segments]``
        packed, ``[batch]`` or ``[batch, 1]`` dense. A ``[batch]`` vector is always per list
        (TF-Ranking applies it per position or fails). A packed vector whose length equals both
        ``n`` and ``num_segments`` is per item.
      where: Optional boolean mask of the labels' shape; False items are padding exactly like
        label < 0.
      reduction: One of ``auto``/``sum_over_batch_size``, ``mean``, ``sum``,
        ``sum_by_nonzero_weights`` (TF-Ranking's estimator default), ``none``, ``per_list``,
        ``list_mean``; any case, TF spellings such as ``SUM_OVER_NONZERO_WEIGHTS`` accepted.

    Returns:
      A scalar in the logits' dtype; for ``none`` the labels' shape; for ``per_list`` a
      ``[num_segments]`` (packed) or ``[batch]`` (dense) vector.

    Raises:
      TypeError: integer ``logits``, non-bool ``where``, non-integer ``num_segments``.
      ValueError: shape mismatch (labels/logits, segment ids, where, weights), labels of the wrong
        rank for the layout, non-integer or (when concrete) out-of-range ``segment_ids``, missing
        or traced ``num_segments``, ``num_segments`` without ``segment_ids``, or an unknown
        reduction.

    Examples:
      >>> import jax.numpy as jnp
      >>> from sigmoid_xent import ranking
      >>> ranking.sigmoid_cross_entropy(jnp.array([[1., 0.]]), jnp.array([[0.6, 0.8]]))
      Array(0.8042943, dtype=float32)

      The same two lists, dense (padded with -1) and packed:

      >>> labels = jnp.array([[1., 0., -1.], [0., 1., 0.]])
      >>> logits = jnp.array([[0.6, 0.8, 0.], [0.5, 0.8, 0.4]])
      >>> ranking.sigmoid_cross_entropy(labels, logits)
      Array(0.6444636, dtype=float32)
      >>> ranking.sigmoid_cross_entropy(
      ...     jnp.array([1., 0., 0., 1., 0.]), jnp.array([0.6, 0.8, 0.5, 0.8, 0.4]),
      ...     segment_ids=jnp.array([0, 0, 1, 1, 1]), num_segments=2)
      Array(0.6444636, dtype=float32)
      >>> ranking.sigmoid_cross_entropy(labels, logits, reduction="per_list")
      Array([0.8042943, 0.752731 ], dtype=float32)
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


# One compiled program per signature: eager calls dispatch once instead of once per primitive.
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

    The inverse of :func:`pad` (with ``num_segments = len(lists)``). Empty lists contribute no
    items but keep their id. Works on Python lists and on arrays (traced ones too: the lengths
    are static shapes), and items may have trailing dimensions (``[n_k, d]``).

    Args:
      lists: A sequence of 1-D (or ``[n_k, ...]``) array-likes.

    Returns:
      ``(values, segment_ids)``: ``values`` of shape ``[sum n_k, ...]`` in the lists' common dtype
      (Python floats give the default float dtype), ``segment_ids`` int32 ``[sum n_k]``, sorted.

    Raises:
      ValueError: ``lists`` is None or a scalar, a list is a scalar, or non-empty lists disagree in
        their trailing dimensions.

    Examples:
      >>> from sigmoid_xent import ranking
      >>> values, segment_ids = ranking.pack([[1., 0.], [], [0., 1., 0.]])
      >>> values
      Array([1., 0., 0., 1., 0.], dtype=float32)
      >>> segment_ids
      Array([0, 0, 2, 2, 2], dtype=int32)
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

        \mathrm{out}[k, j] = \begin{cases} \text{the } j\text{-th item (in order) with id } k
        & j < n_k \\ \mathrm{fill\_value} & \text{otherwise} \end{cases}

    The inverse of :func:`pack`. Items keep their order within each list; segment ids need not
    be sorted (an O(n log n) stable sort ranks them). Items beyond ``list_size`` are dropped, and
    so are items with ids outside ``[0, num_segments)`` inside ``jit``/``vmap`` (eagerly they are
    a ValueError). Differentiable w.r.t. ``values``. Use ``fill_value=-1`` (the default) for
    labels and ``0`` for logits and weights.

    Args:
      values: ``[n]`` (or ``[n, ...]``) packed items.
      segment_ids: Integer ``[n]`` list ids.
      num_segments: The number of lists, a static Python int.
      list_size: The dense width, a static Python int. Defaults to the longest list, which needs
        concrete segment ids: inside ``jit``/``vmap`` it is required.
      fill_value: The value of the padding slots, cast to ``values``' dtype.

    Returns:
      ``[num_segments, list_size, ...]`` in ``values``' dtype.

    Raises:
      ValueError: non-integer, mis-shaped or (when concrete) out-of-range ``segment_ids``;
        missing or traced ``num_segments``; ``list_size`` None under a transformation, or
        traced.
      TypeError: non-integer ``num_segments`` or ``list_size``.

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

    ``__call__(y_true, y_pred, sample_weight=None, *, segment_ids=None, num_segments=None)``
    computes :func:`sigmoid_cross_entropy` with ``weights=sample_weight``:

    .. math::

        L = \mathrm{reduce}\big(w_i \, \mathrm{bce}(y_i, s_i)\big), \quad
        \text{padding } (y_i < 0) \text{ excluded}

    With ``ragged=True``, ``y_true`` and ``y_pred`` may be Python lists of lists of unequal
    lengths (TF's ragged tensors): they are padded to ``[lists, longest]`` with label -1 and
    logit 0, and ``sample_weight`` may be ragged per item (padded with 0) or per list
    (``[lists, 1]`` or ``[lists]``). The ``auto`` denominator then counts ``lists * longest``
    slots, as TF-Ranking. ``none`` returns that dense ``[lists, longest]`` array with 0 at
    padding.

    Being a frozen dataclass, an instance is hashable: close over it or pass it as a static
    argument to ``jax.jit``. ``get_config()`` / ``from_config()`` round-trip it.

    Args:
      reduction: A reduction name of :func:`sigmoid_cross_entropy` (default ``auto`` =
        ``sum_over_batch_size``), kept as given in the config.
      name: A name, for the config.
      ragged: Accept ragged Python lists.

    Raises:
      ValueError: an unknown reduction (at construction); in ``__call__`` the errors of
        :func:`sigmoid_cross_entropy`, ragged ``y_true``/``y_pred`` of different list lengths,
        and ``segment_ids`` with ``ragged=True``.

    Examples:
      >>> from sigmoid_xent import ranking
      >>> loss = ranking.SigmoidCrossEntropyLoss()
      >>> loss([[1., 0.]], [[0.6, 0.8]])
      Array(0.8042943, dtype=float32)
      >>> loss = ranking.SigmoidCrossEntropyLoss(ragged=True)
      >>> loss([[1., 0.], [0., 1., 0.]], [[0.6, 0.8], [0.5, 0.8, 0.4]])
      Array(0.6444636, dtype=float32)
      >>> loss.get_config()
      {'reduction': 'auto', 'name': None, 'ragged': True}
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
    ) -> Array:
        """The reduced loss of ``y_pred`` (logits) against ``y_true`` (labels, < 0 padding)."""
        fn = "ranking.SigmoidCrossEntropyLoss"
        labels: Any = y_true
        logits: Any = y_pred
        weights: Any = sample_weight
        if self.ragged:
            if segment_ids is not None:
                raise ValueError(
                    f"{fn}: `segment_ids` cannot be combined with ragged=True; pass packed "
                    "items with ragged=False."
                )
            labels, logits, weights = self._to_dense(labels, logits, weights, fn)
        return sigmoid_cross_entropy(
            labels,
            logits,
            segment_ids=segment_ids,
            num_segments=num_segments,
            weights=weights,
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
        """``{"reduction", "name", "ragged"}``, the reduction as given."""
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SigmoidCrossEntropyLoss:
        """Rebuilds the object from :meth:`get_config`'s dict."""
        return cls(**config)
