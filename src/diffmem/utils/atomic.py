"""Write a file or a folder whole or not at all: a temporary beside it, then renames.

A reader (or a run resumed after a kill) sees either the old file or the new one, never half of one.
Folders (`atomic_dir`) are written into a temporary folder and swapped in with two renames.
Permission, read-only, disk-full and bad-path errors become one-line DiffmemErrors naming the file
(`diffmem.errors.as_diffmem_error`); other OSErrors keep their traceback. A kill leaves the temporary
behind under a name of ours (`.NAME.XXXXXXXX.tmp...`); `clean_leftovers`, run by the next writer of the
same output while it holds the output's lock (`diffmem.lock.locked`), removes exactly those names.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from diffmem.errors import as_diffmem_error

__all__ = ["atomic_path", "atomic_dir", "save_atomic", "write_text_atomic", "write_json_atomic", "clean_leftovers"]

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: files written through a temporary get the usual mode, not mkstemp's 0600


@contextlib.contextmanager
def atomic_path(path: str | Path, *, fixed: bool = False, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds it replaces `path` in one rename,
    when it fails it is removed.

    The temporary is hidden and unique, `.NAME.XXXXXXXX.tmp` followed by `path`'s suffix (so writers that
    infer the format from the name, such as matplotlib and numpy, still do). With `fixed` it is `NAME.tmp`,
    a name a resumed run recognises as its own leftover (see `train/rundir.py`). `mode`: the file's
    permissions (default: what the umask gives a new file)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if fixed:
            tmp = path.with_name(path.name + ".tmp")
        else:
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
            os.close(fd)
            tmp = Path(name)
            os.chmod(tmp, 0o666 & ~_UMASK if mode is None else mode)
    except OSError as err:
        raise as_diffmem_error(err, path) from None
    try:
        yield tmp
        if fixed and mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise as_diffmem_error(err, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_atomic(path: str | Path, write: Callable[[Path], Any], *, fixed: bool = False,
                mode: int | None = None) -> Path:
    """Call `write(tmp)` to write the file at a temporary path, then rename it to `path` (see `atomic_path`)."""
    with atomic_path(path, fixed=fixed, mode=mode) as tmp:
        write(tmp)
    return Path(path)


def write_text_atomic(path: str | Path, text: str, *, fixed: bool = False) -> Path:
    """Write `text` to `path` whole or not at all."""
    return save_atomic(path, lambda tmp: tmp.write_text(text), fixed=fixed)


def write_json_atomic(path: str | Path, obj: Any, *, fixed: bool = False, default: Callable | None = None) -> Path:
    """Write `obj` as indented JSON (two spaces, a final newline) whole or not at all."""
    return write_text_atomic(path, json.dumps(obj, indent=2, default=default) + "\n", fixed=fixed)


@contextlib.contextmanager
def atomic_dir(final: str | Path, *, tmp_name: str | None = None, old_name: str | None = None,
               before_swap: Callable[[Path, Path], Any] | None = None, fsync: bool = False,
               clean_on: tuple[type[BaseException], ...] = (BaseException,),
               on_os_error: Callable[[OSError], BaseException] | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder beside the folder `final`; when the block succeeds it replaces
    `final`, when it fails `final` is left as it was.

    The swap: `final` (if it exists) is renamed aside, the temporary is renamed to `final`, then the old
    folder is deleted; should the second rename fail, the old folder is renamed back. A kill between the
    two renames leaves no `final` and the previous folder under its aside name.

    - `tmp_name` / `old_name`: fixed names (in `final`'s folder) for the temporary and the folder moved
      aside, for a writer that recognises its own leftovers (a leftover temporary of that name is removed
      first). Default: unique hidden names, `.NAME.XXXXXXXX.tmp` and `.NAME.XXXXXXXX.old`.
    - `before_swap(final, tmp)`: called when `final` exists, just before the swap (check it, or copy
      files to keep into the temporary); what it raises aborts the swap like a failure in the block.
    - `fsync`: flush every file of the temporary to disk before the rename publishes it.
    - `clean_on`: the exceptions after which the temporary is removed (default: any). A writer whose
      leftover the next run clears passes `(Exception,)`, so that Ctrl-C leaves it as a kill would.
    - `on_os_error`: the exception to raise for an OSError of these steps (creating the temporary, the
      flush, `before_swap`, the renames); default `as_diffmem_error(err, final)`: a one-line DiffmemError
      for a permission, disk-full or bad-path error. What the block raises passes through unchanged (it
      may be work other than writing, such as the computation of an audit): map it there.
    """
    final = Path(final)
    on_os_error = on_os_error or (lambda err: as_diffmem_error(err, final))
    try:
        tmp = _make_temporary(final, tmp_name)
    except OSError as err:
        raise on_os_error(err) from None
    try:
        yield tmp
    except BaseException as err:
        if isinstance(err, clean_on):
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        if fsync:
            _fsync_files(tmp)
        if final.exists() and before_swap is not None:
            before_swap(final, tmp)
        _swap(final, tmp, old_name)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            raise on_os_error(err) from None
        raise


def _make_temporary(final: Path, tmp_name: str | None) -> Path:
    if final.exists() and not final.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "it is a file, not a folder", str(final))
    final.parent.mkdir(parents=True, exist_ok=True)
    if tmp_name is None:
        return Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    tmp = final.parent / tmp_name
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def _fsync_files(folder: Path) -> None:
    for f in sorted(folder.rglob("*")):
        if f.is_file() and not f.is_symlink():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def _swap(final: Path, tmp: Path, old_name: str | None) -> None:
    """Rename `final` (if any) aside, `tmp` to `final` (or the old folder back on failure), delete the old."""
    if not final.exists():
        os.replace(tmp, final)
        return
    if old_name is None:  # an empty folder: a directory rename may replace it
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
    else:
        old = final.parent / old_name
    try:
        os.replace(final, old)
    except BaseException:
        if old_name is None:
            old.rmdir()
        raise
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _leftover_pattern(target: Path) -> re.Pattern[str]:
    """The unique temporary names `atomic_path` and `atomic_dir` give `target`'s temporaries: mkstemp's and
    mkdtemp's eight characters between `.NAME.` and `.tmp` (then `target`'s suffix for a file) or `.old`."""
    suffix = re.escape(target.suffix)
    return re.compile(rf"\.{re.escape(target.name)}\.[a-z0-9_]{{8}}\.(tmp(?:{suffix})?|old)")


def clean_leftovers(target: str | Path) -> list[Path]:
    """Remove what killed writers of `target` left beside it: temporary files and folders named as
    `atomic_path` and `atomic_dir` name them, and nothing else. A previous folder moved aside just before
    a kill (`.NAME.XXXXXXXX.old` while `target` is absent) is moved back instead. Call it only while holding
    `target`'s lock (a live writer's temporary has the same name). Returns the paths removed or moved back."""
    target = Path(target)
    pattern = _leftover_pattern(target)
    try:
        found = sorted((p for p in target.parent.iterdir() if pattern.fullmatch(p.name)),
                       key=lambda p: p.lstat().st_mtime)
    except OSError:
        return []
    olds = [p for p in found if p.name.endswith(".old") and p.is_dir() and not p.is_symlink()]
    done = []
    if olds and not os.path.lexists(target):
        with contextlib.suppress(OSError):
            os.replace(olds[-1], target)  # the newest set moved aside: the folder as it was before the kill
            done.append(olds.pop())
    for p in found:
        if p in done:
            continue
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            done.append(p)
    return done
