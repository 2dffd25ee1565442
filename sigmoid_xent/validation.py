"""Data-dependent input checks with ``jax.experimental.checkify``."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jax.experimental import checkify
from jax.typing import ArrayLike

from sigmoid_xent import _checks

__all__ = ["validate_inputs"]


def validate_inputs(
    labels: ArrayLike,
    logits: ArrayLike | None = None,
    *,
    segment_ids: ArrayLike | None = None,
    num_segments: int | None = None,
    allow_padding: bool = False,
) -> None:
    r"""Checks the values the losses cannot check at trace time: labels, logits and segment ids.

    .. math::

        0 \le z \le 1 \ (\text{or } z < 0 \text{, padding}), \qquad x \text{ finite}, \qquad
        0 \le \mathrm{segment\_id} < \mathrm{num\_segments}

    On concrete arrays a failed check raises a ``ValueError`` at once; in a traced function it
    is a ``checkify.check``: wrap the step in ``jax.experimental.checkify.checkify`` (inside or
    outside ``jit``). Under a plain ``jit`` JAX itself refuses the step ("Cannot abstractly
    evaluate a checkify.check which was not functionalized") while lowering it, after this
    function has returned, so that message cannot name ``validate_inputs``.

    Args:
      labels: Labels of any shape; NaN fails the range check.
      logits: Optional logits, checked for NaN and inf.
      segment_ids: Optional integer segment ids of the packed ranking layout.
      num_segments: Number of segments, required with ``segment_ids``.
      allow_padding: Accept labels < 0 (ranking padding; implied by ``segment_ids``).

    Raises:
      ValueError: a failed check (concrete inputs), mismatched shapes, non-integer
        ``segment_ids``, or a missing or negative ``num_segments``.
      TypeError: non-numeric ``labels`` or ``logits``, or a non-int ``num_segments``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jax.experimental import checkify
      >>> import sigmoid_xent as sx
      >>> err, _ = jax.jit(checkify.checkify(sx.validate_inputs))(jnp.array([0., 1.5]))
      >>> print(err.get())  # doctest: +ELLIPSIS
      validate_inputs: labels must lie in [0, 1]...
    """
    fn = "validate_inputs"
    concrete = not any(_checks.is_traced(v) for v in (labels, logits, segment_ids) if v is not None)

    def _check(ok: Any, msg: str, **fmt: Any) -> None:
        if not concrete:
            checkify.check(ok, msg, **fmt)
        elif not bool(ok):
            raise ValueError(msg.format(**{k: int(v) for k, v in fmt.items()}))

    _checks.not_none(labels, "labels", fn)
    z = _checks.as_float(labels, jnp.float32, "labels", fn)
    if logits is not None:
        x = _checks.as_float(logits, jnp.float32, "logits", fn)
        _checks.same_shape(z, x, fn)
    n_segments = 0
    if segment_ids is not None:
        ids = jnp.asarray(segment_ids)
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            raise ValueError(f"{fn}: `segment_ids` must be integers, got dtype {ids.dtype}.")
        _checks.same_shape(z, ids, fn, names=("labels", "segment_ids"))
        n_segments = _checks.static_count(num_segments, "num_segments", fn, " with `segment_ids`")
    # Integer and bool labels (cast to float above) are checked too: the losses use them as is.
    padding = allow_padding or segment_ids is not None
    low_ok = (z >= 0) | (z < 0) & padding
    _check(
        jnp.all(low_ok & (z <= 1)),
        "validate_inputs: labels must lie in [0, 1]"
        + (" (or < 0 for padding)" if padding else "")
        + "; found {bad} bad label(s), first at flat index {idx}.",
        bad=jnp.sum(~(low_ok & (z <= 1))),
        idx=jnp.argmin(low_ok & (z <= 1)),
    )
    if logits is not None:
        finite = jnp.isfinite(x)
        _check(
            jnp.all(finite),
            "validate_inputs: logits must be finite; found {bad} NaN/inf logit(s), first at "
            "flat index {idx}.",
            bad=jnp.sum(~finite),
            idx=jnp.argmin(finite),
        )
    if segment_ids is not None:
        ok = (ids >= 0) & (ids < n_segments)
        _check(
            jnp.all(ok),
            f"validate_inputs: segment ids must lie in [0, {n_segments}); found "
            "{bad} out of range, first at flat index {idx}.",
            bad=jnp.sum(~ok),
            idx=jnp.argmin(ok),
        )
