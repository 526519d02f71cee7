"""Sample quality from features: Frechet distance, KID, precision/recall. All statistics in float64."""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch

from diffmem.errors import DiffmemError

__all__ = ["feature_statistics", "frechet_distance", "kid", "kid_report", "kid_subset_size", "precision_recall"]


def _as_f64(feats: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(feats, torch.Tensor):
        feats = feats.detach().cpu().numpy()
    x = np.asarray(feats, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {x.shape}")
    return x


def feature_statistics(feats: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean `[D]` and unbiased covariance `[D, D]` (divided by N - 1), float64."""
    x = _as_f64(feats)
    if x.shape[0] < 2:
        raise DiffmemError(f"Frechet distance needs at least 2 images per set, got {x.shape[0]}")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """`|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))` (Frechet distance of two Gaussians).

    As the standard FID tools: scipy's `sqrtm`; if the product is singular (non-finite root), retry with
    `eps` added to both diagonals; an imaginary part larger than 1e-3 on the diagonal is an error,
    smaller residue from round-off is dropped.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.shape[0],) * 2:
        raise DiffmemError(
            f"feature statistics do not match: mean {mu1.shape} vs {mu2.shape}, covariance {s1.shape} vs {s2.shape} "
            "(were they computed with different feature extractors?)"
        )
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        residue = np.max(np.abs(np.diagonal(covmean).imag))
        if residue > 1e-3:
            raise DiffmemError(
                f"the covariance square root has an imaginary part of {residue:.3g}; the statistics are too "
                "singular to compare (use more images than feature dimensions)"
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def _poly_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x @ y.T / x.shape[1] + 1.0) ** 3  # k(x, y) = (x.y / d + 1)^3, as in the KID paper


def kid(feats_a: torch.Tensor | np.ndarray, feats_b: torch.Tensor | np.ndarray, subsets: int = 100,
        subset_size: int = 1000, generator: np.random.Generator | int | None = None) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2, mean and std over subsets.

    Per subset of m images from each set (drawn without replacement):
    `MMD^2_u = sum_{i!=j} [k(a_i,a_j) + k(b_i,b_j)] / (m(m-1)) - 2 sum_{i,j} k(a_i,b_j) / m^2`.
    `generator` (numpy Generator or seed, default seed 0) draws the subsets.
    """
    a = torch.from_numpy(_as_f64(feats_a))
    b = torch.from_numpy(_as_f64(feats_b))
    if a.shape[1] != b.shape[1]:
        raise DiffmemError(f"KID: feature dimensions differ ({a.shape[1]} vs {b.shape[1]})")
    m = kid_subset_size(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise DiffmemError(f"KID needs at least 2 images per set, got {a.shape[0]} and {b.shape[0]}")
    rng = generator if isinstance(generator, np.random.Generator) else np.random.default_rng(generator or 0)
    values = np.empty(int(subsets))
    for s in range(int(subsets)):
        x = a[torch.from_numpy(rng.choice(a.shape[0], m, replace=False))]
        y = b[torch.from_numpy(rng.choice(b.shape[0], m, replace=False))]
        kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
        within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        values[s] = float(within - 2.0 * kxy.sum() / (m * m))
    return float(values.mean()), float(values.std())


def kid_subset_size(requested: int, n_a: int, n_b: int) -> int:
    """The subset size `kid` uses: the requested one, capped at the smaller set."""
    return min(int(requested), int(n_a), int(n_b))


def kid_report(feats_a: torch.Tensor | np.ndarray, feats_b: torch.Tensor | np.ndarray, subsets: int = 100,
               subset_size: int = 1000, generator: np.random.Generator | int | None = None,
               names: tuple[str, str] = ("samples", "reference images")) -> dict:
    """`kid` with what it rests on: mean, std, subsets, the subset size used and requested, and `warning`
    (None, or why the std is understated: a subset that is a whole set is the same in every draw, so that
    set's sampling variation is missing from the spread)."""
    n_a, n_b = int(feats_a.shape[0]), int(feats_b.shape[0])
    mean, std = kid(feats_a, feats_b, subsets, subset_size, generator)
    m = kid_subset_size(subset_size, n_a, n_b)
    whole = [f"all {n} {name}" for n, name in ((n_a, names[0]), (n_b, names[1])) if m >= n]
    warning = None
    if whole:
        warning = (f"KID subsets of {m} (requested {int(subset_size)}) take {' and '.join(whole)} every time, so "
                   f"the std over subsets ({std:.3g}) misses that set's sampling variation and understates the "
                   f"uncertainty; use a subset size below {min(n_a, n_b)} (--kid-subset-size; kid_subset_size "
                   f"in diffmem.fid)")
    return {"mean": mean, "std": std, "subsets": int(subsets), "subset_size": m,
            "subset_size_requested": int(subset_size), "warning": warning}


def _kth_radius(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance of each row of `x` to its k-th nearest other row (the row itself excluded)."""
    out = torch.empty(x.shape[0], dtype=x.dtype)
    for s in range(0, x.shape[0], chunk):
        d = torch.cdist(x[s : s + chunk], x)  # [c, N]
        out[s : s + chunk] = d.topk(k + 1, dim=1, largest=False).values[:, k]  # index 0 is the row itself
    return out


def _covered(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int) -> torch.Tensor:
    """Is each point inside at least one ball (centre_j, radius_j)?"""
    out = torch.empty(points.shape[0], dtype=torch.bool)
    for s in range(0, points.shape[0], chunk):
        d = torch.cdist(points[s : s + chunk], centres)  # [c, M]
        out[s : s + chunk] = (d <= radii[None, :]).any(dim=1)
    return out


def precision_recall(real: torch.Tensor | np.ndarray, fake: torch.Tensor | np.ndarray, k: int = 3,
                     chunk_size: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019, eqs. 1-2), k-NN manifolds in feature space.

    Each set's manifold is the union of balls around its points, the radius of a point being its distance
    to its k-th nearest OTHER point of the same set (the point itself not counted). Precision: share of
    fake points inside the real manifold; recall: share of real points inside the fake manifold (a point
    on a ball's boundary is inside). Distances in float32, `chunk_size` rows at a time.
    Returns (precision, recall).
    """
    r = torch.from_numpy(_as_f64(real)).float()
    f = torch.from_numpy(_as_f64(fake)).float()
    if min(r.shape[0], f.shape[0]) <= k:
        raise DiffmemError(f"precision/recall with k={k} needs more than {k} images per set, "
                           f"got {r.shape[0]} real and {f.shape[0]} generated")
    precision = _covered(f, r, _kth_radius(r, k, chunk_size), chunk_size).double().mean()
    recall = _covered(r, f, _kth_radius(f, k, chunk_size), chunk_size).double().mean()
    return float(precision), float(recall)
