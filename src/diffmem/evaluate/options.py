"""How a trained run is measured (`EvalOptions`: number of samples, sampler steps, feature spaces,
thresholds), and how `diffmem audit` compares samples with training images (`AuditOptions`).

Used by sweeps, `compare`, the copy monitor, the frontier, the audit and the Python API; it lives in
evaluate, without torch, so that every layer above (and the command line) can read it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from diffmem.config import json_ready
from diffmem.errors import DiffmemError

__all__ = ["EvalOptions", "AuditOptions", "MAX_SHIFT", "PIXEL_THRESHOLDS", "DEFAULT_THRESHOLDS", "CALIBRATION_PERCENTILES",
           "fixed_thresholds",
           "AUDIT_BACKENDS", "check_audit_inputs", "KID_SUBSETS", "KID_SUBSET_SIZE", "PR_K", "TraceOptions"]

# Fixed cosine thresholds of the paper (DINOv2 features: 0.85 ... 0.95), and the held-out percentiles of
# nearest-training similarity used as calibrated thresholds (diffmem.evaluate.memorization).
DEFAULT_THRESHOLDS: tuple[float, ...] = (0.85, 0.875, 0.9, 0.925, 0.95)
CALIBRATION_PERCENTILES: tuple[float, ...] = (99.0, 99.9)
KID_SUBSETS, KID_SUBSET_SIZE, PR_K = 100, 1000, 3  # KID's subsets and their size; precision/recall's k
AUDIT_BACKENDS: tuple[str, ...] = ("torch", "faiss")  # nearest-neighbour search (diffmem.evaluate.search)

# Fixed cosine thresholds for pixel features (our 16x16 digits measurements report > 0.98 / > 0.99, docs/results.md;
# held-out digits already exceed 0.95 often, so pixels need higher thresholds than DINOv2's 0.85 ... 0.95).
PIXEL_THRESHOLDS: tuple[float, ...] = (0.9, 0.95, 0.98, 0.99)


def fixed_thresholds(features: str | None) -> tuple[float, ...]:
    """The default fixed thresholds of a feature space: PIXEL_THRESHOLDS for pixels, else the paper's DINOv2
    thresholds (DEFAULT_THRESHOLDS). One rule for the audit, the sweeps and the monitor."""
    if str(features or "").split(":", 1)[0].split("@", 1)[0] == "pixels":
        return PIXEL_THRESHOLDS
    return DEFAULT_THRESHOLDS


MAX_SHIFT = 4  # --shift's largest value: (2 * 4 + 1)^2 = 81 positions per training image


@dataclass(frozen=True)
class EvalOptions:
    """How every point is measured after training.

    `features`: memorization feature spaces (the first one defines `copy_frac`); `quality_features`: the
    feature space of the Frechet distance (None: `digits-net` for builtin:digits, else `inception`).
    `copy_threshold`: a sample counts as a copy when its nearest-training similarity is at or above it;
    None: the calibrated threshold, the 99th percentile of held-out images' nearest-training similarity.
    `thresholds`: fixed thresholds reported for every feature space (None: per feature family defaults).
    """

    n_samples: int = 500
    sample_steps: int = 18
    sample_seed: int = 0
    features: tuple[str, ...] = ("pixels",)
    quality_features: str | None = None
    thresholds: tuple[float, ...] | None = None
    copy_threshold: float | None = None
    batch: int = 256
    pictures: bool = True

    def quality_name(self, data_spec: str) -> str:
        """The quality feature space for a data set."""
        if self.quality_features:
            return self.quality_features
        return "digits-net" if data_spec.startswith("builtin:digits") else "inception"

    def thresholds_for(self, features: str) -> tuple[float, ...]:
        """Fixed thresholds reported for one feature space."""
        if self.thresholds is not None:
            return tuple(self.thresholds)
        return fixed_thresholds(features)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return json_ready(dataclasses.asdict(self))


@dataclass(frozen=True)
class AuditOptions:
    """How `diffmem audit` compares samples with their nearest training images; the command's defaults, which
    `diffmem.audit` shares: pixel features (no download; `dinov2` is the paper's).

    `thresholds`: fixed cosine thresholds (None: `fixed_thresholds(features)`: 0.9 ... 0.99 for pixels, on
    which 92-96% of held-out digits already exceed 0.85, else 0.85 ... 0.95); `calibrate`: held-out percentiles used as
    calibrated thresholds; `ratio_k` None: 50 neighbours, or a tenth of the training images below 500;
    `max_heldout`: a seeded subset of at most this many held-out images; `n_pictures`: pairs in neighbours.png;
    `batch`: images per feature batch; `backend`: one of AUDIT_BACKENDS.
    """

    features: str = "pixels"
    thresholds: tuple[float, ...] | None = None
    calibrate: tuple[float, ...] = CALIBRATION_PERCENTILES
    ratio_k: int | None = None
    max_heldout: int | None = 10000
    xflip: bool = False
    shift: int = 0  # also match training images moved by up to this many pixels
    resolution: int | None = None
    resize: bool = False
    image_size: int | None = None
    n_pictures: int = 16
    backend: str = "torch"
    batch: int = 256

    def fixed(self) -> tuple[float, ...]:
        """The fixed thresholds this audit reports."""
        return tuple(self.thresholds) if self.thresholds is not None else fixed_thresholds(self.features)


@dataclass(frozen=True)
class TraceOptions:
    """The defaults of `diffmem trace` (diffmem.evaluate.decision.trace_run): samples per run, sampler seed,
    EDM Heun steps, images per batch."""

    n: int = 300
    seed: int = 0
    steps: int = 18
    batch: int = 256


# The names of the audit's inputs as the command line and the Python API (diffmem.audit) spell them.
_FLAG_NAMES = {"run": "--run DIR", "train": "--train SPEC", "heldout": "--heldout", "ratio_k": "--ratio-k",
               "n_pictures": "--n-pictures", "max_heldout": "--max-heldout", "batch": "--batch",
               "image_size": "--image-size", "shift": "--shift"}
_API_NAMES = {"run": "run (a training run directory)", "train": "train (training images)", "heldout": "heldout",
              "ratio_k": "ratio_k (--ratio-k)", "n_pictures": "n_pictures (--n-pictures)",
              "max_heldout": "max_heldout (--max-heldout)", "batch": "batch_size (--batch)",
              "image_size": "image_size (--image-size)", "shift": "shift (--shift)"}


def check_audit_inputs(*, run: Any, train: Any, heldout: Any, ratio_k: int | None, n_pictures: int,
                       max_heldout: int | None, flags: bool, batch: int | None = None,
                       image_size: int | None = None, shift: int = 0) -> None:
    """The audit's rules on its inputs, written once for `diffmem audit` (`flags=True`: messages name the
    flags) and `diffmem.audit` (the keyword arguments): exactly one of run or train; heldout only with train;
    ratio_k, n_pictures and max_heldout at least 1; batch and image_size (when given) positive; shift 0 to
    MAX_SHIFT pixels."""
    n = _FLAG_NAMES if flags else _API_NAMES
    if (run is None) == (train is None):
        first, second = (n["run"], n["train"]) if flags else (n["train"], n["run"])
        raise DiffmemError(f"give exactly one of {first} or {second}")
    if run is not None and heldout is not None:
        what = "--train; with --run" if flags else "train; with run"
        raise DiffmemError(f"{n['heldout']} goes with {what} the held-out set is the rest of the run's data")
    if (ratio_k is not None and ratio_k < 1) or n_pictures < 1 or (max_heldout is not None and max_heldout < 1):
        raise DiffmemError(f"{n['ratio_k']}, {n['n_pictures']} and {n['max_heldout']} must be at least 1")
    for key, value in (("batch", batch), ("image_size", image_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise DiffmemError(f"{n[key]} must be a positive integer, got {value!r}")
    if isinstance(shift, bool) or not isinstance(shift, int) or not 0 <= shift <= MAX_SHIFT:
        raise DiffmemError(f"{n['shift']} must be 0 to {MAX_SHIFT} pixels, got {shift!r}")
