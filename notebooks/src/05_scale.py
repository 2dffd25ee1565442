# %% [markdown]
# # Heads with many classes, and SigLIP with several captions per image
#
# Two losses of `sigmoid_xent` exist for the cases where the usual `[batch, classes]` (or
# `[images, texts]`) matrix does not fit:
#
# * `linear_sigmoid_cross_entropy` fuses a linear head with the sigmoid cross-entropy. Its labels
#   can be **label ids**: the few positive classes of each row, as extreme multi-label data comes.
#   Neither the logits nor the labels ever exist as `[batch, classes]`.
# * `siglip_loss` is SigLIP's pairwise loss. With **ids**, image `i` and text `j` are a positive
#   pair where their ids match: several captions per image, duplicates, padding rows.
#
# We train a small multi-label head from label ids with optax, then a multi-caption SigLIP step.
# Everything runs on CPU in well under a minute.

# %%
import json

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import sigmoid_xent as sx

# %% [markdown]
# ## An extreme multi-label head trained from label ids
#
# 5000 samples, 1000 classes, between 1 and 5 positive classes per sample. The classes come from
# a hidden model: each sample's positives are the classes whose hidden score is highest. Rows
# are padded to `K = 5` ids with `-1`.

# %%
FEATURES, HIDDEN, CLASSES, K, N = 16, 32, 1000, 5, 5000
rng = np.random.default_rng(0)
true_w = rng.normal(size=(CLASSES, FEATURES)) / np.sqrt(FEATURES)
x_all = rng.normal(size=(N, FEATURES))
scores = x_all @ true_w.T + rng.gumbel(size=(N, CLASSES)) * 0.1
counts = rng.integers(1, K + 1, size=N)
top = np.argsort(-scores, axis=1)[:, :K]
ids_all = np.where(np.arange(K)[None, :] < counts[:, None], top, -1).astype(np.int32)
x_all = jnp.asarray(x_all, jnp.float32)
x_train, ids_train = x_all[:4500], jnp.asarray(ids_all[:4500])
x_test, ids_test = x_all[4500:], ids_all[4500:]
print("label ids of the first rows:\n", ids_all[:3])
print(f"dense labels would hold {4500 * CLASSES:,} values; the ids hold {ids_train.size:,}")

# %% [markdown]
# The loss from ids is the loss of the dense labels they stand for (checked here on a slice,
# where the dense labels are small enough to build):

# %%
h_demo = jnp.asarray(rng.normal(size=(64, HIDDEN)), jnp.float32)
w_demo = jnp.asarray(rng.normal(size=(CLASSES, HIDDEN)) * 0.1, jnp.float32)
dense = (
    jnp.zeros((64, CLASSES))
    .at[jnp.arange(64)[:, None], ids_train[:64]]
    .max((ids_train[:64] >= 0).astype(jnp.float32))
)
from_ids = sx.linear_sigmoid_cross_entropy(h_demo, w_demo, label_ids=ids_train[:64])
from_dense = jnp.mean(sx.sigmoid_cross_entropy_with_logits(dense, h_demo @ w_demo.T))
print(f"from ids {float(from_ids):.7f}, dense formula {float(from_dense):.7f}")
ids_equal_dense = bool(jnp.allclose(from_ids, from_dense, rtol=1e-6))

# %% [markdown]
# ## Model and train step
#
# A one-layer MLP gives the features `h`; the head `w`, `bias` has one row per class. The loss
# is each row's sum over classes (`reduction="none"`), averaged over the batch. The train step is
# one `jax.jit`-compiled function.


# %%
def init(key):
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (FEATURES, HIDDEN)) / np.sqrt(FEATURES),
        "w": jax.random.normal(k2, (CLASSES, HIDDEN)) * 0.01,
        "bias": jnp.full((CLASSES,), -6.0),  # most classes are negative for every row
    }


def features(params, x):
    return jax.nn.gelu(x @ params["w1"])


def head_loss(params, x, ids):
    rows = sx.linear_sigmoid_cross_entropy(
        features(params, x), params["w"], label_ids=ids, bias=params["bias"], reduction="none"
    )
    return jnp.mean(rows)


optimizer = optax.adam(3e-3)


@jax.jit
def step(params, opt_state, x, ids):
    loss, grads = jax.value_and_grad(head_loss)(params, x, ids)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def precision_at_5(logits, ids):
    best = np.argsort(-np.asarray(logits), axis=1)[:, :5]
    hits = [len(set(b) & set(r[r >= 0])) / 5 for b, r in zip(best, ids, strict=True)]
    return float(np.mean(hits))


def head_logits(params, x):  # only for the metric: 500 x 1000 logits
    return features(params, x) @ params["w"].T + params["bias"]


params = init(jax.random.key(1))
opt_state = optimizer.init(params)
p5_before = precision_at_5(head_logits(params, x_test), ids_test)
head_losses = []
batches = np.random.default_rng(2)
for _ in range(400):
    batch = batches.choice(4500, 250, replace=False)
    params, opt_state, loss = step(params, opt_state, x_train[batch], ids_train[batch])
    head_losses.append(float(loss))
p5_after = precision_at_5(head_logits(params, x_test), ids_test)
# The best possible: the hidden model's own scores (a row with 2 positives scores at most 2/5).
p5_hidden = precision_at_5(np.asarray(x_test) @ true_w.T, ids_test)
print(f"loss {head_losses[0]:.3f} -> {head_losses[-1]:.3f}")
print(f"precision@5 on held-out rows: {p5_before:.3f} before, {p5_after:.3f} after training")
print(f"(the hidden model itself: {p5_hidden:.3f})")

# %% [markdown]
# What the head never builds: at 4096 rows, 262144 classes and 128 features, XLA's compiled
# temporary buffers for `value_and_grad` (compiled only, nothing is allocated here) stay far
# below one dense `[batch, classes]` float32 array, which the plain formula needs several of.

# %%
S = jax.ShapeDtypeStruct
big = (S((4096, 128), jnp.float32), S((262144, 128), jnp.float32), S((4096, 8), jnp.int32))
compiled = (
    jax.jit(
        jax.value_and_grad(
            lambda h, w, ids: sx.linear_sigmoid_cross_entropy(h, w, label_ids=ids), (0, 1)
        )
    )
    .lower(*big)
    .compile()
)
temp_mib = compiled.memory_analysis().temp_size_in_bytes / 2**20
dense_mib = 4096 * 262144 * 4 / 2**20
print(
    f"value_and_grad temp memory: {temp_mib:.1f} MiB; one dense [B, C] array: {dense_mib:.0f} MiB"
)

# %% [markdown]
# ## SigLIP with several captions per image
#
# 64 "images" (random vectors), each with two "captions": noisy views of the image in another
# space. A batch holds 32 images and their 64 captions, and is padded to 40 images with id
# `-1` (absent from every pair, as the padding of a fixed-size batch). Each modality has a
# linear projection; the log-temperature `t` and the bias `b` are learned too, as in SigLIP.

# %%
DIM_IN, DIM = 16, 24
data_rng = np.random.default_rng(3)
images = data_rng.normal(size=(64, DIM_IN))
mix = data_rng.normal(size=(DIM_IN, DIM_IN)) / np.sqrt(DIM_IN)
captions = np.stack([images @ mix + 0.3 * data_rng.normal(size=(64, DIM_IN)) for _ in range(2)])
captions = captions.transpose(1, 0, 2).reshape(128, DIM_IN)  # image i: captions 2i and 2i + 1
caption_ids = np.repeat(np.arange(64), 2)


def embed(w, x):
    e = x @ w
    return e / jnp.linalg.norm(e, axis=-1, keepdims=True)


def siglip_step_loss(p, img, txt, img_ids, txt_ids):
    return sx.siglip_loss(
        embed(p["img"], img), embed(p["txt"], txt), p["t"], p["b"], img_ids=img_ids,
        txt_ids=txt_ids,
    )  # fmt: skip


def batch(rng):
    chosen = np.sort(rng.choice(64, 32, replace=False))
    img = np.concatenate([images[chosen], rng.normal(size=(8, DIM_IN))])  # 8 padding rows
    img_ids = np.concatenate([chosen, -np.ones(8, int)])
    txt_rows = np.concatenate([2 * chosen, 2 * chosen + 1])
    return (
        jnp.asarray(img, jnp.float32),
        jnp.asarray(captions[txt_rows], jnp.float32),
        jnp.asarray(img_ids),
        jnp.asarray(caption_ids[txt_rows]),
    )


def dense_siglip(p, img, txt, img_ids, txt_ids):
    """The definition, with the [images, texts] logits and labels."""
    logits = embed(p["img"], img) @ embed(p["txt"], txt).T * jnp.exp(p["t"]) + p["b"]
    labels = jnp.where(img_ids[:, None] == txt_ids[None, :], 1.0, -1.0)
    present = (img_ids >= 0)[:, None] & (txt_ids >= 0)[None, :]
    terms = jnp.where(present, jax.nn.log_sigmoid(labels * logits), 0.0)
    return -jnp.sum(terms) / jnp.sum(img_ids >= 0)


key_i, key_t = jax.random.split(jax.random.key(4))
sig_params = {
    "img": jax.random.normal(key_i, (DIM_IN, DIM)) / 4,
    "txt": jax.random.normal(key_t, (DIM_IN, DIM)) / 4,
    "t": jnp.log(10.0),
    "b": jnp.asarray(-10.0),
}
example = batch(np.random.default_rng(5))
siglip_equal_dense = bool(
    jnp.allclose(siglip_step_loss(sig_params, *example), dense_siglip(sig_params, *example))
)
print("chunked loss equals the dense definition:", siglip_equal_dense)

sig_opt = optax.adam(1e-2)


@jax.jit
def siglip_step(p, state, *data):
    loss, grads = jax.value_and_grad(siglip_step_loss)(p, *data)
    updates, state = sig_opt.update(grads, state, p)
    return optax.apply_updates(p, updates), state, loss


def retrieval(p):
    """The share of images whose best-scoring caption is one of their own."""
    scores = (
        embed(p["img"], jnp.asarray(images, jnp.float32))
        @ embed(p["txt"], jnp.asarray(captions, jnp.float32)).T
    )
    return float(np.mean(caption_ids[np.asarray(jnp.argmax(scores, axis=1))] == np.arange(64)))


sig_state = sig_opt.init(sig_params)
retrieval_before = retrieval(sig_params)
siglip_losses = []
sig_rng = np.random.default_rng(6)
for _ in range(150):
    sig_params, sig_state, loss = siglip_step(sig_params, sig_state, *batch(sig_rng))
    siglip_losses.append(float(loss))
retrieval_after = retrieval(sig_params)
print(f"loss {siglip_losses[0]:.3f} -> {siglip_losses[-1]:.3f}")
print(f"image -> caption retrieval: {retrieval_before:.2f} before, {retrieval_after:.2f} after")

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
axes[0].plot(head_losses)
axes[0].set(title="multi-label head (label ids)", xlabel="step", ylabel="loss per row")
axes[1].plot(siglip_losses)
axes[1].set(title="SigLIP, two captions per image", xlabel="step", ylabel="loss")
fig.tight_layout()
plt.show()

# %% [markdown]
# Both losses take the options every other loss of the package takes: the head `weights`,
# `where`, `pos_weight`, `label_smoothing` and every reduction, and both run inside
# `jax.shard_map` over many devices (`axis_name`; `siglip_loss_ring` for SigLIP, whose text
# shards travel around the device ring with their ids). See `docs/scaling.md`.

# %% tags=["summary"]
summary = {
    "ids_equal_dense": ids_equal_dense,
    "head_first_loss": head_losses[0],
    "head_final_loss": head_losses[-1],
    "precision_at_5_before": p5_before,
    "precision_at_5_after": p5_after,
    "precision_at_5_hidden_model": p5_hidden,
    "vg_temp_MiB": temp_mib,
    "dense_array_MiB": dense_mib,
    "siglip_equal_dense": siglip_equal_dense,
    "siglip_first_loss": siglip_losses[0],
    "siglip_final_loss": siglip_losses[-1],
    "retrieval_before": retrieval_before,
    "retrieval_after": retrieval_after,
}
print(json.dumps(summary, indent=1))
