"""The scale losses' new arguments across two JAX processes equal one process with 8 devices.

As ``test_multiprocess.py`` (same launcher, ``tests/multihost.py``): two workers of 4 CPU
devices each and one reference process of 8 devices run :func:`compute` on the same seeded data
(the label-ids head with weights, ``where``, ``pos_weight`` and smoothing, classes and 2-D
layouts, reductions ``mean`` and ``none``; the SigLIP ring with ids), save values and
gradients, and the test compares them, and the reference with the unsharded calls.

Run as a script (``python tests/test_multiprocess_scale.py OUT_DIR``) it is one worker.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # the worker imports this checkout's sigmoid_xent.
    sys.path.insert(0, ROOT)

from multihost import launch_local  # noqa: E402 (tests/; imports no jax)

from sigmoid_xent import demo_multihost  # noqa: E402 (imports no jax)


def make_data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20240611)
    f32 = np.float32
    return {
        "h": rng.standard_normal((16, 6)).astype(f32),
        "w": (rng.standard_normal((40, 6)) / 3).astype(f32),
        "bias": rng.standard_normal(40).astype(f32),
        "ids": rng.integers(-1, 40, size=(16, 5)).astype(np.int32),
        "values": rng.uniform(size=(16, 5)).astype(f32),
        "row_w": rng.uniform(size=(16, 1)).astype(f32),
        "keep": rng.uniform(size=40) < 0.8,
        "pos_weight": rng.uniform(0.5, 2.0, size=40).astype(f32),
        "ct": rng.standard_normal(16).astype(f32),
        "img": rng.standard_normal((24, 8)).astype(f32),
        "txt": rng.standard_normal((40, 8)).astype(f32),
        "img_ids": rng.integers(-1, 6, size=24).astype(np.int32),
        "txt_ids": rng.integers(-1, 6, size=40).astype(np.int32),
        "t": np.asarray(0.7, f32),
        "b": np.asarray(-2.0, f32),
    }


HEAD_KEYS = ("h", "w", "bias", "ids", "values", "row_w", "keep", "pos_weight")
HEAD_GRADS = (0, 1, 2, 4, 5, 7)  # h, w, bias, values, row weights, pos_weight


def head(h, w, bias, ids, values, row_w, keep, pos_weight, reduction, axis_name=None):
    import sigmoid_xent as sx

    return sx.linear_sigmoid_cross_entropy(
        h, w, label_ids=ids, label_values=values, bias=bias, weights=row_w, where=keep,
        pos_weight=pos_weight, label_smoothing=0.1, reduction=reduction, chunk_size=(3, 2),
        axis_name=axis_name,
    )  # fmt: skip


def compute() -> dict[str, np.ndarray]:
    import jax
    import jax.numpy as jnp
    from jax.experimental import multihost_utils
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import sigmoid_xent as sx

    assert jax.device_count() == 8, jax.devices()
    data = make_data()
    out: dict[str, np.ndarray] = {}

    def put(mesh, keys, specs):
        return [
            jax.make_array_from_callback(
                data[k].shape, NamedSharding(mesh, s), lambda idx, k=k: data[k][idx]
            )
            for k, s in zip(keys, specs, strict=True)
        ]

    def save(name, value, grads, keys):
        out[f"{name}/value"] = multihost_utils.process_allgather(value, tiled=True)
        for k, g in zip(keys, grads, strict=True):
            out[f"{name}/grad_{k}"] = multihost_utils.process_allgather(g, tiled=True)

    layouts = {
        "classes": (Mesh(np.array(jax.devices()), ("m",)), P(), P("m"), "m"),
        "2d": (
            Mesh(np.array(jax.devices()).reshape(4, 2), ("d", "m")),
            P("d"),
            P("m"),
            ("d", "m"),
        ),
    }
    for layout, (mesh, rows, classes, axis_name) in layouts.items():
        ct = put(mesh, ("ct",), (P(),))[0]
        specs = (rows, classes, classes, rows, rows, rows, classes, classes)
        for reduction in ("mean", "none"):
            f = jax.jit(
                jax.shard_map(
                    lambda *a, r=reduction, n=axis_name: head(*a, reduction=r, axis_name=n),
                    mesh=mesh,
                    in_specs=specs,
                    out_specs=P() if reduction == "mean" else rows,
                )
            )

            def total(*a, f=f, r=reduction, ct=ct):
                value = f(*a)
                return (jnp.sum(value * ct) if r == "none" else value), value

            (value, per_row), grads = jax.jit(jax.value_and_grad(total, HEAD_GRADS, has_aux=True))(
                *put(mesh, HEAD_KEYS, specs)
            )
            name = f"head_{layout}_{reduction}"
            save(name, value, grads, [HEAD_KEYS[i] for i in HEAD_GRADS])
            if reduction == "none":  # the per-row losses themselves, and the signed sum's scale
                out[f"{name}/rows"] = multihost_utils.process_allgather(per_row, tiled=True)
    mesh = Mesh(np.array(jax.devices()), ("d",))
    ring = jax.jit(
        jax.shard_map(
            lambda i, x, ii, xi, t, b: sx.siglip_loss_ring(
                i, x, t, b, img_ids=ii, txt_ids=xi, axis_name="d", chunk_size=2
            ),
            mesh=mesh,
            in_specs=(P("d"),) * 4 + (P(), P()),
            out_specs=P(),
        )
    )
    keys = ("img", "txt", "img_ids", "txt_ids", "t", "b")
    value, grads = jax.jit(jax.value_and_grad(ring, (0, 1, 4, 5)))(
        *put(mesh, keys, (P("d"),) * 4 + (P(), P()))
    )
    save("siglip_ids", value, grads, ("img", "txt", "t", "b"))
    return out


def worker(out_dir: str) -> None:
    num_processes = int(os.environ[demo_multihost.ENV_NUM_PROCESSES])
    process_id = 0
    if num_processes > 1:
        process_id, _ = demo_multihost.initialize_from_env()
    results = compute()
    np.savez(os.path.join(out_dir, f"{num_processes}procs_{process_id}.npz"), **results)
    print(f"worker {process_id}/{num_processes}: {len(results)} arrays saved", flush=True)
    if num_processes > 1:
        import jax

        jax.distributed.shutdown()


def check_reference_values(ref: dict[str, np.ndarray]) -> None:
    """The one-process values against the unsharded calls in this process."""
    import jax.numpy as jnp

    import sigmoid_xent as sx

    d = make_data()
    args = [jnp.asarray(d[k]) for k in HEAD_KEYS]
    for layout in ("classes", "2d"):
        want = head(*args, reduction="mean")
        np.testing.assert_allclose(ref[f"head_{layout}_mean/value"], want, rtol=2e-6)
        np.testing.assert_allclose(
            ref[f"head_{layout}_none/rows"], head(*args, reduction="none"), rtol=2e-6, atol=1e-7
        )
        rows = head(*args, reduction="none") * d["ct"]  # a signed sum: compare to its scale
        got = ref[f"head_{layout}_none/value"]
        np.testing.assert_allclose(got, jnp.sum(rows), atol=1e-6 * float(jnp.sum(jnp.abs(rows))))
    want = sx.siglip_loss(
        d["img"], d["txt"], d["t"], d["b"], img_ids=d["img_ids"], txt_ids=d["txt_ids"]
    )
    np.testing.assert_allclose(ref["siglip_ids/value"], want, rtol=2e-6)


def test_two_processes_equal_one_process_with_all_devices(tmp_path):
    argv = [os.path.abspath(__file__), str(tmp_path)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    with ThreadPoolExecutor(2) as pool:
        two = pool.submit(launch_local, argv, 2, 4, 150.0, 3, env)
        one = pool.submit(launch_local, argv, 1, 8, 150.0, 0, env)
        outputs = two.result() + one.result()  # each raises WorkerError with all outputs.
    ref = dict(np.load(tmp_path / "1procs_0.npz"))
    assert len(ref) == 4 * (1 + len(HEAD_GRADS)) + 2 + 5, sorted(ref)
    ct = make_data()["ct"]
    for pid in (0, 1):
        got = dict(np.load(tmp_path / f"2procs_{pid}.npz"))
        assert sorted(got) == sorted(ref)
        for key, want in ref.items():
            assert got[key].shape == want.shape, key
            scale = float(np.max(np.abs(want))) if want.size else 0.0
            if key.endswith("_none/value"):  # a signed sum: compare to the sum of its terms
                scale = float(np.sum(np.abs(ref[key.replace("value", "rows")] * ct)))
            np.testing.assert_allclose(
                got[key], want, rtol=1e-5, atol=1e-6 * scale, err_msg=f"{key}, process {pid}"
            )
    assert all("arrays saved" in o for o in outputs), outputs
    check_reference_values(ref)


if __name__ == "__main__":
    worker(sys.argv[1])
