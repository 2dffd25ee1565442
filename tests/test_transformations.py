"""Which JAX transformation works on which public function: the README's table, asserted.

The elementwise core, the weighted loss and the ranking loss are ``custom_vjp`` functions: JAX
refuses forward mode (``jax.jvp``, ``jax.jacfwd``) on them, while ``jax.hessian`` (forward over
reverse) works because their forward rules are plain jnp code. The focal loss is a
``custom_jvp``, and the probability-space loss and the reductions are plain jnp: every mode
works. The scale losses (SigLIP, the linear head) are chunked ``custom_vjp`` functions whose
forward rules are plain jnp: ``jax.hessian`` works, forward mode is refused.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sigmoid_xent as sx
from sigmoid_xent import ranking

Z = jnp.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.5]])
X = jnp.array([[0.3, -1.0, 2.0], [1.0, 0.5, -2.0]])
W = jnp.linspace(-0.2, 0.3, 15).reshape(5, 3)

# name -> (scalar function of one array, argument, {transformation: works?})
TABLE = {
    "sigmoid_cross_entropy_with_logits": (
        lambda x: sx.sigmoid_cross_entropy_with_logits(Z, x).sum(),
        X,
        {"jvp": False, "hessian": True},
    ),
    "weighted_sigmoid_cross_entropy_with_logits": (
        lambda x: sx.weighted_sigmoid_cross_entropy_with_logits(Z, x, 2.0).sum(),
        X,
        {"jvp": False, "hessian": True},
    ),
    "sigmoid_focal_loss": (
        lambda x: sx.sigmoid_focal_loss(Z, x).sum(),
        X,
        {"jvp": True, "hessian": True},
    ),
    "binary_cross_entropy": (
        lambda x: sx.binary_cross_entropy(Z, jax.nn.sigmoid(x)).sum(),
        X,
        {"jvp": True, "hessian": True},
    ),
    "reduce_loss": (lambda x: sx.reduce_loss(x * x, Z, "mean"), X, {"jvp": True, "hessian": True}),
    "ranking.sigmoid_cross_entropy": (
        lambda x: ranking.sigmoid_cross_entropy(Z, x),
        X,
        {"jvp": False, "hessian": True},
    ),
    "siglip_loss": (
        lambda e: sx.siglip_loss(e, e[::-1], 0.0, 0.0),
        X,
        {"jvp": False, "hessian": True},
    ),
    "linear_sigmoid_cross_entropy": (
        lambda h: sx.linear_sigmoid_cross_entropy(h, W, jnp.zeros((2, 5))),
        X,
        {"jvp": False, "hessian": True},
    ),
}


def _run(kind, f, arg):
    if kind == "jvp":
        return jax.jvp(f, (arg,), (jnp.ones_like(arg),))[1]
    return jax.hessian(f)(arg)


@pytest.mark.parametrize("kind", ["jvp", "hessian"])
@pytest.mark.parametrize("name", list(TABLE))
def test_transformation_table(name, kind):
    f, arg, works = TABLE[name]
    if works[kind]:
        out = _run(kind, f, arg)
        assert np.all(np.isfinite(np.asarray(out)))
        if kind == "jvp":  # the directional derivative agrees with reverse mode
            want = jnp.vdot(jax.grad(f)(arg), jnp.ones_like(arg))
            np.testing.assert_allclose(out, want, rtol=1e-5)
    else:
        with pytest.raises(TypeError):
            _run(kind, f, arg)
    # Reverse mode always works.
    assert np.all(np.isfinite(np.asarray(jax.grad(f)(arg))))
