"""Ranking layouts side by side: packed segment_sum vs padded dense vs a rax-style O(n²) mask.

``value_and_grad`` (w.r.t. the logits) of the TF-Ranking sigmoid cross-entropy, jitted, for
10^5 items in 10^3 lists of random lengths, with the ``auto`` reduction (TF-Ranking's default:
the sum over ``lists x longest list`` slots) and ``list_mean`` (per-list means averaged):

- ``packed``: :func:`sigmoid_xent.ranking.sigmoid_cross_entropy` on the flat items with
  ``segment_ids`` (O(n), ``jax.ops.segment_sum``);
- ``dense``: the same function on TF-Ranking's ``[lists, longest]`` layout (padded beforehand,
  not timed), O(lists x longest);
- ``rax-style``: per-list sums through a same-segment mask ``segments[:, None] ==
  segments[None, :]`` as rax's ``segment_utils`` builds it (written here; rax is no dependency).
  On one row of 10^5 items that mask has 10^10 entries (40 GB as float32), so it is run on rax's
  usual layout instead: the lists packed in order into rows of ``ROW`` slots, one mask per row;
  the single-row O(n²) cost is shown at 10^4 items.
- ``packed-rows``: our packed loss ``vmap``-ped over those same rows.

Every implementation is checked to give the same value before it is timed. Implementations are
interleaved, each timed ``repeats`` times after a warm-up with ``block_until_ready``; the table
shows medians, the ratio to ``packed`` and XLA's temp memory. No timed asserts.

Run: ``python benchmarks/bench_ranking.py [repeats]``; ``run(repeats)`` returns the rows.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sigmoid_xent import ranking, sigmoid_cross_entropy_with_logits

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import interleaved, temp_mib  # noqa: E402

ROW = 512  # slots per row of the rax-style layout (raised to the longest list if shorter)


def make_lists(num_items: int, num_lists: int, seed: int = 0) -> dict[str, Any]:
    """Random list lengths (each >= 1, summing to num_items), binary labels, normal logits."""
    rng = np.random.default_rng(seed)
    share = rng.dirichlet(np.full(num_lists, 2.0))
    lengths = 1 + rng.multinomial(num_items - num_lists, share)
    labels = (rng.random(num_items) < 0.1).astype(np.float32)
    logits = rng.normal(size=num_items).astype(np.float32)
    ids = np.repeat(np.arange(num_lists), lengths).astype(np.int32)
    return {"labels": labels, "logits": logits, "ids": ids, "lengths": lengths}


def to_rows(data: dict[str, Any], row: int) -> dict[str, np.ndarray]:
    """Packs whole lists, in order, into rows of ``row`` slots; the tail is padding (label -1,
    segment -1). Segment ids stay global so that every layout reduces over the same lists."""
    starts = np.concatenate([[0], np.cumsum(data["lengths"])])
    rows, current, used = [], [], 0
    for k, n in enumerate(data["lengths"]):
        if used + n > row:
            rows.append(current)
            current, used = [], 0
        current.append(k)
        used += n
    rows.append(current)
    z = np.full((len(rows), row), -1.0, np.float32)
    x = np.zeros((len(rows), row), np.float32)
    seg = np.full((len(rows), row), -1, np.int32)
    for r, lists in enumerate(rows):
        lo, hi = starts[lists[0]], starts[lists[-1] + 1]
        z[r, : hi - lo] = data["labels"][lo:hi]
        x[r, : hi - lo] = data["logits"][lo:hi]
        seg[r, : hi - lo] = data["ids"][lo:hi]
    return {"labels": z, "logits": x, "segments": seg}


def rax_style_loss(
    labels: jax.Array, logits: jax.Array, segments: jax.Array, num_lists: int, reduction: str
) -> jax.Array:
    """The same loss with rax-style O(n²) per-row same-segment masks (``[..., n]`` rows).

    Padding (label < 0) is zeroed before the loss as TF-Ranking does; per-item list statistics
    are ``sum(a[None, :] * mask, -1)`` as rax's ``segment_utils.segment_sum``.
    """
    valid = labels >= 0
    z = jnp.where(valid, labels, 0.0)
    x = jnp.where(valid, logits, 0.0)
    w = valid.astype(logits.dtype)
    losses = sigmoid_cross_entropy_with_logits(z, x) * w
    mask = (segments[..., :, None] == segments[..., None, :]).astype(logits.dtype)

    def segment_sum(a: jax.Array) -> jax.Array:
        return jnp.sum(a[..., None, :] * mask, axis=-1)

    count = segment_sum(w)  # per item: the number of valid items in its list
    if reduction == "auto":
        longest = jnp.max(jnp.where(segments >= 0, segment_sum(jnp.ones_like(w)), 0.0))
        return jnp.sum(losses) / (num_lists * longest)
    # list_mean: each list's mean, each list counted once (an item adds 1/count of its list).
    per_list = segment_sum(losses) / jnp.where(count > 0, count, 1.0)
    share = jnp.where(valid, 1.0 / jnp.where(count > 0, count, 1.0), 0.0)
    return jnp.sum(per_list * share) / jnp.sum(share)


def _case(
    name: str, num_items: int, num_lists: int, repeats: int, rows_layout: bool, seed: int = 0
) -> list[dict[str, Any]]:
    data = make_lists(num_items, num_lists, seed)
    longest = int(data["lengths"].max())
    z, x, ids = (jnp.asarray(data[k]) for k in ("labels", "logits", "ids"))
    z_dense = ranking.pad(z, ids, num_lists)
    x_dense = ranking.pad(x, ids, num_lists, fill_value=0)
    if rows_layout:
        rows = to_rows(data, max(ROW, longest))
        zr, xr, sr = (jnp.asarray(rows[k]) for k in ("labels", "logits", "segments"))
        quadratic = f"rax-style ({zr.shape[0]} rows x {zr.shape[1]})"
    else:
        zr, xr, sr = z, x, ids
        quadratic = f"rax-style (1 row x {num_items})"
    out = []
    for reduction in ("auto", "list_mean"):
        # Every array is an argument (never a closed-over constant XLA could fold).
        def packed(
            x: jax.Array, z: jax.Array, ids: jax.Array, reduction: str = reduction
        ) -> jax.Array:
            return ranking.sigmoid_cross_entropy(
                z, x, segment_ids=ids, num_segments=num_lists, reduction=reduction
            )

        def dense(x: jax.Array, z: jax.Array, reduction: str = reduction) -> jax.Array:
            return ranking.sigmoid_cross_entropy(z, x, reduction=reduction)

        def quad(x: jax.Array, z: jax.Array, s: jax.Array, reduction: str = reduction) -> jax.Array:
            return rax_style_loss(z, x, s, num_lists, reduction)

        def packed_rows(
            x: jax.Array, z: jax.Array, s: jax.Array, reduction: str = reduction
        ) -> jax.Array:
            # Per-row sums, combined exactly as the global reduction needs.
            def stats(z: jax.Array, x: jax.Array, s: jax.Array) -> tuple[jax.Array, ...]:
                ids_row = jnp.where(s >= 0, s, num_lists)  # padding slots: dropped under jit
                loss = ranking.sigmoid_cross_entropy(
                    z, x, segment_ids=ids_row, num_segments=num_lists, reduction="none"
                )
                valid = (z >= 0).astype(x.dtype)
                return (
                    jax.ops.segment_sum(loss, ids_row, num_lists),
                    jax.ops.segment_sum(valid, ids_row, num_lists),
                    jax.ops.segment_sum(jnp.ones_like(valid), ids_row, num_lists),
                )

            sums, counts, lengths = (a.sum(0) for a in jax.vmap(stats)(z, x, s))
            if reduction == "auto":
                return sums.sum() / (num_lists * lengths.max())
            keep = counts > 0
            return jnp.sum(jnp.where(keep, sums / jnp.where(keep, counts, 1), 0)) / keep.sum()

        impls: dict[str, tuple[Any, tuple[jax.Array, ...]]] = {
            "packed (segment_sum)": (jax.jit(jax.value_and_grad(packed)), (x, z, ids)),
            f"dense ({num_lists} x {longest})": (
                jax.jit(jax.value_and_grad(dense)),
                (x_dense, z_dense),
            ),
            quadratic: (jax.jit(jax.value_and_grad(quad)), (xr, zr, sr)),
        }
        if rows_layout:
            impls[f"packed, vmap over the {zr.shape[0]} rows"] = (
                jax.jit(jax.value_and_grad(packed_rows)),
                (xr, zr, sr),
            )
        values = {k: float(f(*a)[0]) for k, (f, a) in impls.items()}
        ref = values["packed (segment_sum)"]
        for k, v in values.items():
            if not np.isclose(v, ref, rtol=1e-4):
                raise AssertionError(f"{name}/{reduction}: {k} gives {v}, packed gives {ref}")
        timed = interleaved({k: functools.partial(f, *a) for k, (f, a) in impls.items()}, repeats)
        medians = {k: v["median_ms"] for k, v in timed.items()}
        base = medians["packed (segment_sum)"]
        for k, (f, a) in impls.items():
            out.append(
                {
                    "benchmark": "ranking",
                    "case": name,
                    "reduction": reduction,
                    "impl": k,
                    "items": num_items,
                    "lists": num_lists,
                    "longest": longest,
                    "median_ms": medians[k],
                    "ratio": medians[k] / base,
                    "temp_mib": temp_mib(f, *a),
                    "repeats": repeats,
                }
            )
    return out


def run(repeats: int = 20) -> list[dict[str, Any]]:
    """All cases; one dict per (case, reduction, implementation)."""
    rows = _case("10^5 items, 10^3 lists", 100_000, 1_000, repeats, rows_layout=True)
    rows += _case("10^4 items, 10^2 lists", 10_000, 100, repeats, rows_layout=False, seed=1)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'case':<24} {'reduction':<10} {'implementation':<36} {'median ms':>10} "
        f"{'x packed':>9} {'temp MiB':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['case']:<24} {r['reduction']:<10} {r['impl']:<36} {r['median_ms']:>10.2f} "
            f"{r['ratio']:>9.2f} {r['temp_mib']:>9.1f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    n_repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    print(
        f"jax {jax.__version__}, {jax.devices()[0].device_kind}, median of {n_repeats} runs, "
        "value_and_grad w.r.t. logits, jitted"
    )
    print(format_table(run(n_repeats)))
