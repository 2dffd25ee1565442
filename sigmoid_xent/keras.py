r"""Keras 3 loss classes computed by the stable core: ``keras.losses.Loss`` subclasses.

For ``model.compile(loss=...)`` with Keras 3 on the JAX backend::

    model.compile(optimizer="adam", loss=sigmoid_xent.keras.BinaryCrossentropy(from_logits=True))

Why not the plain-JAX :class:`sigmoid_xent.BinaryCrossentropy`: Keras calls anything that is not
a ``keras.losses.Loss`` as a function and multiplies what it returns by ``sample_weight`` itself.
A loss object that already reduced to a scalar then gets weighted twice (a wrong value whenever
the weights are not all equal), masks are ignored, and a saved model cannot be loaded. The
classes here return the per-sample losses from ``call`` and leave the weighting, masking and
reduction to Keras's own ``Loss.__call__``, exactly as Keras's built-in losses do; only the
ranking loss, whose weights are per list, reduces itself (with TF-Ranking's rules).

The values are Keras 3's (on probabilities: Keras 3's clipping of ``y_pred`` to
``[epsilon, 1 - epsilon]`` and ``log(p)``, not tf.keras 2's ``log(p + epsilon)``); on logits
they come from :func:`sigmoid_xent.sigmoid_cross_entropy_with_logits` and
:func:`sigmoid_xent.sigmoid_focal_loss`, so the gradients are the custom VJP's (``-9.357623e-14``
at logit 30, label 1) and values and gradients stay finite at ``±inf`` logits (Keras's
``BinaryCrossentropy`` gives NaN there). With a 16-bit ``dtype`` the elementwise losses and their
per-sample means are computed in float32 and rounded once; Keras then weights and reduces in that
dtype, as for its own losses.

Each class is registered for Keras serialization (package ``sigmoid_xent``): a model saved with
``model.save("m.keras")`` loads with ``keras.models.load_model("m.keras")`` in any process that
imported ``sigmoid_xent.keras``, without ``custom_objects``.

Keras is an optional dependency: ``pip install 'sigmoid_xent[keras]'``. Importing this module
without it, or with a Keras backend other than JAX, is an ``ImportError`` saying what to do.
"""

from __future__ import annotations

import operator
from typing import Any

try:
    import keras
except ImportError as _err:  # keras missing, or its backend's package missing
    if _err.name == "keras":
        raise ImportError(
            "sigmoid_xent.keras needs Keras 3, which is not installed. Install it with "
            "`pip install 'sigmoid_xent[keras]'` (or `pip install 'keras>=3.15'`) and run it on "
            "the JAX backend (KERAS_BACKEND=jax)."
        ) from _err
    raise ImportError(
        f"sigmoid_xent.keras: Keras is installed but failed to import ({_err}). sigmoid_xent.keras "
        "runs on Keras's JAX backend: set the environment variable KERAS_BACKEND=jax before "
        "anything imports keras."
    ) from _err

import jax
import jax.numpy as jnp
import numpy as np

from sigmoid_xent import _checks, ranking, sigmoid_cross_entropy_with_logits
from sigmoid_xent.focal import plain_focal_loss

if int(keras.__version__.split(".")[0]) < 3:
    raise ImportError(
        f"sigmoid_xent.keras needs Keras 3, got keras {keras.__version__}. Upgrade with "
        "`pip install 'sigmoid_xent[keras]'`; for tf.keras 2 code without Keras, use the plain-JAX "
        "sigmoid_xent.BinaryCrossentropy."
    )
if keras.backend.backend() != "jax":
    raise ImportError(
        f"sigmoid_xent.keras runs on Keras's JAX backend, but Keras is using the "
        f"{keras.backend.backend()!r} backend. Set the environment variable KERAS_BACKEND=jax "
        'before anything imports keras (or "backend": "jax" in ~/.keras/keras.json).'
    )

Array = jax.Array

__all__ = [
    "AsymmetricLoss",
    "BinaryCrossentropy",
    "BinaryFocalCrossentropy",
    "SigmoidCrossEntropyLoss",
]

_PACKAGE = "sigmoid_xent"

#: Keras 3's reduction names (plus ``auto``, tf.keras 2's default, = ``sum_over_batch_size``).
KERAS_REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none")

#: The ranking loss also takes TF-Ranking's own reductions.
RANKING_REDUCTIONS = KERAS_REDUCTIONS + (
    "sum_by_nonzero_weights",
    "sum_over_nonzero_weights",
    "per_list",
    "list_mean",
)

# The ranking loss's names in the terms of sigmoid_xent.ranking.sigmoid_cross_entropy. Keras's
# "mean" is sum_over_batch_size; mean_with_sample_weight divides by the weights of the valid items.
_TO_RANKING = {
    "sum_over_batch_size": "sum_over_batch_size",
    "mean": "sum_over_batch_size",
    "sum": "sum",
    "none": "none",
    "mean_with_sample_weight": "mean",
    "sum_by_nonzero_weights": "sum_by_nonzero_weights",
    "sum_over_nonzero_weights": "sum_by_nonzero_weights",
    "per_list": "per_list",
    "list_mean": "list_mean",
}


# --------------------------------------------------------------------------- argument checks


def _reduction(reduction: Any, valid: tuple[str, ...], cls: str) -> str:
    """The lower-case name of ``reduction`` among ``valid`` (``auto`` and None accepted)."""
    if reduction is None:
        return "none"
    if isinstance(reduction, str):
        key = str.lower(reduction)
        key = "sum_over_batch_size" if key == "auto" else key
        if key in valid:
            return key
    raise ValueError(
        f"{cls}: `reduction` must be one of {list(valid)}, 'auto' or None (any case), got "
        f"{reduction!r}. Keras's 'mean' is 'sum_over_batch_size'; for sum(w * loss) / sum(w) "
        "use 'mean_with_sample_weight'."
    )


def _bool(value: Any, name: str, cls: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"{cls}: `{name}` must be a bool (True or False), got {value!r} of type "
            f"{type(value).__name__}."
        )
    return bool(value)


def _real(value: Any, name: str, cls: str, low: float, high: float, expected: str) -> float:
    """A Python float in [low, high]; a TypeError/ValueError naming the argument otherwise."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()  # 0-d arrays, as configs written by numpy code may hold
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(
            f"{cls}: `{name}` must be a real number ({expected}), got {value!r} of type "
            f"{type(value).__name__}."
        )
    result = float(value)
    if not low <= result <= high:
        raise ValueError(f"{cls}: `{name}` must be {expected}, got {value!r}.")
    return result


def _axis(axis: Any, cls: str) -> int:
    if isinstance(axis, (bool, np.bool_)):
        raise TypeError(f"{cls}: `axis` must be an int (one axis, as Keras), got {axis!r}.")
    try:
        return operator.index(axis)
    except TypeError:
        raise TypeError(
            f"{cls}: `axis` must be an int (one axis, as Keras), got {axis!r} of type "
            f"{type(axis).__name__}."
        ) from None


def _name(name: Any, cls: str) -> None:
    if name is not None and not isinstance(name, str):
        raise TypeError(
            f"{cls}: `name` must be a str or None, got {name!r} of type {type(name).__name__}."
        )


def _dtype(dtype: Any, cls: str) -> Any:
    """The policy Keras will build from ``dtype`` (checked here to name the argument)."""
    try:
        policy = keras.dtype_policies.get(dtype or keras.config.floatx())
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{cls}: `dtype` must be None, a float dtype name ('float32', 'bfloat16', ...) or a "
            f"keras.DTypePolicy, got {dtype!r} ({err})."
        ) from None
    if not jnp.issubdtype(jnp.dtype(policy.compute_dtype), jnp.floating):
        raise ValueError(
            f"{cls}: `dtype` must give a floating compute dtype, got {dtype!r} (compute dtype "
            f"{policy.compute_dtype})."
        )
    return policy


def _dtype_config(dtype: Any) -> Any:
    """``dtype`` as the config stores it: None, or the name of its policy."""
    if dtype is None:
        return None
    return keras.dtype_policies.get(dtype).name


def _match_rank(y_true: Array, y_pred: Array) -> tuple[Array, Array]:
    """Keras's rule when ranks differ by one and the larger has a trailing 1.

    A rank-1 partner is expanded (labels ``[batch]`` with predictions ``[batch, 1]``), else the
    trailing 1 is squeezed.
    """
    t, p = y_true.ndim, y_pred.ndim
    if t == p + 1 and y_true.shape[-1] == 1:
        if p == 1:
            y_pred = y_pred[:, None]
        else:
            y_true = jnp.squeeze(y_true, -1)
    elif p == t + 1 and y_pred.shape[-1] == 1:
        if t == 1:
            y_true = y_true[:, None]
        else:
            y_pred = jnp.squeeze(y_pred, -1)
    return y_true, y_pred


def _check_pair(y_true: Array, y_pred: Array, cls: str) -> None:
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"{cls}: `y_true` and `y_pred` must have the same shape (after Keras's rule for a "
            f"trailing dimension of 1), got y_true of shape {tuple(y_true.shape)} and y_pred of "
            f"shape {tuple(y_pred.shape)}."
        )


def _keras_weight_shape_ok(values: tuple[int, ...], weights: tuple[int, ...]) -> bool:
    """Whether Keras's ``reduce_weighted_values`` accepts ``weights`` for ``values``."""
    v, w = values, weights
    if len(v) == len(w) + 1 and v and v[-1] == 1:
        if len(w) == 1:
            w = w + (1,)
        else:
            v = v[:-1]
    elif len(w) == len(v) + 1 and w and w[-1] == 1:
        if len(v) == 1:
            v = v + (1,)
        else:
            w = w[:-1]
    try:
        np.broadcast_shapes(v, w)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- elementwise pieces


def _smooth(z: Array, label_smoothing: float) -> Array:
    if label_smoothing:
        return z * (1.0 - label_smoothing) + 0.5 * label_smoothing
    return z


def _bce_probs(z: Array, p: Array) -> Array:
    """Keras 3 on probabilities: clip to [epsilon, 1 - epsilon], then the two logs."""
    eps = keras.config.epsilon()
    p = jnp.clip(p, eps, 1.0 - eps)
    return -(z * jnp.log(p) + (1.0 - z) * jnp.log(1.0 - p))


def _power(u: Array, gamma: float) -> Array:
    """``u ** gamma`` with value ``0 ** gamma`` and derivative 0 at ``u = 0`` (no NaN)."""
    zero = u == 0
    safe = jnp.where(zero, jnp.ones_like(u), u)
    return jnp.where(zero, jnp.asarray(0.0**gamma, u.dtype), jnp.power(safe, gamma))


def _per_sample_mean(elementwise: Array, axis: int, dtype: Any) -> Array:
    return jnp.mean(elementwise, axis=axis).astype(dtype)


class _PerSampleLoss(keras.losses.Loss):
    """Shared ``__call__`` checks of the two elementwise losses; Keras's base does the rest."""

    _CLS = "sigmoid_xent.keras"

    def _init_common(
        self,
        from_logits: Any,
        label_smoothing: Any,
        axis: Any,
        reduction: Any,
        name: Any,
        dtype: Any,
    ) -> None:
        cls = self._CLS
        red = _reduction(reduction, KERAS_REDUCTIONS, cls)
        _name(name, cls)
        _dtype(dtype, cls)
        super().__init__(name=name, reduction=red, dtype=dtype)
        self.from_logits = _bool(from_logits, "from_logits", cls)
        self.label_smoothing = _real(
            label_smoothing, "label_smoothing", cls, 0.0, 1.0, "a float in [0, 1]"
        )
        self.axis = _axis(axis, cls)
        self._given_reduction = reduction
        self._given_dtype = _dtype_config(dtype)

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Array:
        """The weighted, masked and reduced loss (Keras's ``Loss.__call__``)."""
        if sample_weight is not None:
            _checks.not_none(y_pred, "y_pred", self._CLS)
            per_sample = self._per_sample_shape(np.shape(y_true), np.shape(y_pred))
            w_shape = tuple(np.shape(sample_weight))
            if not _keras_weight_shape_ok(per_sample, w_shape):
                raise ValueError(
                    f"{self._CLS}: `sample_weight` of shape {w_shape} cannot weight the "
                    f"per-sample losses of shape {per_sample}: expected a scalar, [batch], or a "
                    "shape broadcastable to the per-sample losses (one trailing dimension of 1 "
                    "is squeezed or added, as Keras does)."
                )
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def _per_sample_shape(self, t: tuple[int, ...], p: tuple[int, ...]) -> tuple[int, ...]:
        """The shape ``call`` will return, from the input shapes alone (no tracing)."""
        if len(t) == len(p) + 1 and t[-1] == 1:
            p, t = (p + (1,), t) if len(p) == 1 else (p, t[:-1])
        elif len(p) == len(t) + 1 and p[-1] == 1:
            p, t = (p, t + (1,)) if len(t) == 1 else (p[:-1], t)
        if t != p:
            raise ValueError(
                f"{self._CLS}: `y_true` and `y_pred` must have the same shape (after Keras's rule "
                f"for a trailing dimension of 1), got y_true of shape {t} and y_pred of shape {p}."
            )
        axis = self._checked_axis(len(p), p)
        return tuple(d for i, d in enumerate(p) if i != axis)

    def _checked_axis(self, ndim: int, shape: tuple[int, ...]) -> int:
        if not -ndim <= self.axis < ndim:
            raise ValueError(
                f"{self._CLS}: `axis` {self.axis} is out of range for y_pred of shape "
                f"{tuple(shape)} (rank {ndim})."
            )
        return self.axis % ndim

    def _prepare(self, y_true: Array, y_pred: Array) -> tuple[Array, Array, int]:
        y_true, y_pred = _match_rank(jnp.asarray(y_true), jnp.asarray(y_pred))
        _check_pair(y_true, y_pred, self._CLS)
        axis = self._checked_axis(y_pred.ndim, y_pred.shape)
        cd = _checks.compute_dtype(y_pred.dtype)
        z = _smooth(y_true.astype(cd), self.label_smoothing)
        return z, y_pred.astype(cd), axis

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments: ``reduction`` as given, ``dtype`` None or a policy name."""
        return {
            "name": self.name,
            "reduction": self._given_reduction,
            "dtype": self._given_dtype,
            "from_logits": self.from_logits,
            "label_smoothing": self.label_smoothing,
            "axis": self.axis,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BinaryCrossentropy(_PerSampleLoss):
    r"""Keras 3's ``BinaryCrossentropy`` as a real ``keras.losses.Loss``, on the stable core.

    ``call(y_true, y_pred)`` returns the per-sample loss, the mean over ``axis`` of

    .. math::

        \ell = \begin{cases}
        \max(x, 0) - x z' + \log(1 + e^{-|x|}) & \text{from\_logits} \\
        -z' \log \hat p - (1 - z') \log(1 - \hat p),\ \
        \hat p = \mathrm{clip}(p, \epsilon, 1 - \epsilon) & \text{otherwise}
        \end{cases} \qquad z' = z (1 - s) + s / 2

    with :math:`\epsilon` = ``keras.config.epsilon()`` (Keras 3's clipping; tf.keras 2 also
    added :math:`\epsilon` inside the logs). Keras's ``Loss.__call__`` then applies
    ``sample_weight``, any Keras mask on ``y_pred`` and ``reduction`` exactly as for
    ``keras.losses.BinaryCrossentropy``, whose values these are for every argument. On logits
    the loss and its gradients are :func:`sigmoid_xent.sigmoid_cross_entropy_with_logits`' (custom
    VJP): exact where ``sigmoid(x) - z`` cancels, finite at ``±inf`` logits (Keras: NaN).

    Labels ``[batch]`` with predictions ``[batch, 1]`` are expanded, and a trailing 1 of one
    more rank is squeezed, as Keras does; other shapes must be equal. Inputs are converted to
    ``dtype`` first (by default ``keras.config.floatx()``, so under a ``mixed_bfloat16`` policy
    the loss is computed in float32); a 16-bit ``dtype`` is computed in float32 and returned in
    16 bits.

    Args:
      from_logits: Whether ``y_pred`` holds logits (recommended: exact) or probabilities.
      label_smoothing: ``s`` in [0, 1]: labels are squeezed towards 1/2.
      axis: The axis averaged over per sample (the features axis).
      reduction: Keras 3's names: ``"sum_over_batch_size"`` (also ``"mean"`` and ``"auto"``),
        ``"sum"``, ``"mean_with_sample_weight"`` (divides by the sum of the weights as given),
        ``"none"`` or None; any case. Kept as given in the config.
      name: The loss name (Keras's metric and scope name).
      dtype: The computation dtype, a name or a ``keras.DTypePolicy`` (its compute dtype);
        None for ``keras.config.floatx()``.

    Returns:
      Called as ``loss(y_true, y_pred, sample_weight=None)``: a scalar of ``dtype``, or for
      ``"none"`` the weighted per-sample losses ``[batch, d0, .., dN-1]``.

    Raises:
      TypeError: a non-bool ``from_logits``, a non-number ``label_smoothing``, a non-int
        ``axis`` or a non-str ``name`` (at construction).
      ValueError: ``label_smoothing`` outside [0, 1], an unknown reduction or a non-float
        ``dtype`` (at construction); when called, ``y_true``/``y_pred`` of different shapes, an
        ``axis`` out of range, or a ``sample_weight`` shape Keras cannot apply.

    Examples:
      >>> import numpy as np
      >>> from sigmoid_xent.keras import BinaryCrossentropy
      >>> y_true = np.array([[0., 1.], [0., 0.]])
      >>> y_pred = np.array([[0.6, 0.4], [0.4, 0.6]])
      >>> BinaryCrossentropy()(y_true, y_pred)
      Array(0.8149245, dtype=float32)
      >>> BinaryCrossentropy()(y_true, y_pred, sample_weight=np.array([1., 0.]))
      Array(0.45814538, dtype=float32)
      >>> BinaryCrossentropy(from_logits=True, reduction="none")(
      ...     np.array([[1.], [1.]]), np.array([[30.], [np.inf]]))
      Array([9.357623e-14, 0.000000e+00], dtype=float32)
    """

    _CLS = "sigmoid_xent.keras.BinaryCrossentropy"

    def __init__(
        self,
        from_logits: bool = False,
        label_smoothing: float = 0.0,
        axis: int = -1,
        reduction: str | None = "sum_over_batch_size",
        name: str = "binary_crossentropy",
        dtype: Any = None,
    ) -> None:
        self._init_common(from_logits, label_smoothing, axis, reduction, name, dtype)

    def call(self, y_true: Array, y_pred: Array) -> Array:
        """The per-sample losses ``[batch, d0, .., dN-1]`` (the mean over ``axis``)."""
        z, x, axis = self._prepare(y_true, y_pred)
        if self.from_logits:
            elementwise = sigmoid_cross_entropy_with_logits(z, x)
        else:
            elementwise = _bce_probs(z, x)
        return _per_sample_mean(elementwise, axis, y_pred.dtype)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BinaryFocalCrossentropy(_PerSampleLoss):
    r"""Keras 3's ``BinaryFocalCrossentropy`` as a real ``keras.losses.Loss``, on the stable core.

    ``call(y_true, y_pred)`` returns the per-sample loss, the mean over ``axis`` of

    .. math::

        \ell = \alpha_t \, (1 - p_t)^{\gamma} \, \mathrm{bce}(z', p), \qquad
        p_t = z' p + (1 - z')(1 - p), \qquad
        \alpha_t = \begin{cases} \alpha z' + (1 - \alpha)(1 - z') & \text{apply\_class\_balancing}
        \\ 1 & \text{otherwise} \end{cases}

    with ``p = sigmoid(y_pred)`` when ``from_logits`` and :math:`z' = z (1 - s) + s / 2`. On
    probabilities ``bce`` is Keras 3's clipped one (see :class:`BinaryCrossentropy`) and the
    values are Keras's; at ``p_t = 1`` the derivative of :math:`(1 - p_t)^\gamma` is taken as 0
    (Keras: NaN for ``gamma = 0``). On logits the loss is
    :func:`sigmoid_xent.focal.plain_focal_loss`: stable and finite at ``±inf`` as
    :func:`sigmoid_xent.sigmoid_focal_loss`, with closed-form derivatives, and for an integer
    ``gamma`` (the default 2) value and gradient in plain float32: within 8.5 ulp elementwise
    instead of 0.63, and Keras reduces it next (a per-sample mean over many classes is as close
    to the exact one as the accurate values' mean), so that a ``fit`` step costs what one with
    Keras's own loss costs (benchmarks/README.md). Keras's own goes through the clipped
    probability, so the two agree wherever ``sigmoid(y_pred)`` lies inside
    ``[epsilon, 1 - epsilon]`` (``|y_pred|`` below about 16) and ours stays accurate beyond, where
    Keras's saturates. Keras's ``Loss.__call__`` applies ``sample_weight``, masks and
    ``reduction``; shapes and dtypes as :class:`BinaryCrossentropy`.

    Args:
      apply_class_balancing: Whether to weight the classes by ``alpha`` and ``1 - alpha``.
      alpha: The weight of the positive class, in [0, 1] (used with ``apply_class_balancing``).
      gamma: The focusing exponent, a finite number ``>= 0``; 0 gives the binary cross-entropy.
      from_logits: Whether ``y_pred`` holds logits (recommended) or probabilities.
      label_smoothing: ``s`` in [0, 1].
      axis: The axis averaged over per sample.
      reduction: As :class:`BinaryCrossentropy`.
      name: The loss name.
      dtype: As :class:`BinaryCrossentropy`.

    Returns:
      Called as ``loss(y_true, y_pred, sample_weight=None)``: a scalar of ``dtype``, or the
      weighted per-sample losses for ``"none"``.

    Raises:
      TypeError: a non-bool ``apply_class_balancing``/``from_logits``, non-number ``alpha``,
        ``gamma`` or ``label_smoothing``, a non-int ``axis`` (at construction).
      ValueError: ``alpha`` or ``label_smoothing`` outside [0, 1], a negative or infinite
        ``gamma``, an unknown reduction or a non-float ``dtype`` (at construction); at call
        time as :class:`BinaryCrossentropy`.

    Examples:
      >>> import numpy as np
      >>> from sigmoid_xent.keras import BinaryFocalCrossentropy
      >>> y_true = np.array([[0., 1.], [0., 0.]])
      >>> y_pred = np.array([[-18.6, 0.51], [2.94, -12.8]])
      >>> BinaryFocalCrossentropy(gamma=3.0, from_logits=True)(y_true, y_pred)
      Array(0.646995, dtype=float32)
    """

    _CLS = "sigmoid_xent.keras.BinaryFocalCrossentropy"

    def __init__(
        self,
        apply_class_balancing: bool = False,
        alpha: float = 0.25,
        gamma: float = 2.0,
        from_logits: bool = False,
        label_smoothing: float = 0.0,
        axis: int = -1,
        reduction: str | None = "sum_over_batch_size",
        name: str = "binary_focal_crossentropy",
        dtype: Any = None,
    ) -> None:
        cls = self._CLS
        balance = _bool(apply_class_balancing, "apply_class_balancing", cls)
        a = _real(alpha, "alpha", cls, 0.0, 1.0, "a float in [0, 1]")
        g = _real(gamma, "gamma", cls, 0.0, np.inf, "a finite float >= 0")
        if not np.isfinite(g):
            raise ValueError(f"{cls}: `gamma` must be a finite float >= 0, got {gamma!r}.")
        self._init_common(from_logits, label_smoothing, axis, reduction, name, dtype)
        self.apply_class_balancing = balance
        self.alpha = a
        self.gamma = g

    def call(self, y_true: Array, y_pred: Array) -> Array:
        """The per-sample losses ``[batch, d0, .., dN-1]`` (the mean over ``axis``)."""
        z, x, axis = self._prepare(y_true, y_pred)
        if self.from_logits:
            alpha = self.alpha if self.apply_class_balancing else None
            elementwise = plain_focal_loss(z, x, alpha=alpha, gamma=self.gamma)
        else:
            p_t = z * x + (1.0 - z) * (1.0 - x)
            elementwise = _power(1.0 - p_t, self.gamma) * _bce_probs(z, x)
            if self.apply_class_balancing:
                elementwise = (z * self.alpha + (1.0 - z) * (1.0 - self.alpha)) * elementwise
        return _per_sample_mean(elementwise, axis, y_pred.dtype)

    def get_config(self) -> dict[str, Any]:
        """As :meth:`BinaryCrossentropy.get_config`, with the focal arguments."""
        config = super().get_config()
        config.update(
            {
                "apply_class_balancing": self.apply_class_balancing,
                "alpha": self.alpha,
                "gamma": self.gamma,
            }
        )
        return config


def _keras_mask(x: Any) -> Any:
    """The Keras mask attached to ``x`` (by a ``Masking`` layer, say), or None."""
    try:
        from keras.src.backend import get_keras_mask
    except ImportError:  # pragma: no cover - a Keras without the helper
        return getattr(x, "_keras_mask", None)
    return get_keras_mask(x)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SigmoidCrossEntropyLoss(keras.losses.Loss):
    r"""TF-Ranking's ``SigmoidCrossEntropyLoss`` as a real ``keras.losses.Loss``.

    Dense lists ``[batch, list_size]``: labels ``< 0`` are padding (ignored), and so are items
    where a Keras mask on ``y_pred`` is False. The loss is
    :func:`sigmoid_xent.ranking.sigmoid_cross_entropy`:

    .. math::

        \mathrm{sum\_over\_batch\_size} = \frac{\sum_i w_i \ell(z_i, s_i)}
        {\mathrm{batch} \cdot \mathrm{list\_size}}, \qquad
        \ell(z, s) = \max(s, 0) - s z + \log(1 + e^{-|s|})

    (padding adds 0 but counts in the denominator, as TF-Ranking: ``0.8042943`` for its example,
    ``0.6444636`` for its ragged one padded with -1). This class reduces itself, because a
    ranking weight is per list: ``sample_weight`` of shape ``[batch]`` or ``[batch, 1]`` weights
    every item of its list (Keras's base would apply a ``[batch]`` vector per position), one of
    ``[batch, list_size]`` each item, a scalar everything.

    Reductions (any case): ``"sum_over_batch_size"`` (= ``"auto"``, TF-Ranking's default, and
    Keras's ``"mean"``), ``"sum"``, ``"none"``/None (``[batch, list_size]``, 0 at padding),
    ``"mean_with_sample_weight"`` (:math:`\sum w \ell / \sum w` over the valid items, with
    per-list weights counted once per item), and TF-Ranking's ``"sum_by_nonzero_weights"``,
    ``"per_list"`` (``[batch]``) and ``"list_mean"``. The config keeps it as given.

    Labels and scores are converted to ``dtype`` (``keras.config.floatx()`` by default, so
    float32 under a ``mixed_bfloat16`` policy); 16-bit dtypes are computed in float32.

    Args:
      reduction: See above; default ``"sum_over_batch_size"``.
      name: The loss name; None gives Keras's automatic one.
      dtype: The computation dtype, a name or a ``keras.DTypePolicy``; None for floatx.

    Returns:
      Called as ``loss(y_true, y_pred, sample_weight=None)``: a scalar of ``dtype``; for
      ``"none"`` the ``[batch, list_size]`` weighted losses, for ``"per_list"`` ``[batch]``.

    Raises:
      ValueError: an unknown reduction or a non-float ``dtype`` (at construction); when called,
        ``y_true``/``y_pred`` of different shapes or not ``[batch, list_size]``, or a
        ``sample_weight`` of another shape than those above.
      TypeError: a non-str ``name`` (at construction).

    Examples:
      >>> import numpy as np
      >>> from sigmoid_xent.keras import SigmoidCrossEntropyLoss
      >>> loss = SigmoidCrossEntropyLoss()
      >>> loss(np.array([[1., 0.]]), np.array([[0.6, 0.8]]))
      Array(0.8042943, dtype=float32)
      >>> loss(np.array([[1., 0., -1.], [0., 1., 0.]]),
      ...      np.array([[0.6, 0.8, 0.], [0.5, 0.8, 0.4]]))
      Array(0.6444636, dtype=float32)
    """

    _CLS = "sigmoid_xent.keras.SigmoidCrossEntropyLoss"

    def __init__(
        self,
        reduction: str | None = "sum_over_batch_size",
        name: str | None = None,
        dtype: Any = None,
    ) -> None:
        cls = self._CLS
        red = _reduction(reduction, RANKING_REDUCTIONS, cls)
        _name(name, cls)
        _dtype(dtype, cls)
        keras_red = red if red in KERAS_REDUCTIONS else "none"
        super().__init__(name=name, reduction=keras_red, dtype=dtype)
        self._ranking_reduction = _TO_RANKING[red]
        self._given_reduction = reduction
        self._given_dtype = _dtype_config(dtype)

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Array:
        """The reduced loss of ``y_pred`` (scores) against ``y_true`` (labels, < 0 padding)."""
        cls = self._CLS
        _checks.not_none(y_true, "y_true", cls)
        _checks.not_none(y_pred, "y_pred", cls)
        mask = _keras_mask(y_pred)
        with keras.name_scope(self.name):
            labels = keras.ops.convert_to_tensor(y_true, dtype=self.dtype)
            scores = keras.ops.convert_to_tensor(y_pred, dtype=self.dtype)
            labels, scores = _match_rank(labels, scores)
            if labels.ndim != 2 or labels.shape != scores.shape:
                raise ValueError(
                    f"{cls}: `y_true` and `y_pred` must both be [batch, list_size], got y_true "
                    f"of shape {tuple(np.shape(y_true))} and y_pred of shape "
                    f"{tuple(np.shape(y_pred))}."
                )
            weights = None
            if sample_weight is not None:
                weights = keras.ops.convert_to_tensor(sample_weight, dtype=self.dtype)
                batch, size = labels.shape
                if weights.shape not in ((), (batch,), (batch, 1), (batch, size)):
                    raise ValueError(
                        f"{cls}: `sample_weight` must be a scalar, per list ({batch},) or "
                        f"({batch}, 1), or per item ({batch}, {size}), got shape "
                        f"{tuple(weights.shape)}."
                    )
            where = None
            if mask is not None:
                where = jnp.broadcast_to(
                    jnp.reshape(jnp.asarray(mask, bool), _mask_shape(mask, labels.shape, cls)),
                    labels.shape,
                )
            return ranking.sigmoid_cross_entropy(
                labels, scores, weights=weights, where=where, reduction=self._ranking_reduction
            )

    def call(self, y_true: Array, y_pred: Array) -> Array:
        """Per-item losses ``[batch, list_size]`` (0 at padding), unweighted."""
        return ranking.sigmoid_cross_entropy(y_true, y_pred, reduction="none")

    def get_config(self) -> dict[str, Any]:
        """``{"name", "reduction", "dtype"}``, the reduction as given."""
        return {"name": self.name, "reduction": self._given_reduction, "dtype": self._given_dtype}


def _mask_shape(mask: Any, shape: tuple[int, ...], cls: str) -> tuple[int, ...]:
    """A per-item (``[batch, list_size]``, or with a trailing 1) or per-list mask's shape."""
    m = tuple(np.shape(mask))
    if m == tuple(shape) or m == tuple(shape) + (1,):
        return tuple(shape)
    if m == tuple(shape[:1]):
        return (shape[0], 1)
    raise ValueError(
        f"{cls}: the Keras mask on `y_pred` must be per item {tuple(shape)} or per list "
        f"({shape[0]},), got shape {m}."
    )


# --------------------------------------------------------------------------- class imbalance

from sigmoid_xent.imbalance import asymmetric_loss  # noqa: E402 (this section's own import)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AsymmetricLoss(_PerSampleLoss):
    r"""The asymmetric loss (ASL) of Ridnik et al. as a real ``keras.losses.Loss``, on logits.

    ``call(y_true, y_pred)`` returns the per-sample loss, the mean over ``axis`` of
    :func:`sigmoid_xent.asymmetric_loss` on labels ``z (1 - s) + s / 2`` and logits ``y_pred``
    (timm's ``AsymmetricLossMultiLabel`` with exact logs). Keras's ``Loss.__call__`` applies
    ``sample_weight``, masks and ``reduction``; shapes and dtypes as :class:`BinaryCrossentropy`.

    Args:
      gamma_pos, gamma_neg: Focusing exponents, finite floats ``>= 0``.
      clip: The probability margin in [0, 1) shifted off the negatives; 0 or None: none.
      label_smoothing: ``s`` in [0, 1] (labels squeezed towards 1/2, as timm's).
      axis, reduction, name, dtype: As :class:`BinaryCrossentropy`.

    Returns:
      Called as ``loss(y_true, y_pred, sample_weight=None)``: a scalar of ``dtype``, or the
      weighted per-sample losses for ``"none"``.

    Raises:
      TypeError, ValueError: a bad option (at construction: its type or range, the reduction,
        ``dtype``); at call time as :class:`BinaryCrossentropy`.

    Examples:
      >>> import numpy as np
      >>> from sigmoid_xent.keras import AsymmetricLoss
      >>> AsymmetricLoss()(np.array([[0., 1.], [0., 0.]]), np.array([[2., -1.], [-3., 4.]]))
      Array(1.0470632, dtype=float32)

    References:
      Ridnik et al., "Asymmetric Loss For Multi-Label Classification", ICCV 2021.
    """

    _CLS = "sigmoid_xent.keras.AsymmetricLoss"

    def __init__(
        self,
        gamma_pos: float = 0.0,
        gamma_neg: float = 4.0,
        clip: float | None = 0.05,
        label_smoothing: float = 0.0,
        axis: int = -1,
        reduction: str | None = "sum_over_batch_size",
        name: str = "asymmetric_loss",
        dtype: Any = None,
    ) -> None:
        cls = self._CLS
        gammas = {}
        for key, value in (("gamma_pos", gamma_pos), ("gamma_neg", gamma_neg)):
            gammas[key] = _real(value, key, cls, 0.0, np.inf, "a finite float >= 0")
            if not np.isfinite(gammas[key]):
                raise ValueError(f"{cls}: `{key}` must be a finite float >= 0, got {value!r}.")
        c = None if clip is None else _real(clip, "clip", cls, 0.0, 1.0, "a float in [0, 1)")
        if c == 1.0:
            raise ValueError(f"{cls}: `clip` must be a float in [0, 1), got {clip!r}.")
        self._init_common(True, label_smoothing, axis, reduction, name, dtype)
        self.gamma_pos = gammas["gamma_pos"]
        self.gamma_neg = gammas["gamma_neg"]
        self.clip = c

    def call(self, y_true: Array, y_pred: Array) -> Array:
        """The per-sample losses ``[batch, d0, .., dN-1]`` (the mean over ``axis``)."""
        z, x, axis = self._prepare(y_true, y_pred)
        elementwise = asymmetric_loss(
            z, x, gamma_pos=self.gamma_pos, gamma_neg=self.gamma_neg, clip=self.clip
        )
        return _per_sample_mean(elementwise, axis, y_pred.dtype)

    def get_config(self) -> dict[str, Any]:
        """As :meth:`BinaryCrossentropy.get_config`, with the ASL arguments (always on
        logits: no ``from_logits``)."""
        config = super().get_config()
        del config["from_logits"]
        config.update({"gamma_pos": self.gamma_pos, "gamma_neg": self.gamma_neg, "clip": self.clip})
        return config
