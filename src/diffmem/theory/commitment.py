"""The commitment curve of a training set, and an empirical heuristic range for sigma_n (docs/method.md).

At noise s the baseline optimum denoises `x_s` to `sum_i w_i x_i` with `w = softmax_i(-|x_s - x_i|^2 / (2 s^2))`
(Shah et al. 2025, Sec. 2.2). The weights say how many training images a noisy point still belongs to: the largest
weight `max_i w_i` near 1 means its identity is decided (committed to one image), and the effective count
`1 / sum_i w_i^2` says how many images share the weight. `commitment_curve` measures both as functions of s for
noisy training points `x_i + s n` and for noisy held-out points of the same distribution.

A noisy copy `y_i = x_i + sigma_n z` is such a noisy training point at s = sigma_n, so the curve at s = sigma_n
also says whether a copy still reveals its source: `argmax_is_source` there is the share of copies whose largest
weight is on their own image. The copy noise `z` is nearly orthogonal to the differences `x_i - x_j`, so
`|y_i - x_j|^2 - |y_i - x_i|^2 = |x_i - x_j|^2 + 2 sigma_n z.(x_i - x_j)`: the source stays the nearest image
until sigma_n is comparable to `|x_i - x_j|` itself, whatever the noise norm `sigma_n sqrt(d)` is.

`suggest_sigma_n` turns the curve into a range for Algorithm 1's sigma_n by an empirical heuristic (documented
there); nothing in the paper derives it, and inside it the exact Algorithm 1 optimum still ends mostly on the
source of its copy (docs/method.md, "Theory commands").
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from diffmem.errors import DiffmemError
from diffmem.theory.denoisers import empirical_posterior
from diffmem.theory.distances import median_nn_distance, nearest

__all__ = ["DEFAULT_SIGMAS", "commitment_curve", "default_sigma_grid", "suggest_sigma_n"]

DEFAULT_SIGMAS: tuple[float, ...] = tuple(float(f"{s:.3g}") for s in np.geomspace(0.02, 20.0, 31))
_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def _summary(values: torch.Tensor) -> dict[str, float]:
    v = values.to(torch.float64)
    q = torch.quantile(v, torch.tensor(_QUANTILES, dtype=torch.float64))
    out = {f"p{int(round(p * 100)):02d}": float(x) for p, x in zip(_QUANTILES, q)}
    out["median"] = out.pop("p50")
    out["mean"] = float(v.mean())
    return out


def _check_sigmas(sigmas: Any) -> list[float]:
    try:
        vals = sorted(float(s) for s in sigmas)
    except (TypeError, ValueError):
        raise DiffmemError(f"noise levels must be numbers, got {sigmas!r}") from None
    if not vals or not all(math.isfinite(s) and s > 0 for s in vals):
        raise DiffmemError(f"noise levels must be a non-empty list of finite numbers > 0, got {sigmas!r}")
    return vals


def _train_row(train64: torch.Tensor, src: torch.Tensor, s: float, generator: torch.Generator) -> dict[str, Any]:
    """Posterior statistics of the noisy training points `x_src + s n` at noise s (one draw of n each)."""
    noise = torch.randn((src.numel(), *train64.shape[1:]), generator=generator, dtype=torch.float64)
    q = train64[src] + s * noise  # noisy training points
    post = empirical_posterior(q, train64, s, with_mean=False)
    d_own = (q - train64[src]).reshape(q.shape[0], -1).pow(2).sum(1)
    own_w = torch.exp(-d_own / (2 * s * s) - post.log_norm)  # w_source = exp(logit_source - logsumexp)
    return {
        "max_weight": _summary(post.max_weight),
        "eff_count": _summary(post.eff_count),
        "own_weight": _summary(own_w),
        "argmax_is_source": float((post.argmax == src).double().mean()),
    }


@torch.no_grad()
def commitment_curve(
    train: torch.Tensor,  # [N, C, H, W] (or [N, d]) training images in model range
    heldout: torch.Tensor | None,  # [M, ...] held-out images of the same distribution, or None
    sigmas: Any,  # noise levels (sorted ascending here)
    generator: torch.Generator,
    repeats: int = 1,
    max_heldout: int | None = 2000,
) -> dict[str, Any]:
    """Largest posterior weight and effective count `1/sum w^2` vs noise, for noisy training and held-out points.

    Every training image is noised `repeats` times per level (`x_i + s n`, n from `generator`); held-out images
    (the first `max_heldout`; None: all) once per level. Per level and set it reports quantiles of `max_weight`
    and `eff_count`; for training points also `own_weight` (the weight of the image that was noised) and
    `argmax_is_source` (share whose largest weight is on it). The result is JSON-ready and is the input of
    `suggest_sigma_n` and `default_sigma_grid`.
    """
    if train.ndim < 2 or train.shape[0] < 2:
        raise DiffmemError(f"the commitment curve needs at least 2 training images, got shape {tuple(train.shape)}")
    if heldout is not None and max_heldout is not None:
        heldout = heldout[:max_heldout]
    if heldout is not None and heldout.shape[0] == 0:
        heldout = None
    if heldout is not None and heldout.shape[1:] != train.shape[1:]:
        raise DiffmemError(f"held-out images {tuple(heldout.shape[1:])} differ in shape from training images "
                           f"{tuple(train.shape[1:])}")
    if repeats < 1:
        raise DiffmemError(f"repeats must be >= 1, got {repeats}")
    levels = _check_sigmas(sigmas)
    n = train.shape[0]
    d = int(np.prod(train.shape[1:]))
    train64 = train.to(torch.float64)
    held64 = None if heldout is None else heldout.to(torch.float64)
    src = torch.arange(n).repeat(repeats)  # [n * repeats] source image of each training query
    rows = []
    for s in levels:
        row: dict[str, Any] = {"sigma": s, "train": _train_row(train64, src, s, generator)}
        if held64 is not None:
            noise_h = torch.randn(held64.shape, generator=generator, dtype=torch.float64)
            post_h = empirical_posterior(held64 + s * noise_h, train64, s, with_mean=False)
            row["heldout"] = {"max_weight": _summary(post_h.max_weight), "eff_count": _summary(post_h.eff_count)}
        rows.append(row)
    nn_train = median_nn_distance(train64)
    out: dict[str, Any] = {
        "n_train": n,
        "n_heldout": 0 if held64 is None else int(held64.shape[0]),
        "dim": d,
        "repeats": repeats,
        "generator_seed": int(generator.initial_seed()),
        "median_nn_distance": nn_train,
        "sigmas": levels,
        "rows": rows,
    }
    if held64 is not None:
        out["median_heldout_nn_distance"] = float(nearest(held64, train64)[0].median())
    return out


def _crossing(sig: np.ndarray, val: np.ndarray, level: float) -> float | None:
    """First s (log-linear interpolation) where the decreasing curve `val` drops to `level`; None if it never does."""
    below = np.flatnonzero(val <= level)
    if below.size == 0:
        return None
    j = int(below[0])
    if j == 0:
        return float(sig[0])
    l0, l1, v0, v1 = math.log(sig[j - 1]), math.log(sig[j]), val[j - 1], val[j]
    t = 0.0 if v0 == v1 else (v0 - level) / (v0 - v1)
    return float(math.exp(l0 + t * (l1 - l0)))


def _at(sig: np.ndarray, val: np.ndarray, s: float) -> float:
    """`val` at noise s, interpolated linearly in log s (clamped to the ends of the grid)."""
    return float(np.interp(math.log(s), np.log(sig), val))


def suggest_sigma_n(curve: dict[str, Any], high: float = 0.9, low: float = 0.5, floor_ratio: float = 1.0) -> dict:
    """A sigma_n range from a commitment curve, by an empirical heuristic (not derived in the paper):

    - `window = [s_high, s_low]`: where the median largest weight of noisy *training* points drops from `high`
      (0.9) to `low` (0.5), log-interpolated: below s_high a noisy point belongs to one image, above s_low it is
      shared by several.
    - `floor = floor_ratio * median_nn_distance / sqrt(d)`: the sigma_n whose copy noise norm `sigma_n sqrt(d)`
      equals the median nearest-neighbour distance of the training set. It compares absolute distances only; it
      does not measure whether a copy reveals its source (the copy noise is nearly orthogonal to the differences
      between images: module docstring). Above the floor the copies are still nearest to their sources.
    - `range = [floor, s_high]` (`[s_high, s_high]` if the floor lies above s_high); `suggested` is its top,
      the bottom of the window: the highest level at which a noisy copy still belongs to one image. On CIFAR-10
      (300 images at 16x16, 5 seeds; docs/results.md, section 7) Algorithm 1 at that value showed no difference
      from the baseline in safe quality, and at the range's geometric middle (suggested before) it was worse.

    What the range leaves identifiable is reported, where the curve has it, as `argmax_is_source_at`: the share
    of noisy training points at s = the range ends (`suggested` is `range_high`) whose largest weight is their own image (a
    rough guide to the share of the exact Algorithm 1 optimum's samples that end on their copy's source).
    `warnings` lists every caveat met (`warning`: them joined, absent if none). Returns `{"window", "floor",
    "range", "suggested", "rule", ...}` (levels in model units, images in [-1, 1]); with held-out rows also
    `heldout_window`, the same crossings for noisy held-out points (for reference only).
    """
    sig = np.asarray(curve["sigmas"], dtype=np.float64)
    med = np.asarray([r["train"]["max_weight"]["median"] for r in curve["rows"]], dtype=np.float64)
    if not 0 < low < high < 1:
        raise DiffmemError(f"need 0 < low < high < 1, got low={low}, high={high}")
    s_high, s_low = _crossing(sig, med, high), _crossing(sig, med, low)
    out: dict[str, Any] = {
        "high": high, "low": low, "floor_ratio": floor_ratio,
        "rule": ("empirical heuristic: window = noise where the median largest posterior weight of noisy training "
                 f"points drops from {high} to {low}; floor = {floor_ratio} x median nearest-neighbour distance / "
                 "sqrt(d) (copy noise norm = that distance; not a measure of whether a copy reveals its source); "
                 "range = [floor, bottom of window]; suggested = bottom of window (the range's top)"),
    }
    if s_high is None or s_low is None:
        raise DiffmemError(
            f"the commitment curve never drops below {high if s_high is None else low} (largest level "
            f"{sig[-1]:g}); extend the noise levels upward (e.g. up to 20) and run it again"
        )
    warnings = []
    if s_high == sig[0]:
        warnings.append(f"the median largest weight is already <= {high} at the smallest level {sig[0]:g}; "
                        "extend the noise levels downward")
    floor = floor_ratio * float(curve["median_nn_distance"]) / math.sqrt(float(curve["dim"]))
    lo, hi = (floor, s_high) if floor <= s_high else (s_high, s_high)
    if floor > s_high:
        warnings.append(f"the floor {floor:.3g} (copy noise norm = median nearest-neighbour distance) lies above "
                        f"the bottom of the window {s_high:.3g}; the range is the window bottom alone")
    out.update({"window": [s_high, s_low], "floor": floor, "range": [lo, hi], "suggested": hi})
    if warnings:
        out["warnings"], out["warning"] = warnings, "; ".join(warnings)
    if all("argmax_is_source" in r["train"] for r in curve["rows"]):
        src = np.asarray([r["train"]["argmax_is_source"] for r in curve["rows"]], dtype=np.float64)
        out["argmax_is_source_at"] = {"range_low": _at(sig, src, lo), "range_high": _at(sig, src, hi)}
    if all("heldout" in r for r in curve["rows"]):  # for reference: the same crossings for noisy held-out points
        med_h = np.asarray([r["heldout"]["max_weight"]["median"] for r in curve["rows"]], dtype=np.float64)
        out["heldout_window"] = [_crossing(sig, med_h, high), _crossing(sig, med_h, low)]
    return out


def default_sigma_grid(curve: dict[str, Any], num: int = 6, high: float = 0.9, low: float = 0.5) -> list[float]:
    """A sigma_n sweep grid that brackets `suggest_sigma_n`'s range.

    Geometric, `num` values from half the floor (or of the window bottom, if lower) to twice the top of the window
    (where identity is decided below sigma_n), rounded to 2 significant digits. `high`, `low`: as in
    `suggest_sigma_n`.
    """
    if num < 2:
        raise DiffmemError(f"a sweep grid needs at least 2 values, got {num}")
    sug = suggest_sigma_n(curve, high, low)
    lo, hi = 0.5 * min(sug["floor"], sug["window"][0]), 2.0 * sug["window"][1]
    grid = sorted({float(f"{s:.2g}") for s in np.geomspace(lo, hi, num)})
    return grid
