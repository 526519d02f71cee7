"""Write a file whole or not at all: a temporary file in the same folder, then one rename.

A reader (or a run resumed after a kill) sees either the old file or the new one, never half of one.
Permission, read-only, disk-full and bad-path errors become one-line DiffmemErrors naming the file
(`diffmem.errors.as_diffmem_error`); other OSErrors keep their traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from diffmem.errors import as_diffmem_error

__all__ = ["atomic_path", "save_atomic", "write_text_atomic", "write_json_atomic"]

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
