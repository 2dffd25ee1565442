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
    parser.add_argument("--accuracy", action="store_true", help="the ulp table instead")
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


if __name__ == "__main__" and "--accuracy" not in __import__("sys").argv:
    main()


def accuracy() -> None:
    """Worst float32 errors (ulps) over tests/test_imbalance.py's grid and references: the
    figures of docs/numerics.md."""
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
    import test_imbalance as t

    def worst(err, label):
        i = int(np.argmax(err))
        return float(err[i]), label, float(t.GRID_X[i])

    rows = []
    for options in t.ASL_CONFIGS:
        w = (0.0, None, None)
        g = (0.0, None, None)
        for label in t.LABELS:
            z, (value, gz, gx) = t._on_grid("asl", *options, label=label)
            want = t.r_asl(z, t.GRID_X, *options)
            w = max(w, worst(np.where(t._normal(want), t.ulps(value, want), 0), label))
            if options[2] is not None:
                dx, dxs, dz, dzs = t.r_asl_grads(z, t.GRID_X, *options)
                ex = np.where(t._finite_scale(dxs), t.ulps(gx, dx, dxs), 0)
                g = max(g, worst(ex, label))
        rows.append((f"asymmetric_loss {options}", w, g))
    for beta in (2.0, 0.5):
        w, g = (0.0, None, None), (0.0, None, None)
        for label in t.LABELS + (0.5,):
            z, (value, _, gx) = t._on_grid("qfl", beta, label=label)
            want, larger = t.r_qfl(z, t.GRID_X, beta)
            # 4 ulp of the value or 2 of the larger term: shown on the first scale.
            ok = np.minimum(t.ulps(value, want), 2 * t.ulps(value, want, larger))
            w = max(w, worst(np.where(t._normal(want), ok, 0), label))
            if beta < 1 and label == 0.5:
                continue  # d/dx infinite at z = sigmoid(x), as accurate as z - sigmoid(x) near
            dx, scale, larger = t.r_qfl_dx(z, t.GRID_X, beta)
            eg = np.minimum(t.ulps(gx, dx, scale), 3 * t.ulps(gx, dx, larger))
            g = max(g, worst(np.where(t._finite_scale(scale), eg, 0), label))
        rows.append((f"quality_focal_loss beta={beta}", w, g))
    for options in t.POLY_CONFIGS:
        w, g = (0.0, None, None), (0.0, None, None)
        for label in t.LABELS:
            z, (value, _, gx) = t._on_grid("poly1", *options, label=label)
            want, larger = t.r_poly(z, t.GRID_X, *options)
            scale = want if options[0] >= 0 else larger
            e = t.ulps(value, want, scale, floor=2.0 + abs(options[0]))
            w = max(w, worst(np.where(t._normal(want), e, 0), label))
            if options == (1.0, 0.0, None) and label in (0.0, 1.0, 0.3):
                zl, xl = t._ld(z), t._ld(t.GRID_X)
                t1 = np.where(xl >= 0, (1 - zl) - t.r_sigmoid(-xl), t.r_sigmoid(xl) - zl)
                t2 = (1 - 2 * zl) * t.r_sigmoid(xl) * t.r_sigmoid(-xl)
                sc = np.abs(t1) + np.abs(t2)
                eg = np.where(t._finite_scale(sc), t.ulps(gx, t1 + t2, sc), 0)
                g = max(g, worst(eg, label))
        rows.append((f"poly1_sigmoid_loss {options}", w, g))
    # A traced clip: logit(c) from the pair log (about 40 bits) instead of the host's 72.
    f = jax.jit(lambda z, x, c: sx.asymmetric_loss(z, x, clip=c))
    w = (0.0, None, None)
    for label in t.LABELS:
        z = np.full_like(t.GRID_X, label)
        want = t.r_asl(z, t.GRID_X, 0.0, 4.0, 0.05)
        value = f(z, t.GRID_X, jnp.float32(0.05))
        w = max(w, worst(np.where(t._normal(want), t.ulps(value, want), 0), label))
    rows.append(("asymmetric_loss, traced clip 0.05", w, (0.0, None, None)))
    print(f"{'float32, worst error in ulps (label, logit)':48s} {'loss':>24s} {'d/dx':>24s}")
    for name, w, g in rows:
        gtxt = "" if g[1] is None else f"{g[0]:6.2f} ({g[1]:g}, {g[2]:.4g})"
        print(f"{name:48s} {w[0]:6.2f} ({w[1]:g}, {w[2]:.4g})".ljust(75) + f" {gtxt}")


if __name__ == "__main__" and "--accuracy" in __import__("sys").argv:
    accuracy()
