"""Which JAX transformation works on which public function: the README's table, asserted.

Every function in ``TABLE`` works under ``jax.hessian`` (forward over reverse: the custom VJPs'
forward rules are plain jnp code) and reverse mode. The focal loss (a ``custom_jvp``), the
probability-space loss and the reductions (plain jnp) also work in forward mode; JAX refuses
forward mode on the ``custom_vjp`` functions (the core, the weighted and ranking losses, SigLIP,
the linear head), which is JAX's behaviour and not tested here.
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

# name -> (scalar function of one array, argument, whether forward mode works)
TABLE = {
    "sigmoid_cross_entropy_with_logits": (
        lambda x: sx.sigmoid_cross_entropy_with_logits(Z, x).sum(),
        X,
        False,
    ),
    "weighted_sigmoid_cross_entropy_with_logits": (
        lambda x: sx.weighted_sigmoid_cross_entropy_with_logits(Z, x, 2.0).sum(),
        X,
        False,
    ),
    "sigmoid_focal_loss": (
        lambda x: sx.sigmoid_focal_loss(Z, x).sum(),
        X,
        True,
    ),
    "binary_cross_entropy": (
        lambda x: sx.binary_cross_entropy(Z, jax.nn.sigmoid(x)).sum(),
        X,
        True,
    ),
    "reduce_loss": (lambda x: sx.reduce_loss(x * x, Z, "mean"), X, True),
    "ranking.sigmoid_cross_entropy": (
        lambda x: ranking.sigmoid_cross_entropy(Z, x),
        X,
        False,
    ),
    "siglip_loss": (
        lambda e: sx.siglip_loss(e, e[::-1], 0.0, 0.0),
        X,
        False,
    ),
    "linear_sigmoid_cross_entropy": (
        lambda h: sx.linear_sigmoid_cross_entropy(h, W, jnp.zeros((2, 5))),
        X,
        False,
    ),
}


def _run(kind, f, arg):
    # Jitted: one compile instead of the op-by-op dispatch of every primitive of the transform.
    if kind == "jvp":
        return jax.jit(lambda a: jax.jvp(f, (a,), (jnp.ones_like(a),))[1])(arg)
    return jax.jit(jax.hessian(f))(arg)


CASES = [
    (name, kind) for name in TABLE for kind in ("jvp", "hessian") if TABLE[name][2] or kind != "jvp"
]


@pytest.mark.parametrize("name,kind", CASES)
def test_transformation_table(name, kind):
    f, arg, _ = TABLE[name]
    out = _run(kind, f, arg)
    assert np.all(np.isfinite(np.asarray(out)))
    if kind == "jvp":  # the directional derivative agrees with reverse mode
        want = jnp.vdot(jax.grad(f)(arg), jnp.ones_like(arg))
        np.testing.assert_allclose(out, want, rtol=1e-5)
    # Reverse mode always works.
    assert np.all(np.isfinite(np.asarray(jax.jit(jax.grad(f))(arg))))
