"""Multi-process demo (`make demo-multihost`): a model-parallel multi-label head on two processes.

JAX's multi-controller runtime is the distributed engine: each process calls
``jax.distributed.initialize``, one mesh spans every process's devices, and
:func:`sigmoid_xent.linear_sigmoid_cross_entropy` runs inside ``jax.shard_map`` with the classes
split over the mesh (``axis_name="model"``). Here the launcher starts two worker processes on this
machine, four virtual CPU devices each (gloo collectives), and each device holds ``1/8`` of the
head's ``[C, H]`` weights, their gradient and optimizer state: no device ever holds the whole
head. The features ``h`` are replicated, so their gradient is summed over the class axis.

The demo prints the per-device temp memory of one training step beside the same step
unsharded on one device, then each epoch's loss. ``python -m sigmoid_xent.demo_multihost
--help`` for the options. On a real cluster the worker code is unchanged: see "Scaling out" in
the README (the coordinator address, the process ids and the mesh are what change).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import IO, Any

# Environment variables by which the launcher tells each worker who it is.
ENV_COORDINATOR = "SIGMOID_XENT_COORDINATOR"
ENV_NUM_PROCESSES = "SIGMOID_XENT_NUM_PROCESSES"
ENV_PROCESS_ID = "SIGMOID_XENT_PROCESS_ID"

Workers = list[tuple[subprocess.Popen, IO[str]]]


def free_port() -> int:
    """A TCP port that was free a moment ago (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_workers(
    argv: Sequence[str],
    num_processes: int,
    devices_per_process: int,
    port: int,
    env: dict[str, str] | None = None,
) -> Workers:
    """Starts ``python *argv`` as the ``num_processes`` workers of one JAX job on this machine.

    Each gets ``devices_per_process`` virtual CPU devices and, in its environment, the
    coordinator ``127.0.0.1:port``, the number of processes and its id (read by
    :func:`initialize_from_env`); its output goes to a temporary file. Returns each worker's
    process and output file, for :func:`stop_workers`.
    """
    base = dict(os.environ if env is None else env)
    base["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices_per_process}"
    base.setdefault("JAX_PLATFORMS", "cpu")
    base["PYTHONHASHSEED"] = "0"
    workers: Workers = []
    try:
        for i in range(num_processes):
            log = tempfile.TemporaryFile(mode="w+")
            worker_env = dict(base)
            worker_env[ENV_COORDINATOR] = f"127.0.0.1:{port}"
            worker_env[ENV_NUM_PROCESSES] = str(num_processes)
            worker_env[ENV_PROCESS_ID] = str(i)
            # Each worker leads its own process group, so that stop_workers ends all it started.
            proc = subprocess.Popen(
                [sys.executable, *argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=worker_env,
                start_new_session=True,
            )
            workers.append((proc, log))
    except BaseException:
        stop_workers(workers)
        raise
    return workers


def stop_workers(workers: Workers) -> list[str]:
    """Kills every worker still running (and what it started); returns each one's output."""
    outputs = []
    for proc, log in workers:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        log.seek(0)
        outputs.append(log.read())
        log.close()
    return outputs


def run_workers(
    argv: Sequence[str], num_processes: int, devices_per_process: int, timeout: float
) -> list[str]:
    """Runs the workers of one job (:func:`start_workers`) to the end; returns their outputs.

    Every worker still running after ``timeout`` seconds is killed; a worker whose partner died
    fails by itself (the bounded waits of :func:`initialize_from_env`). Raises ``RuntimeError``
    with every worker's output if any failed.
    """
    workers = start_workers(argv, num_processes, devices_per_process, free_port())
    deadline = time.monotonic() + timeout
    try:
        for proc, _ in workers:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        outputs = stop_workers(workers)
    codes = [proc.returncode for proc, _ in workers]
    if any(code != 0 for code in codes):
        report = "\n".join(
            f"--- worker {i}: exit status {code} ---\n{out}"
            for i, (code, out) in enumerate(zip(codes, outputs, strict=True))
        )
        raise RuntimeError(f"{' '.join(argv)} failed (-9: killed after {timeout:.0f} s).\n{report}")
    return outputs


def initialize_from_env(timeout: int = 60) -> tuple[int, int]:
    """``jax.distributed.initialize`` from the launcher's environment, with bounded waits.

    Gloo CPU collectives (JAX 0.10's default, set explicitly), and initialization, heartbeat
    and shutdown timeouts of at most ``timeout`` seconds, so that a worker whose partner died
    fails instead of hanging. Returns ``(process_id, num_processes)``.
    """
    import jax

    process_id = int(os.environ[ENV_PROCESS_ID])
    num_processes = int(os.environ[ENV_NUM_PROCESSES])
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        os.environ[ENV_COORDINATOR],
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=timeout,
        heartbeat_timeout_seconds=min(timeout, 20),
        shutdown_timeout_seconds=min(timeout, 20),
    )
    return process_id, num_processes


# --------------------------------------------------------------------------------------------
# The model-parallel head.


def make_problem(n: int, classes: int, hidden: int, seed: int = 0) -> dict[str, Any]:
    """Fixed features, a hidden true head and its sparse multi-labels (numpy, seeded)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    h = rng.standard_normal((n, hidden)).astype(np.float32)
    true_w = (rng.standard_normal((classes, hidden)) * 2 / np.sqrt(hidden)).astype(np.float32)
    true_b = np.full(classes, -4.0, np.float32)
    probs = 1 / (1 + np.exp(-(h @ true_w.T + true_b[None, :])))
    labels = (rng.random((n, classes)) < probs).astype(np.float32)
    return {"h": h, "labels": labels}


def head_step(mesh: Any, learning_rate: float) -> Any:
    """One SGD step of the class-sharded head: ``(w, bias, h, labels) -> (w, bias, loss)``."""
    import jax
    from jax.sharding import PartitionSpec as P

    import sigmoid_xent as sx

    def local(w, bias, h, labels):
        loss, (d_w, d_b) = jax.value_and_grad(
            lambda w, b: sx.linear_sigmoid_cross_entropy(h, w, labels, bias=b, axis_name="model"),
            (0, 1),
        )(w, bias)
        return w - learning_rate * d_w, bias - learning_rate * d_b, loss

    return jax.jit(
        jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(P("model"), P("model"), P(), P(None, "model")),
            out_specs=(P("model"), P("model"), P()),
        ),
        donate_argnums=(0, 1),
    )


def unsharded_step(learning_rate: float) -> Any:
    import jax

    import sigmoid_xent as sx

    def step(w, bias, h, labels):
        loss, (d_w, d_b) = jax.value_and_grad(
            lambda w, b: sx.linear_sigmoid_cross_entropy(h, w, labels, bias=b), (0, 1)
        )(w, bias)
        return w - learning_rate * d_w, bias - learning_rate * d_b, loss

    return jax.jit(step, donate_argnums=(0, 1))


def worker(args: argparse.Namespace) -> None:
    process_id, num_processes = initialize_from_env()
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = Mesh(np.array(jax.devices()), ("model",))
    prob = make_problem(args.batch, args.classes, args.hidden)

    def put(host: np.ndarray, spec: P) -> jax.Array:
        return jax.make_array_from_callback(
            host.shape, NamedSharding(mesh, spec), lambda idx: host[idx]
        )

    zeros_w = np.zeros((args.classes, args.hidden), np.float32)
    w, bias = put(zeros_w, P("model")), put(np.zeros(args.classes, np.float32), P("model"))
    h, labels = put(prob["h"], P()), put(prob["labels"], P(None, "model"))
    # The loss is a mean over classes too: scale the step back to a per-class rate.
    step = head_step(mesh, args.learning_rate * args.classes)
    compiled = step.lower(w, bias, h, labels).compile()
    if process_id == 0:
        temp = compiled.memory_analysis().temp_size_in_bytes
        local_w = w.addressable_shards[0].data.shape
        print(
            f"MEMORY sharded_temp_bytes={temp} w_shard={local_w} devices={jax.device_count()} "
            f"processes={num_processes}",
            flush=True,
        )
    for epoch in range(args.epochs):
        w, bias, loss = compiled(w, bias, h, labels)
        if process_id == 0:
            print(f"epoch {epoch:2d}  loss {float(loss):.5f}", flush=True)
    jax.distributed.shutdown()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--classes", type=int, default=65536)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=2.0, help="per class")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--devices-per-process", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return

    import jax
    import jax.numpy as jnp

    f32 = jnp.float32
    shapes = [
        jax.ShapeDtypeStruct(s, f32)
        for s in [
            (args.classes, args.hidden),
            (args.classes,),
            (args.batch, args.hidden),
            (args.batch, args.classes),
        ]
    ]
    one_device = unsharded_step(args.learning_rate).lower(*shapes).compile()
    unsharded = one_device.memory_analysis().temp_size_in_bytes
    devices = args.processes * args.devices_per_process
    print(
        f"model-parallel head: {args.batch} x {args.classes} classes x {args.hidden} hidden, "
        f"{args.processes} processes x {args.devices_per_process} CPU devices",
        flush=True,
    )
    t0 = time.perf_counter()
    flags = [
        f"--{k}={v}"
        for k, v in (
            ("batch", args.batch),
            ("classes", args.classes),
            ("hidden", args.hidden),
            ("epochs", args.epochs),
            ("learning-rate", args.learning_rate),
        )
    ]
    outputs = run_workers(
        ["-m", "sigmoid_xent.demo_multihost", "--worker", *flags],
        args.processes,
        args.devices_per_process,
        args.timeout,
    )
    lines = outputs[0].splitlines()
    memory = next(ln for ln in lines if ln.startswith("MEMORY"))
    fields = dict(kv.split("=", 1) for kv in memory.split()[1:] if "=" in kv)
    sharded = int(fields["sharded_temp_bytes"])
    mib = 2**20
    print(
        f"temp memory of one training step: {sharded / mib:.1f} MiB per device "
        f"(w shard {args.classes // devices} x {args.hidden} on each of {devices} devices) vs "
        f"{unsharded / mib:.1f} MiB unsharded on one device ({sharded / unsharded:.3f}x)"
    )
    for ln in lines:
        if ln.startswith("epoch"):
            print(ln)
    print(f"two processes, start to finish: {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
