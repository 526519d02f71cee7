"""Keep a frontier's measured evidence in the repository, and put it back to resume on a fresh machine.

Usage:
    python bench/frontier_evidence.py keep FRONTIER_DIR EVIDENCE_DIR
    python bench/frontier_evidence.py suspend FRONTIER_DIR EVIDENCE_DIR
    python bench/frontier_evidence.py restore EVIDENCE_DIR FRONTIER_DIR
    python bench/frontier_evidence.py merge OUT_DIR FRONTIER_JSON [FRONTIER_JSON ...]

`keep` copies, for every finished run (it has done.json), the small JSON files and the training log
(config.json, done.json, release.json, log.jsonl) and the frontier's frontier.json: a few
kilobytes per run, no checkpoints and no samples. That is all `diffmem frontier ... --report-only` reads,
and all a re-run needs to skip a finished run. `restore` copies them back into a frontier folder (which
must not hold those runs yet), so that re-running the same `diffmem frontier` command on a new machine
trains only the runs that are missing.

`suspend` does what `keep` does and keeps the unfinished runs too, under EVIDENCE_DIR/resume/, with what
a resume reads: the run's own files, its samples, and of its checkpoints the newest, every one after its
last check (a later check may go back to them) and the released one's EMA weights. That is about 4 copies of the network's weights
per run (30 MB for `tiny`), so it is meant for a long measurement that must survive the loss of its
machine between sessions, not for every run. `restore` puts them back too, and the same command then
continues each from its newest checkpoint, as it would have on the old machine; `keep` drops a run's
suspended copy once the run has finished.

`merge` joins the frontier.json of one pre-registered frontier whose seeds were trained as separate
commands (other sessions, other machines: `--seeds 0,1` here, `--seeds 2,3,4` there) and writes the
report of all of them, as `--report-only` would on one folder. It refuses frontiers whose configuration
differs in anything but the seeds, and a run that appears twice. A run's training depends only on the
configuration and its own seed, so the split changes no run. Given one frontier.json, it rebuilds that
frontier's report from the JSON alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

FILES = ("config.json", "done.json", "release.json", "log.jsonl")  # subset.json: the seed redraws it
RESUME = "resume"  # EVIDENCE_DIR/resume/<run>: an unfinished run, as `suspend` kept it
CKPTS, LATEST, EMA, META = "checkpoints", "LATEST", "ema.safetensors", "meta.json"


def keep(frontier: Path, evidence: Path) -> int:
    """Copy the finished runs' small files and frontier.json; returns how many runs were kept."""
    runs = sorted(p for p in (frontier / "runs").glob("*") if (p / "done.json").is_file())
    evidence.mkdir(parents=True, exist_ok=True)
    for run in runs:
        dest = evidence / "runs" / run.name
        dest.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            if (run / name).is_file():
                shutil.copy2(run / name, dest / name)
        shutil.rmtree(evidence / RESUME / run.name, ignore_errors=True)  # finished: its suspended copy is stale
    shutil.copy2(frontier / "frontier.json", evidence / "frontier.json")
    return len(runs)


def suspend(frontier: Path, evidence: Path) -> int:
    """`keep` the finished runs, and copy each unfinished run that has a checkpoint, with what its resume reads,
    to EVIDENCE/resume/<run> (replacing an older copy whole); returns how many unfinished runs were suspended."""
    keep(frontier, evidence)
    runs = sorted(p for p in (frontier / "runs").glob("*") if p.is_dir() and not (p / "done.json").is_file()
                  and (p / CKPTS / LATEST).is_file())
    from diffmem.release import choose_release
    from diffmem.sweep.frontier import run_checks
    from diffmem.train.checkpoint import checkpoint_steps

    for run in runs:
        checks = run_checks(run)
        last_check = max((c["step"] for c in checks), default=0)
        released = (choose_release(checks) or {}).get("step")
        newest = (run / CKPTS / LATEST).read_text().strip()
        tmp, dest = evidence / RESUME / (run.name + ".tmp"), evidence / RESUME / run.name
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(run, tmp, ignore=shutil.ignore_patterns(CKPTS))
        (tmp / CKPTS).mkdir()
        shutil.copy2(run / CKPTS / LATEST, tmp / CKPTS / LATEST)
        for step in checkpoint_steps(run):  # the complete ones: a resume clears an incomplete one
            ckpt = run / CKPTS / f"step-{step:08d}"
            if ckpt.name == newest or step > last_check:
                shutil.copytree(ckpt, tmp / CKPTS / ckpt.name)
            elif step == released:  # only sampled from again (--checkpoint release): its EMA weights
                (tmp / CKPTS / ckpt.name).mkdir()
                for name in (EMA, META):
                    shutil.copy2(ckpt / name, tmp / CKPTS / ckpt.name / name)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    return len(runs)


def restore(evidence: Path, frontier: Path) -> int:
    """Copy kept runs, and suspended ones that have not finished since, into a frontier folder; refuses to
    overwrite a run that is already there."""
    runs = sorted(p for p in (evidence / "runs").glob("*") if (p / "done.json").is_file())
    done = {r.name for r in runs}
    runs += sorted(p for p in (evidence / RESUME).glob("*") if p.is_dir() and not p.name.endswith(".tmp")
                   and p.name not in done)
    clash = [r.name for r in runs if (frontier / "runs" / r.name).exists()]
    if clash:
        sys.exit(f"{frontier / 'runs'} already holds {', '.join(clash[:3])}{' ...' if len(clash) > 3 else ''}; "
                 "restore into a new folder")
    for run in runs:
        shutil.copytree(run, frontier / "runs" / run.name)
    if not (frontier / "frontier.json").is_file():
        shutil.copy2(evidence / "frontier.json", frontier / "frontier.json")
    return len(runs)


def merge(out: Path, sources: list[Path]) -> dict:
    """One frontier's data from several frontier.json that differ only in their seeds; writes
    OUT/frontier.json and the report (diffmem.report.frontier.write_report). Returns the merged data."""
    from diffmem.utils.atomic import write_json_atomic
    from diffmem.report.frontier import write_report

    parts = [json.loads(Path(s).read_text()) for s in sources]
    for s, d in zip(sources, parts):
        if not d.get("runs"):
            sys.exit(f"{s} holds no finished runs; run its frontier with --report-only first")
    same = [{k: v for k, v in d["config"].items() if k != "seeds"} for d in parts]
    for s, c in zip(sources[1:], same[1:]):
        if c != same[0]:
            diff = sorted(k for k in set(c) | set(same[0]) if c.get(k) != same[0].get(k))
            sys.exit(f"{s} is another frontier than {sources[0]} (its {', '.join(diff)} differ); "
                     "merge only the seeds of one command")
    runs = [r for d in parts for r in d["runs"]]
    names = [r["name"] for r in runs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        sys.exit(f"run {twice[0]} is in more than one of {', '.join(map(str, sources))}; merge each run once")
    seeds = sorted({int(x) for d in parts for x in d["config"]["seeds"]})
    order = {r["name"]: (r["subset"], r["seed"], i) for i, r in enumerate(runs)}
    runs.sort(key=lambda r: order[r["name"]])  # subset, then seed, as one frontier command orders them
    data = {"config": {**parts[0]["config"], "seeds": seeds}, "seconds": sum(d.get("seconds") or 0 for d in parts),
            "merged_from": [str(s) for s in sources], "runs": runs}
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "frontier.json", data)
    write_report(data, out)
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("keep", "suspend", "restore", "merge"))
    ap.add_argument("source", type=Path, help="keep, suspend: FRONTIER_DIR; restore: EVIDENCE_DIR; merge: OUT_DIR")
    ap.add_argument("dest", type=Path, nargs="+", help="keep, suspend: EVIDENCE_DIR; restore: FRONTIER_DIR; "
                    "merge: the frontier.json files")
    a = ap.parse_args()
    if a.action == "merge":
        missing = [str(p) for p in a.dest if not p.is_file()]
        if missing:
            sys.exit(f"{missing[0]} is not a file; pass each part's frontier.json")
        data = merge(a.source, a.dest)
        seeds = sorted({r['seed'] for r in data['runs']})
        print(f"merge: {len(data['runs'])} finished runs of seeds {seeds} -> {a.source}/frontier.md")
        return
    if len(a.dest) != 1:
        sys.exit(f"{a.action} takes one destination folder")
    a.dest = a.dest[0]
    if not a.source.is_dir():
        sys.exit(f"{a.source} is not a folder; pass the frontier's --out (keep, suspend) or the evidence folder "
                 "(restore)")
    act = {"keep": keep, "suspend": suspend, "restore": restore}[a.action]
    n = act(a.source, a.dest)
    what = "unfinished" if a.action == "suspend" else "finished" if a.action == "keep" else "kept"
    print(f"{a.action}: {n} {what} runs, {a.source} -> {a.dest}")


if __name__ == "__main__":
    main()
