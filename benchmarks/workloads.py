"""The core workloads shared by ``run.py`` and ``bench_core.py``: the mean loss of each
implementation (value_and_grad is taken by the caller) and the copy floor."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

import sigmoid_xent as sx


def ours(x: jax.Array, z: jax.Array) -> jax.Array:
    return sx.sigmoid_cross_entropy_with_logits(z, x).mean()


def optax_loss(x: jax.Array, z: jax.Array) -> jax.Array:
    return optax.sigmoid_binary_cross_entropy(x, z).mean()


def naive_loss(x: jax.Array, z: jax.Array) -> jax.Array:
    return (jnp.maximum(x, 0) - x * z + jnp.log1p(jnp.exp(-jnp.abs(x)))).mean()


def floor(x: jax.Array, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    return (x * z).sum(), x + z
