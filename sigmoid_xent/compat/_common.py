"""Checks and small pieces shared by the drop-in modules (optax, rax, torch).

Each check names the compat function and the argument, as the rest of the library does; the
conversions go through :mod:`sigmoid_xent._checks`, so the dtype rules are the library's.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sigmoid_xent import _checks

Array = jax.Array


def float_array(value: Any, fn: str, name: str) -> Array:
    """A float array (the library's rules); float jax arrays pass without a conversion."""
    if isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jnp.floating):
        return value
    return _checks.float_array(value, fn, name=name)


def as_float(value: Any, dtype: Any, name: str, fn: str) -> Any:
    """Integer/bool values cast to ``dtype``, floats kept (the library's rules).

    Float jax arrays and Python numbers pass unconverted (the compiled body converts them):
    an eager call then costs one dispatch, as ``jax.nn``'s functions do. Python ints become
    floats, so ``gamma=2`` and ``gamma=2.0`` share one compiled program.
    """
    if isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jnp.floating):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return _checks.as_float(value, dtype, name, fn)


def describe(x: Any) -> str:
    return f"shape {tuple(np.shape(x))} and dtype {jnp.result_type(x)}"


def broadcast_shape(fn: str, peer: str, **named: Any) -> tuple[int, ...]:
    """The broadcast shape of the named arrays (None entries skipped); a ValueError naming all."""
    shapes = {name: tuple(np.shape(v)) for name, v in named.items() if v is not None}
    distinct = set(shapes.values())
    if len(distinct) == 1:
        return distinct.pop()
    try:
        return tuple(np.broadcast_shapes(*shapes.values()))
    except ValueError:
        listed = ", ".join(f"`{name}` {shape}" for name, shape in shapes.items())
        raise ValueError(
            f"{fn}: shapes {listed} cannot be broadcast together ({peer} broadcasts them as "
            "NumPy does)."
        ) from None


def check_broadcastable(value: Any, shape: tuple[int, ...], name: str, fn: str, target: str):
    """`value` must broadcast to `shape` without growing it."""
    _checks.broadcastable_to(value, shape, name, fn, target=target)


def check_gamma(gamma: Any, fn: str) -> None:
    """A concrete negative `gamma` is an error (the modulating factor would blow up)."""
    g = _checks.static_scalar(gamma)
    if g is not None and g < 0:
        raise ValueError(f"{fn}: `gamma` must be >= 0, got {gamma}.")


def is_concrete(value: Any) -> bool:
    return not isinstance(value, jax.core.Tracer)


def reduction_name(reduction: Any, valid: tuple[str, ...], fn: str) -> str:
    """``reduction`` in lower case if it is one of ``valid`` (any case); a ValueError if not."""
    key = reduction.lower() if isinstance(reduction, str) else None
    if key not in valid:
        raise ValueError(f"{fn}: `reduction` must be one of {list(valid)}, got {reduction!r}.")
    return key


def times(loss: Array, weights: Array) -> Array:
    """``loss * weights`` where a zero weight removes the item even if its loss is infinite.

    ``0 * inf`` would be NaN. The infinite value is replaced before the product, so the product
    is 0 there and d/d weights is 0 too, not NaN (no NaN in a discarded branch either).
    """
    absent = (weights == 0) & jnp.isinf(loss)
    return jnp.where(absent, jnp.zeros_like(loss), loss) * weights
