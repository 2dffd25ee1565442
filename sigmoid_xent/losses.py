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
from sigmoid_xent.reductions import Reduction, compiled_reduction, weighted_reduction

Array = jax.Array

__all__ = ["BinaryCrossentropy", "binary_crossentropy", "sigmoid_cross_entropy"]


def sigmoid_cross_entropy(
    multi_class_labels: ArrayLike,
    logits: ArrayLike,
    weights: ArrayLike = 1.0,
    label_smoothing: ArrayLike = 0.0,
    reduction: str | Reduction | None = Reduction.SUM_BY_NONZERO_WEIGHTS,
) -> Array:
    r"""``tf.compat.v1.losses.sigmoid_cross_entropy``: weighted, label-smoothed and reduced.

    .. math::

        z' = z (1 - s) + s / 2, \qquad
        L = \mathrm{reduce}\big(w \cdot \ell(z', x)\big)

    with :math:`\ell` the stable elementwise loss and ``reduce`` as in :func:`reduce_loss`. The
    default ``sum_by_nonzero_weights`` divides by the number of non-zero broadcast weights
    (negative ones count); ``mean`` divides by their sum; both give 0 when the denominator is 0.

    Args:
      multi_class_labels: ``[batch, num_classes]`` labels in [0, 1] (int, bool or float).
      logits: Float logits of the labels' shape.
      weights: A scalar, or an array of the losses' rank whose every dimension is 1 or equal to
        the loss dimension (``[batch, 1]`` per sample). A bare ``[batch]`` vector for 2-D losses is
        a ValueError, as in TF (despite its docstring).
      label_smoothing: Smoothing towards 1/2, ``s`` above.
      reduction: A :class:`Reduction` or its name (TF spellings accepted).

    Returns:
      The reduced loss in ``logits``' dtype; ``logits``' shape for ``none``, else a scalar.

    Raises:
      ValueError: None arguments, shape mismatch, weights of another rank or of a dimension
        neither 1 nor equal, or an unknown reduction.
      TypeError: integer ``logits``.

    Examples:
      >>> import jax.numpy as jnp
      >>> import sigmoid_xent as sx
      >>> labels = jnp.array([[0., 1.], [1., 0.]])
      >>> logits = jnp.array([[-2., 3.], [0.5, 1.]])
      >>> sx.sigmoid_cross_entropy(labels, logits, weights=jnp.array([[1.], [0.]]))
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
    smoothing = _checks.label_smoothing(label_smoothing, z.shape, _checks.compute_dtype(x.dtype), fn)
    return _tf_v1_loss(z, x, weights, smoothing, Reduction.parse(reduction, fn))


@functools.partial(jax.jit, static_argnums=(4,))
def _tf_v1_loss(
    z: Array, x: Array, weights: Array, smoothing: Array | None, reduction: Reduction
) -> Array:
    cd = _checks.compute_dtype(x.dtype)
    losses = sigmoid_cross_entropy_with_logits(smooth_labels(z, smoothing, cd), x.astype(cd))
    return weighted_reduction(losses, weights, reduction, "sigmoid_cross_entropy").astype(x.dtype)


def binary_crossentropy(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    from_logits: bool = False,
    label_smoothing: ArrayLike = 0.0,
    axis: int = -1,
) -> Array:
    r"""Keras' ``binary_crossentropy`` function: elementwise loss, then the mean over ``axis``.

    With ``from_logits=True`` the elementwise loss is the stable
    :func:`sigmoid_cross_entropy_with_logits`; otherwise the probability-space
    :func:`binary_cross_entropy` of tf.keras 2. Labels are smoothed to ``z (1 - s) + s / 2``.

    Args:
      y_true: Targets of ``y_pred``' shape.
      y_pred: Probabilities, or logits if ``from_logits``.
      from_logits: Whether ``y_pred`` holds logits.
      label_smoothing: Smoothing towards 1/2.
      axis: The axis averaged over.

    Returns:
      The per-sample loss: ``y_pred``' shape without ``axis``, in ``y_pred``' dtype.

    Raises:
      ValueError: shape mismatch, a None argument, or ``axis`` out of range.
      TypeError: integer ``y_pred``.

    Examples:
      >>> import jax.numpy as jnp
      >>> import sigmoid_xent as sx
      >>> sx.binary_crossentropy(jnp.array([[0., 1.], [0., 0.]]),
      ...                        jnp.array([[0.6, 0.4], [0.4, 0.6]]))
      Array([0.9162905 , 0.71355796], dtype=float32)
    """
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
    smoothing = _checks.label_smoothing(label_smoothing, true.shape, _checks.compute_dtype(pred.dtype), fn)
    return _keras_loss(true, pred, smoothing, bool(from_logits), axis)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _keras_loss(
    true: Array, pred: Array, smoothing: Array | None, from_logits: bool, axis: int
) -> Array:
    cd = _checks.compute_dtype(pred.dtype)
    true = smooth_labels(true, smoothing, cd)
    if from_logits:
        elementwise = sigmoid_cross_entropy_with_logits(true, pred.astype(cd))
    else:
        elementwise = binary_cross_entropy(true, pred.astype(cd))
    return jnp.mean(elementwise, axis=axis).astype(pred.dtype)


def keras_sample_weight(sample_weight: Any, loss_shape: tuple[int, ...], fn: str) -> Array:
    """tf.keras 2's rules (:func:`_checks.keras_weight_shape`): ``[batch]`` is per sample."""
    w = _checks.as_float(sample_weight, jnp.float32, "sample_weight", fn)
    shape = _checks.keras_weight_shape(w.shape, tuple(loss_shape), fn, batch_vector=True)
    return w.reshape(shape)


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
    """Keras' ``BinaryCrossentropy`` loss object for plain JAX code, immutable and hashable.

    ``__call__(y_true, y_pred, sample_weight=None)`` computes :func:`binary_crossentropy` per
    sample, multiplies by ``sample_weight`` (a scalar, ``[batch]``, or broadcastable to the
    per-sample loss shape ``[batch, d0, .., dN-1]``; one more trailing dimension of 1 is squeezed,
    as Keras 2) and applies ``reduction`` (``auto`` = ``sum_over_batch_size``). Unlike Keras 2,
    ``y_true`` and ``y_pred`` must have equal shapes.

    Ragged input, as tf.keras 2's class takes ``tf.RaggedTensor``: ``y_true`` and ``y_pred`` may
    be Python lists of 1-D rows of unequal lengths (the same lengths in both). Each row's loss is
    the mean over its own length; ``sample_weight`` (a scalar or ``[rows]``) and the reduction
    then apply to the ``[rows]`` per-row losses.

    Being a frozen dataclass, an instance can be closed over or passed as a static argument to
    ``jax.jit``. ``get_config()`` / ``from_config()`` round-trip it.

    **Keras users**: pass :class:`sigmoid_xent.keras.BinaryCrossentropy` to ``model.compile``,
    not this class. Keras treats any loss that is not a ``keras.losses.Loss`` as a plain function
    and multiplies its result by ``sample_weight`` itself; this object has already reduced to a
    scalar, so weighted ``fit``/``evaluate`` values come out wrong, masks are ignored and a
    saved model does not load. The Keras class returns per-sample losses and lets Keras weight,
    mask and reduce them, and it is registered for saving.

    Args:
      from_logits: Whether ``y_pred`` holds logits (recommended: exact) or probabilities.
      label_smoothing: Smoothing towards 1/2.
      axis: The axis averaged over per sample (-1 for ragged rows).
      reduction: A :class:`Reduction` or its name; kept as given in the config.
      name: A name, for the config.

    Examples:
      >>> import jax.numpy as jnp
      >>> import sigmoid_xent as sx
      >>> y_true = jnp.array([[0., 1.], [0., 0.]])
      >>> y_pred = jnp.array([[0.6, 0.4], [0.4, 0.6]])
      >>> bce = sx.BinaryCrossentropy()
      >>> bce(y_true, y_pred)
      Array(0.81492424, dtype=float32)
      >>> bce(y_true, y_pred, sample_weight=jnp.array([1., 0.]))
      Array(0.45814526, dtype=float32)
      >>> sx.BinaryCrossentropy(reduction="sum")(y_true, y_pred)
      Array(1.6298485, dtype=float32)

      Ragged rows (each row's mean over its own length, then the mean over rows):

      >>> ragged = sx.BinaryCrossentropy(reduction="none")
      >>> ragged([[0., 1.], [0., 0., 1.]], [[0.6, 0.4], [0.4, 0.6, 0.5]])
      Array([0.9162905 , 0.70675427], dtype=float32)
      >>> bce([[0., 1.], [0., 0., 1.]], [[0.6, 0.4], [0.4, 0.6, 0.5]])
      Array(0.81152236, dtype=float32)
    """

    from_logits: bool = False
    label_smoothing: float = 0.0
    axis: int = -1
    reduction: str | Reduction | None = "auto"
    name: str | None = "binary_crossentropy"

    def __post_init__(self) -> None:
        Reduction.parse(self.reduction, "BinaryCrossentropy")  # Fail at construction.

    def __call__(
        self, y_true: ArrayLike, y_pred: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> Array:
        """The reduced loss (per-sample losses of shape ``[batch, d0, .., dN-1]`` for none)."""
        fn = "BinaryCrossentropy"
        if _is_ragged(y_true) or _is_ragged(y_pred):
            per_sample = _ragged_per_sample(
                y_true, y_pred, self.from_logits, self.label_smoothing, self.axis, fn
            )
        else:
            per_sample = binary_crossentropy(
                y_true, y_pred, self.from_logits, self.label_smoothing, self.axis
            )
        weights = None
        if sample_weight is not None:
            weights = keras_sample_weight(sample_weight, per_sample.shape, fn)
        return compiled_reduction(per_sample, weights, Reduction.parse(self.reduction, fn), fn)

    def get_config(self) -> dict[str, Any]:
        """A plain dict of the constructor arguments (the reduction as given)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BinaryCrossentropy:
        """Rebuilds the object from :meth:`get_config`'s dict."""
        return cls(**config)
