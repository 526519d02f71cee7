"""Where a frontier's runs stand, read from their folders alone: `diffmem frontier --out DIR --status`.

Read-only and lock-free, so it can be asked while the frontier trains (every file it reads is written
atomically, or appended a line at a time). Per run: finished or not (and why it stopped), the step reached,
the last check (copies, quality, safe) and the release so far (its step and `q*`, docs/method.md "The release
and safe quality"), and the time its logged work took so far (training and checks, not the pauses between
sessions).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from diffmem.errors import DiffmemError

__all__ = ["run_status", "frontier_status", "status_lines"]


def _last_training_record(run: Path) -> dict[str, Any]:
    from diffmem.train.rundir import LOG

    last: dict[str, Any] = {}
    if (run / LOG).is_file():
        for line in (run / LOG).read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line being written
                continue
            if "loss" in rec:
                last = rec
    return last


def run_status(run: str | Path) -> dict[str, Any]:
    """One run's state: {"name", "state", "step", "steps", "checks", "last", "release", "seconds"}."""
    from diffmem.lock import holder_alive
    from diffmem.release import choose_release
    from diffmem.sweep.frontier import _log_means, _stopped, run_checks
    from diffmem.train.rundir import CONFIG, DONE, read_json

    run = Path(run)
    cfg = read_json(run / CONFIG) if (run / CONFIG).is_file() else {}
    checks = run_checks(run)
    stopped = _stopped(run)
    state = (("stopped" if stopped else "finished") if (run / DONE).is_file() else
             "training" if holder_alive(run) else "unfinished")
    best = choose_release(checks)
    rec = _last_training_record(run)
    return {"name": run.name, "state": state, "stopped": stopped, "step": rec.get("step", 0),
            "steps": (cfg.get("optim") or {}).get("steps"), "images_per_s": rec.get("images_per_s"),
            "checks": len(checks), "last": checks[-1] if checks else None,
            "release": {"step": best["step"], "quality": best["quality"]} if best else None,
            "seconds": _log_means(run)["seconds"] if rec else None}


def frontier_status(out: str | Path) -> dict[str, Any]:
    """{"planned": runs the last command asked for (None if unknown), "runs": run_status of each run folder}."""
    from diffmem.sweep.frontier import FRONTIER_JSON

    out = Path(out)
    if not (out / FRONTIER_JSON).is_file():
        raise DiffmemError(f"{out} is not a frontier folder (no {FRONTIER_JSON}); pass the --out of a frontier")
    try:
        cfg = json.loads((out / FRONTIER_JSON).read_text()).get("config") or {}
        planned = len(cfg["variants"]) * len(cfg["subsets"]) * len(cfg["seeds"])
    except (json.JSONDecodeError, KeyError, TypeError):
        planned = None
    runs = sorted(p for p in (out / "runs").glob("*") if p.is_dir() and not p.name.endswith(".tmp"))
    return {"planned": planned, "runs": [run_status(r) for r in runs]}


def _pct(check: dict[str, Any] | None) -> str:
    rate = ((check or {}).get("safety") or {}).get("copy_rate")
    return "-" if rate is None else f"{100 * rate:.1f}%"


def _q(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def status_lines(status: dict[str, Any]) -> list[str]:
    """A table of `frontier_status`, one row per run."""
    runs = status["runs"]
    done = sum(r["state"] in ("finished", "stopped") for r in runs)
    head = f"{len(runs)} run folders, {done} finished" + (f", of {status['planned']} planned by the last command"
                                                        if status["planned"] is not None else "")
    lines = [head, "",
             "| run | state | step | last check: step, copies, quality, safe | release so far: step, q* | "
             "time | img/s |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        last, rel = r["last"], r["release"]
        state = f"stopped at {r['stopped']['step']}" if r["stopped"] else r["state"]
        check = "-" if last is None else (f"{last['step']}, {_pct(last)}, {_q(last['quality'])}, "
                                          f"{'yes' if last['safe'] else 'no'}")
        release = "none safe yet" if rel is None else f"{rel['step']}, {_q(rel['quality'])}"
        secs = "-" if not r["seconds"] else f"{r['seconds'] / 60:.0f} min"
        ips = "-" if r["images_per_s"] is None else f"{r['images_per_s']:.0f}"
        lines.append(f"| {r['name']} | {state} | {r['step']}/{r['steps']} | {check} | {release} | {secs} | {ips} |")
    return lines
