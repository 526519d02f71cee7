"""Safe quality decides between methods: a paired comparison of `q*` over seeds (docs/method.md,
"Deciding between methods by safe quality").

`q*` of a run is the quality of its release (`diffmem.release.safe_quality`: the best quality among its
checks that pass the safety test; lower is better). A run with no safe check gets its worst checked
quality (it never reached a safe model better than that), and the row says so.

For a candidate against a control, seed by seed (each seed trains both on its own subset):
`d_s = ln q*_candidate(s) - ln q*_control(s)`. With `S` seeds, mean `d` and standard error `se`, the
one-sided 95% bounds are `d -+ t(0.95, S-1) se` (Student's t). The candidate's safe quality is **better**
when the upper bound is below 0, **worse** when the lower bound is above 0, otherwise **no difference
shown**; the 90% interval of `exp(d) - 1` (the relative change of q*) is reported. The *best control*
is the control variant of lowest mean `ln q*`; the verdict is against it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = ["run_qstar", "paired_comparison", "qstar_verdicts", "CONFIDENCE"]

CONFIDENCE = 0.95  # one-sided; the interval reported is the two-sided 1 - 2 (1 - CONFIDENCE) = 90% one


def run_qstar(checks: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """{"qstar", "step", "safe_found"} of one run's checks (diffmem.release.checks_of)."""
    from diffmem.release import choose_release

    best = choose_release(checks)
    if best is not None and best["quality"] is not None:
        return {"qstar": float(best["quality"]), "step": best["step"], "safe_found": True}
    worst = max((c for c in checks if c["quality"] is not None), key=lambda c: c["quality"], default=None)
    if worst is None:
        return {"qstar": None, "step": None, "safe_found": best is not None}
    return {"qstar": float(worst["quality"]), "step": worst["step"], "safe_found": False}


def paired_comparison(cand: dict[int, float], ctrl: dict[int, float],
                      confidence: float = CONFIDENCE) -> dict[str, Any]:
    """The paired log-ratio test of `q*` (seed -> value, lower is better) on the seeds both have."""
    from scipy.stats import t as student

    seeds = sorted(set(cand) & set(ctrl))
    d = np.array([math.log(cand[s]) - math.log(ctrl[s]) for s in seeds], dtype=np.float64)
    out: dict[str, Any] = {"seeds": seeds, "log_ratios": d.tolist()}
    if len(d) < 2:
        return {**out, "verdict": "too few seeds", "mean": float(d.mean()) if len(d) else None,
                "low": None, "high": None, "change": None, "change_low": None, "change_high": None}
    mean, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))
    tq = float(student.ppf(confidence, len(d) - 1))
    low, high = mean - tq * se, mean + tq * se
    verdict = "better" if high < 0 else "worse" if low > 0 else "no difference shown"
    return {**out, "verdict": verdict, "mean": mean, "se": se, "low": low, "high": high,
            "change": math.expm1(mean), "change_low": math.expm1(low), "change_high": math.expm1(high)}


def qstar_verdicts(runs: Sequence[dict[str, Any]], confidence: float = CONFIDENCE) -> list[dict[str, Any]]:
    """Per subset and candidate: its comparison with the best control (lowest mean ln q*) and with every
    control. `runs`: dicts with "subset", "variant", "role", "seed" and "qstar" (run_qstar's)."""
    out = []
    for subset in sorted({r["subset"] for r in runs}):
        rows = [r for r in runs if r["subset"] == subset and r["qstar"]["qstar"] is not None]
        by_variant: dict[str, dict[int, float]] = {}
        roles: dict[str, str] = {}
        for r in rows:
            by_variant.setdefault(r["variant"], {})[int(r["seed"])] = r["qstar"]["qstar"]
            roles[r["variant"]] = r["role"]
        controls = [v for v in by_variant if roles[v] == "control"]
        if not controls:
            continue
        best = min(controls, key=lambda v: float(np.mean(np.log(list(by_variant[v].values())))))
        for cand in (v for v in by_variant if roles[v] == "candidate"):
            against = {c: paired_comparison(by_variant[cand], by_variant[c], confidence) for c in controls}
            out.append({"subset": subset, "candidate": cand, "best_control": best, "verdict": against[best],
                        "against": against})
    return out
