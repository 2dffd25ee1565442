# %% [markdown]
# # Migrating from TensorFlow, Keras, TF-Ranking and PyTorch
#
# For every sigmoid cross-entropy call you may have in TensorFlow, Keras, TF-Ranking or PyTorch,
# the `sigmoid_xent` call that gives the same numbers. The *documented* column quotes the value
# printed in the framework's own documentation for those inputs (the TensorFlow API pages this
# project reproduces); the *sigmoid_xent* column is computed live in this notebook. *match* is
# "yes" when ours rounds to the printed digits and "1 ulp" when it is one unit in the last place of
# float32 away. TensorFlow and PyTorch are not installed here: their calls are shown, not run.
#
# Two rules cover most of the migration:
#
# * **Argument order.** `sigmoid_xent` follows TensorFlow: **labels first**, then logits (or
#   probabilities). PyTorch (`input, target`) and optax (`logits, labels`) take the logits first.
# * **Reductions.** The functional losses are elementwise; the TF-v1 style `sigmoid_cross_entropy`,
#   the Keras-style loss objects and the ranking losses reduce with the same names as the
#   framework (`"sum_by_nonzero_weights"`, `"sum_over_batch_size"`/`"auto"`, `"sum"`, `"none"`,
#   ...; TF's upper-case spellings work too).

# %%
import json

import jax
import jax.numpy as jnp
import numpy as np
from IPython.display import Markdown, display

import sigmoid_xent as sx
from sigmoid_xent import ranking

ROWS = []  # (framework call, sigmoid_xent call, documented, ours)
VERDICTS = []  # every documented value compared in this notebook


def row(framework, ours_call, documented, ours):
    ROWS.append((framework, ours_call, documented, np.asarray(ours)))


def matches(documented, ours):
    """'yes' when ours rounds to the printed digits, '1 ulp' when one float32 ulp away."""
    if documented == "":
        return ""
    texts = documented.strip("[]").split(",")
    doc = np.array([float(v) for v in texts], np.float32).astype(np.float64)
    got = np.atleast_1d(np.asarray(ours, np.float32)).astype(np.float64)
    half_unit = np.array([0.5 * 10.0 ** -len(v.strip().split(".")[1]) for v in texts])
    err = np.abs(got - doc)
    if np.all(err <= half_unit * (1 + 1e-6)):
        return "yes"
    if np.all(err <= np.spacing(np.abs(doc).astype(np.float32))):
        return "1 ulp"
    return "**NO**"


def show(rows):
    lines = [
        "| framework call | sigmoid_xent call | documented | sigmoid_xent | match |",
        "|---|---|---|---|---|",
    ]
    for framework, ours_call, documented, ours in rows:
        shown = np.array2string(ours, precision=7, separator=", ", max_line_width=200)
        verdict = matches(documented, ours)
        if verdict:
            VERDICTS.append(verdict)
        lines.append(f"| {framework} | `{ours_call}` | {documented} | {shown} | {verdict} |")
    display(Markdown("\n".join(lines)))


# %% [markdown]
# ## Elementwise losses on logits
#
# `tf.nn.sigmoid_cross_entropy_with_logits` (TF 1 and TF 2), PyTorch's
# `binary_cross_entropy_with_logits(..., reduction="none")` and optax's
# `sigmoid_binary_cross_entropy` all compute `max(x, 0) - x z + log(1 + exp(-|x|))`.

# %%
logits = jnp.array([1.0, -1.0, 0.0, 1.0, -1.0, 0.0, 0.0])
labels = jnp.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.5])
ours = sx.sigmoid_cross_entropy_with_logits(labels, logits)
documented = "[1.3132617, 0.3132617, 0.6931472, 0.3132617, 1.3132617, 0.6931472, 0.6931472]"
row(
    "`tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)`",
    "sx.sigmoid_cross_entropy_with_logits(labels, logits)",
    documented,
    ours,
)
row(
    "`torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction='none')`",
    "sx.sigmoid_cross_entropy_with_logits(labels, logits)",
    documented,
    ours,
)
row(
    "`optax.sigmoid_binary_cross_entropy(logits, labels)`",
    "sx.sigmoid_cross_entropy_with_logits(labels, logits)",
    documented,
    ours,
)
row(
    "`tf.nn.sigmoid_cross_entropy_with_logits(labels=[1., 1., 0.], logits=[1., -1., 0.])`",
    "sx.sigmoid_cross_entropy_with_logits([1., 1., 0.], [1., -1., 0.])",
    "[0.31326166, 1.3132616, 0.6931472]",
    sx.sigmoid_cross_entropy_with_logits(jnp.array([1.0, 1.0, 0.0]), jnp.array([1.0, -1.0, 0.0])),
)

# Weighted positives: TF's weighted_cross_entropy_with_logits, torch's pos_weight.
w_labels, w_logits = jnp.array([1.0, 0.5, 0.0]), jnp.array([1.5, -0.1, -10.0])
ours_w = sx.weighted_sigmoid_cross_entropy_with_logits(w_labels, w_logits, pos_weight=1.5)
row(
    "`tf.nn.weighted_cross_entropy_with_logits(labels, logits, pos_weight=1.5)`",
    "sx.weighted_sigmoid_cross_entropy_with_logits(labels, logits, pos_weight=1.5)",
    "",
    ours_w,
)
row(
    "`torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(1.5), reduction='none')(logits, labels)`",
    "sx.weighted_sigmoid_cross_entropy_with_logits(labels, logits, pos_weight=1.5)",
    "",
    ours_w,
)

# Focal loss: torchvision's and Keras' class-balanced focal loss, on logits.
f_labels, f_logits = jnp.array([1.0, 0.0, 1.0, 0.0]), jnp.array([2.0, 2.0, -1.0, -3.0])
row(
    "`torchvision.ops.sigmoid_focal_loss(logits, labels, alpha=0.25, gamma=2)`",
    "sx.sigmoid_focal_loss(labels, logits, alpha=0.25, gamma=2.0)",
    "",
    sx.sigmoid_focal_loss(f_labels, f_logits, alpha=0.25, gamma=2.0),
)
show(ROWS)

# %% [markdown]
# The second example differs from the documentation by one unit in the last place: TensorFlow's
# own pages print `0.3132617` (first example) and `0.31326166` (second) for the same element,
# logit 1 and label 1. For the weighted loss TensorFlow's float32 formula cancels on the last
# element (it gives `4.5776e-05`); sigmoid_xent returns `4.5399e-05`, the exact value
# `log(1 + exp(-10))` rounded to float32. PyTorch computes the same formulas; its results agree
# with these to float32 rounding.

# %% [markdown]
# ## Keras: `BinaryCrossentropy` and `binary_crossentropy`
#
# The Keras loss object, on probabilities (the default, `from_logits=False`) and with
# `sample_weight` and the `SUM`/`NONE` reductions, from the `tf.keras.losses.BinaryCrossentropy`
# page. The Keras function `binary_crossentropy` returns the per-sample mean over the last axis.

# %%
ROWS.clear()
y_true = jnp.array([[0.0, 1.0], [0.0, 0.0]])
y_pred = jnp.array([[0.6, 0.4], [0.4, 0.6]])
row(
    "`tf.keras.losses.BinaryCrossentropy()(y_true, y_pred)`",
    "sx.BinaryCrossentropy()(y_true, y_pred)",
    "0.815",
    sx.BinaryCrossentropy()(y_true, y_pred),
)
row(
    "`tf.keras.losses.BinaryCrossentropy()(y_true, y_pred, sample_weight=[1, 0])`",
    "sx.BinaryCrossentropy()(y_true, y_pred, sample_weight=[1, 0])",
    "0.458",
    sx.BinaryCrossentropy()(y_true, y_pred, sample_weight=jnp.array([1.0, 0.0])),
)
row(
    "`tf.keras.losses.BinaryCrossentropy(reduction=tf.keras.losses.Reduction.SUM)`",
    'sx.BinaryCrossentropy(reduction="sum")',
    "1.630",
    sx.BinaryCrossentropy(reduction="sum")(y_true, y_pred),
)
row(
    "`tf.keras.losses.BinaryCrossentropy(reduction=tf.keras.losses.Reduction.NONE)`",
    'sx.BinaryCrossentropy(reduction="none")',
    "[0.916, 0.714]",
    sx.BinaryCrossentropy(reduction="none")(y_true, y_pred),
)
row(
    "`tf.keras.losses.binary_crossentropy(y_true, y_pred)`",
    "sx.binary_crossentropy(y_true, y_pred)",
    "[0.916, 0.714]",
    sx.binary_crossentropy(y_true, y_pred),
)
row(
    "`torch.nn.BCELoss()(y_pred, y_true)`",
    "sx.BinaryCrossentropy()(y_true, y_pred)",
    "",
    sx.BinaryCrossentropy()(y_true, y_pred),
)
# On logits: Keras from_logits=True, torch BCEWithLogitsLoss (mean over all elements).
x = jnp.log(y_pred / (1 - y_pred))
row(
    "`tf.keras.losses.BinaryCrossentropy(from_logits=True)(y_true, logits)`",
    "sx.BinaryCrossentropy(from_logits=True)(y_true, logits)",
    "",
    sx.BinaryCrossentropy(from_logits=True)(y_true, x),
)
row(
    "`torch.nn.BCEWithLogitsLoss()(logits, y_true)`",
    "sx.BinaryCrossentropy(from_logits=True)(y_true, logits)",
    "",
    sx.BinaryCrossentropy(from_logits=True)(y_true, x),
)
show(ROWS)

# %% [markdown]
# `torch.nn.BCELoss` has no epsilon clipping, so on these probabilities it agrees with Keras to
# about `1e-7`; at the edges (`p = 0` or `1`) the frameworks differ on purpose, see below.
#
# The loss object has `get_config()` / `from_config()` like Keras, and it is hashable and
# immutable, so it can be closed over in a jitted function or passed as a static argument.

# %%
bce = sx.BinaryCrossentropy(from_logits=True, label_smoothing=0.1)
config = bce.get_config()
print(config)
print(
    "round trip equal:",
    sx.BinaryCrossentropy.from_config(config) == bce,
    "| hashable:",
    hash(bce) == hash(sx.BinaryCrossentropy(**config)),
)

# %% [markdown]
# ## TF v1: `tf.compat.v1.losses.sigmoid_cross_entropy`
#
# Weights, label smoothing towards 1/2, and the TF v1 reductions. The page prints no example, so
# the check here is against its formula: `z' = z (1 - s) + s / 2`, then the weighted losses
# summed and divided by the number of non-zero weights (`SUM_BY_NONZERO_WEIGHTS`, the default).
# As in TF, weights must be a scalar or of the losses' rank (`[batch, 1]` per sample).

# %%
mc_labels = jnp.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
mc_logits = jnp.array([[-1.0, 2.0, 0.5], [3.0, -0.5, 1.0]])
weights = jnp.array([[2.0], [0.0]])
ours_v1 = sx.sigmoid_cross_entropy(mc_labels, mc_logits, weights=weights, label_smoothing=0.2)
smoothed = mc_labels * 0.8 + 0.1
by_formula = jnp.sum(weights * sx.sigmoid_cross_entropy_with_logits(smoothed, mc_logits)) / 3
print(
    "sx.sigmoid_cross_entropy(labels, logits, weights=[[2.], [0.]], label_smoothing=0.2) = "
    f"{float(ours_v1):.7f}"
)
print(
    "by the formula of the TF page                                                  = "
    f"{float(by_formula):.7f}"
)
for name in ("SUM_BY_NONZERO_WEIGHTS", "MEAN", "SUM", "SUM_OVER_BATCH_SIZE", "NONE"):
    value = sx.sigmoid_cross_entropy(
        mc_labels, mc_logits, weights=weights, label_smoothing=0.2, reduction=name
    )
    print(
        f"  reduction=tf.losses.Reduction.{name:<24} -> "
        + np.array2string(np.asarray(value), precision=5)
    )
try:
    sx.sigmoid_cross_entropy(mc_labels, mc_logits, weights=jnp.array([2.0, 0.0]))
except ValueError as err:
    print("\nweights=[2., 0.] (a bare [batch] vector):", err)

# %% [markdown]
# ## TF-Ranking: `tfr.keras.losses.SigmoidCrossEntropyLoss`
#
# Dense lists padded with label `-1`, ragged lists (`ragged=True` takes Python lists of unequal
# lengths), and the packed layout with segment ids, which gives the same number.

# %%
ROWS.clear()
row(
    "`tfr.keras.losses.SigmoidCrossEntropyLoss()([[1., 0.]], [[0.6, 0.8]])`",
    "ranking.SigmoidCrossEntropyLoss()([[1., 0.]], [[0.6, 0.8]])",
    "0.8042943",
    ranking.SigmoidCrossEntropyLoss()(jnp.array([[1.0, 0.0]]), jnp.array([[0.6, 0.8]])),
)
ragged_true, ragged_pred = [[1.0, 0.0], [0.0, 1.0, 0.0]], [[0.6, 0.8], [0.5, 0.8, 0.4]]
row(
    "`tfr.keras.losses.SigmoidCrossEntropyLoss(ragged=True)(tf.ragged.constant(y_true), ...)`",
    "ranking.SigmoidCrossEntropyLoss(ragged=True)(y_true, y_pred)",
    "0.6444636",
    ranking.SigmoidCrossEntropyLoss(ragged=True)(ragged_true, ragged_pred),
)
packed_labels, segment_ids = ranking.pack(ragged_true)
packed_logits, _ = ranking.pack(ragged_pred)
row(
    "(same, packed)",
    "ranking.sigmoid_cross_entropy(labels, logits, segment_ids=segment_ids, num_segments=2)",
    "0.6444636",
    ranking.sigmoid_cross_entropy(
        packed_labels, packed_logits, segment_ids=segment_ids, num_segments=2
    ),
)
dense_labels = ranking.pad(packed_labels, segment_ids, 2)
dense_logits = ranking.pad(packed_logits, segment_ids, 2, fill_value=0)
row(
    "(same, padded with label -1)",
    "ranking.sigmoid_cross_entropy(dense_labels, dense_logits)",
    "0.6444636",
    ranking.sigmoid_cross_entropy(dense_labels, dense_logits),
)
show(ROWS)
print("packed:", packed_labels, segment_ids, "\npadded:\n", dense_labels)

# %% [markdown]
# The packed sum is accumulated in a different order than the padded one, so the two can differ
# by one unit in the last place of float32.

# %% [markdown]
# ## Probabilities at the edges
#
# On probabilities the frameworks disagree at `p = 0` and `p = 1`, by design:
#
# | framework | rule | `p = 1, z = 0` | `p = 0, z = 1` |
# |---|---|---|---|
# | tf.keras 2 | clip `p` to `[eps, 1 - eps]`, then `log(p + eps)` | 15.333239 | 15.424949 |
# | Keras 3 | clip `p`, no extra `eps` in the log | 15.942 | 16.118 |
# | PyTorch `BCELoss` | clamp each `log` at `-100` | 100 | 100 |
#
# `sx.binary_cross_entropy` (and `sx.BinaryCrossentropy()` with `from_logits=False`) follow
# tf.keras 2. PyTorch's rule is one line in JAX. On logits none of this arises: prefer
# `from_logits=True` and the stable core.

# %%
z_edge, p_edge = jnp.array([0.0, 1.0]), jnp.array([1.0, 0.0])
keras2 = sx.binary_cross_entropy(z_edge, p_edge)
torch_rule = -(
    z_edge * jnp.maximum(jnp.log(p_edge), -100)
    + (1 - z_edge) * jnp.maximum(jnp.log1p(-p_edge), -100)
)
print("sx.binary_cross_entropy(z, p):", keras2, "  (tf.keras 2: [15.333239, 15.424949])")
print("PyTorch's clamp rule in jnp:  ", torch_rule)

# %% [markdown]
# ## Other differences worth knowing
#
# * **Dtypes.** Every loss returns its input's float dtype: float64 stays float64 (with
#   `jax.config.update("jax_enable_x64", True)`), where TF v1 and Keras 3 compute in float32.
#   float16 and bfloat16 are computed in float32 and rounded once.
# * **No broadcasting of labels.** As in TensorFlow, labels and logits must have the same shape; a
#   mismatch is a `ValueError` at trace time naming both shapes (Keras 2 silently broadcasts).
# * **Infinite logits** give the exact loss (0 or `inf`) and a finite gradient; TF, PyTorch and
#   optax can return `NaN` there.
# * **Gradients** are hand-written (`jax.custom_vjp`), exact for any finite logit and w.r.t. the
#   labels too (for distillation with soft labels). `jax.grad`, `jax.hessian`, `jax.jacrev`,
#   `vmap` and `jit` work; JAX refuses forward mode (`jax.jvp`, `jax.jacfwd`) on any `custom_vjp`
#   function, so use `jax.jacrev` or `jax.hessian`.
# * **Value checks** that need data (labels outside [0, 1], non-finite logits, segment ids out of
#   range) live in `sx.validate_inputs`, which works eagerly and under
#   `jax.experimental.checkify` inside `jit`.

# %%
try:
    sx.sigmoid_cross_entropy_with_logits(jnp.ones(3), jnp.zeros((2, 3)))
except ValueError as err:
    print("ValueError:", err)
x_inf = jnp.array([jnp.inf, -jnp.inf])
print(
    "loss and gradient at logits [inf, -inf], labels [1, 1]:",
    sx.sigmoid_cross_entropy_with_logits(jnp.ones(2), x_inf),
    jax.grad(lambda x: sx.sigmoid_cross_entropy_with_logits(jnp.ones(2), x).sum())(x_inf),
)

# %% [markdown]
# ## Keras 3: `model.compile(loss=sigmoid_xent.keras.BinaryCrossentropy(...))`
#
# If you keep Keras (3, on the JAX backend), change only the loss:
#
# ```python
# model.compile(optimizer="adam", loss=sigmoid_xent.keras.BinaryCrossentropy(from_logits=True))
# ```
#
# `sigmoid_xent.keras` holds real `keras.losses.Loss` subclasses (`BinaryCrossentropy`,
# `BinaryFocalCrossentropy`, `SigmoidCrossEntropyLoss`). Their `call` returns per-sample losses
# from the stable core, and Keras applies `sample_weight`, masks and the reduction, as for its
# own losses. The plain-JAX `sx.BinaryCrossentropy` is **not** for `model.compile`: Keras
# treats anything that is not a `keras.losses.Loss` as a function, and multiplies the scalar it
# already returned by the sample weights once more. Below, the same small model evaluated with
# non-uniform sample weights under the three losses, then trained with ours, saved to a
# `.keras` file and loaded back without `custom_objects`.

# %%
import os
import tempfile

os.environ.setdefault("KERAS_BACKEND", "jax")  # before anything imports keras
import keras

import sigmoid_xent.keras

rng = np.random.default_rng(0)
features = rng.standard_normal((256, 8)).astype(np.float32)
true_w = rng.standard_normal((8, 3)).astype(np.float32)
targets = (features @ true_w + rng.standard_normal((256, 3)) > 0).astype(np.float32)
# Up-weight the examples whose first label is positive (as a class weight would).
sample_weight = np.where(targets[:, 0] > 0, 3.0, 0.5).astype(np.float32)


def small_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)]
    )


LOSSES = {
    "keras.losses.BinaryCrossentropy": keras.losses.BinaryCrossentropy(from_logits=True),
    "sigmoid_xent.keras.BinaryCrossentropy": sigmoid_xent.keras.BinaryCrossentropy(
        from_logits=True
    ),
    "sx.BinaryCrossentropy (plain JAX: wrong here)": sx.BinaryCrossentropy(from_logits=True),
}
evaluated = {}
for label, loss in LOSSES.items():
    model = small_model()
    model.compile(optimizer="sgd", loss=loss)
    evaluated[label] = model.evaluate(
        features, targets, sample_weight=sample_weight, batch_size=64, verbose=0
    )
for label, value in evaluated.items():
    print(f"{label:48s} evaluate with sample_weight: {value:.6f}")

# %%
model = small_model()
model.compile(
    optimizer=keras.optimizers.Adam(0.02),
    loss=sigmoid_xent.keras.BinaryCrossentropy(from_logits=True, label_smoothing=0.05),
)
history = model.fit(
    features, targets, sample_weight=sample_weight, batch_size=32, epochs=20, verbose=0
)
trained = model.evaluate(features, targets, sample_weight=sample_weight, verbose=0)
path = os.path.join(tempfile.mkdtemp(), "model.keras")
model.save(path)
reloaded = keras.models.load_model(path)  # no custom_objects: the classes are registered
again = reloaded.evaluate(features, targets, sample_weight=sample_weight, verbose=0)
print(f"loss over 20 epochs: {history.history['loss'][0]:.4f} -> {history.history['loss'][-1]:.4f}")
print("reloaded loss object:", type(reloaded.loss).__module__, reloaded.loss.get_config())
print(f"evaluate before saving {trained:.6f}, after loading {again:.6f}")

# %% [markdown]
# ## Or drop Keras: a `model.compile(loss=...)` becomes a train step
#
# ```python
# model.compile(optimizer="adam", loss=tf.keras.losses.BinaryCrossentropy(from_logits=True))
# ```
#
# becomes, with optax and the hashable plain-JAX loss object:
#
# ```python
# loss_obj = sx.BinaryCrossentropy(from_logits=True)
# optimizer = optax.adam(1e-3)
#
# @jax.jit
# def train_step(params, opt_state, x, y):
#     loss, grads = jax.value_and_grad(lambda p: loss_obj(y, apply_fn(p, x)))(params)
#     updates, opt_state = optimizer.update(grads, opt_state, params)
#     return optax.apply_updates(params, updates), opt_state, loss
# ```
#
# See `02_training_with_optax.ipynb` for a complete example.

# %% tags=["summary"]
summary = {
    "documented_values": len(VERDICTS),
    "documented_mismatches": sum(v == "**NO**" for v in VERDICTS),
    "ranking_auto": float(
        ranking.SigmoidCrossEntropyLoss()(jnp.array([[1.0, 0.0]]), jnp.array([[0.6, 0.8]]))
    ),
    "ranking_ragged": float(ranking.SigmoidCrossEntropyLoss(ragged=True)(ragged_true, ragged_pred)),
    "keras_bce": float(sx.BinaryCrossentropy()(y_true, y_pred)),
    "v1_matches_formula": bool(np.isclose(ours_v1, by_formula, rtol=1e-6)),
    "weighted_last": float(ours_w[-1]),
    "keras_matches_keras_own": bool(
        np.isclose(
            evaluated["sigmoid_xent.keras.BinaryCrossentropy"],
            evaluated["keras.losses.BinaryCrossentropy"],
            rtol=1e-6,
        )
    ),
    "keras_plain_object_off": bool(
        abs(
            evaluated["sx.BinaryCrossentropy (plain JAX: wrong here)"]
            - evaluated["keras.losses.BinaryCrossentropy"]
        )
        > 1e-3
    ),
    "keras_trained": bool(history.history["loss"][-1] < 0.7 * history.history["loss"][0]),
    "keras_reloaded_equal": bool(np.isclose(again, trained, rtol=1e-6)),
}
print(json.dumps(summary, indent=1))
