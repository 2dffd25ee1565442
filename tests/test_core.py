"""The elementwise core and its companions: values, gradients, dtypes, transforms, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import optax
import pytest
from conftest import ref_grad, ref_loss, ref_sigmoid, ulp_distance, ulp_error, x64
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads

import sigmoid_xent as sx

sce = sx.sigmoid_cross_entropy_with_logits
INF = np.inf

# Logits over the whole float32 range, labels hard and soft.
GRID_X = np.concatenate(
    [-np.logspace(-40, 38, 157), [-0.0, 0.0], np.logspace(-40, 38, 157), np.linspace(-30, 30, 241)]
).astype(np.float32)


def grid(labels):
    x = np.repeat(GRID_X[None], len(labels), 0).ravel()
    z = np.repeat(np.asarray(labels, np.float32)[:, None], GRID_X.size, 1).ravel()
    return z, x


# --------------------------------------------------------------------------- seeds


def test_seed_tf_nn_example():
    logits = jnp.array([1.0, -1.0, 0.0, 1.0, -1.0, 0.0, 0.0])
    labels = jnp.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.5])
    expected = [1.3132617, 0.3132617, 0.6931472, 0.3132617, 1.3132617, 0.6931472, 0.6931472]
    np.testing.assert_allclose(sce(labels, logits), expected, rtol=1e-7)


def test_seed_softmax_equivalence_example():
    out = sce(jnp.array([1.0, 1.0, 0.0]), jnp.array([1.0, -1.0, 0.0]))
    # log(1 + e) = 1.31326168752 lies almost halfway between two floats: TF's pages print it as
    # 1.3132617 (example above) and 1.3132616 (here), so allow that 1 ulp.
    np.testing.assert_allclose(out, [0.31326166, 1.3132616, 0.6931472], rtol=1.2e-7)


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("labels", [[0.0, 1.0], [0.5, 0.1, 0.9, 0.999]])
def test_loss_matches_float64_reference_over_float32_range(labels):
    z, x = grid(labels)
    got = np.asarray(sce(z, x))
    want = ref_loss(z, x)
    finite = np.isfinite(want) & (np.abs(want) < np.finfo(np.float32).max)
    assert np.all(np.isfinite(got[finite]))
    err = ulp_error(got[finite], want[finite])
    assert err.max() <= 4, (z[finite][err.argmax()], x[finite][err.argmax()], err.max())


def test_loss_float64_matches_mpmath():
    xs = [-745.0, -50.0, -1e-300, 0.0, 1e-10, 3.5, 36.0, 700.0, 1e300]
    zs = [0.0, 1.0, 0.3]
    mpmath.mp.dps = 60
    with x64():
        for z in zs:
            got = np.asarray(sce(jnp.full(len(xs), z), jnp.array(xs, jnp.float64)))
            assert got.dtype == np.float64
            for g, x in zip(got, xs, strict=True):
                mx, mz = mpmath.mpf(x), mpmath.mpf(z)
                want = float(mpmath.log1p(mpmath.exp(-abs(mx))) + max(mx, 0) - mx * mz)
                assert abs(g - want) <= 4 * np.spacing(abs(want)) + 1e-300, (z, x, g, want)


def test_infinite_logits():
    x = jnp.array([INF, INF, INF, -INF, -INF, -INF])
    z = jnp.array([1.0, 0.0, 0.5, 0.0, 1.0, 0.5])
    loss = sce(z, x)
    np.testing.assert_array_equal(loss, [0.0, INF, INF, 0.0, INF, INF])
    grad = jax.grad(lambda x: sce(z, x).sum())(x)
    np.testing.assert_array_equal(grad, [0.0, 1.0, 0.5, 0.0, -1.0, -0.5])


def test_nan_propagates():
    x = jnp.array([jnp.nan, 0.0, jnp.nan, 2.0])
    z = jnp.array([1.0, jnp.nan, 0.0, jnp.nan])
    assert np.all(np.isnan(sce(z, x)))
    assert np.all(np.isnan(jax.grad(lambda x: sce(z, x).sum())(x)))


def test_labels_outside_unit_interval_use_formula():
    z = jnp.array([2.0, -1.0])
    x = jnp.array([0.7, -0.4])
    np.testing.assert_allclose(sce(z, x), ref_loss(z, x), rtol=1e-6)


# --------------------------------------------------------------------------- gradients


def test_gradient_at_30_does_not_cancel():
    g = jax.grad(sce, argnums=1)(jnp.float32(1.0), jnp.float32(30.0))
    np.testing.assert_array_equal(g, np.float32(-9.357623e-14))
    # The naive `sigmoid(x) - z` gives exactly 0 there.
    assert float(jax.nn.sigmoid(jnp.float32(30.0)) - 1) == 0.0


def test_second_derivative_at_30_does_not_cancel():
    h = jax.hessian(sce, argnums=1)(jnp.float32(1.0), jnp.float32(30.0))
    exact = mpmath.exp(-30) / (1 + mpmath.exp(-30)) ** 2  # 9.3576229688e-14
    assert ulp_distance(np.float32(h), np.float32(float(exact))) <= 1
    np.testing.assert_allclose(h, 9.357622e-14, rtol=2e-7)


@pytest.mark.parametrize("labels", [[0.0, 1.0]])
def test_logits_gradient_within_2_ulp_for_hard_labels(labels):
    z, x = grid(labels)
    got = np.asarray(jax.grad(lambda x: sce(z, x).sum())(x))
    assert ulp_error(got, ref_grad(z, x)).max() <= 2


def test_logits_gradient_soft_labels_within_2_ulp_of_scale():
    z, x = grid([0.5, 0.1, 0.9, 0.999])
    got = np.asarray(jax.grad(lambda x: sce(z, x).sum())(x), np.float64)
    want = ref_grad(z, x)
    scale = np.maximum(ref_sigmoid(x), z).astype(np.float32)
    assert np.all(np.abs(got - want) <= 2 * np.spacing(scale))


def test_labels_gradient_is_minus_logits():
    x = jnp.array([-3.0, 0.0, 2.5, 100.0])
    z = jnp.array([0.2, 1.0, 0.0, 0.5])
    gz = jax.grad(lambda z: sce(z, x).sum())(z)
    np.testing.assert_array_equal(gz, -x)


def test_hessian_diagonal_is_sigmoid_product():
    x = jnp.array([-40.0, -3.0, 0.0, 1.5, 30.0, 80.0])
    z = jnp.array([1.0, 0.0, 0.5, 1.0, 1.0, 0.0])
    h = jax.jit(jax.hessian(lambda x: sce(z, x).sum()))(x)
    want = ref_sigmoid(x) * ref_sigmoid(-np.asarray(x, np.float64))
    np.testing.assert_allclose(np.diag(h), want, rtol=4e-7)
    assert np.all(np.diag(h) > 0)
    np.testing.assert_array_equal(h - np.diag(np.diag(h)), 0.0)


def test_derivatives_at_exactly_zero():
    # jnp.abs has derivative 0 at 0; the core must not inherit that.
    h = jax.hessian(sce, argnums=1)(jnp.float32(0.7), jnp.float32(0.0))
    np.testing.assert_allclose(h, 0.25, rtol=1e-7)
    g = jax.grad(lambda x: sx.sigmoid_focal_loss(jnp.float32(1.0), x, alpha=0.25, gamma=2.0))(0.0)
    # d/dx [0.25 * sigmoid(-x)**2 * softplus(-x)] at 0
    want = 0.25 * (2 * 0.5 * -0.25 * np.log(2) + 0.25 * -0.5)
    np.testing.assert_allclose(g, want, rtol=1e-6)


def test_mixed_second_derivative_is_minus_one():
    d2 = jax.jacrev(jax.jacrev(sce, argnums=1), argnums=0)(jnp.float32(0.3), jnp.float32(-2.0))
    np.testing.assert_allclose(d2, -1.0)


def test_check_grads_float64():
    with x64():
        x = jnp.array([-4.0, -0.3, 0.0, 0.7, 5.0], jnp.float64)
        z = jnp.array([0.0, 1.0, 0.4, 0.9, 1.0], jnp.float64)
        check_grads(jax.jit(sce), (z, x), order=2, modes=("rev",))
        check_grads(
            jax.jit(lambda z, x: sx.weighted_sigmoid_cross_entropy_with_logits(z, x, 2.5)),
            (z, x),
            order=2,
            modes=("rev",),
        )
        check_grads(
            jax.jit(lambda z, x: sx.sigmoid_focal_loss(z, x, alpha=0.25, gamma=2.0)),
            (z, x),
            order=2,
            modes=("rev",),
        )
        p = jnp.array([0.1, 0.4, 0.5, 0.8, 0.95], jnp.float64)
        check_grads(jax.jit(sx.binary_cross_entropy), (z, p), order=2, modes=("rev",))


@given(
    st.floats(-float(np.finfo(np.float32).max), float(np.finfo(np.float32).max), width=32),
    st.floats(0.0, 1.0, width=32),
)
def test_property_finite_value_and_grads(x, z):
    x, z = jnp.float32(x), jnp.float32(z)
    val, (gz, gx) = jax.value_and_grad(sce, argnums=(0, 1))(z, x)
    assert np.isfinite(val) and np.isfinite(gx) and np.isfinite(gz)
    assert -1.0 <= float(gx) <= 1.0
    assert val >= 0


@given(st.floats(-100, 100, allow_nan=False, width=32), st.floats(0.0, 1.0, width=32))
def test_property_symmetry(x, z):
    a = sce(jnp.float32(z), jnp.float32(x))
    b = sce(1 - jnp.float32(z), -jnp.float32(x))
    np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-6)


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_16bit_inputs_computed_in_float32(dtype):
    x = jnp.array([-20.0, -1.0, 0.0, 0.5, 8.0, 60.0], dtype)
    z = jnp.array([1.0, 0.0, 0.5, 1.0, 1.0, 0.0], dtype)
    out = sce(z, x)
    assert out.dtype == dtype
    want = sce(z.astype(jnp.float32), x.astype(jnp.float32)).astype(dtype)
    np.testing.assert_array_equal(out.astype(jnp.float32), want.astype(jnp.float32))
    gx, gz = jax.grad(lambda x, z: sce(z, x).sum(), argnums=(0, 1))(x, z)
    assert gx.dtype == dtype and gz.dtype == dtype


def test_float64_stays_float64():
    with x64():
        x = jnp.array([0.5, -2.0], jnp.float64)
        for fn in (
            sce,
            sx.sigmoid_focal_loss,
            lambda z, x: sx.weighted_sigmoid_cross_entropy_with_logits(z, x, 2.0),
        ):
            assert fn(jnp.array([1.0, 0.0]), x).dtype == jnp.float64
        assert sx.binary_cross_entropy(jnp.array([1.0]), jnp.array([0.3])).dtype == jnp.float64


def test_integer_and_bool_labels_cast_to_logits_dtype():
    x = jnp.array([1.0, -1.0, 0.0])
    for z in (jnp.array([1, 0, 1]), jnp.array([True, False, True])):
        np.testing.assert_array_equal(sce(z, x), sce(jnp.array([1.0, 0.0, 1.0]), x))


def test_mixed_float_labels_and_logits():
    x = jnp.array([1.0, -1.0], jnp.bfloat16)
    z = jnp.array([0.3, 0.9], jnp.float32)
    out = sce(z, x)
    assert out.dtype == jnp.bfloat16
    gz = jax.grad(lambda z: sce(z, x).astype(jnp.float32).sum())(z)
    assert gz.dtype == jnp.float32


# --------------------------------------------------------------------------- errors


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"labels.*\(3,\).*logits.*\(2, 3\)"):
        sce(jnp.zeros(3), jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="same shape"):
        sce(1.0, jnp.zeros(3))  # no broadcasting, not even a scalar label


def test_integer_logits_are_type_error():
    with pytest.raises(TypeError, match="logits.*floating.*int32"):
        sce(jnp.zeros(3), jnp.zeros(3, jnp.int32))


def test_none_inputs_are_value_errors():
    with pytest.raises(ValueError, match="labels"):
        sce(None, jnp.zeros(3))
    with pytest.raises(ValueError, match="logits"):
        sce(jnp.zeros(3), None)


# --------------------------------------------------------------------------- weighted


def test_weighted_accurate_where_tf_cancels():
    out = sx.weighted_sigmoid_cross_entropy_with_logits(
        jnp.array([1.0, 0.5, 0.0]), jnp.array([1.5, -0.1, -10.0]), 1.5
    )
    want = [
        1.5 * ref_loss(1, 1.5),
        0.75 * ref_loss(1, -0.1) + 0.5 * ref_loss(0, -0.1),
        ref_loss(0, -10.0),
    ]
    np.testing.assert_allclose(out, want, rtol=2e-7)
    np.testing.assert_allclose(out[2], 4.5399e-05, rtol=1e-4)
    assert abs(float(out[2]) - 4.5776e-05) > 3e-7  # TF's cancelled float32 value


def test_weighted_per_class_pos_weight_and_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3)).astype(np.float32) * 5
    z = rng.uniform(size=(4, 3)).astype(np.float32)
    pw = np.array([0.5, 1.0, 3.0], np.float32)
    out = sx.weighted_sigmoid_cross_entropy_with_logits(z, x, pw)
    want = pw * z * ref_loss(1, x) + (1 - z) * ref_loss(0, x)
    np.testing.assert_allclose(out, want, rtol=1e-6)
    np.testing.assert_allclose(
        sx.weighted_sigmoid_cross_entropy_with_logits(z, x, 1.0), sce(z, x), rtol=1e-6
    )


def test_weighted_gradients_and_inf():
    x = jnp.array([INF, -INF, 40.0, -40.0])
    z = jnp.array([1.0, 1.0, 0.0, 1.0])
    f = lambda x: sx.weighted_sigmoid_cross_entropy_with_logits(z, x, 3.0).sum()  # noqa: E731
    np.testing.assert_array_equal(
        sx.weighted_sigmoid_cross_entropy_with_logits(z, x, 3.0)[:2], [0.0, INF]
    )
    g = jax.grad(f)(x)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, [0.0, -3.0, 1.0, -3.0], atol=1e-12)


def test_weighted_pos_weight_not_broadcastable():
    with pytest.raises(ValueError, match=r"pos_weight.*\(4,\).*\(2, 3\)"):
        sx.weighted_sigmoid_cross_entropy_with_logits(
            jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.ones(4)
        )


# --------------------------------------------------------------------------- probabilities


def test_binary_cross_entropy_keras2_constants():
    out = sx.binary_cross_entropy(jnp.array([0.0, 1.0]), jnp.array([1.0, 0.0]))
    np.testing.assert_array_equal(out, np.array([15.333239, 15.424949], np.float32))


def test_binary_cross_entropy_reference():
    rng = np.random.default_rng(2)
    p = rng.uniform(size=50).astype(np.float32)
    z = rng.uniform(size=50).astype(np.float32)
    eps = np.float32(1e-7)
    pc = np.clip(p, eps, 1 - eps).astype(np.float64)
    want = -(z * np.log(pc + 1e-7) + (1 - z) * np.log(1 - pc + 1e-7))
    np.testing.assert_allclose(sx.binary_cross_entropy(z, p), want, rtol=2e-6)
    g = jax.grad(lambda p: sx.binary_cross_entropy(z, p).sum())(jnp.asarray(p))
    # The two terms cancel near p = z in float32: compare with an absolute floor.
    np.testing.assert_allclose(
        g, -(z / (pc + 1e-7)) + (1 - z) / (1 - pc + 1e-7), rtol=2e-5, atol=2e-6
    )


def test_binary_cross_entropy_errors():
    with pytest.raises(TypeError, match="probs"):
        sx.binary_cross_entropy(jnp.zeros(2), jnp.zeros(2, jnp.int32))
    with pytest.raises(ValueError, match="probs"):
        sx.binary_cross_entropy(jnp.zeros(2), jnp.zeros(3))


# --------------------------------------------------------------------------- transforms

ELEMENTWISE = {
    "core": sce,
    "weighted": lambda z, x: sx.weighted_sigmoid_cross_entropy_with_logits(z, x, 2.0),
    "focal": sx.sigmoid_focal_loss,
    "probs": lambda z, x: sx.binary_cross_entropy(z, jax.nn.sigmoid(x)),
}


def _transforms(fn):
    """Every transformation of ``fn`` the test compares, in one jitted program (one compile)."""

    def total(x, z):
        return fn(z, x).sum()

    def all_of_them(x, z):
        return {
            "value": fn(z, x),
            "vmap": jax.vmap(fn)(z, x),
            "value_and_grad": jax.value_and_grad(total)(x, z),
            "checkpoint_grad": jax.grad(jax.checkpoint(total))(x, z),
            "per_row_grad": jax.vmap(jax.grad(lambda xr, zr: fn(zr, xr).sum()))(x, z),
            "hessian": jax.hessian(total)(x[0], z[0]),
            "jacrev_jacrev": jax.jacrev(jax.jacrev(total))(x[0], z[0]),
            "grad_of_grad": jax.grad(lambda x: jax.grad(total)(x, z[0]).sum())(x[0]),
        }

    return jax.jit(all_of_them)


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_jit_vmap_grad_checkpoint_hessian(name):
    fn = ELEMENTWISE[name]
    x = jnp.array([[-3.0, 0.5, 2.0], [1.0, -0.2, 4.0]])
    z = jnp.array([[0.0, 1.0, 0.3], [1.0, 0.0, 1.0]])
    eager = fn(z, x)
    got = _transforms(fn)(x, z)
    np.testing.assert_allclose(got["value"], eager, rtol=1e-6)
    np.testing.assert_allclose(got["vmap"], eager, rtol=1e-6)
    v, g = got["value_and_grad"]
    np.testing.assert_allclose(v, eager.sum(), rtol=1e-6)
    np.testing.assert_allclose(got["checkpoint_grad"], g, rtol=1e-6)
    np.testing.assert_allclose(got["per_row_grad"], g, rtol=1e-6)
    h = got["hessian"]
    np.testing.assert_allclose(h, got["jacrev_jacrev"], rtol=1e-6)
    np.testing.assert_allclose(np.diag(h), got["grad_of_grad"], rtol=1e-5)
    assert np.all(np.isfinite(h))


def test_gradient_matches_optax_where_optax_is_accurate():
    x = jnp.linspace(-8, 8, 33)
    z = jnp.linspace(0, 1, 33)
    g_ours = jax.grad(lambda x: sce(z, x).sum())(x)
    g_optax = jax.grad(lambda x: optax.sigmoid_binary_cross_entropy(x, z).sum())(x)
    np.testing.assert_allclose(g_ours, g_optax, rtol=1e-5, atol=1e-7)
