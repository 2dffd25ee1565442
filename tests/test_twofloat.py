"""The float32 two-float primitives behind the focal loss, against longdouble references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sigmoid_xent import _twofloat as twofloat

LD = np.longdouble
RNG = np.random.default_rng(7)
N = 1 << 14


def _pair_value(p) -> np.ndarray:
    return LD(np.asarray(p[0])) + LD(np.asarray(p[1]))


def test_two_sum_and_two_prod_are_exact_under_jit():
    a = (RNG.standard_normal(N) * np.exp(RNG.uniform(-30, 30, N))).astype(np.float32)
    b = (RNG.standard_normal(N) * np.exp(RNG.uniform(-30, 30, N))).astype(np.float32)
    s = jax.jit(twofloat.two_sum)(a, b)
    assert np.all(_pair_value(s) == LD(a) + LD(b))
    p = jax.jit(twofloat.two_prod)(a, b)
    assert np.all(_pair_value(p) == LD(a) * LD(b))


def test_two_sum_with_a_constant_is_not_folded_by_xla():
    """XLA folds (1 + r) - 1 to r; opaque(1.0) keeps the error term."""
    r = np.float32(2.0**-30) * np.arange(1, 9, dtype=np.float32)
    s = jax.jit(lambda r: twofloat.two_sum(twofloat.opaque(1.0), r))(r)
    assert np.all(_pair_value(s) == 1 + LD(r))
    assert np.all(np.asarray(s[1]) != 0)


def test_exp_and_log_relative_accuracy():
    yh = RNG.uniform(-60, 80, N).astype(np.float32)  # results above 2**-86: no flushed lo
    yl = (yh * RNG.uniform(-(2**-25), 2**-25, N)).astype(np.float32)
    h, lo, k = jax.jit(twofloat.exp_unscaled)((yh, yl))
    got = _pair_value((h, lo)) * np.exp2(np.asarray(k).astype(LD))
    assert np.max(np.abs(got / np.exp(LD(yh) + LD(yl)) - 1)) < 2.0**-27
    xh = np.exp(RNG.uniform(-60, 80, N)).astype(np.float32)
    xl = (xh * RNG.uniform(-(2**-25), 2**-25, N)).astype(np.float32)
    got = _pair_value(jax.jit(twofloat.log)((xh, xl)))
    assert np.max(np.abs(got - np.log(LD(xh) + LD(xl)))) < 2.0**-28


def test_exp_neg_and_log1p_unit_keep_relative_accuracy():
    a = RNG.uniform(0, 60, N).astype(np.float32)  # e above 2**-87: no flushed lo
    e = jax.jit(twofloat.exp_neg)(a)
    assert np.max(np.abs(_pair_value(e) / np.exp(-LD(a)) - 1)) < 2.0**-26
    got = _pair_value(jax.jit(twofloat.log1p_unit)(e))
    assert np.max(np.abs(got / np.log1p(_pair_value(e)) - 1)) < 2.0**-27


def test_log1p_unit_of_a_tiny_argument():
    # Below 2**-20 (down to the smallest normal), where the general reduction's residuals would
    # be flushed: x - x**2 / 2.
    xh = np.exp2(RNG.uniform(-126, -20, N)).astype(np.float32)
    got = _pair_value(jax.jit(twofloat.log1p_unit)((xh, np.zeros_like(xh))))
    assert np.max(np.abs(got / np.log1p(LD(xh)) - 1)) < 2.0**-40


def test_exp_and_log_specials():
    y = jnp.array([jnp.inf, -jnp.inf, jnp.nan, 300.0, -300.0, 1.0], jnp.float32)
    out = np.asarray(twofloat.exp((y, jnp.zeros_like(y)))[0])
    np.testing.assert_array_equal(out[[0, 1, 3, 4]], [np.inf, 0, np.inf, 0])
    assert np.isnan(out[2])
    np.testing.assert_allclose(out[5], np.e, rtol=1e-7)
    x = jnp.array([0.0, jnp.inf, -1.0, jnp.nan], jnp.float32)
    out = np.asarray(twofloat.log((x, jnp.zeros_like(x)))[0])
    np.testing.assert_array_equal(out[:2], [-np.inf, np.inf])
    assert np.all(np.isnan(out[2:]))


def test_div_relative_accuracy_over_the_exponent_range():
    # Divisors in [2**-40, 2**60], quotients in [2**-50, 2**60]: dividends above 2**-90 (below
    # about 2**-100 an error term is itself subnormal, and XLA:CPU flushes it).
    yh = np.exp2(RNG.uniform(-40, 60, N)).astype(np.float32)
    xh = (yh * np.exp2(RNG.uniform(-50, 60, N))).astype(np.float32)
    xl = (xh * RNG.uniform(-(2**-25), 2**-25, N)).astype(np.float32)
    yl = (yh * RNG.uniform(-(2**-25), 2**-25, N)).astype(np.float32)
    got = _pair_value(jax.jit(twofloat.div)((xh, xl), (yh, yl)))
    want = (LD(xh) + LD(xl)) / (LD(yh) + LD(yl))
    assert np.max(np.abs(got / want - 1)) < 2.0**-40
