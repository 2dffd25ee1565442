"""Two JAX processes on this machine equal one process holding all 8 devices, value and grads.

The test starts two worker processes (``jax.distributed.initialize`` on 127.0.0.1 and a free
port, 4 virtual CPU devices each, gloo collectives, one mesh of all 8 devices) and, at the same
time, one reference process with 8 devices and no distributed runtime. All three run
:func:`compute` on the same seeded data: the SigLIP ring, ``reduce_loss_sharded``,
``reduce_ranking_loss_sharded`` and the sharded ``linear_sigmoid_cross_entropy`` (rows,
classes, 2-D), values and gradients, gathered to the host and saved. Every wait is bounded
(``launch_local`` of ``tests/multihost.py``): a worker that dies or hangs fails the test
with every worker's output, and no process outlives it.

Run as a script (``python tests/test_multiprocess.py OUT_DIR``) it is one worker.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # the worker imports this checkout's sigmoid_xent.
    sys.path.insert(0, ROOT)

from multihost import WorkerError, launch_local  # noqa: E402 (tests/; imports no jax)

from sigmoid_xent import demo_multihost  # noqa: E402 (imports no jax)

REDUCTIONS = ("mean", "sum_by_nonzero_weights", "sum_over_batch_size", "mean_with_sample_weight")
RANKING_REDUCTIONS = ("auto", "mean", "list_mean", "sum_by_nonzero_weights")


def make_data() -> dict[str, np.ndarray]:
    """Seeded explicitly (``hash()`` differs between processes; the rng does not)."""
    rng = np.random.default_rng(20240519)
    f32 = np.float32
    rank_labels = rng.integers(0, 2, size=(16, 6)).astype(f32)
    rank_labels[rng.random((16, 6)) < 0.2] = -1.0  # padding
    return {
        "img": rng.standard_normal((32, 8)).astype(f32),
        "txt": rng.standard_normal((32, 8)).astype(f32),
        "t": np.asarray(0.7, f32),
        "b": np.asarray(-2.0, f32),
        "losses": rng.uniform(0, 3, size=(16, 8)).astype(f32),
        "weights": rng.integers(0, 3, size=(16, 1)).astype(f32),
        "rank_labels": rank_labels,
        "rank_logits": (rng.standard_normal((16, 6)) * 2).astype(f32),
        "h": rng.standard_normal((16, 6)).astype(f32),
        "w": (rng.standard_normal((40, 6)) / 3).astype(f32),
        "bias": rng.standard_normal(40).astype(f32),
        "z": rng.uniform(size=(16, 40)).astype(f32),
    }


def compute() -> dict[str, np.ndarray]:
    """Values and gradients of every sharded function on a mesh of all devices (any process)."""
    import jax
    import jax.numpy as jnp
    from jax.experimental import multihost_utils
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import sigmoid_xent as sx
    from sigmoid_xent.sharding import reduce_ranking_loss_sharded

    assert jax.device_count() == 8, jax.devices()
    data = make_data()
    mesh_1d = Mesh(np.array(jax.devices()), ("d",))
    mesh_2d = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
    out: dict[str, np.ndarray] = {}

    def run(name, fn, mesh, specs, keys):
        args = [
            jax.make_array_from_callback(
                data[k].shape, NamedSharding(mesh, s), lambda idx, k=k: data[k][idx]
            )
            for k, s in zip(keys, specs, strict=True)
        ]
        f = jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=tuple(specs), out_specs=P()))
        # jacrev of a (vector of) losses: every reduction's gradient from one program.
        jac, value = jax.jit(jax.jacrev(lambda *a: (f(*a), f(*a)), range(len(keys)), has_aux=True))(
            *args
        )
        out[f"{name}/value"] = multihost_utils.process_allgather(value, tiled=True)
        for k, g in zip(keys, jac, strict=True):
            out[f"{name}/grad_{k}"] = multihost_utils.process_allgather(g, tiled=True)

    run(
        "siglip_ring",
        lambda i, x, t, b: sx.siglip_loss_ring(i, x, t, b, axis_name="d", chunk_size=3),
        mesh_1d,
        (P("d"), P("d"), P(), P()),
        ("img", "txt", "t", "b"),
    )
    run(
        "reduce_loss",
        lambda x, w: jnp.stack(
            [sx.reduce_loss_sharded(x, w, r, axis_name="d") for r in REDUCTIONS]
        ),
        mesh_1d,
        (P("d"), P("d")),
        ("losses", "weights"),
    )
    run(
        "reduce_loss_2d",
        lambda x, w: sx.reduce_loss_sharded(
            x, w, "sum_by_nonzero_weights", axis_name=("data", "model")
        ),
        mesh_2d,
        (P("data", "model"), P("data")),
        ("losses", "weights"),
    )

    def ranking(labels, logits):
        losses = sx.sigmoid_cross_entropy_with_logits(jnp.maximum(labels, 0), logits)
        return jnp.stack(
            [
                reduce_ranking_loss_sharded(losses, labels, axis_name="d", reduction=r)
                for r in RANKING_REDUCTIONS
            ]
        )

    run("ranking", ranking, mesh_1d, (P("d"), P("d")), ("rank_labels", "rank_logits"))
    for name, mesh, specs, axis_name in (
        ("linear_rows", mesh_1d, (P("d"), P(), P("d"), P()), "d"),
        ("linear_classes", mesh_1d, (P(), P("d"), P(None, "d"), P("d")), "d"),
        (
            "linear_2d",
            mesh_2d,
            (P("data"), P("model"), P("data", "model"), P("model")),
            ("data", "model"),
        ),
    ):
        run(
            name,
            lambda h, w, z, b, a=axis_name: sx.linear_sigmoid_cross_entropy(
                h, w, z, bias=b, chunk_size=(3, 2), axis_name=a
            ),
            mesh,
            specs,
            ("h", "w", "z", "bias"),
        )
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
    """The one-process values against the unsharded functions in this (one-device) process."""
    import jax.numpy as jnp

    import sigmoid_xent as sx
    from sigmoid_xent import ranking

    d = make_data()
    np.testing.assert_allclose(
        ref["siglip_ring/value"], sx.siglip_loss(d["img"], d["txt"], d["t"], d["b"]), rtol=2e-6
    )
    want = [sx.reduce_loss(d["losses"], d["weights"], r) for r in REDUCTIONS]
    np.testing.assert_allclose(ref["reduce_loss/value"], want, rtol=2e-6)
    ranked = [
        ranking.sigmoid_cross_entropy(d["rank_labels"], d["rank_logits"], reduction=r)
        for r in RANKING_REDUCTIONS
    ]
    np.testing.assert_allclose(ref["ranking/value"], ranked, rtol=2e-6)
    linear = sx.linear_sigmoid_cross_entropy(d["h"], d["w"], d["z"], bias=d["bias"])
    for layout in ("rows", "classes", "2d"):
        np.testing.assert_allclose(ref[f"linear_{layout}/value"], linear, rtol=2e-6)
    assert float(jnp.abs(linear)) > 0


def test_two_processes_equal_one_process_with_all_devices(tmp_path):
    argv = [os.path.abspath(__file__), str(tmp_path)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    t0 = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        two = pool.submit(launch_local, argv, 2, 4, 150.0, 3, env)
        one = pool.submit(launch_local, argv, 1, 8, 150.0, 0, env)
        outputs = two.result() + one.result()  # each raises WorkerError with all outputs.
    elapsed = time.monotonic() - t0
    ref = dict(np.load(tmp_path / "1procs_0.npz"))
    assert len(ref) == 5 + 3 + 3 + 3 + 3 * 5, sorted(ref)  # every value and gradient came back.
    for pid in (0, 1):
        got = dict(np.load(tmp_path / f"2procs_{pid}.npz"))
        assert sorted(got) == sorted(ref)
        for key, want in ref.items():
            assert got[key].shape == want.shape, key
            scale = float(np.max(np.abs(want))) if want.size else 0.0
            np.testing.assert_allclose(
                got[key], want, rtol=1e-5, atol=1e-6 * scale, err_msg=f"{key}, process {pid}"
            )
    assert all("arrays saved" in o for o in outputs), outputs
    check_reference_values(ref)
    print(f"multi-process test: {elapsed:.1f} s for the two workers and the reference")


# The launcher's failure handling, with stand-in workers that do not import jax.
FAKE_WORKER = """
import os, sys, time
pid = os.environ["SIGMOID_XENT_PROCESS_ID"]
out = sys.argv[1]
open(os.path.join(out, "pid" + pid + "_" + str(os.getpid())), "w").close()
mode = sys.argv[2]
if mode == "die" and pid == "1":
    print("worker 1 gives up"); sys.exit(3)
if mode == "port" and pid == "0" and not os.path.exists(os.path.join(out, "tried")):
    open(os.path.join(out, "tried"), "w").close()
    print("Failed to start RPC server"); sys.exit(1)
if mode in ("die", "hang"):
    time.sleep(600)  # a partner waiting forever
print("done", pid)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie that is no child of ours has been reaped by now; ours are waited for.
    return True


def _pids(path) -> list[int]:
    return [int(p.name.split("_")[1]) for p in path.iterdir() if p.name.startswith("pid")]


def test_launcher_fails_with_output_and_leaves_no_process(tmp_path):
    import pytest

    script = tmp_path / "fake.py"
    script.write_text(FAKE_WORKER)
    # Worker 1 dies; worker 0 would wait forever and is killed (5 s after), not waited for.
    with pytest.raises(
        WorkerError,
        match=r"(?s)worker 0: hung.*worker 1: exit status 3 ---\nworker 1 gives up",
    ):
        launch_local([str(script), str(tmp_path), "die"], timeout=120)
    with pytest.raises(WorkerError, match="hung"):
        launch_local([str(script), str(tmp_path), "hang"], timeout=2)
    pids = _pids(tmp_path)
    assert len(pids) == 4 and not any(_alive(p) for p in pids), pids


def test_launcher_retries_when_the_port_was_taken(tmp_path):
    script = tmp_path / "fake.py"
    script.write_text(FAKE_WORKER)
    outputs = launch_local([str(script), str(tmp_path), "port"], timeout=60)
    assert [o.strip() for o in outputs] == ["done 0", "done 1"]
    assert len(_pids(tmp_path)) == 4  # two attempts of two workers


if __name__ == "__main__":
    worker(sys.argv[1])
