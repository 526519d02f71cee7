"""One process at a time per run folder or output: an advisory lock file beside it (`.NAME.lock`).

The lock is `fcntl.flock` on that file rather than a pid file alone, because the kernel drops a flock
when its holder dies, kill -9 included: a lock left by a killed process is free by construction and
simply taken over. The pid and start time written into the file serve only the message a second
process gets. POSIX only; on NFS flock may not exclude processes on other machines.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import inspect
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from diffmem.errors import DiffmemError, as_diffmem_error
from diffmem.utils.atomic import clean_leftovers
from diffmem.utils.outdir import file_on_the_way

__all__ = ["lock_path", "locked", "holds_lock", "holder_alive", "is_main_process"]

F = TypeVar("F", bound=Callable[..., Any])


def lock_path(target: str | Path) -> Path:
    """The lock file of `target`: `.NAME.lock` in the folder holding it."""
    target = Path(os.path.abspath(target))
    return target.parent / f".{target.name}.lock"


def holder_alive(target: str | Path) -> bool:
    """Whether the process named in `target`'s lock file is alive: a display's guess (it takes no lock, so it
    never blocks the holder; a stale file of a killed holder reads as not alive)."""
    try:
        pid = int(json.loads(lock_path(target).read_text() or "{}")["pid"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def is_main_process() -> bool:
    """True unless this is a non-zero rank of torchrun / accelerate (only rank 0 takes locks)."""
    return int(os.environ.get("RANK", "0")) == 0


def _holder(fd: int) -> str:
    """'process N (started T)' from the lock file's contents, as far as they can be read."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["time"])))
        return f"process {int(info['pid'])} (started {started})"
    except (ValueError, KeyError, TypeError, OSError):
        return "another process"


def _acquire(path: Path, target: Path) -> int:
    """Open and flock `path` without waiting; refuse with the holder's pid when it is taken."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise as_diffmem_error(err, path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _holder(fd)
            os.close(fd)
            raise DiffmemError(f"{target} is in use by {who}; wait for it to finish or stop it, "
                               "or choose another output") from None
        # The previous holder unlinks the file before it unlocks; if we opened that old file, retry.
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            return fd
        os.close(fd)


@contextlib.contextmanager
def locked(target: str | Path, enabled: bool = True) -> Iterator[None]:
    """Hold the lock of `target` (a run folder or an output file) for the duration of the block.

    A second process gets a DiffmemError "TARGET is in use by process N (started ...)". `enabled=False`
    (e.g. a non-zero rank of a distributed job) makes this a no-op. Once the lock is held, the temporaries a
    killed writer of `target` left beside it are removed (`diffmem.utils.atomic.clean_leftovers`).
    """
    if not enabled:
        yield
        return
    target = Path(target)
    path = lock_path(target)
    blocked = file_on_the_way(path)
    if blocked is not None:  # e.g. `--out F/run` with F a file: mkdir would raise FileExistsError
        raise DiffmemError(f"cannot use {target}: {blocked} is a file, not a folder; choose another output")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise as_diffmem_error(err, path.parent) from None
    fd = _acquire(path, target)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "time": time.time()}).encode(), 0)
        clean_leftovers(target)  # the temporaries a killed writer of `target` left (no live writer has it now)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # while still locked: a waiting opener then sees a new inode and retries
        os.close(fd)


def holds_lock(argument: str) -> Callable[[F], F]:
    """Decorator: the decorated function holds the lock of the output its parameter `argument` names for
    the whole call (rank 0 alone, as `locked(..., enabled=is_main_process())`), so a second call on the
    same output, in any process, is refused before it does anything. E.g. `@holds_lock("out")` above
    `def run_frontier(fc, out, ...)`."""

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)
        if argument not in signature.parameters:
            raise TypeError(f"{fn.__qualname__} has no parameter {argument!r} to lock")

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            target = bound.arguments[argument]
            with locked(target, enabled=target is not None and is_main_process()):
                return fn(*args, **kwargs)

        return call  # type: ignore[return-value]

    return decorate
