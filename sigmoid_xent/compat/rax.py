"""rax's ``pointwise_sigmoid_loss`` with rax's signature, computed by sigmoid_xent's core.

Replace ``rax.pointwise_sigmoid_loss`` with this function: same arguments
``(scores, labels, *, where, segments, weights, reduce_fn)``, same label clipping, masking,
weighting and reduction rules (measured against rax 0.4.0), with the library's stable value
(finite at ``±inf`` scores, where rax's formula gives NaN) and custom-VJP gradients. Pure JAX:
rax is not imported.

Note that rax's labels are clipped to [0, 1]: a label of -1 is *not* padding here (it becomes a
negative item) and graded labels above 1 become 1. For TF-Ranking's rules (label < 0 is padding,
graded labels used as given) use :func:`sigmoid_xent.ranking.sigmoid_cross_entropy`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

import sigmoid_xent
from sigmoid_xent import _checks
from sigmoid_xent.compat import _common

Array = jax.Array

__all__ = ["pointwise_sigmoid_loss"]

_FN = "compat.rax.pointwise_sigmoid_loss"


def pointwise_sigmoid_loss(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    segments: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    reduce_fn: Callable[..., Any] | None = jnp.mean,
) -> Array:
    r"""rax's ``pointwise_sigmoid_loss``: the sigmoid cross-entropy of every item, reduced.

    With labels clipped to [0, 1], :math:`y_i = \mathrm{clip}(y_i, 0, 1)`, weights :math:`w_i`
    (1 when None) and :math:`m_i` the ``where`` mask (all True when None):

    .. math::

        \ell_i = w_i \big(\max(s_i, 0) - s_i y_i + \log(1 + e^{-|s_i|})\big), \qquad
        \texttt{jnp.mean} = \frac{\sum_i m_i \ell_i}{\sum_i m_i}, \qquad
        \texttt{jnp.sum} = \sum_i m_i \ell_i

    exactly as rax computes them:

    - ``scores``, ``labels`` and ``weights`` broadcast against each other (explicitly, so it also
      works under ``jax_numpy_rank_promotion="raise"``); ``where`` broadcasts to that shape.
    - ``reduce_fn=jnp.mean``: the masked mean above; 0 when every item is masked (or there are
      none), unless an item's loss, masked or not, is NaN (then NaN, as rax).
    - ``reduce_fn=jnp.sum``: the masked sum.
    - ``reduce_fn=None``: the weighted per-item losses, 0 where ``where`` is False.
    - any other callable: ``reduce_fn(losses, where=where)`` on the weighted per-item losses
      (masked items keep their loss values, as rax passes them) with ``where`` as given; it runs
      outside this function's compiled program, so a new lambda on every call does not recompile.
    - ``segments``: accepted (also traced) and ignored, as rax does for every pointwise loss: each
      item's loss is its own and the mean runs over items, so segments change nothing and nothing
      is built from them (no O(n²) mask).

    The values are rax's where rax's are finite; where rax's formula gives NaN (``±inf`` scores)
    these are the exact limits (0 for an agreeing label), and a zero weight removes an item even
    if its loss is infinite. Gradients (scores, labels, weights) come from the core's custom
    VJP; labels outside [0, 1] get the derivative of ``jnp.clip`` (0 outside, 1/2 at the ends).
    The result has the scores' dtype (rax promotes it with the labels' and weights' dtypes);
    16-bit scores are computed in float32.

    Args:
      scores: Float ``[..., list_size]`` scores (logits).
      labels: Relevance labels broadcastable with ``scores``; clipped to [0, 1]. Integer and
        bool labels are cast.
      where: Optional mask broadcastable to the loss shape; nonzero/True = valid item.
      segments: Optional array of segment ids broadcastable to the loss shape; no effect.
      weights: Optional per-item weights broadcastable with ``scores``.
      reduce_fn: ``jnp.mean`` (default), ``jnp.sum``, None, or any callable taking
        ``(losses, where=...)``.

    Returns:
      A scalar for ``jnp.mean``/``jnp.sum``; the per-item losses (broadcast shape) for None;
      whatever ``reduce_fn`` returns otherwise.

    Raises:
      TypeError: integer or bool ``scores``; a ``reduce_fn`` that is neither None nor callable.
      ValueError: shapes of ``scores``, ``labels``, ``weights`` that do not broadcast, or a
        ``where``/``segments`` that does not broadcast to the loss shape.

    Examples:
      >>> import jax.numpy as jnp
      >>> from sigmoid_xent.compat import rax
      >>> scores = jnp.array([[1., -2., 0.5], [3., 0., -1.]])
      >>> labels = jnp.array([[1., 0., 2.], [-1., 1., 0.5]])
      >>> rax.pointwise_sigmoid_loss(scores, labels)
      Array(0.9115438, dtype=float32)
      >>> mask = jnp.array([[True, False, True], [False, False, True]])
      >>> rax.pointwise_sigmoid_loss(scores, labels, where=mask, reduce_fn=None)
      Array([[0.3132617, 0.       , 0.474077 ],
             [0.       , 0.       , 0.8132617]], dtype=float32)
    """
    fn = _FN
    s = _common.float_array(scores, fn, "scores")
    y = _common.as_float(labels, s.dtype, "labels", fn)
    cd = _checks.compute_dtype(s.dtype)
    w = None if weights is None else _common.as_float(weights, cd, "weights", fn)
    shape = _common.broadcast_shape(fn, "rax", scores=s, labels=y, weights=w)
    if reduce_fn is None:
        reduction = "none"
    elif reduce_fn is jnp.mean:
        reduction = "mean"
    elif reduce_fn is jnp.sum:
        reduction = "sum"
    elif callable(reduce_fn):
        reduction = "custom"
    else:
        raise TypeError(
            f"{fn}: `reduce_fn` must be None or a callable such as jnp.mean or jnp.sum, got "
            f"{type(reduce_fn).__name__} {reduce_fn!r}."
        )
    if segments is not None:
        _common.check_broadcastable(segments, shape, "segments", fn, target="loss")
    if reduction == "custom":
        losses = _pointwise(s, y, w, None, reduction="none")
        return reduce_fn(losses, where=where)  # type: ignore[misc]
    mask = None
    if where is not None:
        mask = where if isinstance(where, jax.Array) else jnp.asarray(where)
        if not (mask.dtype == jnp.bool_ or jnp.issubdtype(mask.dtype, jnp.number)):
            raise TypeError(f"{fn}: `where` must be a boolean mask, got {_common.describe(where)}.")
        _common.check_broadcastable(mask, shape, "where", fn, target="loss")
    return _pointwise(s, y, w, mask, reduction=reduction)


@functools.partial(jax.jit, static_argnames="reduction")
def _pointwise(s: Array, y: Array, w: Array | None, mask: Array | None, *, reduction: str) -> Array:
    cd = _checks.compute_dtype(s.dtype)
    arrays = (s, y) if w is None else (s, y, w)
    shape = jnp.broadcast_shapes(*(a.shape for a in arrays))
    s, y = jnp.broadcast_to(s, shape), jnp.broadcast_to(y, shape)
    losses = sigmoid_xent.sigmoid_cross_entropy_with_logits(jnp.clip(y, 0, 1), s).astype(cd)
    if w is not None:
        losses = _common.times(losses, jnp.broadcast_to(w.astype(cd), shape))
    if mask is not None:
        mask = jnp.broadcast_to(mask if mask.dtype == jnp.bool_ else mask != 0, shape)
    if reduction == "none":
        if mask is not None:
            losses = jnp.where(mask, losses, jnp.zeros_like(losses))
        return losses.astype(s.dtype)
    masked = losses if mask is None else jnp.where(mask, losses, jnp.zeros_like(losses))
    if reduction == "sum":
        return sigmoid_xent.reduce_loss(masked, reduction="sum").astype(s.dtype)
    # jnp.mean, as rax's safe_reduce: sum / count, 0 instead of the NaN of an empty or fully
    # masked mean unless some item's loss (masked or not) is NaN. Written without forming 0 / 0,
    # so jax_debug_nans stays quiet for inputs without NaN.
    if mask is None:
        count = jnp.asarray(losses.size, cd)
        mean = sigmoid_xent.reduce_loss(losses, reduction="sum_over_batch_size")
    else:
        count = jnp.sum(mask, dtype=cd)
        mean = sigmoid_xent.reduce_loss(masked, mask, reduction="sum_by_nonzero_weights")
    nan_or_zero = jnp.sum(jnp.where(jnp.isnan(losses), losses, jnp.zeros_like(losses)))
    mean = jnp.where(jnp.isnan(mean) & ~jnp.isnan(nan_or_zero), jnp.zeros_like(mean), mean)
    return jnp.where(count == 0, nan_or_zero, mean).astype(s.dtype)
