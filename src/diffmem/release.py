"""The release of a run: its best-quality checkpoint whose copies stay within what unseen images score.

docs/method.md, "The release and safe quality". A run's *checks* are the monitor records of its log
(`diffmem.monitor`): at a checkpoint, `n` samples, their copy count against the held-out p99 threshold,
the safety test (`diffmem.safety`) and a quality value (KID or FD against held-out images,
lower is better). Of the safe checks the one with the best quality is released: its step is the
release, its quality the run's *safe quality* `q*`. Without a quality value, the latest safe check is
released. `RUN/release.json` is the certificate: the released check, the last check (what training on
would have given), every check, the guard's settings and why training stopped.

```
RUN/release.json            the certificate (written atomically after every check, and at the end)
RUN/release/released.npz    the released check's samples; RUN/release/last.npz: the last check's
```
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from diffmem.config import RELEASE_DIR, RELEASE_JSON
from diffmem.errors import DiffmemError

__all__ = ["RELEASE_JSON", "RELEASE_DIR", "DENSE_P", "check_due", "checks_of", "choose_release", "stop_reason", "release_record",
           "read_release", "release_sentence", "check_line", "uncertified_sampling", "safe_quality"]



def checks_of(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The checks (step, safety test, quality) of a run's monitor records; records without a safety test
    (no held-out images) are left out."""
    out = []
    for rec in records:
        m = rec.get("monitor") or {}
        if not m.get("safety"):
            continue
        q = m.get("quality") or {}
        out.append({"step": int(rec["step"]), "epoch": m.get("epoch"), "safe": bool(m["safety"]["safe"]),
                    "safety": m["safety"], "quality": q.get("value"), "quality_metric": q.get("metric"),
                    "features": m.get("features"), "n_samples": m.get("n_samples"),
                    "threshold": (m.get("calibration") or {}).get("threshold")})
    return out


def choose_release(checks: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The safe check of best (lowest) quality, the earlier one on a tie; without quality values the
    latest safe check; None when no check is safe."""
    safe = [c for c in checks if c["safe"]]
    if not safe:
        return None
    if all(c["quality"] is not None for c in safe):
        return min(safe, key=lambda c: (c["quality"], c["step"]))
    return max(safe, key=lambda c: c["step"])


def safe_quality(checks: Sequence[dict[str, Any]]) -> float | None:
    """`q*`: the quality of the release (None when no check is safe or checks carry no quality)."""
    best = choose_release(checks)
    return None if best is None else best["quality"]


DENSE_P = 0.5  # a check whose safety p-value is below this is a hint of copying: check every checkpoint from then on


def check_due(step: int, checkpoint_every: int, every: int, checks: Sequence[dict[str, Any]]) -> bool:
    """Does the guard check the checkpoint at `step`? At every `every`-th checkpoint, and at every one once the
    last check hinted at copying (p-value below DENSE_P): checks are dense where copying sets in."""
    if every <= 1 or (step // checkpoint_every) % every == 0:
        return True
    return bool(checks) and checks[-1]["safety"]["p_value"] < DENSE_P


def stop_reason(checks: Sequence[dict[str, Any]], patience: int) -> str | None:
    """The stopping rule: stop once the last `patience` checks were all unsafe (copying has set in; in
    every path we measured it only grew from there, so no later checkpoint would be released). 0: never."""
    if patience < 1 or len(checks) < patience:
        return None
    last = checks[-patience:]
    if any(c["safe"] for c in last):
        return None
    steps = ", ".join(str(c["step"]) for c in last)
    return f"the last {patience} checks (steps {steps}) copied more than unseen images score"


def release_record(checks: Sequence[dict[str, Any]], settings: dict[str, Any], *, stopped: str | None = None,
                   finished: bool = False) -> dict[str, Any]:
    """release.json: the released check (or None, with why), the last check, every check, the settings."""
    best = choose_release(checks)
    last = checks[-1] if checks else None
    return {"released": best, "last": last,
            "why_none": None if best is not None else ("no check yet" if not checks else
                                                       "no checked checkpoint was safe"),
            "checks": [{k: c[k] for k in ("step", "safe", "quality")} | {
                "copy_rate": c["safety"]["copy_rate"], "p_value": c["safety"]["p_value"]} for c in checks],
            "settings": dict(settings), "stopped": stopped, "finished": bool(finished)}


def read_release(run: str | Path) -> dict[str, Any]:
    """A run's release.json; a run without one is refused naming the fix."""
    from diffmem.train.rundir import read_json

    path = Path(run) / RELEASE_JSON
    if not path.is_file():
        raise DiffmemError(f"run {run} has no release ({RELEASE_JSON}); train it with --guard, or release it "
                           f"afterwards with `diffmem release --run {run}`")
    return read_json(path)


def _pts(x: float) -> str:
    return f"{100 * x:.1f}"


def release_sentence(record: dict[str, Any], label: str, unseen: str = "unseen images") -> str:
    """One sentence: 'Released: baseline at step 400, 1.2% copies (unseen images 1.1%, excess at most
    0.9 points), KID_digits-net 0.0123; trained on to step 1200 it copies 73.0%.'"""
    best, last = record.get("released"), record.get("last")
    if best is None:
        head = f"Not released: no checked checkpoint of {label} was safe"
    else:
        s = best["safety"]
        head = (f"Released: {label} at step {best['step']}, {_pts(s['copy_rate'])}% copies ({unseen} "
                f"{_pts(s['heldout_rate'])}%, excess at most {_pts(s['excess_high'])} points, "
                f"{s['n']} samples)")
        if best.get("quality") is not None:
            head += f", {best['quality_metric']} {_num(best['quality'])}"
    if last is not None and (best is None or last["step"] != best["step"]):
        verb = "stopped at" if record.get("stopped") else "trained on to"
        head += (f"; {verb} step {last['step']} it copies {_pts(last['safety']['copy_rate'])}%"
                 + (f" ({last['quality_metric']} {_num(last['quality'])})" if last.get("quality") is not None else ""))
    return head + "."


def uncertified_sampling(settings: dict[str, Any], opts: Any, ema: bool = True) -> list[str]:
    """How drawing with `opts` (a SampleOptions) and these weights differs from how the guard drew the samples
    a certificate covers (EDM Heun at its `sample_steps`, no churn, its `sample_precision`, the EMA weights),
    as flags: [] when it does not."""
    from diffmem.diffusion.sample_options import SampleOptions

    guard = SampleOptions(steps=int(settings.get("sample_steps") or 18),
                          precision=settings.get("sample_precision") or "fp32")
    flags = {"steps": "--steps", "solver": "--solver", "s_churn": "--churn", "precision": "--precision"}
    diff = [f"{flag} {getattr(opts, k)} (the guard's: {getattr(guard, k)})" for k, flag in flags.items()
            if getattr(opts, k) != getattr(guard, k)]
    return diff + ([] if ema else ["--no-ema (the guard's: the EMA weights)"])


def check_line(step: int, check: dict[str, Any], released_step: int | None = None) -> str:
    """One check as a progress line: 'step 400: 1.2% copies, safe, KID_pixels 0.0123 (release so far: step
    400)'. `check`: the monitor's record (its "safety" and optional "quality")."""
    s, q = check.get("safety") or {}, check.get("quality") or {}
    line = f"step {step}: {_pts(s.get('copy_rate', float('nan')))}% copies, {'safe' if s.get('safe') else 'NOT safe'}"
    if q.get("value") is not None:
        line += f", {q['metric']} {_num(q['value'])}"
    return line + (" (release so far: none)" if released_step is None else f" (release so far: step {released_step})")


def _num(x: float) -> str:
    """3 significant digits, whatever the scale (KID is ~1e-3, FD ~1)."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    return f"{x:.{max(0, 2 - int(math.floor(math.log10(abs(x)))))}f}"
