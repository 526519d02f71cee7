"""One audit: embed samples, training and held-out images, compare, write the report files.

```
OUT/report.json      memorization_report (+ sources); see diffmem.evaluate.memorization
OUT/nearest.npz      per-sample nn_index, nn_similarity, ratio (+ heldout_* for held-out images)
OUT/histogram.png    nearest-training similarity, samples vs held-out
OUT/neighbours.png   the most similar samples beside their nearest training images
```
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from diffmem.errors import DiffmemError
from diffmem.evaluate.features import FeatureExtractor, embed_dataset, get_extractor, images_of
from diffmem.evaluate.memorization import CALIBRATION_PERCENTILES, DEFAULT_THRESHOLDS, memorization_analysis
from diffmem.evaluate.pictures import neighbours_picture, similarity_histogram
from diffmem.train.distributed import World

__all__ = ["run_audit", "REPORT", "NEAREST", "HISTOGRAM", "NEIGHBOURS"]

REPORT, NEAREST, HISTOGRAM, NEIGHBOURS = "report.json", "nearest.npz", "histogram.png", "neighbours.png"


def _source(data: Any, default: str) -> str:
    return str(getattr(data, "source", default))


def _subsample(data: Any, max_n: int | None, seed: int) -> Any:
    """At most `max_n` images of `data` (a seeded choice, in index order)."""
    n = len(images_of(data))
    if max_n is None or n <= max_n:
        return data
    idx = np.sort(np.random.default_rng(seed).choice(n, size=max_n, replace=False))
    return data.subset(idx) if hasattr(data, "subset") else np.asarray(data)[idx]


def run_audit(
    samples: Any,
    train: Any,
    heldout: Any | None,
    features: str | FeatureExtractor,
    out_dir: str | Path,
    *,
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS,
    calibration_percentiles: tuple[float, ...] = CALIBRATION_PERCENTILES,
    ratio_k: int = 50,
    device: str = "cpu",
    batch_size: int = 256,
    cache_dir: str | Path | None = None,
    backend: str = "torch",
    max_heldout: int | None = None,
    n_pictures: int = 16,
    seed: int = 0,
    progress: bool = False,
    world: World | None = None,
) -> dict[str, Any]:
    """Audit `samples` against `train` (ImageDatasets or uint8 arrays); writes OUT/* and returns the report.

    `features`: an extractor or its name (see `get_extractor`; `digits-net` takes the training images'
    resolution). Training and held-out features are cached in `cache_dir` (None: no cache).
    `max_heldout`: use a seeded subset of at most this many held-out images.
    `world` (torchrun): every rank embeds and searches a contiguous share; only rank 0 writes OUT.
    """
    world = world or World()
    s_img, t_img = images_of(samples), images_of(train)
    if heldout is not None and len(heldout) == 0:  # e.g. a run trained on all of its data
        heldout = None
    if isinstance(features, str):
        features = get_extractor(features, device, resolution=int(t_img.shape[1]))
    if features.family == "pixels" and s_img.shape[1:] != t_img.shape[1:]:
        raise DiffmemError(
            f"pixels features need samples and training images of one shape: '{_source(samples, 'samples')}' is "
            f"{_shape(s_img)} but '{_source(train, 'train')}' is {_shape(t_img)}; convert them to the same size and "
            "channels, or use a feature model (dinov2, clip, inception, digits-net), which converts gray to RGB"
        )
    if heldout is not None:
        heldout = _subsample(heldout, max_heldout, seed)
        if features.family == "pixels" and images_of(heldout).shape[1:] != t_img.shape[1:]:
            raise DiffmemError(f"held-out images '{_source(heldout, 'heldout')}' are {_shape(images_of(heldout))}, "
                               f"training images {_shape(t_img)}; pixels features need one shape")

    kw = {"batch_size": batch_size, "progress": progress and world.main, "world": world}
    train_f = embed_dataset(features, train, cache_dir, **kw)
    held_f = embed_dataset(features, heldout, cache_dir, **kw) if heldout is not None else None
    sample_f = embed_dataset(features, samples, None, **kw)

    report, arrays = memorization_analysis(
        sample_f, train_f, held_f, tuple(thresholds), calibration_percentiles=tuple(calibration_percentiles),
        ratio_k=ratio_k, features=features.name, backend=backend, device=device, progress=progress and world.main,
        world=world,
    )
    report["sources"] = {
        "samples": _source(samples, "array"),
        "train": _source(train, "array"),
        "heldout": _source(heldout, "array") if heldout is not None else None,
    }
    if getattr(features, "info", None):  # digits-net: its accuracies
        report["feature_model"] = features.info
    if not world.main:
        return report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{REPORT}.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out / REPORT)
    np.savez(out / NEAREST, **arrays)
    similarity_histogram(
        out / HISTOGRAM, arrays["nn_similarity"], arrays.get("heldout_nn_similarity"), tuple(thresholds),
        report["calibrated_thresholds"], title=f"nearest-training similarity ({features.name})",
    )
    neighbours_picture(
        out / NEIGHBOURS, s_img, t_img, arrays["nn_similarity"], arrays["nn_index"], n=n_pictures,
        title=f"most similar samples (left) and their nearest training images (right), {features.name}",
    )
    return report


def _shape(images: np.ndarray) -> str:
    _, h, w, c = images.shape
    return f"{h}x{w} {'gray' if c == 1 else 'RGB'}"
