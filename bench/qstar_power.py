"""How often does the safe-quality rule call a candidate better, on synthetic paths with a known answer?

Usage: python bench/qstar_power.py [--draws 200] [--seeds 5,10,15]

Prints, per scenario (identical to the baseline; 4x fewer copies at equal quality; 10% better quality at
equal copies), seed count and set of controls, the share of draws the rule of docs/method.md
("Deciding between methods by safe quality") calls the candidate better / worse, and the share the
earlier path rule (excess copies at most 1/3 of every control's at equal quality) says it passes. The
paths and their noise are `diffmem.sweep.synthetic.PathModel`'s defaults (printed first).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from diffmem.report.frontier import aggregate, verdicts
from diffmem.sweep.safe_quality import qstar_verdicts
from diffmem.sweep.synthetic import PathModel, synthetic_frontier

SCENARIOS = {"identical": {}, "4x fewer copies, equal quality": {"copy_factor": 0.25},
             "10% better quality, equal copies": {"quality_factor": 0.9}}
CONTROLS = {"baseline x1 only": (1.0,), "baseline x1, x1/2, x1/4": (1.0, 0.5, 0.25)}


def _with_paths(runs: list[dict]) -> list[dict]:
    """The synthetic runs in the frontier report's format, for the earlier path rule."""
    for r in runs:
        r["path"] = [{"step": c["step"], "epoch": c["step"], "quality": c["quality"],
                      "copies": c["safety"]["copy_rate"], "heldout_copies": 0.01, "n": c["n_samples"]}
                     for c in r["checks"]]
    return runs


def power(model: PathModel, seeds: int, draws: int, clocks: tuple[float, ...], rng: np.random.Generator,
          **candidate: float) -> dict[str, float]:
    """Shares of draws called better / worse by the q* rule, and passing the earlier rule."""
    better = worse = passes = 0
    for _ in range(draws):
        runs = _with_paths(synthetic_frontier(model, rng, seeds, clocks=clocks, **candidate))
        v = qstar_verdicts(runs)[0]["verdict"]["verdict"]
        better += v == "better"
        worse += v == "worse"
        passes += verdicts(aggregate(runs))[0]["passes"]
    return {"better": better / draws, "worse": worse / draws, "earlier rule passes": passes / draws}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--seeds", default="5,10,15")
    ap.add_argument("--rng", type=int, default=0)
    args = ap.parse_args()
    model = PathModel()
    print("path model:", dataclasses.asdict(model) | {"steps": f"{model.steps[0]}..{model.steps[-1]}"})
    print(f"{args.draws} draws per row\n")
    print("| candidate | seeds | controls | called better | called worse | earlier rule passes |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(args.rng)
    t0 = time.perf_counter()
    for name, cand in SCENARIOS.items():
        for seeds in (int(s) for s in args.seeds.split(",")):
            for cname, clocks in CONTROLS.items():
                p = power(model, seeds, args.draws, clocks, rng, **cand)
                print(f"| {name} | {seeds} | {cname} | {p['better']:.0%} | {p['worse']:.0%} | "
                      f"{p['earlier rule passes']:.0%} |", flush=True)
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
