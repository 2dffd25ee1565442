"""How XLA compiles value_and_grad of the mean core loss, and what its VJP saves: measured facts.

Prints, for float32, bfloat16 and float16 ``[256, 1024]`` inputs (gradient w.r.t. the logits,
and w.r.t. both inputs for float32): the fusions over full-size arrays with their operations,
the exp / divide / log counts among them, XLA's cost analysis (transcendentals and bytes
accessed per element), the temp bytes per element, and ``print_saved_residuals``. These
depend on the compiler version and the backend (YNNPACK reduction fusions are XLA:CPU's), so
they are measured here rather than asserted; ``tests/test_compiled_structure.py`` asserts
what holds on every supported jaxlib (the residuals are the two inputs, temp memory bounds).
``benchmarks/README.md`` ("What XLA:CPU does with the core") explains the numbers.

Run: ``python benchmarks/compiled_structure.py``.
"""

from __future__ import annotations

import contextlib
import io
import re
from typing import Any

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import print_saved_residuals

import sigmoid_xent as sx

SHAPE = (256, 1024)
N = SHAPE[0] * SHAPE[1]
TRIVIAL = ("parameter", "constant", "broadcast")


def mean_loss(x: jax.Array, z: jax.Array) -> jax.Array:
    return sx.sigmoid_cross_entropy_with_logits(z, x).mean()


def fusions(compiled_text: str) -> list[dict[str, Any]]:
    """The entry computation's fusions: name, shape, whether YNNPACK runs it, its operations."""
    computations = dict(re.findall(r"^%(\S+) \(.*?\{\n(.*?)\n\}", compiled_text, re.S | re.M))
    entry = compiled_text[compiled_text.index("ENTRY") :]
    out = []
    for line in entry.splitlines():
        m = re.search(r"%([\w.\-]+) = (\S+) fusion\(.*?calls=%([\w.\-]+)", line)
        if not m:
            continue
        ops = re.findall(r"= \S+ ([a-z\-]+)\(", computations.get(m.group(3), ""))
        out.append(
            {
                "name": m.group(1),
                "shape": m.group(2),
                "ynn": "__ynn_fusion" in line,
                "ops": [op for op in ops if op not in TRIVIAL],
            }
        )
    return out


def residuals(dtype: Any) -> list[str]:
    x = jnp.ones((4, 8), dtype)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print_saved_residuals(mean_loss, x, x)
    return sorted(line for line in buf.getvalue().splitlines() if line.strip())


def report(label: str, fn: Any, dtype: Any) -> None:
    spec = jax.ShapeDtypeStruct(SHAPE, dtype)
    compiled = jax.jit(fn).lower(spec, spec).compile()
    text = compiled.as_text()
    every = fusions(text)
    dims = f"[{SHAPE[0]},{SHAPE[1]}]"
    big = [f for f in every if dims in f["shape"]]
    reductions = [f for f in every if "reduce" in f["ops"]]
    ops = [op for f in big + [f for f in every if f["ynn"] and f not in big] for op in f["ops"]]
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    temp = compiled.memory_analysis().temp_size_in_bytes
    print(f"{label}:")
    print(f"  fusions over {dims} arrays: {len(big)}; reduction fusions: {len(reductions)}")
    print(f"  YNNPACK fusions: {sum(f['ynn'] for f in every)}")
    print(
        "  exp / log / log1p / divide: "
        f"{ops.count('exponential')} / {ops.count('log')} / {ops.count('log-plus-one')} / "
        f"{ops.count('divide')}"
    )
    print(
        f"  per element: transcendentals {cost.get('transcendentals', 0) / N:.2f}, "
        f"bytes accessed {cost.get('bytes accessed', 0) / N:.1f}, temp bytes {temp / N:.2f}"
    )
    for f in big + [f for f in reductions if f not in big]:
        print(f"    {f['name']}{' (ynn)' if f['ynn'] else ''}: {' '.join(f['ops'])}")


def main() -> None:
    print(f"jax {jax.__version__}, jaxlib {jax.lib.__version__}, {jax.default_backend()}")
    for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
        name = jnp.dtype(dtype).name
        report(f"value_and_grad, {name}, d/dx", jax.value_and_grad(mean_loss), dtype)
        print(f"  saved residuals ({name} [4, 8] inputs): {residuals(dtype)}")
    report(
        "value_and_grad, float32, d/dx and d/dz",
        jax.value_and_grad(mean_loss, argnums=(0, 1)),
        jnp.float32,
    )


if __name__ == "__main__":
    main()
