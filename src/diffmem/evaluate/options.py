"""How a trained run is measured: number of samples, sampler steps, feature spaces, thresholds.

Used by sweeps, `compare`, the copy monitor and the frontier; it lives in evaluate so that every layer
above can read it without importing the sweep.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from diffmem.config import json_ready

__all__ = ["EvalOptions", "PIXEL_THRESHOLDS"]

# Fixed cosine thresholds for pixel features (our 16x16 digits measurements report > 0.98 / > 0.99, docs/results.md;
# held-out digits already exceed 0.95 often, so pixels need higher thresholds than DINOv2's 0.85 ... 0.95).
PIXEL_THRESHOLDS: tuple[float, ...] = (0.9, 0.95, 0.98, 0.99)


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
        if features.split(":", 1)[0] == "pixels":
            return PIXEL_THRESHOLDS
        from diffmem.evaluate.memorization import DEFAULT_THRESHOLDS

        return DEFAULT_THRESHOLDS

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return json_ready(dataclasses.asdict(self))
