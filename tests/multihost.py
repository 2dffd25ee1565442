"""The multi-process test's launcher: local JAX workers, bounded waits, a retry on a taken port.

Built on :mod:`sigmoid_xent.demo_multihost`'s ``start_workers``/``stop_workers`` (the demo starts
its workers the same way, without the retries and the early stop this harness adds).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from sigmoid_xent.demo_multihost import free_port, start_workers, stop_workers

# What a coordinator prints when its port was taken between probing and binding.
PORT_TAKEN = ("Failed to start RPC server", "Address already in use")


class WorkerError(RuntimeError):
    """A worker process failed or hung; the message holds every worker's output."""


def launch_local(
    argv: Sequence[str],
    num_processes: int = 2,
    devices_per_process: int = 4,
    timeout: float = 120.0,
    retries: int = 3,
    env: dict[str, str] | None = None,
) -> list[str]:
    """Runs ``python *argv`` as ``num_processes`` workers of one JAX job on this machine.

    Every wait is bounded: if a worker fails, the others get 5 seconds and are then killed; if
    the job runs past ``timeout`` seconds, all are killed. If the coordinator could not bind its
    port (taken between probing and binding), the job is restarted on a new port, up to
    ``retries`` times. No worker outlives the call.

    Returns:
      Each worker's combined stdout and stderr, in process order.

    Raises:
      WorkerError: a worker exited with a non-zero status or the job hung; the message holds
        every worker's output.
    """
    for attempt in range(retries + 1):
        workers = start_workers(argv, num_processes, devices_per_process, free_port(), env)
        procs = [proc for proc, _ in workers]
        try:
            deadline = time.monotonic() + timeout
            failed_at = None
            while None in (codes := [p.poll() for p in procs]):  # poll every worker
                now = time.monotonic()
                if failed_at is None and any(c not in (None, 0) for c in codes):
                    failed_at = now  # the partners of a dead worker hang: give them 5 s.
                if now > deadline or (failed_at is not None and now > failed_at + 5):
                    break
                time.sleep(0.05)
            hung = [i for i, p in enumerate(procs) if p.poll() is None]
        finally:
            outputs = stop_workers(workers)
        codes = [p.returncode for p in procs]
        if not hung and all(c == 0 for c in codes):
            return outputs
        if attempt < retries and any(s in outputs[0] for s in PORT_TAKEN):
            continue
        what = f"hung (killed after {timeout:.0f} s or 5 s after a partner failed)"
        report = "\n".join(
            f"--- worker {i}: {what if i in hung else f'exit status {codes[i]}'} ---\n{out}"
            for i, out in enumerate(outputs)
        )
        raise WorkerError(f"launch_local: {' '.join(argv)} failed.\n{report}")
    raise AssertionError("unreachable")
