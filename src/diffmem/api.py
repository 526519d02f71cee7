"""The Python API (also what the CLI calls): three lines from images to an answer.

```python
import diffmem
result = diffmem.audit("samples.npz", train="train/", heldout="unseen/", features="pixels")
print(result)               # one line: the finding, with the held-out reference
result.to_dict()            # report.json's contents; result.nearest: one dict per sample
```
Inputs are paths or specs (a folder, .zip, .npz, `builtin:digits`), `ImageDataset`s or uint8 arrays
`[N, H, W(, C)]`. Bad input raises `DiffmemError` with the same one-line message the CLI prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from diffmem.errors import DiffmemError
from diffmem.evaluate.options import KID_SUBSET_SIZE, KID_SUBSETS, PR_K, AuditOptions, check_audit_inputs

__all__ = ["AuditResult", "FidResult", "audit", "fid", "load_images", "train", "sample"]

AUDIT = AuditOptions()  # the audit's defaults, shared with `diffmem audit` (evaluate/options.py)


def load_images(spec: str | Path, resolution: int | None = None, resize: bool = False) -> Any:
    """Images of a folder, .zip, .npz or `builtin:digits` as an `ImageDataset` (`.images` uint8 [N, H, W, C])."""
    from diffmem.data.datasets import load_images as _load

    return _load(str(spec), resolution, resize=resize)


def _images(data: Any, what: str, resolution: int | None = None, resize: bool = False) -> Any:
    if isinstance(data, (str, Path)):
        return load_images(data, resolution, resize)
    if hasattr(data, "images") and hasattr(data, "content_hash"):
        return data
    if hasattr(data, "detach"):  # a torch tensor
        data = data.detach().cpu().numpy()
    from diffmem.evaluate.preprocess import check_images

    return check_images(np.asarray(data), what)


@dataclass
class AuditResult:
    """An audit: `report` (report.json), per-sample `nearest` rows, `copy_fraction`, `verdict`, `out`."""

    report: dict[str, Any]
    nearest: list[dict[str, Any]] = field(repr=False, default_factory=list)
    out: Path | None = None

    @property
    def copy_fraction(self) -> float | None:
        """Share of samples above the held-out p99 (None without held-out images)."""
        from diffmem.report.findings import copy_numbers

        return copy_numbers(self.report).frac

    @property
    def verdict(self) -> str | None:
        """'copies' or 'none beyond unseen images' (the safety test, docs/method.md); None without held-out images."""
        from diffmem.report.findings import copy_numbers, verdict

        return verdict(copy_numbers(self.report))

    def summary(self) -> str:
        """One line: the finding in words and percentages."""
        from diffmem.report.findings import copy_numbers, feature_label, headline

        text, _ = headline("the audited", copy_numbers(self.report), fixed=self.report.get("fraction_above"))
        return f"{text} [{feature_label(self.report.get('features'))}]"

    def to_dict(self) -> dict[str, Any]:
        """report.json's contents, plus `out` (the output folder or None)."""
        return {**self.report, "out": str(self.out) if self.out is not None else None}

    def __str__(self) -> str:
        return self.summary()


def audit(samples: Any, train: Any = None, heldout: Any = None, features: str = "pixels", out: str | Path | None = None,
          *, run: str | Path | None = None, thresholds: Sequence[float] | None = None,
          calibrate: Sequence[float] = AUDIT.calibrate, ratio_k: int | None = AUDIT.ratio_k,
          xflip: bool = AUDIT.xflip, shift: int = AUDIT.shift, max_heldout: int | None = AUDIT.max_heldout,
          resolution: int | None = AUDIT.resolution, resize: bool = AUDIT.resize,
          image_size: int | None = AUDIT.image_size, device: str = "cpu", batch_size: int = AUDIT.batch,
          cache_dir: str | Path | None = None, backend: str = AUDIT.backend, n_pictures: int = AUDIT.n_pictures,
          progress: bool = False, world: Any = None) -> AuditResult:
    """How much do `samples` copy `train`? Give `train` (and ideally `heldout`: unseen real images of the same
    kind, which calibrate what "copy" means), or `run` (a training run: its subset and the rest of its data).
    `xflip` also matches mirrored images, `shift` training images moved by up to that many pixels.
    With `out`, writes report.json/.html/.md, nearest.csv and pictures.
    `thresholds` None: the feature space's own (`evaluate.options.fixed_thresholds`: 0.9 ... 0.99 for pixels, 0.85 ... 0.95 else).
    """
    from diffmem.evaluate.audit import audit_to
    from diffmem.evaluate.features import get_extractor
    from diffmem.report.audit import write_audit_report

    check_audit_inputs(run=run, train=train, heldout=heldout, ratio_k=ratio_k, n_pictures=n_pictures,
                       max_heldout=max_heldout, flags=False, shift=shift)
    if out is not None and (world is None or world.main):
        from diffmem.evaluate.audit_files import check_out_dir

        paths = {name: v for name, v in (("samples", samples), ("train", train), ("heldout", heldout))
                 if isinstance(v, (str, Path))}
        check_out_dir(out, paths)  # before loading anything; never inside the images it reads
    sample_set = _images(samples, "samples")
    if run is not None:
        from diffmem.train.rundir import run_datasets

        train_set, heldout_set = run_datasets(run)
    else:
        train_set = _images(train, "train", resolution, resize)
        heldout_set = _images(heldout, "heldout", resolution, resize) if heldout is not None else None
    res = int(getattr(train_set, "resolution", 0) or np.asarray(getattr(train_set, "images", train_set)).shape[1])
    extractor = get_extractor(features, device, image_size=image_size, resolution=res)
    data = audit_to(out, sample_set, train_set, heldout_set, extractor, n_pictures=n_pictures, world=world,
                    report=write_audit_report,
                    thresholds=tuple(thresholds) if thresholds is not None else AUDIT.thresholds,
                    calibration_percentiles=tuple(calibrate), ratio_k=ratio_k, device=device,
                    batch_size=batch_size, cache_dir=cache_dir, backend=backend, max_heldout=max_heldout,
                    xflip=xflip, shift=shift, progress=progress)
    return AuditResult(data.report, _nearest_rows(data), Path(out) if out is not None else None)


def _nearest_rows(data: Any) -> list[dict[str, Any]]:
    from diffmem.evaluate.audit import copy_threshold

    thr = copy_threshold(data.report)
    a = data.arrays
    mirrored = a.get("nn_mirrored", np.zeros(len(a["nn_similarity"]), dtype=bool))
    return [{"sample": data.sample_names[i], "nearest_train": data.train_names[int(a["nn_index"][i])],
             "similarity": float(a["nn_similarity"][i]), "mirrored": bool(mirrored[i]),
             "copy": None if thr is None else bool(a["nn_similarity"][i] >= thr)} for i in range(len(mirrored))]


@dataclass
class FidResult:
    """A Frechet distance (FID only with Inception features), KID and precision/recall: `report`, `fd`, `name`."""

    report: dict[str, Any]

    @property
    def fd(self) -> float:
        return float(self.report["fd"])

    @property
    def name(self) -> str:
        return str(self.report["fd_name"])

    def summary(self) -> str:
        """One line: 'FD_digits-net = 2.448 (500 samples vs 1747 reference images, digits-net:16)'."""
        r = self.report
        return (f"{r['fd_name']} = {r['fd']:.4f} ({r['n_samples']} samples vs {r.get('n_ref') or '?'} reference "
                f"images, {r['features']}; lower is better)")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.report)

    def __str__(self) -> str:
        return self.summary()


def fid(samples: Any, ref: Any, features: str = "inception", *, resolution: int | None = None, resize: bool = False,
        image_size: int | None = None, device: str = "cpu", batch_size: int = 256,
        cache_dir: str | Path | None = None, kid_subsets: int = KID_SUBSETS,
        kid_subset_size: int = KID_SUBSET_SIZE, pr_k: int = PR_K,
        seed: int = 0, progress: bool = False) -> FidResult:
    """Frechet distance, KID and precision/recall of `samples` against `ref` (images, or a statistics .npz)."""
    from diffmem.evaluate.fid import is_statistics_file, run_fid

    if kid_subsets < 1 or kid_subset_size < 2 or pr_k < 1:
        raise DiffmemError("kid_subsets (--kid-subsets) must be >= 1, kid_subset_size >= 2 and pr_k >= 1")
    ref_set = str(ref) if isinstance(ref, (str, Path)) and is_statistics_file(ref) else _images(
        ref, "ref", resolution, resize)
    if image_size is not None and isinstance(features, str):
        from diffmem.evaluate.features import get_extractor

        res = None if isinstance(ref_set, str) else int(np.asarray(getattr(ref_set, "images", ref_set)).shape[1])
        features = get_extractor(features, device, image_size=image_size, resolution=res)
    report = run_fid(_images(samples, "samples"), ref_set, features, device=device, batch_size=batch_size,
                     cache_dir=cache_dir, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, pr_k=pr_k,
                     seed=seed, progress=progress)
    assert report is not None
    return FidResult(report)


def train(config: Any, out: str | Path, *, device: str = "cpu", overwrite: bool = False,
          progress: bool = False) -> Path:
    """Train (or resume) a run from a `TrainConfig` (see diffmem.config) into `out`; returns the run folder."""
    from diffmem.train.loop import train as _train

    return _train(config, out, device=device, overwrite=overwrite, progress=progress)


def sample(run: str | Path, n: int = 64, *, seed: int = 0, checkpoint: str = "latest", device: str = "cpu",
           precision: str = "fp32", progress: bool = False) -> np.ndarray:
    """`n` images (uint8 [n, H, W, C]) from a trained run's EMA weights; sample i depends only on (seed, i).
    `checkpoint`: "latest", "release" (the guard's certified checkpoint, release.json) or "step-N";
    `precision`: the network's forward pass, "fp32" or "bf16" autocast (faster on CPUs with AMX and on GPUs)."""
    from diffmem.generate import SampleOptions, generate
    from diffmem.train.checkpoint import load_denoiser

    net, cfg, meta = load_denoiser(run, device=device, checkpoint=checkpoint)
    return generate(net, cfg, meta, int(n), seed=seed, opts=SampleOptions(precision=precision), device=device,
                    progress=progress)
