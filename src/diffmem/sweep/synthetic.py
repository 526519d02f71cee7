"""Synthetic training paths with a known answer, to measure the power of the decision rules.

docs/method.md, "Deciding between methods by safe quality". A run is a sequence of checks at
`steps`; at step t its true quality (lower is better) is `Q(t) = base (1 + amp exp(-f t / tau))` and its
true copy probability `c(t) = c_max / (1 + exp(-(f t - onset) / width))`, `f` the run's clock (1 for the
baseline, 1/2 and 1/4 for the slower-clock controls). A check draws `n` samples: each copies with
probability `c(t)` and otherwise scores like an unseen image, above the threshold with the rate `q0` of
its seed's held-out calibration (drawn from the Beta law of `diffmem.safety`, shared by every
variant of a seed, as the held-out images are). Observed quality is `Q(t)` times log-normal noise:
`seed_sd` shared by the variants of a seed (its subset), `run_sd` per run (training randomness) and
`check_sd` per check (the metric's sampling noise). The guard's safety test and stopping rule run on
the draws as on real runs, going back to the skipped checkpoints when a check is unsafe or hints at
copying, as the guard does.

A candidate is the baseline with its copies scaled by `copy_factor` and its quality by `quality_factor`;
identical means both 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from diffmem.safety import Calibration, safety_test
from diffmem.release import DENSE_P, check_due, stop_reason

__all__ = ["PathModel", "synthetic_checks", "synthetic_frontier"]


@dataclass(frozen=True)
class PathModel:
    """The true paths and noise of a synthetic frontier (defaults: shaped like the 50-digit frontier of
    docs/results.md, section 0: copying sets in near step 400 at full speed)."""

    steps: tuple[int, ...] = tuple(range(50, 3201, 50))  # the baseline's checkpoints (a clock f: every 50 / f)
    every: int = 4  # the guard checks every 4th checkpoint, and every one once copying may have set in
    base: float = 1.0
    amp: float = 4.0
    tau: float = 500.0
    onset: float = 700.0
    width: float = 100.0
    c_max: float = 0.9
    n_samples: int = 1000
    n_heldout: int = 1747
    seed_sd: float = 0.15
    run_sd: float = 0.05
    check_sd: float = 0.03
    patience: int = 2
    level: float = 0.05


def synthetic_checks(model: PathModel, rng: np.random.Generator, *, clock: float = 1.0, q0: float,
                     seed_effect: float, copy_factor: float = 1.0,
                     quality_factor: float = 1.0) -> list[dict[str, Any]]:
    """One run's checks (as diffmem.release.checks_of returns them), cut by the stopping rule."""
    cal = Calibration(0.0, model.n_heldout)
    run_effect = math.exp(rng.normal(0.0, model.run_sd))

    def check(t: int) -> dict[str, Any]:
        x = clock * t
        quality = quality_factor * model.base * (1 + model.amp * math.exp(-x / model.tau))
        quality *= seed_effect * run_effect * math.exp(rng.normal(0.0, model.check_sd))
        c = copy_factor * model.c_max / (1 + math.exp(-(x - model.onset) / model.width))
        k = int(rng.binomial(model.n_samples, c + (1 - c) * q0))
        s = safety_test(k, model.n_samples, cal, model.level).to_dict()
        return {"step": t, "epoch": None, "safe": s["safe"], "safety": s, "quality": quality,
                "quality_metric": "synthetic", "features": "synthetic", "n_samples": model.n_samples,
                "threshold": None, "heldout_copies": 0.01}

    checks: list[dict[str, Any]] = []
    every = max(1, round(model.steps[0] / clock))  # checkpoints as dense along the path as the baseline's
    grid = range(every, model.steps[-1] + 1, every)
    skipped: list[int] = []
    for t in grid:
        if t != grid[-1] and not check_due(t, every, model.every, checks):
            skipped.append(t)
            continue
        checks.append(check(t))
        if model.every > 1 and (not checks[-1]["safe"] or checks[-1]["safety"]["p_value"] < DENSE_P):
            checks = sorted(checks + [check(k) for k in skipped], key=lambda c: c["step"])  # as the guard
        skipped = []
        if stop_reason(checks, model.patience):
            break
    return checks


def synthetic_frontier(model: PathModel, rng: np.random.Generator, seeds: int, *, copy_factor: float = 1.0,
                       quality_factor: float = 1.0,
                       clocks: tuple[float, ...] = (1.0, 0.5, 0.25)) -> list[dict[str, Any]]:
    """Runs of one synthetic frontier: the baseline at each clock (controls) and one candidate, per seed;
    each run carries its `checks` and the fields `qstar_verdicts` reads (q* computed by run_qstar)."""
    from diffmem.sweep.safe_quality import run_qstar

    cal = Calibration(0.0, model.n_heldout)
    runs = []
    for seed in range(seeds):
        q0 = float(rng.beta(cal.a, cal.b))
        effect = math.exp(rng.normal(0.0, model.seed_sd))
        variants = [(f"baseline, clock x{f:g}", "control", f, 1.0, 1.0) for f in clocks]
        variants.append(("candidate", "candidate", 1.0, copy_factor, quality_factor))
        for label, role, clock, cf, qf in variants:
            checks = synthetic_checks(model, rng, clock=clock, q0=q0, seed_effect=effect, copy_factor=cf,
                                      quality_factor=qf)
            runs.append({"subset": 50, "variant": label, "slug": label, "role": role, "seed": seed,
                         "checks": checks, "qstar": run_qstar(checks)})
    return runs
