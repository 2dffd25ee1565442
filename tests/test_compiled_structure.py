"""Structural facts of the compiled core that keep it fast (no timings; see benchmarks/).

What the custom VJP saves, and how XLA:CPU compiles ``value_and_grad`` of the mean loss:
benchmarks/README.md explains each number. Bounds are ``<=`` so that a better compiler passes.
"""

from __future__ import annotations

import contextlib
import io
import re

import jax
import jax.numpy as jnp
import pytest
from jax.ad_checkpoint import print_saved_residuals

import sigmoid_xent as sx

SHAPE = (256, 1024)


def _mean_loss(x: jax.Array, z: jax.Array) -> jax.Array:
    return sx.sigmoid_cross_entropy_with_logits(z, x).mean()


def _residual_lines(fn, *args) -> list[str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print_saved_residuals(fn, *args)
    return [line for line in buf.getvalue().splitlines() if line.strip()]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_vjp_saves_only_the_two_inputs(dtype):
    x = jnp.ones((4, 8), dtype)
    # 16-bit inputs are computed in float32, but what is saved is the 16-bit arrays themselves.
    lines = _residual_lines(_mean_loss, x, x)
    short = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}[jnp.dtype(dtype).name]
    assert sorted(lines) == [
        f"{short}[4,8] from the argument x",
        f"{short}[4,8] from the argument z",
    ], lines


def test_vjp_saves_only_the_two_inputs_under_jit_and_vmap():
    x = jnp.ones((3, 4, 8))
    fn = jax.jit(jax.vmap(_mean_loss))
    lines = _residual_lines(lambda x, z: fn(x, z).sum(), x, x)
    assert sorted(lines) == ["f32[3,4,8] from the argument x", "f32[3,4,8] from the argument z"], (
        lines
    )


# --------------------------------------------------------------------------- compiled HLO


def _fusions(compiled_text: str) -> list[dict]:
    """The fusions of the entry computation: name, shape, whether YNNPACK runs it, and ops."""
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
                "ops": [op for op in ops if op not in ("parameter", "constant", "broadcast")],
            }
        )
    return out


def _compile(fn, dtype=jnp.float32):
    x = jax.ShapeDtypeStruct(SHAPE, dtype)
    return jax.jit(fn).lower(x, x).compile()


def _full_size(fusions: list[dict]) -> list[dict]:
    dims = f"[{SHAPE[0]},{SHAPE[1]}]"
    return [f for f in fusions if dims in f["shape"]]


# jaxlib 0.10.0's XLA fuses the mean's scaling into the reduction (one multiply, 64 more temp
# bytes); from 0.10.2 on (0.12 included) the layout below holds. Only speed depends on it.
_JAXLIB = tuple(int(p) for p in jax.lib.__version__.split(".")[:3] if p.isdigit())
xla_layout = pytest.mark.skipif(
    _JAXLIB < (0, 10, 2),
    reason=f"fusion layout measured on jaxlib >= 0.10.2, this is {jax.lib.__version__}",
)

cpu_only = pytest.mark.skipif(
    jax.default_backend() != "cpu", reason="fusion decisions documented for XLA:CPU"
)


def _require_ynn(compiled_text: str) -> None:
    # The numbers below assume XLA:CPU hands reductions to YNNPACK (jax 0.10 on x86 with AVX2).
    if "__ynn_fusion" not in compiled_text:
        pytest.skip("this XLA:CPU does not use YNNPACK for reductions")


@cpu_only
@xla_layout
def test_value_and_grad_fusions_and_transcendentals():
    compiled = _compile(jax.value_and_grad(_mean_loss))
    _require_ynn(compiled.as_text())
    fusions = _fusions(compiled.as_text())
    big = _full_size(fusions)
    ops = [op for f in big + [f for f in fusions if f["ynn"]] for op in f["ops"]]
    # exp(-|x|) once, shared by value and gradient; the gradient's one division; the log1p of the
    # value is a polynomial (no transcendental).
    assert len(big) <= 3, [f["name"] for f in big]
    assert ops.count("exponential") <= 1, ops
    assert ops.count("divide") <= 1, ops
    assert "log-plus-one" not in ops and "log" not in ops, ops
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    n = SHAPE[0] * SHAPE[1]
    assert cost["transcendentals"] <= 1.0 * n
    # Read x, z; write exp(-|x|), the loss and the gradient; read them back: 44 bytes/element.
    assert cost["bytes accessed"] <= 44.0 * n + 1024
    assert compiled.memory_analysis().temp_size_in_bytes <= 4 * n


@cpu_only
@xla_layout
def test_reduction_reads_one_finished_array():
    # The mean is a YNNPACK fusion that cannot absorb compare/select; the core ends in the guard's
    # select, so the reduction takes one operand (the loss) and no pieces of the formula.
    text = _compile(jax.value_and_grad(_mean_loss)).as_text()
    _require_ynn(text)
    fusions = _fusions(text)
    reductions = [f for f in fusions if "reduce" in f["ops"]]
    assert len(reductions) == 1
    assert reductions[0]["ops"] == ["reduce"], reductions[0]["ops"]


@cpu_only
def test_gradient_with_respect_to_both_adds_one_pass():
    compiled = _compile(jax.value_and_grad(_mean_loss, argnums=(0, 1)))
    big = _full_size(_fusions(compiled.as_text()))
    assert len(big) <= 4, [f["name"] for f in big]
    ops = [op for f in big for op in f["ops"]]
    assert ops.count("exponential") <= 1, ops


@cpu_only
def test_bfloat16_keeps_one_exp():
    compiled = _compile(jax.value_and_grad(_mean_loss), jnp.bfloat16)
    big = _full_size(_fusions(compiled.as_text()))
    ops = [op for f in big for op in f["ops"]]
    assert ops.count("exponential") <= 1, ops
    assert len(big) <= 3, [f["name"] for f in big]
