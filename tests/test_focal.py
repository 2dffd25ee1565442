"""The focal loss: values against torchvision/Keras and mpmath, the bound over the float32 range,
agreement with the core at gamma 0, zero-weight gradients, strict modes and debug_nans."""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from conftest import ref_loss, ref_sigmoid, ulp_distance, x64
from test_robustness import LD, both, hard, ld, r_focal, representable, ulp_err

import sigmoid_xent as sx
from sigmoid_xent.focal import MAX_POWER, plain_focal_loss

sce = sx.sigmoid_cross_entropy_with_logits
INF = np.inf
F32_MAX = float(np.finfo(np.float32).max)

# Logits over the whole float32 range (both signs, subnormal to max), and a dense [-60, 60].
WIDE_X = np.concatenate(
    [-np.logspace(-40, 38.5, 400), [-0.0, 0.0], np.logspace(-40, 38.5, 400), [F32_MAX, -F32_MAX]]
).astype(np.float32)
DENSE_X = np.linspace(-60, 60, 1 << 15).astype(np.float32)


def ref_focal(z, x, alpha, gamma):
    p = ref_sigmoid(x)
    p_t = z * p + (1 - z) * (1 - p)
    a_t = 1.0 if alpha is None or alpha < 0 else alpha * z + (1 - alpha) * (1 - z)
    return a_t * (1 - p_t) ** gamma * ref_loss(z, x)


@pytest.mark.parametrize("alpha", [0.25, 0.8, None, -1.0])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 3.5])
def test_focal_matches_torchvision_formula(alpha, gamma):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=64) * 6).astype(np.float32)
    z = np.concatenate([rng.integers(0, 2, 32), rng.uniform(size=32)]).astype(np.float32)
    out = sx.sigmoid_focal_loss(z, x, alpha, gamma)
    np.testing.assert_allclose(out, ref_focal(z, x, alpha, gamma), rtol=2e-5, atol=1e-30)


def test_focal_matches_keras_documentation():
    # keras.losses.BinaryFocalCrossentropy(gamma=2, from_logits=True) docs: 0.691, and with
    # apply_class_balancing=True (alpha=0.25): 0.51.
    z = jnp.array([0.0, 1.0, 0.0, 0.0])
    x = jnp.array([-18.6, 0.51, 2.94, -12.8])
    np.testing.assert_allclose(sx.sigmoid_focal_loss(z, x, None, 2.0).mean(), 0.691, atol=5e-4)
    np.testing.assert_allclose(sx.sigmoid_focal_loss(z, x, 0.25, 2.0).mean(), 0.51, atol=5e-3)


def test_focal_gamma_zero_is_alpha_t_times_bce():
    x = jnp.linspace(-50, 50, 101)
    z = (jnp.arange(101) % 3 / 2).astype(jnp.float32)
    a_t = 0.25 * z + 0.75 * (1 - z)
    np.testing.assert_allclose(sx.sigmoid_focal_loss(z, x, 0.25, 0.0), a_t * sce(z, x), rtol=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 0.1, 0.5, 2.0])
def test_focal_gradients_finite_at_saturation(gamma):
    x = jnp.array([-INF, -1e30, -200.0, -90.0, -30.0, 0.0, 30.0, 90.0, 200.0, 1e30, INF])
    # Compiled once for the three labels (a new lambda per label recompiles).
    grad_x = jax.jit(jax.grad(lambda x, z: sx.sigmoid_focal_loss(z, x, 0.25, gamma).sum()))
    grad_z = jax.jit(jax.grad(lambda z, x: sx.sigmoid_focal_loss(z, x, 0.25, gamma).sum()))
    for label in (0.0, 1.0, 0.3):
        z = jnp.full_like(x, label)
        g = grad_x(x, z)
        assert np.all(np.isfinite(g)), (gamma, label, g)
        gz = grad_z(z[1:-1], x[1:-1])
        assert np.all(np.isfinite(gz)), (gamma, label, gz)
    # Where the label agrees and the loss underflows, the gradient is 0, not NaN.
    g = jax.grad(lambda x: sx.sigmoid_focal_loss(jnp.ones(2), x, 0.25, gamma).sum())(
        jnp.array([200.0, INF])
    )
    np.testing.assert_array_equal(g, [0.0, 0.0])


@pytest.mark.parametrize("x", [5.0, 40.0])
def test_focal_derivatives_match_mpmath_at_saturation(x):
    # Finite differences cannot resolve (1 - p_t)**0.5 near a hard label; mpmath can.
    mpmath.mp.dps = 50

    def exact(z, x):
        s = 1 / (1 + mpmath.exp(-x))
        u = z * (1 - s) + (1 - z) * s
        bce = -(z * mpmath.log(s) + (1 - z) * mpmath.log(1 - s))
        return (0.25 * z + 0.75 * (1 - z)) * u**0.5 * bce

    with x64():
        f = lambda z, x: sx.sigmoid_focal_loss(z, x, 0.25, 0.5)  # noqa: E731
        z0, x0 = jnp.float64(1.0), jnp.float64(x)
        gz, gx = jax.jit(jax.grad(f, argnums=(0, 1)))(z0, x0)
        hzz = jax.jit(jax.hessian(f, argnums=0))(z0, x0)
        hxx = jax.jit(jax.hessian(f, argnums=1))(z0, x0)
    np.testing.assert_allclose(gz, float(mpmath.diff(lambda z: exact(z, x), 1)), rtol=1e-12)
    np.testing.assert_allclose(gx, float(mpmath.diff(lambda v: exact(1, v), x)), rtol=1e-12)
    np.testing.assert_allclose(hzz, float(mpmath.diff(lambda z: exact(z, x), 1, 2)), rtol=1e-10)
    np.testing.assert_allclose(hxx, float(mpmath.diff(lambda v: exact(1, v), x, 2)), rtol=1e-10)


def test_focal_hessian_finite():
    x = jnp.array([-30.0, -1.0, 0.0, 2.0, 30.0])
    h = jax.jit(jax.hessian(lambda x: sx.sigmoid_focal_loss(jnp.ones(5), x, 0.25, 0.5).sum()))(x)
    assert np.all(np.isfinite(h))


def test_focal_negative_gamma_rejected():
    with pytest.raises(ValueError, match="gamma"):
        sx.sigmoid_focal_loss(jnp.zeros(2), jnp.zeros(2), gamma=-1.0)


# --------------------------------------------------------------------------- accuracy bound


def _focal_ulps(z, x, alpha, gamma):
    """Error of the float32 loss in ulps of the exact value (longdouble), where it is normal."""
    got = np.asarray(jax.jit(sx.sigmoid_focal_loss)(z, x, alpha, gamma))
    a = LD(-1.0) if alpha is None else LD(alpha)
    want = r_focal(ld(z), ld(x), a, ld(np.float32(gamma)))[0]
    normal = (want >= LD(float(np.finfo(np.float32).tiny))) & (want < LD(F32_MAX))
    return np.where(normal, ulp_err(got, want, "float32"), 0.0), normal


@pytest.mark.parametrize("alpha", [0.25, None])
@pytest.mark.parametrize("gamma", [0.5, 2.0, 3.7, 6.0])
def test_focal_within_2_ulp_over_the_float32_range(alpha, gamma):
    """Hard and soft labels, logits from subnormal to the float32 maximum and densely in
    [-60, 60], including where the loss is tiny (agreeing labels: 3e-30 at x = -14.46, z = 0)."""
    x = np.concatenate([WIDE_X, DENSE_X])
    for label in (0.0, 1.0, 0.3, 1e-6, 0.999):
        z = np.full_like(x, label)
        err, normal = _focal_ulps(z, x, alpha, gamma)
        assert normal.sum() > x.size // 4
        assert err.max() <= 2.0, (label, x[np.argmax(err)], err.max())


def test_focal_tiny_loss_region_gamma_3_7():
    """Issue 18's example: x = -14.46, z = 0, gamma 3.7 (3.1e-30 for alpha None)."""
    x = np.linspace(-60, 0, 4001).astype(np.float32)
    for alpha in (0.25, None):
        err, normal = _focal_ulps(np.zeros_like(x), x, alpha, 3.7)
        assert normal[np.abs(x - -14.46) < 0.1].all()
        assert err.max() <= 2.0, (alpha, x[np.argmax(err)], err.max())


# --------------------------------------------------------------------------- gamma 0 and bce


def _grid_inputs():
    rng = np.random.default_rng(15)
    x = np.concatenate([WIDE_X, DENSE_X, (rng.normal(size=1 << 15) * 8).astype(np.float32)])
    hard = rng.integers(0, 2, x.size).astype(np.float32)
    soft = rng.uniform(size=x.size).astype(np.float32)
    return x, hard, soft


def test_focal_gamma_zero_without_balance_is_the_core_loss():
    """torchvision's own test: sigmoid_focal_loss(gamma=0, alpha=None) equals the BCE. Eagerly
    bit for bit; jitted within an ulp and never above (XLA contracts the core's arithmetic into
    FMAs differently in the two programs), static and traced gamma."""
    x, hard, soft = _grid_inputs()
    core_jit = jax.jit(sce)
    for z in (hard, soft):
        np.testing.assert_array_equal(sx.sigmoid_focal_loss(z, x, None, 0.0), sce(z, x))
        core = np.asarray(core_jit(z, x))
        for traced in (
            jax.jit(lambda z, x: sx.sigmoid_focal_loss(z, x, None, 0.0))(z, x),
            jax.jit(sx.sigmoid_focal_loss)(z, x, None, jnp.zeros(())),
        ):
            traced = np.asarray(traced)
            assert np.all(traced <= core)
            assert ulp_distance(traced, core).max() <= 1


@pytest.mark.parametrize("gamma", [1e-6, 0.1, 0.5, 1.0, 2.0, 5.0])
def test_focal_at_most_bce_without_balance(gamma):
    """torchvision: focal <= bce elementwise for gamma >= 0, also where (1 - p_t)**gamma is
    within an ulp of 1 (a disagreeing label at large |x|, or a tiny gamma): eager against eager,
    jitted against jitted (the core itself differs by an ulp between the two)."""
    x, hard, soft = _grid_inputs()
    core_jit = jax.jit(sce)
    focal_jit = jax.jit(sx.sigmoid_focal_loss)
    for z in (hard, soft):
        assert np.all(np.asarray(focal_jit(z, x, None, gamma)) <= np.asarray(core_jit(z, x)))
        eager = np.asarray(sx.sigmoid_focal_loss(z[:4096], x[:4096], None, gamma))
        assert np.all(eager <= np.asarray(sce(z[:4096], x[:4096])))


# --------------------------------------------------------------------------- zero weights


EXTREME_X = [INF, -INF, F32_MAX, -F32_MAX, 3e38, -3e38, 1e30, 200.0]


@pytest.mark.parametrize("jit", [False, True])
def test_zero_weight_gives_zero_gradient_for_every_argument(jit):
    """0 * loss (a zero weight in a weighted mean) has gradient 0, not NaN, w.r.t. labels,
    logits, alpha and gamma, also at infinite logits where the label disagrees."""

    def weighted(z, x, alpha, gamma, w):
        return (w * sx.sigmoid_focal_loss(z, x, alpha, gamma)).sum()

    grad = jax.grad(weighted, argnums=(0, 1, 2, 3))
    grad = jax.jit(grad) if jit else grad
    x = jnp.array(EXTREME_X * 3, jnp.float32)
    z = jnp.array([0.0] * 8 + [1.0] * 8 + [0.3] * 8, jnp.float32)
    for alpha in (0.25, -1.0):
        for gamma in (0.0, 0.5, 2.0):
            w = jnp.zeros_like(x)
            gs = grad(z, x, jnp.float32(alpha), jnp.float32(gamma), w)
            for name, g in zip(("labels", "logits", "alpha", "gamma"), gs, strict=True):
                np.testing.assert_array_equal(g, 0.0, err_msg=f"{name} {alpha} {gamma}")
            # A unit weight keeps the logits gradient finite at the same points.
            gx = grad(z, x, jnp.float32(alpha), jnp.float32(gamma), jnp.ones_like(x))[1]
            assert np.all(np.isfinite(gx)), (alpha, gamma, gx)


def test_zero_weight_in_a_weighted_mean():
    x = jnp.array([INF, -INF, 2.0, -INF], jnp.float32)
    z = jnp.array([0.0, 1.0, 1.0, 0.3], jnp.float32)
    w = jnp.array([0.0, 0.0, 1.0, 0.0], jnp.float32)

    def mean(z, x, alpha, gamma):
        return sx.reduce_loss(sx.sigmoid_focal_loss(z, x, alpha, gamma), w, "mean")

    gs = jax.grad(mean, argnums=(0, 1, 2, 3))(z, x, jnp.float32(0.25), jnp.float32(2.0))
    for g in gs:
        assert np.all(np.isfinite(g)), gs
    off = np.array([0, 1, 3])
    np.testing.assert_array_equal(np.asarray(gs[0])[off], 0.0)
    np.testing.assert_array_equal(np.asarray(gs[1])[off], 0.0)


# --------------------------------------------------------------------------- extremes


@pytest.mark.parametrize("alpha, want", [(0.25, 0.0625), (None, 0.125)])
def test_logits_gradient_near_the_float32_maximum(alpha, want):
    """z = 0.5: 1 - p_t = 1/2, so d/dx = alpha_t (1/2)**2 (sigmoid(x) - 1/2) = 0.0625 at
    alpha 0.25 (was 0 at 3e38: (sigmoid(x) - z) / bce underflowed before the product)."""
    for x in (1e30, 3e38, F32_MAX, INF):
        g = jax.grad(sx.sigmoid_focal_loss, argnums=1)(jnp.float32(0.5), jnp.float32(x), alpha, 2.0)
        np.testing.assert_allclose(g, want, rtol=1e-6, err_msg=str(x))
        g = jax.grad(sx.sigmoid_focal_loss, argnums=1)(
            jnp.float32(0.5), jnp.float32(-x), alpha, 2.0
        )
        np.testing.assert_allclose(g, -want, rtol=1e-6, err_msg=str(-x))


@contextlib.contextmanager
def config(**flags):
    old = {k: getattr(jax.config, k) for k in flags}
    try:
        for k, v in flags.items():
            jax.config.update(k, v)
        yield
    finally:
        for k, v in old.items():
            jax.config.update(k, v)


def _all_gradients(z, x, alpha, gamma):
    def total(z, x, alpha, gamma):
        return sx.sigmoid_focal_loss(z, x, alpha, gamma).sum()

    return jax.value_and_grad(total, argnums=(0, 1, 2, 3))(z, x, alpha, gamma)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
@pytest.mark.parametrize("jit", [False, True])
def test_debug_nans_finds_nothing_on_valid_input(dtype, jit):
    """Values and every gradient at +-inf, the dtype's maximum, 3e38 and ordinary logits, hard
    and soft labels, gamma 0, 0.5 and 2: no NaN anywhere (jax_debug_nans raises on the first
    one, also in a discarded `where` branch), under strict rank and dtype promotion."""
    scope = x64() if dtype == "float64" else contextlib.nullcontext()
    with (
        scope,
        config(
            jax_debug_nans=True,
            jax_numpy_rank_promotion="raise",
            jax_numpy_dtype_promotion="strict",
        ),
    ):
        top = float(jnp.finfo(jnp.dtype(dtype)).max)
        xs = [INF, -INF, top, -top, 3e38, -3e38, 1e30, 45.0, 3.0, 0.0, -0.5, -90.0]
        xs = [v for v in xs if abs(v) <= top or np.isinf(v)]
        # At an infinite logit only agreeing labels: elsewhere d/dz is a sum of two infinite
        # terms (its sign depends on alpha and gamma; NaN today, see benchmarks/README.md).
        pairs = [
            (v, lab)
            for v in xs
            for lab in (0.0, 1.0, 0.3)
            if np.isfinite(v) or lab == (1.0 if v > 0 else 0.0)
        ]
        x = jnp.asarray([v for v, _ in pairs], jnp.dtype(dtype))
        z = jnp.asarray([lab for _, lab in pairs], jnp.dtype(dtype))
        fn = jax.jit(_all_gradients) if jit else _all_gradients
        for alpha in (0.25, -1.0):
            for gamma in (0.0, 0.5, 2.0):
                # Per element: a scalar alpha's gradient sums +inf and -inf terms (NaN, rightly).
                a = jnp.full_like(x, alpha)
                g = jnp.full_like(x, gamma)
                value, grads = fn(z, x, a, g)
                assert not np.isnan(float(value))
                for grad in grads:
                    assert not np.any(np.isnan(np.asarray(grad, np.float32)))


def test_strict_promotion_with_parameters_of_other_dtypes():
    """alpha/gamma as Python floats, float64 numpy scalars or float16 arrays, and per-class
    (last-axis) arrays, under rank_promotion='raise' and dtype_promotion='strict'."""
    x = jnp.linspace(-5, 5, 12, dtype=jnp.float32).reshape(4, 3)
    z = (jnp.arange(12).reshape(4, 3) % 2).astype(jnp.float32)
    want = np.asarray(sx.sigmoid_focal_loss(z, x, 0.25, 2.0))
    with config(jax_numpy_rank_promotion="raise", jax_numpy_dtype_promotion="strict"):
        for alpha, gamma in (
            (0.25, 2.0),
            (np.float64(0.25), np.float64(2.0)),
            (jnp.asarray(0.25, jnp.float16), jnp.asarray(2.0, jnp.bfloat16)),
            (jnp.full((3,), 0.25, jnp.float16), jnp.full((3,), 2.0)),
        ):
            got = sx.sigmoid_focal_loss(z, x, alpha, gamma)
            np.testing.assert_allclose(got, want, rtol=1e-6)
            g = jax.jit(
                jax.grad(lambda x, a=alpha, gm=gamma: sx.sigmoid_focal_loss(z, x, a, gm).sum())
            )(x)
            assert np.all(np.isfinite(g))
        with x64():
            got = sx.sigmoid_focal_loss(z.astype(jnp.float64), x.astype(jnp.float64), 0.25, 2.0)
            assert got.dtype == jnp.float64
            np.testing.assert_allclose(got, want, rtol=1e-6)


# --------------------------------------------------------------------------- integer gamma


def _grid_x():
    """The float32 range (WIDE_X), a coarser dense [-60, 60] and both infinities."""
    return np.concatenate([WIDE_X, DENSE_X[::4], [INF, -INF]]).astype(np.float32)


LABELS = (0.0, 1.0, 0.3, 1e-6, 0.999)


def _focal_errors(fn, alpha, gamma):
    """Worst loss and d/dx errors of ``fn(z, x, alpha, gamma)`` (ulps, test_robustness's
    allowances: the flushed-intermediate floor, d/dx in ulps of its terms' magnitude)."""
    x = _grid_x()
    a = -1.0 if alpha is None else alpha
    value = jax.jit(fn, static_argnums=(2, 3))
    grad = jax.jit(jax.grad(lambda x, z: fn(z, x, alpha, gamma).sum()))
    worst_loss = worst_dx = 0.0
    for label in LABELS:
        z = np.full_like(x, label)
        g = np.full_like(x, gamma)
        loss, dx, *_, scale, _, _ = both(r_focal, "float32", z, x, np.full_like(x, a), g)
        got = np.asarray(value(z, x, alpha, gamma))
        ok = representable(loss[0], "float32") & np.isfinite(x)
        err = np.where(ok, ulp_err(got, loss, "float32"), 0.0)
        worst_loss = max(worst_loss, err.max())
        g = np.asarray(grad(jnp.asarray(x), jnp.asarray(z)))
        assert np.all(np.isfinite(g)), (label, x[~np.isfinite(g)])
        dx_scale = tuple(np.where(hard(z), np.abs(d), s) for d, s in zip(dx, scale, strict=True))
        ok = representable(dx_scale[0], "float32") & representable(dx_scale[1], "float32")
        floor = 4 * (1 + np.abs(ld(x)))
        err = np.where(ok, ulp_err(g, dx, "float32", dx_scale, floor=floor), 0.0)
        worst_dx = max(worst_dx, err.max())
    return worst_loss, worst_dx


@pytest.mark.parametrize("alpha", [0.25, None])
@pytest.mark.parametrize("gamma", [float(n) for n in range(MAX_POWER + 1)])
def test_integer_gamma_keeps_the_bounds(alpha, gamma):
    """A static integer gamma (products instead of the two-float exponential) keeps the loss
    within 2 ulp and d/dx within test_robustness's 6 (its traced-gamma bound)."""
    loss_err, dx_err = _focal_errors(sx.sigmoid_focal_loss, alpha, gamma)
    assert loss_err <= 2.0, loss_err
    assert dx_err <= 6.0, dx_err


def test_integer_gamma_equals_the_real_gamma_path():
    """The products and the two-float exponential agree within an ulp; the gradients are the
    same closed form (the value enters it)."""
    x = jnp.asarray(_grid_x())
    for label in LABELS:
        z = jnp.full_like(x, label)
        for gamma in (1.0, 2.0, 5.0):
            static = sx.sigmoid_focal_loss(z, x, 0.25, gamma)
            traced = jax.jit(sx.sigmoid_focal_loss)(z, x, 0.25, jnp.float32(gamma))
            both_finite = np.isfinite(np.asarray(static)) & np.isfinite(np.asarray(traced))
            assert ulp_distance(np.asarray(static)[both_finite], traced[both_finite]).max() <= 1
            np.testing.assert_array_equal(np.isinf(static), np.isinf(traced))


@pytest.mark.parametrize(("z", "x"), [(1.0, 5.0), (1.0, 40.0), (0.3, -3.0), (0.0, -0.0)])
def test_integer_gamma_derivatives_match_mpmath(z, x):
    """gamma = 2 static (float64): d/dx, d/dz and both second derivatives to 1e-12 / 1e-10."""
    mpmath.mp.dps = 50

    def exact(z, x):
        s = 1 / (1 + mpmath.exp(-x))
        u = z * (1 - s) + (1 - z) * s
        bce = -(z * mpmath.log(s) + (1 - z) * mpmath.log(1 - s))
        return (0.25 * z + 0.75 * (1 - z)) * u**2 * bce

    for fn in (sx.sigmoid_focal_loss, plain_focal_loss):
        with x64():
            f = lambda z, x, fn=fn: fn(z, x, 0.25, 2.0)  # noqa: E731
            z0, x0 = jnp.float64(z), jnp.float64(x)
            gz, gx = jax.jit(jax.grad(f, argnums=(0, 1)))(z0, x0)
            hzz = jax.jit(jax.hessian(f, argnums=0))(z0, x0)
            hxx = jax.jit(jax.hessian(f, argnums=1))(z0, x0)
        np.testing.assert_allclose(gz, float(mpmath.diff(lambda t: exact(t, x), z)), rtol=1e-12)
        np.testing.assert_allclose(gx, float(mpmath.diff(lambda v: exact(z, v), x)), rtol=1e-12)
        want_hzz = float(mpmath.diff(lambda t: exact(t, x), z, 2))
        np.testing.assert_allclose(hzz, want_hzz, rtol=1e-10, atol=1e-300)
        np.testing.assert_allclose(hxx, float(mpmath.diff(lambda v: exact(z, v), x, 2)), rtol=1e-10)


@pytest.mark.parametrize("gamma", [1.0, 2.0, 4.0])
def test_integer_gamma_hessian_finite_at_saturation(gamma):
    x = jnp.array([-INF, -3e38, -200.0, -30.0, -1.0, 0.0, 2.0, 30.0, 200.0, 3e38, INF])
    for fn in (sx.sigmoid_focal_loss, plain_focal_loss):
        hessian = jax.jit(jax.hessian(lambda x, z, fn=fn: fn(z, x, 0.25, gamma).sum()))
        for label in (0.0, 1.0, 0.3):
            h = hessian(x, jnp.full_like(x, label))
            assert np.all(np.isfinite(h)), (fn.__name__, gamma, label, h)


# --------------------------------------------------------------------------- plain_focal_loss

# Measured worst errors of the plain float32 value over _grid_x() and LABELS (loss, d/dx).
PLAIN_BOUNDS = {1.0: (5.3, 6.4), 2.0: (8.5, 8.5), 3.0: (11.4, 11.0), 8.0: (26.7, 27.0)}


@pytest.mark.parametrize("gamma", list(PLAIN_BOUNDS))
def test_plain_focal_loss_bounds(gamma):
    """The plain value: stable and finite where the accurate one is, within the documented
    ulps (the roundings of ``1 - p_t`` reach it ``gamma + 1`` times)."""
    for alpha in (0.25, None):
        loss_err, dx_err = _focal_errors(plain_focal_loss, alpha, gamma)
        want_loss, want_dx = PLAIN_BOUNDS[gamma]
        assert loss_err <= want_loss, (alpha, loss_err)
        assert dx_err <= want_dx, (alpha, dx_err)


def test_plain_focal_loss_mean_over_classes():
    """Reduced next (the Keras classes' per-sample mean over 1024 classes), the plain value's
    mean is as close to the exact mean as the accurate value's: the float32 mean's own
    rounding (1.2-1.7 ulp) is what is left."""
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(256, 1024)) * 6).astype(np.float32)
    for z in ((rng.random(x.shape) < 0.2), rng.random(x.shape)):
        z = z.astype(np.float32)
        for alpha in (0.25, None):
            a = LD(-1.0 if alpha is None else alpha)
            want = r_focal(ld(z), ld(x), a, LD(2.0))[0].mean(-1)
            mean = jax.jit(lambda z, x, f, a=alpha: f(z, x, a, 2.0).mean(-1), static_argnums=2)
            plain = ulp_err(np.asarray(mean(z, x, plain_focal_loss)), want, "float32").max()
            accurate = ulp_err(np.asarray(mean(z, x, sx.sigmoid_focal_loss)), want, "float32")
            assert plain <= max(accurate.max(), 1.5), (alpha, plain, accurate.max())


def test_plain_focal_loss_real_gamma_is_the_accurate_one():
    x = jnp.asarray(_grid_x())
    z = jnp.full_like(x, 0.3)
    for gamma in (0.5, 2.5, jnp.float32(2.0)):
        np.testing.assert_array_equal(
            plain_focal_loss(z, x, 0.25, gamma), sx.sigmoid_focal_loss(z, x, 0.25, gamma)
        )


def test_plain_focal_loss_rejects_bad_input_by_name():
    with pytest.raises(ValueError, match="plain_focal_loss: `gamma` must be >= 0"):
        plain_focal_loss(jnp.zeros(2), jnp.zeros(2), gamma=-1.0)
    with pytest.raises(ValueError, match="plain_focal_loss"):
        plain_focal_loss(jnp.zeros(2), jnp.zeros(3))


def test_sixteen_bit_inputs_round_the_exact_value():
    """16-bit inputs: the float32 plain value rounds to within a 16-bit ulp of the exact one."""
    x = np.linspace(-30, 30, 2001).astype(np.float32)
    for dtype in (jnp.bfloat16, jnp.float16):
        xd = jnp.asarray(x, dtype)
        for label in (0.0, 1.0, 0.25):
            z = jnp.full_like(xd, label)
            for gamma in (2.0, 2.5):
                got = np.asarray(sx.sigmoid_focal_loss(z, xd, 0.25, gamma)).astype(np.float64)
                want = r_focal(ld(z), ld(xd), LD(0.25), LD(gamma))[0].astype(np.float64)
                ok = want > float(jnp.finfo(dtype).tiny)
                rel = np.abs(got - want)[ok] / want[ok]
                assert rel.max() <= float(jnp.finfo(dtype).eps), (dtype, label, gamma)
