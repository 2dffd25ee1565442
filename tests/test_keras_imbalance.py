"""sigmoid_xent.keras.AsymmetricLoss: the per-sample mean of asymmetric_loss, weighted, masked
and reduced by Keras itself; config and serialization (a saved model loads in a new process);
mixed precision; a fit step. Skipped when keras is not installed."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

os.environ.setdefault("KERAS_BACKEND", "jax")

import pytest  # noqa: E402

keras = pytest.importorskip("keras")
if keras.backend.backend() != "jax":  # pragma: no cover - depends on the environment
    pytest.skip(f"Keras runs on {keras.backend.backend()!r}, not jax", allow_module_level=True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import sigmoid_xent as sx  # noqa: E402
from sigmoid_xent.keras import AsymmetricLoss  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _data(shape=(8, 5), seed=0):
    rng = np.random.default_rng(seed)
    y_true = (rng.random(shape) < 0.3).astype(np.float32)
    y_pred = (4 * rng.standard_normal(shape)).astype(np.float32)
    return y_true, y_pred


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "none"])
def test_is_the_per_sample_mean_of_asymmetric_loss(reduction):
    y_true, y_pred = _data()
    loss = AsymmetricLoss(gamma_pos=1.0, gamma_neg=3.0, clip=0.1, reduction=reduction)
    per_sample = np.asarray(
        sx.asymmetric_loss(y_true, y_pred, gamma_pos=1.0, gamma_neg=3.0, clip=0.1)
    ).mean(-1)
    sw = np.linspace(0.0, 2.0, 8).astype(np.float32)
    want = {"sum_over_batch_size": np.mean, "sum": np.sum, "none": lambda v: v}[reduction]
    np.testing.assert_allclose(loss(y_true, y_pred), want(per_sample), rtol=1e-6)
    np.testing.assert_allclose(loss(y_true, y_pred, sample_weight=sw), want(per_sample * sw), 1e-6)


def test_label_smoothing_towards_one_half():
    y_true, y_pred = _data()
    smoothed = y_true * 0.8 + 0.1
    want = np.asarray(sx.asymmetric_loss(smoothed, y_pred)).mean()
    np.testing.assert_allclose(AsymmetricLoss(label_smoothing=0.2)(y_true, y_pred), want, 1e-6)


def test_finite_at_infinite_logits_and_mixed_precision():
    y_true = np.array([[1.0, 0.0, 0.0]], np.float32)
    y_pred = np.array([[np.inf, -np.inf, np.inf]], np.float32)
    value = AsymmetricLoss(reduction="none")(y_true, y_pred)
    capped = 0.95**4 * -np.log(np.float32(0.05))
    np.testing.assert_allclose(value, [capped / 3], rtol=1e-6)
    old = keras.mixed_precision.global_policy()
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        loss = AsymmetricLoss()
        out = loss(*_data())
        assert out.dtype == jnp.float32
    finally:
        keras.mixed_precision.set_global_policy(old)


def test_config_round_trip_and_registration():
    loss = AsymmetricLoss(gamma_pos=0.5, gamma_neg=2.0, clip=None, reduction="sum", name="asl")
    config = loss.get_config()
    assert config["gamma_pos"] == 0.5 and config["clip"] is None and "from_logits" not in config
    again = AsymmetricLoss.from_config(config)
    assert again.get_config() == config
    serialized = keras.saving.serialize_keras_object(loss)
    assert serialized["registered_name"] == "sigmoid_xent>AsymmetricLoss"
    revived = keras.saving.deserialize_keras_object(serialized)
    y_true, y_pred = _data()
    np.testing.assert_array_equal(revived(y_true, y_pred), loss(y_true, y_pred))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"gamma_neg": -1.0}, ValueError, "`gamma_neg` must lie in [0, inf), got -1."),
        ({"gamma_pos": float("inf")}, ValueError, "`gamma_pos` must lie in [0, inf), got inf."),
        ({"clip": 1.0}, ValueError, "`clip` must lie in [0, 1), got 1."),
        ({"clip": "0.05"}, TypeError, "`clip` must be a real number"),
        ({"label_smoothing": 2.0}, ValueError, "`label_smoothing` must lie in [0, 1], got 2."),
    ],
)
def test_constructor_errors(kwargs, error, message):
    with pytest.raises(error) as err:
        AsymmetricLoss(**kwargs)
    assert str(err.value).startswith(f"sigmoid_xent.keras.AsymmetricLoss: {message}")


def test_fit_and_a_saved_model_loads_in_a_new_process(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((32, 4)).astype(np.float32)
    y = (rng.random((32, 3)) < 0.2).astype(np.float32)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    loss = AsymmetricLoss(gamma_pos=1.0, clip=0.1)
    model.compile(optimizer="sgd", loss=loss)
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    value = model.evaluate(x, y, batch_size=32, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    code = f"""
        import json, numpy as np, keras
        import sigmoid_xent.keras
        model = keras.models.load_model({str(path)!r})
        d = np.load({str(tmp_path / "data.npz")!r})
        value = model.evaluate(d["x"], d["y"], batch_size=32, verbose=0)
        print(json.dumps({{"cls": type(model.loss).__name__, "config": model.loss.get_config(),
                          "value": value}}))
        """
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "KERAS_BACKEND": "jax"}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["cls"] == "AsymmetricLoss" and out["config"] == loss.get_config()
    assert out["value"] == pytest.approx(value, rel=1e-6)
