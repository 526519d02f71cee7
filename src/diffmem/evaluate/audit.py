"""One audit: embed samples, training and held-out images, compare, write the output set.

```
OUT/report.json      memorization_report (+ sources, xflip); see diffmem.evaluate.memorization
OUT/nearest.csv      per sample: its file, the nearest training file, similarity, mirrored, copy (>= held-out p99)
OUT/nearest.npz      per-sample nn_index, nn_similarity, nn_mirrored, nn_shift, ratio (+ heldout_* for held-out images)
OUT/histogram.png    nearest-training similarity, samples and held-out images in one chart, threshold lines
OUT/samples.png      the first samples, copies framed in red
OUT/neighbours.png   the most similar samples beside their nearest training images, with file names
OUT/report.html/.md  the finding in one sentence, table, glossary, warnings and the pictures (given `report`)
```
The set is written into a temporary folder and swapped in (see audit_files.py): complete or absent. The report
document is written by the report layer above (`diffmem.report.audit.write_audit_report`), which the callers
above (`diffmem.audit`, the demo) pass in as `report`, so this module never imports it (docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from diffmem.errors import DiffmemError
from diffmem.evaluate.audit_files import image_names, output_folder, write_error, write_nearest_csv
from diffmem.evaluate.extractor import FeatureExtractor
from diffmem.evaluate.features import embed_dataset, get_extractor, images_of
from diffmem.evaluate.memorization import CALIBRATION_PERCENTILES, memorization_analysis
from diffmem.utils.distributed import World

__all__ = ["run_audit", "audit_to", "compute_audit", "write_audit", "AuditData", "copy_threshold", "REPORT", "NEAREST",
           "NEAREST_CSV", "HISTOGRAM", "NEIGHBOURS", "SAMPLES"]

REPORT, NEAREST, NEAREST_CSV = "report.json", "nearest.npz", "nearest.csv"
HISTOGRAM, NEIGHBOURS, SAMPLES = "histogram.png", "neighbours.png", "samples.png"


@dataclass
class AuditData:
    """What an audit computed: the report dict, per-image arrays, the images and their file names."""

    report: dict[str, Any]
    arrays: dict[str, np.ndarray]
    sample_images: np.ndarray
    train_images: np.ndarray
    sample_names: list[str] = field(default_factory=list)
    train_names: list[str] = field(default_factory=list)


def copy_threshold(report: dict[str, Any]) -> float | None:
    """The calibrated copy threshold: the held-out 99th percentile (else the first calibrated one), or None."""
    cal = report.get("calibrated_thresholds") or {}
    if "heldout_p99" in cal:
        return float(cal["heldout_p99"])
    return float(next(iter(cal.values()))) if cal else None


def default_ratio_k(n_train: int) -> int:
    """Neighbours of the ratio test: 50, or a tenth of the training images (at least 2) below 500 of them."""
    return 50 if n_train >= 500 else max(2, n_train // 10)


def _source(data: Any, default: str) -> str:
    return str(getattr(data, "source", default))


def _subsample(data: Any, max_n: int | None, seed: int) -> Any:
    """At most `max_n` images of `data` (a seeded choice, in index order)."""
    n = len(images_of(data))
    if max_n is None or n <= max_n:
        return data
    idx = np.sort(np.random.default_rng(seed).choice(n, size=max_n, replace=False))
    return data.subset(idx) if hasattr(data, "subset") else np.asarray(data)[idx]


def _check_shapes(features: FeatureExtractor, samples: Any, train: Any, heldout: Any | None) -> None:
    s_img, t_img = images_of(samples), images_of(train)
    if features.family == "pixels" and s_img.shape[1:] != t_img.shape[1:]:
        raise DiffmemError(
            f"pixels features need samples and training images of one shape: '{_source(samples, 'samples')}' is "
            f"{_shape(s_img)} but '{_source(train, 'train')}' is {_shape(t_img)}; convert them to the same size and "
            "channels, or use a feature model (dinov2, clip, inception, digits-net), which converts gray to RGB"
        )
    if heldout is not None and features.family == "pixels" and images_of(heldout).shape[1:] != t_img.shape[1:]:
        raise DiffmemError(f"held-out images '{_source(heldout, 'heldout')}' are {_shape(images_of(heldout))}, "
                           f"training images {_shape(t_img)}; pixels features need one shape")


Variant = tuple[Callable[[], np.ndarray], bool, tuple[int, int]]


def _variants(images: np.ndarray, xflip: bool, shift: int) -> list[Variant]:
    """The training images as searched: each as it is, mirrored (`xflip`), and translated by up to `shift`
    pixels along each axis (edges replicated), as (a function making those images, mirrored, (dy, dx));
    the first is the images. Made when called, one variant at a time: (2 shift + 1)^2 copies of the
    training set need not be in memory together."""
    def as_is() -> np.ndarray:
        return images

    def mirrored() -> np.ndarray:
        return np.ascontiguousarray(images[:, :, ::-1])

    def moved(base: Callable[[], np.ndarray], dy: int, dx: int) -> Callable[[], np.ndarray]:
        def make() -> np.ndarray:  # content moved by (dy, dx): out[y, x] = in[y - dy, x - dx]
            padded = np.pad(base(), ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode="edge")
            h, w = images.shape[1:3]
            return np.ascontiguousarray(padded[:, shift - dy:shift - dy + h, shift - dx:shift - dx + w])
        return make

    bases = [(as_is, False)] + ([(mirrored, True)] if xflip else [])
    out: list[Variant] = [(make, flip, (0, 0)) for make, flip in bases]
    moves = [(dy, dx) for dy in range(-shift, shift + 1) for dx in range(-shift, shift + 1) if (dy, dx) != (0, 0)]
    out += [(moved(make, dy, dx), flip, (dy, dx)) for make, flip in bases for dy, dx in moves]
    return out


def _unvariant(report: dict[str, Any], arrays: dict[str, np.ndarray], n_train: int,
               variants: list[Variant]) -> None:
    """After a search against every variant of the training images: indices into train, and which matches
    were mirrored (`nn_mirrored`) or translated (`nn_shift`, (dy, dx) in pixels)."""
    flips = np.array([v[1] for v in variants])
    moves = np.array([v[2] for v in variants], dtype=np.int64)
    for prefix in ("", "heldout_"):
        if f"{prefix}nn_index" in arrays:
            idx = arrays[f"{prefix}nn_index"]
            which = idx // n_train
            arrays[f"{prefix}nn_mirrored"] = flips[which]
            arrays[f"{prefix}nn_shift"] = moves[which]
            arrays[f"{prefix}nn_index"] = idx % n_train
    report["n_train"] = n_train
    report["fraction_mirrored"] = float(arrays["nn_mirrored"].mean())
    report["fraction_shifted"] = float(np.any(arrays["nn_shift"] != 0, axis=1).mean())


def compute_audit(samples: Any, train: Any, heldout: Any | None, features: str | FeatureExtractor, *,
                  thresholds: tuple[float, ...] | None = None,
                  calibration_percentiles: tuple[float, ...] = CALIBRATION_PERCENTILES, ratio_k: int | None = None,
                  device: str = "cpu", batch_size: int = 256, cache_dir: str | Path | None = None,
                  backend: str = "torch", max_heldout: int | None = None, seed: int = 0, xflip: bool = False,
                  shift: int = 0, progress: bool = False, world: World | None = None) -> AuditData:
    """Embed, search and summarize (no files). `xflip`: each image is also matched against mirrored training
    images, and its similarity is the maximum over the two (held-out images too, so calibration is fair).
    `shift`: likewise against the training images translated by up to `shift` pixels along each axis (the
    maximum over (2 shift + 1)^2 positions), so a copy moved by a pixel or two is still found.
    `ratio_k` None: 50, or a tenth of the training images when there are fewer than 500."""
    world = world or World()
    s_img, t_img = images_of(samples), images_of(train)
    if heldout is not None and len(heldout) == 0:  # e.g. a run trained on all of its data
        heldout = None
    if isinstance(features, str):
        features = get_extractor(features, device, resolution=int(t_img.shape[1]))
    if heldout is not None:
        heldout = _subsample(heldout, max_heldout, seed)
    _check_shapes(features, samples, train, heldout)
    kw = {"batch_size": batch_size, "progress": progress and world.main, "world": world}
    variants = _variants(t_img, xflip, shift)

    def embed_variant(make: Callable[[], np.ndarray]) -> Any:
        return embed_dataset(features, make(), cache_dir, **kw)

    # the other variants are made and embedded one at a time, when the search reaches them
    train_f = [embed_dataset(features, train, cache_dir, **kw)] + [
        functools.partial(embed_variant, make) for make, _, _ in variants[1:]]
    held_f = embed_dataset(features, heldout, cache_dir, **kw) if heldout is not None else None
    sample_f = embed_dataset(features, samples, None, **kw)
    report, arrays = memorization_analysis(
        sample_f, train_f, held_f, thresholds, calibration_percentiles=tuple(calibration_percentiles),
        ratio_k=ratio_k if ratio_k is not None else default_ratio_k(len(t_img)), features=features.name,
        backend=backend, device=device, progress=progress and world.main, world=world,
    )
    report["xflip"] = bool(xflip)
    report["shift"] = int(shift)
    if len(variants) > 1:
        _unvariant(report, arrays, len(t_img), variants)
    report["sources"] = {
        "samples": _source(samples, "array"),
        "train": _source(train, "array"),
        "heldout": _source(heldout, "array") if heldout is not None else None,
    }
    if getattr(features, "info", None):  # digits-net: its accuracies
        report["feature_model"] = features.info
    return AuditData(report, arrays, s_img, t_img, image_names(samples, len(s_img)), image_names(train, len(t_img)))


ReportWriter = Callable[[Path, AuditData], Any]  # (folder, data) -> writes report.html/.md there


def write_audit(folder: str | Path, data: AuditData, *, n_pictures: int = 16,
                report: ReportWriter | None = None) -> Path:
    """Write the output set of `data` into `folder` (an existing, empty folder; see output_folder); `report`
    (e.g. `diffmem.report.audit.write_audit_report`) writes report.html/.md beside it, last."""
    from diffmem.evaluate.pictures import marked_grid, neighbours_picture, similarity_chart

    out = Path(folder)
    rep, arrays = data.report, data.arrays
    (out / REPORT).write_text(json.dumps(rep, indent=2) + "\n")
    np.savez(out / NEAREST, **arrays)
    thr = copy_threshold(rep)
    write_nearest_csv(out / NEAREST_CSV, arrays, data.sample_names, data.train_names, thr)
    series = {"samples": arrays["nn_similarity"]}
    if "heldout_nn_similarity" in arrays:
        series["held-out real images"] = arrays["heldout_nn_similarity"]
    similarity_chart(out / HISTOGRAM, series, rep.get("calibrated_thresholds") or {}, features=rep["features"])
    is_copy = arrays["nn_similarity"] >= thr if thr is not None else None
    marked_grid(out / SAMPLES, data.sample_images[:64], is_copy[:64] if is_copy is not None else None)
    neighbours_picture(
        out / NEIGHBOURS, data.sample_images, data.train_images, arrays["nn_similarity"], arrays["nn_index"],
        n=n_pictures, sample_names=data.sample_names, train_names=data.train_names,
        mirrored=arrays.get("nn_mirrored"), copy_threshold=thr, shifts=arrays.get("nn_shift"),
    )
    if report is not None:
        report(out, data)
    return out


def audit_to(out_dir: str | Path | None, samples: Any, train: Any, heldout: Any | None,
             features: str | FeatureExtractor, *, n_pictures: int = 16, report: ReportWriter | None = None,
             world: World | None = None, **kwargs: Any) -> AuditData:
    """`compute_audit`, then (with `out_dir`, on rank 0) the output set written whole into `out_dir`.

    An unwritable `out_dir`, or a folder of other files, is refused before any work."""
    world = world or World()
    with output_folder(out_dir) if out_dir is not None and world.main else contextlib.nullcontext() as tmp:
        data = compute_audit(samples, train, heldout, features, world=world, **kwargs)
        if tmp is not None:
            try:
                write_audit(tmp, data, n_pictures=n_pictures, report=report)
            except OSError as err:
                raise write_error(out_dir, err, "free some space or choose another folder") from None
    return data


def run_audit(samples: Any, train: Any, heldout: Any | None, features: str | FeatureExtractor,
              out_dir: str | Path | None = None, **kwargs: Any) -> dict[str, Any]:
    """Audit `samples` against `train` (ImageDatasets or uint8 arrays); returns the report (report.json).

    `features`: an extractor or its name (see `get_extractor`; `digits-net` takes the training images'
    resolution). Keyword arguments as `compute_audit` (thresholds, calibration_percentiles, ratio_k, device,
    batch_size, cache_dir, backend, max_heldout, seed, xflip, shift, progress, world) and `audit_to` (n_pictures,
    report: the writer of report.html/.md). With `out_dir`, the output set is written there whole. `world` (torchrun): every rank embeds and
    searches a contiguous share; only rank 0 writes.
    """
    return audit_to(out_dir, samples, train, heldout, features, **kwargs).report


def _shape(images: np.ndarray) -> str:
    _, h, w, c = images.shape
    return f"{h}x{w} {'gray' if c == 1 else 'RGB'}"
