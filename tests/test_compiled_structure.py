"""What the core keeps in memory: the VJP's residuals and the compiled temp buffers.

These hold on every supported jaxlib (bounds are ``<=`` so that a better compiler passes). The
compiler-specific facts (fusions, exp and divide counts, bytes accessed) are measured by
``benchmarks/compiled_structure.py`` instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import sigmoid_xent as sx

SHAPE = (256, 1024)
N = SHAPE[0] * SHAPE[1]


def _mean_loss(x: jax.Array, z: jax.Array) -> jax.Array:
    return sx.sigmoid_cross_entropy_with_logits(z, x).mean()


def _residuals(fn, *args) -> list[tuple[tuple[int, ...], str]]:
    # The function jax.vjp returns is a pytree whose leaves are the saved residuals.
    _, vjp = jax.vjp(fn, *args)
    return sorted((leaf.shape, jnp.dtype(leaf.dtype).name) for leaf in jax.tree.leaves(vjp))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_vjp_saves_only_the_two_inputs(dtype):
    # 16-bit inputs are computed in float32, but what is saved is the 16-bit arrays themselves.
    x = jnp.ones((4, 8), dtype)
    name = jnp.dtype(dtype).name
    assert _residuals(_mean_loss, x, x) == [((4, 8), name)] * 2
    assert _residuals(jax.jit(_mean_loss), x, x) == [((4, 8), name)] * 2


def test_vjp_saves_only_the_two_inputs_under_jit_and_vmap():
    x = jnp.ones((3, 4, 8))
    fn = jax.jit(jax.vmap(_mean_loss))
    assert _residuals(lambda x, z: fn(x, z).sum(), x, x) == [((3, 4, 8), "float32")] * 2


def _memory(fn, dtype=jnp.float32, shape=SHAPE):
    spec = jax.ShapeDtypeStruct(shape, dtype)
    return jax.jit(fn).lower(spec, spec).compile().memory_analysis()


# (function, dtype, temp bytes per element): float32 holds one loss array (the value before its
# mean); bfloat16, computed in float32, holds two float32 arrays' worth.
TEMP_BOUNDS = {
    "d/dx float32": (jax.value_and_grad(_mean_loss), jnp.float32, 4),
    "d/dx and d/dz float32": (jax.value_and_grad(_mean_loss, argnums=(0, 1)), jnp.float32, 4),
    "d/dx bfloat16": (jax.value_and_grad(_mean_loss), jnp.bfloat16, 8),
}


@pytest.mark.parametrize("name", list(TEMP_BOUNDS))
def test_value_and_grad_temp_memory_is_one_loss_array(name):
    fn, dtype, per_element = TEMP_BOUNDS[name]
    assert _memory(fn, dtype).temp_size_in_bytes <= per_element * N + 1024


def test_vmapped_value_and_grad_temp_memory_scales_with_the_batch():
    fn = jax.vmap(jax.value_and_grad(_mean_loss))
    assert _memory(fn, shape=(3,) + SHAPE).temp_size_in_bytes <= 4 * 3 * N + 1024


def test_forward_pass_for_the_vjp_writes_no_more_than_the_inputs():
    # The residuals are the inputs themselves: what the forward pass returns for the backward
    # pass is (at most) a copy of x and z, plus the scalar value.
    memory = _memory(lambda x, z: jax.vjp(_mean_loss, x, z))
    assert memory.output_size_in_bytes <= 2 * 4 * N + 1024
