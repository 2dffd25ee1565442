"""Keras 3 ``fit`` with sigmoid_xent.keras losses against Keras's own, one process, interleaved.

``python benchmarks/bench_keras.py`` (``--quick`` for fewer repeats): needs keras (``pip install
-e '.[keras]'``); runs on the JAX backend (``KERAS_BACKEND`` defaults to jax here).

Workloads, each trained with non-uniform ``sample_weight`` and ``from_logits=True``:

- ``mlp``: a multi-label MLP, 64 inputs -> 256 -> 256 -> 32 labels, 8192 samples, batch 256:
  the loss is a small part of the step (the usual case);
- ``wide``: a linear model, 64 inputs -> 2048 labels, 4096 samples, batch 512: the loss and its
  gradient dominate the step;
- ``loss only``: ``jax.jit(jax.value_and_grad)`` of the loss itself, ``[4096, 1024]`` float32.

For every pair (sigmoid_xent's class, Keras's class with the same arguments) a model is built
from the same initial weights and compiled with each loss; after one warm-up epoch (compilation),
one-epoch ``fit`` calls alternate between the losses, the order rotating every round, for
``--repeats`` rounds. Tables show the median and minimum seconds per epoch and ``ours / keras``,
the ratio of the medians (below 1: ours is faster). The machine may be shared: compare ratios.
No timed asserts.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Callable
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import sigmoid_xent.keras as sk  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import interleaved  # noqa: E402

PAIRS: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
    "BinaryCrossentropy": (
        lambda: sk.BinaryCrossentropy(from_logits=True),
        lambda: keras.losses.BinaryCrossentropy(from_logits=True),
    ),
    "BinaryFocalCrossentropy": (
        lambda: sk.BinaryFocalCrossentropy(from_logits=True, apply_class_balancing=True),
        lambda: keras.losses.BinaryFocalCrossentropy(from_logits=True, apply_class_balancing=True),
    ),
}

WORKLOADS = {
    # name: (hidden widths, labels, samples, batch)
    "mlp": ((256, 256), 32, 8192, 256),
    "wide": ((), 2048, 4096, 512),
}


def _data(labels: int, samples: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, 64)).astype(np.float32)
    y = (rng.random((samples, labels)) < 0.2).astype(np.float32)
    sw = (0.5 + rng.random(samples)).astype(np.float32)
    return x, y, sw


def _model(hidden: tuple[int, ...], labels: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    layers = [keras.Input((64,))]
    layers += [keras.layers.Dense(h, activation="relu") for h in hidden]
    layers.append(keras.layers.Dense(labels))
    return keras.Sequential(layers)


def bench_fit(repeats: int) -> list[tuple[str, str, float, float, float, float]]:
    rows = []
    for workload, (hidden, labels, samples, batch) in WORKLOADS.items():
        x, y, sw = _data(labels, samples)
        for loss_name, (ours, theirs) in PAIRS.items():
            fits = {}
            for key, make in (("ours", ours), ("keras", theirs)):
                model = _model(hidden, labels)
                model.compile(optimizer=keras.optimizers.SGD(0.01), loss=make())
                model.fit(x, y, sample_weight=sw, batch_size=batch, epochs=1, verbose=0)

                def fit(model=model, x=x, y=y, sw=sw, batch=batch):
                    model.fit(x, y, sample_weight=sw, batch_size=batch, epochs=1, verbose=0)

                fits[key] = fit
            t = interleaved(fits, repeats, sync=lambda _: None, warmup=0)
            med = {k: v["median_ms"] / 1e3 for k, v in t.items()}
            rows.append(
                (
                    workload,
                    loss_name,
                    med["ours"],
                    med["keras"],
                    t["ours"]["min_ms"] / 1e3,
                    med["ours"] / med["keras"],
                )
            )
    return rows


def bench_loss(repeats: int) -> list[tuple[str, float, float, float]]:
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    x = 4 * jax.random.normal(k1, (4096, 1024))
    z = (jax.random.uniform(k2, x.shape) < 0.5).astype(jnp.float32)
    sw = jax.random.uniform(k3, (4096,))
    rows = []
    for loss_name, (ours, theirs) in PAIRS.items():
        fns = {}
        for key, make in (("ours", ours), ("keras", theirs)):
            loss = make()
            f = jax.jit(jax.value_and_grad(lambda x, loss=loss: loss(z, x, sw)))
            jax.block_until_ready(f(x))
            jax.block_until_ready(f(x))
            fns[key] = lambda f=f: jax.block_until_ready(f(x))
        t = interleaved(fns, 3 * repeats, warmup=0)
        med = {k: v["median_ms"] / 1e3 for k, v in t.items()}
        rows.append((loss_name, med["ours"], med["keras"], med["ours"] / med["keras"]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=11, help="interleaved fit rounds")
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"keras {keras.__version__} ({keras.backend.backend()}), jax {jax.__version__}, "
        f"{jax.devices()[0].platform}, {os.cpu_count()} CPU cores, {platform.machine()}; "
        f"load average {load:.1f}; median of {repeats} interleaved one-epoch fits after a "
        "warm-up epoch"
    )
    print("\n### fit, one epoch, seconds\n")
    header = (
        f"{'workload':9s} {'loss':24s} {'ours med':>9s} {'keras med':>10s} {'ours min':>9s} "
        f"{'ours / keras':>13s}"
    )
    print(header)
    print("-" * len(header))
    for workload, loss_name, ours, theirs, ours_min, ratio in bench_fit(repeats):
        print(
            f"{workload:9s} {loss_name:24s} {ours:9.3f} {theirs:10.3f} {ours_min:9.3f} "
            f"{ratio:13.2f}"
        )
    print("\n### loss only: jit(value_and_grad), [4096, 1024] float32, milliseconds\n")
    header = f"{'loss':24s} {'ours med':>9s} {'keras med':>10s} {'ours / keras':>13s}"
    print(header)
    print("-" * len(header))
    for loss_name, ours, theirs, ratio in bench_loss(repeats):
        print(f"{loss_name:24s} {ours * 1e3:9.2f} {theirs * 1e3:10.2f} {ratio:13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
