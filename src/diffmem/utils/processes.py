"""Run independent tasks in spawned worker processes (the sweep's points, the frontier's runs, the demo's two runs).

Each worker gets its share of the CPU threads (torch's intra-op thread count) and, given `devices`, a
device of its own (`worker_device`). Spawned, not forked: a forked torch process can deadlock.
"""

from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Sequence

__all__ = ["cpu_cores", "run_spawned", "worker_device"]

_WORKER_DEVICE: str | None = None


def _init_worker(threads: int, devices: Any) -> None:
    """Per worker process: its torch thread count, and (with `devices`) the next device of the queue."""
    import torch

    global _WORKER_DEVICE
    torch.set_num_threads(threads)
    if devices is not None:
        _WORKER_DEVICE = devices.get()


def cpu_cores() -> int:
    """CPU cores this process may run on (its affinity mask on Linux, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_device(default: str) -> str:
    """The device `run_spawned` gave this worker process, else `default` (also in the main process)."""
    return _WORKER_DEVICE or default


def run_spawned(fn: Callable[..., Any], tasks: Sequence[tuple], *, jobs: int, threads_per_job: int | None = None,
                devices: Sequence[str] | None = None,
                on_done: Callable[[tuple, Any], None] | None = None) -> list[Any]:
    """`fn(*task)` for every task in `min(jobs, len(tasks))` spawned processes; the results in task order.

    `fn` and the tasks must be picklable (`fn` a module-level function). Each worker runs torch on
    `threads_per_job` threads (default: this process's CPU cores shared among the workers); with
    `devices` (e.g. one GPU per worker) each worker takes the next one, see `worker_device`.
    `on_done(task, result)` is called in this process as each task finishes, in the order they finish.
    A task starts only when a worker is free; after the first task that raises, no further task
    starts, and its exception is raised here once the running ones finish.
    """
    import multiprocessing

    if not tasks:
        return []
    ctx = multiprocessing.get_context("spawn")
    workers = max(1, min(jobs, len(tasks)))
    threads = max(1, cpu_cores() // workers if threads_per_job is None else threads_per_job)
    queue = None
    if devices is not None:
        queue = ctx.Queue()
        for k in range(workers):
            queue.put(devices[k % len(devices)])
    results: list[Any] = [None] * len(tasks)
    # Tasks are handed out one at a time as workers free up, never queued ahead: after a failure no
    # further task starts, whatever the timing (a pre-filled executor queue would let a fast worker
    # run a few more before the failure is seen here).
    upcoming = iter(enumerate(tasks))
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(threads, queue)) as pool:
        running: dict[Any, int] = {}

        def start_next() -> None:
            nxt = next(upcoming, None)
            if nxt is not None:
                running[pool.submit(fn, *nxt[1])] = nxt[0]

        for _ in range(workers):
            start_next()
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                i = running.pop(fut)
                err = fut.exception()
                if err is not None:
                    raise err  # leaving the pool waits for the tasks still running
                results[i] = fut.result()
                if on_done is not None:
                    on_done(tasks[i], results[i])
                start_next()
    return results
