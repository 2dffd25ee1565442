"""Losses for class imbalance: values against the published implementations (transcribed below
in float64 numpy), the float32 error in ulps against an extended-precision reference over the
whole range, gradients against autodiff of the formulas in float64, the edges (±inf, the clip
boundary, zero weights, Hessians), properties (never above the cross-entropy; ``where``-masked
elements absent) and the errors.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import x64
from hypothesis import given
from hypothesis import strategies as st

import sigmoid_xent as sx

INF = np.inf
LD = np.longdouble
F32_MAX = float(np.finfo(np.float32).max)
TINY = LD(float(np.finfo(np.float32).tiny))
sce = sx.sigmoid_cross_entropy_with_logits

# Logits over the whole float32 range, densely in [-60, 60], and around logit(0.05), the
# default clip boundary (every float32 within 2000 ulps of it).
X0_05 = float(np.log(LD(np.float32(0.05))) - np.log1p(-LD(np.float32(0.05))))
WIDE_X = np.concatenate(
    [-np.logspace(-40, 38.5, 300), [-0.0, 0.0], np.logspace(-40, 38.5, 300), [F32_MAX, -F32_MAX]]
).astype(np.float32)
DENSE_X = np.linspace(-60, 60, 1 << 14).astype(np.float32)
BOUNDARY_X = (
    np.float32(X0_05) + np.arange(-2000, 2000).astype(np.float32) * np.spacing(np.float32(X0_05))
).astype(np.float32)
GRID_X = np.concatenate([WIDE_X, DENSE_X, BOUNDARY_X])
LABELS = (0.0, 1.0, 0.3, 1e-6, 0.999)


# --------------------------------------------------------------------------- published code
#
# Transcribed into float64 numpy, elementwise (before each one's reduction), as published:
# their eps clamps and probability-space steps included.


def _sigmoid64(x):
    return 1 / (1 + np.exp(-x))


def _bce_logits64(x, z):
    """torch's binary_cross_entropy_with_logits(reduction="none")."""
    return np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x)))


def asl_authors(x, y, gamma_neg=4.0, gamma_pos=1.0, clip=0.05, eps=1e-8):
    """Alibaba-MIIL/ASL, src/loss_functions/losses.py, ``AsymmetricLoss.forward`` (commit
    05b193d8a39bbc5fb2c3be7b52d5188416594544), without its final ``.sum()``."""
    xs_pos = _sigmoid64(x)
    xs_neg = 1 - xs_pos
    if clip is not None and clip > 0:
        xs_neg = np.minimum(xs_neg + clip, 1)
    loss = y * np.log(np.maximum(xs_pos, eps)) + (1 - y) * np.log(np.maximum(xs_neg, eps))
    if gamma_neg > 0 or gamma_pos > 0:
        pt = xs_pos * y + xs_neg * (1 - y)
        loss = loss * np.power(1 - pt, gamma_pos * y + gamma_neg * (1 - y))
    return -loss


def asl_timm(x, y, gamma_neg=4.0, gamma_pos=1.0, clip=0.05, eps=1e-8, smoothing=0.0):
    """huggingface/pytorch-image-models, timm/loss/asymmetric_loss.py,
    ``AsymmetricLossMultiLabel.forward`` with ``reduction="none"`` (commit
    245128afc78dca5f53c235ce2778d705a1caac35; no weight or pos_weight)."""
    if smoothing:
        y = y * (1 - smoothing) + 0.5 * smoothing
    xs_pos = _sigmoid64(x)
    xs_neg = 1 - xs_pos
    if clip is not None and clip > 0:
        xs_neg = np.minimum(xs_neg + clip, 1)
    loss = y * np.log(np.maximum(xs_pos, eps)) + (1 - y) * np.log(np.maximum(xs_neg, eps))
    if gamma_neg > 0 or gamma_pos > 0:
        pt = xs_pos * y + xs_neg * (1 - y)
        loss = loss * np.power(1 - pt, gamma_pos * y + gamma_neg * (1 - y))
    return -loss


def qfl_mmdetection(pred, target, beta=2.0):
    """open-mmlab/mmdetection v3.2.0, mmdet/models/losses/gfocal_loss.py,
    ``quality_focal_loss_tensor_target`` (``activated=False``), without its sum over classes."""
    pred_sigmoid = _sigmoid64(pred)
    loss = _bce_logits64(pred, np.zeros_like(pred)) * pred_sigmoid**beta
    pos = target != 0
    scale = target[pos] - pred_sigmoid[pos]
    loss[pos] = _bce_logits64(pred[pos], target[pos]) * np.abs(scale) ** beta
    return loss


def cb_weights_reference(samples_per_cls, beta):
    """richardaecn/class-balanced-loss, src/cifar_main.py ``main`` (commit
    0ab6eb775c312360704a66c969a7b660f7efc29e); the same lines in
    vandit15/Class-balanced-loss-pytorch, class_balanced_loss.py ``CB_loss`` (commit
    5658546334ef3fe7d2eac41a52154ed0ddc8ce00)."""
    effective_num = 1.0 - np.power(beta, samples_per_cls)
    weights = (1.0 - beta) / np.array(effective_num)
    return weights / np.sum(weights) * len(samples_per_cls)


def poly1_paper(x, z, epsilon=1.0, gamma=0.0, alpha=None):
    """Leng et al. (ICLR 2022), the Poly-1 focal loss of the paper's code listing:
    ``FL + epsilon (1 - pt)**(gamma + 1)``, FL as torchvision's ``sigmoid_focal_loss``."""
    p = _sigmoid64(x)
    pt = z * p + (1 - z) * (1 - p)
    fl = _bce_logits64(x, z) * (1 - pt) ** gamma
    if alpha is not None and alpha >= 0:
        fl = (alpha * z + (1 - alpha) * (1 - z)) * fl
    return fl + epsilon * (1 - pt) ** (gamma + 1)


def _moderate(n=256, seed=0, scale=5.0, limit=15.0):
    """Logits where the references are accurate in float64 (their eps clamps do not bind
    above -18.4, and ``1 - sigmoid(x)`` keeps 9 digits below 15), hard and soft labels."""
    rng = np.random.default_rng(seed)
    x = np.clip(rng.normal(size=n) * scale, -limit, limit)
    hard = rng.integers(0, 2, n).astype(np.float64)
    return x, hard, rng.uniform(size=n)


@pytest.mark.parametrize(
    "gp, gn, clip", [(0.0, 4.0, 0.05), (1.0, 4.0, 0.05), (2.0, 1.0, 0.2), (0.5, 2.5, None)]
)
def test_asl_matches_the_authors_and_timm_on_hard_labels(gp, gn, clip):
    x, hard, _ = _moderate()
    for ref in (asl_authors, asl_timm):
        want = ref(x, hard, gamma_neg=gn, gamma_pos=gp, clip=clip)
        with x64():
            got = sx.asymmetric_loss(hard, x, gamma_pos=gp, gamma_neg=gn, clip=clip)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=0)
        got32 = sx.asymmetric_loss(
            hard.astype(np.float32), x.astype(np.float32), gamma_pos=gp, gamma_neg=gn, clip=clip
        )
        # The float32 loss uses the float32 clip (which moves the boundary by 1e-9).
        c32 = None if clip is None else float(np.float32(clip))
        x32 = x.astype(np.float32).astype(np.float64)
        np.testing.assert_allclose(got32, ref(x32, hard, gn, gp, c32), rtol=2e-6)


def test_asl_soft_labels_per_term_and_timm_smoothing():
    """Soft labels take the per-term form (the authors and timm interpolate gamma and p_t
    instead: equal for hard labels, and for soft ones without focusing, such as timm's label
    smoothing at gamma 0)."""
    x, _, soft = _moderate(seed=1)
    p = _sigmoid64(x)
    pm = np.maximum(p - 0.05, 0)
    want = -soft * (1 - p) * np.log(p) - (1 - soft) * pm**4 * np.log1p(-pm)
    with x64():
        got = sx.asymmetric_loss(soft, x, gamma_pos=1.0)
        hard = (soft > 0.5).astype(np.float64)
        smoothed = sx.asymmetric_loss(hard * 0.9 + 0.05, x, gamma_pos=0.0, gamma_neg=0.0)
    np.testing.assert_allclose(got, want, rtol=1e-9)
    np.testing.assert_allclose(
        smoothed, asl_timm(x, hard, gamma_neg=0.0, gamma_pos=0.0, smoothing=0.1), rtol=1e-9
    )


def test_asl_exact_where_the_reference_clamps():
    """The reference's log(max(p, 1e-8)) caps a missed positive at 18.42; the loss is 30.
    And autodiff of its (1 - p_t)**gamma is NaN at a confident positive (0**(0 - 1) * 0)."""
    x = np.array([-30.0, 30.0])
    z = np.array([1.0, 1.0])
    np.testing.assert_allclose(asl_authors(x, z, gamma_pos=0.0)[0], 18.420680743952367)
    with x64():
        got = sx.asymmetric_loss(z, x)
        g = jax.grad(lambda x: sx.asymmetric_loss(z, x).sum())(jnp.asarray(x))

        def ref(x):
            p = jax.nn.sigmoid(x)
            pt = p * z
            return -(z * jnp.log(jnp.maximum(p, 1e-8)) * (1 - pt) ** (0.0 * z)).sum()

        g_ref = jax.grad(ref)(jnp.asarray([-30.0, 40.0]))
    np.testing.assert_allclose(got, [30.000000000000092, 9.357622968840175e-14], rtol=1e-12)
    assert np.all(np.isfinite(g)) and np.isnan(g_ref[1])


@pytest.mark.parametrize("beta", [2.0, 0.5, 1.5])
def test_qfl_matches_mmdetection(beta):
    x, hard, soft = _moderate(limit=30.0)
    z = np.where(np.arange(x.size) % 3 == 0, 0.0, soft)  # negatives, soft positives
    z[1::7] = hard[1::7]
    want = qfl_mmdetection(x, z, beta)
    with x64():
        got = sx.quality_focal_loss(z, x, beta=beta)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-300)
    got32 = sx.quality_focal_loss(z.astype(np.float32), x.astype(np.float32), beta=beta)
    want32 = qfl_mmdetection(x.astype(np.float32).astype(np.float64), z.astype(np.float32), beta)
    np.testing.assert_allclose(got32, want32, rtol=5e-6, atol=1e-37)


@pytest.mark.parametrize(
    "epsilon, gamma, alpha",
    [(1.0, 0.0, None), (2.0, 2.0, 0.25), (-1.0, 0.5, None), (0.5, 3.0, 0.7)],
)
def test_poly1_matches_the_paper(epsilon, gamma, alpha):
    x, hard, soft = _moderate()
    for z in (hard, soft):
        with x64():
            got = sx.poly1_sigmoid_loss(z, x, epsilon=epsilon, gamma=gamma, alpha=alpha)
        # The reference's 1 - p_t cancels (and bce - (1 - p_t) for epsilon = -1): compare
        # with a tolerance of its own rounding.
        np.testing.assert_allclose(got, poly1_paper(x, z, epsilon, gamma, alpha), 1e-9, 1e-12)


def test_poly1_gamma_zero_is_bce_plus_epsilon_one_minus_p_t():
    x, hard, soft = _moderate()
    x, z = x.astype(np.float32), soft.astype(np.float32)
    p = _sigmoid64(x.astype(np.float64))
    want = np.asarray(sce(z, x), np.float64) + 2.0 * (z * (1 - p) + (1 - z) * p)
    np.testing.assert_allclose(sx.poly1_sigmoid_loss(z, x, epsilon=2.0), want, rtol=2e-6)


@pytest.mark.parametrize("beta", [0.9, 0.99, 0.999, 0.9999])
def test_class_balanced_weights_match_the_reference(beta):
    counts = [5000, 500, 100, 20, 3, 1]
    want = cb_weights_reference(counts, beta)
    np.testing.assert_allclose(sx.class_balanced_weights(counts, beta=beta), want, rtol=2e-6)
    with x64():
        got = sx.class_balanced_weights(np.array(counts), beta=beta)
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(got, want, rtol=1e-12)
    # An absent class gets 0 and the others keep their proportions, still summing to C.
    got = np.asarray(sx.class_balanced_weights(counts + [0], beta=beta))
    assert got[-1] == 0 and np.isclose(got.sum(), 7.0)
    np.testing.assert_allclose(got[:-1], want * 7 / 6, rtol=2e-6)


def test_class_balanced_weights_edges():
    np.testing.assert_array_equal(sx.class_balanced_weights([3, 1, 7], beta=0.0), [1, 1, 1])
    np.testing.assert_array_equal(sx.class_balanced_weights([0, 0], beta=0.9), [0, 0])
    np.testing.assert_array_equal(sx.class_balanced_weights([0, 5], beta=0.0), [0, 2])
    # beta -> 1: the inverse class frequency.
    inv = 1 / np.array([10.0, 20.0, 40.0])
    np.testing.assert_allclose(
        sx.class_balanced_weights([10, 20, 40], beta=1 - 1e-7), inv / inv.sum() * 3, rtol=1e-5
    )
    # float32: 1 - beta**n without cancellation (beta**1 rounds to 1 - 1e-4 exactly enough).
    w = sx.class_balanced_weights(jnp.array([1.0, 2.0]), beta=0.9999)
    np.testing.assert_allclose(w, cb_weights_reference([1, 2], 0.9999), rtol=1e-6)
    # A traced beta under jit; the result is float32 from integer or float32 counts.
    f = jax.jit(lambda b: sx.class_balanced_weights(jnp.array([4, 2, 0]), beta=b))
    got = f(jnp.float32(0.5))
    assert got.dtype == jnp.float32
    total = 16 / 15 + 4 / 3  # 1 / (1 - 0.5**4) + 1 / (1 - 0.5**2), normalised to 3 classes
    np.testing.assert_allclose(got, [3 * 16 / 15 / total, 3 * 4 / 3 / total, 0], rtol=1e-6)


# --------------------------------------------------------------------------- extended precision


def _ld(a):
    return np.asarray(a).astype(np.float64).astype(LD)


def r_softplus(x):
    x = _ld(x)
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def r_sigmoid(x):
    x = _ld(x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _times(c, v):
    with np.errstate(invalid="ignore"):
        return np.where(c == 0, LD(0), c * v)


def r_bce(z, x):
    z, x = _ld(z), _ld(x)
    return _times(z, r_softplus(-x)) + _times(1 - z, r_softplus(x))


def _f32(v):
    """An option as the losses use it: rounded to float32 (the compute dtype)."""
    return LD(float(np.float32(v)))


def _power(base, g):
    with np.errstate(divide="ignore"):
        return np.where(base > 0, np.exp(LD(g) * np.log(np.where(base > 0, base, 1))), LD(g == 0))


def r_asl(z, x, gp, gn, clip):
    """ASL in 80-bit arithmetic; ``p - c = (1 - c) p (1 - exp(x0 - x))`` (no cancellation)."""
    z, x = _ld(z), _ld(x)
    c, gp, gn = _f32(clip or 0.0), _f32(gp), _f32(gn)
    s, s_neg = r_sigmoid(x), r_sigmoid(-x)
    pos = _power(s_neg, gp) * r_softplus(-x)
    if c > 0:
        d = x - (np.log(c) - np.log1p(-c))
        pm = np.where(d > 0, (1 - c) * s * -np.expm1(-np.where(d > 0, d, 1)), 0)
        lm = np.where(pm < 0.5, -np.log1p(-pm), -np.log(c + s_neg))
    else:
        pm, lm = s, r_softplus(x)
    return _times(z, pos) + _times(1 - z, np.where(pm > 0, _power(pm, gn) * lm, 0))


def r_qfl(z, x, beta):
    """QFL in 80-bit arithmetic, ``z - sigmoid(x)`` as ``(z - 1) + sigmoid(-x)`` for x >= 0;
    and the larger term ``max(z, sigmoid(x))**beta bce`` of the difference."""
    z, x, beta = _ld(z), _ld(x), _f32(beta)
    d = np.where(x >= 0, (z - 1) + r_sigmoid(-x), z - r_sigmoid(x))
    b = r_bce(z, x)
    return _power(np.abs(d), beta) * b, _power(np.maximum(z, r_sigmoid(x)), beta) * b


def r_poly(z, x, epsilon, gamma, alpha):
    z, x, epsilon, gamma = _ld(z), _ld(x), _f32(epsilon), _f32(gamma)
    alpha = None if alpha is None else _f32(alpha)
    slope = np.where(x >= 0, 1 - z, z)
    s = r_sigmoid(-np.abs(x))
    u = slope * (1 - s) + (1 - slope) * s
    at = LD(1) if alpha is None else alpha * z + (1 - alpha) * (1 - z)
    focal = at * _power(u, gamma) * r_bce(z, x)
    poly = LD(epsilon) * _power(u, gamma + 1)
    return focal + poly, np.maximum(np.abs(focal), np.abs(poly))


def ulps(got, want, scale=None, floor=1.0):
    """|got - want| in float32 ulps of ``scale`` (default ``want``), after forgiving
    ``floor * tiny`` (XLA:CPU flushes subnormal results and intermediates)."""
    got, want = _ld(got), np.asarray(want, LD)
    scale = want if scale is None else np.asarray(scale, LD)
    _, e = np.frexp(np.maximum(np.abs(scale), TINY))
    ulp = np.ldexp(LD(1), e - 24)
    with np.errstate(invalid="ignore"):
        err = np.maximum(np.abs(got - want) - LD(floor) * TINY, 0) / ulp
    return np.where(np.isnan(err), np.inf, err).astype(np.float64)


def _normal(want):
    return (np.abs(want) >= TINY) & (np.abs(want) < LD(F32_MAX))


# One compiled program per configuration, shared by every test on the grid: the loss and its
# gradients w.r.t. labels and logits (the gradient of the sum).
_LOSSES = {
    "asl": lambda gp, gn, clip: (
        lambda z, x: sx.asymmetric_loss(z, x, gamma_pos=gp, gamma_neg=gn, clip=clip)
    ),
    "qfl": lambda beta: lambda z, x: sx.quality_focal_loss(z, x, beta=beta),
    "poly1": lambda eps, gamma, alpha: (
        lambda z, x: sx.poly1_sigmoid_loss(z, x, epsilon=eps, gamma=gamma, alpha=alpha)
    ),
}


@functools.cache
def _program(name, *options):
    fn = _LOSSES[name](*options)

    def run(z, x):
        value, vjp = jax.vjp(fn, z, x)
        return (value, *vjp(jnp.ones_like(value)))

    return jax.jit(run)


def _on_grid(name, *options, label):
    z = np.full_like(GRID_X, label)
    return z, tuple(np.asarray(a) for a in _program(name, *options)(z, GRID_X))


ASL_DEFAULT = (0.0, 4.0, 0.05)
ASL_REAL = (0.5, 2.5, 0.05)
ASL_CONFIGS = [ASL_DEFAULT, ASL_REAL, (1.0, 4.0, None), (0.3, 2.0, 0.2)]


@pytest.mark.parametrize("gp, gn, clip", ASL_CONFIGS)
def test_asl_within_4_ulp_over_the_float32_range(gp, gn, clip):
    for label in LABELS:
        z, (value, _, _) = _on_grid("asl", gp, gn, clip, label=label)
        want = r_asl(z, GRID_X, gp, gn, clip)
        err = np.where(_normal(want), ulps(value, want), 0.0)
        assert err.max() <= 4.0, (label, GRID_X[np.argmax(err)], err.max())


@pytest.mark.parametrize("beta", [2.0, 0.5])
def test_qfl_within_4_ulp_or_2_of_the_larger_term(beta):
    for label in LABELS + (0.5,):
        z, (value, _, _) = _on_grid("qfl", beta, label=label)
        want, larger = r_qfl(z, GRID_X, beta)
        ok = np.minimum(ulps(value, want) / 4, ulps(value, want, larger) / 2)
        err = np.where(_normal(want), ok, 0.0)
        assert err.max() <= 1.0, (label, GRID_X[np.argmax(err)], err.max())


# A real gamma whose gamma + 1 is not a float32 (0.3 + 1 rounds): the exponent is taken as a pair.
POLY_CONFIGS = [(1.0, 0.0, None), (2.0, 2.0, 0.25), (-1.0, 0.0, None), (0.5, 0.3, None)]


@pytest.mark.parametrize("epsilon, gamma, alpha", POLY_CONFIGS)
def test_poly1_within_4_ulp_of_the_larger_term(epsilon, gamma, alpha):
    """Within 4 ulp of the exact value for epsilon >= 0 (the terms add); a negative epsilon can
    cancel them, and then the bound is 4 ulp of the larger term. Terms that XLA flushes below
    the smallest normal are forgiven, times their growth factor (epsilon)."""
    for label in LABELS:
        z, (value, _, _) = _on_grid("poly1", epsilon, gamma, alpha, label=label)
        want, larger = r_poly(z, GRID_X, epsilon, gamma, alpha)
        scale = want if epsilon >= 0 else larger
        floor = 2.0 + abs(epsilon)
        err = np.where(_normal(want), ulps(value, want, scale, floor=floor), 0.0)
        assert err.max() <= 4.0, (label, GRID_X[np.argmax(err)], err.max())


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_16_bit_inputs_rounded_once(dtype):
    x = np.linspace(-12, 12, 4001).astype(dtype)
    z = np.where(np.arange(x.size) % 2, 1.0, 0.3).astype(dtype)
    x32, z32 = x.astype(np.float32), z.astype(np.float32)
    for fn in (sx.asymmetric_loss, sx.quality_focal_loss, sx.poly1_sigmoid_loss):
        got = np.asarray(fn(z, x), np.float32)
        want = np.asarray(fn(z32, x32)).astype(dtype).astype(np.float32)
        np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------- gradients


def _asl_formula(z, x, gp, gn, c):
    p = jax.nn.sigmoid(x)
    pm = jnp.maximum(p - c, 0)
    safe = jnp.where(pm > 0, pm, 1.0)
    neg = jnp.where(pm > 0, safe**gn, 0.0) * -jnp.log1p(-pm)
    return z * (1 - p) ** gp * -jnp.log(p) + (1 - z) * neg


def _qfl_formula(z, x, beta):
    return jnp.abs(z - jax.nn.sigmoid(x)) ** beta * (jnp.logaddexp(0, x) - x * z)


def _poly_formula(z, x, eps, g, alpha=0.25):
    p = jax.nn.sigmoid(x)
    u = 1 - (z * p + (1 - z) * (1 - p))
    at = alpha * z + (1 - alpha) * (1 - z)
    return at * u**g * (jnp.logaddexp(0, x) - x * z) + eps * u ** (g + 1)


CASES = [
    (
        "asl",
        lambda z, x, a, b, c: sx.asymmetric_loss(z, x, gamma_pos=a, gamma_neg=b, clip=c),
        _asl_formula,
        (0.5, 2.5, 0.1),
    ),
    ("qfl", lambda z, x, b: sx.quality_focal_loss(z, x, beta=b), _qfl_formula, (1.5,)),
    (
        "poly1",
        lambda z, x, e, g: sx.poly1_sigmoid_loss(z, x, epsilon=e, gamma=g, alpha=0.25),
        _poly_formula,
        (2.0, 2.0),
    ),
]


@pytest.mark.parametrize("name, ours, formula, options", CASES, ids=[c[0] for c in CASES])
def test_gradients_are_those_of_the_formula_in_float64(name, ours, formula, options):
    """Every argument (labels, logits, each option traced), against JAX's autodiff of the
    plain formula where that is accurate; hard and soft labels in one call."""
    x, hard, soft = _moderate(n=64, scale=3.0, limit=8.0)
    x, z = np.concatenate([x, x]), np.concatenate([hard, soft])
    with x64():
        args = (jnp.asarray(z), jnp.asarray(x)) + tuple(jnp.float64(o) for o in options)
        n = tuple(range(len(args)))
        got = jax.jit(jax.grad(lambda *a: ours(*a).sum(), argnums=n))(*args)
        want = jax.grad(lambda *a: formula(*a).sum(), argnums=n)(*args)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12, err_msg=f"{name} arg {i}")


def r_asl_grads(z, x, gp, gn, clip):
    """d/dx and d/dz of ASL in 80-bit arithmetic, with the magnitudes of their two terms."""
    z, x = _ld(z), _ld(x)
    c, gp, gn = _f32(clip), _f32(gp), _f32(gn)
    s, sn = r_sigmoid(x), r_sigmoid(-x)
    d = x - (np.log(c) - np.log1p(-c))
    pm = np.where(d > 0, (1 - c) * s * -np.expm1(-np.where(d > 0, d, 1)), 0)
    lm = np.where(pm < 0.5, -np.log1p(-pm), -np.log(c + sn))
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        d_pos = -_power(sn, gp) * (gp * s * r_softplus(-x) + sn)
        d_neg = (gn * _power(pm, gn - 1) * lm + _power(pm, gn) / (1 - pm)) * s * sn
        d_neg = np.where(pm > 0, d_neg, 0)
    pos, neg = _power(sn, gp) * r_softplus(-x), np.where(pm > 0, _power(pm, gn) * lm, 0)
    dx = _times(z, d_pos) + _times(1 - z, d_neg)
    return dx, np.abs(_times(z, d_pos)) + np.abs(_times(1 - z, d_neg)), pos - neg, pos + neg


def r_qfl_dx(z, x, beta):
    """d/dx of QFL in 80-bit arithmetic, the magnitude of its two terms, and that of the
    larger term of the difference z - sigmoid(x) (max(z, sigmoid(x)) for |z - sigmoid(x)|)."""
    z, x, beta = _ld(z), _ld(x), _f32(beta)
    d = np.where(x >= 0, (z - 1) + r_sigmoid(-x), z - r_sigmoid(x))
    a = np.abs(d)
    ss, b = r_sigmoid(x) * r_sigmoid(-x), r_bce(z, x)
    with np.errstate(divide="ignore", invalid="ignore"):
        less = np.where(a > 0, _power(a, beta - 1), 0)
    t1 = -beta * less * np.sign(d) * ss * b
    t2 = -_power(a, beta) * d
    m = np.maximum(z, r_sigmoid(x))
    larger = beta * _power(m, beta - 1) * ss * b + _power(m, beta) * m
    return t1 + t2, np.abs(t1) + np.abs(t2), larger


def _finite_scale(s):
    return (s > 4 * TINY) & (s < LD(F32_MAX))


@pytest.mark.parametrize("options", [ASL_DEFAULT, ASL_REAL])
def test_asl_float32_gradients_accurate(options):
    """d/dx within 6 ulp of the magnitude of its terms, d/dz (a difference) within 3 ulp of
    the larger term, over the float32 range and at the clip boundary."""
    for label in (0.0, 1.0, 0.3):
        z, (_, gz, gx) = _on_grid("asl", *options, label=label)
        dx, dx_scale, dz, dz_scale = r_asl_grads(z, GRID_X, *options)
        err_x = np.where(_finite_scale(dx_scale), ulps(gx, dx, dx_scale), 0)
        err_z = np.where(_finite_scale(dz_scale), ulps(gz, dz, dz_scale), 0)
        assert err_x.max() <= 6.0, (label, GRID_X[np.argmax(err_x)], err_x.max())
        assert err_z.max() <= 3.0, (label, GRID_X[np.argmax(err_z)], err_z.max())


@pytest.mark.parametrize("beta", [2.0, 0.5])
def test_qfl_float32_gradient_accurate(beta):
    """d/dx within 6 ulp of the magnitude of its two terms, or 2 of the larger term where
    z - sigmoid(x) cancels (z = 0.5 at logits near 0: |z - sigmoid(x)| down to 1e-45). Not for
    beta < 1 there: |D|**(beta - 1) is infinite at D = 0 and near it as accurate as D, whose
    error is about 2**-40 sigmoid(x) (the pair sigmoid's), not 2**-40 |D|."""
    for label in (0.0, 1.0, 0.3, 0.9) + ((0.5,) if beta >= 1 else ()):
        z, (_, _, gx) = _on_grid("qfl", beta, label=label)
        dx, scale, larger = r_qfl_dx(z, GRID_X, beta)
        ok = np.minimum(ulps(gx, dx, scale) / 6, ulps(gx, dx, larger) / 2)
        err = np.where(_finite_scale(scale), ok, 0)
        assert err.max() <= 1.0, (label, GRID_X[np.argmax(err)], err.max())


def test_poly1_float32_gradient_accurate():
    """gamma 0: d/dx = (sigmoid(x) - z) + epsilon (1 - 2z) s_+ s_-, within 6 ulp of the
    magnitude of its two terms."""
    for label in (0.0, 1.0, 0.3):
        z, (_, _, gx) = _on_grid("poly1", 1.0, 0.0, None, label=label)
        zl, xl = _ld(z), _ld(GRID_X)
        t1 = np.where(xl >= 0, (1 - zl) - r_sigmoid(-xl), r_sigmoid(xl) - zl)
        t2 = (1 - 2 * zl) * r_sigmoid(xl) * r_sigmoid(-xl)
        scale = np.abs(t1) + np.abs(t2)
        err = np.where(_finite_scale(scale), ulps(gx, t1 + t2, scale), 0)
        assert err.max() <= 6.0, (label, GRID_X[np.argmax(err)], err.max())


# --------------------------------------------------------------------------- edges

EXTREME_X = np.array(
    [-INF, -F32_MAX, -1e30, -200.0, -30.0, X0_05, -1.0, 0.0, 2.0, 30.0, 200.0, 1e30, F32_MAX, INF],
    np.float32,
)
_TRACED = {
    "asl": lambda z, x, g, c: sx.asymmetric_loss(z, x, gamma_pos=g, gamma_neg=4 * g, clip=c),
    "qfl": lambda z, x, g, c: sx.quality_focal_loss(z, x, beta=g),
    # The focal term's own derivatives at extremes are tests/test_focal.py's (traced gamma).
    "poly1": lambda z, x, g, c: sx.poly1_sigmoid_loss(z, x, epsilon=g - c, gamma=2.0, alpha=0.25),
}


@pytest.mark.parametrize("name", list(_TRACED))
def test_gradients_finite_at_extremes_and_zero_weight_gives_zero(name):
    """Every argument, traced options 0, 0.5 and 1 (gamma in (0, 1): no infinite derivative),
    at ±inf and the float32 maximum: no NaN; the logits' and options' gradients finite with a
    unit weight where the loss is finite (the labels' is honestly infinite at an infinite
    logit, and beyond float32 at its maximum); exactly 0 with a zero weight, even where the
    loss is infinite."""
    fn = _TRACED[name]

    def weighted(z, x, g, c, w):
        value = fn(z, x, g, c)
        return (w * value).sum(), value

    grad = jax.jit(jax.grad(weighted, argnums=(0, 1, 2, 3), has_aux=True))
    x = np.tile(EXTREME_X, 3)
    z = np.repeat(np.array([0.0, 1.0, 0.3], np.float32), EXTREME_X.size)
    moderate = np.abs(x) <= 1e30
    for g in (0.0, 0.5, 1.0):
        args = (z, x, jnp.float32(g), jnp.float32(0.05))
        _, value = grad(*args, jnp.zeros_like(x))
        weight = jnp.where(np.isfinite(value), 1.0, 0.0)
        gs, value = grad(*args, weight)
        assert not np.any(np.isnan(value))
        for i, gr in enumerate(gs):
            gr = np.asarray(gr)
            assert not np.any(np.isnan(gr)), (name, g, i)
            gr = gr[moderate] if i == 0 else gr
            assert np.all(np.isfinite(gr)), (name, g, i, gr)
        for i, gr in enumerate(grad(*args, jnp.zeros_like(x))[0]):
            np.testing.assert_array_equal(gr, 0.0, err_msg=f"{name} {g} arg {i}")


def test_asl_at_infinite_logits():
    z = jnp.array([0.0, 1.0, 0.3, 0.0, 1.0, 0.3])
    x = jnp.array([-INF, -INF, -INF, INF, INF, INF])
    capped = (0.95**4) * -np.log(np.float32(0.05))
    np.testing.assert_allclose(
        sx.asymmetric_loss(z, x), [0, INF, INF, capped, 0, 0.7 * capped], rtol=1e-6
    )
    np.testing.assert_array_equal(sx.asymmetric_loss(z, x, clip=None), [0, INF, INF, INF, 0, INF])
    np.testing.assert_array_equal(sx.quality_focal_loss(z, x), [0, INF, INF, INF, 0, INF])


@pytest.mark.parametrize("gn", [4.0, 0.0])
def test_asl_continuous_and_finite_across_the_clip_boundary(gn):
    """Every float32 within 2000 ulps of logit(0.05): 0 below, rising from 0 above (as
    p_m**5 for gamma_neg 4), with finite gradients; the logits gradient of the negative term
    is 0 below and tends to 0 (gamma_neg > 0) or to sigmoid'(x0) (gamma_neg = 0) above."""
    _, (value, _, g) = _on_grid("asl", 0.0, gn, 0.05, label=0.0)
    order = np.argsort(GRID_X)
    x, value, g = GRID_X[order], value[order], g[order]
    near = np.abs(x.astype(np.float64) - X0_05) < 1e-3
    x, value, g = x[near], value[near], g[near]
    below = x.astype(np.float64) < X0_05
    assert np.all(value[below] == 0) and np.all(g[below] == 0)
    assert np.all(np.diff(value[~below]) >= 0) and np.all(np.isfinite(g))
    edge = g[~below][0]
    assert (edge < 1e-8) if gn else np.isclose(edge, 0.05 * 0.95, rtol=1e-3)


def test_hessians_finite_and_right():
    """jax.hessian: finite at saturation and near the clip boundary in float32 (traced
    gamma 0.5: finite although d/dp p**0.5 is not), and equal to finite differences of the
    gradient in float64."""

    def diags(z, x, g):
        # The diagonal of each loss's Hessian, one compiled program for all.
        return [
            jnp.diag(jax.hessian(lambda x, fn=fn: fn(z, x, g, 0.1).sum())(x))
            for fn in _TRACED.values()
        ]

    x = jnp.array([-30.0, X0_05 + 1e-3, -1.0, 0.0, 2.0, 30.0] * 3)
    z = jnp.repeat(jnp.array([0.0, 1.0, 0.3]), 6)
    for h in jax.jit(diags)(z, x, 0.5):
        assert np.all(np.isfinite(h))
    with x64():
        x = jnp.array([-3.0, -1.5, 0.3, 2.5])
        z = jnp.array([1.0, 0.0, 0.3, 0.0])
        grads = jax.jit(
            lambda x: [
                jax.grad(lambda x, f=f: f(z, x, 1.5, 0.1).sum())(x) for f in _TRACED.values()
            ]
        )
        fds = [(a - b) / 2e-6 for a, b in zip(grads(x + 1e-6), grads(x - 1e-6), strict=True)]
        for h, fd in zip(jax.jit(diags)(z, x, 1.5), fds, strict=True):
            np.testing.assert_allclose(h, fd, rtol=1e-6)


# --------------------------------------------------------------------------- properties

_floats = st.floats(-1e4, 1e4, width=32) | st.sampled_from([0.0, -30.0, 30.0, X0_05, 200.0])
_labels = st.floats(0, 1, width=32) | st.sampled_from([0.0, 1.0])
N = 64
_BCE = jax.jit(sce)


@given(st.lists(_floats, min_size=N, max_size=N), st.lists(_labels, min_size=N, max_size=N))
def test_never_above_the_cross_entropy(xs, zs):
    """ASL and the quality focal loss elementwise at most the core's cross-entropy (both
    compiled), also where the modulator rounds to 1; the examples fill the start of the grid so
    that the compiled programs are those of the tests above."""
    x, z = GRID_X.copy(), np.full_like(GRID_X, 0.3)
    x[:N], z[:N] = xs, zs
    bce = np.asarray(_BCE(z, x))
    for name, options in (("asl", ASL_DEFAULT), ("asl", ASL_REAL), ("qfl", 2.0), ("qfl", 0.5)):
        value = np.asarray(_program(name, *np.atleast_1d(options).tolist())(z, x)[0])
        assert np.all(value <= bce), (name, options)


@functools.cache
def _masked():
    def run(z, x, mask):
        out = []
        for fn in (
            lambda z, x: sx.asymmetric_loss(z, x, where=mask),
            lambda z, x: sx.quality_focal_loss(z, x, where=mask),
            lambda z, x: sx.poly1_sigmoid_loss(z, x, gamma=2.0, where=mask),
        ):
            value, vjp = jax.vjp(fn, z, x)
            out.append((value, *vjp(jnp.ones_like(value))))
        return out

    return jax.jit(run)


@given(
    st.lists(st.booleans(), min_size=N, max_size=N),
    st.lists(st.sampled_from([np.nan, INF, -INF, 1e30]), min_size=N, max_size=N),
)
def test_where_masked_elements_are_absent(mask, garbage):
    """A False element gives loss 0 and zero gradients whatever its label and logit hold (NaN
    included); the kept elements are those of the call without the mask."""
    mask = np.array(mask)
    rng = np.random.default_rng(0)
    x = (rng.normal(size=N) * 4).astype(np.float32)
    z = rng.uniform(size=N).astype(np.float32)
    xg = np.where(mask, x, np.array(garbage, np.float32))
    zg = np.where(mask, z, np.float32(np.nan))
    got = _masked()(zg, xg, mask)
    ref = _masked()(z, x, np.ones(N, bool))
    for (value, gz, gx), (r_value, r_gz, r_gx) in zip(got, ref, strict=True):
        value, gz, gx = (np.asarray(a) for a in (value, gz, gx))
        for a in (value, gz, gx):
            assert np.all(a[~mask] == 0)
        for a, r in ((value, r_value), (gz, r_gz), (gx, r_gx)):
            np.testing.assert_allclose(a[mask], np.asarray(r)[mask], rtol=1e-6)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: sx.asymmetric_loss([1.0], [0.0], gamma_pos=-1.0),
            "asymmetric_loss: `gamma_pos` must lie in [0, inf), got -1.",
        ),
        (
            lambda: sx.asymmetric_loss([1.0], [0.0], gamma_neg=-0.5),
            "asymmetric_loss: `gamma_neg` must lie in [0, inf), got -0.5.",
        ),
        (
            lambda: sx.asymmetric_loss([1.0], [0.0], clip=1.0),
            "asymmetric_loss: `clip` must lie in [0, 1), got 1.",
        ),
        (
            lambda: sx.asymmetric_loss([1.0], [0.0], clip=-0.1),
            "asymmetric_loss: `clip` must lie in [0, 1), got -0.1.",
        ),
        (
            lambda: sx.quality_focal_loss([1.0], [0.0], beta=-2.0),
            "quality_focal_loss: `beta` must lie in [0, inf), got -2.",
        ),
        (
            lambda: sx.poly1_sigmoid_loss([1.0], [0.0], epsilon=-1.5),
            "poly1_sigmoid_loss: `epsilon` must lie in [-1, inf), got -1.5.",
        ),
        (
            lambda: sx.poly1_sigmoid_loss([1.0], [0.0], gamma=-1.0),
            "poly1_sigmoid_loss: `gamma` must lie in [0, inf), got -1.",
        ),
        (
            lambda: sx.class_balanced_weights([3, 1], beta=1.0),
            "class_balanced_weights: `beta` must lie in [0, 1), got 1.",
        ),
        (
            lambda: sx.class_balanced_weights([3, -1]),
            "class_balanced_weights: `counts` must lie in [0, inf), got -1.",
        ),
        (
            lambda: sx.class_balanced_weights([[3, 1]]),
            "class_balanced_weights: `counts` must be one-dimensional (samples per class), got "
            "shape (1, 2) and dtype int32.",
        ),
        (
            lambda: sx.asymmetric_loss(np.zeros(3), np.zeros(3), clip=np.zeros(2)),
            "asymmetric_loss: `clip` of shape (2,) cannot be broadcast to the logits shape (3,).",
        ),
        (
            lambda: sx.quality_focal_loss(np.zeros(2), np.zeros(3)),
            "quality_focal_loss: `labels` and `logits` must have the same shape",
        ),
    ],
)
def test_range_and_shape_errors(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value).startswith(message), str(err.value)


def test_traced_options_are_used_as_given():
    """No check can see a traced option: a negative gamma is computed as given (a power above
    1), a clip of 1 or more removes the negative term."""
    z, x = jnp.array([1.0, 0.0]), jnp.array([-2.0, 3.0])
    f = jax.jit(lambda g, c: sx.asymmetric_loss(z, x, gamma_pos=g, gamma_neg=g, clip=c))
    p = 1 / (1 + np.exp(-np.array([-2.0, 3.0])))
    np.testing.assert_allclose(f(-1.0, 1.0), [(1 - p[0]) ** -1 * -np.log(p[0]), 0.0], rtol=1e-6)
    g = jax.jit(lambda b: sx.quality_focal_loss(z, x, beta=b))
    assert np.all(np.isfinite(g(-0.5)))


def test_non_bool_where_is_a_type_error():
    with pytest.raises(TypeError, match="asymmetric_loss: `where` must be a boolean mask"):
        sx.asymmetric_loss(np.zeros(2), np.zeros(2), where=np.ones(2))
