"""PyTorch's and torchvision's sigmoid losses with their signatures, on JAX arrays.

For models ported from PyTorch: ``torch.nn.functional.binary_cross_entropy_with_logits`` and
``torchvision.ops.sigmoid_focal_loss`` with the same arguments, defaults, shape rules and
values, computed by sigmoid_xent's stable core (finite at ``±inf`` inputs, where PyTorch's
formula gives NaN) with its custom-VJP gradients. Pure JAX: torch is not imported.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

import sigmoid_xent
from sigmoid_xent import _checks
from sigmoid_xent.compat import _common

Array = jax.Array

__all__ = ["binary_cross_entropy_with_logits", "sigmoid_focal_loss"]

_REDUCTIONS = ("none", "mean", "sum")
# PyTorch's "mean" is the plain mean over elements: the library's sum_over_batch_size.
_LIBRARY_REDUCTION = {"none": "none", "mean": "sum_over_batch_size", "sum": "sum"}


def _input_target(input: ArrayLike, target: ArrayLike, fn: str, names: tuple[str, str]):
    x = _common.float_array(input, fn, names[0])
    z = _common.as_float(target, x.dtype, names[1], fn)
    if np.shape(z) != np.shape(x):
        raise ValueError(
            f"{fn}: `{names[1]}` must have the same shape as `{names[0]}` (PyTorch does not "
            f"broadcast them), got {names[1]} {_common.describe(z)} and {names[0]} "
            f"{_common.describe(x)}."
        )
    return x, z


def binary_cross_entropy_with_logits(
    input: ArrayLike,
    target: ArrayLike,
    weight: ArrayLike | None = None,
    reduction: str = "mean",
    pos_weight: ArrayLike | None = None,
) -> Array:
    r"""PyTorch's ``F.binary_cross_entropy_with_logits`` on JAX arrays, stable.

    .. math::

        \ell_i = w_i \big(p_i \, z_i \log(1 + e^{-x_i}) + (1 - z_i) \log(1 + e^{x_i})\big)

    with :math:`w` = ``weight`` and :math:`p` = ``pos_weight`` (1 when None), then
    ``reduction``: ``"none"`` (the elementwise losses), ``"mean"`` (the plain mean of the
    weighted losses, :math:`\sum_i \ell_i / n`, not a weighted mean) or ``"sum"``.

    As PyTorch: ``target`` must have ``input``'s shape; ``weight`` and ``pos_weight``
    broadcast to it (``pos_weight`` ``[C]`` weighs the positive term of each class on the last
    axis, and only that term). Computed by
    :func:`sigmoid_xent.weighted_sigmoid_cross_entropy_with_logits` (no cancellation), with
    finite values at ``±inf`` inputs (0 for an agreeing hard target; PyTorch gives NaN), a zero
    ``weight`` removing an element even where its loss is infinite, and gradients (input,
    target, weight, pos_weight) from the core's custom VJP. The mean of an empty input is 0
    (PyTorch: NaN). Integer and bool targets are cast (PyTorch refuses them).

    Args:
      input: Float logits, any shape.
      target: Targets in [0, 1] of ``input``'s shape.
      weight: Optional rescaling weight broadcastable to ``input``'s shape.
      reduction: ``"none"``, ``"mean"`` or ``"sum"`` (any case).
      pos_weight: Optional weight of the positive term, broadcastable to ``input``'s shape
        (typically ``[num_classes]``).

    Returns:
      A scalar for ``"mean"``/``"sum"``, else the elementwise losses; ``input``'s dtype.

    Raises:
      TypeError: integer or bool ``input``.
      ValueError: ``target`` of another shape, ``weight``/``pos_weight`` not broadcastable to
        ``input``'s shape, or an unknown ``reduction``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from sigmoid_xent.compat import torch
      >>> x, t = jnp.array([1.5, -0.1, -10.]), jnp.array([1., .5, 0.])
      >>> torch.binary_cross_entropy_with_logits(x, t, pos_weight=jnp.array(1.5), reduction="none")
      Array([3.0211994e-01, 8.8049585e-01, 4.5398901e-05], dtype=float32)
      >>> torch.binary_cross_entropy_with_logits(x, t, weight=jnp.array([2., 1., 0.]))
      Array(0.3657411, dtype=float32)
    """
    fn = "compat.torch.binary_cross_entropy_with_logits"
    x, z = _input_target(input, target, fn, ("input", "target"))
    cd = _checks.compute_dtype(x.dtype)
    red = _common.reduction_name(reduction, _REDUCTIONS, fn)
    w = pw = None
    if weight is not None:
        w = _common.as_float(weight, cd, "weight", fn)
        _common.check_broadcastable(w, x.shape, "weight", fn, target="input")
    if pos_weight is not None:
        pw = _common.as_float(pos_weight, cd, "pos_weight", fn)
        _common.check_broadcastable(pw, x.shape, "pos_weight", fn, target="input")
    return _bce(x, z, w, pw, reduction=red)


def _reduce(losses: Array, reduction: str, dtype) -> Array:
    return sigmoid_xent.reduce_loss(losses, reduction=_LIBRARY_REDUCTION[reduction]).astype(dtype)


@functools.partial(jax.jit, static_argnames="reduction")
def _bce(x: Array, z: Array, w: Array | None, pw: Array | None, *, reduction: str) -> Array:
    if pw is None:
        losses = sigmoid_xent.sigmoid_cross_entropy_with_logits(z, x)
    else:
        losses = sigmoid_xent.weighted_sigmoid_cross_entropy_with_logits(
            z, x, jnp.broadcast_to(pw, x.shape)
        )
    if w is not None:
        cd = _checks.compute_dtype(x.dtype)
        losses = _common.times(losses.astype(cd), jnp.broadcast_to(w.astype(cd), x.shape))
    return _reduce(losses, reduction, x.dtype)


def sigmoid_focal_loss(
    inputs: ArrayLike,
    targets: ArrayLike,
    alpha: float = 0.25,
    gamma: float = 2,
    reduction: str = "none",
) -> Array:
    r"""torchvision's ``ops.sigmoid_focal_loss`` on JAX arrays, accurate and stable.

    .. math::

        \ell = \alpha_t (1 - p_t)^\gamma \, \mathrm{bce}(x, z), \quad
        p_t = z\sigma(x) + (1 - z)(1 - \sigma(x)), \quad
        \alpha_t = \alpha z + (1 - \alpha)(1 - z)

    As torchvision: the defaults ``alpha=0.25``, ``gamma=2``, ``reduction="none"``; a negative
    ``alpha`` (its ``-1``) drops :math:`\alpha_t`; ``targets`` of ``inputs``' shape; ``"mean"``
    the plain mean and ``"sum"`` the sum of the elementwise losses. Computed by
    :func:`sigmoid_xent.sigmoid_focal_loss`: within 2 ulp for every ``gamma`` in float32, finite
    at ``±inf`` inputs and finite gradients for ``gamma = 0`` and ``0 < gamma < 1``; a
    Python-number ``gamma`` is static (one compiled program per value). ``alpha=None`` is
    accepted as "no balance" too.

    Args:
      inputs: Float logits, any shape.
      targets: Hard or soft targets of ``inputs``' shape.
      alpha: Weight of the positive class in [0, 1], or negative for none (a scalar, or an
        array broadcastable to ``inputs``' shape).
      gamma: Focusing exponent ``>= 0``.
      reduction: ``"none"``, ``"mean"`` or ``"sum"`` (any case).

    Returns:
      The elementwise losses (``"none"``) or a scalar; ``inputs``' dtype.

    Raises:
      TypeError: integer or bool ``inputs``.
      ValueError: ``targets`` of another shape, ``alpha``/``gamma`` not broadcastable to
        ``inputs``' shape, a concrete negative ``gamma``, or an unknown ``reduction``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from sigmoid_xent.compat import torch
      >>> torch.sigmoid_focal_loss(jnp.array([2., 2.]), jnp.array([1., 0.]))
      Array([4.5089072e-04, 1.2375586e+00], dtype=float32)
      >>> torch.sigmoid_focal_loss(jnp.array([2., 2.]), jnp.array([1., 0.]), alpha=-1,
      ...                          reduction="sum")
      Array(1.6518817, dtype=float32)
    """
    fn = "compat.torch.sigmoid_focal_loss"
    x, z = _input_target(inputs, targets, fn, ("inputs", "targets"))
    cd = _checks.compute_dtype(x.dtype)
    red = _common.reduction_name(reduction, _REDUCTIONS, fn)
    _common.check_gamma(gamma, fn)
    g = _common.as_float(gamma, cd, "gamma", fn)
    _common.check_broadcastable(g, x.shape, "gamma", fn, target="inputs")
    a = None
    if alpha is not None:
        a = _common.as_float(alpha, cd, "alpha", fn)
        _common.check_broadcastable(a, x.shape, "alpha", fn, target="inputs")
    return _focal(x, z, a, g, reduction=red, static_gamma=_checks.static_scalar(gamma))


# A Python-number gamma is static, so that an integer one reaches the core's products.
@functools.partial(jax.jit, static_argnames=("reduction", "static_gamma"))
def _focal(
    x: Array, z: Array, a: Array | None, g: Array, *, reduction: str, static_gamma: float | None
) -> Array:
    gamma = g if static_gamma is None else static_gamma
    losses = sigmoid_xent.sigmoid_focal_loss(z, x, alpha=a, gamma=gamma)
    return _reduce(losses, reduction, x.dtype)
