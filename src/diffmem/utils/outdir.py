"""The check every command makes of its output folder (`--out`), worded once.

A file is refused; a missing or empty folder is free; a non-empty folder is accepted only when it
holds the command's own kind of output (a run, a sweep, an audit, ...), which the caller then resumes,
replaces or refuses by its own rules (`--resume`, `--overwrite`). A folder of anything else is refused,
naming some of what it holds, so a command never writes into (or replaces) someone's files.
An output file (`check_output`) is refused when it exists, unless --overwrite, and checked writable before the
work; it is then written whole or not at all (`utils.atomic`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Collection, Mapping

from diffmem.errors import DiffmemError, as_diffmem_error

__all__ = ["ABSENT", "EMPTY", "OWN", "check_apart", "check_out_folder", "check_output", "file_on_the_way"]

ABSENT, EMPTY, OWN = "absent", "empty", "own"


def check_out_folder(out: str | Path, *, kind: str, is_own: Callable[[Path], bool] | None = None,
                     known: Collection[str] = (), flag: str | None = "--out", ignore_hidden: bool = False) -> str:
    """ABSENT, EMPTY or OWN for the output folder `out`; a one-line DiffmemError for a file, an unreadable
    folder, or a non-empty folder that `is_own` rejects.

    - `kind`: what the folder should hold, as in "is not a {kind}" (e.g. "diffmem run", "sweep").
    - `is_own(out)`: does this non-empty folder hold `kind`'s output? None: every non-empty folder is
      OWN, the caller decides (e.g. replacing a folder of images keeps its other files).
    - `known`: names `kind` writes; the refusal lists the others the folder holds (else the first few).
    - `flag`: the option that named `out`, for the messages (None: name the path alone).
    - `ignore_hidden`: entries whose names start with "." do not count (an empty folder may hold them).
    """
    out = Path(out)
    name = f"{flag} {out}" if flag else f"'{out}'"
    choose = f"choose another {flag}" if flag else "choose another folder"
    if out.exists() and not out.is_dir():
        raise DiffmemError(f"{name} is a file, not a folder; {choose}")
    if not out.exists():
        blocked = file_on_the_way(out)
        if blocked is not None:  # `--out F/run` with F a file: the folder can never be made
            raise DiffmemError(f"{name}: {blocked} is a file, not a folder; {choose}")
        return ABSENT
    try:
        entries = sorted(p.name for p in out.iterdir() if not (ignore_hidden and p.name.startswith(".")))
    except PermissionError:
        raise DiffmemError(f"cannot read the folder {name} (permission denied); {choose}") from None
    if not entries:
        return EMPTY
    if is_own is None or is_own(out):
        return OWN
    others = [e for e in entries if e not in known] or entries
    listed = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
    raise DiffmemError(f"{name} holds other files ({listed}) and is not a {kind}; {choose} "
                       f"(a new or empty folder, or an earlier {kind})")


def file_on_the_way(path: str | Path) -> Path | None:
    """The nearest existing ancestor of `path` when it is a file (so `path` cannot be created), else None."""
    for parent in Path(path).parents:
        if parent.exists() or parent.is_symlink():
            return None if parent.is_dir() else parent
    return None


def check_apart(out: str | Path, inputs: Mapping[str, str | Path | None], *, flag: str = "--out") -> None:
    """Refuse an output folder `out` inside one of the `inputs` (flag -> path; None and `builtin:` specs are
    skipped), and an input inside `out`: written into a data folder, the output would be read back as data
    the next time (`--data DIR --out DIR/run`); holding the data, the output's replacement could touch it.
    Symbolic links are followed."""
    where = Path(os.path.realpath(Path(out).expanduser()))
    for name, spec in inputs.items():
        if spec is None or str(spec).startswith("builtin:"):
            continue
        data = Path(os.path.realpath(Path(spec).expanduser()))
        if where == data or data in where.parents:
            raise DiffmemError(f"{flag} {out} is inside the data {name} {spec}; the next read of the data would "
                               f"take the output's files for images. Choose a {flag} outside it")
        if where in data.parents:
            raise DiffmemError(f"{name} {spec} is inside {flag} {out}; choose a {flag} that does not hold the data")


def _existing_ancestor(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path(".")


def check_output(path: str | Path, flag: str, overwrite: bool, *, folder_ok: bool = False) -> Path:
    """Refuse an existing `path` without `overwrite` (and a folder where a file is wanted), and check that
    its folder can be written, before any work is done. Creates nothing."""
    path = Path(path)
    if path.is_dir() and not folder_ok:
        raise DiffmemError(f"{flag} {path} is a folder; give a file name")
    if path.exists() and not overwrite and not (path.is_dir() and not any(path.iterdir())):
        raise DiffmemError(f"{flag} {path} already exists; pass --overwrite to replace it, or choose another path")
    where = path.parent if path.parent.exists() else _existing_ancestor(path)
    if not where.is_dir():
        raise DiffmemError(f"{flag} {path}: {where} is a file, not a folder; choose another path")
    try:  # the one sure test of writability (os.access says yes to root on a read-only mount)
        fd, probe = tempfile.mkstemp(prefix=".diffmem-probe-", dir=where)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        if as_diffmem_error(err) is err:
            raise
        raise DiffmemError(f"cannot write {flag} {path}: no file can be created in {where} ({err.strerror}); "
                           "choose another path, change its permissions or free space") from None
    return path
