"""TensorFlow v1 and Keras compatible losses built on the stable core."""

from __future__ import annotations

import dataclasses
import functools
import operator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from sigmoid_xent import _checks, ranking
from sigmoid_xent._core import (
    binary_cross_entropy,
    sigmoid_cross_entropy_with_logits,
    smooth_labels,
)
from sigmoid_xent._mask import hide
from sigmoid_xent.reductions import (
    Reduction,
    compiled_reduction,
    safe_divide,
    weighted_reduction,
)

Array = jax.Array

__all__ = ["BinaryCrossentropy", "binary_crossentropy", "sigmoid_cross_entropy"]


def sigmoid_cross_entropy(
    multi_class_labels: ArrayLike,
    logits: ArrayLike,
    weights: ArrayLike = 1.0,
    label_smoothing: ArrayLike = 0.0,
    reduction: str | Reduction | None = Reduction.SUM_BY_NONZERO_WEIGHTS,
    *,
    where: ArrayLike | None = None,
) -> Array:
    r"""``tf.compat.v1.losses.sigmoid_cross_entropy``: weighted, label-smoothed and reduced.

    .. math::

        L = \mathrm{reduce}\big(w \cdot \ell(z (1 - s) + s / 2, \ x)\big)

    with :math:`\ell` :func:`sigmoid_cross_entropy_with_logits` and ``reduce`` :func:`reduce_loss`.

    Args:
      multi_class_labels: ``[batch, num_classes]`` labels in [0, 1] (int, bool or float).
      logits: Float logits of the labels' shape.
      weights: A scalar, or an array of the losses' rank whose every dimension is 1 or the loss
        dimension (``[batch, 1]`` per sample; a bare ``[batch]`` is an error, as in TF).
      label_smoothing: Smoothing towards 1/2, ``s`` above, in [0, 1].
      reduction: A :class:`Reduction` or its name (TF spellings accepted).
      where: Optional bool mask broadcastable to ``logits``; False elements are absent.

    Returns:
      The reduced loss in ``logits``' dtype: a scalar, or ``logits``' shape for ``none``.

    Raises:
      ValueError: None, mismatched shapes or weights, smoothing outside [0, 1], a bad reduction.
      TypeError: integer ``logits``, or a non-bool ``where``.

    Examples:
      >>> import jax.numpy as jnp
      >>> import sigmoid_xent as sx
      >>> sx.sigmoid_cross_entropy(jnp.array([[0., 1.], [1., 0.]]),
      ...     jnp.array([[-2., 3.], [0.5, 1.]]), weights=jnp.array([[1.], [0.]]))
      Array(0.08775769, dtype=float32)
    """
    fn = "sigmoid_cross_entropy"
    Reduction.parse(reduction, fn)
    _checks.not_none(multi_class_labels, "multi_class_labels", fn)
    _checks.not_none(logits, "logits", fn)
    _checks.not_none(weights, "weights", fn)
    weights = _checks.as_float(weights, jnp.float32, "weights", fn)
    x = _checks.float_array(logits, fn)
    z = _checks.as_float(multi_class_labels, x.dtype, "multi_class_labels", fn)
    _checks.same_shape(z, x, fn, names=("multi_class_labels", "logits"))
    w_shape = tuple(np.shape(weights))
    if w_shape and (
        len(w_shape) != x.ndim
        or any(w not in (1, d) for w, d in zip(w_shape, x.shape, strict=True))
    ):
        raise ValueError(
            f"{fn}: `weights` of shape {w_shape} must be a scalar or have the losses' rank "
            f"{x.ndim} with every dimension 1 or equal to the losses shape {x.shape} "
            "(use [batch, 1] for per-sample weights)."
        )
    cd = _checks.compute_dtype(x.dtype)
    smoothing = _checks.label_smoothing(label_smoothing, z.shape, cd, fn)
    mask = _checks.where_mask(where, x.shape, fn)
    return _tf_v1_loss(z, x, weights, smoothing, mask, Reduction.parse(reduction, fn))


@functools.partial(jax.jit, static_argnums=(5,))
def _tf_v1_loss(
    z: Array,
    x: Array,
    weights: Array,
    smoothing: Array | None,
    mask: Array | None,
    reduction: Reduction,
) -> Array:
    cd = _checks.compute_dtype(x.dtype)
    z, x = hide(mask, z), hide(mask, x)
    losses = sigmoid_cross_entropy_with_logits(smooth_labels(z, smoothing, cd), x.astype(cd))
    out = weighted_reduction(losses, weights, reduction, "sigmoid_cross_entropy", where=mask)
    return out.astype(x.dtype)


def binary_crossentropy(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    from_logits: bool = False,
    label_smoothing: ArrayLike = 0.0,
    axis: int = -1,
    *,
    where: ArrayLike | None = None,
) -> Array:
    r"""Keras' ``binary_crossentropy`` function: the elementwise loss, averaged over ``axis``.

    .. math::

        z' = z (1 - s) + s / 2, \qquad L = \frac{1}{n} \sum_{\mathrm{axis}} \ell(z', y)

    with :math:`\ell` :func:`sigmoid_cross_entropy_with_logits` if ``from_logits``, else
    :func:`binary_cross_entropy`, and :math:`n` the number of present elements along ``axis``.

    Args:
      y_true: Targets of ``y_pred``'s shape.
      y_pred: Probabilities, or logits if ``from_logits``.
      from_logits: Whether ``y_pred`` holds logits.
      label_smoothing: Smoothing towards 1/2, ``s`` above, in [0, 1].
      axis: The axis averaged over.
      where: Optional bool mask broadcastable to ``y_pred``; False elements are absent.

    Returns:
      The per-sample loss: ``y_pred``'s shape without ``axis``, in ``y_pred``'s dtype.

    Raises:
      ValueError: mismatched shapes, None, ``label_smoothing`` outside [0, 1], or a bad ``axis``.
      TypeError: integer ``y_pred``, a non-int ``axis`` or a non-bool ``where``.

    Examples:
      >>> import jax.numpy as jnp
      >>> import sigmoid_xent as sx
      >>> sx.binary_crossentropy(jnp.array([[0., 1.], [0., 0.]]),
      ...                        jnp.array([[0.6, 0.4], [0.4, 0.6]]))
      Array([0.9162905 , 0.71355796], dtype=float32)
    """
    return _keras_per_sample(y_true, y_pred, from_logits, label_smoothing, axis, where)[0]


def _keras_per_sample(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    from_logits: bool,
    label_smoothing: ArrayLike,
    axis: int,
    where: ArrayLike | None,
) -> tuple[Array, Array | None]:
    """:func:`binary_crossentropy`'s checks and per-sample loss, with the samples' presence."""
    fn = "binary_crossentropy"
    pred = _checks.float_array(y_pred, fn, name="y_pred")
    true = _checks.as_float(y_true, pred.dtype, "y_true", fn)
    _checks.same_shape(true, pred, fn, names=("y_true", "y_pred"))
    try:
        axis = operator.index(axis)
    except TypeError:
        raise TypeError(
            f"{fn}: `axis` must be an int (one axis, as Keras), got {axis!r} of type "
            f"{type(axis).__name__}."
        ) from None
    if not -max(pred.ndim, 1) <= axis < max(pred.ndim, 1) or pred.ndim == 0:
        raise ValueError(f"{fn}: `axis` {axis} is out of range for y_pred of shape {pred.shape}.")
    cd = _checks.compute_dtype(pred.dtype)
    smoothing = _checks.label_smoothing(label_smoothing, true.shape, cd, fn)
    mask = _checks.where_mask(where, pred.shape, fn, target="y_pred")
    return _keras_loss(true, pred, smoothing, mask, bool(from_logits), axis)


@functools.partial(jax.jit, static_argnums=(4, 5))
def _keras_loss(
    true: Array,
    pred: Array,
    smoothing: Array | None,
    mask: Array | None,
    from_logits: bool,
    axis: int,
) -> tuple[Array, Array | None]:
    """The per-sample loss, and which samples have a present element (None without a mask)."""
    cd = _checks.compute_dtype(pred.dtype)
    true, pred = hide(mask, true), hide(mask, pred, 0 if from_logits else 0.5)
    true = smooth_labels(true, smoothing, cd)
    if from_logits:
        elementwise = sigmoid_cross_entropy_with_logits(true, pred.astype(cd), where=mask)
    else:
        elementwise = binary_cross_entropy(true, pred.astype(cd), where=mask)
    if mask is None:
        return jnp.mean(elementwise, axis=axis).astype(pred.dtype), None
    present = jnp.broadcast_to(mask, pred.shape)
    count = jnp.sum(present.astype(cd), axis=axis)
    per_sample = safe_divide(jnp.sum(elementwise.astype(cd), axis=axis), count)
    return per_sample.astype(pred.dtype), jnp.any(present, axis=axis)


def keras_sample_weight(
    sample_weight: Any, loss_shape: tuple[int, ...], fn: str
) -> tuple[Array, tuple[int, ...]]:
    """tf.keras 2's rules (:func:`_checks.keras_weight_shape`): ``[batch]`` is per sample.

    Returns the weights as given (checked) and the shape they take; the reshape is left to the
    compiled reduction, so that it never touches a masked NaN weight outside it.
    """
    w = _checks.as_float(sample_weight, jnp.float32, "sample_weight", fn)
    return w, _checks.keras_weight_shape(w.shape, tuple(loss_shape), fn, batch_vector=True)


def _is_ragged(value: Any) -> bool:
    """A Python list/tuple of 1-D rows whose lengths are not all equal."""
    if not isinstance(value, (list, tuple)) or not value:
        return False
    if not all(np.ndim(row) == 1 for row in value):
        return False
    return len({int(np.shape(row)[0]) for row in value}) > 1


def _ragged_per_sample(
    y_true: Any, y_pred: Any, from_logits: bool, label_smoothing: ArrayLike, axis: int, fn: str
) -> Array:
    """tf.keras 2 on ragged tensors: the loss of each row is the mean over its own length."""
    for value, name in ((y_true, "y_true"), (y_pred, "y_pred")):
        if not (isinstance(value, (list, tuple)) and all(np.ndim(row) == 1 for row in value)):
            raise ValueError(
                f"{fn}: ragged input needs both `y_true` and `y_pred` as lists of 1-D rows, "
                f"got `{name}` of type {type(value).__name__} whose rows are not all 1-D."
            )
    lengths = [int(np.shape(row)[0]) for row in y_true]
    pred_lengths = [int(np.shape(row)[0]) for row in y_pred]
    if lengths != pred_lengths:
        raise ValueError(
            f"{fn}: ragged `y_true` and `y_pred` must have rows of equal lengths, got y_true "
            f"lengths {lengths} and y_pred lengths {pred_lengths}."
        )
    if min(lengths) == 0:
        raise ValueError(
            f"{fn}: every ragged row must hold at least one value (its loss is the mean over "
            f"the row), got row lengths {lengths}."
        )
    if axis not in (-1, 1):
        raise ValueError(
            f"{fn}: ragged rows are averaged over their own length, the last axis: `axis` must "
            f"be -1 (or 1), got {axis}."
        )
    pred, segment_ids = ranking.pack(list(y_pred))
    true, _ = ranking.pack(list(y_true))
    # Each value is a row of one: binary_crossentropy's mean over it is the elementwise loss.
    elementwise = binary_crossentropy(
        true[:, None], pred[:, None], from_logits, label_smoothing, axis=-1
    )
    cd = _checks.compute_dtype(elementwise.dtype)
    sums = jax.ops.segment_sum(elementwise.astype(cd), segment_ids, len(lengths))
    return (sums / jnp.asarray(lengths, cd)).astype(elementwise.dtype)


@dataclasses.dataclass(frozen=True)
class BinaryCrossentropy:
    r"""Keras' ``BinaryCrossentropy`` loss object for plain JAX code, immutable and hashable.

    Calling it averages over ``axis`` per sample (:func:`binary_crossentropy`), weights each
    sample and reduces, as Keras 2; ragged rows are averaged over their own length:

    .. math::

        L = \mathrm{reduce}\big(w_b \, \mathrm{binary\_crossentropy}(y_b, p_b)\big)

    For Keras models pass :class:`sigmoid_xent.keras.BinaryCrossentropy` to ``model.compile``
    instead: Keras weights, masks and saves only a ``keras.losses.Loss``.

    Args:
      from_logits: Whether ``y_pred`` holds logits (exact) or probabilities.
      label_smoothing: Smoothing towards 1/2.
      axis: The axis averaged over per sample (-1 for ragged rows).
      reduction: A :class:`Reduction` or its name (default ``auto``); kept as given in the config.
      name: A name, for the config.

    Raises:
      ValueError: an unknown reduction.

    Examples:
      >>> import jax.numpy as jnp
      >>> import sigmoid_xent as sx
      >>> bce = sx.BinaryCrossentropy()
      >>> bce(jnp.array([[0., 1.], [0., 0.]]), jnp.array([[0.6, 0.4], [0.4, 0.6]]))
      Array(0.81492424, dtype=float32)
    """

    from_logits: bool = False
    label_smoothing: float = 0.0
    axis: int = -1
    reduction: str | Reduction | None = "auto"
    name: str | None = "binary_crossentropy"

    def __post_init__(self) -> None:
        Reduction.parse(self.reduction, "BinaryCrossentropy")  # Fail at construction.

    def __call__(
        self,
        y_true: ArrayLike,
        y_pred: ArrayLike,
        sample_weight: ArrayLike | None = None,
        *,
        where: ArrayLike | None = None,
    ) -> Array:
        """The reduced loss of ``y_pred`` against ``y_true``.

        Args:
          y_true: Targets of ``y_pred``'s shape, or ragged rows (a list of 1-D rows).
          y_pred: Probabilities, or logits if ``from_logits``; ragged like ``y_true``.
          sample_weight: None, a scalar, ``[batch]``, or broadcastable to the per-sample loss
            ``[batch, d0, .., dN-1]`` (one more trailing dimension of 1 is squeezed).
          where: Optional bool mask broadcastable to ``y_pred``: a sample's loss is the mean over
            its present elements, and a sample with none is absent from the reduction.

        Returns:
          A scalar in ``y_pred``'s dtype; the per-sample losses for ``none``.

        Raises:
          ValueError: :func:`binary_crossentropy`'s errors, a ``sample_weight`` of another shape,
            ragged rows of different lengths, or ``where`` with ragged rows.
          TypeError: integer ``y_pred``, or a non-bool ``where``.

        Examples:
          >>> import jax.numpy as jnp
          >>> import sigmoid_xent as sx
          >>> y_true, y_pred = jnp.array([[0., 1.], [0., 0.]]), jnp.array([[0.6, 0.4], [0.4, 0.6]])
          >>> sx.BinaryCrossentropy()(y_true, y_pred, sample_weight=jnp.array([1., 0.]))
          Array(0.45814526, dtype=float32)
        """
        fn = "BinaryCrossentropy"
        present = None
        if _is_ragged(y_true) or _is_ragged(y_pred):
            if where is not None:
                raise ValueError(f"{fn}: `where` is not supported with ragged input.")
            per_sample = _ragged_per_sample(
                y_true, y_pred, self.from_logits, self.label_smoothing, self.axis, fn
            )
        else:
            per_sample, present = _keras_per_sample(
                y_true, y_pred, self.from_logits, self.label_smoothing, self.axis, where
            )
        weights, shape = None, None
        if sample_weight is not None:
            weights, shape = keras_sample_weight(sample_weight, per_sample.shape, fn)
        red = Reduction.parse(self.reduction, fn)
        return compiled_reduction(per_sample, weights, red, fn, present, shape)

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments as a plain dict, the reduction as given.

        Returns:
          ``{"from_logits", "label_smoothing", "axis", "reduction", "name"}`` and their values.

        Examples:
          >>> import sigmoid_xent as sx
          >>> sx.BinaryCrossentropy(from_logits=True).get_config()["from_logits"]
          True
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BinaryCrossentropy:
        """Rebuilds the object from :meth:`get_config`'s dict.

        Args:
          config: A dict of constructor arguments.

        Returns:
          A loss object equal to the one the config came from.

        Examples:
          >>> import sigmoid_xent as sx
          >>> bce = sx.BinaryCrossentropy(reduction="sum")
          >>> sx.BinaryCrossentropy.from_config(bce.get_config()) == bce
          True
        """
        return cls(**config)
