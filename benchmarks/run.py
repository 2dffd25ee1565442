"""Speed and memory of sigmoid_xent side by side with optax, naive autodiff and a copy floor.

``make bench`` runs ``python benchmarks/run.py``; ``--quick`` is a short run (small sizes, few
repeats). Everything is measured in one process, implementations interleaved (the order rotates
every round), each timed ``--repeats`` times after two warm-up calls, with
``jax.block_until_ready``. Tables show medians; the machine may be shared, so compare ratios.

Workloads (all jitted, inputs ``[N / 1024, 1024]``, logits ~ 4 N(0, 1), hard labels):

- core: ``value_and_grad`` w.r.t. the logits of the mean loss, N = 2^16 .. 2^24, float32 and
  bfloat16. Implementations:

  - ``ours``: :func:`sigmoid_xent.sigmoid_cross_entropy_with_logits` (custom VJP);
  - ``optax``: ``optax.sigmoid_binary_cross_entropy`` through autodiff;
  - ``naive``: autodiff of ``max(x, 0) - x*z + log1p(exp(-|x|))`` (NaN at ±inf logits);
  - ``floor``: ``((x * z).sum(), x + z)``: reads both inputs, writes one array, no math;
  - ``ours, d/dx and d/dz``: ours with the gradient w.r.t. the labels as well (float32);
  - ``torch eager`` / ``torch.compile``: ``binary_cross_entropy_with_logits`` forward and
    backward, when torch is importable (it is no dependency).

  Columns: median and minimum wall ms, median CPU ms of the process per call (user + system,
  all threads: robust to other processes taking the cores), ``x optax`` (optax's median / this
  median: how many times faster), ``x floor`` (this median / the floor's), ``/ naive`` (this
  median / naive's) and XLA's temp buffer (``compile().memory_analysis()``).
- bf16 accuracy: d(sum loss)/dx of ours and optax with bfloat16 inputs against a float64
  reference: max and median absolute error and error in bfloat16 ulps.
- paths (float32, 2^20): weighted (vs naive autodiff of TensorFlow's formula), focal (vs
  ``optax.sigmoid_focal_loss``), the Keras object ``BinaryCrossentropy(from_logits=True)`` vs
  ``binary_crossentropy(...).mean()`` (must cost the same: ratio within 1.05).
- ranking layouts: ``benchmarks/bench_ranking.py`` (packed segment_sum / padded / rax-style).
- single-pass experiments (``benchmarks/bench_core.py``, not with ``--quick``).
- scale losses against their three-product floor (``benchmarks/bench_scale.py``, not with
  ``--quick``).
- HLO facts of ``ours`` at 2^24: fusions, transcendentals and bytes per element.

``--plot PATH`` draws time per element vs N (matplotlib, skipped if absent); ``--json PATH``
writes every row. No timed asserts anywhere.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import re
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import COLS, interleaved, make_inputs, temp_mib  # noqa: E402
from workloads import floor, naive_loss, optax_loss, ours  # noqa: E402

import sigmoid_xent as sx  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

# torch's OpenMP workers spin after each parallel region by default; interleaved with JAX they
# would take the cores from the next measurement.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
try:  # optional, never a dependency
    import torch
    import torch.nn.functional as torch_f
except ImportError:  # pragma: no cover - depends on the environment
    torch = None


# --------------------------------------------------------------------------- implementations


def core_impls(dtype: Any) -> dict[str, Callable[..., Any]]:
    impls = {
        "ours": jax.jit(jax.value_and_grad(ours)),
        "optax": jax.jit(jax.value_and_grad(optax_loss)),
        "naive": jax.jit(jax.value_and_grad(naive_loss)),
        "floor": jax.jit(floor),
    }
    if dtype == jnp.float32:
        impls["ours, d/dx and d/dz"] = jax.jit(jax.value_and_grad(ours, argnums=(0, 1)))
    return impls


def torch_impls(dtype: Any) -> dict[str, Callable[..., Any]]:
    """``binary_cross_entropy_with_logits`` forward + backward, eager and compiled."""
    if torch is None:
        return {}

    def step(x: Any, z: Any) -> Any:
        x = x.detach().requires_grad_(True)
        loss = torch_f.binary_cross_entropy_with_logits(x, z)
        (g,) = torch.autograd.grad(loss, x)
        return loss, g

    impls = {"torch eager": step}
    try:
        impls["torch.compile"] = torch.compile(step)
    except Exception as err:  # pragma: no cover - depends on the environment
        print(f"torch.compile unavailable: {err}", file=sys.stderr)
    return impls


def _torch_call(fn: Callable[..., Any], *args: Any) -> None:
    """Runs a torch step to completion (torch on CPU is synchronous; CUDA is synchronized)."""
    fn(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# --------------------------------------------------------------------------- core table


def bench_core(sizes: list[int], dtypes: list[Any], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for dtype in dtypes:
        impls = core_impls(dtype)
        timpls = torch_impls(dtype)
        for n in sizes:
            x, z = make_inputs(n, dtype)
            thunks = {k: functools.partial(f, x, z) for k, f in impls.items()}
            if timpls:
                tdt = {jnp.float32: torch.float32, jnp.bfloat16: torch.bfloat16}[dtype]
                tx = torch.from_numpy(np.array(x.astype(jnp.float32))).to(tdt)
                tz = torch.from_numpy(np.array(z.astype(jnp.float32))).to(tdt)
                for k, f in timpls.items():
                    thunks[k] = functools.partial(_torch_call, f, tx, tz)
            res = interleaved(thunks, repeats, jax.block_until_ready)
            for k, r in res.items():
                rows.append(
                    {
                        "benchmark": "core",
                        "impl": k,
                        "n": n,
                        "dtype": jnp.dtype(dtype).name,
                        **r,
                        "x_optax": res["optax"]["median_ms"] / r["median_ms"],
                        "x_floor": r["median_ms"] / res["floor"]["median_ms"],
                        "vs_naive": r["median_ms"] / res["naive"]["median_ms"],
                        "temp_mib": temp_mib(impls[k], x, z) if k in impls else float("nan"),
                        "repeats": repeats,
                    }
                )
            del x, z
    return rows


def format_core(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'N':>6} {'dtype':<9} {'implementation':<20} {'median ms':>10} {'min ms':>8} "
        f"{'cpu ms':>8} {'x optax':>8} {'x floor':>8} {'/ naive':>8} {'temp MiB':>9}"
    )
    lines = [header, "-" * len(header)]
    prev = None
    for r in rows:
        if prev is not None and (r["n"], r["dtype"]) != prev:
            lines.append("")
        prev = (r["n"], r["dtype"])
        size = f"2^{int(np.log2(r['n']))}"
        lines.append(
            f"{size:>6} {r['dtype']:<9} {r['impl']:<20} "
            f"{r['median_ms']:>10.3f} {r['min_ms']:>8.3f} {r['cpu_ms']:>8.2f} "
            f"{r['x_optax']:>8.2f} {r['x_floor']:>8.2f} {r['vs_naive']:>8.2f} "
            f"{r['temp_mib']:>9.1f}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- bf16 accuracy


def bf16_accuracy(n: int = 2**16) -> list[dict[str, Any]]:
    """d(sum loss)/dx with bfloat16 inputs, ours and optax, against float64."""
    x, z = make_inputs(n, jnp.float32, seed=1)
    specials = jnp.array([0.0, 0.5, -0.5, 8.0, -8.0, 20.0, -20.0, 30.0, -30.0, 80.0, -80.0])
    x = (
        x.ravel()
        .at[: specials.size]
        .set(specials)
        .at[specials.size : 2 * specials.size]
        .set(specials)
    )
    z = z.ravel().at[: specials.size].set(1.0).at[specials.size : 2 * specials.size].set(0.0)
    xb, zb = x.astype(jnp.bfloat16), z.astype(jnp.bfloat16)
    x64, z64 = np.asarray(xb, np.float64), np.asarray(zb, np.float64)
    e = np.exp(-np.abs(x64))
    s = e / (1 + e)
    want = np.where(x64 >= 0, (1 - z64) - s, s - z64)
    # One bfloat16 ulp at the reference (8 significant bits): 2^(exponent - 8) with frexp's
    # exponent; the smallest normal below that range (XLA:CPU flushes subnormals).
    _, exponent = np.frexp(np.asarray(want.astype(jnp.bfloat16), np.float64))
    spacing = np.maximum(
        np.ldexp(1.0, exponent - 8), float(jnp.finfo(jnp.bfloat16).smallest_normal)
    )
    out = []
    for name, loss in [
        ("ours", lambda x, z: sx.sigmoid_cross_entropy_with_logits(z, x).sum()),
        ("optax", lambda x, z: optax.sigmoid_binary_cross_entropy(x, z).sum()),
    ]:
        got = np.asarray(jax.jit(jax.grad(loss))(xb, zb), np.float64)
        err = np.abs(got - want)
        ulps = err / spacing
        out.append(
            {
                "benchmark": "bf16_grad_accuracy",
                "impl": name,
                "n": int(x.size),
                "max_abs": float(err.max()),
                "median_abs": float(np.median(err)),
                "max_ulp": float(ulps.max()),
                "median_ulp": float(np.median(ulps)),
                "within_1_ulp": float(np.mean(ulps <= 1.0)),
                "at_x30_z1": float(got[7]),
                "want_x30_z1": float(want[7]),
            }
        )
    return out


def format_accuracy(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'implementation':<10} {'max abs err':>12} {'median abs':>11} {'max ulp':>9} "
        f"{'median ulp':>10} {'<= 1 ulp':>9} {'grad at x=30,z=1':>17}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['impl']:<10} {r['max_abs']:>12.3e} {r['median_abs']:>11.3e} "
            f"{r['max_ulp']:>9.1f} {r['median_ulp']:>10.2f} "
            f"{100 * r['within_1_ulp']:>8.1f}% {r['at_x30_z1']:>17.4e}"
        )
    lines.append(f"(float64 reference at x=30, z=1: {rows[0]['want_x30_z1']:.4e})")
    return "\n".join(lines)


# --------------------------------------------------------------------------- other paths


def tf_weighted_naive(z: jax.Array, x: jax.Array, pw: jax.Array) -> jax.Array:
    """TensorFlow's formula for the weighted loss, differentiated by autodiff."""
    log_weight = 1 + (pw - 1) * z
    return (1 - z) * x + log_weight * (jnp.log1p(jnp.exp(-jnp.abs(x))) + jnp.maximum(-x, 0))


def bench_paths(n: int, repeats: int) -> list[dict[str, Any]]:
    x, z = make_inputs(n, jnp.float32, seed=2)
    pw = jnp.linspace(0.5, 3.0, COLS, dtype=jnp.float32)
    keras_obj = sx.BinaryCrossentropy(from_logits=True)
    groups = {
        "weighted": {
            "ours": lambda x, z: sx.weighted_sigmoid_cross_entropy_with_logits(z, x, pw).mean(),
            "naive autodiff of TF's formula": lambda x, z: tf_weighted_naive(z, x, pw).mean(),
        },
        "focal": {
            "ours": lambda x, z: sx.sigmoid_focal_loss(z, x, alpha=0.25, gamma=2.0).mean(),
            "optax.sigmoid_focal_loss": lambda x, z: optax.sigmoid_focal_loss(
                x, z, alpha=0.25, gamma=2.0
            ).mean(),
        },
        "keras object": {
            "binary_crossentropy().mean()": lambda x, z: sx.binary_crossentropy(
                z, x, from_logits=True
            ).mean(),
            "BinaryCrossentropy(from_logits)": lambda x, z: keras_obj(z, x),
        },
    }
    rows = []
    for group, fns in groups.items():
        jitted = {k: jax.jit(jax.value_and_grad(f)) for k, f in fns.items()}
        res = interleaved(
            {k: functools.partial(f, x, z) for k, f in jitted.items()},
            repeats,
            jax.block_until_ready,
        )
        base = next(iter(res.values()))["median_ms"]
        texts = {k: _hlo_signature(f, x, z) for k, f in jitted.items()}
        first = next(iter(texts.values()))
        for k, r in res.items():
            rows.append(
                {
                    "benchmark": "paths",
                    "group": group,
                    "impl": k,
                    "n": n,
                    **r,
                    "ratio": r["median_ms"] / base,
                    "temp_mib": temp_mib(jitted[k], x, z),
                    "same_hlo_as_first": texts[k] == first,
                    "repeats": repeats,
                }
            )
    return rows


def _hlo_signature(fn: Any, *args: Any) -> str:
    """The optimized HLO's instructions without names and metadata (to compare programs)."""
    text = fn.lower(*args).compile().as_text()
    body = text[text.index("ENTRY") :]
    body = re.sub(r", metadata=\{[^}]*\}", "", body)
    body = re.sub(r"%[\w.\-]+", "%", body)
    return body


def format_paths(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'path':<13} {'implementation':<32} {'median ms':>10} {'cpu ms':>8} "
        f"{'ratio':>6} {'temp MiB':>9} {'same HLO':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        same = ("yes" if r["same_hlo_as_first"] else "no") if r["group"] == "keras object" else ""
        lines.append(
            f"{r['group']:<13} {r['impl']:<32} {r['median_ms']:>10.3f} "
            f"{r['cpu_ms']:>8.2f} {r['ratio']:>6.2f} {r['temp_mib']:>9.1f} {same:>9}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- HLO facts


def hlo_facts(n: int = 2**24, dtype: Any = jnp.float32) -> dict[str, Any]:
    """Structure of the compiled value_and_grad of ``ours`` (what keeps it fast)."""
    x = jax.ShapeDtypeStruct((n // COLS, COLS), dtype)
    compiled = jax.jit(jax.value_and_grad(ours)).lower(x, x).compile()
    text = compiled.as_text()
    entry = text[text.index("ENTRY") :]
    big = f"[{n // COLS},{COLS}]"
    fusions = [line for line in entry.splitlines() if " fusion(" in line]
    big_fusions = [f for f in fusions if big in f.split("=")[1].split("fusion(")[0]]
    reductions = [f for f in fusions if "__ynn_fusion" in f or "reduce" in f.split("calls=")[1]]
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    mem = compiled.memory_analysis()
    computations = dict(re.findall(r"^%(\S+) \(.*?\{\n(.*?)\n\}", text, re.S | re.M))
    ops = []
    for f in big_fusions + reductions:
        called = re.search(r"calls=%([\w.\-]+)", f).group(1)
        ops.append(
            (
                re.search(r"%([\w.\-]+) =", f).group(1),
                [
                    op
                    for op in re.findall(r"= \S+ ([a-z\-]+)\(", computations.get(called, ""))
                    if op not in ("parameter", "constant", "broadcast")
                ],
            )
        )
    return {
        "n": n,
        "dtype": jnp.dtype(dtype).name,
        "fusions_over_inputs": len(big_fusions),
        "reduction_fusions": len(reductions),
        "exp_per_element": sum(o.count("exponential") for _, o in ops),
        "divide_per_element": sum(o.count("divide") for _, o in ops),
        "log_per_element": sum(o.count("log") + o.count("log-plus-one") for _, o in ops),
        "transcendentals_per_element": cost.get("transcendentals", 0.0) / n,
        "bytes_accessed_per_element": cost.get("bytes accessed", 0.0) / n,
        "temp_bytes_per_element": mem.temp_size_in_bytes / n,
        "fusion_ops": ops,
    }


def format_facts(f: dict[str, Any]) -> str:
    lines = [
        f"value_and_grad of ours, {f['dtype']}, N = 2^{int(np.log2(f['n']))}:",
        f"  fusions over [N/1024, 1024] arrays: {f['fusions_over_inputs']} "
        f"(+ {f['reduction_fusions']} reduction fusion)",
        f"  exp / log / divide per element: {f['exp_per_element']} / "
        f"{f['log_per_element']} / {f['divide_per_element']}; XLA-counted transcendentals "
        f"per element: {f['transcendentals_per_element']:.1f}",
        f"  bytes accessed per element: {f['bytes_accessed_per_element']:.1f}; temp bytes "
        f"per element: {f['temp_bytes_per_element']:.1f}",
    ]
    for name, ops in f["fusion_ops"]:
        lines.append(f"    {name}: {' '.join(ops)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- plot


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def plot(rows: list[dict[str, Any]], path: str) -> bool:
    """Time per element vs N for each implementation, one panel per dtype."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return False
    core = [r for r in rows if r["benchmark"] == "core"]
    dtypes = sorted({r["dtype"] for r in core}, key=lambda d: d != "float32")
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6 * len(dtypes), 4.5), squeeze=False)
    for ax, dtype in zip(axes[0], dtypes, strict=True):
        for impl in dict.fromkeys(r["impl"] for r in core if r["dtype"] == dtype):
            pts = sorted(
                (r["n"], r["median_ms"] * 1e6 / r["n"])
                for r in core
                if r["dtype"] == dtype and r["impl"] == impl
            )
            style = "-" if impl.startswith("ours") else "--"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=impl)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("N (elements)")
        ax.set_ylabel("median ns per element")
        ax.set_title(f"value_and_grad of the mean loss, {dtype}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"{cpu_name()}, {os.cpu_count()} cores, jax {jax.__version__} "
        f"({jax.devices()[0].platform}); medians, lower is better",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 5 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per implementation")
    parser.add_argument("--sizes", type=str, default=None, help="log2 sizes, e.g. 16,20,24")
    parser.add_argument("--dtypes", type=str, default="float32,bfloat16")
    parser.add_argument("--no-ranking", action="store_true")
    parser.add_argument(
        "--no-single-pass",
        action="store_true",
        help="skip benchmarks/bench_core.py's single-pass experiments (2^24)",
    )
    parser.add_argument(
        "--plot",
        type=str,
        default=None,
        help="PNG path (default benchmarks/time_per_element_<platform>.png; 'none' to skip)",
    )
    parser.add_argument("--json", type=str, default=None, help="write all rows to this file")
    args = parser.parse_args(argv)
    repeats = args.repeats or (5 if args.quick else 21)
    logs = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else ([16, 18, 20] if args.quick else [16, 18, 20, 22, 24])
    )
    dtypes = [{"float32": jnp.float32, "bfloat16": jnp.bfloat16}[d] for d in args.dtypes.split(",")]
    device = jax.devices()[0]
    print(
        f"jax {jax.__version__}, {device.platform} ({device.device_kind}), {cpu_name()}, "
        f"{os.cpu_count()} CPU cores, optax {optax.__version__}, torch "
        f"{torch.__version__ if torch is not None else 'not installed (columns skipped)'}; "
        f"load average {os.getloadavg()[0]:.1f}; median of {repeats} interleaved runs after "
        "2 warm-ups",
        flush=True,
    )

    rows = bench_core([2**k for k in logs], dtypes, repeats)
    print("\n## value_and_grad (w.r.t. logits) of the mean loss, jitted, [N/1024, 1024]\n")
    print(format_core(rows), flush=True)

    acc = bf16_accuracy()
    rows += acc
    print("\n## bfloat16 inputs: d(sum loss)/dx against a float64 reference\n")
    print(format_accuracy(acc), flush=True)

    paths = bench_paths(2**18 if args.quick else 2**20, repeats)
    rows += paths
    print(
        f"\n## other paths, value_and_grad of the mean, float32, N = "
        f"2^{int(np.log2(paths[0]['n']))} (ratio: to the first line of each path)\n"
    )
    print(format_paths(paths), flush=True)

    if not args.no_ranking:
        try:
            import bench_ranking
        except ImportError:
            print("\n(benchmarks/bench_ranking.py not present: ranking layouts skipped)")
        else:
            ranking_rows = bench_ranking.run(repeats=repeats)
            rows += ranking_rows
            print("\n## ranking layouts (value_and_grad w.r.t. logits)\n")
            print(bench_ranking.format_table(ranking_rows), flush=True)

    if not (args.quick or args.no_single_pass):
        import bench_core as single_pass

        single = single_pass.run(repeats)
        rows += single
        print(
            "\n## reading each input once? value_and_grad at 2^24, float32 "
            "(benchmarks/bench_core.py)\n"
        )
        print(single_pass.format_table(single), flush=True)

    if not args.quick:
        import bench_scale

        scale = bench_scale.floor_rows(repeats=repeats)
        rows += scale
        print(
            "\n## scale losses against their matrix products alone (issue 18; "
            "benchmarks/bench_scale.py)\n"
        )
        print(bench_scale.format_floor(scale), flush=True)

    facts = hlo_facts(2**20 if args.quick else 2**24)
    rows.append({"benchmark": "hlo_facts", **facts})
    print("\n## compiled HLO of ours\n")
    print(format_facts(facts))

    if args.plot != "none":
        path = args.plot or os.path.join(HERE, f"time_per_element_{device.platform}.png")
        if plot(rows, path):
            print(f"\nplot: {path}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1, default=str)
    return rows


if __name__ == "__main__":
    main()
