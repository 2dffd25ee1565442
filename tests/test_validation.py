"""`validate_inputs` under checkify (inside jit) and eagerly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import sigmoid_xent as sx


def checked_step(**kwargs):
    """A jitted, checkified train-step-like function that validates then computes the loss."""

    def step(labels, logits, segment_ids=None):
        sx.validate_inputs(labels, logits, segment_ids=segment_ids, **kwargs)
        return sx.sigmoid_cross_entropy_with_logits(jnp.maximum(labels, 0), logits).sum()

    return jax.jit(checkify.checkify(step))


def test_valid_inputs_report_nothing():
    err, loss = checked_step()(jnp.array([0.0, 0.3, 1.0]), jnp.array([-2.0, 0.0, 5.0]))
    assert err.get() is None
    assert np.isfinite(loss)


@pytest.mark.parametrize("bad", [1.5, -0.1, np.nan])
def test_bad_labels_reported(bad):
    err, _ = checked_step()(jnp.array([0.0, bad, 1.0]), jnp.zeros(3))
    assert "labels must lie in [0, 1]" in err.get()
    assert "first at flat index 1" in err.get()


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_logits_reported(bad):
    err, _ = checked_step()(jnp.zeros(3), jnp.array([0.0, 1.0, bad]))
    assert "logits must be finite" in err.get() and "flat index 2" in err.get()


def test_padding_labels_allowed_when_asked():
    labels = jnp.array([1.0, 0.0, -1.0])
    assert checked_step(allow_padding=True)(labels, jnp.zeros(3))[0].get() is None
    assert "or < 0 for padding" not in (checked_step()(labels, jnp.zeros(3))[0].get() or "x")
    assert checked_step()(labels, jnp.zeros(3))[0].get() is not None
    # NaN is not padding.
    err, _ = checked_step(allow_padding=True)(jnp.array([1.0, jnp.nan]), jnp.zeros(2))
    assert "labels must lie" in err.get()


def test_segment_ids_checked():
    step = checked_step(num_segments=3)
    labels, logits = jnp.array([1.0, 0.0, -1.0, 1.0]), jnp.zeros(4)
    assert step(labels, logits, jnp.array([0, 0, 1, 2]))[0].get() is None
    err, _ = step(labels, logits, jnp.array([0, 0, 3, 2]))
    assert "segment ids must lie in [0, 3)" in err.get() and "flat index 2" in err.get()
    err, _ = step(labels, logits, jnp.array([0, -1, 1, 2]))
    assert "segment ids" in err.get()


def test_segment_ids_static_errors():
    with pytest.raises(ValueError, match="num_segments"):
        sx.validate_inputs(jnp.zeros(2), segment_ids=jnp.array([0, 1]))
    with pytest.raises(ValueError, match="integers"):
        sx.validate_inputs(jnp.zeros(2), segment_ids=jnp.array([0.0, 1.0]), num_segments=2)


def test_eager_raises_at_once():
    with pytest.raises(ValueError, match="validate_inputs: labels must lie in"):
        sx.validate_inputs(jnp.array([2.0]))
    sx.validate_inputs(jnp.array([0.0, 1.0]), jnp.array([3.0, -3.0]))  # valid: no error


def test_losses_do_not_need_checkify():
    # The losses never call checkify.check, so plain jit works on any input.
    out = jax.jit(sx.sigmoid_cross_entropy_with_logits)(jnp.array([2.0]), jnp.array([1.0]))
    assert np.isfinite(out).all()


def test_plain_jit_is_an_error_and_the_docstring_opening_says_why():
    # Loud, never a silent pass: JAX refuses the unchecked step while lowering it (after
    # validate_inputs has returned), and the docstring's opening names that error and the fix.
    with pytest.raises(ValueError, match="not functionalized"):
        jax.jit(sx.validate_inputs)(jnp.array([0.0, 2.0]))
    opening = sx.validate_inputs.__doc__.split("Args:")[0]
    assert "checkify.checkify" in opening and "not functionalized" in opening
