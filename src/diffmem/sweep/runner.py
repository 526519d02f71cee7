"""Run a sweep: train, sample, audit and measure every point with the same budget; resumable, parallel.

```
DIR/sweep.json              the sweep's configuration and its points
DIR/commitment-n<N>.json    commitment curve and default sigma_n grid (when --sigma-n is not given)
DIR/runs/<point>/           one training run per point (a normal run directory) plus its measurements
DIR/results.csv, .json      one row per run
DIR/results.md              the table in the paper's shape (markdown)
DIR/summary.txt             the seed-averaged table and the rule of thumb for sigma_n
DIR/pareto.png              quality distance against copy fraction, Pareto front joined, baseline marked
DIR/monitor.png             copy rate over training for every run (with monitoring)
```
A point whose run finished and was measured with the same options is skipped; an interrupted
training resumes from its last checkpoint (see `diffmem.train.loop.train`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from diffmem.errors import DiffmemError
from diffmem.utils.processes import run_spawned, worker_device
from diffmem.sweep.evaluation import evaluate_run, finished_result
from diffmem.sweep.pareto import choose_sigma_n, plot_pareto, rule_of_thumb_text
from diffmem.sweep.results import format_table, markdown_tables, param_column, write_results
from diffmem.sweep.spec import GRID_FIELD, SweepConfig, SweepPoint, point_config, sweep_points, validate_sweep
from diffmem.utils.atomic import write_json_atomic
from diffmem.utils.outdir import check_out_folder

__all__ = ["SweepResult", "run_sweep", "run_point", "default_grids", "write_outputs", "RUNS", "SWEEP_JSON"]

RUNS, SWEEP_JSON = "runs", "sweep.json"


@dataclass
class SweepResult:
    """What `run_sweep` did: rows in point order, which points it trained / only measured / skipped."""

    rows: list[dict[str, Any]]
    trained: list[str] = field(default_factory=list)
    evaluated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    choices: list[dict[str, Any]] = field(default_factory=list)
    table: str = ""
    files: dict[str, Path] = field(default_factory=dict)


def default_grids(sc: SweepConfig, out: Path, echo: Callable[[str], None] = print) -> dict[int | None, tuple[float, ...]]:
    """The sigma_n grid of every subset from its commitment curve (`diffmem.theory.default_sigma_grid`).

    The curve is computed once per subset and kept in `out/commitment-n<N>.json`, so a resumed sweep
    uses the same grid. Returns {} when no point needs sigma_n or `sc.values` gives it.
    """
    import torch

    from diffmem.data.datasets import to_model_range
    from diffmem.theory.commitment import DEFAULT_SIGMAS, commitment_curve, default_sigma_grid, suggest_sigma_n
    from diffmem.train.loop import select_train_images

    if sc.values.get(GRID_FIELD) is not None or not any(param_column(m) == GRID_FIELD for m in sc.methods):
        return {}
    grids: dict[int | None, tuple[float, ...]] = {}
    for subset in sc.subsets:
        cfg = point_config(sc, SweepPoint("edm", subset=subset))
        source, train_idx, held_idx = select_train_images(cfg)
        path = out / f"commitment-n{subset if subset is not None else 'all'}.json"
        key = {"content_hash": source.content_hash(), "train_indices": train_idx.tolist()}
        saved = None
        if path.is_file():
            try:
                saved = json.loads(path.read_text())
            except json.JSONDecodeError:
                saved = None
        if saved and saved.get("key") == key:
            grids[subset] = tuple(saved["grid"])
            continue
        train = to_model_range(source.subset(train_idx).images)
        held = to_model_range(source.subset(held_idx).images) if len(held_idx) else None
        curve = commitment_curve(train, held, DEFAULT_SIGMAS, torch.Generator().manual_seed(0))
        grid = tuple(default_sigma_grid(curve))
        suggestion = suggest_sigma_n(curve)
        write_json_atomic(path, {"key": key, "grid": list(grid), "suggestion": suggestion, "curve": curve})
        grids[subset] = grid
        echo(f"[sweep] {subset or 'all'} training images: default sigma_n grid {', '.join(f'{s:g}' for s in grid)} "
             f"(commitment window {suggestion['window'][0]:.3g}-{suggestion['window'][1]:.3g}, "
             f"suggested {suggestion['suggested']:.3g}; {path.name})")
    return grids


def run_point(sc: SweepConfig, point: SweepPoint, run_dir: str | Path, device: str = "cpu",
              cache_dir: str | Path | None = None, progress: bool = False) -> tuple[dict[str, Any], str]:
    """Train (or resume) and measure one point; returns (row, "trained" | "evaluated" | "skipped")."""
    from diffmem.train.loop import train
    from diffmem.train.rundir import CONFIG, DONE, stored_config

    run = Path(run_dir)
    cfg = point_config(sc, point)
    want = json.loads(json.dumps(cfg.to_dict()))
    if (run / CONFIG).is_file():
        have = stored_config(run / CONFIG)  # as written today (an older run's flat method section too)
        if have != want:
            from diffmem.train.rundir import config_diff

            diff = "; ".join(config_diff(have, want)[:4])
            raise DiffmemError(f"{run} holds a run with another configuration ({diff}); a sweep with another "
                               "budget or data needs another --out (or delete that folder)")
    row = finished_result(run, sc.eval)
    if row is not None:
        return row, "skipped"
    status = "evaluated"
    if not (run / DONE).is_file():
        monitor = None
        if sc.monitor_every > 0:
            from diffmem.monitor import make_monitor

            monitor = make_monitor(cfg, n_samples=sc.monitor_samples, features=sc.eval.features[0], device=device,
                                   seed=sc.eval.sample_seed, cache_dir=cache_dir)
        train(cfg, run, device=device, progress=progress, monitor=monitor, monitor_every=sc.monitor_every)
        status = "trained"
        if monitor is not None:
            from diffmem.monitor import plot_monitor

            plot_monitor(run)
    row = evaluate_run(run, sc.eval, name=point.name, device=device, cache_dir=cache_dir, progress=progress)
    return row, status


def _finished(sc: SweepConfig, point: SweepPoint, run: Path) -> dict[str, Any] | None:
    """The stored row of a point that finished with this sweep's configuration and evaluation, else None."""
    from diffmem.train.rundir import stored_config

    try:
        have = stored_config(run / "config.json")
    except DiffmemError:
        return None
    if have != json.loads(json.dumps(point_config(sc, point).to_dict())):
        return None
    return finished_result(run, sc.eval)


# ---------------------------------------------------------------------------------------------------
# worker processes

def _task(sc: SweepConfig, point: SweepPoint, run_dir: str, device: str, cache_dir: str | None,
          progress: bool) -> tuple[dict[str, Any], str, float]:
    t0 = time.perf_counter()
    row, status = run_point(sc, point, run_dir, worker_device(device), cache_dir, progress)
    return row, status, time.perf_counter() - t0


def _prepare_features(sc: SweepConfig, device: str) -> None:
    """Build every feature extractor once before training: refuses unknown names early, and trains
    (and caches) digits-net once instead of in every worker."""
    from diffmem.data.datasets import load_images
    from diffmem.evaluate.features import get_extractor

    d = sc.base.data
    res = d.resolution or load_images(d.spec, d.resolution, resize=d.resize).resolution
    for name in (*sc.eval.features, sc.eval.quality_name(d.spec)):
        get_extractor(name, device, resolution=res)


def run_sweep(sc: SweepConfig, out: str | Path, *, device: str = "cpu", jobs: int = 1,
              cache_dir: str | Path | None = None, progress: bool = True,
              echo: Callable[[str], None] = print, points: list[SweepPoint] | None = None) -> SweepResult:
    """Train, sample, audit and measure every point of `sc` into `out`; write the tables and plots.

    `jobs > 1` runs points in that many spawned processes, each with `cores // jobs` torch threads;
    with `device="cuda"` and several GPUs each process takes its own GPU. `cache_dir`: feature cache
    (None: `$DIFFMEM_CACHE` or ~/.cache/diffmem). `points`: run exactly these instead of the grid of
    `sc` (which then only supplies the budget and the evaluation), e.g. to add chosen points later.
    """
    from diffmem.evaluate.cache import cache_root

    validate_sweep(sc)
    if jobs < 1:
        raise DiffmemError(f"--jobs must be a positive integer, got {jobs}")
    out = Path(out)
    check_out_folder(out, kind="sweep", is_own=lambda p: (p / SWEEP_JSON).is_file())
    cache = str(cache_dir if cache_dir is not None else cache_root())
    _prepare_features(sc, device)
    out.mkdir(parents=True, exist_ok=True)
    points = _plan(sc, out, points, echo)
    result = SweepResult(rows=[])
    rows = _run_points(sc, points, out / RUNS, result, device, cache, jobs, progress, echo)
    result.rows = [rows[p.name] for p in points]
    result.files = write_outputs(result.rows, out, sc.tolerance, monitor={p.name: out / RUNS / p.name for p in points}
                                 if sc.monitor_every > 0 else None)
    result.choices = choose_sigma_n(result.rows, sc.tolerance)
    result.table = (out / "summary.txt").read_text()
    return result


def _plan(sc: SweepConfig, out: Path, points: list[SweepPoint] | None,
          echo: Callable[[str], None]) -> list[SweepPoint]:
    """The points to run (the grid of `sc` unless given), recorded in DIR/sweep.json."""
    grids = default_grids(sc, out, echo) if points is None else {}
    if points is None:
        points = sweep_points(sc, grids)
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        raise DiffmemError("the sweep lists a point twice: " + ", ".join(sorted({n for n in names if names.count(n) > 1})))
    write_json_atomic(out / SWEEP_JSON, {"config": sc.to_dict(), "grids": {str(k): list(v) for k, v in grids.items()},
                                         "points": [p.name for p in points]})
    return points


def _run_points(sc: SweepConfig, points: list[SweepPoint], runs: Path, result: SweepResult, device: str,
                cache: str, jobs: int, progress: bool, echo: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """Skip the finished points, run the others (in `jobs` processes); rows by point name. Fills in
    `result`'s trained / evaluated / skipped lists."""
    runs.mkdir(exist_ok=True)
    rows: dict[str, dict[str, Any]] = {}
    pending = []
    for p in points:
        row = _finished(sc, p, runs / p.name)
        if row is not None:
            rows[p.name] = row
            result.skipped.append(p.name)
        else:
            pending.append(p)
    echo(f"[sweep] {len(points)} points: {len(result.skipped)} finished, {len(pending)} to run"
         + (f" in {min(jobs, len(pending))} processes" if jobs > 1 and len(pending) > 1 else ""))

    def done(p: SweepPoint, row: dict[str, Any], status: str, seconds: float) -> None:
        rows[p.name] = row
        (result.trained if status == "trained" else result.evaluated if status == "evaluated"
         else result.skipped).append(p.name)
        q, c = row.get("quality"), row.get("copy_frac")
        echo(f"[sweep] {len(rows)}/{len(points)} {p.name}: {status} in {seconds:.0f}s; "
             f"{row.get('quality_metric')} {q:.4g}, copies {c:.3f}" if q is not None and c is not None
             else f"[sweep] {len(rows)}/{len(points)} {p.name}: {status} in {seconds:.0f}s")

    if jobs == 1 or len(pending) <= 1:
        for p in pending:
            row, status, seconds = _task(sc, p, str(runs / p.name), device, cache, progress)
            done(p, row, status, seconds)
    else:
        _run_parallel(sc, pending, runs, device, cache, jobs, done)
    return rows


def _run_parallel(sc: SweepConfig, pending: list[SweepPoint], runs: Path, device: str, cache: str, jobs: int,
                  done: Callable[[SweepPoint, dict[str, Any], str, float], None]) -> None:
    """The pending points in `jobs` spawned processes of `cores // jobs` torch threads (one GPU each when
    there are several); `done` as each finishes; the first failure cancels the points not yet started."""
    devices = None
    if device == "cuda":
        import torch

        n_gpu = torch.cuda.device_count()
        if n_gpu > 1:
            devices = [f"cuda:{k}" for k in range(n_gpu)]
    tasks = [(sc, p, str(runs / p.name), device, cache, False) for p in pending]
    run_spawned(_task, tasks, jobs=jobs, devices=devices, on_done=lambda task, result: done(task[1], *result))


def write_outputs(rows: list[dict[str, Any]], out: str | Path, tolerance: float = 0.1,
                  monitor: dict[str, Path] | None = None, title: str | None = None) -> dict[str, Path]:
    """results.csv/json, results.md, summary.txt (table + rule of thumb), pareto.png and (monitor) monitor.png.
    The report document beside them (report.html/.md: headline and verdict) is written from above, by
    `diffmem.report.sweep.write_sweep_report` (the report layer sits above the sweep: docs/architecture.md)."""
    out = Path(out)
    csv_path, json_path = write_results(rows, out)
    files = {"csv": csv_path, "json": json_path}
    choices = choose_sigma_n(rows, tolerance)
    summary = format_table(rows) + "\n\n" + rule_of_thumb_text(choices) + "\n"
    (out / "summary.txt").write_text(summary)
    files["summary"] = out / "summary.txt"
    chosen = None
    (out / "results.md").write_text(markdown_tables(rows, chosen=chosen) + "\n" + rule_of_thumb_text(choices) + "\n")
    files["markdown"] = out / "results.md"
    if any(np.isfinite(float(r["quality"])) for r in rows if isinstance(r.get("quality"), (int, float))):
        files["pareto"] = plot_pareto(rows, out / "pareto.png", title=title)
    if monitor:
        from diffmem.monitor import plot_copy_curves

        path = plot_copy_curves(monitor, out / "monitor.png")
        if path is not None:
            files["monitor"] = path
    return files
