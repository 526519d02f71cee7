"""Keep a frontier's measured evidence in the repository, and put it back to resume on a fresh machine.

Usage:
    python bench/frontier_evidence.py keep FRONTIER_DIR EVIDENCE_DIR
    python bench/frontier_evidence.py restore EVIDENCE_DIR FRONTIER_DIR

`keep` copies, for every finished run (it has done.json), the small JSON files and the training log
(config.json, done.json, release.json, log.jsonl) and the frontier's frontier.json: a few
kilobytes per run, no checkpoints and no samples. That is all `diffmem frontier ... --report-only` reads,
and all a re-run needs to skip a finished run. `restore` copies them back into a frontier folder (which
must not hold those runs yet), so that re-running the same `diffmem frontier` command on a new machine
trains only the runs that are missing. Unfinished runs are not kept: they restart from step 0 there.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

FILES = ("config.json", "done.json", "release.json", "log.jsonl")  # subset.json: the seed redraws it


def keep(frontier: Path, evidence: Path) -> int:
    """Copy the finished runs' small files and frontier.json; returns how many runs were kept."""
    runs = sorted(p for p in (frontier / "runs").glob("*") if (p / "done.json").is_file())
    for run in runs:
        dest = evidence / "runs" / run.name
        dest.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            if (run / name).is_file():
                shutil.copy2(run / name, dest / name)
    shutil.copy2(frontier / "frontier.json", evidence / "frontier.json")
    return len(runs)


def restore(evidence: Path, frontier: Path) -> int:
    """Copy kept runs into a frontier folder; refuses to overwrite a run that is already there."""
    runs = sorted(p for p in (evidence / "runs").glob("*") if (p / "done.json").is_file())
    clash = [r.name for r in runs if (frontier / "runs" / r.name).exists()]
    if clash:
        sys.exit(f"{frontier / 'runs'} already holds {', '.join(clash[:3])}{' ...' if len(clash) > 3 else ''}; "
                 "restore into a new folder")
    for run in runs:
        shutil.copytree(run, frontier / "runs" / run.name)
    if not (frontier / "frontier.json").is_file():
        shutil.copy2(evidence / "frontier.json", frontier / "frontier.json")
    return len(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("keep", "restore"))
    ap.add_argument("source", type=Path)
    ap.add_argument("dest", type=Path)
    a = ap.parse_args()
    if not a.source.is_dir():
        sys.exit(f"{a.source} is not a folder; pass the frontier's --out (keep) or the evidence folder (restore)")
    n = keep(a.source, a.dest) if a.action == "keep" else restore(a.source, a.dest)
    print(f"{a.action}: {n} finished runs, {a.source} -> {a.dest}")


if __name__ == "__main__":
    main()
