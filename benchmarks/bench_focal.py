"""Focal loss: the library's paths against the plain float32 formula and optax, one process.

``python benchmarks/bench_focal.py``: forward and ``value_and_grad`` of the mean focal loss
(alpha 0.25, gamma 2) at 2^20 float32 elements, implementations interleaved (the order rotates
every round), medians of 21 runs of wall and CPU time (``resource.getrusage``), ratios to optax;
and the worst loss error of each in float32 ulps against a longdouble reference (results below
float32's smallest normal, which XLA:CPU flushes, not counted) on 2^16 logits in [-20, 20], hard
labels at gamma 3.7 and soft labels (0.3, 1e-6) at gamma 6.

``python benchmarks/bench_focal.py --compile``: instead, the time to lower and to compile
``value_and_grad`` of the summed loss (``[4, 5]`` float32, a fresh compile each time after
``jax.clear_caches()``), w.r.t. the logits and w.r.t. labels and logits, medians of 7.

Rows: ``static gamma (products)`` is :func:`sigmoid_xent.sigmoid_focal_loss` with a Python
``gamma`` (an integer one, 2 here and 6 in the accuracy grid, raises ``1 - p_t`` by two-float
products); ``plain_focal_loss`` is the Keras class's plain float32 value with the closed-form
gradient; ``traced gamma`` passes ``gamma`` as an array, which takes the two-float exponential
(every real ``gamma``). ``plain float32`` is the formula sigmoid_xent used before two-float
arithmetic: ``exp(gamma log(1 - p_t)) * bce`` with a stable ``log(1 - p_t)``, differentiated by
JAX.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import sigmoid_xent as sx
from sigmoid_xent._core import log1p_unit, neg_abs
from sigmoid_xent.focal import plain_focal_loss


def plain_focal(z, x, alpha=0.25, gamma=2.0):
    """``alpha_t exp(gamma log(1 - p_t)) bce`` in float32, ``log(1 - p_t)`` without cancellation."""
    c = jnp.where(x >= 0, 1 - z, z)
    na = neg_abs(x)
    mix = c + (1 - c) * jnp.exp(na)
    ok = mix > 0
    log_u = jnp.where(ok, jnp.log(jnp.where(ok, mix, 1.0)), na) - log1p_unit(jnp.exp(na))
    bce = sx.sigmoid_cross_entropy_with_logits(z, x)
    alpha_t = alpha * z + (1 - alpha) * (1 - z)
    return alpha_t * jnp.exp(gamma * log_u) * bce


BASE = "optax.sigmoid_focal_loss"


def _losses():
    """name -> elementwise loss(x, z, alpha, gamma)."""
    return {
        "sigmoid_xent, static gamma (products)": lambda x, z, al, g: sx.sigmoid_focal_loss(
            z, x, alpha=al, gamma=float(g)
        ),
        "plain_focal_loss (Keras class)": lambda x, z, al, g: plain_focal_loss(
            z, x, alpha=al, gamma=float(g)
        ),
        "sigmoid_xent, traced gamma": lambda x, z, al, g: sx.sigmoid_focal_loss(
            z, x, alpha=al, gamma=jnp.float32(g)
        ),
        "plain float32": lambda x, z, al, g: plain_focal(z, x, al, g),
        BASE: lambda x, z, al, g: optax.sigmoid_focal_loss(x, z, alpha=al, gamma=g),
    }


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timings(n: int = 1 << 20, repeats: int = 21) -> dict[str, dict[str, tuple[float, float]]]:
    """mode -> name -> (median wall ms, median CPU ms)."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    x = 4 * jax.random.normal(k1, (n // 1024, 1024))
    z = (jax.random.uniform(k2, x.shape) < 0.5).astype(jnp.float32)
    result = {}
    for mode in ("forward", "value_and_grad"):
        fs = {}
        for name, loss in _losses().items():
            mean = lambda x, z, loss=loss: loss(x, z, 0.25, 2.0).mean()  # noqa: E731
            fn = mean if mode == "forward" else jax.value_and_grad(mean)
            fs[name] = jax.jit(fn).lower(x, z).compile()
        for f in fs.values():
            jax.block_until_ready(f(x, z))
        wall: dict[str, list[float]] = {k: [] for k in fs}
        cpu: dict[str, list[float]] = {k: [] for k in fs}
        names = list(fs)
        for r in range(repeats):
            for k in names[r % len(names) :] + names[: r % len(names)]:
                c0, t0 = _cpu(), time.perf_counter()
                jax.block_until_ready(fs[k](x, z))
                wall[k].append(time.perf_counter() - t0)
                cpu[k].append(_cpu() - c0)
        result[mode] = {
            k: (statistics.median(wall[k]) * 1e3, statistics.median(cpu[k]) * 1e3) for k in names
        }
    return result


def _reference(z, x, gamma):
    ld = np.longdouble
    xl, zl = x.astype(ld), z.astype(ld)
    sig = 1 / (1 + np.exp(-xl))
    u = zl * (1 - sig) + (1 - zl) * sig
    bce = np.logaddexp(ld(0), -xl) * zl + np.logaddexp(ld(0), xl) * (1 - zl)
    return (0.25 * zl + 0.75 * (1 - zl)) * u ** ld(np.float32(gamma)) * bce


def accuracy() -> dict[str, float]:
    """name -> worst loss error in float32 ulps over the grids of the module docstring."""
    x = np.linspace(-20, 20, 1 << 16).astype(np.float32)
    grids = [((np.arange(x.size) % 2).astype(np.float32), 3.7)]
    grids += [(np.full_like(x, v), 6.0) for v in (0.3, 1e-6)]
    worst = {}
    for name, loss in _losses().items():
        err_max = 0.0
        for z, gamma in grids:
            g = np.float32(gamma)
            fn = jax.jit(lambda x, z, g=g, loss=loss: loss(x, z, 0.25, g))
            got = np.asarray(fn(x, z)).astype(np.longdouble)
            want = _reference(z, x, gamma)
            ulp = np.spacing(np.abs(want).astype(np.float32)).astype(np.longdouble)
            err = np.where(want < np.finfo(np.float32).tiny, 0, np.abs(got - want) / ulp)
            err_max = max(err_max, float(np.max(err)))
        worst[name] = err_max
    return worst


def compile_times(repeats: int = 7) -> None:
    """Median lowering and compile seconds of value_and_grad, per gamma kind and argnums."""
    z = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 5)) < 0.5, jnp.float32)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 5)) * 4, jnp.float32)
    head = f"{'gamma':22s} {'gradient of':16s} {'lower s':>8s} {'compile s':>10s}"
    print(f"{head} {'HLO lines':>10s}")
    for label, gamma in (("2 (static products)", 2.0), ("2.5 (pair exp)", 2.5)):
        for wrt, argnums in (("logits", 1), ("labels, logits", (0, 1))):
            f = jax.jit(
                jax.value_and_grad(
                    lambda z, x, g=gamma: jnp.sum(sx.sigmoid_focal_loss(z, x, gamma=g)),
                    argnums=argnums,
                )
            )
            lower, comp = [], []
            for _ in range(repeats):
                jax.clear_caches()
                t0 = time.perf_counter()
                lowered = f.lower(z, x)
                t1 = time.perf_counter()
                compiled = lowered.compile()
                comp.append(time.perf_counter() - t1)
                lower.append(t1 - t0)
            lines = len(compiled.as_text().splitlines())
            print(
                f"{label:22s} {wrt:16s} {statistics.median(lower):8.3f} "
                f"{statistics.median(comp):10.3f} {lines:10d}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compile", action="store_true", help="compile times instead")
    if parser.parse_args().compile:
        compile_times()
        return
    t = timings()
    worst = accuracy()
    print(
        f"{'implementation':40s} {'fwd ms':>8s} {'x optax':>8s} {'(cpu)':>6s} "
        f"{'v&g ms':>8s} {'x optax':>8s} {'(cpu)':>6s} {'worst ulp':>10s}"
    )
    fwd, vag = t["forward"], t["value_and_grad"]
    for k in fwd:
        print(
            f"{k:40s} {fwd[k][0]:8.2f} {fwd[BASE][0] / fwd[k][0]:8.2f} "
            f"{fwd[BASE][1] / fwd[k][1]:6.2f} {vag[k][0]:8.2f} {vag[BASE][0] / vag[k][0]:8.2f} "
            f"{vag[BASE][1] / vag[k][1]:6.2f} {worst[k]:10.2f}"
        )


if __name__ == "__main__":
    main()
