"""Run independent tasks in spawned worker processes (the sweep's points, the frontier's runs, the demo's two runs).

Each worker gets its share of the CPU threads (torch's intra-op thread count) and, given `devices`, a
device of its own (`worker_device`). Spawned, not forked: a forked torch process can deadlock.
"""

from __future__ import annotations

from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import Any, Callable, Sequence

__all__ = ["run_spawned", "worker_device"]

_WORKER_DEVICE: str | None = None


def _init_worker(threads: int, devices: Any) -> None:
    """Per worker process: its torch thread count, and (with `devices`) the next device of the queue."""
    import torch

    global _WORKER_DEVICE
    torch.set_num_threads(threads)
    if devices is not None:
        _WORKER_DEVICE = devices.get()


def worker_device(default: str) -> str:
    """The device `run_spawned` gave this worker process, else `default` (also in the main process)."""
    return _WORKER_DEVICE or default


def run_spawned(fn: Callable[..., Any], tasks: Sequence[tuple], *, jobs: int, threads_per_job: int,
                devices: Sequence[str] | None = None,
                on_done: Callable[[tuple, Any], None] | None = None) -> list[Any]:
    """`fn(*task)` for every task in `min(jobs, len(tasks))` spawned processes; the results in task order.

    `fn` and the tasks must be picklable (`fn` a module-level function). Each worker runs torch on
    `threads_per_job` threads; with `devices` (e.g. one GPU per worker) each worker takes the next one,
    see `worker_device`. `on_done(task, result)` is called in this process as each task finishes, in
    the order they finish. The first task that raises cancels the tasks not yet started, and its
    exception is raised here once the running ones have finished.
    """
    import multiprocessing

    if not tasks:
        return []
    ctx = multiprocessing.get_context("spawn")
    workers = max(1, min(jobs, len(tasks)))
    queue = None
    if devices is not None:
        queue = ctx.Queue()
        for k in range(workers):
            queue.put(devices[k % len(devices)])
    results: list[Any] = [None] * len(tasks)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(max(1, threads_per_job), queue)) as pool:
        futures = {pool.submit(fn, *task): i for i, task in enumerate(tasks)}
        remaining = set(futures)
        while remaining:
            finished, remaining = wait(remaining, return_when=FIRST_EXCEPTION)
            for fut in finished:
                err = fut.exception()
                if err is not None:
                    for other in remaining:
                        other.cancel()
                    raise err
                i = futures[fut]
                results[i] = fut.result()
                if on_done is not None:
                    on_done(tasks[i], results[i])
    return results
