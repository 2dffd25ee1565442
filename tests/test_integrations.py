"""The losses inside the training steps of Flax (nnx and linen) and Equinox models, with optax.

Each framework's test is skipped when the framework is not installed (extras ``flax``,
``equinox``; ``make install`` installs both). Every train step is jitted by the framework's own
transform, and the gradients it computes are compared with a direct float64 computation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sigmoid_xent as sx

FEATURES, CLASSES, BATCH = 6, 4, 64


def _data(seed: int = 0) -> tuple[jax.Array, jax.Array]:
    """A learnable multi-label problem: labels from a hidden linear model."""
    k_w, k_x, k_u = jax.random.split(jax.random.PRNGKey(seed), 3)
    w = jax.random.normal(k_w, (FEATURES, CLASSES)) * 2.0
    x = jax.random.normal(k_x, (BATCH, FEATURES))
    y = (jax.random.uniform(k_u, (BATCH, CLASSES)) < jax.nn.sigmoid(x @ w)).astype(jnp.float32)
    return x, y


# Each loss maps (labels, logits) to a scalar; all are used as they would be in a train step.
LOSSES = {
    "sigmoid_cross_entropy": lambda y, z: sx.sigmoid_cross_entropy(y, z, label_smoothing=0.1),
    "BinaryCrossentropy": sx.BinaryCrossentropy(from_logits=True),
    "focal": lambda y, z: jnp.mean(sx.sigmoid_focal_loss(y, z, alpha=0.25, gamma=2.0)),
    "weighted": lambda y, z: jnp.mean(
        sx.weighted_sigmoid_cross_entropy_with_logits(y, z, jnp.array([1.0, 2.0, 3.0, 4.0]))
    ),
}


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * v))


def _linear_grads(x, y, kernel, bias):
    """d mean(bce(y, x @ kernel + bias)) / d(kernel, bias), in float64 numpy."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    kernel, bias = np.asarray(kernel, np.float64), np.asarray(bias, np.float64)
    delta = (_sigmoid(x @ kernel + bias) - y) / y.size
    return x.T @ delta, delta.sum(axis=0)


def _assert_decreases(losses: list[float]) -> None:
    assert np.all(np.isfinite(losses)), losses
    assert losses[-1] < 0.7 * losses[0], losses


# ---------------------------------------------------------------------------------------------
# Flax NNX


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_flax_nnx_train_step_decreases_loss(loss_name):
    nnx = pytest.importorskip("flax.nnx")
    loss_fn = LOSSES[loss_name]

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.hidden = nnx.Linear(FEATURES, 16, rngs=rngs)
            self.out = nnx.Linear(16, CLASSES, rngs=rngs)

        def __call__(self, x):
            return self.out(nnx.relu(self.hidden(x)))

    model = MLP(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(0.05), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(lambda m: loss_fn(y, m(x)))(model)
        optimizer.update(model, grads)
        return loss

    x, y = _data()
    _assert_decreases([float(train_step(model, optimizer, x, y)) for _ in range(40)])


def test_flax_nnx_gradients_match_direct_computation():
    nnx = pytest.importorskip("flax.nnx")
    model = nnx.Linear(FEATURES, CLASSES, rngs=nnx.Rngs(1))
    x, y = _data(1)
    loss_obj = sx.BinaryCrossentropy(from_logits=True)

    @nnx.jit
    def grads_of(model):
        return nnx.grad(lambda m: loss_obj(y, m(x)))(model)

    grads = grads_of(model)
    want_k, want_b = _linear_grads(x, y, model.kernel[...], model.bias[...])
    np.testing.assert_allclose(grads.kernel[...], want_k, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads.bias[...], want_b, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Flax Linen


def test_flax_linen_train_step_with_optax():
    linen = pytest.importorskip("flax.linen")
    model = linen.Dense(CLASSES)
    x, y = _data(2)
    params = model.init(jax.random.PRNGKey(0), x)
    optimizer = optax.adam(0.1)
    opt_state = optimizer.init(params)

    def loss_fn(params):
        return sx.sigmoid_cross_entropy(y, model.apply(params, x))

    @jax.jit
    def train_step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, grads

    _, _, _, grads = train_step(params, opt_state)
    want_k, want_b = _linear_grads(x, y, params["params"]["kernel"], params["params"]["bias"])
    np.testing.assert_allclose(grads["params"]["kernel"], want_k, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads["params"]["bias"], want_b, rtol=1e-5, atol=1e-7)

    losses = []
    for _ in range(40):
        params, opt_state, loss, _ = train_step(params, opt_state)
        losses.append(float(loss))
    _assert_decreases(losses)


# ---------------------------------------------------------------------------------------------
# Equinox


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_equinox_train_step_decreases_loss(loss_name):
    eqx = pytest.importorskip("equinox")
    loss_fn = LOSSES[loss_name]
    model = eqx.nn.MLP(FEATURES, CLASSES, width_size=16, depth=1, key=jax.random.PRNGKey(0))
    optimizer = optax.adam(0.05)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))

    @eqx.filter_jit
    def train_step(model, opt_state, x, y):
        loss, grads = eqx.filter_value_and_grad(lambda m: loss_fn(y, jax.vmap(m)(x)))(model)
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    x, y = _data()
    losses = []
    for _ in range(40):
        model, opt_state, loss = train_step(model, opt_state, x, y)
        losses.append(float(loss))
    _assert_decreases(losses)


def test_equinox_gradients_match_direct_computation_with_static_loss_object():
    eqx = pytest.importorskip("equinox")
    model = eqx.nn.Linear(FEATURES, CLASSES, key=jax.random.PRNGKey(3))
    x, y = _data(3)

    traces = []

    # The loss object is hashable, so `filter_jit` can take it as a static argument.
    @eqx.filter_jit
    def grads_of(model, loss_obj):
        traces.append(loss_obj)
        return eqx.filter_grad(lambda m: loss_obj(y, jax.vmap(m)(x)))(model)

    grads = grads_of(model, sx.BinaryCrossentropy(from_logits=True))
    # Equinox stores the kernel as [out, in].
    want_k, want_b = _linear_grads(x, y, np.asarray(model.weight).T, model.bias)
    np.testing.assert_allclose(grads.weight, want_k.T, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads.bias, want_b, rtol=1e-5, atol=1e-7)
    # A second, equal loss object reuses the compiled function; a different one retraces.
    grads_of(model, sx.BinaryCrossentropy(from_logits=True))
    assert len(traces) == 1
    grads_of(model, sx.BinaryCrossentropy(from_logits=True, label_smoothing=0.1))
    assert len(traces) == 2
