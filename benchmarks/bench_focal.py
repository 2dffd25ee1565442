"""Focal loss: the two-float value (sigmoid_xent) against plain float32 and optax, one process.

``python benchmarks/bench_focal.py``: forward and ``value_and_grad`` of the mean focal loss
(alpha 0.25, gamma 2) at 2^20 float32 elements, implementations interleaved (the order rotates
every round), medians of 21 runs, ratios to optax; then the worst loss error in float32 ulps of
each against a longdouble reference (results below float32's smallest normal, which XLA:CPU
flushes, not counted) on 2^16 logits in [-20, 20] with hard labels and gamma 3.7.
``plain float32`` is the formula sigmoid_xent used before: ``exp(gamma log(1 - p_t)) * bce`` with
a stable ``log(1 - p_t)``, differentiated by JAX.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import sigmoid_xent as sx
from sigmoid_xent._core import neg_abs, softplus


def plain_focal(z, x, alpha=0.25, gamma=2.0):
    """``alpha_t exp(gamma log(1 - p_t)) bce`` in float32, ``log(1 - p_t)`` without cancellation."""
    c = jnp.where(x >= 0, 1 - z, z)
    na = neg_abs(x)
    mix = c + (1 - c) * jnp.exp(na)
    ok = mix > 0
    log_u = jnp.where(ok, jnp.log(jnp.where(ok, mix, 1.0)), na) - softplus(na)
    bce = sx.sigmoid_cross_entropy_with_logits(z, x)
    alpha_t = alpha * z + (1 - alpha) * (1 - z)
    return alpha_t * jnp.exp(gamma * log_u) * bce


IMPLS = {
    "sigmoid_xent (two-float)": lambda x, z: sx.sigmoid_focal_loss(z, x, 0.25, 2.0).mean(),
    "plain float32": lambda x, z: plain_focal(z, x).mean(),
    "optax.sigmoid_focal_loss": lambda x, z: optax.sigmoid_focal_loss(
        x, z, alpha=0.25, gamma=2.0
    ).mean(),
}


def timings(n: int = 1 << 20, repeats: int = 21) -> None:
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    x = 4 * jax.random.normal(k1, (n // 1024, 1024))
    z = (jax.random.uniform(k2, x.shape) < 0.5).astype(jnp.float32)
    print(f"{'mode':15s} {'implementation':26s} {'median ms':>10s} {'x optax':>8s}")
    for mode in ("forward", "value_and_grad"):
        fs = {
            k: jax.jit(f if mode == "forward" else jax.value_and_grad(f)) for k, f in IMPLS.items()
        }
        for f in fs.values():
            jax.block_until_ready(f(x, z))
            jax.block_until_ready(f(x, z))
        times: dict[str, list[float]] = {k: [] for k in fs}
        names = list(fs)
        for r in range(repeats):
            for k in names[r % len(names) :] + names[: r % len(names)]:
                start = time.perf_counter()
                jax.block_until_ready(fs[k](x, z))
                times[k].append(time.perf_counter() - start)
        base = statistics.median(times["optax.sigmoid_focal_loss"])
        for k in names:
            m = statistics.median(times[k])
            print(f"{mode:15s} {k:26s} {m * 1e3:10.2f} {base / m:8.2f}")


def accuracy(gamma: float = 3.7) -> None:
    x = np.linspace(-20, 20, 1 << 16).astype(np.float32)
    z = (np.arange(x.size) % 2).astype(np.float32)
    g = np.float32(gamma)
    ld = np.longdouble
    xl, zl = x.astype(ld), z.astype(ld)
    sig = 1 / (1 + np.exp(-xl))
    u = zl * (1 - sig) + (1 - zl) * sig
    bce = np.logaddexp(ld(0), -xl) * zl + np.logaddexp(ld(0), xl) * (1 - zl)
    want = (0.25 * zl + 0.75 * (1 - zl)) * u ** ld(g) * bce
    ulp = np.spacing(np.abs(want).astype(np.float32)).astype(ld)
    print(f"\nworst loss error, float32 ulps (hard labels, gamma {gamma}, x in [-20, 20]):")
    for name, f in (
        ("sigmoid_xent (two-float)", lambda z, x: sx.sigmoid_focal_loss(z, x, 0.25, g)),
        ("plain float32", lambda z, x: plain_focal(z, x, 0.25, g)),
        (
            "optax.sigmoid_focal_loss",
            lambda z, x: optax.sigmoid_focal_loss(x, z, alpha=0.25, gamma=g),
        ),
    ):
        got = np.asarray(jax.jit(f)(z, x)).astype(ld)
        err = np.abs(got - want) / ulp
        # XLA:CPU flushes results below the smallest normal float32 to 0: not counted.
        err = np.where(want < np.finfo(np.float32).tiny, 0, err)
        print(f"  {name:26s} {float(np.max(err)):10.1f}")


if __name__ == "__main__":
    timings()
    accuracy()
