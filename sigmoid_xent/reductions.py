"""Reductions shared by every loss: ``Reduction``, the one table of names, and ``reduce_loss``."""

from __future__ import annotations

import contextlib
import enum
import functools
from collections.abc import Callable, Collection
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from sigmoid_xent import _checks
from sigmoid_xent._core import absorbing_mul
from sigmoid_xent._mask import hide

Array = jax.Array

__all__ = ["Reduction", "reduce_loss"]


class Reduction(enum.StrEnum):
    """How a loss tensor becomes the value returned to the caller: the one table of names.

    A ``str`` enum whose members equal their lower-case names. :meth:`parse` also takes any case
    and TF's and Keras's spellings (``SUM_OVER_NONZERO_WEIGHTS``, ``AUTO``, None). ``MEAN`` is TF
    v1's *weighted* mean, ``sum(w * l) / sum(w)``; Keras 3's plain ``"mean"`` is
    ``SUM_OVER_BATCH_SIZE`` here. ``PER_LIST`` and ``LIST_MEAN`` are the ranking reductions.

    Args:
      value: A member's lower-case name, e.g. ``Reduction("sum")``.

    Examples:
      >>> import sigmoid_xent as sx
      >>> sx.Reduction("sum") == "sum"
      True
    """

    NONE = "none"
    SUM = "sum"
    MEAN = "mean"
    SUM_OVER_BATCH_SIZE = "sum_over_batch_size"
    SUM_BY_NONZERO_WEIGHTS = "sum_by_nonzero_weights"
    MEAN_WITH_SAMPLE_WEIGHT = "mean_with_sample_weight"
    PER_LIST = "per_list"
    LIST_MEAN = "list_mean"

    @classmethod
    def parse(
        cls,
        name: Any,
        fn: str = "Reduction.parse",
        *,
        accepted: Collection[Reduction] | None = None,
        peer: str | None = None,
    ) -> Reduction:
        """The member named ``name``: any case, TF's and Keras's aliases, None for ``none``.

        Args:
          name: A member, its name in any case, an alias, or None.
          fn: The public function or class to name in the error message.
          accepted: The subset the caller takes (default: the elementwise reductions).
          peer: Read ``name`` in a peer's spelling where it differs from ours: ``"keras"``,
            ``"keras_ranking"`` or ``"torch"`` (PyTorch's ``"mean"`` is ``SUM_OVER_BATCH_SIZE``).

        Returns:
          The :class:`Reduction` member.

        Raises:
          ValueError: an unknown name, or one outside ``accepted``.

        Examples:
          >>> import sigmoid_xent as sx
          >>> sx.Reduction.parse("SUM_OVER_NONZERO_WEIGHTS")
          <Reduction.SUM_BY_NONZERO_WEIGHTS: 'sum_by_nonzero_weights'>
        """
        try:  # every eager call parses its reduction: a name once read is looked up
            return _PARSED[(name, accepted, peer)]
        except (KeyError, TypeError):
            pass
        valid = ELEMENTWISE if accepted is None else accepted
        spellings = None if peer is None else PEER_SPELLINGS[peer]
        if name is None:
            key = "none"
        elif isinstance(name, enum.Enum):
            key = str(name.value)
        elif isinstance(name, str):
            key = _ALIASES.get(name.lower(), name.lower())
        else:
            key = None
        member = None
        if spellings is not None:
            member = spellings.get(key) if key is not None else None
        elif key is not None and key in cls._value2member_map_:
            member = cls(key)
            member = member if member in valid else None
        if member is None:
            if spellings is not None:
                names = list(spellings)
            else:
                names = [m.value for m in cls if m in valid]
            # The aliases (and None) this function accepts, and the peer's hint.
            others = [repr(a) for a, target in _ALIASES.items() if target in names]
            others += ["None"] if "none" in names else []
            also = ""
            if others:
                listed = ", ".join(others[:-1]) + " or " if len(others) > 1 else ""
                also = f", or {listed}{others[-1]}"
            raise ValueError(
                f"{fn}: unknown reduction {name!r}; expected one of {names} (any case){also}."
                f"{_PEER_HINTS.get(peer or '', '')}"
            )
        with contextlib.suppress(TypeError):  # an unhashable `accepted` is not remembered
            _PARSED[(name, accepted, peer)] = member
        return member


_PARSED: dict[tuple[Any, Any, Any], Reduction] = {}  # (name, accepted, peer): the names read so far

_ALIASES = {
    "auto": "sum_over_batch_size",
    "sum_over_nonzero_weights": "sum_by_nonzero_weights",
}

#: The reductions of an elementwise loss tensor (:func:`reduce_loss`).
ELEMENTWISE = frozenset(Reduction) - {Reduction.PER_LIST, Reduction.LIST_MEAN}
#: The reductions of the ranking losses (TF-Ranking's, and the list ones).
LISTWISE = frozenset(Reduction) - {Reduction.MEAN_WITH_SAMPLE_WEIGHT}
#: The scale losses (every elementwise reduction but Keras 3's weight-sum one).
SCALE = ELEMENTWISE - {Reduction.MEAN_WITH_SAMPLE_WEIGHT}

_KERAS = {
    "sum_over_batch_size": Reduction.SUM_OVER_BATCH_SIZE,
    "sum": Reduction.SUM,
    "mean": Reduction.SUM_OVER_BATCH_SIZE,  # Keras 3's "mean" is the plain mean over elements
    "mean_with_sample_weight": Reduction.MEAN_WITH_SAMPLE_WEIGHT,
    "none": Reduction.NONE,
}

#: Peers' reduction names, where they differ from ours, as members (aliases apply first).
PEER_SPELLINGS: dict[str, dict[str, Reduction]] = {
    "keras": _KERAS,
    # TF-Ranking's Keras loss: Keras's names and TF-Ranking's; its weighted mean divides by the
    # weights of the valid items, which is the ranking losses' ``mean``.
    "keras_ranking": {
        **_KERAS,
        "mean_with_sample_weight": Reduction.MEAN,
        "sum_by_nonzero_weights": Reduction.SUM_BY_NONZERO_WEIGHTS,
        "per_list": Reduction.PER_LIST,
        "list_mean": Reduction.LIST_MEAN,
    },
    # PyTorch's "mean" is the plain mean over elements.
    "torch": {"none": Reduction.NONE, "mean": Reduction.SUM_OVER_BATCH_SIZE, "sum": Reduction.SUM},
}

_KERAS_HINT = (
    " Keras's 'mean' is 'sum_over_batch_size'; for sum(w * loss) / sum(w) use "
    "'mean_with_sample_weight'."
)
_PEER_HINTS = {"keras": _KERAS_HINT, "keras_ranking": _KERAS_HINT}


def peer_name(member: Reduction, peer: str) -> str | None:
    """The peer's first name for ``member`` in :data:`PEER_SPELLINGS`, or None if it has none."""
    return next((k for k, m in PEER_SPELLINGS[peer].items() if m is member), None)


def accumulation_dtype(dtype: Any) -> Any:
    """At least float32: sums of 16-bit losses accumulate in float32."""
    return jnp.promote_types(dtype, jnp.float32)


@jax.custom_jvp
def _divide(num: Array, den: Array) -> Array:
    return num / den


@_divide.defjvp
def _divide_jvp(primals: tuple[Array, Array], tangents: tuple[Array, Array]):
    # (dnum - q dden) / den instead of JAX's dnum / den - num dden / den**2: den**2 underflows
    # for a sum of tiny weights (1e-24 each), which made d mean / d weights NaN.
    (num, den), (t_num, t_den) = primals, tangents
    q = _divide(num, den)
    # An infinite quotient times a zero tangent of the denominator is 0, not NaN.
    return q, _divide(t_num - absorbing_mul(t_den, q), den)


def safe_divide(num: Array, den: Array) -> Array:
    """``num / den``, 0 where ``den == 0``, with finite gradients there (double where).

    The barrier keeps a constant ``den`` (an array size) from being folded into a multiply by
    its rounded reciprocal, so the quotient is correctly rounded (TF's ``0.6444636``, not
    ``0.64446354``). The derivative never squares ``den`` (no underflow for tiny weight sums).
    """
    den = jax.lax.optimization_barrier(den)
    ok = den != 0
    return jnp.where(ok, _divide(num, jnp.where(ok, den, jnp.ones_like(den))), jnp.zeros_like(num))


def weighted_reduction(
    losses: ArrayLike,
    weights: ArrayLike | None,
    reduction: Any,
    fn: str,
    *,
    where: Array | None = None,
    total: Callable[[Array], Array] = jnp.sum,
    shards: int = 1,
    given_total: Callable[[Array], Array] | None = None,
) -> Array:
    """The one copy of every :class:`Reduction` formula, for :func:`reduce_loss` and its
    sharded twin.

    ``total(x)`` sums a local array over everything the reduction spans: ``jnp.sum`` on one
    device, ``psum`` of the local sum inside ``shard_map``. ``shards`` is how many local
    arrays of ``losses``' shape make up the global one (for ``sum_over_batch_size``), and
    ``given_total`` sums the weights as given (``mean_with_sample_weight``; default ``total``).
    A zero weight makes its element absent: ``0 * inf`` is 0, in the value and the gradients.
    ``where`` (bool, broadcastable to ``losses``) makes an element absent from every sum and
    count, whatever its loss and weight hold.
    """
    red = Reduction.parse(reduction, fn)
    losses = hide(where, _checks.float_array(losses, fn, name="losses"))
    shape = tuple(losses.shape)
    acc = accumulation_dtype(losses.dtype)
    if weights is None:
        w_given = None
        w = jnp.ones(shape, acc) if where is None else jnp.broadcast_to(where, shape).astype(acc)
    else:
        w_given = _checks.as_float(weights, acc, "weights", fn)
        _checks.broadcastable_to(w_given, shape, "weights", fn)
        # Masked before the cast; broadcast only as far as `where` needs (the weights as given,
        # for mean_with_sample_weight).
        w_given = hide(where, w_given).astype(acc)
        w = jnp.broadcast_to(w_given, shape)
    weighted = absorbing_mul(w, losses.astype(acc))
    if red is Reduction.NONE:
        return weighted.astype(losses.dtype)
    num = total(weighted)
    if red is Reduction.SUM:
        out = num
    elif red is Reduction.MEAN:
        out = safe_divide(num, total(w))
    elif red is Reduction.SUM_OVER_BATCH_SIZE or w_given is None:  # mean_with_sample_weight too
        if where is None:
            size = jnp.asarray(int(np.prod(shape, dtype=np.int64)) * shards, acc)
        else:
            size = total(jnp.broadcast_to(where, shape).astype(acc))
        out = safe_divide(num, size)
    elif red is Reduction.SUM_BY_NONZERO_WEIGHTS:
        out = safe_divide(num, total((w != 0).astype(acc)))
    else:  # MEAN_WITH_SAMPLE_WEIGHT: the weights as given, each element counted once.
        out = safe_divide(num, (given_total or total)(w_given))
    return out.astype(losses.dtype)


def reduce_loss(
    losses: ArrayLike,
    weights: ArrayLike | None = None,
    reduction: str | Reduction | None = Reduction.SUM_BY_NONZERO_WEIGHTS,
    *,
    where: ArrayLike | None = None,
) -> Array:
    r"""Weights and reduces a loss tensor, as TF v1's ``compute_weighted_loss`` and Keras.

    With :math:`w` the weights broadcast to ``losses``, :math:`w_g` the weights as given and
    :math:`n` the number of present elements:

    .. math::

        \mathrm{none} = w \ell, \quad \mathrm{sum} = \textstyle\sum w \ell, \quad
        \mathrm{mean} = \frac{\sum w \ell}{\sum w}, \quad
        \mathrm{sum\_over\_batch\_size} = \frac{\sum w \ell}{n}, \quad
        \mathrm{sum\_by\_nonzero\_weights} = \frac{\sum w \ell}{\#\{w \ne 0\}}, \quad
        \mathrm{mean\_with\_sample\_weight} = \frac{\sum w \ell}{\sum w_g}

    A quotient whose denominator is 0 is 0, with finite gradients. Sums accumulate in at least
    float32.

    Args:
      losses: Float loss tensor.
      weights: None (all ones), or an array broadcastable to ``losses``.
      reduction: A :class:`Reduction` or its name, any case; TF and Keras aliases accepted.
      where: Optional bool mask broadcastable to ``losses``; False elements are absent.

    Returns:
      A scalar in ``losses``' dtype; for ``none`` ``losses``' shape (0 at absent elements).

    Raises:
      ValueError: ``weights`` or ``where`` not broadcastable, or an unknown reduction.
      TypeError: integer ``losses``, or a non-bool ``where``.

    Examples:
      >>> import jax.numpy as jnp
      >>> import sigmoid_xent as sx
      >>> losses = jnp.array([[1., 2.], [3., 4.]])
      >>> sx.reduce_loss(losses, jnp.array([[1.], [0.]]), "sum_by_nonzero_weights")
      Array(1.5, dtype=float32)
    """
    fn = "reduce_loss"
    red = Reduction.parse(reduction, fn)
    losses = _checks.float_array(losses, fn, name="losses")
    if weights is not None:
        weights = _checks.as_float(weights, accumulation_dtype(losses.dtype), "weights", fn)
    mask = _checks.where_mask(where, losses.shape, fn, target="losses")
    return compiled_reduction(losses, weights, red, fn, mask)


@functools.partial(jax.jit, static_argnums=(2, 3, 5))
def compiled_reduction(
    losses: Array,
    weights: Array | None,
    red: Reduction,
    fn: str,
    where: Array | None = None,
    weight_shape: tuple[int, ...] | None = None,
) -> Array:
    """:func:`weighted_reduction` jitted whole, so that an eager call runs one compiled program.

    ``weight_shape``: the shape the weights take first (a Keras rule), inside the program.
    """
    if weight_shape is not None and weights is not None:
        weights = jnp.reshape(weights, weight_shape)
    return weighted_reduction(losses, weights, red, fn, where=where)
