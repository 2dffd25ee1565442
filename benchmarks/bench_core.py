"""Can value_and_grad of the mean loss read each input once? Experiments, with numbers.

The issue asks for a formulation that reads ``x`` and ``z`` once at N = 2^24 (float32,
``[N/1024, 1024]``, gradient w.r.t. the logits). The library's core reads them twice: the value
(a loop fusion, then the reduction) and the gradient are separate fusions, and XLA:CPU has no
multi-output fusion. Each experiment below is a complete ``value_and_grad`` that gives the same
numbers as the core (checked), timed side by side with the core, naive autodiff and the copy
floor. Besides wall time it reports the process CPU time (user + system) and the page faults per
call in units of one ``[N/1024, 1024]`` float32 array: on this VM a freshly written 64 MiB
array costs ~16k page faults, about as much system time as the floor's whole computation, so
the number of arrays a program *writes* matters as much as the number it reads.

Experiments (none of them is the library; all keep the core's numerics):

- ``grad in forward``: a reduction-level custom VJP whose forward pass also computes the
  gradient (residual: the gradient). XLA compiles it to exactly the core's fusions.
- ``chunked (lax.map)``: the same, over blocks of 256 rows with ``lax.map``: each block is read
  from memory once and the gradient written once (the floor's traffic: one written array).
- ``YNN forward``: the value written without compare/select and with no subexpression or
  constant shared with the gradient, so that the whole forward pass runs inside the YNNPACK
  reduction fusion and is never written out (20 bytes per element, as the floor).
- ``gradient in place``: the backward pass reads the loss array (a value-neutral
  ``- 0 * min(|loss|, 1)``), so XLA writes the gradient over the loss buffer: one written array.

Run: ``python benchmarks/bench_core.py [repeats]``; ``run(repeats)`` returns the rows.
"""

from __future__ import annotations

import functools
import os
import resource
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import interleaved, make_inputs  # noqa: E402
from workloads import floor, naive_loss, ours  # noqa: E402

from sigmoid_xent._core import LOG1P_UNIT, logits_grad, loss_value  # noqa: E402

F32_MAX = float(np.finfo(np.float32).max)


def _grad_in_forward(rows_per_chunk: int | None) -> Any:
    @jax.custom_vjp
    def mean_loss(x: jax.Array, z: jax.Array) -> jax.Array:
        return loss_value(x, z).mean()

    def fwd(x: jax.Array, z: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        n = x.size
        if rows_per_chunk is None:
            return loss_value(x, z).mean(), (logits_grad(x, z) * (1.0 / n), x)
        k = x.shape[0] // rows_per_chunk
        blocks = (x.reshape(k, rows_per_chunk, -1), z.reshape(k, rows_per_chunk, -1))

        def block(xz: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
            xb, zb = xz
            return loss_value(xb, zb).sum(), logits_grad(xb, zb) * (1.0 / n)

        sums, grads = lax.map(block, blocks)
        return sums.sum() / n, (grads.reshape(x.shape), x)

    def bwd(res: tuple[jax.Array, jax.Array], g: jax.Array) -> tuple[jax.Array, jax.Array]:
        grads, x = res
        return g * grads, -g * x / x.size

    mean_loss.defvjp(fwd, bwd)
    return mean_loss


def _log1p_no_one(e: jax.Array) -> jax.Array:
    """``e + e * e * Q(e)``: the core's polynomial without the constant 1, which the gradient
    also uses (a constant shared with another fusion is materialized as a full array)."""
    q = jnp.full_like(e, LOG1P_UNIT[-1])
    for c in LOG1P_UNIT[-2:0:-1]:
        q = q * e + c
    return e + e * (e * q)


def _ynn_value(x: jax.Array, z: jax.Array) -> jax.Array:
    """The loss with YNNPACK-supported ops only (no compare/select) and nothing in common with
    ``logits_grad``: ``c * min(|x|, T) + log1p(exp(-|x|))`` with ``c = (p - z) q``, ``q =
    sign(x)``, ``p = max(q, -0)``, and ``T = M + M |sign(c)|`` (``M`` the largest float: ``T`` is
    ``inf`` unless ``c = 0``, so ``0 * inf`` never happens)."""
    a = jnp.maximum(x, -x)
    q = jnp.sign(x)
    c = (jnp.maximum(q, -0.0) - z) * q
    t = F32_MAX + F32_MAX * jnp.abs(jnp.sign(c))
    return c * jnp.minimum(a, t) + _log1p_no_one(jnp.exp(-a))


def _custom(value: Any, in_place: bool = False) -> Any:
    @jax.custom_vjp
    def loss(x: jax.Array, z: jax.Array) -> jax.Array:
        return value(x, z)

    def fwd(x: jax.Array, z: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        return value(x, z), (x, z)

    def bwd(res: tuple[jax.Array, jax.Array], g: jax.Array) -> tuple[jax.Array, jax.Array]:
        x, z = res
        gx = g * logits_grad(x, z)
        if in_place:  # CSE'd with the forward's loss: gx may overwrite that buffer.
            gx = gx - 0 * jnp.minimum(jnp.abs(value(x, z)), 1)
        return gx, -g * x

    loss.defvjp(fwd, bwd)
    return loss


def _value_no_shared_exp(x: jax.Array, z: jax.Array) -> jax.Array:
    # exp(min(x, -x)) is exp(-|x|) but a different expression: not CSE'd with the gradient's.
    e = jnp.exp(jnp.minimum(x, -x))
    a = jnp.abs(x)
    sp = _log1p_no_one(e)
    coef = jnp.where(x >= 0, 1 - z, z)
    return jnp.where((coef == 0) & jnp.isinf(x), sp, coef * a + sp)


def implementations() -> dict[str, Any]:
    vg = lambda f: jax.jit(jax.value_and_grad(f))  # noqa: E731
    return {
        "ours": vg(ours),
        "grad in forward": vg(_grad_in_forward(None)),
        "chunked (lax.map)": vg(_grad_in_forward(256)),
        "YNN forward": vg(lambda x, z: _custom(_ynn_value)(x, z).mean()),
        "gradient in place": vg(lambda x, z: _custom(_value_no_shared_exp, True)(x, z).mean()),
        "naive": vg(naive_loss),
        "floor": jax.jit(floor),
    }


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def run(repeats: int = 15, n: int = 2**24) -> list[dict[str, Any]]:
    x, z = make_inputs(n, jnp.float32)
    impls = implementations()
    ref = impls["ours"](x, z)
    for k, f in impls.items():
        if k in ("floor", "naive"):
            continue
        v, g = f(x, z)
        np.testing.assert_allclose(v, ref[0], rtol=1e-6, err_msg=k)
        np.testing.assert_allclose(g, ref[1], rtol=1e-6, atol=1e-12, err_msg=k)
    res = interleaved(
        {k: functools.partial(f, x, z) for k, f in impls.items()}, repeats, jax.block_until_ready
    )
    array_pages = x.size * 4 / resource.getpagesize()
    rows = []
    for k, f in impls.items():
        f0 = _faults()
        for _ in range(3):
            jax.block_until_ready(f(x, z))
        faults = (_faults() - f0) / 3 / array_pages
        compiled = f.lower(x, z).compile()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        rows.append(
            {
                "benchmark": "single_pass",
                "impl": k,
                "n": n,
                **res[k],
                "x_floor": res[k]["median_ms"] / res["floor"]["median_ms"],
                "cpu_x_floor": res[k]["cpu_ms"] / res["floor"]["cpu_ms"],
                "written_arrays": faults,
                "bytes_per_element": cost.get("bytes accessed", float("nan")) / n,
                "temp_mib": compiled.memory_analysis().temp_size_in_bytes / 2**20,
                "repeats": repeats,
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'experiment':<20} {'median ms':>10} {'min ms':>8} {'cpu ms':>8} {'x floor':>8} "
        f"{'cpu x floor':>11} {'arrays faulted':>14} {'XLA B/elem':>10} {'temp MiB':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['impl']:<20} {r['median_ms']:>10.2f} {r['min_ms']:>8.2f} {r['cpu_ms']:>8.1f} "
            f"{r['x_floor']:>8.2f} {r['cpu_x_floor']:>11.2f} {r['written_arrays']:>14.2f} "
            f"{r['bytes_per_element']:>10.1f} {r['temp_mib']:>9.1f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    n_repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    print(
        f"jax {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} cores, load "
        f"{os.getloadavg()[0]:.1f}; value_and_grad (w.r.t. logits) of the mean loss, float32, "
        f"N = 2^24, median of {n_repeats} interleaved runs"
    )
    t0 = time.perf_counter()
    print(format_table(run(n_repeats)))
    print(f"({time.perf_counter() - t0:.0f} s)")
