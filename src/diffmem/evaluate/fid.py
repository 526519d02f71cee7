"""Quality of samples against a reference: Frechet distance (FID only on Inception-v3), KID,
precision/recall, and reference statistics files (`.npz` with `mu`, `sigma`, `n`, `features`)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffmem.errors import DiffmemError, require_finite
from diffmem.evaluate.extractor import FeatureExtractor
from diffmem.evaluate.features import embed_dataset, fd_name, get_extractor, images_of
from diffmem.evaluate.options import KID_SUBSET_SIZE, KID_SUBSETS, PR_K
from diffmem.evaluate.quality import feature_statistics, frechet_distance, kid_report, precision_recall

__all__ = [
    "MIN_FID_SAMPLES",
    "save_statistics",
    "load_statistics",
    "is_statistics_file",
    "check_statistics_family",
    "quality_report",
    "run_fid",
]

MIN_FID_SAMPLES = 10_000


def save_statistics(path: str | Path, mu: np.ndarray, sigma: np.ndarray, n: int, features: str,
                    source: str = "") -> Path:
    """Write reference statistics (float64 mean and covariance, image count, feature name, source)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64), n=np.int64(n),
                 features=np.str_(features), source=np.str_(source))
    return path


def is_statistics_file(path: str | Path) -> bool:
    """Is `path` a .npz holding `mu` and `sigma` (rather than images)?"""
    p = Path(path)
    if p.suffix.lower() != ".npz" or not p.is_file():
        return False
    try:
        with np.load(p, allow_pickle=False) as z:
            return "mu" in z.files and "sigma" in z.files
    except (OSError, ValueError, zipfile.BadZipFile):
        return False


def load_statistics(path: str | Path) -> dict[str, Any]:
    """Read a statistics .npz (ours, or pytorch-fid's with only `mu` and `sigma`)."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            if "mu" not in z.files or "sigma" not in z.files:
                raise DiffmemError(f"'{p}' holds no reference statistics (needs 'mu' and 'sigma'); "
                                   "make one with `diffmem fid --ref DATA --save-stats FILE.npz`")
            out = {"mu": z["mu"].astype(np.float64), "sigma": z["sigma"].astype(np.float64),
                   "n": int(z["n"]) if "n" in z.files else None,
                   "features": str(z["features"]) if "features" in z.files else None,
                   "source": str(z["source"]) if "source" in z.files else str(p)}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DiffmemError(f"cannot read statistics file '{p}' ({err})") from None
    d = out["mu"].shape[0] if out["mu"].ndim == 1 else -1
    if out["sigma"].shape != (d, d):
        raise DiffmemError(f"'{p}': mu {out['mu'].shape} and sigma {out['sigma'].shape} do not fit together")
    return out


def quality_report(
    sample_feats: torch.Tensor,
    ref_feats: torch.Tensor | None = None,
    *,
    ref_stats: dict[str, Any] | None = None,
    features: str,
    kid_subsets: int = KID_SUBSETS,
    kid_subset_size: int = KID_SUBSET_SIZE,
    pr_k: int = PR_K,
    seed: int = 0,
) -> dict[str, Any]:
    """Frechet distance, KID and precision/recall of samples against reference features (or statistics).

    With only statistics of the reference, KID and precision/recall (which need the features) are None.
    Every figure comes with the sample and reference counts; fewer than 10k samples adds a warning, and so
    does a KID subset size that takes a whole set (its std is then understated). Precision is the share of
    samples on the reference manifold, recall the share of reference images on the samples' manifold.
    """
    for values, what in ((sample_feats, "the sample features"), (ref_feats, "the reference features"),
                         (None if ref_stats is None else ref_stats["mu"], "the reference statistics (mu)"),
                         (None if ref_stats is None else ref_stats["sigma"], "the reference statistics (sigma)")):
        if values is not None:  # NaN/Inf would hang scipy's sqrtm
            require_finite(values, what)
    n_s = int(sample_feats.shape[0])
    if ref_feats is not None:
        mu_r, sig_r = feature_statistics(ref_feats)
        n_r: int | None = int(ref_feats.shape[0])
    elif ref_stats is not None:
        mu_r, sig_r, n_r = ref_stats["mu"], ref_stats["sigma"], ref_stats.get("n")
    else:
        raise ValueError("give reference features or reference statistics")
    mu_s, sig_s = feature_statistics(sample_feats)
    name = fd_name(features)
    warnings = []
    if n_s < MIN_FID_SAMPLES:
        warnings.append(f"{name} rests on {n_s} samples (< {MIN_FID_SAMPLES}): it is biased upward, "
                        "so compare it only between runs with the same sample count")
    out: dict[str, Any] = {
        "features": features,
        "n_samples": n_s,
        "n_ref": n_r,
        "fd_name": name,
        "fd": frechet_distance(mu_s, sig_s, mu_r, sig_r),
        "kid": None,
        "precision_recall": None,
    }
    if ref_feats is not None:
        kid_out = kid_report(sample_feats, ref_feats, kid_subsets, kid_subset_size, np.random.default_rng(seed))
        kid_warning = kid_out.pop("warning")
        if kid_warning:
            warnings.append(kid_warning)
        out["kid"] = kid_out
        p, r = precision_recall(ref_feats, sample_feats, k=pr_k)  # real = reference, generated = samples
        out["precision_recall"] = {"precision": p, "recall": r, "k": pr_k}
    else:
        warnings.append("the reference is given as statistics only: KID and precision/recall need its images")
    out["warnings"] = warnings
    return out


def run_fid(
    samples: Any | None,
    ref: Any,
    features: str | FeatureExtractor,
    *,
    device: str = "cpu",
    batch_size: int = 256,
    cache_dir: str | Path | None = None,
    save_stats: str | Path | None = None,
    kid_subsets: int = KID_SUBSETS,
    kid_subset_size: int = KID_SUBSET_SIZE,
    pr_k: int = PR_K,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any] | None:
    """Embed and compare. `ref` is an ImageDataset/array or a statistics .npz path.

    `save_stats` writes the reference statistics (needs reference images). With `samples=None` only
    the statistics are written and None is returned.
    """
    ref_stats = load_statistics(ref) if isinstance(ref, (str, Path)) else None
    if isinstance(features, str):
        if ref_stats is not None:
            check_statistics_family(ref_stats, features, str(ref))
        res = None if ref_stats is not None else int(images_of(ref).shape[1])
        made_with = (ref_stats or {}).get("features") or ""
        if features == "digits-net" and made_with.startswith("digits-net:"):
            features = made_with  # the statistics say at which resolution they were made
        features = get_extractor(features, device, resolution=res)
    kw = {"batch_size": batch_size, "progress": progress}
    ref_feats = None
    if ref_stats is None:
        ref_feats = embed_dataset(features, ref, cache_dir, **kw)
        if save_stats is not None:
            mu, sigma = feature_statistics(ref_feats)
            save_statistics(save_stats, mu, sigma, int(ref_feats.shape[0]), features.name,
                            str(getattr(ref, "source", "")))
    elif save_stats is not None:
        raise DiffmemError("--save-stats needs reference images, but --ref is already a statistics file")
    if samples is None:
        return None
    sample_feats = embed_dataset(features, samples, None, **kw)
    if ref_stats is not None:
        _check_stats(ref_stats, features, int(sample_feats.shape[1]), str(ref))
    report = quality_report(sample_feats, ref_feats, ref_stats=ref_stats, features=features.name,
                            kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, pr_k=pr_k, seed=seed)
    if getattr(features, "info", None):  # digits-net: its accuracies
        report["feature_model"] = features.info
    report["sources"] = {"samples": str(getattr(samples, "source", "array")),
                         "ref": str(ref) if ref_stats is not None else str(getattr(ref, "source", "array"))}
    return report


def check_statistics_family(stats: dict[str, Any], features: str, path: str) -> None:
    """Refuse statistics made in another feature family before any model is loaded."""
    made_with = stats.get("features")
    if made_with and made_with.split(":", 1)[0] != features.split(":", 1)[0]:
        raise DiffmemError(f"statistics '{path}' were made with features '{made_with}', not '{features}'; "
                           f"pass --features {made_with} or recompute them")


def _check_stats(stats: dict[str, Any], extractor: FeatureExtractor, dim: int, path: str) -> None:
    made_with = stats.get("features")
    if made_with is not None and made_with != extractor.name:
        raise DiffmemError(f"statistics '{path}' were made with features '{made_with}', not '{extractor.name}'; "
                           f"pass --features {made_with} or recompute them")
    if stats["mu"].shape[0] != dim:
        raise DiffmemError(f"statistics '{path}' have dimension {stats['mu'].shape[0]}, but {extractor.name} "
                           f"gives {dim}; they were made with another feature extractor")
