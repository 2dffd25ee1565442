"""``where``: the one way an element is made absent, shared by every loss and reduction.

A masked element is replaced by a harmless value *before* anything else touches it (a cast of a
NaN already trips ``jax_debug_nans``), and its result is replaced by 0 after; the gradient of a
select is 0 on the side not taken, so every input at a masked element gets exactly 0.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def hide(mask: Array | None, x: Array, fill: Any = 0) -> Array:
    """``x`` with its masked elements replaced by ``fill``, in ``x``'s own dtype.

    The result has the broadcast shape of ``x`` and ``mask`` (explicitly broadcast, so that
    ``jax_numpy_rank_promotion="raise"`` holds).
    """
    if mask is None:
        return x
    shape = np.broadcast_shapes(np.shape(x), np.shape(mask))
    x = jnp.broadcast_to(x, shape)
    return jnp.where(jnp.broadcast_to(mask, shape), x, jnp.asarray(fill, x.dtype))


def keep(mask: Array | None, out: Array) -> Array:
    """``out`` with exactly 0 at the masked elements."""
    return hide(mask, out, 0)


def kept_count(mask: Array | None, shape: tuple[int, ...], dtype: Any) -> Array:
    """How many elements of ``shape`` are present, in ``dtype``."""
    if mask is None:
        return jnp.asarray(int(np.prod(shape, dtype=np.int64)), dtype)
    return jnp.sum(jnp.broadcast_to(mask, shape).astype(dtype))
