"""The chunk loop of the scale losses.

:mod:`sigmoid_xent.contrastive` and :mod:`sigmoid_xent.fused` never build their full
``[rows, cols]`` matrix: :func:`scan_chunks` walks it in tiles of one static size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sigmoid_xent._mesh_axes import pcast_varying

Array = jax.Array
Carry = TypeVar("Carry")


def scan_chunks(
    body: Callable[[Carry, Any, int, Array | None], Carry],
    carry: Carry,
    n: int,
    size: int,
    axes: frozenset = frozenset(),
) -> Carry:
    """``carry = body(carry, start, size, fresh)`` over ``[0, n)`` in chunks of ``size``.

    One ``lax.scan`` over ``ceil(n / size)`` chunks of one static size, so the body is compiled
    once. When ``n`` is not a multiple of ``size``, the last chunk is shifted back to end at
    ``n`` and overlaps its predecessor; ``fresh`` is then a bool ``[size]`` vector, False on the
    overlapped rows, which the body must leave out (weight 0), and None when every chunk is
    whole. ``start`` is int32 (also with x64). Carries are cast to vary over ``axes`` so a carry
    that starts as ``jnp.zeros`` keeps one type under ``shard_map(check_vma=True)``.
    """
    size = min(size, n)
    count = -(-n // size)
    ragged = n % size != 0

    def run(c: Carry, i: Any) -> Carry:
        first = i * size
        if not ragged:
            return pcast_varying(body(c, first, size, None), axes)
        start = jnp.minimum(first, n - size)
        fresh = start + lax.iota(jnp.int32, size) >= first
        return pcast_varying(body(c, start, size, fresh), axes)

    carry = pcast_varying(carry, axes)
    if count == 1:
        return run(carry, np.int32(0))
    carry, _ = lax.scan(lambda c, i: (run(c, i), None), carry, jnp.arange(count, dtype=jnp.int32))
    return carry


def check_chunk_size(value: Any, name: str, fn: str) -> int | None:
    """A positive Python int (or None); TypeError/ValueError naming ``name`` otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{fn}: `{name}` must be a positive int or None, got {value!r}.")
    if value < 1:
        raise ValueError(f"{fn}: `{name}` must be a positive int or None, got {value}.")
    return int(value)
