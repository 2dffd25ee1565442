"""The one timing helper and the one memory helper every benchmark uses.

- :func:`interleaved`: median and minimum wall milliseconds and median process CPU milliseconds
  of each thunk, the thunks interleaved (the order rotates every round) after two warm-up calls.
  The machine may be shared: compare medians and ratios measured in one run, not single times.
- :func:`temp_mib`: XLA's temp buffer of a jitted function (``compile().memory_analysis()``).
- :func:`make_inputs`: the logits/labels pair of the core workloads.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

COLS = 1024


def make_inputs(n: int, dtype: Any, seed: int = 0) -> tuple[jax.Array, jax.Array]:
    """``[n / 1024, 1024]`` logits ~ 4 N(0, 1) and hard labels."""
    kx, kz = jax.random.split(jax.random.PRNGKey(seed))
    x = (4 * jax.random.normal(kx, (n // COLS, COLS), jnp.float32)).astype(dtype)
    z = jax.random.bernoulli(kz, 0.5, (n // COLS, COLS)).astype(dtype)
    return x, z


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def interleaved(
    thunks: dict[str, Callable[[], Any]],
    repeats: int,
    sync: Callable[[Any], Any] = jax.block_until_ready,
    warmup: int = 2,
    shuffle: bool = False,
) -> dict[str, dict[str, float]]:
    """``{name: {"median_ms", "min_ms", "cpu_ms"}}`` of each thunk, interleaved.

    Each round runs every thunk once; the order rotates every round, or with ``shuffle`` is a
    fresh random permutation (a call's time can depend on what ran before it: fresh pages,
    caches).
    """
    for fn in thunks.values():
        for _ in range(warmup):
            sync(fn())
    wall: dict[str, list[float]] = {k: [] for k in thunks}
    cpu: dict[str, list[float]] = {k: [] for k in thunks}
    names = list(thunks)
    rng = np.random.default_rng(0)
    for r in range(repeats):
        if shuffle:
            order = [names[i] for i in rng.permutation(len(names))]
        else:
            order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            c0, t0 = _cpu_seconds(), time.perf_counter()
            out = thunks[name]()
            sync(out)
            wall[name].append((time.perf_counter() - t0) * 1e3)
            cpu[name].append((_cpu_seconds() - c0) * 1e3)
            del out
    return {
        k: {
            "median_ms": statistics.median(wall[k]),
            "min_ms": min(wall[k]),
            "cpu_ms": statistics.median(cpu[k]),
        }
        for k in thunks
    }


def temp_bytes(compiled: Any) -> float:
    """XLA's temp buffer of a compiled program, in bytes (nan where the backend has none)."""
    try:
        stats = compiled.memory_analysis()
    except Exception:  # pragma: no cover - backend without memory analysis
        return float("nan")
    return float(stats.temp_size_in_bytes) if stats is not None else float("nan")


def temp_mib(fn: Any, *args: Any) -> float:
    """XLA's temp buffer of ``fn`` (a jitted function) on ``args``, in MiB (nan if unknown)."""
    return temp_bytes(fn.lower(*args).compile()) / 2**20
