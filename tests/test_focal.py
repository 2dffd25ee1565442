"""The focal loss: values against torchvision/Keras and mpmath, the bounds over the float32 range
of every path, agreement with the core at gamma 0, zero-weight gradients, the compat adapters'
static gamma. Strict modes, debug_nans, jit/vmap and dtypes are tests/test_shared_behaviour.py's.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from conftest import ref_loss, ref_sigmoid, ulp_distance, x64
from test_robustness import LD, both, hard, ld, r_focal, representable, ulp_err

import sigmoid_xent as sx
from sigmoid_xent import compat
from sigmoid_xent.focal import MAX_POWER, plain_focal_loss

sce = sx.sigmoid_cross_entropy_with_logits
INF = np.inf
F32_MAX = float(np.finfo(np.float32).max)

# Logits over the whole float32 range (both signs, subnormal to max), and a dense [-60, 60].
WIDE_X = np.concatenate(
    [-np.logspace(-40, 38.5, 400), [-0.0, 0.0], np.logspace(-40, 38.5, 400), [F32_MAX, -F32_MAX]]
).astype(np.float32)
DENSE_X = np.linspace(-60, 60, 1 << 15).astype(np.float32)
LABELS = (0.0, 1.0, 0.3, 1e-6, 0.999)


def focal(fn=sx.sigmoid_focal_loss):
    """``fn`` with alpha and gamma as positional arguments (traced under jit)."""
    return lambda z, x, alpha, gamma: fn(z, x, alpha=alpha, gamma=gamma)


# One program per alpha kind (None or an array) for every traced gamma.
TRACED = jax.jit(focal())


def ref_focal(z, x, alpha, gamma):
    p = ref_sigmoid(x)
    p_t = z * p + (1 - z) * (1 - p)
    a_t = 1.0 if alpha is None or alpha < 0 else alpha * z + (1 - alpha) * (1 - z)
    return a_t * (1 - p_t) ** gamma * ref_loss(z, x)


def mp_focal(z, x, gamma):
    """The exact loss at alpha 0.25 (50 digits)."""
    s = 1 / (1 + mpmath.exp(-x))
    u = z * (1 - s) + (1 - z) * s
    bce = -(z * mpmath.log(s) + (1 - z) * mpmath.log(1 - s))
    return (0.25 * z + 0.75 * (1 - z)) * u**gamma * bce


def mp_derivatives(z, x, gamma):
    """``(value, d/dx, d/dz, d2/dx2, d2/dz2)`` of :func:`mp_focal` at float points."""
    mpmath.mp.dps = 50
    z, x = mpmath.mpf(float(z)), mpmath.mpf(float(x))
    return (
        float(mp_focal(z, x, gamma)),
        float(mpmath.diff(lambda v: mp_focal(z, v, gamma), x)),
        float(mpmath.diff(lambda t: mp_focal(t, x, gamma), z)),
        float(mpmath.diff(lambda v: mp_focal(z, v, gamma), x, 2)),
        float(mpmath.diff(lambda t: mp_focal(t, x, gamma), z, 2)),
    )


def float64_derivatives(fn, z, x, gamma):
    """float64 ``(value, d/dx, d/dz, d2/dx2, d2/dz2)`` elementwise, compiled once."""
    f = lambda z, x: fn(z, x, alpha=0.25, gamma=gamma)  # noqa: E731
    with x64():
        z, x = jnp.asarray(z, jnp.float64), jnp.asarray(x, jnp.float64)
        out = jax.jit(
            lambda z, x: (
                f(z, x),
                jax.vmap(jax.grad(f, 1))(z, x),
                jax.vmap(jax.grad(f, 0))(z, x),
                jax.vmap(jax.hessian(f, 1))(z, x),
                jax.vmap(jax.hessian(f, 0))(z, x),
            )
        )(z, x)
    return [np.asarray(o) for o in out]


@pytest.mark.parametrize("alpha", [0.25, 0.8, None, -1.0])
def test_focal_matches_torchvision_formula(alpha):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=64) * 6).astype(np.float32)
    z = np.concatenate([rng.integers(0, 2, 32), rng.uniform(size=32)]).astype(np.float32)
    for gamma in (0.0, 0.5, 2.0, 3.5):
        out = sx.sigmoid_focal_loss(z, x, alpha=alpha, gamma=gamma)
        np.testing.assert_allclose(out, ref_focal(z, x, alpha, gamma), rtol=2e-5, atol=1e-30)


def test_focal_matches_keras_documentation():
    # keras.losses.BinaryFocalCrossentropy(gamma=2, from_logits=True) docs: 0.691, and with
    # apply_class_balancing=True (alpha=0.25): 0.51.
    z = jnp.array([0.0, 1.0, 0.0, 0.0])
    x = jnp.array([-18.6, 0.51, 2.94, -12.8])
    loss = sx.sigmoid_focal_loss
    np.testing.assert_allclose(loss(z, x, alpha=None, gamma=2.0).mean(), 0.691, atol=5e-4)
    np.testing.assert_allclose(loss(z, x, alpha=0.25, gamma=2.0).mean(), 0.51, atol=5e-3)


def test_alpha_and_gamma_are_keyword_only():
    with pytest.raises(TypeError, match="positional"):
        sx.sigmoid_focal_loss(jnp.zeros(2), jnp.zeros(2), 0.25, 2.0)  # type: ignore[misc]
    with pytest.raises(TypeError, match="positional"):
        plain_focal_loss(jnp.zeros(2), jnp.zeros(2), 0.25)  # type: ignore[misc]


def test_focal_gamma_zero_is_alpha_t_times_bce():
    x = jnp.linspace(-50, 50, 101)
    z = (jnp.arange(101) % 3 / 2).astype(jnp.float32)
    a_t = 0.25 * z + 0.75 * (1 - z)
    got = sx.sigmoid_focal_loss(z, x, alpha=0.25, gamma=0.0)
    np.testing.assert_allclose(got, a_t * sce(z, x), rtol=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 0.1, 0.5, 2.0])
def test_focal_gradients_finite_at_saturation(gamma):
    x = jnp.array([-INF, -1e30, -200.0, -90.0, -30.0, 0.0, 30.0, 90.0, 200.0, 1e30, INF])
    total = lambda z, x: sx.sigmoid_focal_loss(z, x, alpha=0.25, gamma=gamma).sum()  # noqa: E731
    grad_z, grad_x = jax.jit(jax.grad(total, argnums=(0, 1)))(
        jnp.repeat(jnp.array([0.0, 1.0, 0.3]), x.size), jnp.tile(x, 3)
    )
    assert np.all(np.isfinite(grad_x)), grad_x
    # d/dz = -x u**gamma + ... is infinite at an infinite logit.
    assert np.all(np.isfinite(np.asarray(grad_z).reshape(3, -1)[:, 1:-1])), grad_z
    # Where the label agrees and the loss underflows, the gradient is 0, not NaN.
    g = jax.grad(lambda x: total(jnp.ones(2), x))(jnp.array([200.0, INF]))
    np.testing.assert_array_equal(g, [0.0, 0.0])


def test_float64_label_gradient_at_a_huge_agreeing_logit():
    # u**gamma = exp(-3.4e137) = 0 here, so d/dz = 0; log(core) - log(mix) once absorbed
    # gamma log u into -|x| first and gave gamma itself (make fuzz found it).
    with x64():
        g = jax.grad(
            lambda z: sx.sigmoid_focal_loss(z, jnp.float64(-7.15e166), alpha=0.0, gamma=4.7e-30)
        )(jnp.float64(0.0))
    assert float(g) == 0.0


def test_focal_derivatives_match_mpmath_at_saturation():
    """gamma 0.5 (float64), where finite differences cannot resolve (1 - p_t)**0.5 near a hard
    label: d/dx, d/dz and both second derivatives."""
    x = np.array([5.0, 40.0])
    z = np.ones(2)
    _, gx, gz, hxx, hzz = float64_derivatives(sx.sigmoid_focal_loss, z, x, 0.5)
    for i in range(x.size):
        _, wx, wz, wxx, wzz = mp_derivatives(z[i], x[i], 0.5)
        np.testing.assert_allclose([gx[i], gz[i]], [wx, wz], rtol=1e-12)
        np.testing.assert_allclose([hxx[i], hzz[i]], [wxx, wzz], rtol=1e-10)


def test_focal_hessian_finite():
    x = jnp.array([-30.0, -1.0, 0.0, 2.0, 30.0])
    f = lambda x: sx.sigmoid_focal_loss(jnp.ones(5), x, alpha=0.25, gamma=0.5).sum()  # noqa: E731
    assert np.all(np.isfinite(jax.jit(jax.hessian(f))(x)))


# --------------------------------------------------------------------------- accuracy bound


def _focal_ulps(z, x, alpha, gamma):
    """Error of the float32 loss (traced gamma) in ulps of the exact value, where it is normal."""
    got = np.asarray(TRACED(z, x, alpha, np.float32(gamma)))
    a = LD(-1.0) if alpha is None else LD(alpha)
    want = r_focal(ld(z), ld(x), a, ld(np.float32(gamma)))[0]
    normal = (want >= LD(float(np.finfo(np.float32).tiny))) & (want < LD(F32_MAX))
    return np.where(normal, ulp_err(got, want, "float32"), 0.0), normal


@pytest.mark.parametrize("alpha", [0.25, None])
def test_focal_within_2_ulp_over_the_float32_range(alpha):
    """Hard and soft labels, logits from subnormal to the float32 maximum and densely in
    [-60, 60], including where the loss is tiny (agreeing labels: 3e-30 at x = -14.46, z = 0)."""
    x = np.tile(np.concatenate([WIDE_X, DENSE_X]), len(LABELS))
    z = np.repeat(np.array(LABELS, np.float32), x.size // len(LABELS))
    a = None if alpha is None else np.float32(alpha)
    for gamma in (0.05, 0.5, 2.0, 3.7, 6.0):  # a small gamma: the loss is about bce
        err, normal = _focal_ulps(z, x, a, gamma)
        assert normal.sum() > x.size // 4
        assert err.max() <= 2.0, (gamma, z[np.argmax(err)], x[np.argmax(err)], err.max())


def test_focal_tiny_loss_region_gamma_3_7():
    """Issue 18's example: x = -14.46, z = 0, gamma 3.7 (3.1e-30 for alpha None)."""
    x = np.linspace(-60, 0, 4001).astype(np.float32)
    for alpha in (np.float32(0.25), None):
        err, normal = _focal_ulps(np.zeros_like(x), x, alpha, 3.7)
        assert normal[np.abs(x - -14.46) < 0.1].all()
        assert err.max() <= 2.0, (alpha, x[np.argmax(err)], err.max())


def test_focal_agreeing_labels_where_e_is_tiny():
    """Agreeing hard labels at |x| in [70, 87]: the loss is about e = exp(-|x|), still normal
    for a small gamma. The two-float log1p(e) once lost its residual to flushing there (2000
    ulp), and a traced gamma 0 lost losses below twice the smallest normal (halved before
    rounding); the static gamma 0 (products) and the traced gamma (pair exponential) paths."""
    x = np.linspace(70, 87, 2001).astype(np.float32)
    x = np.concatenate([x, -x])
    z = (x > 0).astype(np.float32)
    for alpha in (np.float32(0.25), None):
        for gamma in (0.0, 0.01, 0.1):
            err, normal = _focal_ulps(z, x, alpha, gamma)
            assert normal.sum() > x.size // 2
            assert err.max() <= 2.0, (alpha, gamma, x[np.argmax(err)], err.max())
    got = np.asarray(sx.sigmoid_focal_loss(z, x, alpha=0.25, gamma=0))
    want = r_focal(ld(z), ld(x), LD(0.25), LD(0))[0]
    assert ulp_err(got, want, "float32").max() <= 2.0


# --------------------------------------------------------------------------- gamma 0 and bce


def _grid_inputs():
    rng = np.random.default_rng(15)
    x = np.concatenate([WIDE_X, DENSE_X, (rng.normal(size=1 << 15) * 8).astype(np.float32)])
    hard_z = rng.integers(0, 2, x.size).astype(np.float32)
    soft_z = rng.uniform(size=x.size).astype(np.float32)
    return x, hard_z, soft_z


def test_focal_gamma_zero_without_balance_is_the_core_loss():
    """torchvision's own test: sigmoid_focal_loss(gamma=0, alpha=None) equals the BCE. Eagerly
    bit for bit; jitted within an ulp and never above (XLA contracts the core's arithmetic into
    FMAs differently in the two programs), static and traced gamma."""
    x, hard_z, soft_z = _grid_inputs()
    core_jit = jax.jit(sce)
    static_jit = jax.jit(lambda z, x: sx.sigmoid_focal_loss(z, x, alpha=None, gamma=0.0))
    for z in (hard_z, soft_z):
        eager = sx.sigmoid_focal_loss(z, x, alpha=None, gamma=0.0)
        np.testing.assert_array_equal(eager, sce(z, x))
        core = np.asarray(core_jit(z, x))
        for jitted in (static_jit(z, x), TRACED(z, x, None, np.float32(0.0))):
            jitted = np.asarray(jitted)
            assert np.all(jitted <= core)
            assert ulp_distance(jitted, core).max() <= 1


def test_focal_at_most_bce_without_balance():
    """torchvision: focal <= bce elementwise for gamma >= 0, also where (1 - p_t)**gamma is
    within an ulp of 1 (a disagreeing label at large |x|, or a tiny gamma): eager against eager,
    jitted against jitted (the core itself differs by an ulp between the two)."""
    x, hard_z, soft_z = _grid_inputs()
    core_jit = jax.jit(sce)
    for z in (hard_z, soft_z):
        core = np.asarray(core_jit(z, x))
        for gamma in (1e-6, 0.1, 0.5, 1.0, 2.0, 5.0):
            assert np.all(np.asarray(TRACED(z, x, None, np.float32(gamma))) <= core), gamma
            eager = np.asarray(sx.sigmoid_focal_loss(z[:4096], x[:4096], alpha=None, gamma=gamma))
            assert np.all(eager <= np.asarray(sce(z[:4096], x[:4096]))), gamma


# --------------------------------------------------------------------------- zero weights


EXTREME_X = [INF, -INF, F32_MAX, -F32_MAX, 3e38, -3e38, 1e30, 200.0]


def _weighted_total(z, x, alpha, gamma, w):
    return (w * sx.sigmoid_focal_loss(z, x, alpha=alpha, gamma=gamma)).sum()


def test_zero_weight_gives_zero_gradient_for_every_argument():
    """0 * loss (a zero weight in a weighted mean) has gradient 0, not NaN, w.r.t. labels,
    logits, alpha and gamma, also at infinite logits where the label disagrees."""
    grad = jax.jit(jax.grad(_weighted_total, argnums=(0, 1, 2, 3)))
    x = jnp.array(EXTREME_X * 3, jnp.float32)
    z = jnp.array([0.0] * 8 + [1.0] * 8 + [0.3] * 8, jnp.float32)
    for alpha in (0.25, -1.0):
        for gamma in (0.0, 0.5, 2.0):
            a, g = jnp.float32(alpha), jnp.float32(gamma)
            gs = grad(z, x, a, g, jnp.zeros_like(x))
            for name, d in zip(("labels", "logits", "alpha", "gamma"), gs, strict=True):
                np.testing.assert_array_equal(d, 0.0, err_msg=f"{name} {alpha} {gamma}")
            # A unit weight keeps the logits gradient finite at the same points.
            gx = grad(z, x, a, g, jnp.ones_like(x))[1]
            assert np.all(np.isfinite(gx)), (alpha, gamma, gx)


def test_zero_weight_in_a_weighted_mean():
    x = jnp.array([INF, -INF, 2.0, -INF], jnp.float32)
    z = jnp.array([0.0, 1.0, 1.0, 0.3], jnp.float32)
    w = jnp.array([0.0, 0.0, 1.0, 0.0], jnp.float32)

    def mean(z, x, alpha, gamma):
        return sx.reduce_loss(sx.sigmoid_focal_loss(z, x, alpha=alpha, gamma=gamma), w, "mean")

    gs = jax.jit(jax.grad(mean, argnums=(0, 1, 2, 3)))(z, x, jnp.float32(0.25), jnp.float32(2.0))
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
    x = jnp.array([1e30, 3e38, F32_MAX, INF], jnp.float32)
    x = jnp.concatenate([x, -x])
    f = lambda x: sx.sigmoid_focal_loss(jnp.full_like(x, 0.5), x, alpha=alpha, gamma=2.0).sum()  # noqa: E731
    np.testing.assert_allclose(jax.grad(f)(x), np.repeat([want, -want], 4), rtol=1e-6)


def test_alpha_and_gamma_of_other_dtypes_and_per_class():
    """alpha/gamma as Python floats, float64 numpy scalars, 16-bit arrays and per-class
    (last-axis) arrays give the same loss, under rank_promotion='raise' and
    dtype_promotion='strict'; a float64 loss stays float64."""
    x = jnp.linspace(-5, 5, 12, dtype=jnp.float32).reshape(4, 3)
    z = (jnp.arange(12).reshape(4, 3) % 2).astype(jnp.float32)
    want = np.asarray(sx.sigmoid_focal_loss(z, x, alpha=0.25, gamma=2.0))
    with jax.numpy_rank_promotion("raise"), jax.numpy_dtype_promotion("strict"):
        for alpha, gamma in (
            (np.float64(0.25), np.float64(2.0)),
            (jnp.asarray(0.25, jnp.float16), jnp.asarray(2.0, jnp.bfloat16)),
            (jnp.full((3,), 0.25, jnp.float16), jnp.full((3,), 2.0)),
        ):
            got = sx.sigmoid_focal_loss(z, x, alpha=alpha, gamma=gamma)
            np.testing.assert_allclose(got, want, rtol=1e-6)
            f = lambda x, a=alpha, g=gamma: sx.sigmoid_focal_loss(z, x, alpha=a, gamma=g).sum()  # noqa: E731
            assert np.all(np.isfinite(jax.jit(jax.grad(f))(x)))
        with x64():
            got = sx.sigmoid_focal_loss(
                z.astype(jnp.float64), x.astype(jnp.float64), alpha=0.25, gamma=2.0
            )
            assert got.dtype == jnp.float64
            np.testing.assert_allclose(got, want, rtol=1e-6)


# --------------------------------------------------------------------------- integer gamma


def _grid_x():
    """The float32 range (WIDE_X), a coarser dense [-60, 60] and both infinities."""
    return np.concatenate([WIDE_X, DENSE_X[::4], [INF, -INF]]).astype(np.float32)


def _focal_errors(fn, alpha, gamma):
    """Worst loss and d/dx errors of ``fn`` at a static ``gamma`` over every label at once (ulps,
    test_robustness's allowances: the flushed-intermediate floor, d/dx in ulps of its terms'
    magnitude)."""
    x = np.tile(_grid_x(), len(LABELS))
    z = np.repeat(np.array(LABELS, np.float32), x.size // len(LABELS))
    a = -1.0 if alpha is None else alpha
    loss_fn = lambda z, x: fn(z, x, alpha=alpha, gamma=gamma)  # noqa: E731
    got, dx_got = jax.jit(lambda z, x: (loss_fn(z, x), jax.grad(lambda x: loss_fn(z, x).sum())(x)))(
        z, x
    )
    got, dx_got = np.asarray(got), np.asarray(dx_got)
    loss, dx, *_, scale, _, _ = both(
        r_focal, "float32", z, x, np.full_like(x, a), np.full_like(x, gamma)
    )
    ok = representable(loss[0], "float32") & np.isfinite(x)
    worst_loss = np.where(ok, ulp_err(got, loss, "float32"), 0.0).max()
    assert np.all(np.isfinite(dx_got)), x[~np.isfinite(dx_got)]
    dx_scale = tuple(np.where(hard(z), np.abs(d), s) for d, s in zip(dx, scale, strict=True))
    ok = representable(dx_scale[0], "float32") & representable(dx_scale[1], "float32")
    floor = 4 * (1 + np.abs(ld(x)))
    err = np.where(ok, ulp_err(dx_got, dx, "float32", dx_scale, floor=floor), 0.0)
    return worst_loss, err.max()


@pytest.mark.parametrize("gamma", [float(n) for n in range(MAX_POWER + 1)])
def test_integer_gamma_keeps_the_bounds(gamma):
    """A static integer gamma (products instead of the two-float exponential) keeps the loss
    within 2 ulp and d/dx within test_robustness's 6 (its traced-gamma bound)."""
    for alpha in (0.25, None):
        loss_err, dx_err = _focal_errors(sx.sigmoid_focal_loss, alpha, gamma)
        assert loss_err <= 2.0, (alpha, loss_err)
        assert dx_err <= 6.0, (alpha, dx_err)


def test_integer_gamma_equals_the_real_gamma_path():
    """The products and the two-float exponential agree within an ulp."""
    x = np.tile(_grid_x(), len(LABELS))
    z = np.repeat(np.array(LABELS, np.float32), x.size // len(LABELS))
    for gamma in (1.0, 2.0, 5.0):
        static = np.asarray(sx.sigmoid_focal_loss(z, x, alpha=0.25, gamma=gamma))
        traced = np.asarray(TRACED(z, x, np.float32(0.25), np.float32(gamma)))
        both_finite = np.isfinite(static) & np.isfinite(traced)
        assert ulp_distance(static[both_finite], traced[both_finite]).max() <= 1
        np.testing.assert_array_equal(np.isinf(static), np.isinf(traced))


# Points where 1 + e is far from a power of two (a float32-precision reciprocal shows there).
MP_POINTS = [(1.0, 5.0), (1.0, 40.0), (0.3, -3.0), (0.0, -0.0), (0.3, 0.4), (0.7, -0.7)]


@pytest.mark.parametrize("fn", [sx.sigmoid_focal_loss, plain_focal_loss], ids=lambda f: f.__name__)
def test_integer_gamma_float64_matches_mpmath(fn):
    """gamma = 2 static in float64: the value to 1e-13, d/dx and d/dz to 1e-12, both second
    derivatives to 1e-10, also under strict dtype promotion (plain_focal_loss's d/dx was
    float32-accurate there, 1e-7, and raised under strict promotion)."""
    z, x = (np.array(v) for v in zip(*MP_POINTS, strict=True))
    with jax.numpy_dtype_promotion("strict"):
        value, gx, gz, hxx, hzz = float64_derivatives(fn, z, x, 2.0)
    for i in range(len(MP_POINTS)):
        w, wx, wz, wxx, wzz = mp_derivatives(z[i], x[i], 2)
        np.testing.assert_allclose(value[i], w, rtol=1e-13, err_msg=str(i))
        np.testing.assert_allclose(gx[i], wx, rtol=1e-12, err_msg=str(i))
        np.testing.assert_allclose(gz[i], wz, rtol=1e-12, err_msg=str(i))
        np.testing.assert_allclose([hxx[i], hzz[i]], [wxx, wzz], rtol=1e-10, atol=1e-300)


@pytest.mark.parametrize("fn", [sx.sigmoid_focal_loss, plain_focal_loss], ids=lambda f: f.__name__)
def test_integer_gamma_hessian_finite_at_saturation(fn):
    x = jnp.array([-INF, -3e38, -200.0, -30.0, -1.0, 0.0, 2.0, 30.0, 200.0, 3e38, INF])
    xs = jnp.tile(x, 3)
    zs = jnp.repeat(jnp.array([0.0, 1.0, 0.3]), x.size)
    for gamma in (1.0, 2.0, 4.0):
        total = lambda x, g=gamma: fn(zs, x, alpha=0.25, gamma=g).sum()  # noqa: E731
        h = jax.jit(jax.hessian(total))(xs)
        assert np.all(np.isfinite(h)), (gamma, h)


# --------------------------------------------------------------------------- compat adapters


def test_compat_focal_takes_the_static_integer_gamma():
    """A Python-number gamma reaches compat.optax and compat.torch as a static one: their values
    and gradients are sigmoid_focal_loss's at a static gamma bit for bit (with gamma traced
    inside their jit, they were the real-gamma path's, an ulp away in places)."""
    x = jnp.linspace(-30, 30, 1 << 14)
    z = (jnp.arange(x.size) % 3 / 2).astype(jnp.float32)
    static = sx.sigmoid_focal_loss(z, x, alpha=0.25, gamma=2.0)
    traced = TRACED(z, x, np.float32(0.25), np.float32(2.0))
    assert np.any(np.asarray(static) != np.asarray(traced))  # the check below can fail
    np.testing.assert_array_equal(compat.optax.sigmoid_focal_loss(x, z, alpha=0.25), static)
    np.testing.assert_array_equal(compat.torch.sigmoid_focal_loss(x, z), static)

    def grad(f):
        return jax.grad(lambda x: f(x).sum())(x)

    want = grad(lambda x: sx.sigmoid_focal_loss(z, x, alpha=0.25, gamma=2.0))
    np.testing.assert_array_equal(
        grad(lambda x: compat.optax.sigmoid_focal_loss(x, z, alpha=0.25, gamma=2)), want
    )
    np.testing.assert_array_equal(grad(lambda x: compat.torch.sigmoid_focal_loss(x, z)), want)


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
    """Reduced next (the Keras class's per-sample mean over 1024 classes), the plain value's
    mean is as close to the exact mean as the accurate value's: the float32 mean's own
    rounding (1.2-1.7 ulp) is what is left."""
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(96, 1024)) * 6).astype(np.float32)
    means = {
        f: jax.jit(lambda z, x, a, f=f: f(z, x, alpha=a, gamma=2.0).mean(-1))
        for f in (plain_focal_loss, sx.sigmoid_focal_loss)
    }
    for z in ((rng.random(x.shape) < 0.2), rng.random(x.shape)):
        z = z.astype(np.float32)
        for alpha in (np.float32(0.25), None):
            a = LD(-1.0 if alpha is None else alpha)
            want = r_focal(ld(z), ld(x), a, LD(2.0))[0].mean(-1)
            plain = ulp_err(np.asarray(means[plain_focal_loss](z, x, alpha)), want, "float32")
            accurate = ulp_err(
                np.asarray(means[sx.sigmoid_focal_loss](z, x, alpha)), want, "float32"
            )
            assert plain.max() <= max(accurate.max(), 1.5), (alpha, plain.max(), accurate.max())


def test_plain_focal_loss_real_gamma_is_the_accurate_one():
    x = jnp.asarray(_grid_x())
    z = jnp.full_like(x, 0.3)
    for gamma in (0.5, 2.5, jnp.float32(2.0)):
        np.testing.assert_array_equal(
            plain_focal_loss(z, x, alpha=0.25, gamma=gamma),
            sx.sigmoid_focal_loss(z, x, alpha=0.25, gamma=gamma),
        )


def test_plain_focal_loss_rejects_bad_input_by_name():
    with pytest.raises(ValueError, match="plain_focal_loss: `gamma` must be >= 0"):
        plain_focal_loss(jnp.zeros(2), jnp.zeros(2), gamma=-1.0)
    with pytest.raises(ValueError, match="plain_focal_loss"):
        plain_focal_loss(jnp.zeros(2), jnp.zeros(3))


def test_sixteen_bit_inputs_round_the_exact_value():
    """16-bit inputs: the float32 plain value rounds to within a 16-bit ulp of the exact one."""
    x = np.linspace(-30, 30, 2001).astype(np.float32)
    x = np.tile(x, 3)
    z = np.repeat(np.array([0.0, 1.0, 0.25], np.float32), x.size // 3)
    for dtype in (jnp.bfloat16, jnp.float16):
        xd, zd = jnp.asarray(x, dtype), jnp.asarray(z, dtype)
        for gamma in (2.0, 2.5):
            got = np.asarray(sx.sigmoid_focal_loss(zd, xd, alpha=0.25, gamma=gamma))
            want = r_focal(ld(zd), ld(xd), LD(0.25), LD(gamma))[0].astype(np.float64)
            ok = want > float(jnp.finfo(dtype).tiny)
            rel = np.abs(got.astype(np.float64) - want)[ok] / want[ok]
            assert rel.max() <= float(jnp.finfo(dtype).eps), (dtype, gamma, rel.max())


@pytest.mark.parametrize("alpha", [0.0, 1.0, 0.25, None, "traced"])
def test_focal_never_above_the_cross_entropy(alpha):
    # torchvision's own check (focal <= bce elementwise), for every alpha in [0, 1] and gamma
    # >= 0, eager and jitted; alpha 0 or 1 make alpha_t = 1 for one class, where a product
    # rounded once can land an ulp above the core's bce.
    rng = np.random.default_rng(3)
    x = jnp.asarray(
        np.concatenate([rng.normal(size=20000) * 10, rng.normal(size=20000)]), jnp.float32
    )
    z = jnp.asarray(np.resize([0.0, 1.0, 0.5, 0.1], x.shape), jnp.float32)
    bce = np.asarray(sx.sigmoid_cross_entropy_with_logits(z, x))
    for gamma in (0.0, 0.5, 2.0, 2.5):
        if alpha == "traced":
            got = jax.jit(lambda z, x, a, g=gamma: sx.sigmoid_focal_loss(z, x, alpha=a, gamma=g))(
                z, x, jnp.float32(1.0)
            )
            outs = [got]
        else:
            f = functools.partial(sx.sigmoid_focal_loss, alpha=alpha, gamma=gamma)
            outs = [f(z, x), jax.jit(f)(z, x)]
        for out in outs:
            assert np.all(np.asarray(out) <= bce), (alpha, gamma)
