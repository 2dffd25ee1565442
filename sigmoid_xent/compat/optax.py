"""optax's sigmoid losses with optax's signatures, computed by sigmoid_xent's stable core.

Replace ``optax.sigmoid_binary_cross_entropy`` / ``optax.sigmoid_focal_loss`` (also reachable
as ``optax.losses.*``) with these: same argument order ``(logits, labels)`` (the reverse of
:func:`sigmoid_xent.sigmoid_cross_entropy_with_logits`, which takes TF's ``(labels, logits)``),
same keyword-only ``alpha``/``gamma``, same broadcasting, same values wherever optax's are
finite and accurate; finite values and gradients at ``±inf`` logits (optax gives NaN there) and
the gradients of the library's custom VJP. Pure JAX: optax is not imported.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

import sigmoid_xent
from sigmoid_xent import _checks
from sigmoid_xent._core import absorbing_mul
from sigmoid_xent._mask import hide, keep

Array = jax.Array

__all__ = ["sigmoid_binary_cross_entropy", "sigmoid_focal_loss"]

_PEER = "optax"


def _logits_labels(logits: ArrayLike, labels: ArrayLike, fn: str) -> tuple[Array, Array]:
    x = _checks.float_array(logits, fn, "logits")
    z = _checks.option_value(labels, x.dtype, "labels", fn)
    return x, z


def sigmoid_binary_cross_entropy(
    logits: ArrayLike, labels: ArrayLike, *, where: ArrayLike | None = None
) -> Array:
    r"""optax's ``sigmoid_binary_cross_entropy(logits, labels)``, elementwise and stable.

    .. math::

        \ell(x, z) = -z \log\sigma(x) - (1 - z) \log(1 - \sigma(x))
        = \max(x, 0) - x z + \log(1 + e^{-|x|})

    As optax: ``logits`` first, ``labels`` and ``logits`` broadcast against each other both
    ways (logits ``[C]`` with labels ``[N, C]`` give ``[N, C]``; done explicitly, so it also
    works under ``jax_numpy_rank_promotion="raise"``), integer and bool labels cast to the
    logits' dtype. Unlike optax: ``logits = ±inf`` give 0 where a hard label agrees (optax:
    NaN), 16-bit logits are computed in float32, and gradients come from the core's custom VJP
    (``d/dx = sigmoid(x) - z`` without cancellation, ``d/dz = -x``).

    Note the argument order: :func:`sigmoid_xent.sigmoid_cross_entropy_with_logits` takes
    TensorFlow's ``(labels, logits)``; this function takes optax's ``(logits, labels)``.

    Args:
      logits: Float logits.
      labels: Targets broadcastable with ``logits`` (soft labels allowed).
      where: Optional bool mask broadcastable to the loss; a False element is absent: loss 0 and
        zero gradients, whatever its logit and label hold (NaN included).

    Returns:
      The elementwise loss, with the broadcast shape and ``logits``' dtype.

    Raises:
      TypeError: integer or bool ``logits``, or a non-bool ``where``.
      ValueError: shapes that do not broadcast, or a None argument.

    Examples:
      >>> import jax.numpy as jnp
      >>> from sigmoid_xent.compat import optax
      >>> optax.sigmoid_binary_cross_entropy(jnp.array([1., -1., jnp.inf]), jnp.array([1, 1, 1]))
      Array([0.3132617, 1.3132617, 0.       ], dtype=float32)
    """
    fn = "compat.optax.sigmoid_binary_cross_entropy"
    x, z = _logits_labels(logits, labels, fn)
    shape = _checks.broadcast_together(fn, _PEER, logits=x, labels=z)
    return _bce(x, z, _checks.where_mask(where, shape, fn, target="loss"))


@jax.jit
def _bce(x: Array, z: Array, mask: Array | None) -> Array:
    x, z = jnp.broadcast_arrays(x, z)
    return sigmoid_xent.sigmoid_cross_entropy_with_logits(z, x, where=mask)


def sigmoid_focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: ArrayLike | None = None,
    gamma: ArrayLike = 2.0,
    where: ArrayLike | None = None,
) -> Array:
    r"""optax's ``sigmoid_focal_loss(logits, labels, *, alpha=None, gamma=2.0)``, elementwise.

    .. math::

        \ell = \alpha_t (1 - p_t)^\gamma \, \mathrm{bce}(x, z), \quad
        p_t = z\sigma(x) + (1 - z)(1 - \sigma(x)), \quad
        \alpha_t = \alpha z + (1 - \alpha)(1 - z)

    with :math:`\alpha_t = 1` when ``alpha`` is None (optax's default: no class balance). As
    optax: ``logits`` first, ``alpha`` and ``gamma`` keyword-only, ``logits``, ``labels``,
    ``alpha`` and ``gamma`` broadcast against each other, soft labels as above, and a negative
    ``alpha`` is used as given (torchvision's ``-1`` would switch the balance off; optax's does
    not). Computed by :func:`sigmoid_xent.sigmoid_focal_loss`: accurate for every ``gamma``,
    finite at ``±inf`` logits (optax: NaN), finite gradients for ``0 <= gamma < 1``; a
    Python-number ``gamma`` reaches its static-integer path.

    Args:
      logits: Float logits.
      labels: Hard or soft targets broadcastable with ``logits``.
      alpha: None, or the weight of the positive class (a scalar or an array broadcastable
        with the loss).
      gamma: Focusing exponent ``>= 0`` (a scalar or a broadcastable array).
      where: Optional bool mask broadcastable to the loss; a False element is absent: loss 0 and
        zero gradients, whatever its inputs hold (NaN included).

    Returns:
      The elementwise loss, with the broadcast shape and ``logits``' dtype.

    Raises:
      TypeError: integer or bool ``logits``; ``alpha``/``gamma`` passed positionally; a
        non-bool ``where``.
      ValueError: shapes that do not broadcast, a concrete negative ``gamma``, a None label.

    Examples:
      >>> import jax.numpy as jnp
      >>> from sigmoid_xent.compat import optax
      >>> optax.sigmoid_focal_loss(jnp.array([2., 2.]), jnp.array([1., 0.]), alpha=0.25)
      Array([4.5089072e-04, 1.2375586e+00], dtype=float32)
    """
    fn = "compat.optax.sigmoid_focal_loss"
    x, z = _logits_labels(logits, labels, fn)
    cd = _checks.compute_dtype(x.dtype)
    _checks.in_range(gamma, "gamma", fn, low=0)
    g = _checks.option_value(gamma, cd, "gamma", fn)
    a = None if alpha is None else _checks.option_value(alpha, cd, "alpha", fn)
    shape = _checks.broadcast_together(fn, _PEER, logits=x, labels=z, alpha=a, gamma=g)
    mask = _checks.where_mask(where, shape, fn, target="loss")
    if a is None:
        balance = "none"
    elif not _checks.is_traced(a) and not np.any(np.asarray(a) < 0):
        balance = "inside"
    else:
        balance = "outside"
    static = _checks.static_scalar(gamma)
    return _focal(x, z, a, g, mask, balance=balance, static_gamma=static)


# A Python-number gamma is static, so that an integer one reaches the core's products.
@functools.partial(jax.jit, static_argnames=("balance", "static_gamma"))
def _focal(
    x: Array,
    z: Array,
    a: Array | None,
    g: Array,
    mask: Array | None,
    *,
    balance: str,
    static_gamma: float | None,
) -> Array:
    shape = jnp.broadcast_shapes(x.shape, z.shape, g.shape, () if a is None else a.shape)
    x, z = hide(mask, jnp.broadcast_to(x, shape)), hide(mask, jnp.broadcast_to(z, shape))
    # Per-element options are masked too (a scalar one holds no element of its own).
    g = g if g.ndim == 0 else hide(mask, g)
    a = a if a is None or a.ndim == 0 else hide(mask, a)
    gamma = g if static_gamma is None else static_gamma
    if balance == "inside":
        return keep(mask, sigmoid_xent.sigmoid_focal_loss(z, x, alpha=a, gamma=gamma))
    loss = sigmoid_xent.sigmoid_focal_loss(z, x, alpha=None, gamma=gamma)
    if balance == "none":
        return keep(mask, loss)
    # optax's alpha_t for any alpha, negative ones included: the core would treat those as "no
    # balance" (torchvision's convention), so it is applied here.
    assert a is not None
    cd = _checks.compute_dtype(x.dtype)
    ac = jnp.broadcast_to(a.astype(cd), shape)
    zc = z.astype(cd)
    alpha_t = ac * zc + (1 - ac) * (1 - zc)
    return keep(mask, absorbing_mul(alpha_t, loss.astype(cd))).astype(x.dtype)
