"""Losses for class imbalance: the asymmetric loss, Poly-1, the quality focal loss, and
class-balanced weights.

Notation, elementwise: ``x`` the logit, ``z`` the label, ``s_+ = sigmoid(x)``,
``s_- = sigmoid(-x)``, ``sp_+ = softplus(x) = -log s_-`` and ``sp_- = softplus(-x) = -log s_+``.

- ASL: ``z s_-**gp sp_- + (1 - z) p_m**gn L``, ``p_m = max(s_+ - c, 0)``, ``L = -log(1 - p_m)``.
  ``s_+ - c`` cancels where ``x`` is near ``x0 = logit(c)``; it is computed as
  ``(1 - c) s_+ (1 - exp(x0 - x))``, which does not, with ``x - x0`` from ``x0`` in three
  floats; and ``1 - p_m = c + s_-`` (no cancellation either).
- Quality focal loss: ``|z - s_+|**beta bce``.
- Poly-1: the focal loss plus ``epsilon u**(gamma + 1)``, ``u = 1 - p_t``, computed without
  cancellation as ``(c_z + (1 - c_z) e) / (1 + e)`` with ``e = exp(-|x|)`` and ``c_z`` the label
  weight on the saturating side (as in :mod:`sigmoid_xent.focal`).

In float32 (and for 16-bit inputs, computed in float32) the pieces that a power or a log
amplifies (the sigmoids, ``p - c``, ``z - s_+``, ``1 - p_t`` and their powers) are float32
pairs (:mod:`sigmoid_xent._twofloat`), rounded once and multiplied by the core's own softplus or
cross-entropy; float64 uses the plain formulas. Derivatives are closed forms in the compute
dtype (custom JVPs) whose amplified pieces take their values from the same pairs; each factor is
bounded, so they are finite at saturation, at infinite logits and at the clip boundary, and
differentiable again (Hessians).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero
from jax.typing import ArrayLike

from sigmoid_xent import _checks
from sigmoid_xent import _twofloat as tf2
from sigmoid_xent._core import (
    absorbing_mul,
    check_labels_logits,
    log1p_unit,
    loss_value,
    neg_abs,
    sigmoid_cross_entropy_with_logits,
)
from sigmoid_xent._mask import hide, keep
from sigmoid_xent.focal import sigmoid_focal_loss

Array = jax.Array
Pair = tf2.Pair

__all__ = [
    "asymmetric_loss",
    "class_balanced_weights",
    "poly1_sigmoid_loss",
    "quality_focal_loss",
]

# Static integer exponents up to this are raised by products (no pair log and exp).
MAX_POWER = 8
_TINY32 = float(np.finfo(np.float32).tiny)


# --------------------------------------------------------------------------- shared pieces


def _limit(dtype: Any) -> float:
    """A logit magnitude beyond which ``exp(-|x|)`` and every term it scales are 0."""
    return 2.0 * -float(np.log(np.finfo(dtype).tiny))


def _finite(x: Array) -> Array:
    """``x`` with ``±inf`` replaced by a finite logit that saturates every sigmoid."""
    return jnp.where(jnp.isinf(x), jnp.sign(x) * _limit(x.dtype), x)


def _static_power(value: Any) -> int | None:
    """A concrete integer exponent in [0, MAX_POWER] as a Python int, else None."""
    v = _checks.static_scalar(value)
    if v is not None and v.is_integer() and 0 <= v <= MAX_POWER:
        return int(v)
    return None


def _at_rank(v: Array, ndim: int, dtype: Any) -> Array:
    """An option in ``dtype`` at the logits' rank (no implicit rank promotion)."""
    return jnp.reshape(v.astype(dtype), (1,) * (ndim - v.ndim) + v.shape)


def _option(value: Any, name: str, fn: str, x: Array, **bounds: Any) -> Array:
    """A float option broadcastable to the logits, range-checked where concrete."""
    v = _checks.as_float(value, _checks.compute_dtype(x.dtype), name, fn)
    _checks.broadcastable_to(v, x.shape, name, fn, target="logits")
    _checks.in_range(v, name, fn, **bounds)
    return v


def _pow_plain(base: Array, g: Array, power: int | None) -> Array:
    """``base**g`` for ``base >= 0`` (``0**0 = 1``), differentiable (no NaN at 0)."""
    if power is not None:
        return base**power if power else jnp.ones_like(base)
    ok = base > 0
    value = jnp.exp(g * jnp.log(jnp.where(ok, base, jnp.ones_like(base))))
    at_zero = jnp.where(g == 0, 1.0, jnp.where(g < 0, jnp.inf, 0.0)).astype(base.dtype)
    return jnp.where(ok, value, at_zero)


class _Plain(NamedTuple):
    """Sigmoids and softpluses of a finite logit in the compute dtype, without cancellation."""

    pos: Array  # x >= 0
    e: Array  # exp(-|x|)
    sig: Array  # sigmoid(x)
    sig_neg: Array  # sigmoid(-x)
    sp_pos: Array  # softplus(x)
    sp_neg: Array  # softplus(-x)


def _plain(xf: Array) -> _Plain:
    minus_abs = neg_abs(xf)
    e = jnp.exp(minus_abs)
    s = e / (1 + e)  # sigmoid(-|x|)
    pos = xf >= 0
    big = 1 - s
    log_term = log1p_unit(e)
    spa = log_term - minus_abs
    return _Plain(
        pos=pos,
        e=e,
        sig=jnp.where(pos, big, s),
        sig_neg=jnp.where(pos, s, big),
        sp_pos=jnp.where(pos, spa, log_term),
        sp_neg=jnp.where(pos, log_term, spa),
    )


class _Sig(NamedTuple):
    """Sigmoids of a finite float32 logit as pairs (about 35-40 bits)."""

    a: Array  # |x|
    e: Pair  # exp(-|x|)
    pos: Array  # x >= 0
    big: Pair  # 1 / (1 + e) = sigmoid(|x|)
    sig: Pair  # sigmoid(x)
    sig_neg: Pair  # sigmoid(-x)


def _sig_pairs(xf: Array) -> _Sig:
    """One pair ``exp`` and ``1 / (1 + e)`` by a Newton reciprocal and its exact residual (no
    division: XLA:CPU gives a divide with several users a loop of its own)."""
    a = jnp.abs(xf)
    one = tf2.opaque(1.0)
    e = tf2.exp_neg(a)
    dh, dl = tf2.fast_two_sum(one, e[0])  # 1 + e in [1, 2]
    dl = dl + e[1]
    big = tf2.quotient((one, jnp.zeros((), dh.dtype)), (dh, dl), tf2.recip(dh, 1.0, 2.0))
    small = tf2.mul_finite(e, big)  # e / (1 + e)
    pos = xf >= 0
    return _Sig(
        a=a,
        e=e,
        pos=pos,
        big=big,
        sig=tf2.select(pos, big, small),
        sig_neg=tf2.select(pos, small, big),
    )


def _softplus_pair(s: _Sig, positive: bool) -> Pair:
    """``softplus(x)`` (``positive``) or ``softplus(-x)`` as a pair: ``-log`` of a sigmoid."""
    log1p_e = tf2.log1p_unit(s.e)
    spa = tf2.add((s.a, jnp.zeros_like(s.a)), log1p_e)
    return tf2.select(s.pos, spa, log1p_e) if positive else tf2.select(s.pos, log1p_e, spa)


def _neg(p: Pair) -> Pair:
    return -p[0], -p[1]


def _modulator(base: Pair, log_base: Callable[[], Pair], g: Array, power: int | None) -> Pair:
    """``base**g`` as a pair: products for a static integer exponent, else
    ``exp(g log(base))`` through the pair exponential (0 below float32's range, ``inf``
    above). ``log_base`` (finite, or NaN for a negative base) is built only where needed.

    Every caller multiplies the result by a factor that is small where it underflows, so the
    power needs no separate exponent.
    """
    if power is not None:
        if power == 0:
            return jnp.ones_like(base[0]), jnp.zeros_like(base[0])
        return tf2.power(base, power)
    return tf2.exp(tf2.mul1(log_base(), g))


def _round(p: Pair) -> Array:
    return p[0] + p[1]


def _combine(z: Array, pos_term: Pair, neg_term: Pair) -> Array:
    """``z a + (1 - z) b`` for pairs, rounded once (exact for hard labels)."""
    one = tf2.opaque(1.0)
    s = tf2.add(tf2.mul1(pos_term, z), tf2.mul(neg_term, tf2.two_sum(one, -z)))
    return s[0] + s[1]


def _at_most_bce(out: Array, x: Array, z: Array, options_in_range: Array) -> Array:
    """A loss at most the cross-entropy in exact arithmetic (labels in [0, 1], options in
    range) kept at most the core's value as computed, which can be an ulp below the exact
    one."""
    bce = loss_value(x, z)
    return jnp.where((z >= 0) & (z <= 1) & options_in_range, jnp.minimum(out, bce), out)


def _signed_inf(c: Array) -> Array:
    """``c * inf`` with ``0 * inf = 0``, no NaN formed."""
    return jnp.where(c > 0, jnp.inf, jnp.where(c < 0, -jnp.inf, 0.0)).astype(c.dtype)


def _times(c: Array, v: Array) -> Array:
    """``c * v`` with ``0 * inf = 0`` (an absent term), no NaN formed."""
    inf = jnp.isinf(v)
    return jnp.where(inf, _signed_inf(c) * jnp.sign(v), c * jnp.where(inf, 0.0, v))


def _fix(plain: Array, accurate: Array | None) -> Array:
    """``plain`` with the value of ``accurate`` and the derivative of ``plain``.

    The closed-form derivatives take their amplified pieces (``p - c``, ``z - p``, powers) from
    the pairs, so that they are as accurate as the loss, while their own derivatives (the
    Hessian) come from the plain formulas, which JAX can differentiate.
    """
    if accurate is None:
        return plain
    ok = jnp.isfinite(plain) & jnp.isfinite(accurate)
    return plain + jax.lax.stop_gradient(jnp.where(ok, accurate - plain, 0.0))


def _tangent(total: Array, coef: Array, t: Any) -> Array:
    if isinstance(t, SymbolicZero):
        return total
    return total + absorbing_mul(t, coef)


# --------------------------------------------------------------------------- asymmetric loss


def _clip_logit_parts(c: Any, dtype: Any) -> tuple[Array, Array, Array] | None:
    """``logit(c)`` of a concrete clip as three floats of ``dtype`` (``h + m + l``, about 72
    bits for float32), computed on the host in extended precision; None for a traced clip.

    ``x - logit(c)`` is as accurate as ``x0`` is: near the boundary it is much smaller than
    ``x0``, and a float32 pair (about 40 bits through the pair ``log``) would leave only a few
    correct bits where the loss is still a normal float32.
    """
    if _checks.is_traced(c):
        return None
    cv = np.asarray(c, dtype=np.float64).astype(dtype).astype(np.longdouble)
    inside = (cv > 0) & (cv < 1)
    cs = np.where(inside, cv, np.longdouble(0.5))
    far = 4 * _limit(dtype)
    x0 = np.where(inside, np.log(cs) - np.log1p(-cs), np.where(cv <= 0, -far, far))
    h = x0.astype(dtype)
    m = (x0 - h.astype(np.longdouble)).astype(dtype)
    lo = (x0 - h.astype(np.longdouble) - m.astype(np.longdouble)).astype(dtype)
    return jnp.asarray(h), jnp.asarray(m), jnp.asarray(lo)


def _clip_logit_traced(c: Array) -> tuple[Array, Array, Array]:
    """``logit(c)`` in-graph: a float32 pair from the pair ``log`` (or the dtype's plain
    formula), ``-far`` for ``c = 0`` and ``+far`` for ``c >= 1``."""
    far = 4 * _limit(c.dtype)
    inside = (c > 0) & (c < 1)
    cs = jnp.where(inside, c, 0.5)
    zero = jnp.zeros_like(cs)
    edge = jnp.where(c <= 0, -far, far).astype(c.dtype)
    if c.dtype != jnp.float32:
        return jnp.where(inside, jnp.log(cs) - jnp.log1p(-cs), edge), zero, zero
    one = tf2.opaque(1.0)
    x0 = tf2.add(tf2.log((cs, zero)), _neg(tf2.log(tf2.two_sum(one, -cs))))
    return jnp.where(inside, x0[0], edge), jnp.where(inside, x0[1], zero), zero


def _one_minus_exp_neg(d: Pair) -> Pair:
    """``1 - exp(-d)`` for a pair ``d > 0``, to about 2**-40 relative for every ``d``.

    Below 0.34 (where it cancels) ``-expm1(r)``, ``r = -d``, as ``r + r**2/2`` in pairs plus
    ``r**3 t(r)`` (the exponential's series) in float32; above, ``1 - exp(-d)`` from the pair
    exponential (at least 0.29: no cancellation).
    """
    one = tf2.opaque(1.0)
    dh, dl = d
    small = dh < 0.34
    r = -jnp.where(small, dh, 0.0)
    t = jnp.full_like(r, 1 / 362880)
    for coef in (1 / 40320, 1 / 5040, 1 / 720, 1 / 120, 1 / 24, 1 / 6):
        t = t * r + np.float32(coef)
    sq_h, sq_l = tf2.two_prod_finite(r, r)
    tail = sq_h * r * t
    sh, sl = tf2.fast_two_sum(r, 0.5 * sq_h)  # |r| >= r**2 / 2
    # expm1(r - dl) = expm1(r) - dl exp(r)
    sl = sl + (0.5 * sq_l + tail - dl * (1.0 + r + 0.5 * sq_h))
    em1 = tf2.fast_two_sum(sh, sl)
    eh, el = tf2.exp_neg(jnp.where(small, 1.0, dh))
    el = el - eh * dl  # exp(-dh - dl) = exp(-dh) (1 - dl)
    big = tf2.fast_two_sum(*tf2.add(tf2.fast_two_sum(one, -eh), (-el, jnp.zeros_like(el))))
    return tf2.select(small, _neg(em1), big)


class _AslAccurate(NamedTuple):
    pos_term: Array
    neg_term: Array
    mod_pos: Array
    mod_neg: Array
    pm: Array | None = None


def _asl_value_f32(
    x: Array,
    z: Array,
    gp: Array,
    gn: Array,
    c: Array,
    x0: tuple[Array, Array, Array],
    gp_power: int | None,
    gn_power: int | None,
    clipped: bool,
) -> tuple[Pair, Pair, _AslAccurate]:
    """The two terms ``s_-**gp sp_-`` and ``p_m**gn L`` for finite float32 logits, as pairs:
    the modulators from pairs times the core's softplus (or ``L``); and the amplified pieces
    rounded once, for the derivatives."""
    s = _sig_pairs(x)
    zero = jnp.zeros_like(x)
    one = tf2.opaque(1.0)
    sp_neg, sp_pos = loss_value(x, zero + 1), loss_value(x, zero)
    mod_pos = _modulator(s.sig_neg, lambda: _neg(_softplus_pair(s, True)), gp, gp_power)
    pos_term = tf2.mul1(mod_pos, sp_neg)
    if not clipped:
        mod_neg = _modulator(s.sig, lambda: _neg(_softplus_pair(s, False)), gn, gn_power)
        neg_term = tf2.mul1(mod_neg, sp_pos)
        acc = _AslAccurate(_round(pos_term), _round(neg_term), _round(mod_pos), _round(mod_neg))
        return pos_term, neg_term, acc
    below_zero = c < 0  # a traced clip used as given: p_m = s_+ + |c|, no cancellation
    d = tf2.add(tf2.two_sum(x, -x0[0]), (-x0[1], -x0[2]))
    above = (d[0] > 0) & ~below_zero
    q = _one_minus_exp_neg(tf2.select(above, d, (zero + 1, zero)))
    pm = tf2.mul_finite(tf2.mul_finite(tf2.two_sum(one, -c), s.sig), q)
    pm = tf2.select(below_zero, tf2.add(s.sig, (-c + zero, zero)), pm)
    present = (above | below_zero) & (pm[0] > 0)
    # L = -log(1 - p_m) = -log(c + s_-): log1p of the rounded p_m where it is below 1/2 (the
    # log of 1 - p_m would lose p_m's digits), else the log of the pair c + s_- rounded once;
    # at c = 0 it is sp_+ (s_- underflows before sp_+ does).
    pm_f = pm[0] + pm[1]
    small = pm_f < 0.5
    arg = tf2.add((c + zero, zero), s.sig_neg)
    lm_small = -jnp.log1p(-jnp.where(small, pm_f, 0.0))
    lm_big = -jnp.log(jnp.where(small | (c == 0), 1.0, arg[0] + arg[1]))
    lm = jnp.where(small, lm_small, jnp.where(c == 0, sp_pos, lm_big))
    log_pm = lambda: tf2.log(tf2.select(present, pm, (zero + 1, zero)))  # noqa: E731
    mod_neg = _modulator(pm, log_pm, gn, gn_power)
    neg_term = tf2.select(present, tf2.mul1(mod_neg, lm), (zero, zero))
    acc = _AslAccurate(_round(pos_term), _round(neg_term), _round(mod_pos), _round(mod_neg), pm_f)
    return pos_term, neg_term, acc


class _AslPlain(NamedTuple):
    pos_term: Array  # s_-**gp sp_-
    neg_term: Array  # p_m**gn L
    mod_pos: Array  # s_-**gp
    mod_neg: Array  # p_m**gn
    pm: Array
    lm: Array  # -log(1 - p_m)
    present: Array  # p_m > 0


def _asl_plain(
    pl: _Plain,
    x: Array,
    c: Array,
    x0: tuple[Array, Array, Array],
    gp: Array,
    gn: Array,
    gp_power: int | None,
    gn_power: int | None,
    clipped: bool,
    acc: _AslAccurate | None = None,
) -> _AslPlain:
    """The terms and their factors in plain arithmetic of the dtype (differentiable); with
    ``acc``, the values of the accurate pieces (:func:`_fix`)."""
    if gp_power is not None:
        mod_pos = pl.sig_neg**gp_power if gp_power else jnp.ones_like(x)
    else:
        mod_pos = jnp.exp(-gp * pl.sp_pos)
    mod_pos = _fix(mod_pos, None if acc is None else acc.mod_pos)
    pos_term = _fix(mod_pos * pl.sp_neg, None if acc is None else acc.pos_term)
    if not clipped:
        if gn_power is not None:
            mod_neg = pl.sig**gn_power if gn_power else jnp.ones_like(x)
        else:
            mod_neg = jnp.exp(-gn * pl.sp_neg)
        mod_neg = _fix(mod_neg, None if acc is None else acc.mod_neg)
        neg_term = _fix(mod_neg * pl.sp_pos, None if acc is None else acc.neg_term)
        present = jnp.ones_like(x, dtype=bool)
        return _AslPlain(pos_term, neg_term, mod_pos, mod_neg, pl.sig, pl.sp_pos, present)
    d = ((x - x0[0]) - x0[1]) - x0[2]  # x - x0[0] is exact near the boundary
    below_zero = c < 0
    above = (d > 0) & ~below_zero
    q = -jnp.expm1(-jnp.where(above, d, jnp.ones_like(d)))
    pm = jnp.where(above, (1 - c) * pl.sig * q, jnp.where(below_zero, pl.sig - c, 0.0))
    pm = _fix(pm, None if acc is None else acc.pm)
    present = (above | below_zero) & (pm > 0)
    small = pm < 0.5
    lm_small = -jnp.log1p(-jnp.where(small, pm, 0.0))
    arg = c + pl.sig_neg
    lm_big = jnp.where(c == 0, pl.sp_pos, -jnp.log(jnp.where(c == 0, 1.0, arg)))
    lm = jnp.where(small, lm_small, lm_big)
    mod_neg = _fix(_pow_plain(pm, gn, gn_power), None if acc is None else acc.mod_neg)
    neg_term = jnp.where(present, mod_neg * lm, 0.0)
    neg_term = _fix(neg_term, None if acc is None else acc.neg_term)
    return _AslPlain(pos_term, neg_term, mod_pos, mod_neg, pm, lm, present)


def _asl_special(x: Array, z: Array, c: Array, pos_term: Array, neg_term: Array, clipped: bool):
    """The terms at infinite logits: ``sp_- = inf`` at ``-inf``; at ``+inf`` ``L = inf`` only
    without a clip (the clip caps it at ``-log c``)."""
    pos_term = jnp.where(x == -jnp.inf, jnp.inf, pos_term)
    uncapped = (c == 0) if clipped else True
    neg_term = jnp.where((x == jnp.inf) & uncapped, jnp.inf, neg_term)
    return pos_term, neg_term


def _asl_terms(x, z, gp, gn, c, x0, gp_power, gn_power, clipped):
    """The loss, and (float32) the accurate pieces for the derivatives."""
    xf = _finite(x)
    acc: Any = ()
    if x.dtype == jnp.float32:
        pos_pair, neg_pair, acc = _asl_value_f32(xf, z, gp, gn, c, x0, gp_power, gn_power, clipped)
        out = _combine(z, pos_pair, neg_pair)
        pos_term, neg_term = _round(pos_pair), _round(neg_pair)
    else:
        t = _asl_plain(_plain(xf), xf, c, x0, gp, gn, gp_power, gn_power, clipped)
        pos_term, neg_term = t.pos_term, t.neg_term
        out = z * pos_term + (1 - z) * neg_term
    pos_inf, neg_inf = _asl_special(x, z, c, pos_term, neg_term, clipped)
    special = _times(z, pos_inf) + _times(1 - z, neg_inf)
    out = jnp.where(jnp.isinf(x), special, out)
    return _at_most_bce(out, x, z, (gp >= 0) & (gn >= 0) & (c >= 0)), acc


@partial(jax.custom_jvp, nondiff_argnums=(8, 9, 10))
def _asl(x, z, gp, gn, c, x0h, x0m, x0l, gp_power, gn_power, clipped):
    """ASL elementwise, arguments in the compute dtype at one rank (options broadcastable);
    ``x0h + x0m + x0l = logit(c)`` (their tangents are ignored: ``c``'s carries the clip's).
    Returns the loss and, for the derivative rule, the pieces it takes from pairs (one program
    for both: computing them again in the rule made XLA merge two copies)."""
    x0 = (x0h, x0m, x0l)
    return _asl_terms(x, z, gp, gn, c, x0, gp_power, gn_power, clipped)


def _asl_jvp(gp_power, gn_power, clipped, primals, tangents):
    x, z, gp, gn, c, x0h, x0m, x0l = primals
    tx, tz, tgp, tgn, tc = tangents[:5]
    out, acc = _asl(x, z, gp, gn, c, x0h, x0m, x0l, gp_power, gn_power, clipped)
    xf = _finite(x)
    pl = _plain(xf)
    x0 = (x0h, x0m, x0l)
    t = _asl_plain(pl, xf, c, x0, gp, gn, gp_power, gn_power, clipped, acc or None)
    tangent = jnp.zeros_like(out)
    if not isinstance(tx, SymbolicZero):
        # d/dx s_-**gp sp_- = -s_-**gp (gp s_+ sp_- + s_-); d/dx p_m**gn L =
        # p_m**gn s_+ (gn L s_- / p_m + s_- / (c + s_-)): every factor bounded.
        d_pos = -t.mod_pos * (gp * pl.sig * pl.sp_neg + pl.sig_neg)
        if clipped:
            den = c + pl.sig_neg
            r1 = jnp.where(den > 0, pl.sig_neg / jnp.where(den > 0, den, 1.0), 1.0)
            safe_pm = jnp.where(t.present, t.pm, 1.0)
            ratio = jnp.where(t.present, t.lm * pl.sig_neg / safe_pm, pl.sig_neg)
            d_neg = jnp.where(t.present, t.mod_neg * pl.sig * (gn * ratio + r1), 0.0)
        else:
            d_neg = t.mod_neg * (gn * pl.sig_neg * pl.sp_pos + pl.sig)
        tangent = tangent + (z * d_pos + (1 - z) * d_neg) * tx
    if not isinstance(tz, SymbolicZero):
        pos_term, neg_term = _asl_special(x, z, c, t.pos_term, t.neg_term, clipped)
        tangent = _tangent(tangent, pos_term - neg_term, tz)
    if not isinstance(tgp, SymbolicZero):
        # d/dgp s_-**gp = s_-**gp log s_- (0 where the term vanishes, also at x = -inf).
        tangent = _tangent(tangent, -(z * t.pos_term) * pl.sp_pos, tgp)
    if not isinstance(tgn, SymbolicZero):
        log_pm = jnp.log(jnp.where(t.present, t.pm, 1.0))
        tangent = _tangent(tangent, jnp.where(t.present, (1 - z) * t.neg_term * log_pm, 0.0), tgn)
    if clipped and not isinstance(tc, SymbolicZero):
        # d/dc p_m**gn L = -p_m**gn (gn L / p_m + 1 / (c + s_-)) above the clip.
        safe_pm = jnp.where(t.present, t.pm, 1.0)
        over = jnp.where(t.present, t.lm / safe_pm, 1.0)
        den = c + pl.sig_neg
        inv = 1 / jnp.where(den > 0, den, 1.0)
        dc = jnp.where(t.present, -(1 - z) * t.mod_neg * (gn * over + inv), 0.0)
        tangent = _tangent(tangent, dc, tc)
    return (out, acc), (tangent, jax.tree.map(jnp.zeros_like, acc))


_asl.defjvp(_asl_jvp, symbolic_zeros=True)


# --------------------------------------------------------------------------- quality focal loss


def _qfl_value_f32(
    x: Array, z: Array, beta: Array, power: int | None
) -> tuple[Array, tuple[Array, Array, Array]]:
    """``|z - s_+|**beta`` from pairs, rounded once, times the core's bce (finite ``x``): at
    most the bce as the core computes it (the factor is at most 1 for labels in [0, 1]). And,
    rounded once for the derivatives, ``z - s_+``, ``|z - s_+|**beta`` and
    ``beta |z - s_+|**(beta - 1)``."""
    s = _sig_pairs(x)
    zero = jnp.zeros_like(x)
    diff = tf2.add(tf2.two_sum(z, -s.sig[0]), (-s.sig[1], zero))
    negative = diff[0] < 0
    absd = jnp.where(negative, -diff[0], diff[0]), jnp.where(negative, -diff[1], diff[1])
    present = absd[0] > 0
    log_d = lambda: tf2.log(tf2.select(present, absd, (zero + 1, zero)))  # noqa: E731
    bce = loss_value(x, z)
    mod = _modulator(absd, log_d, beta, power)
    out = _round(tf2.mul1(mod, bce))
    if power is None:
        at_zero = jnp.where(beta == 0, 1.0, jnp.where(beta < 0, jnp.inf, 0.0))
        out = jnp.where(present, out, at_zero * bce)
        less = jnp.where(present, beta * _round(_modulator(absd, log_d, beta - 1, None)), 0.0)
    elif power:
        less = power * _round(_modulator(absd, log_d, beta, power - 1))
    else:
        less = jnp.zeros_like(x)
    return out, (_round(diff), _round(mod), less)


class _QflPlain(NamedTuple):
    diff: Array  # z - s_+
    mod: Array  # |z - s_+|**beta
    mod_less: Array  # beta |z - s_+|**(beta - 1) sign(z - s_+), 0 at z = s_+
    bce: Array


def _qfl_plain(
    pl: _Plain,
    x: Array,
    z: Array,
    beta: Array,
    power: int | None,
    acc: tuple[Array, Array, Array] | None = None,
) -> _QflPlain:
    """The factors in plain arithmetic (differentiable); with ``acc``, the values of the
    accurate ones (:func:`_fix`)."""
    acc_diff, acc_mod, acc_less = (None, None, None) if acc is None else acc
    diff = _fix(jnp.where(pl.pos, (z - 1) + pl.sig_neg, z - pl.sig), acc_diff)
    absd = jnp.abs(diff)
    mod = _fix(_pow_plain(absd, beta, power), acc_mod)
    if power is not None:
        less = _pow_plain(absd, beta, power - 1) * power if power else jnp.zeros_like(x)
    else:
        present = absd > 0
        safe = jnp.where(present, absd, 1.0)
        less = jnp.where(present, beta * jnp.exp((beta - 1) * jnp.log(safe)), 0.0)
    less = _fix(less, acc_less)
    return _QflPlain(diff, mod, less * jnp.sign(diff), loss_value(x, z))


def _qfl_terms(x, z, beta, power):
    """The loss, and (float32) the accurate pieces for the derivatives."""
    if power == 0:
        return loss_value(x, z), ()
    xf = _finite(x)
    acc: Any = ()
    if x.dtype == jnp.float32:
        out, acc = _qfl_value_f32(xf, z, beta, power)
    else:
        t = _qfl_plain(_plain(xf), xf, z, beta, power)
        out = t.mod * t.bce
    # At x = +-inf the loss is inf times the label weight on the saturating side.
    slope = jnp.where(x > 0, 1 - z, z)
    out = _at_most_bce(jnp.where(jnp.isinf(x), _signed_inf(slope), out), x, z, beta >= 0)
    return out, acc


@partial(jax.custom_jvp, nondiff_argnums=(3,))
def _qfl(x, z, beta, power):
    """Quality focal loss elementwise, in the compute dtype (``beta`` broadcastable)."""
    return _qfl_terms(x, z, beta, power)


def _qfl_jvp(power, primals, tangents):
    x, z, beta = primals
    tx, tz, tb = tangents
    out, acc = _qfl(x, z, beta, power)
    xf = _finite(x)
    pl = _plain(xf)
    t = _qfl_plain(pl, xf, z, beta, power, acc or None)
    tangent = jnp.zeros_like(out)
    if not isinstance(tx, SymbolicZero):
        # d/dx = -(beta |D|**(beta-1) sign(D)) s_+ s_- bce - |D|**beta D, D = z - s_+, the
        # smaller sigmoid on |D|**(beta - 1) (D is at least as large where bce is small), the
        # other on bce (at most 1 times bce): no product under- or overflows before the result.
        small = jnp.where(pl.pos, pl.sig_neg, pl.sig)
        big = jnp.where(pl.pos, pl.sig, pl.sig_neg)
        dx = -(t.mod_less * small) * (big * t.bce) - t.mod * t.diff
        tangent = tangent + dx * tx
    if not isinstance(tz, SymbolicZero):
        # d/dz = beta |D|**(beta-1) sign(D) bce - x |D|**beta; at x = +-inf, -x where the
        # saturating side has a label weight, else 0.
        dz = t.mod_less * t.bce - xf * t.mod
        slope = jnp.where(x > 0, 1 - z, z)
        dz = jnp.where(jnp.isinf(x), jnp.where(slope == 0, 0.0, -x), dz)
        tangent = _tangent(tangent, dz, tz)
    if not isinstance(tb, SymbolicZero):
        present = jnp.abs(t.diff) > 0
        log_d = jnp.log(jnp.where(present, jnp.abs(t.diff), 1.0))
        db = jnp.where(present & (log_d != 0), jnp.where(log_d == 0, 1.0, out) * log_d, 0.0)
        tangent = _tangent(tangent, db, tb)
    return (out, acc), (tangent, jax.tree.map(jnp.zeros_like, acc))


_qfl.defjvp(_qfl_jvp, symbolic_zeros=True)


# --------------------------------------------------------------------------- Poly-1


def _poly_value_f32(
    x: Array, z: Array, eps: Array, g: Array, power: int | None
) -> tuple[Array, tuple[Array, Array, Array]]:
    """``epsilon u**(gamma + 1)``, ``u = (c_z + (1 - c_z) e) / (1 + e)`` from pairs, the power
    rounded once (finite ``x``); and ``u``, ``u**gamma``, ``u**(gamma + 1)`` rounded once, for
    the derivatives."""
    s = _sig_pairs(x)
    zero = jnp.zeros_like(x)
    omz = tf2.two_sum(tf2.opaque(1.0), -z)
    slope = tf2.select(s.pos, omz, (z, zero))
    other = tf2.select(s.pos, (z, zero), omz)
    mix = tf2.add(slope, tf2.mul(other, s.e))
    u = tf2.mul(mix, s.big)

    def log_u() -> Pair:
        # log(mix) - log1p(e); an agreeing hard label has mix = e exactly: log(mix) = -|x|
        # also where e underflows.
        agree = slope[0] == 0
        log_mix = tf2.select(agree, (-s.a, zero), tf2.log(tf2.select(agree, (zero + 1, zero), mix)))
        return tf2.add(log_mix, _neg(tf2.log1p_unit(s.e)))

    # u**(gamma + 1) as u**gamma times u: gamma + 1 itself rounds in float32 (0.3 + 1), and
    # its error times |log u| would reach the power.
    mod_g = _modulator(u, log_u, g, power)
    mod = tf2.mul_finite(mod_g, u)  # both at most 1
    pieces = _round(u), _round(mod_g), _round(mod)
    return _round(tf2.mul1(mod, eps + zero)), pieces


def _poly_plain(
    pl: _Plain, z: Array, g: Array, power: int | None, acc: tuple | None = None
) -> tuple[Array, Array, Array]:
    """``u = 1 - p_t``, ``u**gamma`` and ``u**(gamma + 1)`` in the dtype; with ``acc``, the
    values of the accurate ones (:func:`_fix`)."""
    acc = (None, None, None) if acc is None else acc
    slope = jnp.where(pl.pos, 1 - z, z)
    s = jnp.where(pl.pos, pl.sig_neg, pl.sig)  # sigmoid(-|x|)
    u = _fix(slope * (1 - s) + (1 - slope) * s, acc[0])
    mod = _fix(_pow_plain(u, g, power), acc[1])
    return u, mod, _fix(u * mod, acc[2])


@partial(jax.custom_jvp, nondiff_argnums=(4,))
def _poly(x, z, eps, g, power):
    """``epsilon (1 - p_t)**(gamma + 1)`` elementwise, in the compute dtype."""
    xf = _finite(x)
    if x.dtype == jnp.float32:
        return _poly_value_f32(xf, z, eps, g, power)
    return eps * _poly_plain(_plain(xf), z, g, power)[2], ()


def _poly_jvp(power, primals, tangents):
    x, z, eps, g = primals
    tx, tz, te, tg = tangents
    out, acc = _poly(x, z, eps, g, power)
    xf = _finite(x)
    pl = _plain(xf)
    u, mod, mod1 = _poly_plain(pl, z, g, power, acc or None)
    tangent = jnp.zeros_like(out)
    scale = eps * (g + 1) * mod
    if not isinstance(tx, SymbolicZero):
        # du/dx = (1 - 2z) s_+ s_-
        tangent = tangent + scale * ((1 - 2 * z) * (pl.sig * pl.sig_neg)) * tx
    if not isinstance(tz, SymbolicZero):
        # du/dz = s_- - s_+ = -sign(x) expm1(-|x|)... = -tanh(x / 2), without cancellation.
        sign = jnp.where(pl.pos, -1.0, 1.0).astype(x.dtype)
        du_dz = sign * -jnp.expm1(neg_abs(xf)) / (1 + pl.e)
        tangent = tangent + scale * du_dz * tz
    if not isinstance(te, SymbolicZero):
        tangent = tangent + mod1 * te
    if not isinstance(tg, SymbolicZero):
        present = u > 0
        log_u = jnp.log(jnp.where(present, u, 1.0))
        tangent = tangent + jnp.where(present, eps * mod1 * log_u, 0.0) * tg
    return (out, acc), (tangent, jax.tree.map(jnp.zeros_like, acc))


_poly.defjvp(_poly_jvp, symbolic_zeros=True)


# --------------------------------------------------------------------------- public functions


def asymmetric_loss(
    labels: ArrayLike,
    logits: ArrayLike,
    *,
    gamma_pos: ArrayLike = 0.0,
    gamma_neg: ArrayLike = 4.0,
    clip: ArrayLike | None = 0.05,
    where: ArrayLike | None = None,
) -> Array:
    r"""Asymmetric loss (ASL) of Ridnik et al. for multi-label classification, elementwise.

    .. math::

        \ell = -z (1 - p)^{\gamma_+} \log p - (1 - z)\, p_m^{\gamma_-} \log(1 - p_m),
        \quad p = \sigma(x), \quad p_m = \max(p - c, 0)

    (the authors' and timm's for hard labels) with exact logs, at most the cross-entropy;
    gradients of this value w.r.t. every argument (traced options used as given), finite.

    Args:
      labels: Targets of ``logits``' shape, hard or soft.
      logits: Float logits; 16-bit ones are computed in float32.
      gamma_pos, gamma_neg: Focusing exponents of the two terms, ``>= 0``.
      clip: The margin ``c`` in [0, 1) shifted off the negatives; 0 or None: none.
      where: Optional bool mask broadcastable to ``logits``; False elements are absent.

    Returns:
      The elementwise loss, with ``logits``' shape and dtype.

    Raises:
      TypeError: non-float ``logits`` or a non-bool ``where``.
      ValueError: mismatched shapes, a concrete gamma < 0 or ``clip`` outside [0, 1).

    Examples:
      >>> import jax.numpy as jnp, sigmoid_xent as sx
      >>> sx.asymmetric_loss(jnp.array([1., 0., 0.]), jnp.array([2., 2., -3.])).round(6)
      Array([0.126928, 0.846415, 0.      ], dtype=float32)

    References:
      Ridnik et al., "Asymmetric Loss For Multi-Label Classification", ICCV 2021.
    """
    fn = "asymmetric_loss"
    z, x = check_labels_logits(labels, logits, fn)
    gp = _option(gamma_pos, "gamma_pos", fn, x, low=0.0)
    gn = _option(gamma_neg, "gamma_neg", fn, x, low=0.0)
    clipped = clip is not None and _checks.static_scalar(clip) != 0.0
    c = _option(0.0 if clip is None else clip, "clip", fn, x, low=0.0, high=1.0, high_open=True)
    mask = _checks.where_mask(where, x.shape, fn)
    powers = (_static_power(gamma_pos), _static_power(gamma_neg))
    # From the argument itself: inside a caller's jit, even a Python clip is traced once
    # converted to an array.
    x0 = _clip_logit_parts(clip, _checks.compute_dtype(x.dtype)) if clipped else None
    return _asl_compiled(x, z, gp, gn, c, x0, mask, powers=powers, clipped=clipped)


@partial(jax.jit, static_argnames=("powers", "clipped"))
def _asl_compiled(x, z, gp, gn, c, x0, mask, powers, clipped):
    x, z = hide(mask, x), hide(mask, z)
    cd = _checks.compute_dtype(x.dtype)
    xc, zc = x.astype(cd), z.astype(cd)
    gp, gn, c = (_at_rank(v, xc.ndim, cd) for v in (gp, gn, c))
    if x0 is None:
        x0 = _clip_logit_traced(c) if clipped else (c, c, c)
    # Constants to XLA when the clip is static: the barrier keeps the simplifier from
    # folding the exact sums of x - x0.
    x0 = jax.lax.optimization_barrier(tuple(_at_rank(v, xc.ndim, cd) for v in x0))
    out = _asl(xc, zc, gp, gn, c, *x0, powers[0], powers[1], clipped)[0]
    return keep(mask, out).astype(x.dtype)


def quality_focal_loss(
    labels: ArrayLike,
    logits: ArrayLike,
    *,
    beta: ArrayLike = 2.0,
    where: ArrayLike | None = None,
) -> Array:
    r"""Quality focal loss of Generalized Focal Loss (Li et al.) for soft targets, elementwise.

    .. math::

        \ell = |z - \sigma(x)|^{\beta} \, \mathrm{bce}(z, x)

    for quality targets ``z`` in [0, 1] (mmdetection's ``quality_focal_loss_tensor_target``),
    at most the cross-entropy; gradients of this formula w.r.t. every argument (mmdetection's
    label gradient is 0 at ``z = 0``), the factor's 0 at ``z = sigmoid(x)``.

    Args:
      labels: Soft targets of ``logits``' shape.
      logits: Float logits; 16-bit ones are computed in float32.
      beta: The modulating exponent, ``>= 0``.
      where: Optional bool mask broadcastable to ``logits``; False elements are absent.

    Returns:
      The elementwise loss, with ``logits``' shape and dtype.

    Raises:
      TypeError: non-float ``logits`` or a non-bool ``where``.
      ValueError: mismatched shapes or a concrete negative ``beta`` (a traced one is used).

    Examples:
      >>> import jax.numpy as jnp, sigmoid_xent as sx
      >>> sx.quality_focal_loss(jnp.array([0.9, 0., 0.]), jnp.array([2., 2., -3.]))
      Array([1.20555145e-04, 1.65007830e+00, 1.09283319e-04], dtype=float32)

    References:
      Li et al., "Generalized Focal Loss", NeurIPS 2020.
    """
    fn = "quality_focal_loss"
    z, x = check_labels_logits(labels, logits, fn)
    b = _option(beta, "beta", fn, x, low=0.0)
    mask = _checks.where_mask(where, x.shape, fn)
    return _qfl_compiled(x, z, b, mask, power=_static_power(beta))


@partial(jax.jit, static_argnames=("power",))
def _qfl_compiled(x, z, beta, mask, power):
    x, z = hide(mask, x), hide(mask, z)
    cd = _checks.compute_dtype(x.dtype)
    xc, zc = x.astype(cd), z.astype(cd)
    out = _qfl(xc, zc, _at_rank(beta, xc.ndim, cd), power)[0]
    return keep(mask, out).astype(x.dtype)


def poly1_sigmoid_loss(
    labels: ArrayLike,
    logits: ArrayLike,
    *,
    epsilon: ArrayLike = 1.0,
    gamma: ArrayLike = 0.0,
    alpha: ArrayLike | None = None,
    where: ArrayLike | None = None,
) -> Array:
    r"""Poly-1 loss of Leng et al. on logits: the focal loss plus its first polynomial term.

    .. math::

        \ell = \alpha_t (1 - p_t)^{\gamma}\, \mathrm{bce}(z, x) + \epsilon (1 - p_t)^{\gamma + 1}

    (``p_t``, ``alpha_t`` as :func:`sigmoid_focal_loss`; ``gamma = 0``, ``alpha=None``: the
    paper's ``bce + epsilon (1 - p_t)``); a negative ``epsilon`` can cancel the two terms.

    Args:
      labels: Targets of ``logits``' shape, hard or soft.
      logits: Float logits; 16-bit ones are computed in float32.
      epsilon, gamma: The polynomial term's weight, ``>= -1``, and the exponent, ``>= 0``.
      alpha: As :func:`sigmoid_focal_loss`; None (the default): no class balance.
      where: Optional bool mask broadcastable to ``logits``; False elements are absent.

    Returns:
      The elementwise loss, with ``logits``' shape and dtype.

    Raises:
      TypeError: non-float ``logits`` or a non-bool ``where``.
      ValueError: mismatched shapes, a concrete ``epsilon < -1`` or negative ``gamma``.

    Examples:
      >>> import jax.numpy as jnp, sigmoid_xent as sx
      >>> sx.poly1_sigmoid_loss(jnp.array([1., 0.]), jnp.array([2., 2.]))
      Array([0.24613091, 3.0077252 ], dtype=float32)

    References:
      Leng et al., "PolyLoss: A Polynomial Expansion Perspective of ...", ICLR 2022.
    """
    fn = "poly1_sigmoid_loss"
    z, x = check_labels_logits(labels, logits, fn)
    eps = _option(epsilon, "epsilon", fn, x, low=-1.0)
    g = _option(gamma, "gamma", fn, x, low=0.0)
    a = None if alpha is None else _option(alpha, "alpha", fn, x)
    # The focal term keeps its static fast paths: a Python gamma and alpha stay static.
    g_static = _checks.static_scalar(gamma)
    a_static = None if alpha is None else _checks.static_scalar(alpha)
    mask = _checks.where_mask(where, x.shape, fn)
    return _poly1_compiled(
        x,
        z,
        eps,
        g,
        None if a_static is not None else a,
        mask,
        power=_static_power(gamma),
        gamma_static=g_static,
        alpha_static=a_static,
        balanced=alpha is not None,
    )


@partial(jax.jit, static_argnames=("power", "gamma_static", "alpha_static", "balanced"))
def _poly1_compiled(x, z, eps, g, alpha, mask, power, gamma_static, alpha_static, balanced):
    x, z = hide(mask, x), hide(mask, z)
    cd = _checks.compute_dtype(x.dtype)
    xc, zc = x.astype(cd), z.astype(cd)
    gamma = g.astype(cd) if gamma_static is None else gamma_static
    if not balanced:
        alpha = None
    elif alpha_static is not None:
        alpha = alpha_static
    else:
        alpha = alpha.astype(cd)
    if alpha is None and gamma_static == 0:
        # The focal loss at gamma 0 without balance is the core's bce exactly (its contract);
        # the core alone is a third of the program.
        focal = sigmoid_cross_entropy_with_logits(zc, xc)
    else:
        focal = sigmoid_focal_loss(zc, xc, alpha=alpha, gamma=gamma)
    poly = _poly(xc, zc, _at_rank(eps, xc.ndim, cd), _at_rank(g, xc.ndim, cd), power)[0]
    return keep(mask, focal + poly).astype(x.dtype)


def class_balanced_weights(counts: ArrayLike, *, beta: ArrayLike = 0.999) -> Array:
    r"""Class-balanced weights of Cui et al.: the inverse effective number of samples.

    .. math::

        w_c \propto \frac{1 - \beta}{1 - \beta^{n_c}}, \qquad \sum_c w_c = C

    for ``C = len(counts)`` classes of ``n_c`` samples (the reference's normalisation), for
    ``pos_weight`` or per-class ``weights``. A class with no samples gets 0 (all zero: all 0);
    ``beta = 0`` gives ones, ``beta -> 1`` the inverse frequency. ``1 - beta**n`` is computed
    without cancellation (in float64 on the host for concrete arguments).

    Args:
      counts: Samples per class, ``[C]`` (an array or a list), non-negative.
      beta: The hyperparameter in [0, 1).

    Returns:
      The weights ``[C]``: float32, float64 with x64 (or ``counts``' own float dtype).

    Raises:
      ValueError: ``counts`` not one-dimensional, or concrete negative ``counts`` or a
        ``beta`` outside [0, 1) (a traced one is used as given).

    Examples:
      >>> import sigmoid_xent as sx
      >>> sx.class_balanced_weights([1000, 100, 10], beta=0.99)
      Array([0.23014715, 0.36301097, 2.4068418 ], dtype=float32)

    References:
      Cui et al., "Class-Balanced Loss Based on Effective Number of Samples", CVPR 2019.
    """
    fn = "class_balanced_weights"
    default = jnp.zeros((), float).dtype
    n = _checks.as_float(counts, default, "counts", fn)
    if n.ndim != 1:
        given = counts if hasattr(counts, "dtype") else np.asarray(counts)
        raise ValueError(
            f"{fn}: `counts` must be one-dimensional (samples per class), got "
            f"{_checks.describe(given)}."
        )
    dtype = _checks.compute_dtype(n.dtype)
    b = _checks.as_float(beta, dtype, "beta", fn)
    if np.ndim(b) != 0:
        raise ValueError(f"{fn}: `beta` must be a scalar, got {_checks.describe(b)}.")
    _checks.in_range(n, "counts", fn, low=0.0)
    _checks.in_range(b, "beta", fn, low=0.0, high=1.0, high_open=True)
    if not (_checks.is_traced(counts) or _checks.is_traced(beta)):
        # Concrete (the usual case: counts of a data set): in float64 on the host from beta as
        # given, not from beta rounded to float32 (1 - beta is what matters).
        host = np.asarray(counts, np.float64), np.asarray(beta, np.float64)
        with np.errstate(divide="ignore"):  # log(0) for beta = 0, as in-graph
            return jnp.asarray(_class_balanced(*host, np), dtype)
    return _class_balanced_compiled(n.astype(dtype), b.astype(dtype))


@jax.jit
def _class_balanced_compiled(n: Array, beta: Array) -> Array:
    return _class_balanced(n, beta, jnp)


def _class_balanced(n: Any, beta: Any, xp: Any) -> Any:
    """The weights with the array module ``xp`` (numpy on the host, or jax.numpy)."""
    present = n > 0
    # 1 - beta**n = -expm1(n log beta): exact where beta**n is near 1 (beta near 1, small n);
    # beta = 0 gives log 0 = -inf and 1 for every n > 0.
    log_b = xp.log(beta)
    effective = -xp.expm1(xp.where(present, n, xp.ones_like(n)) * log_b)
    effective = xp.maximum(effective, xp.finfo(n.dtype).tiny)
    # (1 - beta) cancels in the normalisation; the ratios to the smallest effective number
    # are at most 1, so their sum cannot overflow.
    smallest = xp.min(xp.where(present, effective, xp.inf))
    smallest = xp.where(xp.isfinite(smallest), smallest, 1.0)
    ratio = xp.where(present, smallest / effective, 0.0)
    total = xp.sum(ratio)
    return xp.where(total > 0, ratio * (n.shape[0] / xp.where(total > 0, total, 1.0)), 0.0)
