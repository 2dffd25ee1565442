# %% [markdown]
# # sigmoid_xent quickstart
#
# `sigmoid_xent` is every sigmoid cross-entropy loss a JAX user needs, with the numbers of
# TensorFlow, Keras and TF-Ranking and a hand-written gradient (`jax.custom_vjp`) that stays exact
# for any finite logit. This notebook
#
# 1. reproduces the documented examples of the five TensorFlow pages the library follows,
# 2. plots the loss and its gradient over logits in [-100, 100], in float32 and bfloat16, against
#    the naive formulas and optax, and measures their errors against a float64 reference,
# 3. shows what happens at infinite logits.
#
# Everything runs on CPU in a few seconds.

# %%
import json

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from IPython.display import Markdown, display

import sigmoid_xent as sx

print("jax", jax.__version__, "| optax", optax.__version__, "| sigmoid_xent", sx.__version__)

# %% [markdown]
# ## 1. The documented examples
#
# Each row is an example from a TensorFlow documentation page (the seed pages of this project),
# computed here by `sigmoid_xent`. *documented* is the number exactly as the page prints it;
# a row matches when ours rounds to it at the printed precision.

# %%
y_true, y_pred = jnp.array([[0.0, 1.0], [0.0, 0.0]]), jnp.array([[0.6, 0.4], [0.4, 0.6]])
bce = sx.BinaryCrossentropy()

examples = [
    (
        "tf.nn.sigmoid_cross_entropy_with_logits",
        "labels=[0,0,0,1,1,1,.5], logits=[1,-1,0,1,-1,0,0]",
        "[1.3132617, 0.3132617, 0.6931472, 0.3132617, 1.3132617, 0.6931472, 0.6931472]",
        sx.sigmoid_cross_entropy_with_logits(
            jnp.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.5]),
            jnp.array([1.0, -1.0, 0.0, 1.0, -1.0, 0.0, 0.0]),
        ),
    ),
    (
        "tf.nn.sigmoid_cross_entropy_with_logits",
        "labels=[1,1,0], logits=[1,-1,0]",
        "[0.31326166, 1.3132616, 0.6931472]",
        sx.sigmoid_cross_entropy_with_logits(
            jnp.array([1.0, 1.0, 0.0]), jnp.array([1.0, -1.0, 0.0])
        ),
    ),
    ("tf.keras.losses.BinaryCrossentropy()", "y_true, y_pred", "0.815", bce(y_true, y_pred)),
    (
        "tf.keras.losses.BinaryCrossentropy()",
        "sample_weight=[1, 0]",
        "0.458",
        bce(y_true, y_pred, sample_weight=jnp.array([1.0, 0.0])),
    ),
    (
        "tf.keras.losses.BinaryCrossentropy(reduction=SUM)",
        "y_true, y_pred",
        "1.630",
        sx.BinaryCrossentropy(reduction="sum")(y_true, y_pred),
    ),
    (
        "tf.keras.losses.BinaryCrossentropy(reduction=NONE)",
        "y_true, y_pred",
        "[0.916, 0.714]",
        sx.BinaryCrossentropy(reduction="none")(y_true, y_pred),
    ),
]

try:
    from sigmoid_xent import ranking

    examples += [
        (
            "tfr.keras.losses.SigmoidCrossEntropyLoss()",
            "y_true=[[1,0]], y_pred=[[.6,.8]]",
            "0.8042943",
            ranking.SigmoidCrossEntropyLoss()(jnp.array([[1.0, 0.0]]), jnp.array([[0.6, 0.8]])),
        ),
        (
            "tfr.keras.losses.SigmoidCrossEntropyLoss(ragged=True)",
            "ragged [[1,0],[0,1,0]]",
            "0.6444636",
            ranking.SigmoidCrossEntropyLoss(ragged=True)(
                [[1.0, 0.0], [0.0, 1.0, 0.0]], [[0.6, 0.8], [0.5, 0.8, 0.4]]
            ),
        ),
    ]
except ImportError:
    print("sigmoid_xent.ranking is not available: TF-Ranking rows skipped")


def matches(documented: str, ours) -> str:
    """'yes' if ours rounds to the documented numbers at their printed precision, '1 ulp' if it
    is at most one float32 ulp away from them, 'NO' otherwise."""
    texts = documented.strip("[]").split(",")
    doc = np.array([float(v) for v in texts], np.float32).astype(np.float64)
    ours = np.atleast_1d(np.asarray(ours, np.float32)).astype(np.float64)
    half_unit = np.array([0.5 * 10.0 ** -len(v.strip().split(".")[1]) for v in texts])
    err = np.abs(ours - doc)
    if np.all(err <= half_unit * (1 + 1e-6)):
        return "yes"
    if np.all(err <= np.spacing(np.abs(doc).astype(np.float32))):
        return "1 ulp"
    return "NO"


rows = ["| TensorFlow API | inputs | documented | sigmoid_xent | match |", "|---|---|---|---|---|"]
seed_ok = []
for api, inputs, documented, ours in examples:
    verdict = matches(documented, ours)
    seed_ok.append(verdict != "NO")
    shown = np.array2string(np.asarray(ours), precision=7, separator=", ", max_line_width=200)
    rows.append(f"| `{api}` | {inputs} | {documented} | {shown} | {verdict} |")
display(Markdown("\n".join(rows)))
print(f"{sum(seed_ok)}/{len(seed_ok)} documented examples reproduced")

# %% [markdown]
# A "1 ulp" row is one unit in the last place of float32 away from the printed value. For logit 1
# and label 1, TensorFlow disagrees with itself: the first example prints `0.3132617` and the
# second `0.31326166`, two neighbouring float32 numbers; sigmoid_xent gives `0.3132617` for both.
# A reduced loss summed in a different order than TensorFlow's can land one ulp away as well.
#
# `tf.compat.v1.losses.sigmoid_cross_entropy` has no printed example; here is its contract on a
# small batch: label smoothing squeezes labels towards 1/2, per-sample `[batch, 1]` weights, and
# the default `SUM_BY_NONZERO_WEIGHTS` divides by the number of non-zero weights (4 here).

# %%
labels = jnp.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
logits = jnp.array([[-2.0, 3.0], [0.5, 1.0], [4.0, -1.0]])
weights = jnp.array([[1.0], [0.0], [2.0]])
smoothed = labels * (1 - 0.2) + 0.5 * 0.2
by_hand = jnp.sum(weights * sx.sigmoid_cross_entropy_with_logits(smoothed, logits)) / 4
ours = sx.sigmoid_cross_entropy(labels, logits, weights=weights, label_smoothing=0.2)
print(f"sx.sigmoid_cross_entropy: {float(ours):.7f}   by hand: {float(by_hand):.7f}")

# %% [markdown]
# ## 2. Loss and gradient over logits in [-100, 100]
#
# Four ways to write the same loss, on a grid of 2001 logits, in float32 and in bfloat16:
#
# * **sigmoid_xent**: `sx.sigmoid_cross_entropy_with_logits(z, x)`, value
#   `max(x, 0) - x z + log1p(exp(-|x|))` with a custom VJP (16-bit inputs are computed in float32).
# * **optax**: `optax.sigmoid_binary_cross_entropy(x, z)` (`log_sigmoid`, autodiff gradient,
#   computed in the input dtype).
# * **naive**: `x - x z + log(1 + exp(-x))`, the formula TF's docstring derives before making it
#   stable (autodiff gradient).
# * **textbook**: `-(z log(sigmoid(x)) + (1 - z) log(1 - sigmoid(x)))` (autodiff gradient).
#
# and, for the gradient only, **sigmoid(x) - z** written by hand: PyTorch's
# `binary_cross_entropy_with_logits` backward computes exactly this.
#
# The reference is the exact value for the same (rounded) inputs, computed in float64.

# %%
METHODS = {
    "sigmoid_xent": lambda z, x: sx.sigmoid_cross_entropy_with_logits(z, x),
    "optax": lambda z, x: optax.sigmoid_binary_cross_entropy(x, z),
    "naive": lambda z, x: x - x * z + jnp.log(1 + jnp.exp(-x)),
    "textbook": lambda z, x: (
        -(z * jnp.log(jax.nn.sigmoid(x)) + (1 - z) * jnp.log(1 - jax.nn.sigmoid(x)))
    ),
}
STYLE = {
    "sigmoid_xent": "C0-",
    "optax": "C2--",
    "naive": "C3:",
    "textbook": "C1-.",
    "sigmoid(x) - z": "C4:",
}


def value_and_grads(fn, z, x):
    """Elementwise loss and d loss / d logits, by one vector-Jacobian product (one compile)."""

    @jax.jit
    def run(z, x):
        value, vjp = jax.vjp(lambda x: fn(z, x), x)
        return value, vjp(jnp.ones_like(value))[0]

    return run(z, x)


def exact(z64, x64):
    """Loss and gradient in float64: exact enough to judge float32 and bfloat16."""
    loss = np.maximum(x64, 0) - x64 * z64 + np.log1p(np.exp(-np.abs(x64)))
    s, s_neg = 1 / (1 + np.exp(-x64)), 1 / (1 + np.exp(x64))
    grad = np.where(z64 == 1, -s_neg, s - z64)  # -sigmoid(-x) needs no subtraction for z = 1
    return loss, grad, s


LABELS = (1.0, 0.0, 0.3)
results = {}
for dtype in (jnp.float32, jnp.bfloat16):
    # One row per label, so each method compiles once per dtype.
    x = jnp.broadcast_to(jnp.linspace(-100, 100, 2001, dtype=jnp.float32), (3, 2001)).astype(dtype)
    z = jnp.broadcast_to(jnp.array(LABELS)[:, None], x.shape).astype(dtype)
    out = {name: value_and_grads(fn, z, x) for name, fn in METHODS.items()}
    out["sigmoid(x) - z"] = (None, jax.jit(lambda z, x: jax.nn.sigmoid(x) - z)(z, x))
    x64, z64 = np.asarray(x, np.float64), np.asarray(z, np.float64)
    for i, label in enumerate(LABELS):
        row = {k: (None if v is None else v[i], g[i]) for k, (v, g) in out.items()}
        results[dtype.__name__, label] = (x64[i], z64[i], row, exact(z64[i], x64[i]))

# %% [markdown]
# For the label `z = 1` the exact loss is `softplus(-x)` (from 100 down to `e^-100`) and the
# exact gradient `-sigmoid(-x)`. The plots show their absolute values on a log scale; a method
# that returns 0 is drawn on the bottom edge, and every `inf` or `NaN` is a cross on the top edge.
# bfloat16 has float32's exponent range, so it overflows at the same logits, but it has only 8
# bits of precision: `sigmoid(x)` rounds to 1 already at `x > 5.5`.

# %%
FLOOR, TOP = 1e-46, 1e4
# Each method's inf/NaN crosses get their own height above the plot's data.
BAND = {name: TOP * 100.0**k for k, name in enumerate(STYLE)}
fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True, dpi=72)
for row, dtype in enumerate(("float32", "bfloat16")):
    x64, z64, out, (loss_ref, grad_ref, _) = results[dtype, 1.0]
    for col, (what, ref) in enumerate((("loss", loss_ref), ("|d loss / d logits|", grad_ref))):
        ax = axes[row, col]
        ax.plot(x64, np.maximum(np.abs(ref), FLOOR), color="k", lw=6, alpha=0.15, label="exact")
        for name, (val, grad) in out.items():
            y = val if col == 0 else grad
            if y is None:
                continue
            y = np.asarray(y, np.float64)
            bad = ~np.isfinite(y)
            ax.plot(
                x64,
                np.where(bad, np.nan, np.maximum(np.abs(y), FLOOR)),
                STYLE[name],
                lw=1.5,
                label=name,
            )
            ax.plot(x64[bad], np.full(bad.sum(), BAND[name]), "x", color=STYLE[name][:2], ms=3)
        ax.set_yscale("log")
        ax.set_ylim(FLOOR / 10, TOP * 100.0 ** len(STYLE))
        ax.axhspan(TOP / 3, TOP * 100.0 ** len(STYLE), color="C3", alpha=0.05)
        ax.axhline(float(jnp.finfo(jnp.float32).tiny), color="gray", lw=0.8, ls=":")
        ax.set_title(f"{dtype}, label z = 1: {what}")
        ax.grid(alpha=0.3)
        if row == 1:
            ax.set_xlabel("logit x")
axes[0, 0].text(-60, TOP * 100.0**4, "inf / NaN", fontsize=9)
axes[0, 0].text(-98, FLOOR * 3, "0", fontsize=9)
axes[0, 1].legend(loc="lower left", fontsize=9)
fig.tight_layout()
plt.show()

# %% [markdown]
# What the plots show, left to right:
#
# * the **naive** formula overflows (`exp(-x) = inf`) for `x < -88.7` and its gradient is then
#   `inf / inf = NaN`; for `x > 17` it returns a loss of exactly 0 (`log(1 + tiny) = 0`);
# * the **textbook** formula is `NaN` for `x > 17` (`0 * log(0)`) and `inf` for very negative `x`;
# * the hand-written **sigmoid(x) - z** gradient cancels to exactly 0 for `x > 17` in float32 and
#   `x > 5.5` in bfloat16, the region where a confident, correct prediction should still be
#   pushed a little;
# * **sigmoid_xent** and **optax** follow the exact curve down to float32's smallest normal number
#   (the dotted line at 1.2e-38; XLA on CPU flushes smaller, subnormal results to 0).
#
# The table measures the worst error over the whole grid for three labels (1, 0, and a soft
# 0.3), in units of the dtype's machine epsilon (float32: 1.2e-7, bfloat16: 7.8e-3), over the
# points where the exact value is a normal number. Loss errors are relative to the exact loss;
# gradient errors relative to the exact gradient for hard labels and to `max(sigmoid(x), z)` for
# the soft one (near `sigmoid(x) = z` no float computation can do better).


# %%
def worst(dtype, name, what):
    """Worst error (in eps) and non-finite count over the three labels; None if not applicable."""
    eps = float(jnp.finfo(getattr(jnp, dtype)).eps)
    tiny = float(jnp.finfo(jnp.float32).tiny)
    max_err, bad = 0.0, 0
    for label in (1.0, 0.0, 0.3):
        x64, z64, out, (loss_ref, grad_ref, s) = results[dtype, label]
        got = out[name][0 if what == "loss" else 1]
        if got is None:
            return None
        got = np.asarray(got, np.float64)
        ref = loss_ref if what == "loss" else grad_ref
        scale = np.abs(ref) if (what == "loss" or label in (0.0, 1.0)) else np.maximum(s, z64)
        ok = np.isfinite(got) & (np.abs(ref) >= tiny)
        bad += int(np.sum(~np.isfinite(got)))
        max_err = max(max_err, float(np.max(np.abs(got[ok] - ref[ok]) / scale[ok])) / eps)
    return max_err, bad, eps


def cell(r):
    if r is None:
        return ""
    err, bad, eps = r
    text = f"{err * eps:.1e}" + (f" ({err:.2g} eps)" if err < 1000 else "")
    return text + (f", **{bad} inf/NaN**" if bad else "")


names = list(METHODS) + ["sigmoid(x) - z"]
rows = [
    "| method | float32 loss | float32 gradient | bfloat16 loss | bfloat16 gradient |",
    "|---|---|---|---|---|",
]
errors = {}
for name in names:
    entries = [worst(dt, name, what) for dt in ("float32", "bfloat16") for what in ("loss", "grad")]
    errors[name] = entries
    rows.append(f"| {name} | " + " | ".join(cell(e) for e in entries) + " |")
display(Markdown("\n".join(rows)))

# %% [markdown]
# sigmoid_xent stays within a few machine epsilons everywhere, in float32 and in bfloat16 (where it
# computes in float32 and rounds once). optax is also accurate for finite float32 logits
# (`log_sigmoid` is stable), but computes bfloat16 in bfloat16. The naive and textbook formulas
# produce infinities and NaNs on a large part of the range; a NaN in one element of a batch
# poisons every parameter through the gradient.
#
# ## 3. Infinite logits
#
# A saturated model can produce `±inf` logits (for example from an `inf` in the input). The loss
# is then 0 where a hard label agrees and `inf` where it disagrees, and the gradient
# `sigmoid(±inf) - z` is finite. sigmoid_xent returns exactly that. optax's loss computes
# `0 * -inf` where the label agrees and returns `NaN` (its gradient is right); the naive and
# textbook formulas would return `NaN` for the gradient too.

# %%
x_inf = jnp.array([jnp.inf, jnp.inf, jnp.inf, -jnp.inf, -jnp.inf, -jnp.inf])
z_inf = jnp.array([1.0, 0.0, 0.5, 0.0, 1.0, 0.5])
rows = [
    "| logit | label | sigmoid_xent loss | grad | optax loss | grad |",
    "|---|---|---|---|---|---|",
]
ours_v, ours_g = value_and_grads(METHODS["sigmoid_xent"], z_inf, x_inf)
optax_v, optax_g = value_and_grads(METHODS["optax"], z_inf, x_inf)
for i in range(len(x_inf)):
    rows.append(
        f"| {float(x_inf[i])} | {float(z_inf[i])} | {float(ours_v[i])} | {float(ours_g[i])} "
        f"| {float(optax_v[i])} | {float(optax_g[i])} |"
    )
display(Markdown("\n".join(rows)))

# %% [markdown]
# ## Next
#
# * `02_training_with_optax.ipynb`: a multi-label classifier with label smoothing, `pos_weight`
#   and the focal loss.
# * `03_learning_to_rank.ipynb`: listwise ranking with packed lists (`sigmoid_xent.ranking`).
# * `04_migrating_from_tensorflow.ipynb`: the TF / Keras / TF-Ranking / PyTorch call for each
#   function, with the same numbers.
#
# The last cell collects the numbers that `tests/test_notebooks.py` checks.

# %% tags=["summary"]
summary = {
    "seed_examples": len(seed_ok),
    "seed_examples_matched": sum(seed_ok),
    "ours_float32_loss_eps": errors["sigmoid_xent"][0][0],
    "ours_float32_grad_eps": errors["sigmoid_xent"][1][0],
    "ours_bfloat16_grad_eps": errors["sigmoid_xent"][3][0],
    "ours_nonfinite": sum(e[1] for e in errors["sigmoid_xent"]),
    "naive_nonfinite": sum(e[1] for e in errors["naive"]),
    "textbook_nonfinite": sum(e[1] for e in errors["textbook"]),
    "ours_inf_logits_finite_grad": bool(np.all(np.isfinite(ours_g))),
    "optax_inf_logits_nan": int(np.sum(np.isnan(optax_v))),
}
print(json.dumps(summary, indent=1))
