"""Does a check at another size contradict a safe-quality verdict? The pre-registered rule of docs/results.md
(section 7, "The 32x32 check, pre-registered"), written as code before the check's results.

Usage:
    python bench/contradiction_check.py VERDICT_FRONTIER_JSON CHECK_FRONTIER_JSON [--margin 0.15]
    python bench/contradiction_check.py --power [--sd 0.10] [--margin 0.15] [--change 0.2]

The verdict per candidate comes from the first frontier (the 16x16 one: 5 seeds, the rule of docs/method.md).
The check is the second (32x32, 2 seeds), too few seeds for that rule; instead, per candidate, the ratios
`r_s = q*_candidate(s) / q*_best(s)` against the check's own best control (lowest mean ln q*), seed by seed:

- *no difference shown* is contradicted when every seed moves the same way by more than the margin (all
  `r_s` below 1 - margin, or all above 1 + margin);
- *worse* is contradicted when the candidate is better on every seed (all `r_s` < 1); *better* when it is
  worse on every seed (all `r_s` > 1);
- otherwise the verdict is *not contradicted* (which is not a confirmation).

It waits for the whole check: a candidate is judged only when it and every control have a q* on every
seed of the check's configuration (the best control is not known before).

`--power` prints, for independent normal `d_s = ln r_s` with the given seed-to-seed standard deviation, how
often a *no difference shown* verdict would be contradicted when the truth is no change, or a change of
`--change` either way: the closed form `P(all d_s > ln(1 + m)) + P(all d_s < ln(1 - m))`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

from scipy.stats import norm

from diffmem.sweep.safe_quality import qstar_verdicts

MARGIN = 0.15  # pre-registered: "both seeds move the same way by more than 15%"


def contradicts(verdict: str, ratios: Sequence[float], margin: float = MARGIN) -> bool:
    """Whether the check's per-seed q* ratios (candidate / best control) contradict `verdict`."""
    if len(ratios) == 0:
        raise ValueError("no seeds to check")
    if verdict == "no difference shown":
        return all(r < 1 - margin for r in ratios) or all(r > 1 + margin for r in ratios)
    if verdict == "worse":
        return all(r < 1 for r in ratios)
    if verdict == "better":
        return all(r > 1 for r in ratios)
    raise ValueError(f"unknown verdict {verdict!r}")


def contradiction_power(log_change: float, sd: float, seeds: int = 2, margin: float = MARGIN) -> float:
    """P(a *no difference shown* verdict is contradicted) for independent d_s ~ N(log_change, sd^2)."""
    up = 1 - norm.cdf((math.log1p(margin) - log_change) / sd)
    down = norm.cdf((math.log1p(-margin) - log_change) / sd)
    return float(up ** seeds + down ** seeds)


def _qstars(data: dict[str, Any]) -> dict[str, dict[int, float]]:
    """variant -> seed -> q*, for the runs that have one."""
    out: dict[str, dict[int, float]] = {}
    for r in data["runs"]:
        if r.get("qstar") and r["qstar"].get("qstar") is not None:
            out.setdefault(r["variant"], {})[int(r["seed"])] = float(r["qstar"]["qstar"])
    return out


def check(verdict_data: dict[str, Any], check_data: dict[str, Any], margin: float = MARGIN) -> list[dict[str, Any]]:
    """One row per candidate of the check: its verdict, the check's ratios, and the outcome ("contradicted",
    "not contradicted", or "incomplete" while some run of the check has no q*)."""
    verdicts = {v["candidate"]: v["verdict"]["verdict"] for v in qstar_verdicts(verdict_data["runs"])}
    seeds = sorted(int(s) for s in check_data["config"]["seeds"])
    roles = {r["variant"]: r["role"] for r in check_data["runs"]}
    q = _qstars(check_data)
    controls = sorted(v for v, role in roles.items() if role == "control")
    complete = all(sorted(q.get(v, {})) == seeds for v in roles)
    best = min(controls, key=lambda v: sum(math.log(x) for x in q[v].values()) / len(seeds)) if complete else None
    rows = []
    for cand in sorted(v for v, role in roles.items() if role == "candidate"):
        row: dict[str, Any] = {"candidate": cand, "verdict": verdicts.get(cand), "best_control": best, "seeds": seeds}
        if not complete:
            rows.append({**row, "outcome": "incomplete", "ratios": None})
            continue
        ratios = [q[cand][s] / q[best][s] for s in seeds]
        outcome = ("no verdict to check" if row["verdict"] is None else
                   "contradicted" if contradicts(row["verdict"], ratios, margin) else "not contradicted")
        rows.append({**row, "ratios": ratios, "outcome": outcome})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("frontiers", type=Path, nargs="*", help="the verdict's frontier.json, then the check's")
    ap.add_argument("--margin", type=float, default=MARGIN)
    ap.add_argument("--power", action="store_true", help="print the rule's error and power instead")
    ap.add_argument("--sd", type=float, default=0.10, help="--power: seed-to-seed sd of d_s")
    ap.add_argument("--change", type=float, default=0.20, help="--power: the true change of q* to detect")
    a = ap.parse_args()
    if not 0 < a.margin < 1:
        sys.exit(f"--margin {a.margin} must lie in (0, 1)")
    if a.power:
        for label, d in (("no change", 0.0), (f"{a.change:+.0%}", math.log1p(a.change)),
                         (f"{-a.change:+.0%}", math.log1p(-a.change))):
            print(f"true change {label}: contradicted in {contradiction_power(d, a.sd, 2, a.margin):.1%} of checks "
                  f"(2 seeds, sd {a.sd:g}, margin {a.margin:.0%})")
        return
    if len(a.frontiers) != 2:
        sys.exit("pass two frontier.json files: the verdict's, then the check's (or --power)")
    missing = [str(p) for p in a.frontiers if not p.is_file()]
    if missing:
        sys.exit(f"{missing[0]} is not a file; pass each frontier's frontier.json")
    verdict_data, check_data = (json.loads(p.read_text()) for p in a.frontiers)
    if not check_data.get("runs"):
        sys.exit(f"{a.frontiers[1]} holds no finished runs; run its frontier with --report-only first")
    for row in check(verdict_data, check_data, a.margin):
        ratios = ("" if row["ratios"] is None else
                  "; q* / best control's per seed: " + ", ".join(f"{r:.3f}" for r in row["ratios"]))
        print(f"{row['candidate']}: verdict {row['verdict']}; {row['outcome']} (best control "
              f"{row['best_control'] or 'not known yet'}, seeds {row['seeds']}){ratios}")


if __name__ == "__main__":
    main()
