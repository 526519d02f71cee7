"""The report of one audit (`diffmem audit`, standalone or --run): report.html and report.md in its folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diffmem.report.document import Document
from diffmem.report.findings import (COPY_DEFINITION, FEATURE_ADVICE, GLOSSARY, copy_numbers, excess_text,
                                     feature_label, headline, pct, safety_of)

if TYPE_CHECKING:
    from diffmem.evaluate.audit import AuditData

__all__ = ["write_audit_report", "feature_advice", "summary_rows", "fixed_rows"]


def feature_advice(features: str | None) -> str:
    """What the feature space is good for."""
    family = str(features or "").split(":", 1)[0]
    return FEATURE_ADVICE.get(family, f"{features}: a feature space of your choice.")


def summary_rows(label: str, report: dict[str, Any], fd: float | None = None) -> list[list[Any]]:
    """Table rows (model, then held-out images): label, n, copies, excess (95%), strict copies, mean
    similarity[, FD]."""
    c = copy_numbers(report)
    s = safety_of(c)
    err = excess_text(s).replace("excess ", "").replace(" points, 95%", "") if s is not None else None
    row = [label, c.n, pct(c.frac), err, pct(c.strict), f"{report['similarity']['mean']:.3f}"]
    rows = [row + ([f"{fd:.3f}"] if fd is not None else [])]
    held = report.get("heldout")
    if held:
        h_above = held.get("fraction_above_calibrated") or {}
        h_strict = next((v for k, v in h_above.items() if k != "heldout_p99"), None)
        rows.append(["held-out real images", held["n"], pct(c.heldout_frac), "-", pct(h_strict),
                     f"{held['similarity']['mean']:.3f}"] + (["-"] if fd is not None else []))
    return rows


SUMMARY_COLUMNS = ["images", "n", "copies", "excess, 95% (points)", "strict copies", "mean similarity"]


def fixed_rows(label: str, report: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Columns '> T' for the report's fixed thresholds, a row for the samples and one for held-out images."""
    keys = list(report.get("fraction_above") or {})
    rows = [[label] + [pct(report["fraction_above"][k]) for k in keys]]
    held = report.get("heldout")
    if held:
        rows.append(["held-out real images"] + [pct((held.get("fraction_above") or {}).get(k)) for k in keys])
    return ["images"] + [f"> {k}" for k in keys], rows


def _pairs(data: AuditData, threshold: float | None, n: int = 16) -> list[list[Any]]:
    sims, idx = data.arrays["nn_similarity"], data.arrays["nn_index"]
    mirrored = data.arrays.get("nn_mirrored")
    order = np.argsort(-sims, kind="stable")[:n]
    return [[data.sample_names[i], data.train_names[int(idx[i])], f"{float(sims[i]):.3f}",
             "yes" if mirrored is not None and mirrored[i] else "no",
             "-" if threshold is None else ("yes" if sims[i] >= threshold else "no")] for i in order]


def write_audit_report(folder: str | Path, data: AuditData) -> tuple[Path, Path]:
    """report.html and report.md for the audit in `folder` (its pictures must be there already)."""
    out = Path(folder)
    rep = data.report
    c = copy_numbers(rep)
    feats = feature_label(rep.get("features"))
    title_feats = str(rep.get("features") or "?")
    sentence, word = headline("the audited", c, fixed=rep.get("fraction_above"))
    doc = Document(f"diffmem audit: {rep['n_samples']} samples vs {rep['n_train']} training images ({title_feats})",
                   sentence, word)
    thr = f" Here: similarity >= {c.threshold:.4f} in {feats}." if c.threshold is not None else ""
    doc.para(COPY_DEFINITION + thr + " Every sample's nearest training file is in nearest.csv.")
    doc.table(SUMMARY_COLUMNS, summary_rows("samples", rep), "copies at the calibrated thresholds")
    doc.figure(out / "histogram.png", "Similarity of each image to its nearest training image: samples (line) and "
                                      "unseen real images (grey); dashed: the copy threshold.")
    doc.figure(out / "samples.png", "The first samples; a red frame marks a copy.")
    doc.figure(out / "neighbours.png", "The most similar samples (left) beside their nearest training images (right), "
                                       "with similarity and file names.")
    doc.heading("The most similar samples and the training files they are nearest to")
    doc.table(["sample", "nearest training image", "similarity", "mirrored", "copy"], _pairs(data, c.threshold))
    if rep.get("xflip"):
        doc.para(f"Mirrored images were matched too (--xflip): {pct(rep.get('fraction_mirrored'))} of samples are "
                 "nearest to a mirrored training image.")
    doc.heading("Fixed thresholds")
    cols, rows = fixed_rows("samples", rep)
    doc.table(cols, rows)
    doc.heading("Which feature space to trust")
    doc.para(feature_advice(rep.get("features")))
    doc.heading("Glossary")
    doc.glossary(GLOSSARY)
    doc.warnings(list(rep.get("warnings") or []))
    src = rep.get("sources") or {}
    doc.para("Inputs: samples " + str(src.get("samples")) + "; training images " + str(src.get("train"))
             + "; held-out images " + str(src.get("heldout")) + ".")
    return doc.write(out)
