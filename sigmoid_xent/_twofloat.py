"""Two-float arithmetic in float32: a value carried as an unevaluated sum ``hi + lo``.

Pairs of float32 (about 44 significant bits) let the focal loss raise ``1 - p_t`` to the power
``gamma`` and round once at the end, in float32 arithmetic on every backend (a plain
``(1 - p_t)**gamma`` multiplies every relative error of ``1 - p_t`` by ``gamma``).

The building blocks are the error-free transformations of Knuth (``two_sum``) and Dekker
(``two_prod``, with the split done by masking mantissa bits, so that it cannot overflow and no
compiler rewrite can undo it), then ``exp`` and ``log`` on pairs by the usual argument reduction.
Only float32 is handled. Subnormals may be flushed by the backend, so results below
``finfo(float32).tiny`` may come back as 0; for a product below about 2**-100 the partial
products of its error term are near or below ``tiny``, and where XLA flushes some of them and
not others the error term is wrong (measured: up to 2**-14 relative, on ``two_prod`` alone).
The functions slice bits, so they have no useful derivative: callers give them a custom JVP.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Pair = tuple[Array, Array]

F32 = jnp.float32
# ln 2 = LN2_HI + LN2_LO; LN2_HI has 15 significant bits, so k * LN2_HI is exact for |k| < 512.
LN2_HI = np.float32(0.693145751953125)
LN2_LO = np.float32(1.4286068203094172e-06)
INV_LN2 = np.float32(1.4426950408889634)
_SQRT2 = np.float32(1.4142135)


def opaque(c: float) -> Array:
    """The float32 scalar ``c`` hidden from XLA's simplifier.

    XLA folds ``(c + r) - c`` to ``r`` when ``c`` is a constant, which zeroes the error term of
    ``two_sum(c, r)``; a scalar behind an optimization barrier is not a constant to it (and costs
    nothing per element).
    """
    return jax.lax.optimization_barrier(jnp.float32(c))


def select(cond: Array, x: Pair, y: Pair) -> Pair:
    """``x`` where ``cond``, else ``y``, part by part."""
    return jnp.where(cond, x[0], y[0]), jnp.where(cond, x[1], y[1])


def two_sum(a: Array, b: Array) -> Pair:
    """``a + b`` as ``(s, err)`` with ``s = fl(a + b)`` and ``s + err == a + b`` exactly."""
    s = a + b
    bb = s - a
    err = (a - (s - bb)) + (b - bb)
    return s, err


def fast_two_sum(a: Array, b: Array) -> Pair:
    """``two_sum`` for ``|a| >= |b|`` (or ``a == 0``): three operations."""
    s = a + b
    return s, b - (s - a)


def _split(a: Array) -> Pair:
    """``a = hi + lo`` with ``hi`` the top 12 mantissa bits (a bit mask), ``lo`` the rest."""
    bits = jax.lax.bitcast_convert_type(a, jnp.uint32)
    hi = jax.lax.bitcast_convert_type(bits & np.uint32(0xFFFFF000), F32)
    return hi, a - hi


def two_prod(a: Array, b: Array) -> Pair:
    """``a * b`` as ``(p, err)`` with ``p + err == a * b`` exactly (no overflow in between)."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    err = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    # a * b overflowing or infinite: no error term (it would be inf - inf).
    return p, jnp.where(jnp.isfinite(p), err, jnp.zeros_like(err))


def add(x: Pair, y: Pair) -> Pair:
    """Pair + pair, accurate to about 2**-44 relative of the larger operand; finite operands and
    sum only (no guard: a select shared by both parts would split XLA:CPU's loop)."""
    s, e = two_sum(x[0], y[0])
    return fast_two_sum(s, e + (x[1] + y[1]))


def mul(x: Pair, y: Pair, product: Callable[[Array, Array], Pair] = two_prod) -> Pair:
    """Pair * pair (``product`` forms the exact product of the high parts)."""
    p, e = product(x[0], y[0])
    return fast_two_sum(p, e + (x[0] * y[1] + x[1] * y[0]))


def mul1(x: Pair, b: Array, product: Callable[[Array, Array], Pair] = two_prod) -> Pair:
    """Pair * float (``product`` forms the exact product of the high part and ``b``)."""
    p, e = product(x[0], b)
    return fast_two_sum(p, e + x[1] * b)


def _pow2(k: Array) -> Array:
    """``2.0**k`` for integer-valued float ``k`` in [-126, 127], built from its exponent bits."""
    ki = k.astype(jnp.int32) + 127
    return jax.lax.bitcast_convert_type(ki << 23, F32)


def scale(x: Array, k: Array) -> Array:
    """``x * 2**k`` for integer-valued ``k`` in [-252, 254], in two exact steps."""
    k1 = jnp.floor(k * 0.5)
    return x * _pow2(k1) * _pow2(k - k1)


def exp_parts(y: Pair, lowest: float, highest: float) -> tuple[Array, Array, Array, Array, Array]:
    """:func:`exp_unscaled` guarded: ``(hi, lo, k, special, use_special)``.

    Where ``y[0]`` is NaN or outside [``lowest``, ``highest``] (within +-350), ``use_special`` is
    set and ``special`` is the result (NaN, 0 below, inf above); ``hi, lo, k`` there are those of
    0.
    """
    yh = y[0]
    big, small = yh > highest, yh < lowest
    use_special = big | small | jnp.isnan(yh)
    zero = jnp.zeros_like(yh)
    hi, lo, k = exp_unscaled((jnp.where(use_special, zero, yh), jnp.where(use_special, zero, y[1])))
    special = jnp.where(big, jnp.inf, jnp.where(small, 0.0, yh)).astype(F32)
    return hi, lo, k, special, use_special


def log(x: Pair) -> Pair:
    """``log(x)`` for a positive pair with a normal ``hi``; ``-inf`` at 0, ``inf`` at ``inf``.

    ``x = 2**k * m`` with ``m`` in [0.707, 1.414) (exponent bits), then
    ``log(m) = 2 atanh(s) = 2 s + 2 s**3 Q(s**2)`` with ``s = (m - 1) / (m + 1)`` as a pair
    (``|s| <= 0.172``; a Newton reciprocal, :func:`recip`, and the exact residual) and ``Q``
    in float32 (its terms are below 2**-8 of the result). No exponential: a Newton step on
    ``exp`` cost twice as much.
    """
    xh, xl = x
    ok = (xh > 0) & jnp.isfinite(xh)
    bits = jax.lax.bitcast_convert_type(jnp.where(ok, xh, jnp.ones_like(xh)), jnp.int32)
    k = ((bits >> 23) & 0xFF).astype(F32) - 127.0
    m = jax.lax.bitcast_convert_type((bits & 0x007FFFFF) | 0x3F800000, F32)  # [1, 2)
    big = m > _SQRT2
    m = jnp.where(big, m * 0.5, m)
    k = jnp.where(big, k + 1.0, k)
    # One power of two: -k >= -126 for hi < 2**127; above, 2**-127 is 0, which drops an xl
    # below 2**-24 hi (an error below 2**-30 of the result, about 88).
    ml = jnp.where(ok, xl, jnp.zeros_like(xl)) * _pow2(jnp.maximum(-k, -127.0))
    num = m - 1.0  # exact (m in [0.5, 2])
    den, den_l = fast_two_sum(opaque(1.0), m)  # exact: m < 2 has no higher exponent than 1
    den_l = den_l + ml
    inv = recip(den, 1.70, 2.42)  # den in [1.707, 2.414]
    # s = sh + sl with sh the top 12 bits of the quotient, so that sh * den is two exact
    # products: the residual is exact whether or not XLA contracts it into an FMA.
    sh = _split(num * inv)[0]
    dh, dl = _split(den)
    sl = (((num - sh * dh) - sh * dl) + (ml - sh * den_l)) * inv
    s = sh + sl
    s2 = s * s
    q = jnp.full_like(sh, 2 / 11)
    for c in (2 / 9, 2 / 7, 2 / 5, 2 / 3):
        q = q * s2 + np.float32(c)
    hi, lo = fast_two_sum(k * LN2_HI, 2.0 * sh)  # |2 sh| <= 0.35 < ln 2, or k = 0
    hi, lo = fast_two_sum(hi, lo + (k * LN2_LO + 2.0 * sl + s * s2 * q))
    special = jnp.where(xh == 0, -jnp.inf, jnp.where(xh > 0, xh, jnp.nan)).astype(F32)
    return jnp.where(ok, hi, special), jnp.where(ok, lo, jnp.zeros_like(lo))


def exponent(x: Array) -> Array:
    """The binary exponent ``k`` of a normal positive float32 ``x`` (``x / 2**k`` in [1, 2))."""
    bits = jax.lax.bitcast_convert_type(x, jnp.int32)
    return ((bits >> 23) & 0xFF).astype(F32) - 127.0


def exp(y: Pair) -> Pair:
    """``exp(y)`` as a pair; ``inf`` above float32's range, 0 below it, NaN for NaN."""
    hi, lo, k, special, use_special = exp_parts(y, -104.0, float(np.float32(88.72283)))
    hi, lo = scale(hi, k), scale(lo, k)
    return jnp.where(use_special, special, hi), jnp.where(use_special, jnp.zeros_like(lo), lo)


def exp_neg(a: Array) -> Pair:
    """``exp(-a)`` as a pair for finite ``a >= 0``; 0 for ``a >= 88`` (below float32's normals).

    No guard logic: ``k = round(a / ln 2)`` is at most 127, where :func:`_pow2` gives 0.
    """
    am = jnp.minimum(a, np.float32(88.0))
    k = jnp.round(am * INV_LN2)
    r = k * LN2_HI - am  # exact: |k| < 512
    rl = k * LN2_LO
    hi, lo = _exp_reduced(r, rl)
    p = _pow2(-k)
    return hi * p, lo * p


def _exp_reduced(r: Array, rl: Array) -> Pair:
    """``exp(r + rl)`` as a pair for ``|r| <= 0.35``, ``|rl| <= 2**-11``, to about 2**-28:
    ``1 + r + r**2 / 2`` as pairs, ``r**3 t(r)`` and ``rl exp(r)`` in float32."""
    t = jnp.full_like(r, 1 / 362880)
    for c in (1 / 40320, 1 / 5040, 1 / 720, 1 / 120, 1 / 24, 1 / 6):
        t = t * r + np.float32(c)
    sq_h, sq_l = two_prod_finite(r, r)
    tail = sq_h * r * t
    s1, e1 = fast_two_sum(opaque(1.0), r)
    s2, e2 = fast_two_sum(s1, 0.5 * sq_h)  # s1 >= 0.65 > r**2 / 2
    quad = 0.5 * sq_h + tail  # expm1(r) - r, in float32
    lo = (e1 + e2) + (0.5 * sq_l + tail + rl * (1.0 + (r + quad)))
    return fast_two_sum(s2, lo)


def exp_unscaled(y: Pair) -> tuple[Array, Array, Array]:
    """``exp(y) = (hi + lo) 2**k`` for finite ``y`` with ``|y[0]| < 350``; no guards."""
    yh, yl = y
    k = jnp.round(yh * INV_LN2)
    r, rl = fast_two_sum(yh - k * LN2_HI, yl - k * LN2_LO)
    hi, lo = _exp_reduced(r, rl)
    return hi, lo, k


def log1p_unit(x: Pair) -> Pair:
    """``log(1 + x)`` for a pair ``x`` in [0, 1], to about 2**-28 relative, without the
    exponent-bits reduction of :func:`log`: ``k ln 2 + 2 atanh(s)`` with ``k = 0``,
    ``s = x / (2 + x)`` for ``x <= sqrt(2) - 1`` and ``k = 1``, ``s = (x - 1) / (x + 3)`` above,
    so ``|s| <= 0.172``; ``s`` as a pair (:func:`recip`, no division), the odd series to
    ``s**13`` in float32 (its terms are below 2**-8 of ``2 s``; the next is 2**-37 of it);
    ``x - x**2 / 2`` below 2**-20."""
    xh, xl = x
    big = xh > np.float32(0.41421357)
    one = opaque(1.0)
    nh, nl = fast_two_sum(-one, xh)
    nh = jnp.where(big, nh, xh)
    nl = jnp.where(big, nl + xl, xl)
    c = jnp.where(big, opaque(3.0), opaque(2.0))
    den, den_l = fast_two_sum(c, xh)
    den_l = den_l + xl
    y = (jnp.where(big, np.float32(7.4142137), np.float32(4.4142137)) - den) * jnp.where(
        big, np.float32(1 / (3.4142137 * 4)), np.float32(1 / (2 * 2.4142137))
    )
    for _ in range(2):  # 0.0089 -> 8e-5 -> 6e-9: sl's error below 2**-39 of s
        y = y + y * (1.0 - den * y)
    sh = _split(nh * y)[0]
    dh, dl = _split(den)
    sl = (((nh - sh * dh) - sh * dl) + (nl - sh * den_l)) * y
    s = sh + sl
    s2 = s * s
    q = jnp.full_like(xh, 2 / 13)
    for coef in (2 / 11, 2 / 9, 2 / 7, 2 / 5, 2 / 3):
        q = q * s2 + np.float32(coef)
    k = jnp.where(big, np.float32(1.0), np.float32(0.0))
    hi, lo = fast_two_sum(k * LN2_HI, 2.0 * sh)
    hi, lo = fast_two_sum(hi, lo + (k * LN2_LO + 2.0 * sl + s * s2 * q))
    # Below 2**-20, x - x**2 / 2 (the next term is below 2**-40 of it): the residuals above are
    # 2**-12 of x, flushed to 0 for x under about 2**-114.
    tiny = xh < np.float32(2.0**-20)
    return select(tiny, fast_two_sum(xh, xl - 0.5 * xh * xh), (hi, lo))


def recip(d: Array, lo: float, hi: float) -> Array:
    """``1 / d`` for ``d`` in [``lo``, ``hi``] (``0 < lo``, ``hi / lo <= 2``): a linear first
    guess (relative error ``(hi - lo)**2 / (4 lo hi)``) and three Newton steps, each squaring
    the error: to about 2**-36 for ``hi / lo <= 1.5``, 2**-24 (float32's own precision) for 2,
    enough for the first part of a pair quotient, whose exact residual corrects it.

    Multiplications only: XLA:CPU will not fuse a divide into several users, and the pair
    quotients here use their reciprocal twice, so a division split the loop in two.
    """
    y = (np.float32(lo + hi) - d) * np.float32(1.0 / (lo * hi))
    for _ in range(3):
        y = y + y * (1.0 - d * y)
    return y


def two_prod_finite(a: Array, b: Array) -> Pair:
    """:func:`two_prod` for operands whose product cannot overflow (no guard)."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def mul_finite(x: Pair, y: Pair) -> Pair:
    """:func:`mul` for operands whose product cannot overflow (no guard)."""
    return mul(x, y, two_prod_finite)


def mul1_finite(x: Pair, b: Array) -> Pair:
    """:func:`mul1` for operands whose product cannot overflow (no guard)."""
    return mul1(x, b, two_prod_finite)


def quotient(x: Pair, d: Pair, inv: Array) -> Pair:
    """``x / d`` as a pair from ``inv``, ``1 / d[0]`` to about float32 precision
    (:func:`recip`): the float32 quotient and its exact residual (:func:`two_prod_finite`, whose
    split truncates, so it cannot overflow where the quotient does not). No division."""
    q = x[0] * inv
    p, e = two_prod_finite(q, d[0])
    return fast_two_sum(q, (((x[0] - p) - e) + (x[1] - q * d[1])) * inv)


def div(x: Pair, y: Pair) -> Pair:
    """``x / y`` for pairs with a normal positive ``y[0]``, a finite ``x`` and a finite quotient:
    ``y = m 2**k`` with ``m`` in [1, 2) (exponent bits), then :func:`quotient` by ``m`` with
    ``1 / m`` from :func:`recip`."""
    k = exponent(y[0])
    m = scale(y[0], -k), scale(y[1], -k)
    qh, ql = quotient(x, m, recip(m[0], 1.0, 2.0))
    return scale(qh, -k), scale(ql, -k)


def power(m: Pair, n: int) -> Pair:
    """``m**n`` for a pair ``m`` (``|m| <= 1``, so no product overflows) and a static ``n >= 1``,
    by squaring."""
    result = None
    while n:
        if n & 1:
            result = m if result is None else mul_finite(result, m)
        n >>= 1
        if n:
            m = mul_finite(m, m)
    assert result is not None
    return result
