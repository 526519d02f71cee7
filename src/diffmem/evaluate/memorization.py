"""How much do samples copy the training set? Nearest-training similarity statistics (report.json).

For every sample: the cosine similarity to its nearest training image (in some feature space),
summarized as mean / median / 95th percentile / max and the fraction above fixed thresholds (the
paper: DINOv2 with 0.85 ... 0.95). The same numbers for held-out real images say what a generator
that never copies scores; their 99th / 99.9th percentiles give *calibrated* thresholds, so "copy"
means "closer to a training image than unseen real images get". Fixed thresholds alone mislead: on
16x16 digits in pixel space 43% of held-out digits already exceed cosine 0.95.

Also the ratio test (after Carlini et al. 2023, "Extracting training data from diffusion models"):
with `d_j = |u - t_j| = sqrt(2 - 2 s_j)` the distances of a unit feature `u` to its `k` nearest
training features, `ratio = d_1 / mean(d_1 .. d_k)`; a sample is flagged when `ratio < 1/3`, i.e. it
sits far closer to one training image than to that image's neighbourhood.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from diffmem.evaluate.neighbours import nearest_neighbours
from diffmem.train.distributed import World, gather_in_order, local_slice

__all__ = [
    "DEFAULT_THRESHOLDS",
    "CALIBRATION_PERCENTILES",
    "RATIO_THRESHOLD",
    "threshold_key",
    "similarity_stats",
    "fraction_above",
    "ratio_scores",
    "memorization_analysis",
    "memorization_report",
]

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.85, 0.875, 0.9, 0.925, 0.95)
CALIBRATION_PERCENTILES: tuple[float, ...] = (99.0, 99.9)
RATIO_THRESHOLD = 1.0 / 3.0


def threshold_key(t: float) -> str:
    """JSON key of a threshold: 0.9 -> "0.9", 0.875 -> "0.875"."""
    return f"{float(t):g}"


def similarity_stats(sims: np.ndarray) -> dict[str, float]:
    """mean, median, 95th percentile, max and min of nearest-neighbour similarities."""
    s = np.asarray(sims, dtype=np.float64)
    return {
        "mean": float(s.mean()),
        "median": float(np.median(s)),
        "p95": float(np.percentile(s, 95)),
        "max": float(s.max()),
        "min": float(s.min()),
    }


def fraction_above(sims: np.ndarray, thresholds: dict[str, float] | tuple[float, ...]) -> dict[str, float]:
    """Fraction of similarities `>= t` for each threshold (keys: `threshold_key(t)` or the dict's keys)."""
    s = np.asarray(sims, dtype=np.float64)
    items = thresholds.items() if isinstance(thresholds, dict) else ((threshold_key(t), t) for t in thresholds)
    return {key: float((s >= t).mean()) for key, t in items}


def ratio_scores(topk_sims: np.ndarray) -> np.ndarray:
    """`d_1 / mean(d_1..d_k)` with `d = sqrt(2 - 2 s)` (unit-vector distance), from similarities `[N, k]`."""
    d = np.sqrt(np.clip(2.0 - 2.0 * np.asarray(topk_sims, dtype=np.float64), 0.0, None))  # [N, k]
    mean = d.mean(axis=1)
    return np.where(mean > 0, d[:, 0] / np.maximum(mean, 1e-300), 0.0)


def _block(sims: np.ndarray, ratio: np.ndarray | None, thresholds: tuple[float, ...], k: int,
           calibrated: dict[str, float] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "n": int(sims.shape[0]),
        "similarity": similarity_stats(sims),
        "fraction_above": fraction_above(sims, thresholds),
    }
    if ratio is not None:
        out["ratio_test"] = {
            "k": k,
            "threshold": RATIO_THRESHOLD,
            "fraction_below": float((ratio < RATIO_THRESHOLD).mean()),
            "median_ratio": float(np.median(ratio)),
        }
    else:
        out["ratio_test"] = None
    if calibrated:
        out["fraction_above_calibrated"] = fraction_above(sims, calibrated)
    return out


def _search(feats: torch.Tensor, train: torch.Tensor, k: int, world: World,
            **kw: Any) -> tuple[np.ndarray, np.ndarray]:
    """Each rank searches its contiguous share of the queries; all get every result, in query order."""
    part = local_slice(int(feats.shape[0]), world)
    sims, idx = nearest_neighbours(feats[part], train, k=k, **kw)
    return gather_in_order(sims.numpy(), world), gather_in_order(idx.numpy(), world)


def memorization_analysis(
    sample_feats: torch.Tensor,
    train_feats: torch.Tensor,
    heldout_feats: torch.Tensor | None = None,
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS,
    *,
    calibration_percentiles: tuple[float, ...] = CALIBRATION_PERCENTILES,
    ratio_k: int = 50,
    features: str | None = None,
    chunk_size: int = 4096,
    backend: str = "torch",
    device: str | torch.device | None = None,
    progress: bool = False,
    world: World | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The report dict and the per-image arrays (`nn_index`, `nn_similarity`, `ratio`, and `heldout_*`).

    The search runs on `device` (default: where `sample_feats` are); training features move there a
    block at a time. With a `world` of several processes each searches a share of the queries and every
    rank returns the whole result.
    """
    world = world or World()
    n_train = int(train_feats.shape[0])
    k = min(int(ratio_k), n_train)
    kw = {"chunk_size": chunk_size, "backend": backend, "progress": progress}
    if device is not None:
        sample_feats = sample_feats.to(device)
        heldout_feats = heldout_feats.to(device) if heldout_feats is not None else None
    s_sims, s_idx = _search(sample_feats, train_feats, k, world, **kw)
    arrays: dict[str, np.ndarray] = {"nn_index": s_idx[:, 0], "nn_similarity": s_sims[:, 0].astype(np.float32)}
    s_ratio = ratio_scores(s_sims) if k >= 2 else None
    if s_ratio is not None:
        arrays["ratio"] = s_ratio.astype(np.float32)

    warnings: list[str] = []
    calibrated: dict[str, float] = {}
    h_block = None
    if heldout_feats is not None and heldout_feats.shape[0] > 0:
        h_sims, h_idx = _search(heldout_feats, train_feats, k, world, **kw)
        h_ratio = ratio_scores(h_sims) if k >= 2 else None
        arrays.update(heldout_nn_index=h_idx[:, 0], heldout_nn_similarity=h_sims[:, 0].astype(np.float32))
        if h_ratio is not None:
            arrays["heldout_ratio"] = h_ratio.astype(np.float32)
        n_h = h_sims.shape[0]
        for p in calibration_percentiles:
            calibrated[f"heldout_p{p:g}"] = float(np.percentile(h_sims[:, 0].astype(np.float64), p))
            above = n_h * (1 - p / 100)
            if above < 5:
                warnings.append(
                    f"the held-out {p:g}th percentile comes from {n_h} images (about {above:.1f} above it); "
                    "use more held-out images for a stable calibrated threshold"
                )
        h_block = _block(h_sims[:, 0], h_ratio, tuple(thresholds), k, calibrated)
    else:
        warnings.append("no held-out images: no reference scores and no calibrated thresholds")
    if k < 2:
        warnings.append("the ratio test needs at least 2 training images")
    elif n_train < 10 * k:
        warnings.append(f"the ratio test averages over the {k} nearest of only {n_train} training images, "
                        "which reach into other modes of the data; lower ratio_k for small training sets")

    report: dict[str, Any] = {
        "features": features,
        "n_samples": int(sample_feats.shape[0]),
        "n_train": n_train,
        "n_heldout": int(heldout_feats.shape[0]) if heldout_feats is not None else 0,
        "thresholds": [float(t) for t in thresholds],
    }
    block = _block(s_sims[:, 0], s_ratio, tuple(thresholds), k, calibrated)
    report.update({key: value for key, value in block.items() if key != "n"})
    report["calibrated_thresholds"] = calibrated or None
    report["heldout"] = h_block
    report["warnings"] = warnings
    return report, arrays


def memorization_report(
    sample_feats: torch.Tensor,
    train_feats: torch.Tensor,
    heldout_feats: torch.Tensor | None = None,
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS,
    **kwargs: Any,
) -> dict[str, Any]:
    """The report.json contents (keyword arguments as `memorization_analysis`)."""
    return memorization_analysis(sample_feats, train_feats, heldout_feats, thresholds, **kwargs)[0]
