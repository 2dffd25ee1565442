"""End-to-end demo (`make demo`): a multi-label logistic model trained with optax under jit.

Synthetic data: 16 features, 5 independent labels drawn from a hidden linear model, split into a
training and a validation set. The loss is :class:`sigmoid_xent.BinaryCrossentropy` on logits;
each epoch is one jitted ``lax.scan`` over shuffled mini-batches. The script prints one line per
epoch (training and validation loss, validation accuracy, a progress bar), the final per-label
accuracy against the Bayes-optimal accuracy of the hidden model, and writes a learning-curve PNG
(``build/demo_learning_curve.png`` by default) when matplotlib is installed.

Run ``python -m sigmoid_xent.demo --help`` for the options.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

import sigmoid_xent as sx

try:
    import optax
except ImportError as error:  # the `demo` extra's, not a dependency of the package
    raise ImportError(
        "sigmoid_xent.demo trains with optax: pip install 'sigmoid_xent[demo]'", name="optax"
    ) from error

DEFAULT_PLOT_PATH = os.path.join("build", "demo_learning_curve.png")


def make_data(
    key: jax.Array, n: int = 4096, features: int = 16, labels: int = 5
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Features ``[n, features]``, 0/1 labels ``[n, labels]`` and the hidden weights."""
    k_w, k_x, k_u = jax.random.split(key, 3)
    true_w = jax.random.normal(k_w, (features, labels)) * 1.5
    x = jax.random.normal(k_x, (n, features))
    probs = jax.nn.sigmoid(x @ true_w)
    y = (jax.random.uniform(k_u, probs.shape) < probs).astype(jnp.float32)
    return x, y, true_w


def _progress_bar(done: int, total: int, width: int = 20) -> str:
    filled = round(width * done / total)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def save_learning_curve(history: dict[str, list[float]], path: str) -> str | None:
    """Writes the training/validation loss curves to ``path``; None if matplotlib is missing.

    Uses matplotlib's object-oriented API (no pyplot), so it never changes the caller's backend.
    """
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return None
    epochs = range(len(history["train_loss"]))
    fig = Figure(figsize=(6.4, 4.0), tight_layout=True)
    ax = fig.add_subplot()
    ax.plot(epochs, history["train_loss"], marker="o", ms=3, label="training loss")
    ax.plot(epochs, history["val_loss"], marker="s", ms=3, label="validation loss")
    if "bayes_loss" in history:
        ax.axhline(
            history["bayes_loss"][0], color="gray", ls="--", lw=1, label="hidden model (Bayes) loss"
        )
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("BinaryCrossentropy(from_logits=True)")
    ax.set_title("sigmoid_xent demo: multi-label logistic model, optax.adam")
    ax.grid(alpha=0.3)
    ax.legend()
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def main(
    epochs: int = 20,
    batch_size: int = 256,
    learning_rate: float = 0.05,
    plot_path: str | None = DEFAULT_PLOT_PATH,
    seed: int = 0,
) -> dict[str, Any]:
    """Trains the model, prints progress and returns the final numbers and the history."""
    x_all, y_all, true_w = make_data(jax.random.PRNGKey(seed), n=5120)
    x, y = x_all[:4096], y_all[:4096]
    x_val, y_val = x_all[4096:], y_all[4096:]
    n, num_batches = x.shape[0], x.shape[0] // batch_size
    params = {"w": jnp.zeros((x.shape[1], y.shape[1])), "b": jnp.zeros((y.shape[1],))}
    loss_obj = sx.BinaryCrossentropy(from_logits=True)
    optimizer = optax.adam(learning_rate)
    opt_state = optimizer.init(params)

    def loss_fn(p: dict[str, jax.Array], xb: jax.Array, yb: jax.Array) -> jax.Array:
        return loss_obj(yb, xb @ p["w"] + p["b"])

    @jax.jit
    def train_epoch(p: Any, s: Any, key: jax.Array) -> tuple[Any, Any, jax.Array]:
        perm = jax.random.permutation(key, n)[: num_batches * batch_size]
        batches = (
            x[perm].reshape(num_batches, batch_size, -1),
            y[perm].reshape(num_batches, batch_size, -1),
        )

        def step(carry: Any, batch: tuple[jax.Array, jax.Array]) -> tuple[Any, jax.Array]:
            p, s = carry
            loss, grads = jax.value_and_grad(loss_fn)(p, *batch)
            updates, s = optimizer.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), loss

        (p, s), losses = jax.lax.scan(step, (p, s), batches)
        return p, s, jnp.mean(losses)

    @jax.jit
    def evaluate(p: Any) -> tuple[jax.Array, jax.Array]:
        logits = x_val @ p["w"] + p["b"]
        return loss_obj(y_val, logits), jnp.mean((logits > 0) == (y_val > 0.5))

    print(
        f"training a {x.shape[1]}->{y.shape[1]} multi-label logistic model on {n} samples, "
        f"validating on {x_val.shape[0]} (optax.adam({learning_rate}), "
        f"sx.BinaryCrossentropy(from_logits=True), jit)"
    )
    print(
        f"{epochs} epochs of {num_batches} mini-batches of {batch_size}, one jitted lax.scan each"
    )
    start = time.perf_counter()
    first_loss = float(loss_fn(params, x, y))
    bayes_loss = float(loss_obj(y_val, x_val @ true_w))
    val_loss, val_acc = evaluate(params)
    # Epoch 0 is the untrained model; the training loss of an epoch is its mini-batch mean.
    history: dict[str, list[float]] = {
        "train_loss": [first_loss],
        "val_loss": [float(val_loss)],
        "val_accuracy": [float(val_acc)],
        "bayes_loss": [bayes_loss],
    }
    print(
        f"  epoch {0:3d}/{epochs}  train loss {first_loss:.4f}  val loss {float(val_loss):.4f}"
        "  (initial)"
    )
    key = jax.random.PRNGKey(seed + 1)
    for epoch in range(1, epochs + 1):
        key, sub = jax.random.split(key)
        params, opt_state, train_loss = train_epoch(params, opt_state, sub)
        val_loss, val_acc = evaluate(params)
        history["train_loss"].append(float(train_loss))
        history["val_loss"].append(float(val_loss))
        history["val_accuracy"].append(float(val_acc))
        print(
            f"  epoch {epoch:3d}/{epochs}  train loss {history['train_loss'][-1]:.4f}  "
            f"val loss {history['val_loss'][-1]:.4f}  val acc {history['val_accuracy'][-1]:.3f}  "
            f"{_progress_bar(epoch, epochs)} {time.perf_counter() - start:5.1f}s",
            flush=True,
        )

    final_loss = float(loss_fn(params, x, y))
    logits = x_val @ params["w"] + params["b"]
    accuracy = float(jnp.mean((logits > 0) == (y_val > 0.5)))
    bayes = float(jnp.mean(((x_val @ true_w) > 0) == (y_val > 0.5)))
    print(
        f"final loss {final_loss:.4f} (from {first_loss:.4f}); validation accuracy "
        f"{accuracy:.3f} (Bayes-optimal {bayes:.3f}, loss {bayes_loss:.4f}); "
        f"{time.perf_counter() - start:.1f}s"
    )

    written = None
    if plot_path:
        written = save_learning_curve(history, plot_path)
        if written is None:
            print(
                "matplotlib is not installed: learning-curve plot skipped "
                "(pip install 'sigmoid_xent[notebooks]' to get it)"
            )
        else:
            print(f"learning curve written to {os.path.abspath(written)}")
    return {
        "first_loss": first_loss,
        "final_loss": final_loss,
        "accuracy": accuracy,
        "bayes_accuracy": bayes,
        "history": history,
        "plot_path": written,
    }


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sigmoid_xent.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument(
        "--plot",
        default=DEFAULT_PLOT_PATH,
        help="where to write the learning-curve PNG (default: %(default)s)",
    )
    parser.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = _parse_args(None)
    main(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        plot_path=None if args.no_plot else args.plot,
        seed=args.seed,
    )
