"""`compare`: the sweep's table and plot from existing runs, sweeps or audit folders.

Each path may be a sweep folder (its runs, in the sweep's order), a run directory (its stored
result row; a finished run that was never measured is measured now) or an audit folder holding a
report.json (from `diffmem audit`, or a run's audit-<features>/ folder).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

from diffmem.errors import DiffmemError
from diffmem.sweep.evaluation import QUALITY, evaluate_run, read_result, run_info
from diffmem.sweep.results import make_row
from diffmem.sweep.spec import EvalOptions

__all__ = ["expand_paths", "collect_rows", "audit_warnings"]


def expand_paths(paths: Sequence[str | Path]) -> list[tuple[str, Path]]:
    """(kind, path) for every run or audit behind `paths`; kind is "run" or "audit"."""
    from diffmem.sweep.runner import RUNS, SWEEP_JSON

    if not paths:
        raise DiffmemError("give at least one sweep folder, run directory or audit folder to compare")
    out: list[tuple[str, Path]] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise DiffmemError(f"{p} does not exist")
        if (p / SWEEP_JSON).is_file():
            names = json.loads((p / SWEEP_JSON).read_text()).get("points", [])
            runs = [p / RUNS / n for n in names if (p / RUNS / n / "config.json").is_file()]
            if not runs:
                raise DiffmemError(f"the sweep in {p} has no runs yet; run `diffmem sweep --out {p}` first")
            out += [("run", r) for r in runs]
        elif (p / "config.json").is_file():
            out.append(("run", p))
        elif (p / "report.json").is_file() and _is_audit_report(p / "report.json"):
            out.append(("audit", p))
        else:
            raise DiffmemError(f"{p} is neither a sweep folder (sweep.json), a run directory (config.json) nor an "
                               "audit folder (report.json)")
    return out


def _is_audit_report(path: Path) -> bool:
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        raise DiffmemError(f"{path} is not readable JSON; audit again (diffmem audit --out {path.parent})") from None
    if not isinstance(report, dict) or not {"n_samples", "similarity", "fraction_above"} <= set(report):
        raise DiffmemError(f"{path} is not a diffmem audit report; give the folder `diffmem audit --out` wrote")
    return True


def _audit_row(path: Path) -> dict[str, Any]:
    report = json.loads((path / "report.json").read_text())
    parent = path.parent
    if (parent / "config.json").is_file():  # a run's audit-<features>/ folder: the run says what was trained
        info = run_info(parent)
        info["name"] = f"{parent.name}/{path.name}"
        quality_path = parent / QUALITY
    else:
        # a standalone audit: labelled by its folder name (what was audited is not recorded)
        info = {"name": path.name, "method": path.name, "sigma_n": None, "mask_p": None,
                "subset": report.get("n_train"), "seed": None}
        quality_path = path / QUALITY
    info["n_samples"] = report.get("n_samples")
    quality = json.loads(quality_path.read_text()) if quality_path.is_file() else None
    if quality is not None and "fd" not in quality:
        quality = None
    row = make_row(info, {report.get("features") or "features": report}, quality)
    row["run"] = str(path.resolve())
    return row


def collect_rows(paths: Sequence[str | Path], opts: EvalOptions | None = None, *, device: str = "cpu",
                 cache_dir: str | Path | None = None, progress: bool = False,
                 echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """One row per run or audit behind `paths` (see the module docstring), in the order given.

    Runs with a stored result keep it; finished runs without one are measured with `opts` (default
    EvalOptions()) and the result stored in the run.
    """
    rows = []
    for kind, p in expand_paths(paths):
        if kind == "audit":
            rows.append(_audit_row(p))
            continue
        res = read_result(p)
        if res is not None:
            row = res["row"]
            for key, value in run_info(p).items():  # fields that results stored before they existed lack
                row.setdefault(key, value)
            rows.append(row)
            continue
        echo(f"[compare] measuring {p} (no result.json yet)")
        rows.append(evaluate_run(p, opts or EvalOptions(), device=device, cache_dir=cache_dir, progress=progress))
    return rows


def audit_warnings(paths: Sequence[str | Path]) -> list[str]:
    """Why the audits behind `paths` do not compare alike: some matched mirrored images (`--xflip`, which
    raises every similarity to the larger of an image's and its mirror's) and others did not. A report
    written before the `xflip` key existed counts as without."""
    flips = {str(p): bool(json.loads((p / "report.json").read_text()).get("xflip", False))
             for kind, p in expand_paths(paths) if kind == "audit"}
    used = [p for p, f in flips.items() if f]
    if not used or len(used) == len(flips):
        return []
    unused = [p for p, f in flips.items() if not f]
    return [f"{', '.join(used)} matched mirrored images (--xflip) and {', '.join(unused)} did not: their similarities "
            "and copy fractions are not comparable (mirroring can only raise them); audit all with the same --xflip"]
