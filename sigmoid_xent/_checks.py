"""Argument checks and dtype rules shared by every public function.

Every check runs at trace time on static shapes and dtypes, so it costs nothing inside ``jit``
and fails before any computation with a message naming the argument.
"""

from __future__ import annotations

import operator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def describe(x: Any) -> str:
    """``shape (..) and dtype ..`` of an array-like, for error messages."""
    return f"shape {tuple(np.shape(x))} and dtype {jnp.result_type(x)}"


def not_none(value: Any, name: str, fn: str) -> None:
    if value is None:
        raise ValueError(f"{fn}: `{name}` must be an array, got None.")


def _nested(value: Any, name: str, fn: str) -> Any:
    """Python lists/tuples (as Keras users pass them) become arrays with JAX's default dtypes."""
    if not isinstance(value, (list, tuple)):
        return value
    try:
        return jnp.asarray(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{fn}: `{name}` must be a rectangular (not ragged) nested {type(value).__name__} "
            "of numbers, got one that cannot be converted to an array."
        ) from None


def _numeric_dtype(value: Any, name: str, fn: str) -> Any:
    """The dtype JAX would give `value`; a TypeError naming `name` for non-numeric values."""
    try:
        dtype = jnp.result_type(value)
    except (TypeError, ValueError):
        dtype = None
    if dtype is None or not (jnp.issubdtype(dtype, jnp.number) or dtype == jnp.bool_):
        raise TypeError(
            f"{fn}: `{name}` must be an array of numbers, got {type(value).__name__} "
            f"{_short_repr(value)}."
        )
    return dtype


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def float_array(logits: Any, fn: str, name: str = "logits") -> Array:
    """``logits`` (or losses, probabilities, embeddings: any input that must be floating) as a
    float array; integer/bool values are a TypeError naming ``name``."""
    not_none(logits, name, fn)
    if isinstance(logits, jax.Array) and jnp.issubdtype(logits.dtype, jnp.floating):
        return logits  # no conversion: even a no-op cast of a masked NaN trips debug_nans
    logits = _nested(logits, name, fn)
    dtype = _numeric_dtype(logits, name, fn)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{fn}: `{name}` must have a floating dtype (float16, bfloat16, float32, "
            f"float64), got {describe(logits)}. Cast it explicitly, e.g. "
            f"`{name}.astype(jnp.float32)`."
        )
    return jnp.asarray(logits)


def as_float(value: Any, dtype: Any, name: str, fn: str) -> Array:
    """Casts integer/bool values to `dtype`; float values keep their own dtype."""
    not_none(value, name, fn)
    if isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jnp.floating):
        return value
    value = _nested(value, name, fn)
    value_dtype = _numeric_dtype(value, name, fn)
    if jnp.issubdtype(value_dtype, jnp.complexfloating):
        raise TypeError(f"{fn}: `{name}` must be real, got {describe(value)}.")
    if not jnp.issubdtype(value_dtype, jnp.floating):
        return jnp.asarray(value, dtype)
    return jnp.asarray(value)


def compute_dtype(dtype: Any) -> Any:
    """16-bit floats are computed in float32; float32/float64 in their own dtype."""
    dtype = jnp.dtype(dtype)
    return jnp.float32 if dtype.itemsize < 4 else dtype


def same_shape(
    labels: Array, logits: Array, fn: str, names: tuple[str, str] = ("labels", "logits")
) -> None:
    if np.shape(labels) != np.shape(logits):
        raise ValueError(
            f"{fn}: `{names[0]}` and `{names[1]}` must have the same shape (no "
            f"broadcasting, as in TensorFlow), got {names[0]} {describe(labels)} and "
            f"{names[1]} {describe(logits)}."
        )


def broadcastable_to(
    value: Any, shape: tuple[int, ...], name: str, fn: str, target: str = "losses"
) -> None:
    value_shape = tuple(np.shape(value))
    try:
        result = np.broadcast_shapes(value_shape, tuple(shape))
    except ValueError:
        result = None
    if result != tuple(shape):
        raise ValueError(
            f"{fn}: `{name}` of shape {value_shape} cannot be broadcast to the {target} "
            f"shape {tuple(shape)}."
        )


def static_scalar(value: Any) -> float | None:
    """The Python value of a concrete scalar, or None for arrays/tracers."""
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return float(value)
    return None


def is_traced(x: Any) -> bool:
    """Whether ``x`` is a tracer (inside ``jit``/``vmap``/``grad``), i.e. not a concrete value."""
    return isinstance(x, jax.core.Tracer)


def static_count(value: Any, name: str, fn: str, hint: str) -> int:
    """A non-negative Python int from ``value``; a clear error for None, tracers and floats."""
    if value is None:
        raise ValueError(f"{fn}: `{name}` is required{hint} (a static Python int), got None.")
    if is_traced(value):
        raise ValueError(
            f"{fn}: `{name}` must be a static Python int (it fixes an output shape), got a "
            f"traced value of {describe(value)}. Close over it or mark it static, e.g. "
            f"`jax.jit(f, static_argnames='{name}')`."
        )
    if isinstance(value, bool):
        raise TypeError(f"{fn}: `{name}` must be a Python int, got the bool {value}.")
    try:
        result = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{fn}: `{name}` must be a Python int, got {value!r} of type {type(value).__name__}."
        ) from None
    if result < 0:
        raise ValueError(f"{fn}: `{name}` must be >= 0, got {result}.")
    return result


def where_mask(where: Any, shape: tuple[int, ...], fn: str, target: str = "logits") -> Array | None:
    """``where`` as a bool array broadcastable to ``shape`` (None stays None)."""
    if where is None:
        return None
    where = _nested(where, "where", fn)
    mask = jnp.asarray(where)
    if mask.dtype != jnp.bool_:
        raise TypeError(
            f"{fn}: `where` must be a boolean mask (True = present), got {describe(mask)}."
        )
    broadcastable_to(mask, shape, "where", fn, target=target)
    return mask


def label_smoothing(value: Any, shape: tuple[int, ...], dtype: Any, fn: str) -> Array | None:
    """``label_smoothing`` checked against the labels' shape; None for a static 0 (no-op).

    Any real dtype (cast to ``dtype``) and any shape broadcastable to the labels' shape; a
    concrete value outside [0, 1] is a ValueError (a traced one is used as given).
    """
    if static_scalar(value) == 0.0:
        return None
    s = as_float(value, dtype, "label_smoothing", fn)
    broadcastable_to(s, shape, "label_smoothing", fn, target="labels")
    in_range(s, "label_smoothing", fn, low=0.0, high=1.0)
    return s


def in_range(
    value: Any,
    name: str,
    fn: str,
    *,
    low: float | None = None,
    high: float | None = None,
    high_open: bool = False,
) -> None:
    """A concrete ``value`` (every element) must lie in ``[low, high]`` (``[low, high)`` with
    ``high_open``); a ValueError naming ``fn`` and ``name``. Traced values are not checked."""
    if value is None or is_traced(value):
        return
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = float(value)  # the common case, a Python number: no array (eager calls stay cheap)
        above = high is not None and (v >= high if high_open else v > high)
        if not (v != v or (low is not None and v < low) or above):
            return
    host = np.asarray(value, dtype=np.float64)
    bad = np.isnan(host)
    if low is not None:
        bad |= host < low
    if high is not None:
        bad |= (host >= high) if high_open else (host > high)
    if bad.any():
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        span = f"[{lo}, {hi}{')' if high_open or high is None else ']'}"
        first = host.reshape(-1)[int(np.argmax(bad.reshape(-1)))]
        raise ValueError(f"{fn}: `{name}` must lie in {span}, got {first:g}.")


def option_value(value: Any, dtype: Any, name: str, fn: str) -> Any:
    """An option (``alpha``, ``gamma``, a weight) as a compiled body takes it.

    Python numbers stay Python floats (``gamma=2`` and ``gamma=2.0`` share one compiled program,
    and an eager call transfers nothing), float jax arrays pass as they are, anything else goes
    through :func:`as_float`.
    """
    if isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jnp.floating):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return as_float(value, dtype, name, fn)


def broadcast_together(fn: str, rule: str, **named: Any) -> tuple[int, ...]:
    """The broadcast shape of the named arrays (None entries skipped), as NumPy broadcasts them;
    a ValueError naming every shape otherwise (``rule`` says whose broadcasting it is)."""
    shapes = {name: tuple(np.shape(v)) for name, v in named.items() if v is not None}
    distinct = set(shapes.values())
    if len(distinct) == 1:
        return distinct.pop()
    try:
        return tuple(np.broadcast_shapes(*shapes.values()))
    except ValueError:
        listed = ", ".join(f"`{name}` {shape}" for name, shape in shapes.items())
        raise ValueError(
            f"{fn}: shapes {listed} cannot be broadcast together ({rule} broadcasts them as "
            "NumPy does)."
        ) from None


Shape = tuple[int, ...]


def keras_same_rank(a: Shape, b: Shape) -> tuple[Shape, Shape]:
    """Keras's rule for two shapes whose ranks differ by one, the longer ending in 1.

    A rank-1 partner gains a trailing 1 (labels ``[batch]`` with predictions ``[batch, 1]``);
    otherwise the trailing 1 is dropped. Other shapes are returned as they are.
    """
    a, b = tuple(a), tuple(b)
    if len(a) == len(b) + 1 and a[-1] == 1:
        return (a, b + (1,)) if len(b) == 1 else (a[:-1], b)
    if len(b) == len(a) + 1 and b[-1] == 1:
        return (a + (1,), b) if len(a) == 1 else (a, b[:-1])
    return a, b


def keras_weight_shape(
    shape: Shape,
    losses: Shape,
    fn: str,
    *,
    what: str = "`sample_weight`",
    batch_vector: bool = False,
) -> Shape:
    """The shape that weights (or a mask) of ``shape`` take against per-sample ``losses``.

    :func:`keras_same_rank`'s rule, expressed at the losses' own rank; with ``batch_vector``
    (tf.keras 2) a ``[batch]`` vector weighs each sample of higher-rank losses too. The result
    must broadcast to ``losses``; a ValueError naming ``what`` otherwise.
    """
    w, loss = tuple(shape), tuple(losses)
    if batch_vector and len(w) == 1 and len(loss) > 1 and w[0] == loss[0]:
        w = w + (1,) * (len(loss) - 1)
    matched, w = keras_same_rank(loss, w)
    if len(matched) > len(loss):  # the losses gained a trailing 1: the weights drop theirs
        w = w[:-1]
    elif len(matched) < len(loss):  # the losses' trailing 1 was dropped: the weights gain one
        w = w + (1,)
    try:
        ok = np.broadcast_shapes(w, loss) == loss
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"{fn}: {what} of shape {tuple(shape)} cannot be applied to the per-sample losses of "
            f"shape {loss}: expected a scalar, {'[batch], ' if batch_vector else ''}or a shape "
            "broadcastable to the per-sample losses (one trailing dimension of 1 is squeezed or "
            "added, as Keras does)."
        )
    return w


def int_axis(axis: Any, fn: str) -> int:
    """``axis`` as a Python int (one axis, as Keras takes it); a TypeError otherwise."""
    if not isinstance(axis, (bool, np.bool_)):
        try:
            return operator.index(axis)
        except TypeError:
            pass
    raise TypeError(
        f"{fn}: `axis` must be an int (one axis, as Keras), got {axis!r} of type "
        f"{type(axis).__name__}."
    )
