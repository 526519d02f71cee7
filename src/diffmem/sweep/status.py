"""Where a frontier's runs stand, read from their folders alone: `diffmem frontier --out DIR --status`.

Read-only and lock-free, so it can be asked while the frontier trains (every file it reads is written
atomically, or appended a line at a time). Per run: finished or not (and why it stopped), the step reached,
the last check (copies, quality, safe) and the release so far (its step and `q*`, docs/method.md "The release
and safe quality"), the time its logged work took so far (training and checks, not the pauses between
sessions), and, for an unfinished run, about how long it needs to reach its step cap.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from diffmem.errors import DiffmemError

__all__ = ["time_left", "run_status", "frontier_status", "status_lines"]


def time_left(records: list[dict[str, Any]], check_steps: list[int], steps: int | None,
              batch: int | None) -> float | None:
    """Seconds a run needs to reach its step cap at its current pace: the steps left at the median images/s of
    its last 10 logged windows (one slowed by a resume or a check does not sway it), plus the checks left at
    their current spacing (the gap between the last two) at their mean seconds. An estimate: the guard may
    stop the run sooner, and checks come denser once copying may have set in. None when the log has no
    timed record or the cap is unknown."""
    train = [r for r in records if r.get("images_per_s") and "loss" in r]
    if not train or not steps or not batch:
        return None
    step = int(train[-1]["step"])
    rate = statistics.median(float(r["images_per_s"]) for r in train[-10:])
    left = max(steps - step, 0) * batch / rate
    secs = [float(r["monitor"]["seconds"]) for r in records if (r.get("monitor") or {}).get("seconds")]
    if secs and check_steps:
        gap = check_steps[-1] - (check_steps[-2] if len(check_steps) > 1 else 0)
        if gap > 0:
            left += (max(steps - check_steps[-1], 0) // gap) * sum(secs) / len(secs)
    return left


def run_status(run: str | Path) -> dict[str, Any]:
    """One run's state: {"name", "state", "step", "steps", "checks", "last", "release", "seconds", "left"}
    ("left": `time_left`, None once the run is done)."""
    from diffmem.lock import holder_alive
    from diffmem.monitor import monitor_records_of
    from diffmem.release import checks_of, choose_release
    from diffmem.sweep.frontier import _log_means, _stopped
    from diffmem.train.rundir import CONFIG, DONE, log_records, read_json

    run = Path(run)
    cfg = read_json(run / CONFIG) if (run / CONFIG).is_file() else {}
    records = log_records(run)
    checks = checks_of(monitor_records_of(records))  # from the records read once
    stopped = _stopped(run)
    done = (run / DONE).is_file()
    state = ("stopped" if stopped else "finished") if done else "training" if holder_alive(run) else "unfinished"
    best = choose_release(checks)
    rec = next((r for r in reversed(records) if "loss" in r), {})
    optim = cfg.get("optim") or {}
    return {"name": run.name, "state": state, "stopped": stopped, "step": rec.get("step", 0),
            "steps": optim.get("steps"), "images_per_s": rec.get("images_per_s"),
            "checks": len(checks), "last": checks[-1] if checks else None,
            "release": {"step": best["step"], "quality": best["quality"]} if best else None,
            "seconds": _log_means(run, records)["seconds"] if rec else None,
            "left": None if done else time_left(records, [c["step"] for c in checks], optim.get("steps"),
                                                optim.get("batch"))}


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
             "time | img/s | to the cap |", "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        last, rel = r["last"], r["release"]
        state = f"stopped at {r['stopped']['step']}" if r["stopped"] else r["state"]
        check = "-" if last is None else (f"{last['step']}, {_pct(last)}, {_q(last['quality'])}, "
                                          f"{'yes' if last['safe'] else 'no'}")
        release = "none safe yet" if rel is None else f"{rel['step']}, {_q(rel['quality'])}"
        secs = "-" if not r["seconds"] else f"{r['seconds'] / 60:.0f} min"
        ips = "-" if r["images_per_s"] is None else f"{r['images_per_s']:.0f}"
        left = "-" if r["left"] is None else f"~{r['left'] / 60:.0f} min"
        lines.append(f"| {r['name']} | {state} | {r['step']}/{r['steps']} | {check} | {release} | {secs} | {ips} "
                     f"| {left} |")
    lines += ["", "to the cap: time an unfinished run needs to reach its step cap at its current pace; the guard "
              "may stop it sooner."] * any(r["left"] is not None for r in runs)
    return lines
