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

import functools
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
from sigmoid_xent._core import smooth_labels
from sigmoid_xent._mask import hide, keep
from sigmoid_xent.focal import plain_focal_loss
from sigmoid_xent.reductions import Reduction, peer_name, safe_divide, weighted_reduction

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
# Saved in every config: Keras prints the config when it cannot find the class (a new process
# that never imported this module), so its error names the import that registers the classes.
_REQUIRES = "import sigmoid_xent.keras"


class _Loss(keras.losses.Loss):
    """A Keras loss whose config names the import that registers it (``requires``)."""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        """The loss of :meth:`get_config`'s dict (its ``requires`` entry is ignored).

        Args:
          config: A dict from :meth:`get_config`.

        Returns:
          A loss with that configuration.

        Examples:
          >>> from sigmoid_xent.keras import SigmoidCrossEntropyLoss
          >>> loss = SigmoidCrossEntropyLoss(reduction="sum")
          >>> type(loss).from_config(loss.get_config()).get_config() == loss.get_config()
          True
        """
        config = {k: v for k, v in config.items() if k != "requires"}
        return super().from_config(config)


# --------------------------------------------------------------------------- argument checks


def _keras_reduction(reduction: Any, cls: str, peer: str = "keras") -> tuple[Reduction, str]:
    """Our member for a Keras ``reduction`` name, and the name Keras's base class keeps (its
    own name for the member; ``"none"`` for the list reductions, which the ranking loss applies
    itself)."""
    red = Reduction.parse(reduction, cls, peer=peer)
    return red, peer_name(red, "keras") or "none"


def _bool(value: Any, name: str, cls: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"{cls}: `{name}` must be a bool (True or False), got {value!r} of type "
            f"{type(value).__name__}."
        )
    return bool(value)


def _real(value: Any, name: str, cls: str, **bounds: Any) -> float:
    """A Python float within ``bounds`` (:func:`_checks.in_range`'s); a TypeError naming the
    argument for anything but a real number."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()  # 0-d arrays, as configs written by numpy code may hold
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(
            f"{cls}: `{name}` must be a real number, got {value!r} of type {type(value).__name__}."
        )
    _checks.in_range(value, name, cls, **bounds)
    return float(value)


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
    """Keras's rule for ranks that differ by one (:func:`_checks.keras_same_rank`)."""
    t, p = _checks.keras_same_rank(y_true.shape, y_pred.shape)
    y_true = y_true if t == y_true.shape else jnp.reshape(y_true, t)
    return y_true, y_pred if p == y_pred.shape else jnp.reshape(y_pred, p)


def _check_pair(t: tuple[int, ...], p: tuple[int, ...], cls: str) -> None:
    if tuple(t) != tuple(p):
        raise ValueError(
            f"{cls}: `y_true` and `y_pred` must have the same shape (after Keras's rule for a "
            f"trailing dimension of 1), got y_true of shape {tuple(t)} and y_pred of "
            f"shape {tuple(p)}."
        )


def _as_arrays(*values: Any) -> tuple[Array | None, ...]:
    """Each value as a jax array in its own dtype (None stays None): the cast to the loss's dtype
    comes inside the compiled program, after masking."""
    return tuple(
        v if v is None or isinstance(v, jax.Array) else jnp.asarray(np.asarray(v)) for v in values
    )


# --------------------------------------------------------------------------- elementwise pieces


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


class _PerSampleLoss(_Loss):
    """The two elementwise losses: their checks, ``call`` and the ``where`` path. Without
    ``where``, Keras's base ``Loss.__call__`` weights, masks and reduces."""

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
        _, keras_reduction = _keras_reduction(reduction, cls)
        _name(name, cls)
        _dtype(dtype, cls)
        super().__init__(name=name, reduction=keras_reduction, dtype=dtype)
        self.from_logits = _bool(from_logits, "from_logits", cls)
        self.label_smoothing = _real(label_smoothing, "label_smoothing", cls, low=0.0, high=1.0)
        self.axis = _checks.int_axis(axis, cls)
        self._given_reduction = reduction
        self._given_dtype = _dtype_config(dtype)

    def __call__(
        self, y_true: Any, y_pred: Any, sample_weight: Any = None, *, where: Any = None
    ) -> Array:
        """The weighted, masked and reduced loss (Keras's ``Loss.__call__``); with ``where``,
        each sample's loss is the mean over its present elements and a sample with none present
        is absent from the reduction."""
        cls = self._CLS
        if sample_weight is None and where is None:
            return super().__call__(y_true, y_pred)
        _checks.not_none(y_true, "y_true", cls)
        _checks.not_none(y_pred, "y_pred", cls)
        elements, per_sample = self._shapes(np.shape(y_true), np.shape(y_pred))
        w_shape = None
        if sample_weight is not None:
            w_shape = _checks.keras_weight_shape(np.shape(sample_weight), per_sample, cls)
        if where is None:
            return super().__call__(y_true, y_pred, sample_weight=sample_weight)
        mask = _checks.where_mask(where, elements, cls, target="y_pred")
        keras_mask = _keras_mask_as(y_pred, per_sample, cls)
        arrays = _as_arrays(y_true, y_pred, sample_weight)
        return _masked_call(*arrays, mask, keras_mask, loss=_ByConfig(self), w_shape=w_shape)

    def _shapes(
        self, t: tuple[int, ...], p: tuple[int, ...]
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The elements' shape and the per-sample shape ``call`` returns, from the input shapes
        alone (no tracing)."""
        t, p = _checks.keras_same_rank(t, p)
        _check_pair(t, p, self._CLS)
        axis = self._checked_axis(len(p), p)
        return p, tuple(d for i, d in enumerate(p) if i != axis)

    def _checked_axis(self, ndim: int, shape: tuple[int, ...]) -> int:
        if not -ndim <= self.axis < ndim:
            raise ValueError(
                f"{self._CLS}: `axis` {self.axis} is out of range for y_pred of shape "
                f"{tuple(shape)} (rank {ndim})."
            )
        return self.axis % ndim

    def _prepare(self, y_true: Array, y_pred: Array) -> tuple[Array, Array, int]:
        y_true, y_pred = _match_rank(jnp.asarray(y_true), jnp.asarray(y_pred))
        _check_pair(y_true.shape, y_pred.shape, self._CLS)
        axis = self._checked_axis(y_pred.ndim, y_pred.shape)
        cd = _checks.compute_dtype(y_pred.dtype)
        smoothing = _checks.label_smoothing(self.label_smoothing, y_true.shape, cd, self._CLS)
        return smooth_labels(y_true, smoothing, cd), y_pred.astype(cd), axis

    def _elementwise(self, z: Array, x: Array) -> Array:
        raise NotImplementedError

    def call(self, y_true: Array, y_pred: Array) -> Array:
        """The per-sample losses ``[batch, d0, .., dN-1]`` (the mean over ``axis``)."""
        z, x, axis = self._prepare(y_true, y_pred)
        return jnp.mean(self._elementwise(z, x), axis=axis).astype(y_pred.dtype)

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments: ``reduction`` as given, ``dtype`` None or a policy name."""
        return {
            "name": self.name,
            "reduction": self._given_reduction,
            "dtype": self._given_dtype,
            "from_logits": self.from_logits,
            "label_smoothing": self.label_smoothing,
            "axis": self.axis,
            "requires": _REQUIRES,
        }


class _ByConfig:
    """A loss object as a static argument of ``jax.jit``, equal to another when their class,
    configuration, compute dtype and Keras's epsilon are: equal losses share one program."""

    def __init__(self, loss: _PerSampleLoss) -> None:
        self.loss = loss
        config = tuple(sorted(loss.get_config().items()))
        self.key = (type(loss), loss.dtype, loss.reduction, keras.config.epsilon(), config)

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ByConfig) and self.key == other.key


@functools.partial(jax.jit, static_argnames=("loss", "w_shape"))
def _masked_call(
    y_true: Array,
    y_pred: Array,
    weights: Array | None,
    mask: Array,
    keras_mask: Array | None,
    *,
    loss: _ByConfig,
    w_shape: tuple[int, ...] | None,
) -> Array:
    """The loss with ``where``, masked before anything else: each sample's loss is the mean over
    its present elements, then the present samples are weighted and reduced."""
    self = loss.loss
    t, p = _checks.keras_same_rank(y_true.shape, y_pred.shape)
    y_true = hide(mask, jnp.reshape(y_true, t)).astype(self.dtype)
    y_pred = hide(mask, jnp.reshape(y_pred, p)).astype(self.dtype)
    z, x, axis = self._prepare(y_true, y_pred)
    present = jnp.broadcast_to(mask, x.shape)
    total = jnp.sum(keep(present, self._elementwise(z, x)), axis=axis)
    count = jnp.sum(present.astype(x.dtype), axis=axis)
    per_sample = safe_divide(total, count).astype(self.dtype)
    sample_present = count > 0
    if keras_mask is not None:
        sample_present = sample_present & jnp.broadcast_to(keras_mask, sample_present.shape)
    if weights is not None:
        weights = jnp.reshape(weights, w_shape).astype(self.dtype)
    red = Reduction.parse(self.reduction, self._CLS, peer="keras")  # Keras's base reads it too
    return weighted_reduction(per_sample, weights, red, self._CLS, where=sample_present)


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

    with :math:`\epsilon` = ``keras.config.epsilon()``; Keras's ``Loss.__call__`` then applies
    ``sample_weight``, a Keras mask on ``y_pred`` and ``reduction`` as for
    ``keras.losses.BinaryCrossentropy``, whose values these are. On logits the gradients are
    :func:`sigmoid_xent.sigmoid_cross_entropy_with_logits`' and stay finite at ``±inf``. Shapes
    follow Keras's rule for a trailing dimension of 1; inputs are converted to ``dtype``
    (16-bit computed in float32). ``where`` (bool, broadcastable to ``y_pred``): a sample's
    loss is the mean over its present elements, a sample with none is absent from the reduction
    (its weight counts nowhere), and masked elements get zero gradients even if NaN.

    Args:
      from_logits: Whether ``y_pred`` holds logits (recommended: exact) or probabilities.
      label_smoothing: ``s`` in [0, 1]: labels are squeezed towards 1/2.
      axis: The axis averaged over per sample (the features axis).
      reduction: Keras's names: ``"sum_over_batch_size"`` (also ``"mean"``, ``"auto"``),
        ``"sum"``, ``"mean_with_sample_weight"``, ``"none"`` or None; any case.
      name: The loss name.
      dtype: The computation dtype, a name or a ``keras.DTypePolicy``; None for floatx.

    Returns:
      Called as ``loss(y_true, y_pred, sample_weight=None, *, where=None)``: a scalar of
      ``dtype``, or for ``"none"`` the weighted per-sample losses.

    Raises:
      TypeError: a non-bool ``from_logits``, a non-number ``label_smoothing``, a non-int
        ``axis`` or a non-str ``name``; when called, a non-bool ``where``.
      ValueError: ``label_smoothing`` outside [0, 1], an unknown reduction or a non-float
        ``dtype``; when called, shapes that do not match, an ``axis`` out of range, or a
        ``sample_weight``/``where`` shape that cannot be applied.

    Examples:
      >>> import numpy as np
      >>> from sigmoid_xent.keras import BinaryCrossentropy
      >>> y_true = np.array([[0., 1.], [0., 0.]])
      >>> y_pred = np.array([[0.6, 0.4], [0.4, 0.6]])
      >>> BinaryCrossentropy()(y_true, y_pred)
      Array(0.8149245, dtype=float32)
      >>> BinaryCrossentropy()(y_true, y_pred, sample_weight=np.array([1., 0.]))
      Array(0.45814538, dtype=float32)
      >>> BinaryCrossentropy()(y_true, y_pred, where=np.array([[True], [False]]))
      Array(0.91629076, dtype=float32)
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

    def _elementwise(self, z: Array, x: Array) -> Array:
        """The elementwise loss of smoothed labels ``z`` and ``y_pred`` ``x``."""
        if self.from_logits:
            return sigmoid_cross_entropy_with_logits(z, x)
        return _bce_probs(z, x)


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
    probabilities ``bce`` is Keras 3's clipped one and the values are Keras's (the derivative of
    :math:`(1 - p_t)^\gamma` at ``p_t = 1`` is 0, where Keras gives NaN for ``gamma = 0``). On
    logits the loss is :func:`sigmoid_xent.focal.plain_focal_loss`: stable, finite at ``±inf``,
    and accurate where Keras's clipped probability saturates (``|y_pred|`` above about 16).
    Weights, masks, ``where``, reductions, shapes and dtypes as :class:`BinaryCrossentropy`.

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
      Called as ``loss(y_true, y_pred, sample_weight=None, *, where=None)``: a scalar of
      ``dtype``, or the weighted per-sample losses for ``"none"``.

    Raises:
      TypeError: a non-bool ``apply_class_balancing``/``from_logits``, non-number ``alpha``,
        ``gamma`` or ``label_smoothing``, a non-int ``axis``.
      ValueError: ``alpha`` or ``label_smoothing`` outside [0, 1], ``gamma`` outside
        [0, inf), an unknown reduction or a non-float ``dtype``; when called, as
        :class:`BinaryCrossentropy`.

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
        a = _real(alpha, "alpha", cls, low=0.0, high=1.0)
        g = _real(gamma, "gamma", cls, low=0.0, high=np.inf, high_open=True)
        self._init_common(from_logits, label_smoothing, axis, reduction, name, dtype)
        self.apply_class_balancing = balance
        self.alpha = a
        self.gamma = g

    def _elementwise(self, z: Array, x: Array) -> Array:
        """The elementwise focal loss of smoothed labels ``z`` and ``y_pred`` ``x``."""
        if self.from_logits:
            alpha = self.alpha if self.apply_class_balancing else None
            elementwise = plain_focal_loss(z, x, alpha=alpha, gamma=self.gamma)
        else:
            p_t = z * x + (1.0 - z) * (1.0 - x)
            elementwise = _power(1.0 - p_t, self.gamma) * _bce_probs(z, x)
            if self.apply_class_balancing:
                elementwise = (z * self.alpha + (1.0 - z) * (1.0 - self.alpha)) * elementwise
        return elementwise

    def get_config(self) -> dict[str, Any]:
        """As :meth:`BinaryCrossentropy.get_config`, with the focal arguments.

        Returns:
          A plain dict of the constructor arguments (``reduction`` as given).

        Examples:
          >>> from sigmoid_xent.keras import BinaryFocalCrossentropy
          >>> BinaryFocalCrossentropy(gamma=3.0).get_config()["gamma"]
          3.0
        """
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


def _keras_mask_as(
    y_pred: Any, shape: tuple[int, ...], cls: str, *, per_list: bool = False
) -> Array | None:
    """The Keras mask on ``y_pred`` as bools of ``shape`` (the per-sample losses', or with
    ``per_list`` the ranking's items, per item or per list), or None without one."""
    mask = _keras_mask(y_pred)
    if mask is None:
        return None
    if per_list:
        to = _mask_shape(mask, shape, cls)
    else:
        to = _checks.keras_weight_shape(
            np.shape(mask), shape, cls, what="the Keras mask on `y_pred`"
        )
    return jnp.broadcast_to(jnp.reshape(jnp.asarray(mask, bool), to), shape)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SigmoidCrossEntropyLoss(_Loss):
    r"""TF-Ranking's ``SigmoidCrossEntropyLoss`` as a real ``keras.losses.Loss``.

    Dense lists ``[batch, list_size]``: labels ``< 0`` are padding, and so are items where
    ``where`` or a Keras mask on ``y_pred`` is False. The loss is
    :func:`sigmoid_xent.ranking.sigmoid_cross_entropy`, e.g.

    .. math::

        \mathrm{sum\_over\_batch\_size} = \frac{\sum_i w_i \ell(z_i, s_i)}
        {\mathrm{batch} \cdot \mathrm{list\_size}}, \qquad
        \ell(z, s) = \max(s, 0) - s z + \log(1 + e^{-|s|})

    (padding adds 0 but counts in the denominator, as TF-Ranking). The class reduces itself,
    because a ranking weight is per list: ``sample_weight`` ``[batch]`` or ``[batch, 1]``
    weights every item of its list, ``[batch, list_size]`` each item, a scalar everything.

    Args:
      reduction: Keras's names (``"mean_with_sample_weight"``: :math:`\sum w \ell / \sum w`
        over the valid items) and TF-Ranking's (``"sum_by_nonzero_weights"``, ``"per_list"``,
        ``"list_mean"``), any case; default ``"sum_over_batch_size"`` (``"auto"``).
      name: The loss name; None gives Keras's automatic one.
      dtype: The computation dtype, a name or a ``keras.DTypePolicy``; None for floatx.

    Returns:
      Called as ``loss(y_true, y_pred, sample_weight=None, *, where=None)``: a scalar of
      ``dtype``; ``[batch, list_size]`` for ``"none"``, ``[batch]`` for ``"per_list"``.

    Raises:
      ValueError: an unknown reduction or a non-float ``dtype``; when called, inputs that are
        not both ``[batch, list_size]``, or a ``sample_weight``/``where`` of another shape.
      TypeError: a non-str ``name``; when called, a non-bool ``where``.

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
        self._ranking_reduction, keras_reduction = _keras_reduction(
            reduction, cls, peer="keras_ranking"
        )
        _name(name, cls)
        _dtype(dtype, cls)
        super().__init__(name=name, reduction=keras_reduction, dtype=dtype)
        self._given_reduction = reduction
        self._given_dtype = _dtype_config(dtype)

    def __call__(
        self, y_true: Any, y_pred: Any, sample_weight: Any = None, *, where: Any = None
    ) -> Array:
        """The reduced loss of ``y_pred`` (scores) against ``y_true`` (labels, < 0 padding).

        Args:
          y_true: ``[batch, list_size]`` labels; < 0 is padding.
          y_pred: ``[batch, list_size]`` scores.
          sample_weight: A scalar, per list ``[batch]``/``[batch, 1]``, or per item.
          where: Optional bool mask; False items are padding (as a Keras mask on ``y_pred``).

        Returns:
          The reduced loss (per item for ``none``, per list for ``per_list``).

        Examples:
          >>> from sigmoid_xent.keras import SigmoidCrossEntropyLoss
          >>> SigmoidCrossEntropyLoss()([[1., 0.]], [[0.6, 0.8]])
          Array(0.8042943, dtype=float32)
        """
        cls = self._CLS
        _checks.not_none(y_true, "y_true", cls)
        _checks.not_none(y_pred, "y_pred", cls)
        t, p = _checks.keras_same_rank(np.shape(y_true), np.shape(y_pred))
        if len(t) != 2 or t != p:
            raise ValueError(
                f"{cls}: `y_true` and `y_pred` must both be [batch, list_size], got y_true "
                f"of shape {tuple(np.shape(y_true))} and y_pred of shape "
                f"{tuple(np.shape(y_pred))}."
            )
        batch, size = t
        if sample_weight is not None:
            w_shape = tuple(np.shape(sample_weight))
            if w_shape not in ((), (batch,), (batch, 1), (batch, size)):
                raise ValueError(
                    f"{cls}: `sample_weight` must be a scalar, per list ({batch},) or "
                    f"({batch}, 1), or per item ({batch}, {size}), got shape {w_shape}."
                )
        mask = _checks.where_mask(where, t, cls, target="y_pred")
        keras_mask = _keras_mask_as(y_pred, t, cls, per_list=True)
        if keras_mask is not None:
            mask = keras_mask if mask is None else jnp.broadcast_to(mask, t) & keras_mask
        arrays = _as_arrays(y_true, y_pred, sample_weight)
        return _ranking_call(*arrays, mask, reduction=self._ranking_reduction, dtype=self.dtype)

    def call(self, y_true: Array, y_pred: Array) -> Array:
        """Per-item losses (0 at padding), unweighted: what Keras's base class reduces.

        Args:
          y_true: ``[batch, list_size]`` labels; < 0 is padding.
          y_pred: ``[batch, list_size]`` scores.

        Returns:
          ``[batch, list_size]`` losses.

        Examples:
          >>> import jax.numpy as jnp
          >>> from sigmoid_xent.keras import SigmoidCrossEntropyLoss
          >>> SigmoidCrossEntropyLoss().call(jnp.array([[1., -1.]]), jnp.array([[0., 5.]]))
          Array([[0.6931472, 0.       ]], dtype=float32)
        """
        return ranking.sigmoid_cross_entropy(y_true, y_pred, reduction="none")

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, the reduction as given.

        Returns:
          ``{"name", "reduction", "dtype", "requires"}``.

        Examples:
          >>> from sigmoid_xent.keras import SigmoidCrossEntropyLoss
          >>> SigmoidCrossEntropyLoss(reduction="auto").get_config()["reduction"]
          'auto'
        """
        return {
            "name": self.name,
            "reduction": self._given_reduction,
            "dtype": self._given_dtype,
            "requires": _REQUIRES,
        }


@functools.partial(jax.jit, static_argnames=("reduction", "dtype"))
def _ranking_call(
    labels: Array,
    scores: Array,
    weights: Array | None,
    where: Array | None,
    *,
    reduction: Reduction,
    dtype: str,
) -> Array:
    """The ranking loss in the loss's dtype, one compiled program (the cast of a masked NaN
    happens inside it, where it reaches no output)."""
    labels, scores = _match_rank(labels, scores)
    weights = None if weights is None else weights.astype(dtype)
    return ranking.sigmoid_cross_entropy(
        labels.astype(dtype),
        scores.astype(dtype),
        weights=weights,
        where=where,
        reduction=reduction,
    )


def _mask_shape(mask: Any, shape: tuple[int, ...], cls: str) -> tuple[int, ...]:
    """A per-item (``[batch, list_size]``, or with a trailing 1) or per-list mask's shape."""
    m = tuple(np.shape(mask))
    if _checks.keras_same_rank(tuple(shape), m) == (tuple(shape),) * 2:  # a trailing 1 squeezed
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
      >>> loss = AsymmetricLoss()(np.array([[0., 1.], [0., 0.]]), np.array([[2., -1.], [-3., 4.]]))
      >>> print(f"{loss:.6f}")
      1.047063

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
        gammas = {
            key: _real(value, key, cls, low=0.0, high=np.inf, high_open=True)
            for key, value in (("gamma_pos", gamma_pos), ("gamma_neg", gamma_neg))
        }
        c = None if clip is None else _real(clip, "clip", cls, low=0.0, high=1.0, high_open=True)
        self._init_common(True, label_smoothing, axis, reduction, name, dtype)
        self.gamma_pos = gammas["gamma_pos"]
        self.gamma_neg = gammas["gamma_neg"]
        self.clip = c

    def _elementwise(self, z: Array, x: Array) -> Array:
        return asymmetric_loss(
            z, x, gamma_pos=self.gamma_pos, gamma_neg=self.gamma_neg, clip=self.clip
        )

    def get_config(self) -> dict[str, Any]:
        """As :meth:`BinaryCrossentropy.get_config`, with the ASL arguments.

        Returns:
          A plain dict of the constructor arguments (always on logits: no ``from_logits``).

        Examples:
          >>> from sigmoid_xent.keras import AsymmetricLoss
          >>> AsymmetricLoss(clip=0.1).get_config()["clip"]
          0.1
        """
        config = super().get_config()
        del config["from_logits"]
        config.update({"gamma_pos": self.gamma_pos, "gamma_neg": self.gamma_neg, "clip": self.clip})
        return config
