"""Eager calls on small arrays: sigmoid_xent's public functions against optax's (and rax's).

Each public function checks its arguments in Python and then runs one compiled program, as
``jax.nn`` does, so an eager call costs one dispatch. This script times eager (un-jitted) calls
on ``[8, 16]`` arrays, forward and ``jax.grad``, interleaved, medians of ``--repeats`` rounds,
and reports the first call of each (compilation included) beside it:

    python benchmarks/bench_eager.py [--repeats 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import interleaved  # noqa: E402

import sigmoid_xent as sx  # noqa: E402
from sigmoid_xent import compat, ranking  # noqa: E402

try:  # optional peer
    import rax
except ImportError:  # pragma: no cover - depends on the environment
    rax = None


def cases(x: jax.Array, z: jax.Array) -> list[tuple[str, Callable[[], Any], Callable[[], Any]]]:
    """``(workload, ours, peer)`` thunks, each an eager call."""

    def grad(f: Callable[[jax.Array], jax.Array]) -> Callable[[], Any]:
        return lambda: jax.grad(lambda x: jnp.mean(f(x)))(x)

    rows = [
        (
            "loss forward",
            lambda: sx.sigmoid_cross_entropy_with_logits(z, x),
            lambda: optax.sigmoid_binary_cross_entropy(x, z),
        ),
        (
            "loss grad",
            grad(lambda x: sx.sigmoid_cross_entropy_with_logits(z, x)),
            grad(lambda x: optax.sigmoid_binary_cross_entropy(x, z)),
        ),
        (
            "focal forward",
            lambda: sx.sigmoid_focal_loss(z, x, alpha=0.25, gamma=2.0),
            lambda: optax.sigmoid_focal_loss(x, z, alpha=0.25, gamma=2.0),
        ),
        (
            "focal grad",
            grad(lambda x: sx.sigmoid_focal_loss(z, x, alpha=0.25, gamma=2.0)),
            grad(lambda x: optax.sigmoid_focal_loss(x, z, alpha=0.25, gamma=2.0)),
        ),
        (
            "compat.optax focal grad",
            grad(lambda x: compat.optax.sigmoid_focal_loss(x, z, alpha=0.25)),
            grad(lambda x: optax.sigmoid_focal_loss(x, z, alpha=0.25)),
        ),
    ]
    if rax is not None:
        rows.append(
            (
                "ranking (rax: pointwise)",
                lambda: ranking.sigmoid_cross_entropy(z, x),
                lambda: rax.pointwise_sigmoid_loss(x, z),
            )
        )
    return rows


def first_call_ms(thunk: Callable[[], Any]) -> float:
    jax.clear_caches()
    start = time.perf_counter()
    jax.block_until_ready(thunk())
    return (time.perf_counter() - start) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args(argv)
    kx, kz = jax.random.split(jax.random.PRNGKey(0))
    x = 4 * jax.random.normal(kx, (8, 16))
    z = jax.random.bernoulli(kz, 0.5, (8, 16)).astype(jnp.float32)
    print(f"jax {jax.__version__}, eager calls on [8, 16] float32, medians of {args.repeats}")
    header = (
        f"{'workload':26} {'ours ms':>8} {'peer ms':>8} {'ours/peer':>9} "
        f"{'ours 1st ms':>11} {'peer 1st ms':>11}"
    )
    print(header)
    print("-" * len(header))
    for name, ours, peer in cases(x, z):
        first_ours, first_peer = first_call_ms(ours), first_call_ms(peer)
        t = interleaved({"ours": ours, "peer": peer}, args.repeats)
        o, p = t["ours"]["median_ms"], t["peer"]["median_ms"]
        print(f"{name:26} {o:8.3f} {p:8.3f} {o / p:9.2f} {first_ours:11.1f} {first_peer:11.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
