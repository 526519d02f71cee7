"""The finding of an audit in words: copy fractions, the verdict, the headline sentence, shared explanations.

A *copy* is a sample more similar to its nearest training image than 99% of unseen real images are to
theirs (the held-out 99th percentile). Two fractions differ when they differ by more than two binomial
standard errors, `2 sqrt(p (1 - p) / n + q (1 - q) / m)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["CopyNumbers", "copy_numbers", "verdict", "headline", "pct", "two_se", "feature_label",
           "COPY_DEFINITION", "FEATURE_ADVICE", "GLOSSARY"]

COPY_KEY = "heldout_p99"
COPY_DEFINITION = ("A copy is a sample more similar to its nearest training image than 99% of unseen real "
                   "images are to theirs (above the held-out p99).")
FEATURE_ADVICE = {
    "pixels": "pixels (Pearson correlation: cosine of mean-centred pixels): catches pixel-level replicas of "
              "training images, the copies a diffusion model makes; trust it for the copy rate on small images "
              "such as the digits. It misses mirrored copies unless the audit ran with --xflip, and shifted ones.",
    "digits-net": "digits-net (features of a small digit classifier): scores any two digits written alike as "
                  "similar, copy or not; trust it for quality (FD_digits-net), and read its copy rate as "
                  "'same style', a looser notion than pixel replicas.",
    "dinov2": "dinov2 (the paper's feature space): semantic similarity of natural images; trust it for copies "
              "of photos at 224 px and above, where pixels fail.",
    "inception": "inception: the FID network; trust it for quality (FID), not for copies.",
    "clip": "clip: similarity of content and style; a looser notion of copying than dinov2.",
    "torchscript": "torchscript (e.g. SSCD): a trained copy detector; trust it for copies of natural images.",
}
GLOSSARY = {
    "copies": COPY_DEFINITION + " Held-out images score about 1% here by construction.",
    "strict copies": "the same with the held-out 99.9th percentile: closer than 999 of 1000 unseen images.",
    "+-": "two binomial standard errors of the copy fraction; differences smaller than that are not called real.",
    "mean similarity": "mean similarity of each image to its nearest training image (1 = identical).",
    "> T": "share of images whose nearest-training similarity is at least T (fixed thresholds, not calibrated).",
    "held-out real images": "real images of the same data that were not trained on, scored like samples: what a "
                            "generator that never copies would score.",
    "FD": "Frechet distance between sample and held-out features (lower is better); FID only with Inception "
          "features. On a few hundred samples it is biased upward.",
    "mirrored": "the nearest training image matched after mirroring the image left-right (audit --xflip).",
}


def pct(x: float | None, digits: int = 1) -> str:
    """0.4444 -> '44.4%'; None -> '-'."""
    return "-" if x is None else f"{100 * float(x):.{digits}f}%"


def two_se(p: float, n: int, q: float | None = None, m: int | None = None) -> float:
    """Two binomial standard errors of p (n draws), or of p - q (q from m draws; m = 0: q taken as exact)."""
    var = p * (1 - p) / max(n, 1) + (q * (1 - q) / m if q is not None and m else 0.0)
    return 2 * math.sqrt(var)


def feature_label(features: str | None) -> str:
    """'pixels' -> 'pixels (Pearson correlation)'; other names unchanged."""
    name = str(features or "?")
    return "pixels (Pearson correlation)" if name == "pixels" else name


@dataclass(frozen=True)
class CopyNumbers:
    """The copy fraction of samples and of held-out images at the calibrated threshold (None without one)."""

    frac: float | None
    n: int
    heldout_frac: float | None
    n_heldout: int
    threshold: float | None
    strict: float | None = None


def copy_numbers(report: dict[str, Any]) -> CopyNumbers:
    """Copy numbers of an audit report (report.json); read defensively."""
    cal = report.get("calibrated_thresholds") or {}
    held = report.get("heldout") or {}
    above = report.get("fraction_above_calibrated") or {}
    strict = next((v for k, v in above.items() if k != COPY_KEY), None)
    return CopyNumbers(
        frac=above.get(COPY_KEY), n=int(report.get("n_samples") or 0),
        heldout_frac=(held.get("fraction_above_calibrated") or {}).get(COPY_KEY),
        n_heldout=int(held.get("n") or report.get("n_heldout") or 0), threshold=cal.get(COPY_KEY), strict=strict,
    )


def verdict(model: CopyNumbers, baseline: CopyNumbers | None = None) -> str | None:
    """'none beyond unseen images' when the copy fraction is within two standard errors of the held-out one;
    else 'reduced' when it is more than two standard errors below the baseline's; else 'copies'.
    None without a calibrated threshold."""
    if model.frac is None or model.heldout_frac is None:
        return None
    p, h = float(model.frac), float(model.heldout_frac)
    if p - h <= two_se(p, model.n, h, model.n_heldout):
        return "none beyond unseen images"
    if baseline is not None and baseline.frac is not None:
        b = float(baseline.frac)
        if b - p > two_se(p, model.n, b, baseline.n):
            return "reduced"
    return "copies"


_LEAD = {"none beyond unseen images": "No copying beyond unseen images", "reduced": "Copying reduced, not removed",
         "copies": "Copying found"}


def headline(label: str, model: CopyNumbers, *, baseline: CopyNumbers | None = None, baseline_label: str = "baseline",
             unseen: str = "unseen images", quality: tuple[str, float, float | None] | None = None) -> tuple[str, str | None]:
    """(sentence, verdict): e.g. 'Copying reduced, not removed: 44.4% of Algorithm 1 samples are copies
    (baseline 60.0%, unseen digits 1.0%; +-4.4 points), at FD_digits-net 2.448 vs 2.487 (lower is better).'"""
    word = verdict(model, baseline)
    if word is None:
        return (f"{label}: no held-out images, so copies cannot be told apart from resemblance; audit with "
                "held-out real images (--heldout, or --run) for a calibrated copy threshold.", None)
    lead = _LEAD[word]
    if word == "copies" and baseline is not None:
        lead = "Copies, no fewer than the baseline"
    ref = f"{baseline_label} {pct(baseline.frac)}, " if baseline is not None else ""
    err = two_se(float(model.frac), model.n, float(model.heldout_frac), model.n_heldout)
    text = (f"{lead}: {pct(model.frac)} of {label} samples are copies ({ref}{unseen} {pct(model.heldout_frac)}; "
            f"+-{100 * err:.1f} points)")
    if quality is not None:
        name, fd, fd_base = quality
        text += f", at {name} {fd:.3f}" + (f" vs {fd_base:.3f}" if fd_base is not None else "") + " (lower is better)"
    return text + ".", word
