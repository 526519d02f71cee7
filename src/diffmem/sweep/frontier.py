"""Frontiers over training: every run's (quality, copies) path, candidates against slower-clock controls.

A method that only trains more slowly copies less at any one checkpoint, so single checkpoints cannot
separate protection from delay. `run_frontier` trains every variant (the baseline at several learning
rates: the slower-clock controls; Algorithm 1 with each weighting: the candidates) on the same data,
subsets and seeds with one budget, and at `checkpoints` evenly spaced steps draws `n_samples` samples
from the EMA model (the same sampler seeds every time) and records their quality (Frechet distance to
the held-out images) and copy fraction (share above the held-out 99th percentile of nearest-training
similarity). Each run is then a path in the (quality, copies) plane; the baseline's own path is its
early-stopped control. `diffmem.report.frontier` turns the paths into a table, a plot and a verdict (called
from above, by `diffmem frontier`: the report layer sits above the sweep, docs/architecture.md).

```
OUT/frontier.json        configuration, variants, commit, and every run's path
OUT/runs/<run>/          one ordinary run directory per (subset, variant, seed); re-running resumes
OUT/frontier.md, .png    the table, the plot and the verdict (diffmem.report.frontier)
```
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from diffmem.config import TrainConfig, json_ready, with_defaults
from diffmem.diffusion.methods import Ambient, Baseline, method_config
from diffmem.diffusion.weighting import DEFAULT_WEIGHT_CAP, make_weighting
from diffmem.errors import DiffmemError
from diffmem.guard import GuardConfig
from diffmem.lock import holds_lock
from diffmem.train.checks import validate_config
from diffmem.train.rundir import write_json_atomic
from diffmem.utils.outdir import check_out_folder
from diffmem.utils.precision import check_precision
from diffmem.utils.processes import run_spawned

__all__ = ["Variant", "FrontierConfig", "default_variants", "validate_frontier", "run_frontier", "run_paths",
           "FRONTIER_JSON", "CANDIDATE_SIGMA_N", "CANDIDATE_WEIGHTINGS", "CONTROL_LR_FACTORS", "FRONTIER_STEPS"]

FRONTIER_JSON = "frontier.json"

# The defaults of a frontier (and of `diffmem frontier`'s flags); FrontierConfig's fields hold the rest.
CANDIDATE_SIGMA_N = 1.0  # Algorithm 1's sigma_n for the candidates
CANDIDATE_WEIGHTINGS: tuple[str, ...] = ("plain", "compensated", "capped")  # one candidate each
CONTROL_LR_FACTORS: tuple[float, ...] = (1.0, 0.5, 0.25)  # the baseline at lr times each: the slower clocks
FRONTIER_STEPS = 4000  # training steps of every run


@dataclass(frozen=True)
class Variant:
    """One training recipe: a method (with its weighting and sigma_n) and a learning-rate factor.

    `role`: "control" (the baseline, possibly slowed down) or "candidate" (compared against every control).
    """

    label: str
    method: str = Baseline.name
    sigma_n: float = 0.0
    ambient_weight: str = "plain"
    weight_cap: float = DEFAULT_WEIGHT_CAP
    lr_factor: float = 1.0
    role: str = "control"

    @property
    def slug(self) -> str:
        """Folder-safe name, e.g. `edm-lr0.25` or `ambient-capped4-sn1`."""
        if self.method == Baseline.name:
            return f"{self.method}-lr{self.lr_factor:g}"
        w = make_weighting(self.ambient_weight, self.weight_cap).label().replace(" ", "")
        lr = f"-lr{self.lr_factor:g}" if self.lr_factor != 1 else ""
        return f"{self.method}-{w}-sn{self.sigma_n:g}{lr}"


def default_variants(sigma_n: float | tuple[float, ...] = CANDIDATE_SIGMA_N,
                     weightings: tuple[str, ...] = CANDIDATE_WEIGHTINGS,
                     lr_factors: tuple[float, ...] = CONTROL_LR_FACTORS,
                     weight_cap: float = DEFAULT_WEIGHT_CAP) -> tuple[Variant, ...]:
    """Controls: the baseline at lr x each factor. Candidates: Algorithm 1 at each `sigma_n` (one value or
    several) with each weighting, sigma_n-major."""
    sigmas = (sigma_n,) if isinstance(sigma_n, (int, float)) else tuple(sigma_n)
    controls = [Variant(f"baseline, lr x{f:g}", Baseline.name, lr_factor=f) for f in lr_factors]
    cands = [Variant(f"Algorithm 1, {make_weighting(w, weight_cap).label()}, sigma_n {sn:g}",
                     Ambient.name, sn, w, weight_cap, role="candidate") for sn in sigmas for w in weightings]
    return (*controls, *cands)


@dataclass(frozen=True)
class FrontierConfig:
    """`base` fixes data, network and budget (steps, batch, base lr); variants x subsets x seeds are the runs."""

    base: TrainConfig
    variants: tuple[Variant, ...]
    subsets: tuple[int, ...] = (100,)
    seeds: tuple[int, ...] = (0, 1, 2)
    checkpoints: int = 8
    n_samples: int = 500
    sample_steps: int = 18
    features: str = "pixels"
    quality_features: str = "digits-net"
    quality_metric: str = "kid"  # the guard's quality metric: "kid" (unbiased) or "fd"
    patience: int = 2  # the guard's stopping rule: stop after this many unsafe checks in a row (0: never)
    check_every: int = 1  # the guard checks every k-th checkpoint, and every one where copying may set in
    precision: str = "fp32"  # training's forward pass: "fp32" or "bf16" autocast
    sample_precision: str = "fp32"  # the checks' sampler: "fp32" or "bf16" autocast (GuardConfig)
    extras: dict[str, Any] = field(default_factory=dict)  # recorded as is (e.g. the code's commit)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["base"] = self.base.to_dict()
        return json_ready(d)


def validate_frontier(fc: FrontierConfig) -> None:
    """Refuse a frontier a user got wrong, naming the flag (every variant's first run: `validate_config`)."""
    if fc.checkpoints < 2:
        raise DiffmemError(f"--checkpoints must be at least 2 (points along each path), got {fc.checkpoints}")
    if fc.n_samples < 50:
        raise DiffmemError(f"--n-samples must be at least 50 to separate copy fractions, got {fc.n_samples}")
    if not fc.subsets or any(s < 2 for s in fc.subsets):
        raise DiffmemError("--subset needs training-set sizes of at least 2 (held-out images are the reference)")
    if not fc.seeds:
        raise DiffmemError("--seeds is empty")
    if not fc.variants:
        raise DiffmemError("no variants to run")
    check_precision(fc.precision, "--precision")
    check_precision(fc.sample_precision, "--sample-precision")
    slugs = [v.slug for v in fc.variants]
    if len(set(slugs)) != len(slugs):
        raise DiffmemError(f"two variants share a name: {slugs}")
    if not any(v.role == "control" for v in fc.variants):
        raise DiffmemError("a frontier needs at least one control (the baseline, e.g. --lr-factors 1)")
    for v in fc.variants:
        if not v.lr_factor > 0:
            raise DiffmemError(f"--lr-factors must be positive, got {v.lr_factor}")
        validate_config(run_config(fc, v, fc.subsets[0], fc.seeds[0]))
    from diffmem.guard import validate_guard

    validate_guard(guard_config(fc), run_config(fc, fc.variants[0], fc.subsets[0], fc.seeds[0]))


def run_config(fc: FrontierConfig, v: Variant, subset: int, seed: int) -> TrainConfig:
    """The TrainConfig of one run: `base` with the variant's method and lr, the subset and the seed; each
    seed draws its own training subset (`subset_seed = seed`), the same for every variant. A control at
    lr x f checkpoints every `1/f` times as many steps, so every path is checked as densely along its way
    (a slower clock gains no finer look at where copying sets in)."""
    b = fc.base
    every = max(1, round(b.optim.steps / fc.checkpoints / v.lr_factor))
    return dataclasses.replace(
        b, data=dataclasses.replace(b.data, subset=subset, subset_seed=seed),
        method=method_config(v.method, sigma_n=v.sigma_n, ambient_weight=v.ambient_weight, weight_cap=v.weight_cap),
        optim=dataclasses.replace(b.optim, lr=b.optim.lr * v.lr_factor), seed=seed, checkpoint_every=every)


def run_name(v: Variant, subset: int, seed: int) -> str:
    return f"n{subset}-{v.slug}-seed{seed}"


def guard_config(fc: FrontierConfig) -> GuardConfig:
    """The guard every run of the frontier trains with (its checks are the points of the paths)."""
    return GuardConfig(n_samples=fc.n_samples, features=fc.features, quality_features=fc.quality_features,
                       quality_metric=fc.quality_metric, patience=fc.patience, sample_steps=fc.sample_steps,
                       every=fc.check_every, sample_precision=fc.sample_precision)


def _train_one(fc: FrontierConfig, v: Variant, subset: int, seed: int, run: str,
               device: str, verbose: bool = True) -> tuple[str, float | None]:
    """Train (or resume) one guarded run (checks at every checkpoint, the stopping rule), printing a line per
    check when `verbose`; returns (run, seconds). A finished run is left as it is (seconds None)."""
    from diffmem.guard import make_guard
    from diffmem.train.checkpoint import checkpoint_steps
    from diffmem.train.loop import train
    from diffmem.train.rundir import DONE

    t0 = time.perf_counter()
    if (Path(run) / DONE).is_file():
        return run, None
    cfg = run_config(fc, v, subset, seed)
    name, kept = Path(run).name, checkpoint_steps(Path(run))
    echo = (lambda line: print(f"[frontier] {name} {line}", flush=True)) if verbose else None
    if echo is not None:
        echo(f"resumes from step {kept[-1]}" if kept else "starts")
    guard = make_guard(cfg, guard_config(fc), run, device=device, echo=echo)
    train(cfg, run, device=device, progress=False, monitor=guard, monitor_every=cfg.checkpoint_every,
          precision=fc.precision)
    return run, time.perf_counter() - t0


def run_paths(run: str | Path) -> list[dict[str, Any]]:
    """The (step, epoch, quality, copies, safe) points of one run, from the monitor records in its log
    (`safe`: the safety test's answer; None for records written before the test existed)."""
    from diffmem.monitor import CALIBRATED_KEY, monitor_records

    pts = []
    for rec in monitor_records(run):
        m = rec["monitor"]
        q = (m.get("quality") or {}).get("value")
        c = (m.get("fraction_above_calibrated") or {}).get(CALIBRATED_KEY)
        held = ((m.get("heldout") or {}).get("fraction_above_calibrated") or {}).get(CALIBRATED_KEY)
        safety = m.get("safety") or {}
        pts.append({"step": int(rec["step"]), "epoch": m.get("epoch"), "quality": q, "copies": c,
                    "heldout_copies": held, "n": m.get("n_samples"), "safe": safety.get("safe"),
                    "p_value": safety.get("p_value"), "excess_high": safety.get("excess_high")})
    return pts


def run_checks(run: str | Path) -> list[dict[str, Any]]:
    """The guard's checks of one run (diffmem.release.checks_of over its log)."""
    from diffmem.monitor import monitor_records
    from diffmem.release import checks_of

    return checks_of(monitor_records(run))


def _stopped(run: Path) -> dict[str, Any] | None:
    """{"step", "reason"} when the guard stopped the run early (done.json), else None."""
    from diffmem.train.rundir import DONE, read_json

    done = read_json(run / DONE) if (run / DONE).is_file() else {}
    return {"step": done.get("step"), "reason": done["stopped"]} if done.get("stopped") else None


def _log_means(run: Path, records: list[dict[str, Any]] | None = None) -> dict[str, float | None]:
    """Mean batch-loss spread and Adam update RMS over the run's logged steps (the mechanism columns), and
    `seconds`: what the run's logged work took, its training (each logged window's images / its logged
    images/s, which counts training only) plus every check's own seconds (`diffmem.monitor.cost_of`). A pause
    between sessions is not in it, nor are checkpoint writes; a report written later (--report-only, a merge)
    keeps what its runs cost. `records`: the run's log, when the caller has read it already."""
    import numpy as np

    from diffmem.monitor import cost_of
    from diffmem.train.rundir import log_records

    records = log_records(run) if records is None else records
    vals = {k: [float(r[k]) for r in records if isinstance(r.get(k), (int, float))]
            for k in ("loss_std", "update_rms", "loss")}
    means: dict[str, float | None] = {k: (float(np.mean(v)) if v else None) for k, v in vals.items()}
    checks, training = cost_of(records)
    return {**means, "seconds": None if training is None else training + checks}


# what may change between commands on one frontier folder: which runs it holds (a pre-registered frontier
# may be trained in parts, docs/results.md section 7); `extras` is a record (e.g. the code's commit)
PER_COMMAND = ("variants", "subsets", "seeds", "extras")


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in PER_COMMAND}


def check_same_frontier(fc: FrontierConfig, out: Path) -> None:
    """Refuse a command on a frontier folder whose runs were trained or checked with other settings: its runs
    would mix two instruments. A setting the folder's frontier.json lacks (written by an older diffmem, before
    the setting existed) counts as its default, which keeps the old behaviour."""
    from diffmem.train.rundir import config_diff, read_json

    before = read_json(out / FRONTIER_JSON).get("config") if (out / FRONTIER_JSON).is_file() else None
    if not before:
        return
    diff = config_diff(_settings(with_defaults(before, FrontierConfig)), _settings(fc.to_dict()))
    if diff:
        raise DiffmemError(f"{out} holds a frontier with other settings ({'; '.join(diff[:4])}); repeat its flags "
                           "(only --seeds, --subset, --sigma-n, --weightings, --lr-factors may change), or pass "
                           "another --out")


def _took(seconds: float | None) -> str:
    return "finished earlier, kept as it is" if seconds is None else f"{seconds:.0f}s"


@holds_lock("out")
def run_frontier(fc: FrontierConfig, out: str | Path, *, device: str = "cpu", jobs: int = 1,
                 echo: Callable[[str], None] = print, report_only: bool = False,
                 verbose: bool = True) -> dict[str, Any]:
    """Train every (subset, variant, seed) with the monitor, collect the paths, write frontier.json; returns the
    collected data, from which `diffmem.report.frontier.write_report` writes the report. Re-running resumes
    unfinished runs and skips finished ones; `verbose`: each run prints a line per check to stdout, from the
    process that trains it.
    `report_only`: train nothing; report the runs that have finished so far."""
    from diffmem.train.rundir import DONE

    validate_frontier(fc)
    out = Path(out)
    check_out_folder(out, kind="frontier", is_own=lambda p: (p / FRONTIER_JSON).is_file())
    check_same_frontier(fc, out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / FRONTIER_JSON).is_file():  # marks the folder as a frontier from the start, so a re-run resumes
        write_json_atomic(out / FRONTIER_JSON, {"config": fc.to_dict(), "runs": None})
    runs = [(v, n, s, out / "runs" / run_name(v, n, s)) for n in fc.subsets for s in fc.seeds for v in fc.variants]
    echo(f"[frontier] {len(runs)} runs ({len(fc.variants)} variants x {len(fc.subsets)} subsets x "
         f"{len(fc.seeds)} seeds), {fc.checkpoints} checkpoints each, {jobs} at a time")
    t0 = time.perf_counter()
    if report_only:
        runs = [r for r in runs if (r[3] / DONE).is_file()]
        echo(f"[frontier] reporting the {len(runs)} finished runs")
        if not runs:
            raise DiffmemError(f"no run in {out} has finished yet; run without --report-only to train them")
    elif jobs == 1:
        for i, (v, n, s, run) in enumerate(runs):
            _, sec = _train_one(fc, v, n, s, str(run), device, verbose)
            echo(f"[frontier] {i + 1}/{len(runs)} {run.name}: {_took(sec)}")
    else:
        finished = []

        def done(task: tuple, result: tuple[str, float | None]) -> None:
            finished.append(result[0])
            echo(f"[frontier] {len(finished)}/{len(runs)} {Path(result[0]).name}: {_took(result[1])}")

        run_spawned(_train_one, [(fc, v, n, s, str(run), device, verbose) for v, n, s, run in runs], jobs=jobs,
                    on_done=done)
    from diffmem.sweep.safe_quality import run_qstar

    data = {"config": fc.to_dict(), "seconds": time.perf_counter() - t0, "runs": [
        {"name": run.name, "variant": v.label, "slug": v.slug, "role": v.role, "subset": n, "seed": s,
         "path": run_paths(run), "qstar": run_qstar(run_checks(run)), "stopped": _stopped(run),
         **_log_means(run)} for v, n, s, run in runs]}
    write_json_atomic(out / FRONTIER_JSON, data)
    return data
