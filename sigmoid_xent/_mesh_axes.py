"""Mesh-axis bookkeeping inside ``jax.shard_map``: axis names, varying types, global sums.

Under ``jax.shard_map(check_vma=True)`` every value carries the mesh axes it varies over
(``jax.typeof(x).mat.varying``). ``psum`` and a scan carry need one consistent type, so values
are cast with :func:`pcast_varying` first (``lax.pcast`` refuses an axis the value already
varies over). With ``check_vma=False`` every set here is empty and the casts do nothing.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import jax
from jax import lax

Array = jax.Array
AxisName = Hashable | Sequence[Hashable]


def varying_axes(x: Any) -> frozenset:
    """The shard_map axes ``x`` varies over (empty outside shard_map or with check_vma=False)."""
    try:
        return frozenset(jax.typeof(x).mat.varying)
    except (AttributeError, TypeError):  # not an array (None), or no varying type
        return frozenset()


def union_varying_axes(*xs: Any) -> frozenset:
    """Union of :func:`varying_axes` over the leaves of ``xs`` (None leaves ignored)."""
    axes: frozenset = frozenset()
    for leaf in jax.tree_util.tree_leaves(xs):
        axes = axes | varying_axes(leaf)
    return axes


def pcast_varying(x: Any, axes: frozenset) -> Any:
    """Marks every leaf of ``x`` as varying over ``axes`` (``lax.pcast`` refuses a repeat)."""

    def cast(leaf: Array) -> Array:
        missing = tuple(sorted(set(axes) - varying_axes(leaf), key=str))
        return lax.pcast(leaf, missing, to="varying") if missing else leaf

    return jax.tree_util.tree_map(cast, x)


def axis_names(axis_name: AxisName, fn: str) -> tuple:
    if axis_name is None:
        raise ValueError(
            f"{fn}: `axis_name` must name the shard_map axes the losses are sharded over, got None."
        )
    names = tuple(axis_name) if isinstance(axis_name, (tuple, list)) else (axis_name,)
    if not names:
        raise ValueError(f"{fn}: `axis_name` must name at least one shard_map axis, got ().")
    return names


class UnboundAxisError(ValueError, NameError):
    """An ``axis_name`` that no enclosing ``jax.shard_map`` binds (a ValueError, and a NameError
    as ``lax.axis_size`` raises for it)."""


def bound_axes_size(names: tuple, fn: str) -> int:
    """``axes_size(names)``, or an :class:`UnboundAxisError` naming the axes that are bound."""
    try:
        return axes_size(names)
    except NameError:
        bound = tuple(jax.sharding.get_abstract_mesh().axis_names)
        unbound = [n for n in names if n not in bound]
        where = (
            f"the enclosing shard_map binds {bound}"
            if bound
            else "it is called outside jax.shard_map"
        )
        raise UnboundAxisError(
            f"{fn}: `axis_name` {names!r} names mesh axes {unbound or list(names)} that no "
            f"enclosing jax.shard_map binds ({where}). Call it inside "
            "jax.shard_map(..., mesh=...) over a mesh with these axes, or pass axis_name=None "
            "for this device's local loss."
        ) from None


def axes_size(names: tuple) -> int:
    size = 1
    for name in names:
        size *= lax.axis_size(name)
    return size


def check_sharded_over(x: Array, names: tuple, what: str, fn: str) -> None:
    # With check_vma=True the varying axes are known: summing a value that is replicated over an
    # axis would count it once per device, a silent wrong number.
    vary = varying_axes(x)
    missing = [n for n in names if n not in vary]
    if vary and missing:
        raise ValueError(
            f"{fn}: `{what}` is replicated over shard_map axes {missing} (it varies only over "
            f"{sorted(vary, key=str)}), but `axis_name` {names} asks to sum over them. Pass only "
            "the axes the losses are sharded over."
        )


def split_axes(names: tuple, h: Array, w: Array) -> tuple[tuple, tuple] | None:
    """The axes of ``names`` that split the rows (``h`` varies over them) and those that split
    the classes (``w`` varies over them), in ``names``' order; None where JAX records neither
    (``shard_map(check_vma=False)``, or both replicated)."""
    rows, classes = varying_axes(h), varying_axes(w)
    if not (rows | classes) & set(names):
        return None
    return tuple(a for a in names if a in rows), tuple(a for a in names if a in classes)


def axes_index(names: tuple) -> Array:
    """This device's index over the axes ``names`` together (the first one major)."""
    index = lax.axis_index(names[0])
    for name in names[1:]:
        index = index * lax.axis_size(name) + lax.axis_index(name)
    return index


def psum_over(x: Array, names: tuple) -> Array:
    # psum needs a value varying over every summed axis under check_vma=True.
    return lax.psum(pcast_varying(x, frozenset(names)), names)
