"""An audit's output folder: checked before any work, written whole into a temporary folder and swapped in.

A folder is taken as an audit only if it holds `report.json` and nothing but audit outputs, so an
audit never writes into (or replaces) a folder of other files. The new output set is written next to
the target (`.NAME.tmp-PID`) and swapped in with two renames: a kill at any moment leaves either the
previous complete audit, the new complete one, or (between the renames) none, never a mixture. One audit
at a time writes into an --out: it holds the lock of `--out` (`diffmem.lock`) from the check to the swap.
Also: `nearest.csv` (which file copies which) and the file names of images.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from diffmem.errors import DiffmemError
from diffmem.lock import locked
from diffmem.utils.atomic import atomic_dir
from diffmem.utils.outdir import check_apart, check_out_folder

__all__ = ["AUDIT_FILES", "is_audit_dir", "check_out_dir", "output_folder", "image_names", "write_nearest_csv",
           "write_error"]

REPORT = "report.json"
# everything an audit (or the sweep's evaluation) writes; quality.json is kept across a rewrite
AUDIT_FILES = frozenset({REPORT, "nearest.npz", "nearest.csv", "histogram.png", "neighbours.png", "samples.png",
                         "report.md", "report.html", "quality.json"})
_KEEP = ("quality.json",)


def _entries(path: Path) -> list[str]:
    return [p.name for p in path.iterdir() if not p.name.startswith(".")]


def is_audit_dir(path: str | Path) -> bool:
    """True when `path` holds a report.json and nothing but audit outputs."""
    p = Path(path)
    return p.is_dir() and (p / REPORT).is_file() and set(_entries(p)) <= AUDIT_FILES


def check_out_dir(out: str | Path, inputs: Mapping[str, str | Path | None] | None = None) -> Path:
    """Refuse an output path that is a file or a non-empty folder that is not an audit (one line, the fix),
    and, given the `inputs` (flag -> images), an --out inside one of them or holding one: an audit written
    into its training folder would be read back as training images (`utils.outdir.check_apart`)."""
    p = Path(out)
    check_apart(p, inputs or {})
    check_out_folder(p, kind="diffmem audit", is_own=is_audit_dir, known=AUDIT_FILES, ignore_hidden=True)
    return p


@contextlib.contextmanager
def output_folder(out: str | Path) -> Iterator[Path]:
    """A temporary folder beside `out` to write an audit into, swapped in place of the previous audit (if
    any) when the block succeeds, removed when it fails (`diffmem.utils.atomic.atomic_dir`).

    Entering checks `out`, takes its lock for the whole block (`diffmem.lock.locked`: a second audit into
    the same --out is refused, naming the first one's process), clears what a killed audit left beside it
    and creates the temporary, so an unwritable --out fails before any work. quality.json of the previous
    audit is kept."""
    out = check_out_dir(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)  # where the lock file goes: an error names the audit's --out
    except OSError as err:
        raise write_error(out, err) from None
    with locked(out):
        try:
            _clean_stale(out)
        except OSError as err:
            raise write_error(out, err) from None
        pid = os.getpid()
        with atomic_dir(out, tmp_name=f".{out.name}.tmp-{pid}", old_name=f".{out.name}.old-{pid}",
                        before_swap=_keep_files, on_os_error=lambda err: write_error(out, err)) as tmp:
            yield tmp


def write_error(out: Path | str, err: OSError, fix: str = "choose a folder you can write to") -> DiffmemError:
    """The one-line refusal of an audit --out that cannot be written, with the fix to try."""
    return DiffmemError(f"cannot write the audit --out {out} ({err.strerror or err}); {fix}")


def _keep_files(out: Path, tmp: Path) -> None:
    """Before the swap: `out` is still an audit (nothing else appeared meanwhile); its _KEEP files move over."""
    check_out_dir(out)
    for name in _KEEP:
        if (out / name).is_file() and not (tmp / name).exists():
            shutil.copy2(out / name, tmp / name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _clean_stale(out: Path) -> None:
    """Remove what a killed audit left beside `out`; a previous audit moved aside just before the kill
    (`.NAME.old-PID` without `out`) is moved back."""
    for kind in ("old", "tmp"):
        for p in out.parent.glob(f".{out.name}.{kind}-*"):
            pid = p.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or _alive(int(pid)):
                continue
            if kind == "old" and not out.exists() and is_audit_dir(p):
                os.replace(p, out)
            else:
                shutil.rmtree(p, ignore_errors=True)


def image_names(data: Any, n: int) -> list[str]:
    """A file name per image: a folder's relative paths, `NAME.npz#i` for arrays in a file, `#i` otherwise."""
    names = getattr(data, "names", None)
    source = str(getattr(data, "source", "") or "")
    if not names or len(names) != n:
        return [f"#{i}" for i in range(n)]
    if source.endswith(".npz") or source.startswith("builtin:"):
        base = os.path.basename(source) if source.endswith(".npz") else source
        return [f"{base}#{name.rsplit('/', 1)[-1]}" for name in names]
    return [str(name) for name in names]


def write_nearest_csv(path: Path, arrays: dict[str, np.ndarray], sample_names: list[str], train_names: list[str],
                      copy_threshold: float | None) -> Path:
    """One row per sample: sample, nearest training file, similarity, mirrored, copy (similarity >= threshold).

    `copy` is empty when there is no calibrated threshold (no held-out images).
    """
    sims, idx = arrays["nn_similarity"], arrays["nn_index"]
    mirrored = arrays.get("nn_mirrored", np.zeros(len(sims), dtype=bool))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sample", "nearest_train", "similarity", "mirrored", "copy"])
        for i in range(len(sims)):
            copy = "" if copy_threshold is None else int(float(sims[i]) >= copy_threshold)
            w.writerow([sample_names[i], train_names[int(idx[i])], f"{float(sims[i]):.6f}", int(bool(mirrored[i])),
                        copy])
    return path
