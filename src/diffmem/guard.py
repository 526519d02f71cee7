"""Guarded training: check copies and quality at every checkpoint, keep the best safe one, release it.

docs/method.md, "The release and safe quality". `Guard` is the training loop's watch
(`diffmem.train.loop.train(monitor=...)`): at every checkpoint it samples the EMA model with fixed seeds,
counts copies against the held-out p99 threshold, runs the safety test and measures quality
(`diffmem.monitor.CopyMonitor`), then

- tells the loop which checkpoint to keep besides the newest (`keep_steps`: the best safe one),
- writes `RUN/release.json` (`diffmem.release.release_record`) and the released check's samples,
- and, by the stopping rule, tells the loop to stop once the last `patience` checks were all unsafe.

Its state is its checks, read back from the run's log on resume, so a killed guarded run resumes to the
same release. `release_run` releases a finished run afterwards, checking every checkpoint it kept.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from diffmem.config import TrainConfig, json_ready, with_defaults
from diffmem.errors import DiffmemError
from diffmem.safety import COPY_PERCENTILE, SAFETY_LEVEL, min_heldout
from diffmem.release import (DENSE_P, RELEASE_DIR, RELEASE_JSON, check_due, check_line, checks_of, choose_release,
                             release_record, stop_reason)
from diffmem.utils.precision import check_precision

LOGGED_SETTINGS = ("n_samples", "features", "sample_precision")  # guard settings each check's record states

__all__ = ["GuardConfig", "Guard", "validate_guard", "make_guard", "release_run", "default_quality_features",
           "trained_with"]


@dataclass(frozen=True)
class GuardConfig:
    """How the guard checks: `n_samples` per check (EDM Heun, `sample_steps`, seeds 0..n-1), copy
    `features`, `quality_features` (None: digits-net for builtin:digits, else pixels) and `quality_metric`
    ("kid" or "fd"), the safety test's `level`, `patience` (stop after that many unsafe checks in a
    row; 0: never stop) and `every` (check every `every`-th checkpoint, every one once a check hints at
    copying (`diffmem.release.check_due`), and, when a check is unsafe or hints, the ones it skipped);
    `sample_precision`: the checks' sampler, fp32 or bf16 autocast (twice as fast on CPUs with AMX; docs/
    performance.md, "What the guard costs")."""

    n_samples: int = 400
    features: str = "pixels"
    quality_features: str | None = None
    quality_metric: str = "kid"
    level: float = SAFETY_LEVEL
    patience: int = 2
    sample_steps: int = 18
    every: int = 1
    sample_precision: str = "fp32"

    def to_dict(self) -> dict[str, Any]:
        return json_ready(dataclasses.asdict(self))


def default_quality_features(data_spec: str) -> str:
    """The guard's quality features for a data set: digits-net for the built-in digits, pixels otherwise
    (works offline; pass `inception:FILE`, `dinov2:DIR` or `classifier:SPEC` for natural images)."""
    return "digits-net" if str(data_spec).startswith("builtin:digits") else "pixels"


def validate_guard(gc: GuardConfig, cfg: TrainConfig, n_heldout: int | None = None) -> None:
    """Refuse a guard that cannot work, naming the flag: too few samples, a bad level or metric, a stopping
    rule that cannot be met (more unsafe checks in a row than the run has checks), too few held-out images."""
    from diffmem.monitor import QUALITY_METRICS

    if gc.n_samples < 50:
        raise DiffmemError(f"--guard-samples must be at least 50 to test copy rates near 1%, got {gc.n_samples}")
    if not 0 < gc.level < 0.5:
        raise DiffmemError(f"--guard-level must be in (0, 0.5), e.g. 0.05; got {gc.level}")
    if gc.quality_metric not in QUALITY_METRICS:
        raise DiffmemError(f"--guard-metric must be one of {', '.join(QUALITY_METRICS)}, got {gc.quality_metric!r}")
    if gc.every < 1:
        raise DiffmemError(f"--guard-every must be a positive number of checkpoints, got {gc.every}")
    if gc.sample_steps < 1:
        raise DiffmemError(f"--guard-sample-steps must be at least 1, got {gc.sample_steps}")
    check_precision(gc.sample_precision, "--guard-sample-precision")
    checks = cfg.optim.steps // cfg.checkpoint_every  # at most; fewer when checks are sparse
    if gc.patience < 0:
        raise DiffmemError(f"--guard-patience must be 0 (never stop) or a number of checks, got {gc.patience}")
    if gc.patience > max(checks - 1, 0):
        raise DiffmemError(f"--guard-patience {gc.patience} cannot be met: the run has {checks} checks "
                           f"(--steps {cfg.optim.steps} / --checkpoint-every {cfg.checkpoint_every}), and the "
                           f"rule needs {gc.patience} unsafe ones after a safe one; lower --guard-patience, "
                           "check more often, or pass --guard-patience 0 (never stop)")
    need = min_heldout(COPY_PERCENTILE)
    if n_heldout is not None and n_heldout < need:
        raise DiffmemError(f"the guard needs at least {need} held-out images for its p99 copy threshold (10 of "
                           f"them above it), but the run holds out {n_heldout} (the data minus --subset); train "
                           "on a smaller --subset of more images, or audit with `diffmem audit` instead")


class Guard:
    """The loop's watch: `guard(step, ema_model) -> record`, plus `keep_steps`, `stop_reason`, `resume`,
    `finish` (see the module docstring)."""

    def __init__(self, monitor: Callable[[int, Any], dict], gc: GuardConfig, run: str | Path,
                 checkpoint_every: int = 1, echo: Callable[[str], None] | None = None) -> None:
        self.monitor, self.gc, self.run, self.echo = monitor, gc, Path(run), echo  # echo: a line per check
        self.checkpoint_every = int(checkpoint_every)
        self.records: list[dict[str, Any]] = []
        self.backfilled: list[dict[str, Any]] = []  # the checks the last call went back to, for the log

    def wants_check(self, step: int) -> bool:
        """Checks at every `every`-th checkpoint, densely once copying may have set in (`check_due`)."""
        return check_due(step, self.checkpoint_every, self.gc.every, self.checks)

    @property
    def checks(self) -> list[dict[str, Any]]:
        return checks_of(self.records)

    def settings(self) -> dict[str, Any]:
        return {**self.gc.to_dict(), "quality_features": getattr(self.monitor, "quality_features", None)}

    def resume(self, records: list[dict[str, Any]]) -> None:
        """Take the checks logged before a resume (the log is trimmed to the restored checkpoint); a run
        guarded with other settings is refused, since its checks would not be comparable."""
        from diffmem.train.rundir import config_diff, read_json

        self.records = sorted((r for r in records if "monitor" in r), key=lambda r: r["step"])
        now = json_ready(self.settings())
        path = self.run / RELEASE_JSON
        # a run written by an older diffmem resumes: a setting it lacks held its default then
        before = with_defaults(read_json(path).get("settings") or {}, GuardConfig) if path.is_file() else now
        if self.records:
            m = self.records[-1]["monitor"]  # what the last check says it measured, in case release.json is gone
            before = {**before, **{k: m[k] for k in LOGGED_SETTINGS if k in m}}
            diff = config_diff(before, now)
            if diff:
                raise DiffmemError(f"{self.run} was guarded with other settings ({'; '.join(diff[:4])}); resume it "
                                   "with the same --guard-* flags, or start another --out")

    def __call__(self, step: int, ema_model: Any) -> dict[str, Any]:
        """Check `step`; when it is unsafe or hints at copying, also check the kept checkpoints skipped since
        the last check (`backfilled`, logged by the loop too), so checks are dense where copying set in."""
        before = max((r["step"] for r in self.records if r["step"] < step), default=0)
        rec = self._check(step, ema_model, last=True)
        self.backfilled = []
        if self.gc.every > 1 and (not rec["safety"]["safe"] or rec["safety"]["p_value"] < DENSE_P):
            from diffmem.train.checkpoint import checkpoint_steps, load_denoiser

            device = next(ema_model.parameters()).device
            for k in (k for k in checkpoint_steps(self.run) if before < k < step):
                net = load_denoiser(self.run, device=device, checkpoint=f"step-{k}")[0]
                self.backfilled.append({"step": k, "monitor": self._check(k, net, last=False)})
        self._write(stopped=None, finished=False)
        best = choose_release(self.checks)
        rec["guard"] = {"safe": bool(rec["safety"]["safe"]), "released_step": best["step"] if best else None,
                        "backfilled": [r["step"] for r in self.backfilled]}
        return rec

    def _check(self, step: int, net: Any, last: bool) -> dict[str, Any]:
        """One check: the monitor's record, kept in step order; its samples saved as the last check's and,
        when it is the new release, as the released ones."""
        rec = self.monitor(step, net)
        self.records = sorted([r for r in self.records if r["step"] != step] + [{"step": step, "monitor": rec}],
                              key=lambda r: r["step"])
        best = choose_release(self.checks)
        if self.echo is not None:
            self.echo(check_line(step, rec, best["step"] if best else None))
        images = getattr(self.monitor, "last_images", None)
        if images is not None:
            from diffmem.data.io import save_images

            (self.run / RELEASE_DIR).mkdir(exist_ok=True)
            if last:
                save_images(images, self.run / RELEASE_DIR / "last.npz", overwrite=True)
            if best is not None and best["step"] == step:
                save_images(images, self.run / RELEASE_DIR / "released.npz", overwrite=True)
        return rec

    def keep_steps(self) -> frozenset[int]:
        """The released checkpoint, and every one after the last check (a later check may go back to them)."""
        best = choose_release(self.checks)
        last = max((r["step"] for r in self.records), default=0)
        keep = {int(best["step"])} if best is not None else set()
        if self.gc.every > 1:
            from diffmem.train.checkpoint import checkpoint_steps

            keep |= {k for k in checkpoint_steps(self.run) if k > last}
        return frozenset(keep)

    def stop_reason(self) -> str | None:
        return stop_reason(self.checks, self.gc.patience)

    def finish(self, stopped: str | None) -> None:
        self._write(stopped=stopped, finished=True)

    def _write(self, stopped: str | None, finished: bool) -> None:
        from diffmem.train.rundir import write_json_atomic

        record = release_record(self.checks, self.settings(), stopped=stopped, finished=finished)
        released = (record["released"] or {}).get("step")
        write_json_atomic(self.run / RELEASE_JSON, {**record, "trained": trained_with(self.run, released),
                                                    "time": time.time()})


def trained_with(run: str | Path, step: int | None) -> dict[str, Any]:
    """How the released weights were trained, beyond config.json: the training precisions its log records up
    to `step` (a record without one predates `--precision` and ran in fp32; a run resumed in another
    precision lists both) and the diffmem version writing the certificate."""
    from diffmem import __version__
    from diffmem.train.rundir import log_records

    upto = [r for r in log_records(run) if "loss" in r and (step is None or r.get("step", 0) <= step)]
    return {"precision": sorted({r.get("precision", "fp32") for r in upto}), "diffmem": __version__}


def make_guard(cfg: TrainConfig, gc: GuardConfig, run: str | Path, device: Any = "cpu",
               cache_dir: str | Path | None = None, echo: Callable[[str], None] | None = None) -> Guard:
    """A Guard for the run `cfg` describes (its training subset; the rest of its data is held out); `echo`
    gets a line per check (`diffmem.release.check_line`)."""
    from diffmem.monitor import make_monitor
    from diffmem.train.loop import select_train_images

    source, train_idx, heldout_idx = select_train_images(cfg)
    validate_guard(gc, cfg, len(heldout_idx))
    quality = gc.quality_features or default_quality_features(cfg.data.spec)
    monitor = make_monitor(cfg, n_samples=gc.n_samples, features=gc.features, device=device, seed=0,
                           sample_steps=gc.sample_steps, sample_precision=gc.sample_precision,
                           quality_features=quality,
                           quality_metric=gc.quality_metric, level=gc.level, cache_dir=cache_dir,
                           selected=(source, train_idx, heldout_idx))
    return Guard(monitor, gc, run, cfg.checkpoint_every, echo=echo)


def release_run(run: str | Path, gc: GuardConfig = GuardConfig(), *, device: Any = "cpu",
                allow_pruned: bool = False, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Release a trained run afterwards: check every checkpoint it kept (oldest first) as the guard would,
    write release.json and the samples, return the record. A run whose checkpoints were pruned is refused
    unless `allow_pruned` (then only the kept ones compete)."""
    from diffmem.lock import locked
    from diffmem.train.checkpoint import checkpoint_steps, load_denoiser
    from diffmem.train.rundir import load_train_config

    run = Path(run)
    cfg = load_train_config(run)
    steps = checkpoint_steps(run)
    expected = cfg.optim.steps // cfg.checkpoint_every
    if not steps:
        raise DiffmemError(f"run {run} has no checkpoint to release; train it first")
    if len(steps) < min(expected, 3) and not allow_pruned:
        raise DiffmemError(f"run {run} kept only the checkpoints at steps {', '.join(map(str, steps))} of its "
                           f"{expected}; a release chooses among checkpoints, so train with --keep-checkpoints all "
                           "(or --guard), or pass --allow-pruned to choose among those")
    with locked(run):
        echo = None if progress is None else (lambda line: progress(f"[release] {line}"))
        guard = make_guard(cfg, dataclasses.replace(gc, patience=0, every=1), run, device=device, echo=echo)
        for step in steps:
            net, _, _ = load_denoiser(run, device=device, checkpoint=f"step-{step}")
            guard(step, net)
        guard.finish(stopped=None)
    from diffmem.release import read_release

    return read_release(run)
