"""Output files: refuse to replace one without --overwrite, check it can be written before the work,
and write it whole or not at all (a temporary file in the same folder, then a rename)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from diffmem.errors import DiffmemError, as_diffmem_error
from diffmem.utils.atomic import atomic_path, write_text_atomic  # their home is diffmem.utils.atomic

__all__ = ["check_output", "atomic_path", "write_text_atomic"]

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
