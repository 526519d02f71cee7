"""Releasing a Stable Diffusion fine-tune afterwards: `diffmem t2i release` (docs/method.md "The release and
safe quality", as `diffmem release` does for pixel runs).

Every checkpoint the run kept (`t2i train --keep-checkpoints all`) draws `n_per_prompt` samples for each
training caption (the same seeds at every checkpoint); their copies are counted in the copy features against
held-out captioned images (above the held-out 99th percentile of nearest-training similarity) and tested
(`diffmem.safety`), and their quality is the Frechet distance to the held-out images in `fd_features`
(lower is better; without it the latest safe checkpoint is released). The safe check of best quality is the
release; RUN/release.json is its certificate (RUN/release/released.npz its samples), and `t2i sample
--checkpoint release` samples it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from diffmem.errors import DiffmemError
from diffmem.t2i import rundir
from diffmem.t2i.sample import T2ISampleOptions

__all__ = ["release_t2i", "T2IChecker", "heldout_images", "keep_samples"]


def _embedder(spec: str, device: Any) -> tuple[Callable[[np.ndarray], Any], str]:
    """(images -> features, the extractor's name) for a feature spec (`get_extractor`)."""
    from diffmem.evaluate.features import get_extractor

    extractor = get_extractor(spec, device)
    return (lambda images: extractor(images, batch_size=64, progress=False)), extractor.name


class _Reference:
    """What every check compares with: the copy reference (`diffmem.t2i.audit.CopyReference`: training
    features, the held-out copy threshold) and, with `fd_features`, the held-out images' feature statistics."""

    def __init__(self, train: np.ndarray, heldout: np.ndarray, features: str, fd_features: str | None,
                 device: Any) -> None:
        from diffmem.evaluate.quality import feature_statistics
        from diffmem.t2i.audit import CopyReference

        self.features = features
        self.copies = CopyReference(_embedder(features, device)[0], train, heldout)
        self.cal = self.copies.cal
        self.fd_embed, self.fd_space = _embedder(fd_features, device) if fd_features else (None, None)
        self.held_stats = feature_statistics(self.fd_embed(heldout)) if self.fd_embed else None

    def check(self, images: np.ndarray) -> dict[str, Any]:
        """A monitor record of these samples: copies, the safety test, quality (`diffmem.release.checks_of`)."""
        from diffmem.evaluate.features import fd_name
        from diffmem.evaluate.quality import feature_statistics, frechet_distance

        sims, test = self.copies.test(images)
        quality = None
        if self.fd_embed is not None:
            fd = frechet_distance(*feature_statistics(self.fd_embed(images)), *self.held_stats)
            quality = {"metric": fd_name(self.fd_space), "value": float(fd)}
        return {"features": self.features, "n_samples": len(sims), "calibration": self.cal.to_dict(),
                "safety": test, "quality": quality}


def keep_samples(run: Path, images: np.ndarray, *, last: bool, released: bool) -> None:
    """A check's samples as RUN/release/last.npz (the last check) and released.npz (the release so far), as the
    guard keeps them for pixel runs; the release page shows them."""
    from diffmem.data.io import save_images
    from diffmem.release import RELEASE_DIR

    if last or released:
        (run / RELEASE_DIR).mkdir(exist_ok=True)
    for name, wanted in (("last.npz", last), ("released.npz", released)):
        if wanted:
            save_images(images, run / RELEASE_DIR / name, overwrite=True)


def heldout_images(heldout_dir: str | Path) -> Any:
    """The held-out captioned images (`load_captioned`); fewer than the copy threshold needs are refused."""
    from diffmem.safety import min_heldout
    from diffmem.t2i.data import load_captioned

    held = load_captioned(heldout_dir)
    if len(held) < min_heldout():
        raise DiffmemError(f"--heldout {heldout_dir} holds {len(held)} images; the copy threshold (their 99th "
                           f"percentile) needs at least {min_heldout()} held-out images of the same kind")
    return held


class T2IChecker:
    """Checks a t2i run's checkpoints, one at a time: `check(step)` loads that checkpoint's EMA weights into
    its own pipeline, draws `n_per_prompt` samples per training caption (the same seeds at every step) and
    returns (the monitor record, the samples). Shared by `t2i release` and `t2i train --guard`."""

    def __init__(self, run: Path, heldout_dir: str | Path, *, features: str = "dinov2", fd_features: str | None = None,
                 n_per_prompt: int = 1, opts: T2ISampleOptions = T2ISampleOptions(), seed: int = 0,
                 device: Any = "cpu") -> None:
        from diffmem.t2i.data import load_captioned
        from diffmem.t2i.train import run_config

        self.run, self.cfg = run, run_config(run)
        self.n_per_prompt, self.opts, self.seed, self.device = n_per_prompt, opts, seed, device
        self.data, held = load_captioned(self.cfg.data), heldout_images(heldout_dir)
        pixels = lambda d: d.read_pixels(np.arange(len(d)), self.cfg.resolution)  # noqa: E731
        self.ref = _Reference(pixels(self.data), pixels(held), features, fd_features, device)
        self.settings = {"features": features, "fd_features": fd_features, "n_per_prompt": n_per_prompt,
                         "seed": seed, "heldout": str(heldout_dir), "sample_steps": opts.steps,
                         "guidance": opts.guidance, "scheduler": opts.scheduler}
        self.parts: Any = None

    def check(self, step: int) -> tuple[dict[str, Any], np.ndarray]:
        from diffmem.t2i.sample import generate, load_trained
        from diffmem.t2i.weights import apply_trained_weights

        start = time.perf_counter()
        if self.parts is None:
            self.parts = load_trained(self.run, "ema", self.device, checkpoint=f"step-{step}")[0]
        else:
            path = self.run / rundir.CHECKPOINTS / f"step-{step:08d}" / rundir.EMA
            apply_trained_weights(self.parts.unet, rundir.load_weights(path), str(path))
        images = generate(self.parts, list(self.data.captions), self.n_per_prompt, self.cfg.resolution, self.seed,
                          self.opts, self.device, progress=False).images
        return {**self.ref.check(images), "seconds": time.perf_counter() - start}, images

    def trained(self) -> dict[str, Any]:
        """How the checked weights were trained, beyond config.json: the precision and the diffmem version."""
        from diffmem import __version__

        return {"precision": [{"no": "fp32"}.get(self.cfg.mixed_precision, self.cfg.mixed_precision)],
                "diffmem": __version__}


def release_t2i(run_dir: str | Path, heldout_dir: str | Path, *, features: str = "dinov2",
                fd_features: str | None = None, n_per_prompt: int = 1, opts: T2ISampleOptions = T2ISampleOptions(),
                seed: int = 0, device: Any = "cpu", progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Check every kept checkpoint of a t2i run and write RUN/release.json; returns the record
    (`diffmem.release.release_record`)."""
    from diffmem.lock import locked
    from diffmem.release import RELEASE_DIR, RELEASE_JSON, check_line, checks_of, choose_release, release_record
    from diffmem.train.checkpoint import checkpoint_steps
    from diffmem.train.rundir import write_json_atomic

    run = rundir.check_run(run_dir)
    steps = checkpoint_steps(run)
    if not steps:
        raise DiffmemError(f"run {run} has no checkpoint to release; train it first (diffmem t2i train)")
    checker = T2IChecker(run, heldout_dir, features=features, fd_features=fd_features, n_per_prompt=n_per_prompt,
                         opts=opts, seed=seed, device=device)
    with locked(run):
        records: list[dict[str, Any]] = []
        for step in steps:
            rec, images = checker.check(step)
            records.append({"step": step, "monitor": rec})
            best = choose_release(checks_of(records))
            keep_samples(run, images, last=step == steps[-1], released=best is not None and best["step"] == step)
            if progress is not None:
                progress(f"[t2i release] {check_line(step, rec, best['step'] if best else None)}")
        record = release_record(checks_of(records), checker.settings, finished=True)
        if record["released"] is None:  # an earlier release's samples must not stand for this one
            (run / RELEASE_DIR / "released.npz").unlink(missing_ok=True)
        write_json_atomic(run / RELEASE_JSON, {**record, "trained": checker.trained(), "time": time.time()})
    return record
