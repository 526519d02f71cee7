"""Watch copying emerge during training: the copy-rate monitor and its curve (monitor.png).

Every K steps `CopyMonitor` draws N samples from the EMA model with fixed seeds (sample i always starts
from the same noise, so the curve shows the model changing, not the draw), finds each sample's most
similar training image in a cheap feature space (pixels by default) and logs the statistics: mean /
median / p95 / max similarity, the fraction at or above fixed thresholds and above the calibrated
threshold (the 99th percentile of held-out images' nearest-training similarity, i.e. "closer to a
training image than 99% of unseen real images get"). The held-out reference is computed once.

Each record also carries the copy count, the threshold's calibration and the safety test of
`diffmem.safety` (docs/method.md, "Safety: copies within what unseen images score"), so that the
guard (`diffmem.guard`), the release and the frontier read one definition of "safe".

The monitor draws no random numbers from global state, so a run with and without it trains identically.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from diffmem.config import TrainConfig
from diffmem.data.datasets import ImageDataset
from diffmem.errors import DiffmemError
from diffmem.safety import COPY_PERCENTILE, SAFETY_LEVEL, Calibration, calibrate, safety_test
from diffmem.utils.precision import check_precision

__all__ = ["CopyMonitor", "make_monitor", "monitor_records", "monitor_records_of", "cost_of", "check_cost", "plot_monitor",
           "plot_copy_curves", "MONITOR_PNG", "CALIBRATED_KEY"]

MONITOR_PNG = "monitor.png"
CALIBRATED_KEY = "heldout_p99"
QUALITY_METRICS = ("fd", "kid")


class CopyMonitor:
    """`monitor(step, ema_model) -> dict`, the hook of `diffmem.train.loop.train`.

    `train`/`heldout`: the run's training images and held-out images (None: no calibrated threshold).
    `features`: a feature space name (see `diffmem.evaluate.features.get_extractor`); `thresholds`: fixed
    cosine thresholds (None: 0.9, 0.95, 0.98, 0.99 for pixels, the audit defaults otherwise).
    `max_heldout`: a seeded subset of at most this many held-out images is the reference.
    `quality_features`: also log the quality of the samples against the held-out images in this feature
    space (e.g. "digits-net"), so that each check is a (quality, copies) point of the run's path;
    `quality_metric`: "fd" (Frechet distance) or "kid" (the unbiased KID); `level`: the safety test's level;
    `sample_precision`: the sampler's forward pass, fp32 or bf16 autocast (SampleOptions). `last_images` holds the
    samples of the latest check (the release keeps those of the released checkpoint).
    """

    def __init__(self, cfg: TrainConfig, train: ImageDataset, heldout: ImageDataset | None, n_samples: int = 64,
                 features: str = "pixels", thresholds: tuple[float, ...] | None = None, seed: int = 0,
                 sample_steps: int = 18, batch: int = 256, max_heldout: int = 2000,
                 device: str | torch.device = "cpu", cache_dir: str | Path | None = None,
                 quality_features: str | None = None, quality_metric: str = "fd",
                 level: float = SAFETY_LEVEL, sample_precision: str = "fp32") -> None:
        from diffmem.evaluate.features import embed_dataset, get_extractor
        from diffmem.evaluate.search import nearest_neighbours
        from diffmem.evaluate.options import EvalOptions

        if n_samples < 2:
            raise DiffmemError(f"--monitor-samples must be at least 2, got {n_samples}")
        if sample_steps < 1:
            raise DiffmemError(f"the monitor's sampler needs at least 1 step, got {sample_steps}")
        if quality_metric not in QUALITY_METRICS:
            raise DiffmemError(f"the quality metric must be one of {', '.join(QUALITY_METRICS)}, got {quality_metric!r}")
        self.quality_metric, self.level, self.quality_features = quality_metric, float(level), quality_features
        self.last_images: np.ndarray | None = None
        self.calibration: Calibration | None = None
        self.cfg, self.n_samples, self.seed, self.batch = cfg, int(n_samples), int(seed), int(batch)
        self.sample_steps = int(sample_steps)
        check_precision(sample_precision, "the monitor's sample precision")
        self.sample_precision = sample_precision
        h, w, c = train.shape
        self.meta = {"resolution": h, "channels": c}
        self.n_train = len(train)
        self.extractor = get_extractor(features, device, resolution=h)
        self.thresholds = tuple(thresholds) if thresholds is not None else EvalOptions().thresholds_for(features)
        self.train_feats = embed_dataset(self.extractor, train, cache_dir)
        self.calibrated: dict[str, float] = {}
        self.heldout: dict[str, Any] | None = None
        if heldout is not None and len(heldout) > 0:
            if len(heldout) > max_heldout:
                idx = np.sort(np.random.default_rng(seed).choice(len(heldout), max_heldout, replace=False))
                heldout = heldout.subset(idx)
            held_feats = embed_dataset(self.extractor, heldout, cache_dir)
            sims = nearest_neighbours(held_feats, self.train_feats)[0][:, 0].numpy().astype(np.float64)
            self.calibration = calibrate(sims, COPY_PERCENTILE)
            self.calibrated = {CALIBRATED_KEY: self.calibration.threshold}
            self.heldout = self._stats(sims)
            self.heldout["n"] = int(len(sims))
        self.quality: tuple[Any, np.ndarray, np.ndarray] | None = None
        if quality_features is not None:
            from diffmem.evaluate.quality import feature_statistics

            if self.heldout is None:
                raise DiffmemError("the monitor's quality needs held-out images; train on a --subset of the data")
            qext = get_extractor(quality_features, device, resolution=h)
            ref = embed_dataset(qext, heldout, cache_dir)
            self.quality = (qext, ref, *feature_statistics(ref))

    def _stats(self, sims: np.ndarray) -> dict[str, Any]:
        from diffmem.evaluate.memorization import fraction_above, similarity_stats

        out: dict[str, Any] = {"similarity": similarity_stats(sims),
                               "fraction_above": fraction_above(sims, self.thresholds)}
        if self.calibrated:
            out["fraction_above_calibrated"] = fraction_above(sims, self.calibrated)
        return out

    def __call__(self, step: int, ema_model: torch.nn.Module) -> dict[str, Any]:
        """Sample, embed, compare; returns the record logged under "monitor" in log.jsonl."""
        from diffmem.evaluate.search import nearest_neighbours
        from diffmem.generate import SampleOptions, generate

        t0 = time.perf_counter()
        device = next(ema_model.parameters()).device
        was_training = ema_model.training
        ema_model.eval()
        images = generate(ema_model, self.cfg, self.meta, self.n_samples, seed=self.seed, batch=self.batch,
                          opts=SampleOptions(steps=self.sample_steps, precision=self.sample_precision), device=device,
                          progress=False)
        ema_model.train(was_training)
        self.last_images = images
        feats = self.extractor(images)
        sims = nearest_neighbours(feats, self.train_feats)[0][:, 0].numpy().astype(np.float64)
        rec: dict[str, Any] = {"features": self.extractor.name, "n_samples": self.n_samples,
                               "sample_precision": self.sample_precision,
                               "epoch": step * self.cfg.optim.batch / self.n_train}
        rec.update(self._stats(sims))
        rec["calibrated_thresholds"] = dict(self.calibrated) or None
        rec["heldout"] = self.heldout
        if self.calibration is not None:
            k = int((sims >= self.calibration.threshold).sum())
            rec["calibration"] = self.calibration.to_dict()
            rec["safety"] = safety_test(k, len(sims), self.calibration, self.level).to_dict()
        if self.quality is not None:
            rec["quality"] = self.quality_of(images)
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        return rec

    def quality_of(self, images: np.ndarray) -> dict[str, Any]:
        """FD or KID (unbiased; 100 subsets of up to 1000, seed 0) of `images` against the held-out images."""
        from diffmem.evaluate.features import fd_name
        from diffmem.evaluate.quality import feature_statistics, frechet_distance, kid

        assert self.quality is not None
        qext, ref, mu_r, sig_r = self.quality
        feats = qext(images)
        if self.quality_metric == "kid":
            value = kid(feats, ref, subsets=100, subset_size=1000, generator=0)[0]
            name = "KID_" + fd_name(qext.name)[3:] if fd_name(qext.name) != "FID" else "KID"  # KID_digits-net
        else:
            value, name = frechet_distance(*feature_statistics(feats), mu_r, sig_r), fd_name(qext.name)
        return {"metric": name, "reference": "held-out images", "value": float(value)}


def make_monitor(cfg: TrainConfig, n_samples: int = 64, features: str = "pixels", device: str | torch.device = "cpu",
                 selected: tuple[ImageDataset, np.ndarray, np.ndarray] | None = None, **kwargs: Any) -> CopyMonitor:
    """A CopyMonitor for the run `cfg` describes: its seeded training subset and the rest as held-out images.

    Loads the data the same way `train` does (`select_train_images`, or its result `selected`); `kwargs`
    go to CopyMonitor.
    """
    from diffmem.train.loop import select_train_images

    source, train_idx, heldout_idx = selected if selected is not None else select_train_images(cfg)
    heldout = source.subset(heldout_idx) if len(heldout_idx) else None
    return CopyMonitor(cfg, source.subset(train_idx), heldout, n_samples=n_samples, features=features,
                       device=device, **kwargs)


def monitor_records(run_dir_or_log: str | Path) -> list[dict[str, Any]]:
    """The monitor records of a run's log.jsonl, one per step (a step logged twice keeps the later record)."""
    from diffmem.train.rundir import LOG, log_records

    p = Path(run_dir_or_log)
    log = p / LOG if p.is_dir() else p
    if not log.is_file():
        raise DiffmemError(f"{log} does not exist; train with --monitor-every K to record copy statistics")
    return monitor_records_of(log_records(log))


def monitor_records_of(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The monitor records among a log's records, one per step (a step logged twice keeps the later one)."""
    by_step = {int(rec["step"]): rec for rec in records if "monitor" in rec}
    return [by_step[s] for s in sorted(by_step)]


def cost_of(records: list[dict[str, Any]]) -> tuple[float, float | None]:
    """(seconds spent in monitor or guard checks, seconds spent training) of a run's log records: each logged
    window's images over its logged images/s, so a pause between sessions is not counted. Training is None
    when no record is timed."""
    checks = train = last = 0.0
    timed = False
    for rec in records:
        if "monitor" in rec:
            checks += float(rec["monitor"].get("seconds") or 0.0)
        elif rec.get("images_per_s") and rec.get("kimg") is not None:
            kimg = float(rec["kimg"])
            train += max(kimg - last, 0.0) * 1000 / float(rec["images_per_s"])
            last, timed = kimg, True
    return checks, (train if timed else None)


def check_cost(run_dir: str | Path) -> tuple[float, float]:
    """(seconds spent in checks, seconds spent training) of a run, from its log.jsonl (`cost_of`)."""
    from diffmem.train.rundir import log_records

    checks, train = cost_of(log_records(run_dir))
    return checks, train or 0.0


def _copy_series(records: list[dict[str, Any]], key: str) -> np.ndarray:
    vals = []
    for r in records:
        m = r["monitor"]
        if key == CALIBRATED_KEY:
            src = m.get("fraction_above_calibrated") or {}
        else:
            src = m.get("fraction_above") or {}
        vals.append(src.get(key, np.nan))
    return np.asarray(vals, dtype=np.float64)


def _x(records: list[dict[str, Any]]) -> tuple[np.ndarray, str]:
    if all("epoch" in r["monitor"] for r in records):
        return np.asarray([r["monitor"]["epoch"] for r in records]), "epochs"
    return np.asarray([r["step"] for r in records]), "steps"


def plot_monitor(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw the copy-rate curve of one run (default: RUN/monitor.png) from its log.jsonl.

    One line per threshold (solid: samples; dashed, same colour: held-out real images, the level a
    generator that never copies scores), the calibrated threshold in black.
    """
    from matplotlib.figure import Figure

    records = monitor_records(run_dir)
    if not records:
        raise DiffmemError(f"{run_dir} has no monitor records; train with --monitor-every K")
    out = Path(out) if out is not None else Path(run_dir) / MONITOR_PNG
    x, xlabel = _x(records)
    last = records[-1]["monitor"]
    fig = Figure(figsize=(6.4, 4.0), dpi=110)
    ax = fig.subplots()
    keys = list(last["fraction_above"])
    colors = [f"C{i}" for i in range(len(keys))]
    held = last.get("heldout") or {}
    for key, color in zip(keys, colors):
        ax.plot(x, _copy_series(records, key), "-o", ms=3, color=color, label=f"samples >= {key}")
        if held.get("fraction_above", {}).get(key) is not None:
            ax.axhline(held["fraction_above"][key], ls="--", lw=0.8, color=color)
    if last.get("calibrated_thresholds"):
        thr = last["calibrated_thresholds"][CALIBRATED_KEY]
        ax.plot(x, _copy_series(records, CALIBRATED_KEY), "-o", ms=3, color="black", lw=2,
                label=f"samples >= held-out p99 ({thr:.3f})")
        ax.axhline(0.01, ls="--", lw=0.8, color="black")
    ax.set_xlabel(f"training {xlabel}")
    ax.set_ylabel(f"fraction of samples (n={last['n_samples']})")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"copying during training ({last['features']} nearest-training similarity)\n"
                 "dashed: held-out real images", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def plot_copy_curves(runs: Mapping[str, str | Path], out: str | Path, key: str = CALIBRATED_KEY) -> Path | None:
    """One copy-rate curve per run (label -> run dir) in one figure: when does each method start to copy?

    `key`: the calibrated threshold (default) or a fixed one such as "0.98". Runs without monitor
    records are left out; returns None when none has any. Runs whose labels differ only in a `-seedN`
    suffix share a colour (one legend entry), each seed with its own line style.
    """
    import re

    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.2), dpi=110)
    ax = fig.subplots()
    drawn = 0
    xlabel = "epochs"
    groups: dict[str, int] = {}  # label without its seed -> colour index
    seen: dict[str, int] = {}  # runs drawn per group so far
    for label, run in runs.items():
        try:
            records = monitor_records(run)
        except DiffmemError:
            continue
        if not records:
            continue
        x, xlabel = _x(records)
        match = re.fullmatch(r"(.*)-seed\d+", label)
        group = match.group(1) if match else label
        color = f"C{groups.setdefault(group, len(groups)) % 10}"
        k = seen.get(group, 0)
        seen[group] = k + 1
        ax.plot(x, _copy_series(records, key), ("-", "--", ":", "-.")[k % 4], marker="o", ms=3, color=color,
                label=group if k == 0 else None)
        drawn += 1
    if not drawn:
        return None
    ax.set_xlabel(f"training {xlabel}")
    what = "held-out p99" if key == CALIBRATED_KEY else key
    ax.set_ylabel(f"fraction of samples >= {what}")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
