"""How much do samples copy the training set? Nearest-training similarity statistics (report.json).

For every sample: the cosine similarity to its nearest training image (in some feature space),
summarized as mean / median / 95th percentile / max and the fraction above fixed thresholds (the
paper: DINOv2 with 0.85 ... 0.95). The same numbers for held-out real images say what a generator
that never copies scores; their 99th / 99.9th percentiles give *calibrated* thresholds, so "copy"
means "closer to a training image than unseen real images get". Fixed thresholds alone mislead: on
16x16 digits in pixel space 43% of held-out digits already exceed cosine 0.95.

Two ratio tests, each under its own name (docs/method.md, "Metrics"). With `d_1 <= d_2 <= ...` the
distances of a feature `u` to its nearest training features, `d_j = |u - t_j| = sqrt(2 - 2 s_j)` on
unit-normalised features (cosine similarity `s_j`):
- `carlini`: `d_1 / (alpha * mean(d_1 .. d_k))`, alpha = 0.5, k = 50 nearest (Carlini et al. 2023,
  "Extracting training data from diffusion models", Sec. 5.1, eq. 1);
- `nn1_nn2`: `d_1 / d_2` (Yoon et al. 2023, "Diffusion probabilistic models generalize when they fail to
  memorize"; Gu et al. 2023, "On memorization in diffusion models", Sec. 3).
A sample is flagged when its ratio is below 1/3 (`RATIO_THRESHOLD`): far closer to one training image than
to the others. Carlini et al. measure l2 in pixel space; here the distance is that of the audit's unit
features (for `pixels` features: mean-centred, unit-norm pixels).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

import numpy as np
import torch

from diffmem.evaluate.search import nearest_neighbours
from diffmem.evaluate.options import CALIBRATION_PERCENTILES, DEFAULT_THRESHOLDS, fixed_thresholds
from diffmem.utils.distributed import World, gather_in_order, local_slice

__all__ = [
    "DEFAULT_THRESHOLDS",
    "CALIBRATION_PERCENTILES",
    "RATIO_THRESHOLD",
    "CARLINI_ALPHA",
    "RATIO_DEFINITIONS",
    "threshold_key",
    "similarity_label",
    "similarity_stats",
    "fraction_above",
    "unit_distances",
    "carlini_ratio",
    "nn1_nn2_ratio",
    "memorization_analysis",
    "memorization_report",
    "unlike_data_warning",
]

RATIO_THRESHOLD = 1.0 / 3.0
CARLINI_ALPHA = 0.5
RATIO_DEFINITIONS: dict[str, dict[str, str]] = {
    "carlini": {"formula": "d_1 / (alpha * mean(d_1 .. d_k))",
                "citation": "Carlini et al. 2023, Extracting training data from diffusion models, Sec. 5.1, eq. 1"},
    "nn1_nn2": {"formula": "d_1 / d_2",
                "citation": "Yoon et al. 2023; Gu et al. 2023, On memorization in diffusion models, Sec. 3"},
}


def threshold_key(t: float) -> str:
    """JSON key of a threshold: 0.9 -> "0.9", 0.875 -> "0.875"."""
    return f"{float(t):g}"


def similarity_label(features: str | None) -> str:
    """What the nearest-neighbour similarity is in a feature space: for `pixels` (mean-centred, unit-norm
    pixels) the cosine is the Pearson correlation of the two images' pixels."""
    if features is not None and features.split(":", 1)[0] == "pixels":
        return "Pearson correlation of pixels (cosine of mean-centred pixels)"
    return f"cosine similarity of {features or 'feature'} embeddings"


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


def unit_distances(topk_sims: np.ndarray) -> np.ndarray:
    """`d = sqrt(2 - 2 s)`: distances of unit vectors from their cosine similarities `[N, k]` (float64)."""
    return np.sqrt(np.clip(2.0 - 2.0 * np.asarray(topk_sims, dtype=np.float64), 0.0, None))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, and 0 where num is 0 (the sample IS a training image, even among duplicates)."""
    return np.divide(num, den, out=np.zeros_like(num), where=num > 0)


def carlini_ratio(topk_sims: np.ndarray, alpha: float = CARLINI_ALPHA) -> np.ndarray:
    """Carlini et al. 2023 (Sec. 5.1, eq. 1): `d_1 / (alpha * mean(d_1 .. d_k))` over all `k` columns of the
    similarities `[N, k]` (sorted, nearest first); `k` is their n (50)."""
    d = unit_distances(topk_sims)
    return _ratio(d[:, 0], alpha * d.mean(axis=1))


def nn1_nn2_ratio(topk_sims: np.ndarray) -> np.ndarray:
    """Nearest over second-nearest training distance `d_1 / d_2` (Yoon et al. 2023; Gu et al. 2023, Sec. 3)."""
    d = unit_distances(np.asarray(topk_sims)[:, :2])
    return _ratio(d[:, 0], d[:, 1])


def _ratio_block(definition: str, ratio: np.ndarray | None, k: int) -> dict[str, Any] | None:
    """One ratio test's report entry: its definition, citation, parameters and the share flagged."""
    if ratio is None:
        return None
    out: dict[str, Any] = {"definition": definition, **RATIO_DEFINITIONS[definition]}
    out.update({"k": k, "alpha": CARLINI_ALPHA} if definition == "carlini" else {"k": 2})
    out.update(threshold=RATIO_THRESHOLD, fraction_below=float((ratio < RATIO_THRESHOLD).mean()),
               median_ratio=float(np.median(ratio)))
    return out


def _ratios(topk_sims: np.ndarray, k: int) -> dict[str, np.ndarray | None]:
    """Carlini et al.'s ratio over the `k` nearest, and NN1/NN2 (None where fewer than 2 neighbours exist)."""
    return {"carlini": carlini_ratio(topk_sims[:, :k]) if k >= 2 else None,
            "nn1_nn2": nn1_nn2_ratio(topk_sims) if topk_sims.shape[1] >= 2 else None}


def _block(sims: np.ndarray, ratios: dict[str, np.ndarray | None], thresholds: tuple[float, ...], k: int,
           calibrated: dict[str, float] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "n": int(sims.shape[0]),
        "similarity": similarity_stats(sims),
        "fraction_above": fraction_above(sims, thresholds),
        "ratio_tests": {name: _ratio_block(name, r, k) for name, r in ratios.items()},
    }
    out["ratio_test"] = out["ratio_tests"]["carlini"]  # the former key: now Carlini et al.'s definition
    if calibrated:
        out["fraction_above_calibrated"] = fraction_above(sims, calibrated)
    return out


TrainBlock = Union[torch.Tensor, Callable[[], torch.Tensor]]


def _search(queries: list[torch.Tensor], blocks: Sequence[TrainBlock], k: int, world: World,
            **kw: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """The `k` nearest distinct training images of every query set (samples, held-out), one block of
    training features at a time, so only one block is in memory (a callable block is computed when
    reached, once for all query sets). With several blocks (variants of the same images: block v holds
    variant v of every image, index v * n + i) each image counts once, at its most similar variant: it is
    among the `k` nearest of the block of that variant, so merging the blocks' top `k` and keeping
    distinct images (`distinct_images`) is exact. Each rank searches its contiguous share of the
    queries; all get every result, in query order."""
    parts = [q[local_slice(int(q.shape[0]), world)] for q in queries]
    found: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(parts)
    n = None
    for v, block in enumerate(blocks):
        feats = block() if callable(block) else block
        n = int(feats.shape[0]) if n is None else n
        if int(feats.shape[0]) != n:
            raise ValueError(f"training feature block {v} has {feats.shape[0]} rows, block 0 {n}: blocks are "
                             "variants of the same images")
        for j, q in enumerate(parts):
            s, i = nearest_neighbours(q, feats, k=k, **kw)
            s, i = s.numpy(), i.numpy() + v * n
            if found[j] is not None:  # the running k beside this block's (ties: the earlier block)
                s, i = distinct_images(np.concatenate([found[j][0], s], 1), np.concatenate([found[j][1], i], 1),
                                       n, k)
            found[j] = (s, i)
        del feats
    return [(gather_in_order(s, world), gather_in_order(i, world)) for s, i in found]


def _as_blocks(train_feats: torch.Tensor | Sequence[TrainBlock]) -> list[TrainBlock]:
    """Training features as a list of variant blocks; the first must be a tensor (its rows say how many
    images there are)."""
    blocks = [train_feats] if isinstance(train_feats, torch.Tensor) else list(train_feats)
    if not blocks or not isinstance(blocks[0], torch.Tensor):
        raise ValueError("the first block of training features must be a tensor (the images as they are)")
    return blocks


def _neighbours(sims: np.ndarray, idx: np.ndarray, k: int, prefix: str,
                arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray | None]:
    """The per-image arrays (nearest index and similarity, the ratios) into `arrays` under `prefix`;
    returns the ratios."""
    ratios = _ratios(sims, k)
    arrays.update({f"{prefix}nn_index": idx[:, 0], f"{prefix}nn_similarity": sims[:, 0].astype(np.float32),
                   **_ratio_arrays(ratios, prefix)})
    return ratios


def distinct_images(sims: np.ndarray, idx: np.ndarray, n_images: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """From candidate neighbours (rows of `sims`, `idx` into variant blocks of `n_images`), the `k` most
    similar distinct images, most similar first (ties: the earlier column): a less similar variant of an
    image already listed is dropped, so the ratio tests compare a sample's nearest training image with
    *other* training images, not with its own shifted or mirrored versions. Indices stay those of the
    variants found (`idx // n_images` says which)."""
    by_sim = np.argsort(-sims, axis=1, kind="stable")
    sims, idx = np.take_along_axis(sims, by_sim, axis=1), np.take_along_axis(idx, by_sim, axis=1)
    img = idx % n_images
    order = np.argsort(img, axis=1, kind="stable")  # each image's variants together, best (earliest) first
    by_img = np.take_along_axis(img, order, axis=1)
    dup = np.zeros(img.shape, dtype=bool)
    np.put_along_axis(dup, order[:, 1:], by_img[:, 1:] == by_img[:, :-1], axis=1)
    keep = np.argsort(dup, axis=1, kind="stable")[:, :k]  # first k non-duplicates, in similarity order
    return np.take_along_axis(sims, keep, axis=1), np.take_along_axis(idx, keep, axis=1)


def memorization_analysis(
    sample_feats: torch.Tensor,
    train_feats: torch.Tensor | Sequence[TrainBlock],
    heldout_feats: torch.Tensor | None = None,
    thresholds: tuple[float, ...] | None = None,
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
    """The report dict and the per-image arrays (`nn_index`, `nn_similarity`, `ratio` (Carlini et al.'s),
    `ratio_nn1_nn2`, and the same with `heldout_`). The search runs on `device` (default: where
    `sample_feats` are), training features moved there a block at a time; with a `world` of several
    processes each searches a share of the queries and every rank returns the whole result.
    `thresholds` None: the feature space's fixed thresholds (`fixed_thresholds(features)`).
    `train_feats`: a tensor, or blocks of variants of the same images (the first a tensor, the others also
    callables making one): each image counts once, at its best variant; `nn_index` v * n + i (`_search`).
    """
    world = world or World()
    thresholds = tuple(thresholds) if thresholds is not None else fixed_thresholds(features)
    blocks = _as_blocks(train_feats)
    n_train = int(blocks[0].shape[0])  # images, not variants
    k = min(int(ratio_k), n_train)  # Carlini et al.'s n, capped at the training-set size
    if device is not None:
        sample_feats = sample_feats.to(device)
        heldout_feats = heldout_feats.to(device) if heldout_feats is not None else None
    search_k = min(max(k, 2), n_train)  # the NN1/NN2 ratio needs 2 even when ratio_k is 1
    has_heldout = heldout_feats is not None and heldout_feats.shape[0] > 0
    found = _search([sample_feats] + ([heldout_feats] if has_heldout else []), blocks, search_k, world,
                    chunk_size=chunk_size, backend=backend, progress=progress)
    arrays: dict[str, np.ndarray] = {}
    s_sims, s_ratios = found[0][0], _neighbours(*found[0], k, "", arrays)

    warnings: list[str] = ["no held-out images: no reference scores and no calibrated thresholds"]  # else replaced
    calibrated: dict[str, float] = {}
    h_block = None
    if has_heldout:
        h_sims, h_ratios = found[1][0], _neighbours(*found[1], k, "heldout_", arrays)
        calibrated, warnings = _calibrate(h_sims[:, 0], calibration_percentiles)
        warnings += unlike_data_warning(s_sims[:, 0], h_sims[:, 0])
        h_block = _block(h_sims[:, 0], h_ratios, thresholds, k, calibrated)
    warnings += _ratio_warnings(k, int(ratio_k), n_train)

    report: dict[str, Any] = {
        "features": features, "similarity_measure": similarity_label(features),
        "n_samples": int(sample_feats.shape[0]), "n_train": n_train,
        "n_heldout": int(heldout_feats.shape[0]) if heldout_feats is not None else 0,
        "thresholds": [float(t) for t in thresholds],
    }
    block = _block(s_sims[:, 0], s_ratios, thresholds, k, calibrated)
    report.update({key: value for key, value in block.items() if key != "n"})
    report["calibrated_thresholds"] = calibrated or None
    report["heldout"] = h_block
    report["warnings"] = warnings
    return report, arrays


UNLIKE_DATA_PERCENTILE = 1.0  # the held-out percentile below which the samples' median says "not this kind"


def unlike_data_warning(sample_sims: np.ndarray, heldout_sims: np.ndarray) -> list[str]:
    """A warning when the samples are not the data's kind of image: their median nearest-training similarity
    is below the held-out images' 1st percentile, i.e. most samples are farther from every training image
    than 99% of unseen real images are. Few copies then say nothing about memorization: the generator is not
    producing images like its training data (undertrained, broken, or audited against the wrong data set)."""
    if len(sample_sims) == 0 or len(heldout_sims) == 0:
        return []
    median = float(np.median(np.asarray(sample_sims, dtype=np.float64)))
    floor = float(np.percentile(np.asarray(heldout_sims, dtype=np.float64), UNLIKE_DATA_PERCENTILE))
    if median >= floor:
        return []
    held_median = float(np.median(np.asarray(heldout_sims, dtype=np.float64)))
    return [f"the samples are not the data's kind of image: their median nearest-training similarity "
            f"{median:.3f} is below the held-out images' {UNLIKE_DATA_PERCENTILE:g}st percentile {floor:.3f} "
            f"(held-out median {held_median:.3f}), so few copies here do not mean the generator does not copy: "
            "check that it was trained (enough) and that --train/--run are its training data"]


def _ratio_warnings(k: int, ratio_k: int, n_train: int) -> list[str]:
    """Why a ratio test is missing, or that Carlini et al.'s n was capped at the training-set size."""
    if k < 2:
        return ["Carlini et al.'s ratio needs k >= 2 nearest training images" if n_train >= 2
                else "the ratio tests need at least 2 training images"]
    if k < ratio_k:
        return [f"Carlini et al.'s ratio averages over the {ratio_k} nearest training images, but there are "
                f"only {n_train}: it averages over all of them (k = {k})"]
    return []


def _ratio_arrays(ratios: dict[str, np.ndarray | None], prefix: str) -> dict[str, np.ndarray]:
    """Per-image ratios: `ratio` (Carlini et al.'s, the former key) and `ratio_nn1_nn2`, with `prefix`."""
    names = {"carlini": "ratio", "nn1_nn2": "ratio_nn1_nn2"}
    return {prefix + names[k]: r.astype(np.float32) for k, r in ratios.items() if r is not None}


def _calibrate(nn_sims: np.ndarray, percentiles: tuple[float, ...]) -> tuple[dict[str, float], list[str]]:
    """Calibrated thresholds (percentiles of the held-out nearest-training similarities) and warnings."""
    calibrated: dict[str, float] = {}
    warnings: list[str] = []
    n_h = nn_sims.shape[0]
    for p in percentiles:
        calibrated[f"heldout_p{p:g}"] = float(np.percentile(nn_sims.astype(np.float64), p))
        above = n_h * (1 - p / 100)
        if above < 5:
            warnings.append(f"the held-out {p:g}th percentile comes from {n_h} images (about {above:.1f} above it); "
                            "use more held-out images for a stable calibrated threshold")
    return calibrated, warnings


def memorization_report(
    sample_feats: torch.Tensor,
    train_feats: torch.Tensor,
    heldout_feats: torch.Tensor | None = None,
    thresholds: tuple[float, ...] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """The report.json contents (keyword arguments as `memorization_analysis`)."""
    return memorization_analysis(sample_feats, train_feats, heldout_feats, thresholds, **kwargs)[0]
