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
(memory only) therefore also compare against the loss's own definition,
``mean(sigmoid_cross_entropy_with_logits(labels, h @ w.T + bias))``, whose logits XLA does
materialize.

The whole-contract rows (``--contract``): the label-ids head's compiled temp memory at
B = 4096, C = 262144, H = 128, K = 8 (:func:`ids_memory_rows`); at B = 2048, C = 32768,
H = 128, K = 8 its ``value_and_grad`` against its three matrix products, and with per-row
weights, a per-class ``where``, a per-class ``pos_weight`` and smoothing 0.1 against the plain
call; and multi-positive SigLIP (ids) against the diagonal one at B = 4096
(:func:`contract_rows`, one interleaved loop).

Run: ``python benchmarks/bench_scale.py [repeats] [--quick]``; ``run(...)`` returns the rows.
``--quick`` runs only the smallest SigLIP size and a 4096 x 4096 x 512 linear case.
``--floor``, ``--memory``, ``--sharded-memory`` and ``--contract`` print one table each;
``--baseline=NAME`` adds an importable copy of the package (e.g. the code before a change,
renamed) to the first three, measured in the same process.
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
    """The loss's definition through the library's core, unchunked."""
    return jnp.mean(sx.sigmoid_cross_entropy_with_logits(z, h @ w.T + bias))


def head(mod: Any = sx) -> Callable[..., jax.Array]:
    """``mod``'s linear head as ``f(h, w, labels, bias)`` (the bias is keyword-only now)."""
    return lambda h, w, z, b: mod.linear_sigmoid_cross_entropy(h, w, z, bias=b)


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
                head(),
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
                head(),
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
        lin_fwd = jax.jit(head(mod))
        lin_vg = jax.jit(jax.value_and_grad(head(mod), (0, 1, 3)))
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
    n: int = 256, c: int = 65536, hidden: int = 64, devices: int = 8, mod: Any = sx
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
            lambda h, w, z, b, chunk=chunk: mod.linear_sigmoid_cross_entropy(
                h, w, z, bias=b, chunk_size=chunk, axis_name="model"
            ),
            mesh=mesh,
            in_specs=specs,
            out_specs=P(),
        )

        def local(h, w, z, b, chunk=chunk):
            return mod.linear_sigmoid_cross_entropy(h, w, z, bias=b, chunk_size=chunk)

        row = {
            "benchmark": "class_sharded_memory",
            "impl": mod.__name__,
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
        f"{'impl':<18} {'shape':<22} {'tiles':<9} {'per device MiB':>15} {'unsharded MiB':>14} "
        f"{'unsharded C/8 MiB':>18} {'ratio':>6}"
    ]
    for r in rows:
        lines.append(
            f"{r['impl']:<18} {r['shape']:<22} {r['tiles']:<9} {r['sharded_MiB']:>15.4f} "
            f"{r['unsharded_MiB']:>14.4f} {r['unsharded_share_MiB']:>18.4f} {r['ratio']:>6.3f}"
        )
    return "\n".join(lines)


def sharded_memory_table(baselines: tuple[str, ...] = ()) -> str:
    """:func:`class_sharded_memory_rows` in a child process with 8 virtual CPU devices."""
    import os
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this checkout's package
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", PYTHONPATH=path)
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--sharded-memory-child"]
        + [f"--baseline={name}" for name in baselines],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return done.stdout.strip()


# --------------------------------------------------------------------------------------------
# The earlier memory rows, compile-only, for several implementations (before / after a change).


def memory_rows(
    impls: dict[str, Any],
    siglip_shape: tuple[int, int] = (16384, 256),
    linear_shape: tuple[int, int, int] = (4096, 32768, 512),
) -> list[dict[str, Any]]:
    """Temp memory of SigLIP and the linear head (forward and ``value_and_grad``) against the
    naive formulas (the linear forward against the core definition: see the module docstring)."""
    batch, dim = siglip_shape
    n, c, hidden = linear_shape
    f32 = jnp.float32
    sig = [jax.ShapeDtypeStruct(s, f32) for s in ((batch, dim), (batch, dim), (), ())]
    lin = [jax.ShapeDtypeStruct(s, f32) for s in ((n, hidden), (c, hidden), (n, c), (c,))]
    cases = [
        ("siglip", f"B={batch} D={dim}", sig, None, naive_siglip, lambda m: m.siglip_loss),
        ("siglip", f"B={batch} D={dim}", sig, (0, 1, 2, 3), naive_siglip, lambda m: m.siglip_loss),
        ("linear", f"{n}x{c}x{hidden}", lin, None, definition_linear, head),
        ("linear", f"{n}x{c}x{hidden}", lin, (0, 1, 3), naive_linear, head),
    ]
    rows = []
    for case, shape, args, argnums, naive, loss in cases:
        row = {
            "benchmark": "scale_memory",
            "case": case,
            "shape": shape,
            "mode": "fwd" if argnums is None else "vg",
            "naive_MiB": temp_bytes(_compile(naive, args, argnums)) / MiB,
        }
        for label, mod in impls.items():
            row[f"{label}_MiB"] = temp_bytes(_compile(loss(mod), args, argnums)) / MiB
        rows.append(row)
    return rows


def format_memory(rows: list[dict[str, Any]]) -> str:
    labels = [k[: -len("_MiB")] for k in rows[0] if k.endswith("_MiB") and k != "naive_MiB"]
    lines = [f"{'case':<7} {'shape':<18} {'mode':<4} {'naive MiB':>10}"]
    lines[0] += "".join(f" {label + ' MiB (ratio)':>28}" for label in labels)
    for r in rows:
        line = f"{r['case']:<7} {r['shape']:<18} {r['mode']:<4} {r['naive_MiB']:>10.1f}"
        for label in labels:
            mib = r[f"{label}_MiB"]
            cell = f"{mib:.1f} ({mib / r['naive_MiB']:.4f})"
            line += f" {cell:>28}"
        lines.append(line)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The whole contract: label ids, options, multi-positive SigLIP.


def ids_args(batch: int, classes: int, hidden: int, k: int) -> tuple[jax.Array, ...]:
    """``h``, ``w``, ``bias`` and ``k`` random class ids per row (no padding)."""
    rng = np.random.default_rng(4)
    h = jnp.asarray(rng.standard_normal((batch, hidden), np.float32))
    w = jnp.asarray(rng.standard_normal((classes, hidden), np.float32) / np.sqrt(hidden))
    ids = jnp.asarray(rng.integers(0, classes, (batch, k)), jnp.int32)
    return h, w, jnp.full((classes,), -4.0, jnp.float32), ids


def ids_head(h: jax.Array, w: jax.Array, bias: jax.Array, ids: jax.Array) -> jax.Array:
    return sx.linear_sigmoid_cross_entropy(h, w, label_ids=ids, bias=bias)


def dense_ids_definition(h: jax.Array, w: jax.Array, bias: jax.Array, ids: jax.Array) -> jax.Array:
    """The definition on the dense labels of ``ids``: ``[B, C]`` labels and logits."""
    z = jnp.max(jax.nn.one_hot(ids, w.shape[0], dtype=h.dtype), axis=1)
    return definition_linear(h, w, z, bias)


def ids_memory_rows(shape: tuple[int, int, int, int] = (4096, 262144, 128, 8)) -> list[dict]:
    """Compile-only: the label-ids head's temp memory (forward, and ``value_and_grad`` w.r.t.
    ``h``, ``w``, ``bias``) against one dense ``[B, C]`` float32 array, and the forward against
    the definition on dense labels."""
    b, c, hidden, k = shape
    f32 = jnp.float32
    args = [jax.ShapeDtypeStruct(s, f32) for s in ((b, hidden), (c, hidden), (c,))]
    args.append(jax.ShapeDtypeStruct((b, k), jnp.int32))
    dense = b * c * 4
    naive_fwd = temp_bytes(_compile(dense_ids_definition, args, None))
    rows = []
    for mode, argnums in (("fwd", None), ("vg", (0, 1, 2))):
        temp = temp_bytes(_compile(ids_head, args, argnums))
        row = {
            "benchmark": "ids_memory",
            "shape": f"B={b} C={c} H={hidden} K={k}",
            "mode": mode,
            "temp_MiB": temp / MiB,
            "dense_array_MiB": dense / MiB,
            "vs_dense_array": temp / dense,
        }
        if argnums is None:
            row.update(naive_MiB=naive_fwd / MiB, vs_naive=temp / naive_fwd)
        rows.append(row)
    return rows


def format_ids_memory(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'shape':<30} {'mode':<4} {'temp MiB':>9} {'one [B, C] f32 MiB':>19} "
        f"{'/ [B, C]':>9} {'definition MiB':>15} {'/ definition':>13}"
    ]
    for r in rows:
        naive = f"{r['naive_MiB']:>15.1f} {r['vs_naive']:>13.4f}" if "naive_MiB" in r else ""
        lines.append(
            f"{r['shape']:<30} {r['mode']:<4} {r['temp_MiB']:>9.2f} {r['dense_array_MiB']:>19.1f} "
            f"{r['vs_dense_array']:>9.4f} {naive}"
        )
    return "\n".join(lines)


def contract_rows(
    repeats: int = 21,
    linear_shape: tuple[int, int, int, int] = (2048, 32768, 128, 8),
    siglip_shape: tuple[int, int] = (4096, 256),
) -> list[dict[str, Any]]:
    """One interleaved loop (medians, shuffled order): the label-ids head's ``value_and_grad``
    and its three products alone; the same with weights ``[B, 1]``, ``where`` ``[C]``,
    ``pos_weight`` ``[C]`` and smoothing 0.1; the forward against its one product; SigLIP with
    ids (two captions per image, so duplicates on both sides) against the diagonal SigLIP."""
    b, c, hidden, k = linear_shape
    h, w, bias, ids = ids_args(b, c, hidden, k)
    rng = np.random.default_rng(5)
    g = jnp.asarray(rng.standard_normal((b, c), np.float32))
    row_w = jnp.asarray(rng.uniform(size=(b, 1)), jnp.float32)
    where = jnp.asarray(rng.uniform(size=c) < 0.9)
    pos_weight = jnp.asarray(rng.uniform(0.5, 2.0, size=c), jnp.float32)

    def options(h, w, bias):
        return sx.linear_sigmoid_cross_entropy(
            h, w, label_ids=ids, bias=bias, weights=row_w, where=where, pos_weight=pos_weight,
            label_smoothing=0.1,
        )  # fmt: skip

    batch, dim = siglip_shape
    img, txt, t, sb = siglip_args(batch, dim)
    pairs = jnp.arange(batch) // 2  # images i, i + 1 and texts i, i + 1 share an id

    def siglip_ids(img, txt, t, b):
        return sx.siglip_loss(img, txt, t, b, img_ids=pairs, txt_ids=pairs)

    prod1, prod3 = jax.jit(lambda a, m: a @ m.T), jax.jit(linear_products)
    plain = lambda h, w, bias: ids_head(h, w, bias, ids)  # noqa: E731
    fns = {
        "ids vg": jax.jit(jax.value_and_grad(plain, (0, 1, 2))),
        "ids + options vg": jax.jit(jax.value_and_grad(options, (0, 1, 2))),
        "ids fwd": jax.jit(plain),
        "siglip diagonal vg": jax.jit(jax.value_and_grad(sx.siglip_loss, (0, 1, 2, 3))),
        "siglip ids vg": jax.jit(jax.value_and_grad(siglip_ids, (0, 1, 2, 3))),
        "siglip diagonal fwd": jax.jit(sx.siglip_loss),
        "siglip ids fwd": jax.jit(siglip_ids),
    }
    calls: dict[str, Callable[[], Any]] = {
        "3 products": lambda: prod3(h, w, g),
        "1 product": lambda: prod1(h, w),
    }
    for name, f in fns.items():
        args = (img, txt, t, sb) if name.startswith("siglip") else (h, w, bias)
        calls[name] = lambda f=f, args=args: f(*args)
    timed = interleaved(calls, repeats, warmup=1, shuffle=True)
    med = {name: t["median_ms"] / 1e3 for name, t in timed.items()}
    lin = f"B={b} C={c} H={hidden} K={k}"
    sig = f"B={batch} D={dim}"
    pairs_of = [
        ("ids vg", "3 products", lin, "<= 1.10"),
        ("ids fwd", "1 product", lin, "<= 1.10"),
        ("ids + options vg", "ids vg", lin, "<= 1.10"),
        ("siglip ids vg", "siglip diagonal vg", sig, "<= 1.10"),
        ("siglip ids fwd", "siglip diagonal fwd", sig, ""),
    ]
    return [
        {
            "benchmark": "scale_contract",
            "call": call,
            "against": base,
            "shape": shape,
            "call_s": med[call],
            "against_s": med[base],
            "ratio": med[call] / med[base],
            "min_ratio": timed[call]["min_ms"] / timed[base]["min_ms"],
            "cpu_ratio": timed[call]["cpu_ms"] / timed[base]["cpu_ms"],
            "goal": goal,
            "runs": repeats,
        }
        for call, base, shape, goal in pairs_of
    ]


def format_contract(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'call':<18} {'against':<20} {'shape':<26} {'call s':>8} {'against s':>10} "
        f"{'ratio':>6} {'min':>6} {'cpu':>6} {'goal':>8}"
    ]
    for r in rows:
        lines.append(
            f"{r['call']:<18} {r['against']:<20} {r['shape']:<26} {r['call_s']:>8.4f} "
            f"{r['against_s']:>10.4f} {r['ratio']:>6.3f} {r['min_ratio']:>6.3f} "
            f"{r['cpu_ratio']:>6.3f} {r['goal']:>8}"
        )
    return "\n".join(lines)


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


def _baselines() -> dict[str, Any]:
    """``--baseline=NAME`` arguments: importable copies of the package to measure alongside."""
    import importlib

    names = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--baseline=")]
    return {name: importlib.import_module(name) for name in names}


if __name__ == "__main__":
    argv = [a for a in sys.argv[1:] if not a.startswith("--")]
    if "--sharded-memory-child" in sys.argv:
        rows = [r for m in (*_baselines().values(), sx) for r in class_sharded_memory_rows(mod=m)]
        print(format_sharded_memory(rows))
        sys.exit(0)
    if "--sharded-memory" in sys.argv:
        print(sharded_memory_table(tuple(_baselines())))
        sys.exit(0)
    print(f"jax {jax.__version__}; load average {os.getloadavg()[0]:.1f}", flush=True)
    if "--memory" in sys.argv:
        print(format_memory(memory_rows({**_baselines(), "sigmoid_xent": sx})), flush=True)
        sys.exit(0)
    if "--contract" in sys.argv:
        print(format_ids_memory(ids_memory_rows()), flush=True)
        print(format_contract(contract_rows(int(argv[0]) if argv else 21)), flush=True)
        sys.exit(0)
    if "--floor" in sys.argv:
        impls = {**_baselines(), "sigmoid_xent": sx}
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
