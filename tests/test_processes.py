"""diffmem.utils.processes.run_spawned: the one process pool of the sweep, the frontier and the demo."""

from __future__ import annotations

import os

import pytest

from diffmem.errors import DiffmemError
from diffmem.utils.processes import run_spawned, worker_device


def _square(x: int, fail_on: int | None = None) -> tuple[int, int, int, str]:
    """x squared, the worker's pid, torch thread count and device (module level: it is pickled)."""
    import torch

    if x == fail_on:
        raise DiffmemError(f"task {x} failed")
    return x * x, os.getpid(), torch.get_num_threads(), worker_device("cpu")


def test_tasks_run_in_spawned_workers_with_their_threads_and_devices() -> None:
    seen = []
    tasks = [(1,), (2,), (3,), (4,)]
    results = run_spawned(_square, tasks, jobs=2, threads_per_job=2, devices=["dev:0", "dev:1"],
                          on_done=lambda task, result: seen.append((task, result)))
    assert [r[0] for r in results] == [1, 4, 9, 16]  # in task order
    assert sorted(seen, key=lambda s: s[0]) == list(zip(tasks, results))  # each once, as it finished
    assert os.getpid() not in {r[1] for r in results}  # run in other processes
    assert 1 <= len({r[1] for r in results}) <= 2  # at most two worker processes
    assert {r[2] for r in results} == {2}  # the torch threads of each worker
    assert {r[3] for r in results} <= {"dev:0", "dev:1"}
    assert worker_device("cpu") == "cpu"  # the main process has no device of its own
    assert run_spawned(_square, [], jobs=2, threads_per_job=1) == []


def test_by_default_the_workers_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without threads_per_job, each of the workers actually started gets cores // workers threads."""
    import diffmem.utils.processes as processes

    monkeypatch.setattr(processes, "cpu_cores", lambda: 7)
    assert {r[2] for r in run_spawned(_square, [(1,), (2,)], jobs=5)} == {3}  # 2 workers, not 5
    assert {r[2] for r in run_spawned(_square, [(1,)], jobs=1)} == {7}


def test_the_first_failure_is_raised() -> None:
    seen = []
    with pytest.raises(DiffmemError, match="task 2 failed"):
        run_spawned(_square, [(1, 2), (2, 2), (3, 2)], jobs=2, threads_per_job=1,
                    on_done=lambda task, result: seen.append(task[0]))
    assert 2 not in seen


def _touch(folder: str, x: int) -> int:
    """Mark task x as run; task 0 fails."""
    open(os.path.join(folder, str(x)), "w").close()
    if x == 0:
        raise DiffmemError("task 0 failed")
    return x


def test_a_failure_starts_no_further_task(tmp_path) -> None:
    """One worker: task 0 fails, and none of the 11 others ever starts, however fast the worker is."""
    with pytest.raises(DiffmemError, match="task 0 failed"):
        run_spawned(_touch, [(str(tmp_path), x) for x in range(12)], jobs=1, threads_per_job=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0"]


_PARENT_STATE = {"set_in_parent": False}


def _parent_state() -> bool:
    return _PARENT_STATE["set_in_parent"]


def test_workers_are_spawned_not_forked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A forked worker would inherit the parent's memory (CUDA contexts, open locks, torch threads); a
    spawned one starts fresh and imports this module again, so it sees the state as the module defines it."""
    monkeypatch.setitem(_PARENT_STATE, "set_in_parent", True)
    assert run_spawned(_parent_state, [()], jobs=1, threads_per_job=1) == [False]
