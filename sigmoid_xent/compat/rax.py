"""rax's ``pointwise_sigmoid_loss`` with rax's signature, computed by sigmoid_xent's core.

Replace ``rax.pointwise_sigmoid_loss`` with this function: same arguments
``(scores, labels, *, where, segments, weights, reduce_fn)``, same label clipping, masking,
weighting and reduction rules (tested against rax 0.4.0), with the library's stable value
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
from sigmoid_xent._mask import hide
from sigmoid_xent.reductions import Reduction, weighted_reduction

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

    With labels clipped to [0, 1], weights :math:`w_i` (1 when None) and :math:`m_i` the
    ``where`` mask (all True when None):

    .. math::

        \ell_i = w_i \big(\max(s_i, 0) - s_i y_i + \log(1 + e^{-|s_i|})\big), \qquad
        \texttt{jnp.mean} = \frac{\sum_i m_i \ell_i}{\sum_i m_i}, \qquad
        \texttt{jnp.sum} = \sum_i m_i \ell_i

    As rax: ``scores``, ``labels`` and ``weights`` broadcast against each other, ``where``
    (nonzero = valid) to that shape; the mean of no valid item is 0; ``reduce_fn=None`` gives the
    weighted per-item losses; any other callable gets ``reduce_fn(losses, where=where)``, outside
    this function's compiled program. ``segments`` is accepted and ignored, as rax does for
    every pointwise loss. Unlike rax: a masked item is absent (loss 0, zero gradients, no share
    in the mean) even if its inputs are NaN or inf; finite values and gradients at ``±inf``
    scores; the result has the scores' dtype (16-bit scores computed in float32).

    Args:
      scores: Float ``[..., list_size]`` scores (logits).
      labels: Relevance labels broadcastable with ``scores``; clipped to [0, 1].
      where: Optional mask broadcastable to the loss shape; nonzero/True = valid item.
      segments: Optional segment ids broadcastable to the loss shape; no effect.
      weights: Optional per-item weights broadcastable with ``scores``.
      reduce_fn: ``jnp.mean`` (default), ``jnp.sum``, None, or any callable taking
        ``(losses, where=...)``.

    Returns:
      A scalar for ``jnp.mean``/``jnp.sum``; the per-item losses (broadcast shape, 0 at masked
      items) for None and the custom callable's input; whatever that callable returns.

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
    s = _checks.float_array(scores, fn, "scores")
    y = _checks.option_value(labels, s.dtype, "labels", fn)
    cd = _checks.compute_dtype(s.dtype)
    w = None if weights is None else _checks.option_value(weights, cd, "weights", fn)
    shape = _checks.broadcast_together(fn, "rax", scores=s, labels=y, weights=w)
    if reduce_fn is None:
        reduction = Reduction.NONE
    elif reduce_fn is jnp.mean:
        reduction = Reduction.SUM_OVER_BATCH_SIZE  # the mean over the present items
    elif reduce_fn is jnp.sum:
        reduction = Reduction.SUM
    elif callable(reduce_fn):
        reduction = None
    else:
        raise TypeError(
            f"{fn}: `reduce_fn` must be None or a callable such as jnp.mean or jnp.sum, got "
            f"{type(reduce_fn).__name__} {reduce_fn!r}."
        )
    if segments is not None:
        _checks.broadcastable_to(segments, shape, "segments", fn, target="loss")
    mask = None
    if where is not None:
        # rax reads a numeric mask as "nonzero = valid".
        mask = where if isinstance(where, jax.Array) else jnp.asarray(where)
        if mask.dtype != jnp.bool_ and jnp.issubdtype(mask.dtype, jnp.number):
            mask = mask != 0
        mask = _checks.where_mask(mask, shape, fn, target="loss")
    if reduction is None:
        losses = _pointwise(s, y, w, mask, reduction=Reduction.NONE)
        return reduce_fn(losses, where=where)  # type: ignore[misc]
    return _pointwise(s, y, w, mask, reduction=reduction)


@functools.partial(jax.jit, static_argnames="reduction")
def _pointwise(
    s: Array, y: Array, w: Array | None, mask: Array | None, *, reduction: Reduction
) -> Array:
    arrays = (s, y) if w is None else (s, y, w)
    shape = jnp.broadcast_shapes(*(jnp.shape(a) for a in arrays))
    s, y = hide(mask, jnp.broadcast_to(s, shape)), hide(mask, jnp.broadcast_to(y, shape))
    losses = sigmoid_xent.sigmoid_cross_entropy_with_logits(jnp.clip(y, 0, 1), s, where=mask)
    return weighted_reduction(losses, w, reduction, _FN, where=mask)
