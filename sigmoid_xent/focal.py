"""The focal loss of Lin et al. (2017): the value by paths chosen at trace time, derivatives by
a custom JVP.

Notation, elementwise, from :func:`sigmoid_xent._core.bce_parts`: ``a = |x|``, ``e = exp(-a)``,
``S = log1p(e)``, ``c`` the label weight on the side where the sigmoid saturates to 1 (``1 - z``
for ``x >= 0``, ``z`` below) and ``q = 1 - c``. Then, without cancellation,

    bce = c a + S,   u = 1 - p_t = (c + q e) / (1 + e) = mix / (1 + e),   core = u**gamma bce,

and the loss is ``alpha_t core`` (applied inside, one rounding). The value takes one of four
paths, by two static facts:

    ============================  ==============================  ===========================
    value                         real (or traced) ``gamma``      static integer ``gamma``
    ============================  ==============================  ===========================
    two-float (float32)           ``exp(gamma log u)`` as pairs   ``u**n`` by pair products
    plain (the dtype's own)       ``exp(gamma log u)``            ``u (u (... alpha_t bce))``
    ============================  ==============================  ===========================

Plain arithmetic serves float64, 16-bit inputs (computed in float32: their rounding hides a
float32 ulp or two) and :func:`plain_focal_loss`. The derivatives are closed forms in which every
factor is bounded (each ratio divided by ``e`` or by ``c``, whichever is larger), so that their
own derivatives, the Hessian, stay finite where ``e**2`` or ``c**2`` underflow:

    d core/dx = core (gamma (1 - 2z) e / mix / (1 + e) + (sigmoid(x) - z) / bce)
    d core/dz = gamma (sigmoid(-x) - sigmoid(x)) core / u - x u**gamma
    d core/dgamma = core log u

A static integer ``gamma`` has a d/dx of its own (:func:`_logits_grad_power`): a polynomial in
``u``, one ``exp`` and no division. The accuracy each path holds is in docs/numerics.md.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero
from jax.typing import ArrayLike

from sigmoid_xent import _checks
from sigmoid_xent import _twofloat as twofloat
from sigmoid_xent._core import (
    absorbing_mul,
    bce_parts,
    check_labels_logits,
    log1p_unit_over,
    loss_value,
)
from sigmoid_xent._mask import hide, keep

Array = jax.Array
# The two-float value's factors of d core/dz, ``(u**gamma, u**gamma bce / mix)``, or None.
Factors = tuple[Array, Array] | None

__all__ = ["plain_focal_loss", "sigmoid_focal_loss"]


def _log1p_over(e: Array) -> Array:
    """``log1p(e) / e`` for ``e`` in [0, 1] (1 at ``e = 0``), smooth to every order."""
    if e.dtype == jnp.float32:
        return log1p_unit_over(e)
    small = e < 1e-5
    safe = jnp.where(small, jnp.ones_like(e), e)
    series = 1 - e * (1 / 2 - e * (1 / 3 - e * (1 / 4 - e / 5)))
    return jnp.where(small, series, jnp.log1p(safe) / safe)


def _log_one_minus(z: Array) -> Array:
    """``log(1 - z)`` from ``1 - z = h + l`` exactly: ``log(h) + l / h``.

    Not ``jnp.log1p(-z)``: XLA:CPU's float64 log1p is off by up to 120 ulp on [-0.5, -0.25].
    """
    one = jax.lax.optimization_barrier(jnp.ones((), z.dtype))  # (1 - h) - z must not fold
    h = one - z
    return jnp.log(h) + ((one - h) - z) / h


class _Pieces:
    """The plain (one-precision, differentiable) quantities shared by the value and the JVP.

    ``x`` must be finite (infinite logits are replaced by a finite one beyond which ``e`` is 0).
    ``slope`` is the module docstring's ``c`` (bce's slope in ``|x|``), ``one_minus_slope`` its
    ``q``.
    """

    def __init__(self, x: Array, z: Array):
        parts = bce_parts(x, z)
        minus_abs, e = parts.minus_abs, parts.e
        self.x, self.z, self.e, self.neg_abs = x, z, e, minus_abs
        self.a = -minus_abs
        self.pos = x >= 0
        self.sign = jnp.where(self.pos, 1.0, -1.0).astype(x.dtype)
        self.log1p_e = parts.log1p_e
        self.slope = slope = parts.slope
        self.one_minus_slope = q = jnp.where(self.pos, z, 1 - z)
        # Branch "below": c < e (or c = 0): quantities divided by e. Else divided by c (c >= e).
        self.below = below = (slope < e) | (slope == 0)
        # log(c) (used where c >= e > 0) without rounding 1 - z first: log u is -z, not 0, for
        # a tiny z at x >> 0. Safe arguments elsewhere (no NaN for reverse mode to pick up).
        log_c = jnp.where(
            self.pos,
            _log_one_minus(jnp.where(self.pos & ~below, z, 0)),
            jnp.log(jnp.where(self.pos | below, 1, z)),
        )
        # c / e <= 1 as c exp(|x|) (the derivative of c / e divides by e**2, which underflows);
        # no select on c, so that d/dz stays right at c = 0. The cap only binds where c = 0.
        slope_over_e = slope * jnp.exp(
            jnp.minimum(self.a, float(np.log(np.finfo(x.dtype).max)) - 1)
        )
        slope_safe = jnp.where(below, 1, slope)  # c where it divides, else 1
        e_over_slope = e / slope_safe  # <= 1
        # log(mix), mix = c + q e >= max(c, e) * min(1, ...): both forms take logs of [1, 2].
        self.log_mix = jnp.where(
            below, minus_abs + jnp.log(q + slope_over_e), log_c + jnp.log1p(q * e_over_slope)
        )
        self.log_u = self.log_mix - self.log1p_e
        # bce = c a + S = scale * bce_scaled, scale = e (below) or c: bce_scaled >= ln 2.
        self.bce_scaled = jnp.where(
            below,
            slope_over_e * self.a + _log1p_over(e),
            self.a + self.log1p_e / slope_safe,
        )
        self.log_bce = jnp.where(below, minus_abs, log_c) + jnp.log(self.bce_scaled)
        # e / mix <= 1, and (sigmoid(x) - z) / bce = grad_scaled / bce_scaled, both bounded: the
        # caller multiplies by the loss before dividing (the ratio itself underflows for
        # |x| near the float32 maximum, where the product does not).
        self.e_over_mix = jnp.where(
            below, 1 / (q + slope_over_e), e_over_slope / (1 + q * e_over_slope)
        )
        self.grad_scaled = self.sign * jnp.where(
            below, slope_over_e - 1 / (1 + e), 1 - e_over_slope / (1 + e)
        )


def _limit(dtype) -> float:
    """A logit magnitude beyond which exp(-|x|) and every term it scales are 0 in ``dtype``."""
    return 2.0 * -float(np.log(np.finfo(dtype).tiny))


def _finite(x: Array) -> Array:
    return jnp.where(jnp.isinf(x), jnp.sign(x) * _limit(x.dtype), x)


class _PairPieces(NamedTuple):
    """The pieces of the loss as float32 pairs (:func:`_pairs`): :func:`bce_parts` in two-float
    arithmetic, and ``mix``."""

    a: Array  # |x|, with infinite x replaced by a finite one beyond which e = 0
    one: Array  # 1.0 behind an optimization barrier (twofloat.opaque), shared
    e: twofloat.Pair  # exp(-a)
    log1p_e: twofloat.Pair  # log1p(e)
    slope: twofloat.Pair  # c: 1 - z for x >= 0, z below
    bce: twofloat.Pair  # c a + log1p(e)
    mix: twofloat.Pair  # c + (1 - c) e


def _pairs(x: Array, z: Array) -> _PairPieces:
    """The pieces as float32 pairs; every product here is bounded (no overflow guard)."""
    a = jnp.abs(_finite(x))
    zero = jnp.zeros_like(a)
    one = twofloat.opaque(1.0)
    e = twofloat.exp_neg(a)
    log1p_e = twofloat.log1p_unit(e)
    pos = x >= 0
    one_minus_z = twofloat.two_sum(one, -z)
    slope = twofloat.select(pos, one_minus_z, (z, zero))
    other = twofloat.select(pos, (z, zero), one_minus_z)
    return _PairPieces(
        a=a,
        one=one,
        e=e,
        log1p_e=log1p_e,
        slope=slope,
        bce=twofloat.add(twofloat.mul1_finite(slope, a), log1p_e),
        mix=twofloat.add(slope, twofloat.mul_finite(other, e)),
    )


class _LogPieces(NamedTuple):
    """The logarithms of the real-``gamma`` path, as float32 pairs (:func:`_logs`)."""

    agree: Array  # c = 0: a hard label that agrees with the logit (mix = e exactly)
    log_mix: twofloat.Pair  # log(mix)
    log_u: twofloat.Pair  # log(1 - p_t) = log(mix) - log1p(e)


def _logs(p: _PairPieces) -> _LogPieces:
    zero = jnp.zeros_like(p.a)
    log1p_e = p.log1p_e
    agree = p.slope[0] == 0
    log_mix = twofloat.select(
        agree, (-p.a, zero), twofloat.log(twofloat.select(agree, (zero + 1, zero), p.mix))
    )
    return _LogPieces(agree, log_mix, twofloat.add(log_mix, (-log1p_e[0], -log1p_e[1])))


def _alpha_t_pair(a: Array, z: Array) -> twofloat.Pair:
    """``alpha_t = (1 - a) + z (2 a - 1)`` as a pair: the parts of ``a`` alone are scalars for a
    scalar alpha (XLA computes them once); ``(1, 0)`` where ``a < 0``."""
    one = twofloat.opaque(1.0)
    base = twofloat.two_sum(one, -a)
    slope = twofloat.two_sum(2.0 * a, -one)
    at = twofloat.add(base, twofloat.mul1_finite(slope, z))
    return twofloat.select(a < 0, (jnp.ones_like(a), jnp.zeros_like(a)), at)


def _value_f32(x: Array, z: Array, g: Array, a: Array, factors: bool) -> tuple[Array, Factors]:
    """``alpha_t u**gamma bce`` in two-float arithmetic, rounded once (float32); with
    ``factors``, also those of d core/dz from the same pairs: ``u**gamma``, ``u**gamma bce / mix``.

    ``exp(gamma log u) = (h + l) 2**k`` is kept unscaled until after the products with ``bce``
    and ``alpha_t``, so neither an underflowing modulator nor a ``bce`` near the float32 maximum
    is lost. One loop, no division (XLA:CPU splits the loop at a divide with several users).
    """
    p = _pairs(x, z)
    log_u = _logs(p).log_u
    zero = jnp.zeros_like(p.a)
    # Below -200, u**gamma < 2**-288: the product is below every float32 (and the pair product
    # never overflows: g and log u are finite).
    low = g * log_u[0] < -200.0
    y = twofloat.mul1_finite(twofloat.select(low, (zero, zero), log_u), g)
    h, lo, k = twofloat.exp_unscaled(y)
    at = _alpha_t_pair(a, z)
    # (h + lo) / 2 <= 0.71 times bce cannot overflow; the 2 goes back into the exponent. Only
    # for bce > 1: halved, a loss within a factor 2 of the smallest normal would be flushed.
    big = p.bce[0] > 1.0
    f = jnp.where(big, 0.5, 1.0)
    mh, ml = twofloat.mul_finite((h * f, lo * f), p.bce)
    ph, pl = twofloat.two_prod_finite(mh, at[0])
    prod = ph + (pl + (mh * at[1] + ml * at[0]))  # the last product, rounded once
    out = twofloat.scale(prod, jnp.clip(k + jnp.where(big, 1.0, 0.0), -252.0, 254.0))
    out = jnp.where(low, 0.0, out)
    # x infinite: 0 for an agreeing hard label, inf for c > 0 (bce is infinite); a zero alpha_t
    # switches the term off even there.
    out = jnp.where(jnp.isinf(x) & (p.slope[0] > 0), jnp.inf * at[0], out)
    out = jnp.where(at[0] == 0, 0.0 * at[0], out)
    if not factors:
        return out, None
    # bce / mix is in [0.3, |x| + 2]. An agreeing hard label has bce / mix = log1p(e) / e,
    # 1 - e / 2 for a small e (also where e underflows, and the quotient's residual with it).
    # Neither factor is derived from the loss, which can underflow first.
    tail = (p.slope[0] == 0) & (p.e[0] < 2.0**-20)
    ratio = twofloat.select(
        tail,
        twofloat.fast_two_sum(p.one, -0.5 * p.e[0]),
        twofloat.div(p.bce, twofloat.select(tail, (zero + 1, zero), p.mix)),
    )
    om = twofloat.mul_finite((0.5 * h, 0.5 * lo), ratio)  # below the maximum: the 2 as above
    over_mix = jnp.where(low, 0.0, twofloat.scale(om[0] + om[1], jnp.clip(k + 1.0, -252.0, 254.0)))
    modulator = jnp.where(low, 0.0, twofloat.scale(h + lo, jnp.clip(k, -252.0, 254.0)))
    return out, (modulator, over_mix)


# Static integer gammas in this range (2 is every peer's default) raise ``1 - p_t`` by products.
MAX_POWER = 8


def _value_power_f32(x: Array, z: Array, n: int, a: Array, factors: bool) -> tuple[Array, Factors]:
    """``alpha_t u**n bce`` for a static integer ``n`` in [0, MAX_POWER], in two-float
    arithmetic, rounded once (float32); with ``factors``, also ``u**n`` and
    ``u**(n - 1) bce / (1 + e) = u**n bce / mix``, those of d core/dz, from the same pairs.

    ``u = mix / (1 + e)`` as a pair (a Newton reciprocal of ``1 + e`` in [1, 2] and the exact
    residual), written ``m 2**k`` with ``m`` in [0.5, 1), then ``m**n`` by products: no pair
    ``log`` and ``exp`` (which a real ``gamma`` needs), about a third of :func:`_value_f32`'s
    operations at the same bound. The power of two goes back after the products with ``bce``
    and ``alpha_t``, so an underflowing ``u**n`` does not take a normal loss with it.
    """
    p = _pairs(x, z)
    zero = jnp.zeros_like(p.a)
    one, e, slope, bce, mix = p.one, p.e, p.slope, p.bce, p.mix
    at = _alpha_t_pair(a, z)
    if n == 0:
        prod = twofloat.mul_finite(bce, at)[0]
        k = zero
        modulator, over_mix = zero + 1, zero  # d core/dz = -x; the other term is gamma * 0
    else:
        dh, dl = twofloat.fast_two_sum(one, e[0])  # 1 + e in [1, 2]
        dl = dl + e[1]
        inv = twofloat.recip(dh, 1.0, 2.0)
        uh, ul = twofloat.quotient(mix, (dh, dl), inv)
        # u = m 2**k, m in [0.5, 1): m**n in [2**-n, 1), times bce and alpha_t cannot overflow.
        # u = 0 (an agreeing hard label where e underflows): m = 0.5, then the loss is 0.
        empty = uh <= 0
        k = twofloat.exponent(jnp.where(empty, 1.0, uh)) + 1.0
        m = twofloat.scale(jnp.where(empty, 0.5, uh), -k), twofloat.scale(ul, -k)
        m_n = twofloat.power(m, n)
        mh, ml = twofloat.mul_finite(m_n, bce)
        th, tl = twofloat.two_prod_finite(mh, at[0])
        prod = th + (tl + (mh * at[1] + ml * at[0]))  # the last product, rounded once
        prod = jnp.where(empty, 0.0, prod)
        if factors:
            lower = bce if n == 1 else twofloat.mul_finite(twofloat.power(m, n - 1), bce)
            om = twofloat.quotient(lower, (dh, dl), inv)  # over 1 + e
            kl = jnp.clip((n - 1) * k, -252.0, 254.0)
            over_mix = jnp.where(empty, 0.0, twofloat.scale(om[0] + om[1], kl))
            modulator = jnp.where(
                empty, 0.0, twofloat.scale(m_n[0] + m_n[1], jnp.clip(n * k, -252.0, 254.0))
            )
        k = n * k
    out = twofloat.scale(prod, jnp.clip(k, -252.0, 254.0))
    out = jnp.where(jnp.isinf(x) & (slope[0] > 0), jnp.inf * at[0], out)
    return jnp.where(at[0] == 0, 0.0 * at[0], out), (modulator, over_mix) if factors else None


def _sigmoid_neg_abs(e: Array) -> Array:
    """``s = e / (1 + e) = sigmoid(-|x|)``; in float32 by Newton steps, not a division (XLA:CPU
    gives a divide with several users a loop of its own, and each loop is a pass over memory)."""
    if e.dtype == jnp.float32:
        return e * twofloat.recip(1 + e, 1.0, 2.0)
    return e / (1 + e)


def _value_power_plain(x: Array, z: Array, n: int, a: Array) -> Array:
    """``alpha_t u**n bce`` for a static integer ``n`` in plain arithmetic of the dtype.

    ``u = c (1 - s) + q s`` (no cancellation) and the products taken as
    ``u (u (... (alpha_t bce)))``: each partial product is at least the result (``u``,
    ``alpha_t <= 1``), so none underflows before it does, and none overflows (``bce`` is
    finite or, at an infinite logit, infinite only where the loss is). ``e`` is the same
    expression as in :func:`_logits_grad_power`, so value and gradient share one ``exp``.
    """
    p = bce_parts(_finite(x), z)
    s = _sigmoid_neg_abs(p.e)
    u = p.slope * (1 - s) + (1 - p.slope) * s
    at = _plain_alpha_t(a, z)
    # bce = c |x| + log1p(e), infinite at an infinite logit unless c = 0.
    bce = jnp.where(jnp.isinf(x) & (p.slope > 0), jnp.inf, p.log1p_e - p.slope * p.minus_abs)
    out = at * bce
    for _ in range(n):
        out = u * out
    return jnp.where(at == 0, jnp.zeros_like(out), out)


def _logits_grad_power(x: Array, z: Array, n: int, a: Array, out: Array | None = None) -> Array:
    """``d/dx alpha_t u**n bce = alpha_t (n (1 - 2z) u**(n-1) s (1 - s) bce + u**n (p - z))``
    for a static integer ``n``, with ``s = sigmoid(-|x|)`` and ``u = c (1 - s) + q s``.

    No division by ``u`` or ``bce``: every factor is bounded (``u <= 1``, ``s (1 - s) bce``
    small where ``bce`` is large), so it is finite for every ``x`` (an infinite one is replaced
    by a finite one beyond which ``s = 0``), and so is its own derivative, the Hessian.

    ``out``: the accurate value (the two-float products). Then the result is the ratio form
    ``out (p - z) / bce + out n (1 - 2z) e / ((1 + e) mix)`` (the module docstring's), in which
    the roundings of ``u`` and ``bce`` enter once, not ``n`` times, from the same pieces in the
    same loop. It is added as a correction without a derivative to the closed form, whose
    derivative (the Hessian) stays finite where the ratio's would divide by ``e**2``.
    """
    p = bce_parts(_finite(x), z)
    e, slope = p.e, p.slope
    s = _sigmoid_neg_abs(e)
    pos = _finite(x) >= 0
    u = slope * (1 - s) + (1 - slope) * s
    grad = jnp.where(pos, 1 - z, -z) + jnp.where(pos, -1.0, 1.0) * s  # sigmoid(x) - z
    at = _plain_alpha_t(a, z)
    if n == 0:
        return at * grad
    bce = p.log1p_e - slope * p.minus_abs
    dx = u**n * grad + n * (1 - 2 * z) * (1 - s) * s * bce * (u ** (n - 1) if n > 1 else 1)
    dx = at * dx
    if out is None:
        return dx
    mix = slope + jnp.where(pos, z, 1 - z) * e
    # out = 0 wherever bce or mix is (or a term is switched off); an infinite logit keeps the
    # closed form, exact there (s = 0).
    finite = ~jnp.isinf(x)
    kept = jnp.where(finite, out, 0.0)
    # (p - z) / bce is at most about 2 but as small as 1 / |x|, subnormal near the float32
    # maximum, and ``out (p - z)`` underflows where the quotient times ``out`` does not (an
    # agreeing label: ``p - z ~ bce ~ e``): the quotient is taken scaled by 2**64.
    big = float(2.0**64)
    over_bce = (grad * big) / jnp.where(bce > 0, bce, 1.0)
    over_mix = s / jnp.where(mix > 0, mix, 1.0)  # s (1 - s) / u, in [0, 2]
    ratio = (kept * over_bce) * (1 / big) + kept * (n * (1 - 2 * z) * over_mix)
    return dx + jax.lax.stop_gradient(jnp.where(finite, ratio - dx, 0.0))


def _value_plain(x: Array, z: Array, g: Array, a: Array) -> Array:
    """``alpha_t u**gamma bce`` in the dtype (float64): ``exp(gamma log u)`` times the stable
    bce; 0 where ``alpha_t = 0`` even if the rest is infinite."""
    p = _Pieces(_finite(x), z)
    core = jnp.exp(g * p.log_u) * loss_value(x, z)
    core = jnp.where(jnp.isinf(x) & (p.slope > 0), jnp.inf, core)
    return absorbing_mul(_plain_alpha_t(a, z), core)


def _at_most_bce(out: Array, x: Array, z: Array, g: Array, a: Array) -> Array:
    """For ``alpha`` in [0, 1] (or no class balance, ``a < 0``) the loss is at most the core's
    bce as computed, and equal to it where ``alpha_t = 1`` at ``gamma = 0``.

    ``(1 - p_t)**gamma <= 1``, so this changes only where ``u**gamma`` is within an ulp or two
    of 1; there the accurate product can round above the core's own (1-2 ulp) value, which
    breaks ``focal <= bce`` (torchvision's test).
    """
    bce = loss_value(x, z)
    # alpha_t = 1 (no balance, or alpha 0 or 1 with a hard label) at gamma 0 is the bce itself.
    unit = (a < 0) | (_plain_alpha_t(a, z) == 1)
    return jnp.where(unit & (g == 0), bce, jnp.where(a <= 1, jnp.minimum(out, bce), out))


def _plain_alpha_t(a: Array, z: Array) -> Array:
    return jnp.where(a < 0, jnp.ones_like(a), a * z + (1 - a) * (1 - z))


@partial(jax.custom_jvp, nondiff_argnums=(4, 5, 6, 7))
def _focal_core(
    x: Array,
    z: Array,
    g: Array,
    a: Array,
    balanced: bool,
    power: int | None,
    plain: bool,
    factors: bool,
) -> tuple[Array, Array, Array]:
    """``alpha_t (1 - p_t)**gamma bce`` elementwise (``a < 0``: ``alpha_t = 1``); arguments of
    one shape, in the compute dtype. With ``factors`` (else zeros), also ``u**gamma`` and
    ``u**gamma bce / mix`` from the two-float pairs: values for the label gradient's correction,
    computed only where it is taken.

    One function for the balanced loss, so that the value and the gradient both read its output
    (with ``alpha_t`` applied after it, XLA:CPU copied the two-float program into both loops).
    ``power``: ``gamma`` as a static integer in [0, MAX_POWER] (``g`` holds the same value), or
    None. ``plain``: plain arithmetic in float32 too (the module docstring's table).
    """
    extra: Factors = None
    if _two_float(x, plain):
        if power is None:
            out, extra = _value_f32(x, z, g, a, factors)
        else:
            out, extra = _value_power_f32(x, z, power, a, factors)
    else:  # the plain d/dz needs no accurate factors
        out = _value_plain(x, z, g, a) if power is None else _value_power_plain(x, z, power, a)
    modulator, over_mix = (jnp.zeros_like(out),) * 2 if extra is None else extra
    # ``balanced``: alpha is a static number >= 0, so no element disables the balance and the
    # bce bound (and its second bce program) is not needed.
    return (out if balanced else _at_most_bce(out, x, z, g, a)), modulator, over_mix


def _two_float(x: Array, plain: bool) -> bool:
    return x.dtype == jnp.float32 and not plain


def _focal_core_jvp(balanced, power, plain, factors, primals, tangents):
    x, z, g, a = primals
    tx, tz, tg, ta = tangents
    accurate_dz = _two_float(x, plain) and not isinstance(tz, SymbolicZero)
    out, modulator, over_mix = _focal_core(
        x, z, g, a, balanced, power, plain, factors or accurate_dz
    )
    inf = jnp.isinf(x)
    p = _Pieces(_finite(x), z)
    alpha_t = _plain_alpha_t(a, z)
    finite_out = jnp.where(inf, 0, out)
    zero = jnp.zeros_like(x)
    tangent = zero
    if not isinstance(tx, SymbolicZero) and power is not None:
        # One loop, one exp, no division by u or bce (the general form below has eight); on
        # the two-float value, the ratio form corrects it.
        accurate = out if _two_float(x, plain) else None
        tangent = tangent + _logits_grad_power(x, z, power, a, accurate) * tx
    elif not isinstance(tx, SymbolicZero):
        # At an infinite logit only u**gamma (sigmoid(x) - z) = sign c**gamma * c is left.
        slope = p.slope
        c_pow = jnp.where(slope > 0, jnp.exp(g * jnp.log(jnp.where(slope > 0, slope, 1))), 0)
        # out (sigmoid(x) - z) / bce multiplied before it is divided: the ratio alone is
        # subnormal for |x| near the float32 maximum (0 after flushing).
        dx = jnp.where(
            inf,
            alpha_t * p.sign * c_pow * slope,
            finite_out * (g * (1 - 2 * z) * p.e_over_mix / (1 + p.e))
            + finite_out * p.grad_scaled / p.bce_scaled,
        )
        tangent = tangent + dx * tx
    if not (isinstance(tz, SymbolicZero) and isinstance(ta, SymbolicZero)):
        # u**gamma bce without alpha_t (not out / alpha_t: out can underflow where core does
        # not, and alpha_t can be 0). Only label and alpha gradients pay for this second pass.
        core = _focal_core(x, z, g, jnp.full_like(a, -1.0), False, power, plain, False)[0]
        # d/dalpha_t is core, except where the switched-off term is infinite (then 0, not NaN).
        d_at = jnp.where((alpha_t == 0) & jnp.isinf(core), 0.0, core)
        balanced = ~(a < 0)
        if not isinstance(ta, SymbolicZero):
            tangent = tangent + absorbing_mul(ta, jnp.where(balanced, d_at * (2 * z - 1), 0))
        if not isinstance(tz, SymbolicZero):
            tangent = tangent + absorbing_mul(tz, jnp.where(balanced, d_at * (2 * a - 1), 0))
    if not isinstance(tz, SymbolicZero):
        # gamma D / u * core with D / u = +-expm1(-a) / mix, in logs (core / mix can underflow
        # before the division where the quotient does not), and -x u**gamma.
        # log(core / mix) with log(bce / mix) formed first: both logs are about -|x| for an
        # agreeing label, and gamma log u added to one of them first was absorbed by it.
        expm1 = p.sign * jnp.expm1(p.neg_abs)
        over_mix_plain = jnp.exp(g * p.log_u + (p.log_bce - p.log_mix))
        dz = g * expm1 * over_mix_plain - p.x * jnp.exp(g * p.log_u)
        # The exponentials above cost |exponent| / 2 ulps. The two-float value returns the same
        # two factors from its own pairs; their difference is added without a derivative (the
        # plain form's derivative is the stable one).
        if accurate_dz:
            accurate = g * expm1 * over_mix - p.x * modulator
            # Where the plain form overflows on the way (log(bce) near log(max)), the pairs'.
            fine = jnp.isfinite(dz)
            dz = jnp.where(
                fine,
                dz + jax.lax.stop_gradient(jnp.where(fine, accurate - dz, 0)),
                jax.lax.stop_gradient(accurate),
            )
        dz = jnp.where(inf, jnp.where(p.slope > 0, -x, 0), dz)
        tangent = tangent + absorbing_mul(tz, absorbing_mul(alpha_t, dz))
    if not isinstance(tg, SymbolicZero):
        # out log u; 0 where log u = 0 even if out is infinite (a disagreeing hard label at
        # an infinite logit: the exact limit of u**gamma log(u) bce is 0).
        dg = jnp.where(p.log_u == 0, 0, jnp.where(p.log_u == 0, 1, out) * p.log_u)
        tangent = tangent + absorbing_mul(tg, dg)
    # The factors are values only (each used without a derivative).
    zero = jnp.zeros_like(out)
    factor_values = (modulator, over_mix) if factors else (zero, zero)
    return (out, *factor_values), (tangent, zero, zero)


_focal_core.defjvp(_focal_core_jvp, symbolic_zeros=True)


def sigmoid_focal_loss(
    labels: ArrayLike,
    logits: ArrayLike,
    *,
    alpha: ArrayLike | None = 0.25,
    gamma: ArrayLike = 2.0,
    where: ArrayLike | None = None,
) -> Array:
    r"""Focal loss of Lin et al. (2017) on logits, elementwise.

    .. math::

        \ell = \alpha_t \, (1 - p_t)^{\gamma} \, \mathrm{bce}(z, x), \quad
        p_t = z\sigma(x) + (1 - z)(1 - \sigma(x)), \quad \alpha_t = \alpha z + (1 - \alpha)(1 - z)

    for every ``z`` in [0, 1], as torchvision. float32: within 2 ulp for every ``gamma``; every
    gradient and second derivative is finite at saturation, ``±inf`` and ``0 <= gamma < 1``.

    Args:
      labels: Targets of ``logits``' shape, hard or soft.
      logits: Float logits.
      alpha: Weight of the positive class in [0, 1]; None or negative: no class balance.
      gamma: Focusing exponent, ``>= 0``; a Python integer is raised by products.
      where: Optional bool mask broadcastable to ``logits``; False elements are absent (loss 0,
        zero gradients).

    Returns:
      The elementwise loss, with ``logits``' shape and dtype; never above
      :func:`sigmoid_cross_entropy_with_logits` for ``alpha`` in [0, 1].

    Raises:
      TypeError: integer or bool ``logits``, or a non-bool ``where``.
      ValueError: shape mismatch, a None label/logit, or a negative static ``gamma``.

    Examples:
      >>> import jax.numpy as jnp, sigmoid_xent as sx
      >>> sx.sigmoid_focal_loss(jnp.array([1., 0.]), jnp.array([2., 2.]))
      Array([4.5089072e-04, 1.2375586e+00], dtype=float32)

    References:
      Lin et al., "Focal Loss for Dense Object Detection", 2017.
    """
    return _checked_focal(labels, logits, alpha, gamma, where, "sigmoid_focal_loss", plain=False)


def plain_focal_loss(
    labels: ArrayLike,
    logits: ArrayLike,
    *,
    alpha: ArrayLike | None = 0.25,
    gamma: ArrayLike = 2.0,
    where: ArrayLike | None = None,
) -> Array:
    r""":func:`sigmoid_focal_loss` in plain float32 arithmetic, for losses reduced next.

    For the Keras class, whose per-sample mean reduces it at once.

    For ``gamma`` a Python integer from 0 to 8, ``(1 - p_t)**gamma`` is a product of
    ``1 - p_t`` formed without cancellation, and the gradient a closed form without division:
    finite exactly where :func:`sigmoid_focal_loss` is, a few float32 ulps less accurate
    elementwise, at under half the cost. Any other ``gamma``, and float64 inputs, are computed
    as :func:`sigmoid_focal_loss` computes them.

    Args:
      labels: Targets of ``logits``' shape, hard or soft.
      logits: Float logits.
      alpha: As :func:`sigmoid_focal_loss`.
      gamma: As :func:`sigmoid_focal_loss`.
      where: As :func:`sigmoid_focal_loss`.

    Returns:
      The elementwise loss, with ``logits``' shape and dtype.

    Raises:
      TypeError: integer or bool ``logits``.
      ValueError: shape mismatch, a None label/logit, or a negative static ``gamma``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from sigmoid_xent.focal import plain_focal_loss
      >>> plain_focal_loss(jnp.array([1., 0.]), jnp.array([2., 2.]))
      Array([4.5089060e-04, 1.2375586e+00], dtype=float32)
    """
    return _checked_focal(labels, logits, alpha, gamma, where, "plain_focal_loss", plain=True)


def _checked_focal(
    labels: ArrayLike,
    logits: ArrayLike,
    alpha: ArrayLike | None,
    gamma: ArrayLike,
    where: ArrayLike | None,
    fn: str,
    plain: bool,
) -> Array:
    z, x = check_labels_logits(labels, logits, fn)
    mask = _checks.where_mask(where, x.shape, fn)
    cd = _checks.compute_dtype(x.dtype)
    g_static = _checks.static_scalar(gamma)
    if g_static is not None and g_static < 0:
        raise ValueError(f"{fn}: `gamma` must be >= 0, got {gamma}.")
    g = _checks.as_float(gamma, cd, "gamma", fn)
    _checks.broadcastable_to(g, x.shape, "gamma", fn, target="logits")
    a = None
    a_static = None if alpha is None else _checks.static_scalar(alpha)
    # A static alpha away from 0 and 1 keeps alpha_t below 1 by far more than the roundings, so
    # the value needs no bound by the bce (and its second program); at 0 or 1 it does.
    balanced = a_static is not None and _ALPHA_MARGIN <= a_static <= 1 - _ALPHA_MARGIN
    # A static integer gamma is raised by products (2 is every peer's default).
    power = None
    if g_static is not None and g_static.is_integer() and g_static <= MAX_POWER:
        power = int(g_static)
    if alpha is not None:
        a = _checks.as_float(alpha, cd, "alpha", fn)
        _checks.broadcastable_to(a, x.shape, "alpha", fn, target="logits")
    plain = plain and power is not None
    return _focal(x, z, g, a, mask, balanced=balanced, power=power, plain=plain)


_ALPHA_MARGIN = 2.0**-20


# The checks above run in Python; the loss is one compiled program per signature, so an eager
# call dispatches once (and inside a caller's jit it is inlined).
@partial(jax.jit, static_argnames=("balanced", "power", "plain"))
def _focal(
    x: Array,
    z: Array,
    gamma: Array,
    alpha: Array | None,
    mask: Array | None = None,
    balanced: bool = False,
    power: int | None = None,
    plain: bool = False,
) -> Array:
    cd = _checks.compute_dtype(x.dtype)
    xc, zc = hide(mask, x).astype(cd), hide(mask, z).astype(cd)
    g = jnp.broadcast_to(gamma.astype(cd), xc.shape)
    if alpha is None:
        a = jnp.full_like(xc, -1.0)
    else:
        # `a < 0` (not `a >= 0`) disables the balance, so that a NaN alpha propagates.
        a = jnp.broadcast_to(alpha.astype(cd), xc.shape)
    # A 16-bit result is rounded to 8 or 11 bits: the float32 plain value's few ulps vanish.
    plain = plain or jnp.dtype(x.dtype).itemsize < 4
    out = _focal_core(xc, zc, g, a, balanced, power, plain, False)[0]
    return keep(mask, out).astype(x.dtype)
