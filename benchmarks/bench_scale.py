"""Scale losses side by side: chunked SigLIP and the fused linear loss vs the naive jnp formulas.

- ``siglip``: :func:`sigmoid_xent.siglip_loss` (chunks of image rows, custom VJP recomputing each
  chunk) vs the SigLIP paper's formula in plain jnp, ``-sum(log_sigmoid(labels * (img @ txt.T *
  exp(t) + b))) / B``, at B = 4096, 8192, 16384 and embedding dim 256.
- ``linear``: :func:`sigmoid_xent.linear_sigmoid_cross_entropy` (tiles of classes, custom VJP)
  vs ``mean(max(x, 0) - x z + log1p(exp(-|x|)))`` on ``x = h @ w.T + bias``, at batch 4096,
  32768 classes, hidden 512 (soft float32 labels; gradients w.r.t. h, w and bias).

Both for the forward pass alone (``fwd``) and ``value_and_grad`` (``vg``). Memory is XLA's
``compile().memory_analysis().temp_size_in_bytes`` (compile time only, nothing allocated). Times:
each pair is compiled, checked to agree, run once to warm up, then run ``repeats`` times
interleaved (naive, chunked, naive, ...) with ``block_until_ready``; the table shows medians and
ratios. Pass ``time_limit`` (seconds per naive call, measured at warm-up) to skip timing sizes
whose naive version is slower than that. No timed asserts.

XLA:CPU fuses the naive linear forward (dot, loss, reduction) into one YNNPACK call whose
scratch memory is not in ``temp_size_in_bytes``: it reports 0 bytes there, so that ratio is
meaningless (measured peak RSS: about 113 MiB naive, 33 MiB chunked). The ``linear*`` rows
(memory only) therefore also compare against SPEC §5's own definition,
``mean(sigmoid_cross_entropy_with_logits(labels, h @ w.T + bias))``, whose logits XLA does
materialize.

Run: ``python benchmarks/bench_scale.py [repeats] [--quick]``; ``run(...)`` returns the rows.
``--quick`` runs only the smallest SigLIP size and a 4096 x 4096 x 512 linear case.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import sigmoid_xent as sx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import interleaved, temp_bytes  # noqa: E402

MiB = 2**20


def naive_siglip(img: jax.Array, txt: jax.Array, t: jax.Array, b: jax.Array) -> jax.Array:
    logits = img @ txt.T * jnp.exp(t) + b
    labels = 2 * jnp.eye(img.shape[0], dtype=logits.dtype) - 1
    return -jnp.sum(jax.nn.log_sigmoid(labels * logits)) / img.shape[0]


def naive_linear(h: jax.Array, w: jax.Array, z: jax.Array, bias: jax.Array) -> jax.Array:
    x = h @ w.T + bias
    return jnp.mean(jnp.maximum(x, 0) - x * z + jnp.log1p(jnp.exp(-jnp.abs(x))))


def definition_linear(h: jax.Array, w: jax.Array, z: jax.Array, bias: jax.Array) -> jax.Array:
    """SPEC §5's definition through the library's core, unchunked."""
    return jnp.mean(sx.sigmoid_cross_entropy_with_logits(z, h @ w.T + bias))


def memory_row(
    case: str,
    shape: str,
    naive: Callable,
    chunked: Callable,
    args: tuple,
    argnums: tuple | None,
) -> dict[str, Any]:
    """A compile-only row: temp memory of both, no timing."""
    temp = {
        name: temp_bytes(_compile(f, args, argnums))
        for name, f in (("naive", naive), ("chunked", chunked))
    }
    nan = float("nan")
    return {
        "case": case,
        "shape": shape,
        "mode": "fwd" if argnums is None else "vg",
        "naive_temp_MiB": temp["naive"] / MiB,
        "chunked_temp_MiB": temp["chunked"] / MiB,
        "mem_ratio": temp["chunked"] / temp["naive"] if temp["naive"] else nan,
        "naive_s": nan,
        "chunked_s": nan,
        "time_ratio": nan,
        "runs": 0,
        "rel_diff": nan,
    }


def siglip_args(batch: int, dim: int) -> tuple[jax.Array, ...]:
    rng = np.random.default_rng(0)
    emb = []
    for _ in range(2):
        x = rng.standard_normal((batch, dim), np.float32)
        emb.append(jnp.asarray(x / np.linalg.norm(x, axis=1, keepdims=True)))
    return emb[0], emb[1], jnp.asarray(np.log(10.0), jnp.float32), jnp.asarray(-10.0)


def linear_args(batch: int, classes: int, hidden: int) -> tuple[jax.Array, ...]:
    rng = np.random.default_rng(1)
    h = jnp.asarray(rng.standard_normal((batch, hidden), np.float32))
    w = jnp.asarray(rng.standard_normal((classes, hidden), np.float32) / np.sqrt(hidden))
    z = jnp.asarray((rng.random((batch, classes), np.float32) < 0.01).astype(np.float32))
    bias = jnp.asarray(np.full(classes, -4.0, np.float32))
    return h, w, z, bias


def _compile(f: Callable, args: tuple, argnums: tuple | None) -> Any:
    g = f if argnums is None else jax.value_and_grad(f, argnums)
    return jax.jit(g).lower(*args).compile()


def _value(out: Any) -> float:
    return float(out[0] if isinstance(out, tuple) else out)


def compare(
    case: str,
    shape: str,
    naive: Callable,
    chunked: Callable,
    args: tuple,
    argnums: tuple | None,
    repeats: int,
    time_limit: float | None,
) -> dict[str, Any]:
    """One row: temp memory, agreement and (maybe) interleaved median times of two functions."""
    compiled = {
        name: _compile(f, args, argnums) for name, f in (("naive", naive), ("chunked", chunked))
    }
    temp = {name: temp_bytes(c) for name, c in compiled.items()}
    row: dict[str, Any] = {
        "case": case,
        "shape": shape,
        "mode": "fwd" if argnums is None else "vg",
        "naive_temp_MiB": temp["naive"] / MiB,
        "chunked_temp_MiB": temp["chunked"] / MiB,
        "mem_ratio": temp["chunked"] / temp["naive"] if temp["naive"] else float("nan"),
    }
    warm = {}
    values = {}
    for name, c in compiled.items():  # warm-up, and check the two agree.
        t0 = time.perf_counter()
        values[name] = _value(jax.block_until_ready(c(*args)))
        warm[name] = time.perf_counter() - t0
    row["rel_diff"] = abs(values["chunked"] - values["naive"]) / abs(values["naive"])
    if time_limit is not None and warm["naive"] > time_limit:
        row.update(naive_s=float("nan"), chunked_s=float("nan"), time_ratio=float("nan"), runs=0)
        return row
    timed = interleaved(
        {name: functools.partial(c, *args) for name, c in compiled.items()}, repeats
    )
    med = {name: t["median_ms"] / 1e3 for name, t in timed.items()}
    row.update(
        naive_s=med["naive"],
        chunked_s=med["chunked"],
        time_ratio=med["chunked"] / med["naive"],
        runs=repeats,
    )
    return row


def run(
    repeats: int = 5,
    siglip_batches: tuple[int, ...] = (4096, 8192, 16384),
    dim: int = 256,
    linear_shape: tuple[int, int, int] = (4096, 32768, 512),
    time_limit: float | None = None,
    verbose: bool = False,
) -> list[dict[str, Any]]:
    """All rows of the table (see the module docstring)."""
    rows = []
    for batch in siglip_batches:
        args = siglip_args(batch, dim)
        for argnums in (None, (0, 1, 2, 3)):
            rows.append(
                compare(
                    "siglip",
                    f"B={batch} D={dim}",
                    naive_siglip,
                    sx.siglip_loss,
                    args,
                    argnums,
                    repeats,
                    time_limit,
                )
            )
            if verbose:
                print(format_row(rows[-1]), flush=True)
        del args
    n, c, hidden = linear_shape
    args = linear_args(n, c, hidden)
    for argnums in (None, (0, 1, 3)):
        rows.append(
            compare(
                "linear",
                f"{n}x{c} H={hidden}",
                naive_linear,
                sx.linear_sigmoid_cross_entropy,
                args,
                argnums,
                repeats,
                time_limit,
            )
        )
        if verbose:
            print(format_row(rows[-1]), flush=True)
    for argnums in (None, (0, 1, 3)):
        rows.append(
            memory_row(
                "linear*",
                f"{n}x{c} H={hidden}",
                definition_linear,
                sx.linear_sigmoid_cross_entropy,
                args,
                argnums,
            )
        )
        if verbose:
            print(format_row(rows[-1]), flush=True)
    return rows


# --------------------------------------------------------------------------------------------
# The matrix-product floor (SPEC §5): value_and_grad within 1.10x of its three products timed
# alone, the forward within 1.10x of its one product.


def linear_products(h: jax.Array, w: jax.Array, g: jax.Array) -> tuple[jax.Array, ...]:
    """The three products of the linear loss's value_and_grad, for a given logits gradient."""
    return h @ w.T, g @ w, g.T @ h


def siglip_products(img: jax.Array, txt: jax.Array, g: jax.Array) -> tuple[jax.Array, ...]:
    """The three products of SigLIP's value_and_grad, for a given logits gradient."""
    return img @ txt.T, g @ txt, g.T @ img


def floor_rows(
    repeats: int = 21,
    linear_shape: tuple[int, int, int] = (2048, 16384, 512),
    siglip_shape: tuple[int, int] = (4096, 256),
    impls: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Issue 18's table: each scale loss against its matrix products alone, interleaved.

    For each loss: the forward pass vs its one product (``h @ w.T``), and ``value_and_grad``
    vs the three products (``h @ w.T``, ``g @ w``, ``g.T @ h`` for a given ``g``), all timed in
    one interleaved loop (medians of ``repeats`` runs after a warm-up). ``impls`` maps a label
    to a module with ``linear_sigmoid_cross_entropy`` and ``siglip_loss`` (default: this
    checkout's ``sigmoid_xent``), e.g. to time an older version in the same loop.
    """
    impls = impls or {"sigmoid_xent": sx}
    n, c, hidden = linear_shape
    h, w, z, bias = linear_args(n, c, hidden)
    batch, dim = siglip_shape
    img, txt, t, b = siglip_args(batch, dim)
    g_lin = jnp.asarray(np.random.default_rng(2).standard_normal((n, c), np.float32))
    g_sig = jnp.asarray(np.random.default_rng(3).standard_normal((batch, batch), np.float32))
    prod1 = jax.jit(lambda a, bb: a @ bb.T)
    prod3_lin, prod3_sig = jax.jit(linear_products), jax.jit(siglip_products)
    calls: dict[str, Callable[[], Any]] = {
        "linear product": lambda: prod1(h, w),
        "linear 3 products": lambda: prod3_lin(h, w, g_lin),
        "siglip product": lambda: prod1(img, txt),
        "siglip 3 products": lambda: prod3_sig(img, txt, g_sig),
    }
    for label, mod in impls.items():
        lin_fwd = jax.jit(mod.linear_sigmoid_cross_entropy)
        lin_vg = jax.jit(jax.value_and_grad(mod.linear_sigmoid_cross_entropy, (0, 1, 3)))
        sig_fwd = jax.jit(mod.siglip_loss)
        sig_vg = jax.jit(jax.value_and_grad(mod.siglip_loss, (0, 1, 2, 3)))
        calls[f"linear fwd {label}"] = lambda f=lin_fwd: f(h, w, z, bias)
        calls[f"linear vg {label}"] = lambda f=lin_vg: f(h, w, z, bias)
        calls[f"siglip fwd {label}"] = lambda f=sig_fwd: f(img, txt, t, b)
        calls[f"siglip vg {label}"] = lambda f=sig_vg: f(img, txt, t, b)
    timed = interleaved(calls, repeats, warmup=1, shuffle=True)
    med = {name: t["median_ms"] / 1e3 for name, t in timed.items()}
    rows = []
    for label in impls:
        for case, shape in (
            ("linear", f"{n}x{c}x{hidden}"),
            ("siglip", f"B={batch} D={dim}"),
        ):
            for mode, floor in (("fwd", "product"), ("vg", "3 products")):
                loss_s = med[f"{case} {mode} {label}"]
                rows.append(
                    {
                        "benchmark": "scale_floor",
                        "impl": label,
                        "case": case,
                        "shape": shape,
                        "mode": mode,
                        "floor_s": med[f"{case} {floor}"],
                        "loss_s": loss_s,
                        "floor_ratio": loss_s / med[f"{case} {floor}"],
                        "runs": repeats,
                    }
                )
    return rows


def format_floor(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'impl':<14} {'case':<7} {'shape':<18} {'mode':<4} {'products s':>11} {'loss s':>9} "
        f"{'loss / products':>16} {'runs':>5}"
    ]
    for r in rows:
        lines.append(
            f"{r['impl']:<14} {r['case']:<7} {r['shape']:<18} {r['mode']:<4} {r['floor_s']:>11.4f} "
            f"{r['loss_s']:>9.4f} {r['floor_ratio']:>16.3f} {r['runs']:>5d}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Model-parallel memory (issue 19): per-device temp memory of a class-sharded value_and_grad.


def class_sharded_memory_rows(
    n: int = 256, c: int = 65536, hidden: int = 64, devices: int = 8
) -> list[dict[str, Any]]:
    """Compile-only: the class-sharded ``value_and_grad`` (w.r.t. ``h``, ``w``, ``bias``) per
    device against the unsharded call on all ``C`` classes and on ``C / devices`` of them, with
    one tile covering all classes and with the default tiles. Needs ``devices`` devices (run
    with ``--sharded-memory``, which sets ``XLA_FLAGS`` in a child process)."""
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = Mesh(np.array(jax.devices()[:devices]), ("model",))
    specs = (P(), P("model"), P(None, "model"), P("model"))
    f32 = jnp.float32

    def structs(classes: int, sharded: bool) -> list[Any]:
        shapes = [(n, hidden), (classes, hidden), (n, classes), (classes,)]
        return [
            jax.ShapeDtypeStruct(s, f32, sharding=NamedSharding(mesh, p) if sharded else None)
            for s, p in zip(shapes, specs, strict=True)
        ]

    def temp(f: Callable, args: list[Any]) -> int:
        compiled = jax.jit(jax.value_and_grad(f, (0, 1, 3))).lower(*args).compile()
        return int(temp_bytes(compiled))

    rows = []
    for tiles, chunk in (("one tile", c), ("default", None)):
        sharded = jax.shard_map(
            lambda h, w, z, b, chunk=chunk: sx.linear_sigmoid_cross_entropy(
                h, w, z, b, chunk_size=chunk, axis_name="model"
            ),
            mesh=mesh,
            in_specs=specs,
            out_specs=P(),
        )

        def local(h, w, z, b, chunk=chunk):
            return sx.linear_sigmoid_cross_entropy(h, w, z, b, chunk_size=chunk)

        row = {
            "benchmark": "class_sharded_memory",
            "shape": f"{n}x{c}x{hidden} over {devices}",
            "tiles": tiles,
            "sharded_MiB": temp(sharded, structs(c, True)) / MiB,
            "unsharded_MiB": temp(local, structs(c, False)) / MiB,
            "unsharded_share_MiB": temp(local, structs(c // devices, False)) / MiB,
        }
        row["ratio"] = row["sharded_MiB"] / row["unsharded_MiB"]
        rows.append(row)
    return rows


def format_sharded_memory(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'shape':<22} {'tiles':<9} {'per device MiB':>15} {'unsharded MiB':>14} "
        f"{'unsharded C/8 MiB':>18} {'ratio':>6}"
    ]
    for r in rows:
        lines.append(
            f"{r['shape']:<22} {r['tiles']:<9} {r['sharded_MiB']:>15.4f} "
            f"{r['unsharded_MiB']:>14.4f} {r['unsharded_share_MiB']:>18.4f} {r['ratio']:>6.3f}"
        )
    return "\n".join(lines)


def sharded_memory_table() -> str:
    """:func:`class_sharded_memory_rows` in a child process with 8 virtual CPU devices."""
    import os
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this checkout's package
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", PYTHONPATH=path)
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--sharded-memory-child"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return done.stdout.strip()


HEADER = (
    f"{'case':<7} {'shape':<18} {'mode':<4} {'naive MiB':>10} {'chunked MiB':>12} "
    f"{'mem ratio':>10} {'naive s':>9} {'chunked s':>10} {'time ratio':>11} {'runs':>5} "
    f"{'rel diff':>9}"
)


def format_row(r: dict[str, Any]) -> str:
    return (
        f"{r['case']:<7} {r['shape']:<18} {r['mode']:<4} {r['naive_temp_MiB']:>10.1f} "
        f"{r['chunked_temp_MiB']:>12.1f} {r['mem_ratio']:>10.4f} {r['naive_s']:>9.3f} "
        f"{r['chunked_s']:>10.3f} {r['time_ratio']:>11.3f} {r['runs']:>5d} "
        f"{r['rel_diff']:>9.1e}"
    )


if __name__ == "__main__":
    argv = [a for a in sys.argv[1:] if not a.startswith("--")]
    if "--sharded-memory-child" in sys.argv:
        print(format_sharded_memory(class_sharded_memory_rows()))
        sys.exit(0)
    if "--sharded-memory" in sys.argv:
        print(sharded_memory_table())
        sys.exit(0)
    if "--floor" in sys.argv:
        import os

        print(f"jax {jax.__version__}; load average {os.getloadavg()[0]:.1f}", flush=True)
        impls: dict[str, Any] = {"sigmoid_xent": sx}
        for arg in sys.argv[1:]:  # --baseline=NAME: also time an importable copy, e.g. of main.
            if arg.startswith("--baseline="):
                import importlib

                name = arg.split("=", 1)[1]
                impls = {name: importlib.import_module(name), **impls}
        print(format_floor(floor_rows(int(argv[0]) if argv else 21, impls=impls)), flush=True)
        sys.exit(0)
    reps = int(argv[0]) if argv else 5
    kwargs: dict[str, Any] = {}
    if "--quick" in sys.argv:
        kwargs = {"siglip_batches": (4096,), "linear_shape": (4096, 4096, 512)}
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}; medians of {reps} "
        "interleaved runs after one warm-up"
    )
    print(HEADER, flush=True)
    run(reps, verbose=True, **kwargs)
