"""The report of a sweep or a comparison (`diffmem sweep`, `diffmem compare --out`): report.html and report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from diffmem.diffusion.methods import Ambient, Baseline
from diffmem.report.document import Document
from diffmem.report.findings import (COPY_DEFINITION, FEATURE_ADVICE, GLOSSARY, CopyNumbers, excess_text, headline, pct,
                                     safety_of, verdict)

__all__ = ["write_sweep_report", "row_label"]


def row_label(s: dict[str, Any]) -> str:
    """'baseline (EDM)', 'Algorithm 1 (ambient) (sigma_n=0.5)' or an audit folder's name."""
    from diffmem.diffusion.methods import METHOD_CLASSES
    from diffmem.method_looks import title
    from diffmem.sweep.results import _param_label

    label = title(s.get("method"))
    param = _param_label(s) if s.get("method") in METHOD_CLASSES else ""
    return label + (f" ({param})" if param else "")


def _numbers(s: dict[str, Any]) -> CopyNumbers:
    n = int(s.get("n_samples") or 0) * int(s.get("seeds") or 1)
    return CopyNumbers(s.get("copy_frac"), n, s.get("heldout_copy_frac"), int(s.get("n_heldout") or 0),
                       s.get("copy_threshold"))


def _headline(summary: list[dict[str, Any]], choices: Sequence[dict[str, Any]]) -> tuple[str, str | None]:
    """The chosen sigma_n (rule of thumb) against the baseline, or the row that copies most when there is none."""
    for choice in choices:
        if choice.get("sigma_n") is None:
            continue
        group = [s for s in summary if s["subset"] == choice["subset"]]
        model = next((s for s in group if s["method"] == choice.get("method", Ambient.name)
                      and s.get("param") == choice["sigma_n"]), None)
        base = next((s for s in group if s["method"] == Baseline.name), None)
        if model is not None and base is not None:
            q = (model.get("quality_metric") or "quality", model["quality"], base.get("quality"))
            where = f" on {choice['subset']} training images" if choice["subset"] is not None else ""
            return headline(row_label(model) + where, _numbers(model), baseline=_numbers(base), quality=q)
    rows = [s for s in summary if s.get("copy_frac") is not None]
    if not rows:
        return "No copy fraction was measured.", None
    worst = max(rows, key=lambda s: s["copy_frac"])
    return headline(row_label(worst) + (" (the most copying)" if len(rows) > 1 else ""), _numbers(worst))


def _table(summary: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    base = {s["subset"]: _numbers(s) for s in summary if s["method"] == Baseline.name}
    rows = []
    for s in summary:
        c = _numbers(s)
        safety = safety_of(c)
        err = excess_text(safety).replace("excess ", "").replace(" points, 95%", "") if safety is not None else None
        q = s.get("quality")
        rows.append([row_label(s), "all" if s["subset"] is None else s["subset"], s["seeds"],
                     f"{q:.3f}" if isinstance(q, (int, float)) else None, pct(c.frac), err, pct(c.heldout_frac),
                     verdict(c, base.get(s["subset"]) if s["method"] != Baseline.name else None) or "-"])
    cols = ["model", "training images", "seeds", "quality (FD)", "copies", "excess, 95% (points)", "held-out copies",
            "verdict"]
    return cols, rows


def write_sweep_report(rows: list[dict[str, Any]], out: str | Path, files: dict[str, Path],
                       choices: Sequence[dict[str, Any]], title: str | None = None) -> tuple[Path, Path]:
    """report.html/.md beside a sweep's or comparison's results: headline, table, Pareto plot, glossary."""
    from diffmem.sweep.pareto import rule_of_thumb_text
    from diffmem.sweep.results import summarize

    summary = summarize(list(rows))
    sentence, word = _headline(summary, choices)
    what = "one run or audit" if len(rows) == 1 else f"{len(rows)} runs or audits"
    doc = Document(title or f"diffmem: {what} compared", sentence, word)
    metric = next((r.get("copy_metric") for r in rows if r.get("copy_metric")), "") or ""
    doc.para(COPY_DEFINITION + f" Measured as {metric}." if metric else COPY_DEFINITION)
    cols, table = _table(summary)
    doc.table(cols, table, "one row per model (means over seeds)")
    text = rule_of_thumb_text(choices)
    if text and any(s["method"] in (Baseline.name, Ambient.name) for s in summary):
        doc.para(text.replace("\n", " "))
    if "pareto" in files:
        doc.figure(files["pareto"], "Quality (lower is better) against the copy fraction, one point per run; "
                                    "the Pareto-optimal runs are joined.")
    if "monitor" in files:
        doc.figure(files["monitor"], "Copy fraction over training.")
    doc.heading("Which feature space to trust")
    family = metric.split(" ", 1)[0].split(":", 1)[0]
    doc.para(FEATURE_ADVICE.get(family, f"{family}: a feature space of your choice."))
    doc.heading("Glossary")
    doc.glossary({**GLOSSARY, "verdict": "copies, reduced (more than two standard errors below the baseline) or "
                                          "none beyond unseen images (within two standard errors of them)."})
    doc.para("All numbers: results.csv and results.json; the paper's table shape: results.md.")
    return doc.write(out)
