"""Losses for class imbalance: value_and_grad against autodiff of the reference formulas.

``python benchmarks/bench_imbalance.py [--repeats 21]``: ``jax.value_and_grad`` (w.r.t. the
logits) of the mean loss at 2^20 float32 elements (``[1024, 1024]``, logits ``4 N(0, 1)``, hard
labels ``Bernoulli(1/2)``; soft targets ``U(0, 1)`` for the quality focal loss), jitted, the
implementations interleaved (:func:`measure.interleaved`), medians; the ratio is the reference's
median over ours (above 1: ours is faster). References, transcribed into ``jnp`` and
differentiated by JAX:

- ASL: timm's ``AsymmetricLossMultiLabel`` (the authors' ``AsymmetricLoss`` is the same
  formula): ``log(clamp(p, 1e-8))``, ``xs_neg = min(1 - p + clip, 1)``,
  ``(1 - p_t)**(gamma_pos y + gamma_neg (1 - y))``;
- Poly-1: torchvision's focal loss plus ``epsilon (1 - p_t)**(gamma + 1)`` (the paper's code);
- quality focal loss: mmdetection's ``quality_focal_loss_tensor_target`` (``bce(x, 0) p**beta``,
  replaced by ``bce(x, z) |z - p|**beta`` where ``z != 0``).

``class_balanced_weights`` is not an elementwise loss (a ``[C]`` vector computed once) and is
not timed.
"""

from __future__ import annotations

import argparse
import platform

import jax
import jax.numpy as jnp
import numpy as np
from measure import interleaved, make_inputs

import sigmoid_xent as sx


def ref_asl(z, x, gamma_pos=0.0, gamma_neg=4.0, clip=0.05, eps=1e-8):
    p = jax.nn.sigmoid(x)
    xs_neg = jnp.minimum(1 - p + clip, 1.0)
    loss = z * jnp.log(jnp.maximum(p, eps)) + (1 - z) * jnp.log(jnp.maximum(xs_neg, eps))
    pt = p * z + xs_neg * (1 - z)
    return -loss * (1 - pt) ** (gamma_pos * z + gamma_neg * (1 - z))


def ref_bce(z, x):
    return jnp.maximum(x, 0) - x * z + jnp.log1p(jnp.exp(-jnp.abs(x)))


def ref_poly1(z, x, epsilon=1.0, gamma=0.0, alpha=None):
    p = jax.nn.sigmoid(x)
    pt = p * z + (1 - p) * (1 - z)
    focal = ref_bce(z, x) * (1 - pt) ** gamma
    if alpha is not None:
        focal = (alpha * z + (1 - alpha) * (1 - z)) * focal
    return focal + epsilon * (1 - pt) ** (gamma + 1)


def ref_qfl(z, x, beta=2.0):
    p = jax.nn.sigmoid(x)
    negative = ref_bce(jnp.zeros_like(z), x) * p**beta
    return jnp.where(z != 0, ref_bce(z, x) * jnp.abs(z - p) ** beta, negative)


CASES = {
    "asymmetric_loss (defaults: 0, 4, 0.05)": (
        lambda z, x: sx.asymmetric_loss(z, x),
        ref_asl,
        "hard",
    ),
    "asymmetric_loss (gamma_pos 1, gamma_neg 4)": (
        lambda z, x: sx.asymmetric_loss(z, x, gamma_pos=1.0),
        lambda z, x: ref_asl(z, x, gamma_pos=1.0),
        "hard",
    ),
    "asymmetric_loss (gamma_neg 2.5, real)": (
        lambda z, x: sx.asymmetric_loss(z, x, gamma_neg=2.5),
        lambda z, x: ref_asl(z, x, gamma_neg=2.5),
        "hard",
    ),
    "poly1_sigmoid_loss (defaults: epsilon 1, gamma 0)": (
        lambda z, x: sx.poly1_sigmoid_loss(z, x),
        ref_poly1,
        "hard",
    ),
    "poly1_sigmoid_loss (gamma 2, alpha 0.25)": (
        lambda z, x: sx.poly1_sigmoid_loss(z, x, gamma=2.0, alpha=0.25),
        lambda z, x: ref_poly1(z, x, gamma=2.0, alpha=0.25),
        "hard",
    ),
    "quality_focal_loss (beta 2)": (
        lambda z, x: sx.quality_focal_loss(z, x),
        ref_qfl,
        "soft",
    ),
    "quality_focal_loss (beta 1.5, real)": (
        lambda z, x: sx.quality_focal_loss(z, x, beta=1.5),
        lambda z, x: ref_qfl(z, x, beta=1.5),
        "soft",
    ),
}


def _vag(loss):
    return jax.jit(jax.value_and_grad(lambda x, z: jnp.mean(loss(z, x))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--log2n", type=int, default=20)
    args = parser.parse_args()
    x, hard = make_inputs(1 << args.log2n, jnp.float32)
    soft = jax.random.uniform(jax.random.PRNGKey(1), x.shape)
    labels = {"hard": hard, "soft": soft}
    thunks = {}
    for name, (ours, ref, kind) in CASES.items():
        z = labels[kind]
        f, g = _vag(ours), _vag(ref)
        thunks[(name, "sigmoid_xent")] = lambda f=f, z=z: f(x, z)
        thunks[(name, "autodiff of the reference")] = lambda g=g, z=z: g(x, z)
    times = interleaved(thunks, args.repeats)
    load = " ".join(f"{v:.1f}" for v in __import__("os").getloadavg())
    print(
        f"jax {jax.__version__}, {jax.devices()[0].platform}, {platform.processor() or 'cpu'}, "
        f"2^{args.log2n} float32, median of {args.repeats} interleaved runs, load average {load}"
    )
    print(f"{'loss':50s} {'ours ms':>8s} {'ref ms':>8s} {'x ref':>6s} {'(cpu)':>6s}")
    for name in CASES:
        o, r = times[(name, "sigmoid_xent")], times[(name, "autodiff of the reference")]
        print(
            f"{name:50s} {o['median_ms']:8.2f} {r['median_ms']:8.2f} "
            f"{r['median_ms'] / o['median_ms']:6.2f} {r['cpu_ms'] / o['cpu_ms']:6.2f}"
        )
    # NaN in the reference's gradient (where the clamp or the power hits 0): ours has none.
    for name, (ours, ref, kind) in CASES.items():
        z = labels[kind]
        big = x * 8
        gr = np.asarray(_vag(ref)(big, z)[1])
        go = np.asarray(_vag(ours)(big, z)[1])
        print(
            f"  {name}: non-finite gradients at 8x the logits: ours {np.sum(~np.isfinite(go))}, "
            f"reference {np.sum(~np.isfinite(gr))}"
        )


if __name__ == "__main__":
    main()
