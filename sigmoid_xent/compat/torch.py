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
from sigmoid_xent._mask import hide
from sigmoid_xent.reductions import Reduction, weighted_reduction

Array = jax.Array

__all__ = ["binary_cross_entropy_with_logits", "sigmoid_focal_loss"]


def _input_target(input: ArrayLike, target: ArrayLike, fn: str, names: tuple[str, str]):
    x = _checks.float_array(input, fn, names[0])
    z = _checks.option_value(target, x.dtype, names[1], fn)
    if np.shape(z) != np.shape(x):
        raise ValueError(
            f"{fn}: `{names[1]}` must have the same shape as `{names[0]}` (PyTorch does not "
            f"broadcast them), got {names[1]} {_checks.describe(z)} and {names[0]} "
            f"{_checks.describe(x)}."
        )
    return x, z


def _weight(value: ArrayLike | None, dtype, name: str, fn: str, shape: tuple[int, ...]):
    """An optional weight broadcastable to ``input``'s shape (None stays None)."""
    if value is None:
        return None
    value = _checks.option_value(value, dtype, name, fn)
    _checks.broadcastable_to(value, shape, name, fn, target="input")
    return value


def binary_cross_entropy_with_logits(
    input: ArrayLike,
    target: ArrayLike,
    weight: ArrayLike | None = None,
    reduction: str = "mean",
    pos_weight: ArrayLike | None = None,
    *,
    where: ArrayLike | None = None,
) -> Array:
    r"""PyTorch's ``F.binary_cross_entropy_with_logits`` on JAX arrays, stable.

    .. math::

        \ell_i = w_i \big(p_i \, z_i \log(1 + e^{-x_i}) + (1 - z_i) \log(1 + e^{x_i})\big)

    with :math:`w` = ``weight`` and :math:`p` = ``pos_weight`` (1 when None), then
    ``reduction``: ``"none"``, ``"mean"`` (the plain mean :math:`\sum_i \ell_i / n` over the
    ``n`` present elements, not a weighted mean) or ``"sum"``.

    As PyTorch: ``target`` must have ``input``'s shape; ``weight`` and ``pos_weight``
    broadcast to it (``pos_weight`` ``[C]`` weighs the positive term of each class). Computed
    by :func:`sigmoid_xent.weighted_sigmoid_cross_entropy_with_logits` and
    :func:`sigmoid_xent.reduce_loss`: finite at ``±inf`` inputs (PyTorch: NaN), a zero
    ``weight`` removes an element even where its loss is infinite, the mean of nothing is 0,
    and integer and bool targets are cast (PyTorch refuses them).

    Args:
      input: Float logits, any shape.
      target: Targets in [0, 1] of ``input``'s shape.
      weight: Optional rescaling weight broadcastable to ``input``'s shape.
      reduction: ``"none"``, ``"mean"`` or ``"sum"`` (any case).
      pos_weight: Optional weight of the positive term, broadcastable to ``input``'s shape
        (typically ``[num_classes]``).
      where: Optional bool mask broadcastable to ``input``'s shape; a False element is absent:
        loss 0, no share in the mean's count, zero gradients, whatever its inputs hold.

    Returns:
      A scalar for ``"mean"``/``"sum"``, else the elementwise losses; ``input``'s dtype.

    Raises:
      TypeError: integer or bool ``input``, or a non-bool ``where``.
      ValueError: ``target`` of another shape, ``weight``/``pos_weight``/``where`` not
        broadcastable to ``input``'s shape, or an unknown ``reduction``.

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
    red = Reduction.parse(reduction, fn, peer="torch")
    w = _weight(weight, cd, "weight", fn, x.shape)
    pw = _weight(pos_weight, cd, "pos_weight", fn, x.shape)
    mask = _checks.where_mask(where, x.shape, fn, target="input")
    return _bce(x, z, w, pw, mask, reduction=red)


@functools.partial(jax.jit, static_argnames="reduction")
def _bce(
    x: Array,
    z: Array,
    w: Array | None,
    pw: Array | None,
    mask: Array | None,
    *,
    reduction: Reduction,
) -> Array:
    if pw is None:
        losses = sigmoid_xent.sigmoid_cross_entropy_with_logits(z, x, where=mask)
    else:
        # pos_weight per element is masked with the element.
        pw = pw if jnp.ndim(pw) == 0 else hide(mask, pw)
        losses = sigmoid_xent.weighted_sigmoid_cross_entropy_with_logits(z, x, pw, where=mask)
    fn = "compat.torch.binary_cross_entropy_with_logits"
    return weighted_reduction(losses, w, reduction, fn, where=mask)


def sigmoid_focal_loss(
    inputs: ArrayLike,
    targets: ArrayLike,
    alpha: float = 0.25,
    gamma: float = 2,
    reduction: str = "none",
    *,
    where: ArrayLike | None = None,
) -> Array:
    r"""torchvision's ``ops.sigmoid_focal_loss`` on JAX arrays, accurate and stable.

    .. math::

        \ell = \alpha_t (1 - p_t)^\gamma \, \mathrm{bce}(x, z), \quad
        p_t = z\sigma(x) + (1 - z)(1 - \sigma(x)), \quad
        \alpha_t = \alpha z + (1 - \alpha)(1 - z)

    As torchvision: the defaults ``alpha=0.25``, ``gamma=2``, ``reduction="none"``; a negative
    ``alpha`` (its ``-1``) drops :math:`\alpha_t`; ``targets`` of ``inputs``' shape; ``"mean"``
    the plain mean and ``"sum"`` the sum of the elementwise losses. Computed by
    :func:`sigmoid_xent.sigmoid_focal_loss`: accurate for every ``gamma``, finite
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
      where: Optional bool mask broadcastable to ``inputs``' shape; a False element is absent:
        loss 0, no share in the mean's count, zero gradients, whatever its inputs hold.

    Returns:
      The elementwise losses (``"none"``) or a scalar; ``inputs``' dtype.

    Raises:
      TypeError: integer or bool ``inputs``, or a non-bool ``where``.
      ValueError: ``targets`` of another shape, ``alpha``/``gamma``/``where`` not broadcastable
        to ``inputs``' shape, a concrete negative ``gamma``, or an unknown ``reduction``.

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
    red = Reduction.parse(reduction, fn, peer="torch")
    _checks.in_range(gamma, "gamma", fn, low=0)
    g = _checks.option_value(gamma, cd, "gamma", fn)
    _checks.broadcastable_to(g, x.shape, "gamma", fn, target="inputs")
    a = None
    if alpha is not None:
        a = _checks.option_value(alpha, cd, "alpha", fn)
        _checks.broadcastable_to(a, x.shape, "alpha", fn, target="inputs")
    mask = _checks.where_mask(where, x.shape, fn, target="inputs")
    return _focal(x, z, a, g, mask, reduction=red, static_gamma=_checks.static_scalar(gamma))


# A Python-number gamma is static, so that an integer one reaches the core's products.
@functools.partial(jax.jit, static_argnames=("reduction", "static_gamma"))
def _focal(
    x: Array,
    z: Array,
    a: Array | None,
    g: Array,
    mask: Array | None,
    *,
    reduction: Reduction,
    static_gamma: float | None,
) -> Array:
    x, z = hide(mask, x), hide(mask, z)
    # Per-element options are masked too (a scalar one holds no element of its own).
    g = g if jnp.ndim(g) == 0 else hide(mask, g)
    a = a if a is None or jnp.ndim(a) == 0 else hide(mask, a)
    gamma = g if static_gamma is None else static_gamma
    losses = sigmoid_xent.sigmoid_focal_loss(z, x, alpha=a, gamma=gamma)
    fn = "compat.torch.sigmoid_focal_loss"
    return weighted_reduction(losses, None, reduction, fn, where=mask)
