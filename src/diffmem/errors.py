"""Errors a user can fix. The CLI turns them into a message and exit code 2."""

from __future__ import annotations

import errno

# File-system errors a user fixes by choosing another path, changing permissions or freeing space.
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}
_BAD_PATH = {errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}


class DiffmemError(Exception):
    """Bad input or configuration: the message names the input and what to do about it."""


def os_error_message(err: OSError, path: object = None) -> str | None:
    """One line naming the path and the fix for a permission, read-only, disk-full or bad-path error;
    None for any other OSError (a bug or a failing device, which keeps its traceback).
    `path` names the file when the error itself does not (a failed write() carries no file name)."""
    where = err.filename if err.filename is not None else path
    where = f"'{where}'" if where is not None else "the output"
    reason = err.strerror or str(err)
    if err.errno in _FULL:
        return f"cannot write {where}: {reason}; free space on that disk or choose another output path"
    if err.errno in _DENIED:
        return f"cannot write {where}: {reason}; choose a path you may write to, or change its permissions"
    if err.errno in _BAD_PATH:
        return f"cannot use {where}: {reason}; check the path"
    return None


def as_diffmem_error(err: OSError, path: object = None) -> Exception:
    """`err` as a DiffmemError when `os_error_message` knows it, else `err` itself (for `raise ... from None`)."""
    message = os_error_message(err, path)
    return DiffmemError(message) if message is not None else err


def require_finite(values: object, what: str) -> None:
    """Refuse NaN or infinite numbers (an array, tensor or number) with a DiffmemError naming `what`.

    Non-finite statistics would make scipy's matrix square root run forever, so they are refused first.
    """
    import numpy as np

    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().numpy()
    arr = np.asarray(values, dtype=np.float64)
    bad = int(arr.size - np.isfinite(arr).sum())
    if bad:
        raise DiffmemError(f"{what} holds {bad} NaN or infinite value{'s' if bad > 1 else ''}; "
                           "recompute it from images")
