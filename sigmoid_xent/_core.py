"""The elementwise sigmoid cross-entropy losses and their custom VJP.

One stable core, :func:`sigmoid_cross_entropy_with_logits`, carries the only copy of the logistic
loss formula and its gradient; the weighted, label-smoothed, Keras and ranking losses are built
from it (the focal loss, in :mod:`sigmoid_xent.focal`, from its pieces).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from sigmoid_xent import _checks
from sigmoid_xent._mask import hide, keep

Array = jax.Array

__all__ = [
    "binary_cross_entropy",
    "sigmoid_cross_entropy_with_logits",
    "weighted_sigmoid_cross_entropy_with_logits",
]


# log1p(e) = e * P(e) on [0, 1]: a degree-10 fit of the relative error (Lawson-weighted least
# squares on Chebyshev nodes), coefficients rounded to float32. The rounded polynomial is within
# 0.16 ulp of log1p; evaluated in float32 (Horner, FMA) it is within 1.6 ulp for every float32 e
# in [0, 1] (checked exhaustively), where XLA:CPU's own log1p reaches 2.5 ulp, and it costs a
# third as much (benchmarks/README.md).
LOG1P_UNIT = (
    1.0,
    -0.4999998211860657,
    0.33332559466362,
    -0.24987271428108215,
    0.19890747964382172,
    -0.16105690598487854,
    0.12418434768915176,
    -0.08244173228740692,
    0.04147820919752121,
    -0.01340752188116312,
    0.00203023967333138,
)


def log1p_unit_over(e: Array) -> Array:
    """float32 ``P(e) = log1p(e) / e`` on [0, 1] (``P(0) = 1``): the polynomial, no division."""
    p = jnp.full_like(e, LOG1P_UNIT[-1])
    for c in LOG1P_UNIT[-2::-1]:
        p = p * e + c
    return p


def log1p_unit(e: Array) -> Array:
    """``log1p(e)`` for ``e`` in [0, 1]: the polynomial in float32, ``jnp.log1p`` in float64."""
    if e.dtype != jnp.float32:
        return jnp.log1p(e)
    return e * log1p_unit_over(e)


@jax.custom_jvp
def neg_abs(x: Array) -> Array:
    """``-|x|`` with derivative -1 at ``x = 0`` (from the ``x >= 0`` side) instead of 0.

    The value is plain ``-abs(x)`` (a sign-bit mask; a select here makes XLA:CPU's ``exp`` loop
    twice as long); only the derivative rule differs from ``jnp.abs``'.
    """
    return -jnp.abs(x)


@neg_abs.defjvp
def neg_abs_jvp(primals: tuple[Array], tangents: tuple[Array]) -> tuple[Array, Array]:
    (x,), (t,) = primals, tangents
    return neg_abs(x), jnp.where(x >= 0, -t, t)


class BceParts(NamedTuple):
    """The pieces of the logistic loss ``c |x| + log1p(e)`` (:func:`bce_parts`)."""

    minus_abs: Array  # -|x|, by neg_abs (derivative -1 at x = 0)
    e: Array  # exp(-|x|)
    log1p_e: Array  # log1p(e), by log1p_unit
    slope: Array  # c: 1 - z for x >= 0, z below (the label weight on the saturating side)


def bce_parts(x: Array, z: Array) -> BceParts:
    """The pieces of ``max(x, 0) - x z + log1p(exp(-|x|)) = c |x| + log1p(e)``, the one copy of
    the formula that the core, weighted and focal losses build on (nothing here cancels)."""
    minus_abs = neg_abs(x)
    e = jnp.exp(minus_abs)
    return BceParts(minus_abs, e, log1p_unit(e), jnp.where(x >= 0, 1 - z, z))


def loss_value(x: Array, z: Array) -> Array:
    """``c |x| + log1p(e)`` (:func:`bce_parts`) without ``inf * 0``.

    Where ``c = 0`` and ``x`` is infinite the linear part is exactly 0, so ``x = +inf, z = 1``
    gives 0, not NaN. The guard replaces ``|x|`` before the product (no ``0 * inf`` is ever
    formed, so ``jax_debug_nans`` finds nothing to report). Only infinite ``x`` is guarded, so
    differentiating this value (forward mode over the VJP, as in ``check_grads(order=2)``) still
    gives ``d/dz = -x``.

    Shaped for XLA:CPU (benchmarks/README.md): ``e`` is the same expression as in
    :func:`logits_grad`, so one ``exp`` serves value and gradient; the guard is the outermost
    select, so a following ``sum``/``mean`` (a YNNPACK fusion, which takes no compare/select)
    reads one finished array instead of pulling in pieces that each become a pass over memory;
    ``log1p`` is :func:`log1p_unit`, not XLA's.
    """
    p = bce_parts(x, z)
    absent = (p.slope == 0) & jnp.isinf(x)
    value = p.slope * jnp.where(absent, jnp.zeros_like(p.minus_abs), -p.minus_abs) + p.log1p_e
    # Redundant for the value, but the outermost select keeps a following sum reading one
    # finished array (with the inner select alone, SigLIP's tiles are stored: 4x the memory).
    return jnp.where(absent, p.log1p_e, value)


def logits_grad(x: Array, z: Array) -> Array:
    """``sigmoid(x) - z`` without cancellation for hard labels.

    With ``e = exp(-|x|)`` and ``s = e / (1 + e) = sigmoid(-|x|)`` (never cancels), the gradient is
    ``(1 - z) - s`` for ``x >= 0`` and ``s - z`` for ``x < 0``. ``e`` is recomputed from ``x``
    rather than saved, so XLA shares it with the forward pass.
    """
    # -|x| written as a select so that its derivative is -1/+1 at x = 0 (jnp.abs' is 0 there),
    # which keeps the second derivative right at 0: sigmoid(0) * sigmoid(-0) = 1/4.
    e = jnp.exp(neg_abs(x))
    s = e / (1 + e)
    pos = x >= 0
    # (1 - z) + (-s) and -z + s are (1 - z) - s and s - z exactly. Using `s` once lets XLA:CPU
    # fuse the division into this loop (it will not duplicate a divide for two users).
    return jnp.where(pos, 1 - z, -z) + jnp.where(pos, -1.0, 1.0) * s


@jax.custom_vjp
def _sce(x: Array, z: Array) -> Array:
    cd = _checks.compute_dtype(x.dtype)
    return loss_value(x.astype(cd), z.astype(cd)).astype(x.dtype)


def _sce_fwd(x: Array, z: Array) -> tuple[Array, tuple[Array, Array]]:
    # Plain jnp code (not `_sce` itself) keeps `jax.hessian` working.
    cd = _checks.compute_dtype(x.dtype)
    return loss_value(x.astype(cd), z.astype(cd)).astype(x.dtype), (x, z)


def _sce_bwd(res: tuple[Array, Array], g: Array) -> tuple[Array, Array]:
    x, z = res
    cd = _checks.compute_dtype(x.dtype)
    xc, zc = x.astype(cd), z.astype(cd)
    # Under `jax.checkpoint` the cotangent can arrive as a Python scalar.
    g = jnp.asarray(g).astype(cd)
    gx = g * logits_grad(xc, zc)
    # A zero cotangent (a zero weight) gives a zero label gradient also at infinite logits.
    gz = absorbing_mul(g, -xc)
    # Trace-time invariants of the rule itself (user input is checked before, with our messages).
    chex.assert_equal_shape([gx, gz, x])
    return gx.astype(x.dtype), gz.astype(z.dtype)


_sce.defvjp(_sce_fwd, _sce_bwd)


def check_labels_logits(labels: ArrayLike, logits: ArrayLike, fn: str) -> tuple[Array, Array]:
    """Checks and converts (labels, logits); labels get the logits' dtype if not float."""
    x = _checks.float_array(logits, fn)
    z = _checks.as_float(labels, x.dtype, "labels", fn)
    _checks.same_shape(z, x, fn)
    return z, x


def sigmoid_cross_entropy_with_logits(
    labels: ArrayLike, logits: ArrayLike, *, where: ArrayLike | None = None
) -> Array:
    r"""Sigmoid cross-entropy between labels and logits, elementwise and stable.

    TensorFlow's ``tf.nn.sigmoid_cross_entropy_with_logits`` and PyTorch's
    ``binary_cross_entropy_with_logits(reduction="none")``, with gradients from a custom VJP:

    .. math::

        \ell(z, x) = \max(x, 0) - x z + \log(1 + e^{-|x|}), \qquad
        \frac{\partial\ell}{\partial x} = \sigma(x) - z, \qquad
        \frac{\partial\ell}{\partial z} = -x

    :math:`\sigma(x) - z` is formed as :math:`(1 - z) - \sigma(-x)` for :math:`x \ge 0`, so hard
    labels never cancel. At ``x = ±inf`` the loss is 0 where a hard label agrees, else ``inf``,
    and the gradient the finite :math:`\sigma(\pm\infty) - z`. NaN propagates. Differentiate with
    ``grad``, ``jacrev`` or ``hessian`` (JAX refuses ``jvp`` on a ``custom_vjp``).

    Args:
      labels: Targets of ``logits``' shape in [0, 1], soft allowed (int and bool are cast).
      logits: Float logits; float16 and bfloat16 are computed in float32.
      where: Optional bool mask broadcastable to ``logits``; a False element is absent: loss 0
        and zero gradients, whatever its label and logit hold (NaN included).

    Returns:
      The elementwise loss, with ``logits``' shape and dtype.

    Raises:
      TypeError: integer or bool ``logits``, or a non-bool ``where``.
      ValueError: ``labels`` and ``logits`` of different shapes (no broadcasting, as TF), a
        ``where`` not broadcastable to them, or None.

    Examples:
      >>> import jax.numpy as jnp
      >>> import sigmoid_xent as sx
      >>> sx.sigmoid_cross_entropy_with_logits(
      ...     jnp.array([0., 0., 0., 1., 1., 1., 0.5]), jnp.array([1., -1., 0., 1., -1., 0., 0.]))
      Array([1.3132617, 0.3132617, 0.6931472, 0.3132617, 1.3132617, 0.6931472,
             0.6931472], dtype=float32)
    """
    fn = "sigmoid_cross_entropy_with_logits"
    z, x = check_labels_logits(labels, logits, fn)
    return _sce_compiled(x, z, _checks.where_mask(where, x.shape, fn))


# The checks above run in Python; the loss is one compiled program, so an eager call dispatches
# once (as jax.nn's functions do), and inside a caller's jit it is simply inlined.
@jax.jit
def _sce_compiled(x: Array, z: Array, mask: Array | None) -> Array:
    return keep(mask, _sce(hide(mask, x), hide(mask, z)))


def weighted_sigmoid_cross_entropy_with_logits(
    labels: ArrayLike, logits: ArrayLike, pos_weight: ArrayLike, *, where: ArrayLike | None = None
) -> Array:
    r"""Sigmoid cross-entropy with the positive term scaled by ``pos_weight``.

    TensorFlow's ``tf.nn.weighted_cross_entropy_with_logits`` and PyTorch's
    ``BCEWithLogitsLoss(pos_weight=...)``, elementwise and stable for any ``x``:

    .. math::

        \ell = w_+ \, z \, \mathrm{softplus}(-x) + (1 - z) \, \mathrm{softplus}(x)

    Args:
      labels: Targets of ``logits``' shape (soft labels allowed).
      logits: Float logits.
      pos_weight: :math:`w_+`: a scalar, or an array broadcastable to ``logits`` (per class,
        ``[num_classes]``, as PyTorch).
      where: Optional bool mask broadcastable to ``logits``; False elements are absent.

    Returns:
      The elementwise loss, with ``logits``' shape and dtype.

    Raises:
      TypeError: integer or bool ``logits``, or a non-bool ``where``.
      ValueError: mismatched ``labels`` and ``logits``, ``pos_weight`` or ``where`` not
        broadcastable to ``logits``, or None.

    Examples:
      >>> import jax.numpy as jnp
      >>> import sigmoid_xent as sx
      >>> sx.weighted_sigmoid_cross_entropy_with_logits(
      ...     jnp.array([1., .5, 0.]), jnp.array([1.5, -0.1, -10.]), 1.5)
      Array([3.0211994e-01, 8.8049585e-01, 4.5398901e-05], dtype=float32)
    """
    fn = "weighted_sigmoid_cross_entropy_with_logits"
    z, x = check_labels_logits(labels, logits, fn)
    cd = _checks.compute_dtype(x.dtype)
    pw = _checks.as_float(pos_weight, cd, "pos_weight", fn)
    _checks.broadcastable_to(pw, x.shape, "pos_weight", fn, target="logits")
    return _weighted_compiled(x, z, pw, _checks.where_mask(where, x.shape, fn))


@jax.jit
def _weighted_compiled(x: Array, z: Array, pw: Array, mask: Array | None) -> Array:
    cd = _checks.compute_dtype(x.dtype)
    xc, zc = hide(mask, x).astype(cd), hide(mask, z).astype(cd)
    # pos_weight keeps its own size (no broadcast array in memory), at the logits' rank (no
    # implicit rank promotion).
    pw = jnp.reshape(pw.astype(cd), (1,) * (xc.ndim - pw.ndim) + pw.shape)
    return keep(mask, _weighted(xc, zc, pw)).astype(x.dtype)


@jax.custom_vjp
def _weighted(x: Array, z: Array, pw: Array) -> Array:
    """The weighted loss (``pw`` of ``x``'s rank, broadcastable), by one custom VJP.

    ``softplus(+-x) = max(+-x, 0) + log1p(e)`` from one ``e = exp(-|x|)`` shared by the value
    and the gradient; through the core twice (two VJPs), the program was 0.95-1.01x the speed
    of autodiff of TensorFlow's formula. The value's outermost select handles infinite logits,
    so that a following mean reads one finished array (benchmarks/README.md).
    """
    return _weighted_fwd(x, z, pw)[0]


def _weighted_fwd(x: Array, z: Array, pw: Array) -> tuple[Array, tuple[Array, Array, Array]]:
    # Plain jnp code (not `_weighted` itself) keeps `jax.hessian` working.
    inf = jnp.isinf(x)
    finite_x = jnp.where(inf, jnp.zeros_like(x), x)  # no 0 * inf below
    p = bce_parts(finite_x, z)
    a, log_term = -p.minus_abs, p.log1p_e
    pos = finite_x >= 0
    positive = pw * z  # weight of softplus(-x)
    value = positive * jnp.where(pos, log_term, a + log_term) + (1 - z) * jnp.where(
        pos, a + log_term, log_term
    )
    # At x = +-inf one softplus is 0, the other inf (0 where its weight is 0).
    weight = jnp.where(x > 0, 1 - z, positive)
    special = jnp.where(weight == 0, jnp.zeros_like(value), jnp.full_like(value, jnp.inf))
    return jnp.where(inf, special, value), (x, z, pw)


def _weighted_bwd(res: tuple[Array, Array, Array], g: Array) -> tuple[Array, Array, Array]:
    x, z, pw = res
    g = jnp.asarray(g).astype(x.dtype)  # a Python scalar under `jax.checkpoint`
    e = jnp.exp(neg_abs(x))
    s = e / (1 + e)  # sigmoid(-|x|), never cancels
    pos = x >= 0
    # d/dx = (1 - z) sigmoid(x) - pos_weight z sigmoid(-x), each sigmoid as s or 1 - s.
    gx = g * ((1 - z) * jnp.where(pos, 1 - s, s) - pw * z * jnp.where(pos, s, 1 - s))
    softplus_neg = loss_value(x, jnp.ones_like(x))
    # The label and pos_weight gradients are infinite at infinite logits: a zero cotangent (a zero
    # weight) must still give 0, and pos_weight = 0 switches its term off.
    gz = absorbing_mul(g, absorbing_mul(pw, softplus_neg) - loss_value(x, jnp.zeros_like(x)))
    gpw = absorbing_mul(g, absorbing_mul(z, softplus_neg))
    summed = tuple(i for i, (n, m) in enumerate(zip(pw.shape, x.shape, strict=True)) if n != m)
    chex.assert_equal_shape([gx, gz, x])
    return gx, gz, jnp.sum(gpw, axis=summed, keepdims=True).astype(pw.dtype)


_weighted.defvjp(_weighted_fwd, _weighted_bwd)


def smooth_labels(labels: Array, smoothing: Array | None, dtype: Any) -> Array:
    """``z (1 - s) + s / 2`` in ``dtype``: labels squeezed towards 1/2 (TF v1 and Keras)."""
    if smoothing is None:
        return labels.astype(dtype)
    s = jnp.broadcast_to(smoothing.astype(dtype), labels.shape)
    return labels.astype(dtype) * (1 - s) + 0.5 * s


def _split_mul(a: Array, b: Array) -> Array:
    big = jnp.asarray(jnp.finfo(jnp.result_type(b)).max, jnp.result_type(b))
    infinite = jnp.isinf(b)
    finite_part = jnp.where(infinite, jnp.where(b > 0, big, -big), b)
    return (a * finite_part) * jnp.where(infinite, big, jnp.ones_like(b))


@jax.custom_jvp
def absorbing_mul(a: Array, b: Array) -> Array:
    """``a * b`` (``a`` finite) in which zero absorbs infinity: ``0 * ±inf = 0``, in every
    derivative too.

    An infinite ``b`` enters as two finite factors, ``(a * ±max) * max``: their product
    overflows to ``±inf`` for every normal ``a`` and is exactly 0 for ``a = 0``. No ``where``
    looks at ``a``, so the product is linear in ``a`` and JAX transposes it as it is: the
    cotangent of ``a`` is ``ct * b`` under the same rule, so a zero cotangent (a zero weight, a
    term whose label weight is 0) gives 0 instead of NaN. The tangent is
    ``ta * b + tb * a``, each product formed the same way. NaN propagates.
    """
    return _split_mul(a, b)


@absorbing_mul.defjvp
def _absorbing_mul_jvp(
    primals: tuple[Array, Array], tangents: tuple[Array, Array]
) -> tuple[Array, Array]:
    (a, b), (ta, tb) = primals, tangents
    return _split_mul(a, b), _split_mul(ta, b) + _split_mul(tb, a)


def binary_cross_entropy(
    labels: ArrayLike,
    probs: ArrayLike,
    *,
    epsilon: float = 1e-7,
    where: ArrayLike | None = None,
) -> Array:
    r"""Binary cross-entropy on probabilities, exactly as tf.keras 2 computes it.

    .. math::

        p' = \mathrm{clip}(p, \epsilon, 1 - \epsilon), \quad
        \ell = -\big(z \log(p' + \epsilon) + (1 - z) \log(1 - p' + \epsilon)\big)

    Computed in the input dtype (16-bit in float32), as TF does. The loss is capped near
    :math:`-\log\epsilon`: :func:`sigmoid_cross_entropy_with_logits` on logits is exact there.

    Args:
      labels: Targets of ``probs``' shape.
      probs: Float probabilities in [0, 1].
      epsilon: The fuzz factor (Keras' ``backend.epsilon()``).
      where: Optional bool mask broadcastable to ``probs``; False elements are absent.

    Returns:
      The elementwise loss, with ``probs``' shape and dtype.

    Raises:
      TypeError: integer or bool ``probs``, or a non-bool ``where``.
      ValueError: mismatched shapes, a ``where`` not broadcastable to ``probs``, or None.

    Examples:
      >>> import jax.numpy as jnp
      >>> import sigmoid_xent as sx
      >>> sx.binary_cross_entropy(jnp.array([0., 1.]), jnp.array([1., 0.]))
      Array([15.333239, 15.424949], dtype=float32)
    """
    fn = "binary_cross_entropy"
    p = _checks.float_array(probs, fn, name="probs")
    z = _checks.as_float(labels, p.dtype, "labels", fn)
    _checks.same_shape(z, p, fn, names=("labels", "probs"))
    eps = _checks.as_float(epsilon, _checks.compute_dtype(p.dtype), "epsilon", fn)
    return _probs_loss(p, z, eps, _checks.where_mask(where, p.shape, fn, target="probs"))


@jax.jit
def _probs_loss(p: Array, z: Array, epsilon: Array, mask: Array | None = None) -> Array:
    cd = _checks.compute_dtype(p.dtype)
    pc, zc = hide(mask, p).astype(cd), hide(mask, z).astype(cd)
    # The barrier keeps XLA from reassociating (1 - p) + eps into (1 + eps) - p under jit, which
    # would give 15.249238 instead of TF's 15.333239.
    eps = jax.lax.optimization_barrier(epsilon.astype(cd))
    pc = jnp.clip(pc, eps, 1 - eps)
    loss = -(zc * jnp.log(pc + eps) + (1 - zc) * jnp.log(1 - pc + eps))
    return keep(mask, loss).astype(p.dtype)
