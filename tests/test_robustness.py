"""Robustness campaign (issue 11), elementwise losses: property-based tests against references.

Every property runs over float16, bfloat16, float32 and float64 (x64 on), with logits drawn from
the whole finite range of the dtype (subnormals, -0.0 and the dtype's max included). The
references are computed in ``numpy.longdouble`` (64-bit mantissa), so they are exact to far below
a float64 ulp and never overflow where the float64 result would not.

Each function is evaluated through ONE jitted kernel per dtype (value and the gradients w.r.t.
every argument, from one VJP with a cotangent of ones: the losses are elementwise), shared by all
properties, so the suite compiles a few dozen programs and then only runs them.

The worst error found by each accuracy property is recorded; set ``ROBUSTNESS_REPORT=path.json``
to write them out (tests/README.md quotes them). ``ROBUSTNESS_MAX_EXAMPLES=n`` overrides the
hypothesis profile's example count for the properties of these files.
"""

from __future__ import annotations

import contextlib
import json
import os

import jax
import jax.numpy as jnp
import ml_dtypes
import mpmath
import numpy as np
import pytest
from conftest import x64
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import sigmoid_xent as sx

LD = np.longdouble
INF = np.inf
DTYPES = ("float16", "bfloat16", "float32", "float64")
N = 32  # elements per hypothesis example: one compiled kernel serves every example

# --------------------------------------------------------------------------- harness

_MAX_EXAMPLES = os.environ.get("ROBUSTNESS_MAX_EXAMPLES")


_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")


def fuzz(ci_examples: int | None = None, **kwargs):
    """Settings of a property: the active profile's example count, ``ci_examples`` instead in
    the ``ci`` profile (for slow properties), ``ROBUSTNESS_MAX_EXAMPLES`` when set."""
    if _MAX_EXAMPLES:
        kwargs["max_examples"] = int(_MAX_EXAMPLES)
    elif ci_examples is not None and _PROFILE == "ci":
        kwargs["max_examples"] = ci_examples
    return settings(
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], **kwargs
    )


WORST: dict[str, dict] = {}


def record(name: str, err, **inputs) -> float:
    """Keeps the worst error of ``name`` (and the inputs that produced it); returns it."""
    with np.errstate(over="ignore"):
        err = np.asarray(err, np.float64).ravel()
    if err.size == 0:
        return 0.0
    i = int(np.argmax(err))
    worst = float(err[i])
    entry = WORST.setdefault(name, {"worst": -1.0, "checked": 0})
    entry["checked"] += int(err.size)
    if worst > entry["worst"]:
        entry["worst"] = worst
        entry["at"] = {
            k: repr(np.asarray(v).ravel()[i].item()) if np.size(v) > 1 else repr(v)
            for k, v in inputs.items()
        }
    path = os.environ.get("ROBUSTNESS_REPORT")
    if path:
        old = {}
        if os.path.exists(path):
            with open(path) as f:
                old = json.load(f)
        prev = old.get(name, {"worst": -1.0, "checked": 0})
        merged = dict(entry) if entry["worst"] >= prev["worst"] else dict(prev)
        merged["checked"] = prev["checked"] + int(err.size)
        old[name] = merged
        with open(path, "w") as f:
            json.dump(old, f, indent=1, sort_keys=True)
    return worst


def dtype_scope(dtype: str):
    """float64 needs x64 on (for the trace as well as the call); the others run without it."""
    return x64() if dtype == "float64" else contextlib.nullcontext()


def np_dtype(dtype: str):
    return {"bfloat16": ml_dtypes.bfloat16}.get(dtype, np.dtype(dtype))


def finfo(dtype: str):
    return jnp.finfo(jnp.dtype(dtype))


def compute_dtype(dtype: str) -> str:
    return "float64" if dtype == "float64" else "float32"


def ld(a) -> np.ndarray:
    """Exact conversion of any float array (bfloat16 too) to longdouble."""
    return np.asarray(a).astype(np.float64).astype(LD)


def daz(a, dtype: str) -> np.ndarray:
    """Inputs as XLA:CPU may read them: subnormals of the compute dtype as zeros (DAZ).

    Whether a given operation flushes depends on how XLA fused it (a negation does not), so
    references are computed on both the inputs as given and the flushed ones, and a result is
    right if it matches either (see ``ulp_err``). float16 subnormals are normal float32 numbers.
    """
    a = ld(a)
    tiny = LD(float(finfo(compute_dtype(dtype)).tiny))
    return np.where(np.abs(a) < tiny, a * 0, a)


def both(ref, dtype, *inputs):
    """``ref`` on the inputs as given and as flushed (DAZ): a list per output of ``ref``."""
    exact = ref(*[ld(a) for a in inputs])
    kwargs = {}
    if "ftz" in ref.__code__.co_varnames[: ref.__code__.co_argcount]:
        kwargs["ftz"] = LD(float(finfo(compute_dtype(dtype)).tiny))
    flushed = ref(*[daz(a, dtype) for a in inputs], **kwargs)
    if not isinstance(exact, tuple):
        return (exact, flushed)
    return tuple((a, b) for a, b in zip(exact, flushed, strict=False))


def to_dtype(a, dtype: str) -> np.ndarray:
    """Rounds longdouble/float64 values to ``dtype`` (round to nearest, as numpy casts)."""
    with np.errstate(over="ignore"):
        return np.asarray(np.asarray(a).astype(np.float64)).astype(np_dtype(dtype))


def ulp(v, dtype: str) -> np.ndarray:
    """ulp of ``v`` in ``dtype``: the spacing of the binade of |v|, ``finfo.tiny``'s below it."""
    fi = finfo(dtype)
    a = np.maximum(np.abs(ld(v) if np.asarray(v).dtype != LD else v), LD(float(fi.tiny)))
    _, e = np.frexp(a)
    return np.ldexp(LD(1), e - 1 - fi.nmant)


def ulp_err(got, want, dtype: str, scale=None, floor=1.0) -> np.ndarray:
    """|got - want| in ulps of ``scale`` (default ``want``), after an absolute allowance.

    XLA:CPU flushes subnormal results *and intermediates* to zero, so an error up to
    ``floor * finfo.tiny`` is forgiven (``floor`` > 1 where a growth factor multiplies a flushed
    intermediate). NaN/inf where ``want`` is finite count as an infinite error.
    """
    if isinstance(want, tuple):  # references on exact and flushed inputs: the closer counts
        scales = scale if isinstance(scale, tuple) else (scale,) * len(want)
        pairs = zip(want, scales, strict=True)
        return np.minimum.reduce([ulp_err(got, w, dtype, s, floor) for w, s in pairs])
    got, want = ld(got), np.asarray(want, LD)
    scale = want if scale is None else np.asarray(scale, LD)
    allowance = np.asarray(floor, LD) * LD(float(finfo(dtype).tiny))
    with np.errstate(invalid="ignore"):
        err = np.maximum(np.abs(got - want) - allowance, 0) / ulp(scale, dtype)
    with np.errstate(over="ignore"):
        return np.where(np.isnan(err), INF, err).astype(np.float64)


def representable(want, dtype: str) -> np.ndarray:
    """Where the exact value is finite and below the dtype's overflow threshold."""
    fi = finfo(dtype)
    threshold = LD(float(fi.max)) * (1 + LD(2.0) ** -(fi.nmant + 1))
    with np.errstate(invalid="ignore"):
        return np.isfinite(want) & (np.abs(want) < threshold)


def assert_within(name, err, bound, **inputs):
    worst = record(name, err, **inputs)
    if worst > bound:
        i = int(np.argmax(np.asarray(err).ravel()))
        at = {k: np.asarray(v).ravel()[i] if np.size(v) > 1 else v for k, v in inputs.items()}
        raise AssertionError(f"{name}: {worst:.3g} > {bound} at {at}")


# --------------------------------------------------------------------------- references


def r_softplus(x):
    x = np.asarray(x, LD)
    with np.errstate(over="ignore"):
        return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def r_log_sigmoid(x):
    return -r_softplus(-np.asarray(x, LD))


def r_sigmoid(x):
    x = np.asarray(x, LD)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def r_times(c, v):
    """``c * v`` with a zero coefficient meaning an absent term (``0 * inf = 0``)."""
    with np.errstate(invalid="ignore"):
        return np.where(c == 0, LD(0), c * v)


def r_bce(z, x):
    z, x = np.asarray(z, LD), np.asarray(x, LD)
    return r_times(z, r_softplus(-x)) + r_times(1 - z, r_softplus(x))


def r_bce_dx(z, x):
    z, x = np.asarray(z, LD), np.asarray(x, LD)
    s = r_sigmoid(-np.abs(x))
    return np.where(x >= 0, (1 - z) - s, s - z)


def r_entropy(z):
    z = np.asarray(z, LD)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -(r_times(z, np.log(z)) + r_times(1 - z, np.log1p(-z)))


def r_weighted(z, x, pw, ftz=0):
    """With ``ftz``: the product ``pos_weight * z`` flushed to 0 below it, as XLA:CPU does."""
    z, x, pw = (np.asarray(a, LD) for a in (z, x, pw))
    pz = np.where(np.abs(pw * z) < ftz, LD(0), pw * z)
    loss = r_times(pz, r_softplus(-x)) + r_times(1 - z, r_softplus(x))
    dx = -pz * r_sigmoid(-x) + (1 - z) * r_sigmoid(x)
    with np.errstate(invalid="ignore"):
        dz = pw * r_softplus(-x) - r_softplus(x)
    dpw = r_times(z, r_softplus(-x))
    return loss, dx, dz, dpw, np.abs(pz * r_sigmoid(-x)) + np.abs((1 - z) * r_sigmoid(x))


def r_focal(z, x, alpha, gamma):
    """Focal loss and its derivatives in log space (no overflow, no 0 * inf)."""
    z, x, alpha, gamma = (np.asarray(a, LD) for a in (z, x, alpha, gamma))
    balanced = alpha >= 0
    a_t = np.where(balanced, alpha * z + (1 - alpha) * (1 - z), LD(1))
    d_a_t = np.where(balanced, 2 * alpha - 1, LD(0))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # log(1 - p_t) = log(z sigmoid(-x) + (1 - z) sigmoid(x))
        lu = np.logaddexp(np.log(z) + r_log_sigmoid(-x), np.log1p(-z) + r_log_sigmoid(x))
        b = r_bce(z, x)
        lb = np.log(b)
        mod = np.exp(gamma * lu)
        loss = np.where(b == 0, LD(0), a_t * mod * b)
        lss = r_log_sigmoid(x) + r_log_sigmoid(-x)  # log(sigmoid(x) sigmoid(-x))
        t1 = np.where(gamma == 0, LD(0), gamma * (1 - 2 * z) * np.exp((gamma - 1) * lu + lss + lb))
        t2 = mod * r_bce_dx(z, x)
        dx = a_t * (t1 + t2)
        scale = a_t * (np.abs(t1) + mod * np.maximum(r_sigmoid(x), z))
        dz2 = np.where(gamma == 0, LD(0), gamma * -np.tanh(x / 2) * np.exp((gamma - 1) * lu + lb))
        dz = d_a_t * mod * b + a_t * (dz2 - x * mod)
        # The magnitudes of the terms before alpha_t scales them (an intermediate that can
        # overflow: focal's growth factor for d/dz is about gamma + 1).
        dz_scale = np.abs(d_a_t * mod * b) + np.abs(dz2) + np.abs(x * mod)
        dalpha = np.where(balanced, (2 * z - 1) * mod * b, LD(0))
        dgamma = -a_t * np.exp(gamma * lu + np.log(-lu) + lb)
    return loss, dx, dz, dalpha, dgamma, scale, dz_scale, lu


def probs_constants(dtype: str):
    """``eps`` and ``1 - eps`` exactly as the dtype computes them (TF's clip bounds)."""
    cd = np.dtype(compute_dtype(dtype))
    eps = cd.type(1e-7)
    return LD(float(eps)), LD(float(cd.type(1) - eps))


def r_probs(z, p, dtype):
    """TF's clipped probability loss, both log arguments rounded in the dtype.

    (Under jit XLA's simplifier used to rewrite ``(1 - p) + eps`` into ``(1 + eps) - p``; the
    library now stops it: test_probs_jit_keeps_tf_constants.)
    """
    z, p = np.asarray(z, LD), np.asarray(p, LD)
    eps, hi = probs_constants(dtype)
    pc = np.clip(p, eps, hi)
    inside = (p > eps) & (p < hi)
    cd = np.dtype(compute_dtype(dtype)).type
    pc_d, eps_d = pc.astype(cd), cd(float(eps))
    a = (pc_d + eps_d).astype(LD)  # TF's formula: log arguments rounded, the logs taken exactly
    b = ((cd(1) - pc_d) + eps_d).astype(LD)
    loss = -(z * np.log(a) + (1 - z) * np.log(b))
    dp = np.where(inside, -z / a + (1 - z) / b, LD(0))
    dz = np.log(b) - np.log(a)
    return loss, dp, dz, np.where(inside, np.maximum(np.abs(z / a), np.abs((1 - z) / b)), LD(0))


# --------------------------------------------------------------------------- kernels


def _elementwise(fn, n_args):
    """jit(value and per-element gradients w.r.t. all ``n_args`` arguments) of ``fn``."""

    def kernel(*args):
        value, vjp = jax.vjp(fn, *args)
        return (value,) + vjp(jnp.ones_like(value))

    return jax.jit(kernel)


KERNELS = {
    "core": _elementwise(sx.sigmoid_cross_entropy_with_logits, 2),
    "weighted": _elementwise(sx.weighted_sigmoid_cross_entropy_with_logits, 3),
    "focal": _elementwise(lambda z, x, a, g: sx.sigmoid_focal_loss(z, x, alpha=a, gamma=g), 4),
    "probs": _elementwise(sx.binary_cross_entropy, 2),
}


def run(name, dtype, *arrays):
    """Runs kernel ``name`` on numpy ``arrays`` converted to ``dtype``; numpy results back."""
    with dtype_scope(dtype):
        args = [jnp.asarray(np.asarray(a).astype(np.float64), jnp.dtype(dtype)) for a in arrays]
        out = KERNELS[name](*args)
        return [np.asarray(o) for o in out]


# --------------------------------------------------------------------------- strategies


def _float_elements(dtype: str):
    fi = finfo(dtype)
    width = {"float16": 16, "bfloat16": 32, "float32": 32, "float64": 64}[dtype]
    top = float(fi.max)
    core = {"float16": 12.0, "bfloat16": 100.0, "float32": 100.0, "float64": 750.0}[dtype]
    sub = float(fi.smallest_subnormal)
    special = [
        0.0,
        -0.0,
        float(fi.tiny),
        -float(fi.tiny),
        sub,
        -sub,
        top,
        -top,
        1.0,
        -1.0,
        core,
        -core,
    ]
    return st.one_of(
        st.sampled_from(special),
        st.floats(-core, core, width=width),  # where sigmoid is neither 0 nor 1 in the dtype
        st.floats(-top, top, width=width, allow_subnormal=True),  # the whole range
    )


def cast(a, dtype: str) -> np.ndarray:
    """float arrays drawn at ``width`` into ``dtype`` (bfloat16 clipped to its own max)."""
    if dtype == "bfloat16":
        top = float(finfo(dtype).max)
        a = np.clip(np.asarray(a, np.float64), -top, top)
    return to_dtype(a, dtype)


def logits(dtype: str, n: int = N):
    base = np.float16 if dtype == "float16" else np.float64
    return hnp.arrays(base, n, elements=_float_elements(dtype)).map(lambda a: cast(a, dtype))


def labels(dtype: str, n: int = N):
    """Hard and soft labels in [0, 1], exactly representable in ``dtype``."""
    elements = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0, width=32))
    return hnp.arrays(np.float64, n, elements=elements).map(lambda a: cast(a, dtype))


def positive(dtype: str, top: float, n: int = N):
    width = 64 if dtype == "float64" else 32
    elements = st.one_of(
        st.sampled_from([0.0, 1.0, top]), st.floats(0.0, top, width=width), st.floats(0.0, 10.0)
    )
    return hnp.arrays(np.float64, n, elements=elements).map(lambda a: cast(a, dtype))


# --------------------------------------------------------------------------- bounds
#
# Accuracy bounds, in ulps of the dtype. float32/float64 are computed natively: the core and the
# weighted loss meet the 4 ulp (loss) and 2 ulp (logits gradient; of max(sigmoid(x), z)
# for soft labels). 16-bit inputs are computed in float32 and rounded once: 1 ulp.
# The focal loss in float32 is evaluated in two-float arithmetic and rounded once (the loss: 0.6
# ulp measured), its derivatives from closed forms with bounded factors (logits and labels
# gradients 4.5, alpha 1.9, gamma 4.3 ulp measured). In float64 it uses plain formulas:
# (1 - p_t)**gamma = exp(gamma * log(1 - p_t)) costs |gamma log(1 - p_t)| / 2 ulp (the rounding
# of that product), so its float64 bound grows with that condition number (focal_bound).

# The weighted logits gradient is pos_weight times the core's (2 ulp) plus one more rounding:
# 3 ulp (measured 2.5; soft labels: in ulps of the sum of the two terms' magnitudes).
LOSS_ULP = {"core": 4.0, "weighted": 4.0}
# float32 focal: loss, d/dx (hard labels: of |d/dx|; soft: of the two terms' magnitudes), d/dz (of
# its terms' magnitudes), d/dalpha, d/dgamma.
FOCAL_ULP = {"loss": 2.0, "dx": 6.0, "dz": 6.0, "dalpha": 3.0, "dgamma": 8.0}
HARD_GRAD_ULP = {"core": 2.0, "weighted": 3.0}
SOFT_GRAD_ULP = {"core": 2.0, "weighted": 3.0}
HALF = ("float16", "bfloat16")


def focal_bound(lu, gamma, base):
    """Focal's plain-formula error model: ``base + 2 |gamma log(1 - p_t)| + 2 gamma`` ulps (the
    rounding of the product, and ``log(1 - p_t)``'s own error of about an ulp of its O(1) terms
    amplified by ``gamma``)."""
    gamma, lu = np.asarray(gamma, np.float64), np.asarray(lu, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        return base + 2.0 * np.where((gamma == 0) | (lu == 0), 0.0, np.abs(gamma * lu) + gamma)


def hard(z):
    z = np.asarray(z, np.float64)
    return (z == 0) | (z == 1)


# --------------------------------------------------------------------------- core


@pytest.mark.parametrize("dtype", DTYPES)
@fuzz()
@given(data=st.data())
def test_core_finite_accurate_and_gradients(dtype, data):
    x = data.draw(logits(dtype), "x")
    z = data.draw(labels(dtype), "z")
    v, gz, gx = run("core", dtype, z, x)
    assert np.all(np.isfinite(v)) and np.all(v >= 0)
    assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gz))
    # d/dz = -x, exactly (or -0 where XLA flushed a subnormal x).
    assert np.all((gz == to_dtype(-ld(x), dtype)) | (gz == to_dtype(-daz(x, dtype), dtype)))
    bound = 1.0 if dtype in HALF else LOSS_ULP["core"]
    assert_within(
        f"core loss {dtype}", ulp_err(v, both(r_bce, dtype, z, x), dtype), bound, x=x, z=z
    )
    h = hard(z)
    gbound = 1.0 if dtype in HALF else HARD_GRAD_ULP["core"]
    want = both(r_bce_dx, dtype, z[h], x[h])
    assert_within(f"core dx hard {dtype}", ulp_err(gx[h], want, dtype), gbound, x=x[h], z=z[h])
    gbound = 1.0 if dtype in HALF else SOFT_GRAD_ULP["core"]
    want = both(r_bce_dx, dtype, z[~h], x[~h])
    scale = both(lambda z, x: np.maximum(r_sigmoid(x), z), dtype, z[~h], x[~h])
    assert_within(
        f"core dx soft {dtype}", ulp_err(gx[~h], want, dtype, scale), gbound, x=x[~h], z=z[~h]
    )


# --------------------------------------------------------------------------- weighted


@pytest.mark.parametrize("dtype", DTYPES)
@fuzz()
@given(data=st.data())
def test_weighted_finite_accurate_and_gradients(dtype, data):
    """pos_weight up to the dtype's max: inf exactly where the exact value overflows."""
    x = data.draw(logits(dtype), "x")
    z = data.draw(labels(dtype), "z")
    pw = data.draw(positive(dtype, float(finfo(dtype).max)), "pos_weight")
    v, gz, gx, gpw = run("weighted", dtype, z, x, pw)
    loss, dx, dz, dpw, scale = both(r_weighted, dtype, z, x, pw)
    for name, got, want in (
        ("loss", v, loss),
        ("dx", gx, dx),
        ("dz", gz, dz),
        ("dpos_weight", gpw, dpw),
    ):
        ok = representable(want[0], dtype) & representable(want[1], dtype)
        assert np.all(np.isfinite(got[ok])), (name, x[ok], z[ok], pw[ok], got[ok])
        over = ~representable(want[0], dtype) & ~np.isnan(want[0]) & (got != want[1])
        assert np.all(np.isinf(got[over & (np.abs(want[1]) > 2 * float(finfo(dtype).max))])), name
    floor = 1 + ld(pw)  # softplus flushed to 0 below tiny, then scaled by pos_weight
    ok = representable(loss[0], dtype)
    bound = 1.0 if dtype in HALF else LOSS_ULP["weighted"]
    assert_within(
        f"weighted loss {dtype}",
        ulp_err(v[ok], (loss[0][ok], loss[1][ok]), dtype, floor=floor[ok]),
        bound,
        x=x[ok],
        z=z[ok],
        pos_weight=pw[ok],
    )
    ok = representable(scale[0], dtype)
    h = hard(z) & ok
    gbound = 1.0 if dtype in HALF else HARD_GRAD_ULP["weighted"]
    assert_within(
        f"weighted dx hard {dtype}",
        ulp_err(gx[h], (dx[0][h], dx[1][h]), dtype, floor=floor[h]),
        gbound,
        x=x[h],
        z=z[h],
        pos_weight=pw[h],
    )
    s = ~hard(z) & ok
    gbound = 1.0 if dtype in HALF else SOFT_GRAD_ULP["weighted"]
    assert_within(
        f"weighted dx soft {dtype}",
        ulp_err(gx[s], (dx[0][s], dx[1][s]), dtype, (scale[0][s], scale[1][s]), floor=floor[s]),
        gbound,
        x=x[s],
        z=z[s],
        pos_weight=pw[s],
    )


# --------------------------------------------------------------------------- focal

GAMMAS = st.one_of(st.sampled_from([0.0, 0.5, 1.0, 2.0]), st.floats(0.0, 1.0), st.floats(0, 6))
ALPHAS = st.one_of(st.sampled_from([-1.0, 0.0, 0.25, 1.0]), st.floats(0.0, 1.0))


@pytest.mark.parametrize("dtype", DTYPES)
@fuzz()
@given(data=st.data())
def test_focal_finite_accurate_and_gradients(dtype, data):
    """alpha in [0, 1] or negative (no balance), gamma in [0, 6], 0 < gamma < 1 included."""
    x = data.draw(logits(dtype), "x")
    z = data.draw(labels(dtype), "z")
    alpha = cast(data.draw(hnp.arrays(np.float64, N, elements=ALPHAS), "alpha"), dtype)
    gamma = cast(data.draw(hnp.arrays(np.float64, N, elements=GAMMAS), "gamma"), dtype)
    v, gz, gx, galpha, ggamma = run("focal", dtype, z, x, alpha, gamma)
    loss, dx, dz, dalpha, dgamma, scale, dz_scale, lu = both(r_focal, dtype, z, x, alpha, gamma)
    # d/dz: finite where its terms' magnitudes (with a margin) are representable.
    dz_terms = (2 * dz_scale[0], 2 * dz_scale[1])
    for name, got, want in (
        ("loss", v, loss),
        ("dx", gx, dx),
        ("dz", gz, dz_terms),
        ("dalpha", galpha, dalpha),
        ("dgamma", ggamma, dgamma),
    ):
        ok = representable(want[0], dtype) & representable(want[1], dtype)
        assert np.all(np.isfinite(got[ok])), (name, x[ok], z[ok], got[ok])
    assert np.all(v >= 0)
    # Intermediates (sigmoid products, a flushed core) flush below tiny before being scaled.
    floor = 4 * (1 + np.abs(ld(x)))
    h = hard(z)
    dx_scale = tuple(np.where(h, np.abs(d), s) for d, s in zip(dx, scale, strict=False))
    checks = (
        ("loss", v, loss, None),
        ("dx", gx, dx, dx_scale),
        ("dz", gz, dz, dz_scale),
        ("dalpha", galpha, dalpha, None),
        ("dgamma", ggamma, dgamma, None),
    )
    inputs = {"x": x, "z": z, "alpha": alpha, "gamma": gamma}
    for name, got, want, scale_ in checks:
        err = ulp_err(got, want, dtype, scale_, floor=floor)
        # Where the exact value (or its terms' magnitude) overflows the dtype, inf is honest.
        ok = representable(want[0], dtype) & representable(want[1], dtype)
        if scale_ is not None:
            ok &= representable(scale_[0], dtype) & representable(scale_[1], dtype)
        err = np.where(ok, err, 0.0)
        if name in ("loss", "dx") and dtype == "float64":
            bound = np.maximum(focal_bound(lu[0], gamma, 4.0), focal_bound(lu[1], gamma, 4.0))
            record(f"focal {name} {dtype} (model)", err / bound, **inputs)
            assert_within(
                f"focal {name} {dtype} (beyond model)", err * (err > bound), 0.0, **inputs
            )
        elif dtype != "float64":
            bound = 1.0 if dtype in HALF else FOCAL_ULP[name]
            assert_within(f"focal {name} {dtype}", err, bound, **inputs)
        if name == "dx":
            record(f"focal dx hard {dtype}", err[h], **{k: a[h] for k, a in inputs.items()})
            record(f"focal dx soft {dtype}", err[~h], **{k: a[~h] for k, a in inputs.items()})
        else:
            record(f"focal {name} {dtype}", err, **inputs)


# --------------------------------------------------------------------------- probabilities


def probs(dtype: str, n: int = N):
    eps, hi = (float(c) for c in probs_constants(dtype))
    fi = finfo(dtype)
    special = [
        0.0,
        1.0,
        eps,
        hi,
        0.5,
        float(fi.tiny),
        float(fi.smallest_subnormal),
        -1.0,
        2.0,
        float(fi.max),
        -float(fi.max),
        1e-3,
        1 - 1e-3,
    ]
    elements = st.one_of(
        st.sampled_from(special),
        st.floats(0.0, 1.0, width=32),
        st.floats(0.0, float(np.float32(1e-4)), width=32),
        st.floats(float(np.float32(0.999)), 1.0, width=32),
    )
    return hnp.arrays(np.float64, n, elements=elements).map(lambda a: cast(a, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@fuzz()
@given(data=st.data())
def test_probs_finite_accurate_and_gradients(dtype, data):
    """binary_cross_entropy: TF's clipped formula, evaluated in the dtype as TF does.

    The log arguments ``p + eps`` and ``1 - p + eps`` are rounded in the dtype before the log
    (that is TF's formula), which costs up to ``unit roundoff`` of absolute error per log term;
    the bound is 4 ulp of the loss plus that.
    """
    p = data.draw(probs(dtype), "p")
    z = data.draw(labels(dtype), "z")
    v, gz, gp = run("probs", dtype, z, p)
    loss, dp, dz, scale = both(lambda z, p: r_probs(z, p, dtype), dtype, z, p)
    assert np.all(np.isfinite(v)) and np.all(np.isfinite(gz))
    # d/dp reaches 1/(2 eps) = 5e6: beyond float16's max, inf is the honest answer there.
    ok = representable(dp[0], dtype)
    assert np.all(np.isfinite(gp[ok]))
    u = LD(2.0) ** -(finfo(compute_dtype(dtype)).nmant + 1)
    cond = 4 * u * (np.abs(ld(z)) + np.abs(1 - ld(z)))  # absolute: rounding inside the logs
    ulps_cond = cond / ulp(loss[0], dtype)
    err = ulp_err(v, loss, dtype)
    record(f"probs loss {dtype}", err, p=p, z=z)
    bound = (1.0 if dtype in HALF else 4.0) + ulps_cond.astype(np.float64)
    assert_within(f"probs loss {dtype} (model)", err / bound, 1.0, p=p, z=z)
    eps, hi = probs_constants(dtype)
    outside = (ld(p) < eps) | (ld(p) > hi)  # clipped: no gradient (at the bounds: jnp.clip's 1/2)
    np.testing.assert_array_equal(gp[outside], 0)
    inside = (ld(p) > eps) & (ld(p) < hi) & ok
    err = ulp_err(gp, dp, dtype, scale)
    record(f"probs dp {dtype}", err[inside], p=p[inside], z=z[inside])
    assert_within(
        f"probs dp {dtype} (model)",
        err[inside],
        1.0 if dtype in HALF else 4.0,
        p=p[inside],
        z=z[inside],
    )


# --------------------------------------------------------------------------- infinite logits


@pytest.mark.parametrize("dtype", DTYPES)
@fuzz(ci_examples=20)
@given(data=st.data())
def test_infinite_logits_every_elementwise_loss(dtype, data):
    """0 where a hard label agrees, inf where not or for soft labels; logits gradients finite."""
    x = np.where(np.arange(N) % 2 == 0, INF, -INF)
    z = data.draw(labels(dtype), "z")
    pw = data.draw(positive(dtype, 10.0), "pos_weight")
    alpha = cast(data.draw(hnp.arrays(np.float64, N, elements=ALPHAS), "alpha"), dtype)
    gamma = cast(data.draw(hnp.arrays(np.float64, N, elements=GAMMAS), "gamma"), dtype)
    zl, pwl, al, gl = (daz(a, dtype) for a in (z, pw, alpha, gamma))  # XLA reads subnormals as 0
    agree = ((x > 0) & (zl == 1)) | ((x < 0) & (zl == 0))
    s = np.where(x > 0, LD(1), LD(0))  # sigmoid(+-inf)

    v, _, gx = run("core", dtype, z, x)
    np.testing.assert_array_equal(v, np.where(agree, 0, INF))
    np.testing.assert_array_equal(gx, to_dtype(s - zl, dtype))

    v, _, gx, _ = run("weighted", dtype, z, x, pw)
    tiny = LD(float(finfo(compute_dtype(dtype)).tiny))
    pz = np.where(pwl * zl < tiny, LD(0), pwl * zl)  # XLA flushes a subnormal pos_weight * z
    term = np.where(x > 0, 1 - zl, pz)  # the label weight of the infinite softplus
    np.testing.assert_array_equal(v, np.where(term == 0, 0, INF))
    want = np.where(x > 0, 1 - zl, -pz)
    assert ulp_err(gx, want, dtype).max() <= 1

    v, _, gx, _, _ = run("focal", dtype, z, x, alpha, gamma)
    a_t = np.where(al >= 0, al * zl + (1 - al) * (1 - zl), LD(1))
    u = np.where(x > 0, 1 - zl, zl)  # 1 - p_t at +-inf
    with np.errstate(divide="ignore", invalid="ignore"):
        mod = np.where(u == 0, LD(0), np.exp(gl * np.log(u)))
    # alpha_t = 0 switches the term off (0, even times an infinite bce); a (1 - p_t)**gamma
    # below tiny times an infinite bce is still inf.
    ok = a_t != 0
    np.testing.assert_array_equal(v[ok], np.where(agree, 0, INF)[ok])
    want = a_t * mod * (s - zl)
    with np.errstate(divide="ignore"):
        bound = 1.0 if dtype in HALF else focal_bound(np.log(u), gamma, 4.0)
    err = ulp_err(gx, want, dtype)
    assert np.all((err <= bound)[ok]), (gx, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_infinite_and_extreme_probabilities(dtype):
    """binary_cross_entropy clips: +-inf and out-of-range p give the clip bounds' finite loss."""
    p = np.array([INF, -INF, 2.0, -1.0, 1.0, 0.0] * 2)
    z = np.repeat([0.0, 1.0], 6)
    v, gz, gp = run("probs", dtype, np.resize(z, N), np.resize(p, N))
    assert np.all(np.isfinite(v)) and np.all(np.isfinite(gz))
    np.testing.assert_array_equal(gp[:12][np.abs(p[np.arange(12) % 6]) > 1], 0)


# --------------------------------------------------------------------------- NaN


@pytest.mark.parametrize("dtype", DTYPES)
@fuzz(ci_examples=20)
@given(data=st.data())
def test_nan_propagates_elementwise(dtype, data):
    """A NaN in any argument gives NaN in that element's loss and logits gradient, nowhere else
    (every elementwise loss)."""
    x = data.draw(logits(dtype), "x")
    for name, n_args in (("core", 2), ("weighted", 3), ("focal", 4), ("probs", 2)):
        args = [np.full(N, 0.5), x] + [np.full(N, v) for v in (0.25, 2.0)][: n_args - 2]
        masks = [data.draw(hnp.arrays(bool, N), f"{name} NaN mask {i}") for i in range(n_args)]
        args = [np.where(m, np.nan, a) for a, m in zip(args, masks, strict=False)]
        out = run(name, dtype, *args)
        any_nan = np.logical_or.reduce(masks)
        np.testing.assert_array_equal(np.isnan(out[0]), any_nan, err_msg=name)
        assert np.all(np.isnan(out[2][any_nan])), name
        assert not np.any(np.isnan(out[2][~any_nan])), name


# --------------------------------------------------------------------------- symmetry


@pytest.mark.parametrize("dtype", DTYPES)
@fuzz(ci_examples=20)
@given(data=st.data())
def test_symmetry_is_exact(dtype, data):
    """loss(z, x) == loss(1 - z, -x) bit for bit, gradients negated; focal with alpha -> 1 - alpha.

    Labels are drawn so that 1 - z is exact in the dtype (then 1 - (1 - z) == z).
    """
    x = data.draw(logits(dtype), "x")
    z = data.draw(labels(dtype), "z")
    zc = to_dtype(1 - ld(z), dtype)
    z = np.where(ld(to_dtype(1 - ld(zc), dtype)) == ld(z), z, to_dtype(np.round(ld(z)), dtype))
    zc = to_dtype(1 - ld(z), dtype)
    v1, _, g1 = run("core", dtype, z, x)
    v2, _, g2 = run("core", dtype, zc, -x)
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_array_equal(g1, -g2)
    alpha = cast(
        data.draw(
            hnp.arrays(np.float64, N, elements=st.sampled_from([0.25, 0.5, 0.75, -1.0])), "alpha"
        ),
        dtype,
    )
    gamma = cast(data.draw(hnp.arrays(np.float64, N, elements=GAMMAS), "gamma"), dtype)
    alpha_c = np.where(alpha < 0, alpha, to_dtype(1 - ld(alpha), dtype))
    v1, _, g1, _, _ = run("focal", dtype, z, x, alpha, gamma)
    v2, _, g2, _, _ = run("focal", dtype, zc, -x, alpha_c, gamma)
    # alpha_t = alpha z + (1 - alpha)(1 - z) may be contracted into an FMA, on one side only.
    tol = 1 if dtype in HALF else 4
    assert_within(f"focal symmetry {dtype}", ulp_err(v1, ld(v2), dtype), tol, x=x, z=z)
    assert_within(f"focal dx symmetry {dtype}", ulp_err(g1, -ld(g2), dtype), tol, x=x, z=z)
    # -0.0 is 0.0
    v0 = run("core", dtype, z, np.full(N, -0.0))[0]
    np.testing.assert_array_equal(v0, run("core", dtype, z, np.zeros(N))[0])


# --------------------------------------------------------------------------- monotonicity


@pytest.mark.parametrize("dtype", DTYPES)
@fuzz(ci_examples=20)
@given(data=st.data())
def test_monotone_in_logits_for_hard_labels(dtype, data):
    """Label 1: non-increasing in x; label 0: non-decreasing (every loss, every dtype)."""
    x = np.sort(data.draw(logits(dtype), "x").astype(np.float64))
    pw = np.full(N, data.draw(st.sampled_from([0.5, 1.0, 3.0, 100.0]), "pos_weight"))
    alpha = np.full(N, data.draw(st.sampled_from([0.25, -1.0]), "alpha"))
    gamma = np.full(N, data.draw(st.sampled_from([0.0, 0.3, 1.0, 2.0, 4.5]), "gamma"))

    def ordered(v, label):  # inf-safe: no differences taken
        v = v.astype(np.float64)
        return np.all(v[1:] <= v[:-1]) if label == 1 else np.all(v[1:] >= v[:-1])

    for label in (1.0, 0.0):
        z = np.full(N, label)
        for name, extra in (("core", ()), ("weighted", (pw,)), ("focal", (alpha, gamma))):
            v = run(name, dtype, z, x, *extra)[0]
            assert ordered(v, label), (name, label, x, v)
        p = np.sort(np.clip(np.abs(x), 0, 1))  # probabilities
        v = run("probs", dtype, z, p)[0]
        assert ordered(v, label), ("probs", label, p, v)


# --------------------------------------------------------------------------- entropy bound


@pytest.mark.parametrize("dtype", DTYPES)
@fuzz(ci_examples=20)
@given(data=st.data())
def test_loss_at_least_binary_entropy(dtype, data):
    """loss(z, x) = H(z) + KL(z || sigmoid(x)) >= H(z), tightest at x = logit(z).

    The computed loss is within its accuracy bound of the exact one, so it may fall below H(z)
    by that much at most (near x = logit(z), where the gap is 0): checked against H(z) rounded
    to the dtype, minus the loss bound (4 ulp; 1 for 16-bit); the worst deficit is recorded.
    """
    z = data.draw(labels(dtype), "z")
    near = data.draw(hnp.arrays(np.float64, N, elements=st.floats(-1e-3, 1e-3)), "offset")
    with np.errstate(divide="ignore"):
        x_star = np.log(ld(z)) - np.log1p(-ld(z))  # logit(z)
    x = np.where(
        data.draw(hnp.arrays(bool, N), "near logit"),
        cast(x_star + near, dtype),
        data.draw(logits(dtype), "x"),
    )
    v = run("core", dtype, z, x)[0]
    h = ld(to_dtype(r_entropy(ld(z)), dtype))
    flush = 2 * LD(float(finfo(compute_dtype(dtype)).tiny))  # exp(-|x|) flushed below tiny
    deficit = (h - ld(v) - flush) / ulp(h, dtype)
    tol = 1.0 if dtype in HALF else LOSS_ULP["core"]
    assert_within(f"core H(z) - loss {dtype}", deficit, tol, x=x, z=z)


# --------------------------------------------------------------------------- second order


def _hessian_diagonal(fn):
    """Per-element d2/dx2 of an elementwise loss (vmap of the scalar Hessian), jitted."""
    return jax.jit(jax.vmap(jax.hessian(fn, argnums=1)))


HESSIANS = {
    "core": _hessian_diagonal(lambda z, x: sx.sigmoid_cross_entropy_with_logits(z, x)),
    "weighted": _hessian_diagonal(
        lambda z, x, pw: sx.weighted_sigmoid_cross_entropy_with_logits(z, x, pw)
    ),
    "focal": _hessian_diagonal(lambda z, x, a, g: sx.sigmoid_focal_loss(z, x, alpha=a, gamma=g)),
}


def run_hessian(name, dtype, *arrays):
    with dtype_scope(dtype):
        args = [jnp.asarray(np.asarray(a).astype(np.float64), jnp.dtype(dtype)) for a in arrays]
        return np.asarray(HESSIANS[name](*args))


@pytest.mark.parametrize("dtype", DTYPES)
@fuzz()
@given(data=st.data())
def test_hessian_is_sigmoid_product_without_cancellation(dtype, data):
    """d2/dx2 = sigmoid(x) sigmoid(-x) (times pos_weight z + 1 - z): accurate, > 0 until it
    underflows (no 1 - sigmoid cancellation to 0 at large |x|)."""
    x = data.draw(logits(dtype), "x")
    z = data.draw(labels(dtype), "z")
    pw = data.draw(positive(dtype, 100.0), "pos_weight")
    h = run_hessian("core", dtype, z, x)
    want = both(lambda x: r_sigmoid(x) * r_sigmoid(-x), dtype, x)
    tiny = LD(float(finfo(dtype).tiny))
    assert np.all(h[(want[0] > tiny) & (want[1] > tiny)] > 0)
    # The Hessian is autodiff of the backward rule's e / (1 + e) (a few roundings): 3 ulp
    # (measured 2.3 with 200 examples per property).
    bound = 1.0 if dtype in HALF else 3.0
    assert_within(f"core hessian {dtype}", ulp_err(h, want, dtype), bound, x=x)
    hw = run_hessian("weighted", dtype, z, x, pw)
    want = both(lambda z, x, pw: (pw * z + (1 - z)) * r_sigmoid(x) * r_sigmoid(-x), dtype, z, x, pw)
    bound = 1.0 if dtype in HALF else 4.0
    assert_within(
        f"weighted hessian {dtype}",
        ulp_err(hw, want, dtype, floor=1 + ld(pw)),
        bound,
        x=x,
        z=z,
        pos_weight=pw,
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@fuzz(ci_examples=20)
@given(data=st.data())
def test_focal_hessian_finite_for_small_gamma(dtype, data):
    """0 < gamma < 1: (1 - p_t)**gamma has an infinite derivative at p_t = 1; ours stays finite,
    also where exp(-2|x|) underflows but exp(-|x|) does not (44 <= |x| <= 87 in float32)."""
    x = data.draw(logits(dtype), "x")
    z = data.draw(labels(dtype), "z")
    gamma = cast(data.draw(hnp.arrays(np.float64, N, elements=st.floats(0, 1)), "gamma"), dtype)
    h = run_hessian("focal", dtype, z, x, np.full(N, 0.25), gamma)
    assert np.all(np.isfinite(h)), (x[~np.isfinite(h)], z[~np.isfinite(h)])


# --------------------------------------------------------------------------- parameter edges


@pytest.mark.parametrize("dtype", DTYPES)
@fuzz(ci_examples=20)
@given(data=st.data())
def test_focal_gamma_zero_is_alpha_t_times_plain_loss(dtype, data):
    """gamma = 0, static (Python 0.0) or traced (an array): alpha_t * bce.

    Both within the focal loss's own bound of the exact alpha_t * bce (float32: 2 ulp; 16-bit:
    1 ulp; float64: 4), and within 4 ulp of alpha_t times our plain loss (itself within 2 ulp).
    """
    x = data.draw(logits(dtype), "x")
    z = data.draw(labels(dtype), "z")
    alpha = cast(data.draw(hnp.arrays(np.float64, N, elements=ALPHAS), "alpha"), dtype)
    traced = run("focal", dtype, z, x, alpha, np.zeros(N))[0]
    with dtype_scope(dtype):
        static = np.asarray(
            FOCAL_STATIC_GAMMA_0(jnp.asarray(z), jnp.asarray(x), jnp.asarray(alpha))
        )
    al, zl = ld(alpha), ld(z)
    a_t = np.where(al >= 0, al * zl + (1 - al) * (1 - zl), LD(1))

    def r_balanced(z, x, al):
        return np.where(al >= 0, al * z + (1 - al) * (1 - z), LD(1)) * r_bce(z, x)

    exact = both(r_balanced, dtype, z, x, alpha)
    bound = {"float32": FOCAL_ULP["loss"], "float64": 4.0}.get(dtype, 1.0)
    floor = 4 * (1 + np.abs(ld(x)))
    for got in (static, traced):
        assert_within(
            f"focal gamma 0 {dtype}",
            ulp_err(got, exact, dtype, floor=floor),
            bound,
            x=x,
            z=z,
            alpha=alpha,
        )
    plain = a_t * ld(run("core", dtype, z, x)[0])
    assert ulp_err(traced, plain, dtype, floor=floor).max() <= 4


FOCAL_STATIC_GAMMA_0 = jax.jit(lambda z, x, a: sx.sigmoid_focal_loss(z, x, alpha=a, gamma=0.0))


FOCAL_NO_ALPHA = jax.jit(lambda z, x: sx.sigmoid_focal_loss(z, x, alpha=None, gamma=2.0))


def test_focal_negative_alpha_disables_balancing():
    """alpha < 0 (torchvision's -1; traced here) is alpha=None: no balance, no alpha gradient."""
    x = np.resize([-INF, -50.0, -1.0, 0.0, 2.0, 30.0, INF], N)
    z = np.resize([0.0, 1.0, 0.3], N)
    plain = np.asarray(FOCAL_NO_ALPHA(jnp.asarray(z, jnp.float32), jnp.asarray(x, jnp.float32)))
    for alpha in (-1.0, -1e-30):
        v, _, _, g_alpha, _ = run("focal", "float32", z, x, np.full(N, alpha), np.full(N, 2.0))
        np.testing.assert_array_equal(v, plain)
        np.testing.assert_array_equal(g_alpha[np.isfinite(x)], 0.0)


@pytest.mark.parametrize("dtype", DTYPES)
@fuzz(ci_examples=20)
@given(data=st.data())
def test_pos_weight_edges(dtype, data):
    """pos_weight 1 is the plain loss (4 ulp), 0 leaves (1 - z) softplus(x) (exact)."""
    x = data.draw(logits(dtype), "x")
    z = data.draw(labels(dtype), "z")
    plain = run("core", dtype, z, x)[0]
    one = run("weighted", dtype, z, x, np.ones(N))[0]
    assert ulp_err(one, ld(plain), dtype).max() <= (1 if dtype in HALF else 4)
    zero = run("weighted", dtype, z, x, np.zeros(N))
    neg = both(lambda z, x: r_times(1 - z, r_softplus(x)), dtype, z, x)
    assert ulp_err(zero[0], neg, dtype).max() <= (1 if dtype in HALF else 2)
    assert np.all(np.isfinite(zero[2]))


# --------------------------------------------------------------------------- regressions
# Defects the campaign found (each was a strict xfail until fixed), at the inputs that showed them.


def test_probs_jit_keeps_tf_constants():
    z, p = jnp.array([0.0, 1.0]), jnp.array([1.0, 0.0])
    want = np.array([15.333239, 15.424949], np.float32)
    np.testing.assert_array_equal(sx.binary_cross_entropy(z, p), want)  # eager: right
    np.testing.assert_array_equal(jax.jit(sx.binary_cross_entropy)(z, p), want)


def test_focal_zero_alpha_t_or_underflowing_modulator_times_infinite_bce():
    x = jnp.array([-INF, INF, -INF])
    z = jnp.array([1.0, 0.0, 1e-20])
    out = [
        sx.sigmoid_focal_loss(z[:1], x[:1], alpha=0.0, gamma=2.0),  # alpha_t = 0: the class is off
        sx.sigmoid_focal_loss(z[1:2], x[1:2], alpha=1.0, gamma=2.0),
        sx.sigmoid_focal_loss(z[2:], x[2:], alpha=0.25, gamma=2.0),
    ]  # 0.25 (1e-20)**2 * inf
    np.testing.assert_array_equal(np.concatenate(out), [0.0, 0.0, INF])


def test_focal_nan_alpha_propagates():
    out = sx.sigmoid_focal_loss(
        jnp.array([1.0, 0.0]), jnp.array([1.0, 2.0]), alpha=jnp.nan, gamma=2.0
    )
    assert np.all(np.isnan(out))


def test_weighted_pos_weight_gradient_at_infinite_logits():
    g = jax.grad(
        lambda pw: sx.weighted_sigmoid_cross_entropy_with_logits(
            jnp.array([0.0, 0.0]), jnp.array([-INF, INF]), pw
        ).sum()
    )(2.0)
    assert float(g) == 0.0


def test_focal_gamma_gradient_at_infinite_logits():
    for z, x in ((0.0, INF), (1.0, -INF)):
        g = jax.grad(
            lambda gm, z=z, x=x: sx.sigmoid_focal_loss(
                jnp.float32(z), jnp.float32(x), alpha=0.25, gamma=gm
            )
        )(2.0)
        assert float(g) == 0.0, (z, x, g)


def _focal_d2x_exact(z, x, alpha, gamma):
    """d2/dx2 of the focal loss at one point, by mpmath at 50 digits."""
    with mpmath.workdps(50):
        z, alpha, gamma = mpmath.mpf(z), mpmath.mpf(alpha), mpmath.mpf(gamma)

        def f(x):
            p = 1 / (1 + mpmath.exp(-x))
            p_t = z * p + (1 - z) * (1 - p)
            a_t = alpha * z + (1 - alpha) * (1 - z)
            return a_t * (1 - p_t) ** gamma * -mpmath.log(p_t)

        return float(mpmath.diff(f, mpmath.mpf(x), 2))


def test_focal_hessian_finite_at_saturation():
    # Agreeing logits (x > 0 for z = 1): the exact value, flushed below tiny. Disagreeing (x =
    # -60): the exact value is -6.1e-26 (negative: a e^x (1 + gamma (x + 2))), formed from
    # terms of size alpha that cancel, so within an ulp of alpha.
    points = [30.0, 45.0, 60.0, 80.0, 90.0, 200.0, -60.0]
    x = np.resize(points, N)
    h = run_hessian("focal", "float32", np.ones(N), x, np.full(N, 0.25), np.full(N, 0.5))
    assert np.all(np.isfinite(h))
    want = np.resize([_focal_d2x_exact(1.0, p, 0.25, 0.5) for p in points], N)
    f32 = np.finfo(np.float32)
    atol = np.where(x < 0, 0.25 * float(f32.eps), float(f32.tiny))
    assert np.all(np.abs(h - want) <= atol + 1e-5 * np.abs(want)), (h[:7], want[:7])


def _focal_dz_exact(z, x, alpha, gamma):
    return float(r_focal(LD(z), LD(x), LD(alpha), LD(gamma))[2])


def test_focal_label_gradient_near_zero_logits():
    for x in (1.6464094e-17, 1e-6, -3e-5):
        g = jax.grad(
            lambda z, x=x: sx.sigmoid_focal_loss(z, jnp.float32(x), alpha=-1.0, gamma=0.5)
        )(jnp.float32(0.0))
        np.testing.assert_allclose(g, _focal_dz_exact(0.0, x, -1.0, 0.5), rtol=1e-5)


def test_focal_label_gradient_at_saturation():
    g = jax.grad(lambda z: sx.sigmoid_focal_loss(z, jnp.float32(-30.0), alpha=-1.0, gamma=2.0))(
        jnp.float32(0.0)
    )
    np.testing.assert_allclose(g, _focal_dz_exact(0.0, -30.0, -1.0, 2.0), rtol=1e-5)


def test_focal_accuracy_within_4_ulp():
    """Was 75 ulp at gamma 3.7 (plain exp(gamma log(1 - p_t)) in float32)."""
    x = np.linspace(-20, 20, 4001).astype(np.float32)
    for z, gamma in ((0.0, 2.0), (1.0, 2.0), (1e-6, 2.0), (0.0, 3.7), (0.3, 6.0), (1.0, 0.2)):
        zz = np.full_like(x, z)
        got = sx.sigmoid_focal_loss(zz, x, alpha=0.25, gamma=gamma)
        want = r_focal(ld(zz), ld(x), LD(0.25), ld(np.float32(gamma)))[0]
        assert ulp_err(got, want, "float32").max() <= 4, (z, gamma)


def test_focal_near_float32_max():
    """bce near the float32 maximum: exp(log bce) must not overflow on the way (0.75 * 3.4e38)."""
    x = jnp.array([3.4028235e38, -3.4028235e38, 1e38], jnp.float32)
    z = jnp.array([0.0, 1.0, 0.0], jnp.float32)
    want = 0.75 * ld(np.asarray(x)) * np.array([1, 1, 1], LD)
    got = sx.sigmoid_focal_loss(z, x, alpha=jnp.array([0.25, 0.75, 0.25]), gamma=0.0)
    assert ulp_err(np.asarray(got), np.abs(want), "float32").max() <= 2


def test_focal_float64_log_one_minus_label():
    """XLA:CPU's float64 log1p is 120 ulp off on [-0.5, -0.25]; log(1 - z) must not use it."""
    z, x = np.full(N, 0.40625), np.full(N, float(np.finfo(np.float64).max))
    v = run("focal", "float64", z, x, np.full(N, -1.0), np.full(N, 0.5))[0]
    want = r_focal(ld(z), ld(x), LD(-1), LD(0.5))[0]
    assert ulp_err(v, want, "float64").max() <= 4


def test_focal_full_hessian_finite_at_hard_labels():
    """Reverse over reverse in (z, x) at hard labels: no NaN from an unselected branch."""
    with x64():
        f = jax.jit(
            jax.hessian(lambda zx: sx.sigmoid_focal_loss(zx[0], zx[1], alpha=0.25, gamma=2.0))
        )
        for z, x in ((1.0, -0.3), (0.0, 0.3), (1.0, 5.0), (0.0, -4.0), (1.0, 60.0)):
            assert np.all(np.isfinite(f(jnp.array([z, x])))), (z, x)
