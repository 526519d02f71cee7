"""Measure one finished run: sample, audit (memorization), quality; one result row in RUN/result.json.

```
RUN/samples.npz            the samples (uint8), RUN/samples.json says how they were drawn
RUN/audit-<features>/      report.json, nearest.npz, histogram.png, neighbours.png (diffmem.evaluate.audit)
RUN/quality.json           Frechet distance, KID, precision/recall against the held-out images
RUN/result.json            {"fingerprint": {...}, "row": {...}}: the row, and what it was measured with
```
Each piece is reused when it was made with the same options from the same checkpoint, so an
interrupted evaluation resumes and a finished one is not repeated.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from diffmem.errors import DiffmemError
from diffmem.evaluate.options import CALIBRATION_PERCENTILES
from diffmem.sweep.results import make_row
from diffmem.sweep.spec import EvalOptions, feature_dirname
from diffmem.utils.atomic import save_atomic, write_json_atomic

__all__ = ["RESULT", "SAMPLES", "SAMPLES_INFO", "QUALITY", "CALIBRATION_PERCENTILES", "run_info", "train_seconds",
           "evaluate_run", "finished_result", "read_result"]

RESULT, SAMPLES, SAMPLES_INFO, QUALITY = "result.json", "samples.npz", "samples.json", "quality.json"


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def train_seconds(run: Path) -> float | None:
    """Training time from log.jsonl (each logged window's images / its logged rate), summed over resumes; None
    when no record is timed."""
    from diffmem.monitor import cost_of
    from diffmem.train.rundir import log_records

    training = cost_of(log_records(run))[1]
    return None if training is None else round(training, 2)


# the setting columns every row has (None where its method has no such setting), so that tables of a sweep
# keep one column order whatever methods it holds
SETTING_COLUMNS = ("sigma_n", "mask_p", "ambient_weight")


def run_info(run_dir: str | Path, name: str | None = None) -> dict[str, Any]:
    """What was run: name, method, the method's settings (its section of config.json, e.g. sigma_n and the loss
    weighting, or mask_p), lr, subset (training images), seed, budget, data."""
    from diffmem.config import MethodConfig
    from diffmem.train.rundir import SUBSET, check_run_dir, read_json

    run = check_run_dir(run_dir)
    cfg = read_json(run / "config.json")
    sub = _read_json(run / SUBSET) or {}
    n_train = len(sub["train_indices"]) if "train_indices" in sub else cfg["data"].get("subset")
    m, o = MethodConfig.from_dict(cfg["method"]), cfg["optim"]  # also the flat section of older runs
    return {
        "name": name or run.name,
        "method": m.name,
        **dict.fromkeys(SETTING_COLUMNS), **m.settings,
        "lr": o.get("lr"),
        "subset": n_train,
        "seed": cfg["seed"],
        "data": cfg["data"]["spec"],
        "resolution": cfg["data"].get("resolution"),
        "steps": o["steps"],
        "batch": o["batch"],
        "kimg": o["steps"] * o["batch"] / 1000,
        "epochs": o["steps"] * o["batch"] / n_train if n_train else None,
        "train_seconds": train_seconds(run),
    }


def read_result(run_dir: str | Path) -> dict[str, Any] | None:
    """The stored {"fingerprint", "row"} of a run, or None."""
    res = _read_json(Path(run_dir) / RESULT)
    return res if isinstance(res, dict) and "row" in res and "fingerprint" in res else None


def _trained_stamp(run: Path) -> str | None:
    """Which training produced the run's weights: its last checkpoint and when training finished
    (a run retrained with --overwrite ends at the same checkpoint name, but at another time)."""
    from diffmem.train.checkpoint import latest_checkpoint
    from diffmem.train.rundir import DONE

    ckpt = latest_checkpoint(run)
    done = _read_json(run / DONE) or {}
    return f"{ckpt.name}@{done.get('time')}" if ckpt else None


def _fingerprint(run: Path, opts: EvalOptions) -> dict[str, Any]:
    return {"eval": opts.to_dict(), "checkpoint": _trained_stamp(run), "config": _read_json(run / "config.json")}


def finished_result(run_dir: str | Path, opts: EvalOptions) -> dict[str, Any] | None:
    """The stored row when the run finished training and was measured with `opts` from its last checkpoint."""
    from diffmem.train.rundir import DONE

    run = Path(run_dir)
    if not (run / DONE).is_file():
        return None
    res = read_result(run)
    if res is None or res["fingerprint"] != _fingerprint(run, opts):
        return None
    return res["row"]


def _samples(run: Path, opts: EvalOptions, ckpt_name: str, device: str, progress: bool) -> tuple[np.ndarray, float]:
    """The run's samples: reused when drawn with the same options from the same checkpoint."""
    from diffmem.generate import SampleOptions, generate
    from diffmem.train.checkpoint import load_denoiser

    want = {"n": opts.n_samples, "seed": opts.sample_seed, "steps": opts.sample_steps, "checkpoint": ckpt_name}
    info = _read_json(run / SAMPLES_INFO) or {}
    if (run / SAMPLES).is_file() and {k: info.get(k) for k in want} == want:
        with np.load(run / SAMPLES) as z:
            return z["images"], float(info.get("seconds") or 0.0)
    t0 = time.perf_counter()
    net, cfg, meta = load_denoiser(run, device=device)
    images = generate(net, cfg, meta, opts.n_samples, seed=opts.sample_seed, batch=opts.batch,
                      opts=SampleOptions(steps=opts.sample_steps), device=device, progress=progress)
    seconds = round(time.perf_counter() - t0, 2)
    save_atomic(run / SAMPLES, lambda tmp: np.savez(tmp, images=images))
    write_json_atomic(run / SAMPLES_INFO, {**want, "seconds": seconds})
    return images, seconds


def evaluate_run(run_dir: str | Path, opts: EvalOptions = EvalOptions(), *, name: str | None = None,
                 device: str = "cpu", cache_dir: str | Path | None = None, progress: bool = False,
                 force: bool = False) -> dict[str, Any]:
    """Sample, audit and measure a finished run; write RUN/result.json and return its row.

    Memorization: each of `opts.features` (the first defines `copy_frac`) against the run's training
    subset, with the rest of its data as held-out reference. Quality: `opts.quality_name(data)` Frechet
    distance of the samples against the held-out images (the training images when there are none),
    plus the training images' own distance (`quality_train_images`). Returns the stored row if the run
    was already measured with the same options (unless `force`).
    """
    from diffmem.train.checkpoint import latest_checkpoint
    from diffmem.train.rundir import DONE, check_run_dir, run_datasets

    run = check_run_dir(run_dir)
    if not (run / DONE).is_file():
        raise DiffmemError(f"run {run} has not finished training; finish it (diffmem train --out {run} with the "
                           "same flags resumes it) before measuring it")
    if not force:
        row = finished_result(run, opts)
        if row is not None:
            return row
    if latest_checkpoint(run) is None:
        raise DiffmemError(f"run {run} has no checkpoint; train it again with --overwrite")
    fingerprint = _fingerprint(run, opts)
    images, sample_seconds = _samples(run, opts, fingerprint["checkpoint"], device, progress)
    train, heldout = run_datasets(run)
    held = heldout if len(heldout) > 0 else None
    reports = _memorization_reports(run, images, train, held, opts, device, cache_dir, progress)
    quality = _quality(images, train, held, opts, str(fingerprint["config"]["data"]["spec"]), device, cache_dir)
    write_json_atomic(run / QUALITY, quality)

    info = run_info(run, name)
    info["n_samples"] = opts.n_samples
    info["sample_seconds"] = sample_seconds
    row = make_row(info, reports, quality, opts.copy_threshold)
    row["run"] = str(run.resolve())
    write_json_atomic(run / RESULT, {"fingerprint": fingerprint, "row": row})
    return row


def _memorization_reports(run: Path, images: np.ndarray, train: Any, held: Any | None, opts: EvalOptions,
                          device: str, cache_dir: str | Path | None, progress: bool) -> dict[str, dict[str, Any]]:
    """One memorization report per feature space of `opts.features` (an audit folder with pictures, or
    only its report.json), by extractor name."""
    from diffmem.evaluate.audit import run_audit
    from diffmem.evaluate.features import embed_dataset, get_extractor
    from diffmem.evaluate.memorization import memorization_report

    reports: dict[str, dict[str, Any]] = {}
    for feats in opts.features:
        ext = get_extractor(feats, device, resolution=train.resolution)
        thresholds = opts.thresholds_for(feats)
        if opts.copy_threshold is not None and opts.copy_threshold not in thresholds:
            thresholds = tuple(sorted({*thresholds, opts.copy_threshold}))
        out_dir = run / f"audit-{feature_dirname(feats)}"
        if opts.pictures:
            rep = run_audit(images, train, held, ext, out_dir, thresholds=thresholds,
                            calibration_percentiles=CALIBRATION_PERCENTILES, device=device, batch_size=opts.batch,
                            cache_dir=cache_dir, progress=progress)
        else:
            rep = memorization_report(
                embed_dataset(ext, images, None, batch_size=opts.batch),
                embed_dataset(ext, train, cache_dir, batch_size=opts.batch),
                embed_dataset(ext, held, cache_dir, batch_size=opts.batch) if held is not None else None,
                thresholds, calibration_percentiles=CALIBRATION_PERCENTILES, features=ext.name)
            out_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(out_dir / "report.json", rep)
        reports[ext.name] = rep
    return reports


def _quality(images: np.ndarray, train: Any, held: Any | None, opts: EvalOptions, data_spec: str, device: str,
             cache_dir: str | Path | None) -> dict[str, Any]:
    """The samples' quality report against the held-out images (the training images when there are
    fewer than two), plus the training images' own Frechet distance to the held-out ones."""
    from diffmem.evaluate.features import embed_dataset, get_extractor
    from diffmem.evaluate.fid import quality_report
    from diffmem.evaluate.quality import feature_statistics, frechet_distance

    qext = get_extractor(opts.quality_name(data_spec), device, resolution=train.resolution)
    ref = held if held is not None and len(held) >= 2 else train
    ref_f = embed_dataset(qext, ref, cache_dir, batch_size=opts.batch)
    quality = quality_report(embed_dataset(qext, images, None, batch_size=opts.batch), ref_f, features=qext.name)
    quality["reference"] = "held-out images" if ref is held else "training images"
    if ref is held:
        mu_t, s_t = feature_statistics(embed_dataset(qext, train, cache_dir, batch_size=opts.batch))
        mu_r, s_r = feature_statistics(ref_f)
        try:
            quality["fd_train_images"] = frechet_distance(mu_t, s_t, mu_r, s_r)
        except DiffmemError:  # fewer training images than feature dimensions
            quality["fd_train_images"] = None
    return quality
