"""Result rows (one per run), their files (results.csv / results.json), summaries and tables.

A row is a flat dict of scalars. Fixed columns first (what was run, quality, copy fraction), then per
memorization feature space `F` the columns `F:mean`, `F:median`, `F:p95`, `F:max`, `F:>T` (fraction of
samples with nearest-training similarity >= T), `F:>heldout_p99` (the calibrated threshold),
`F:heldout_mean`, `F:heldout>T` (the same for held-out real images: what never copying scores).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from diffmem.diffusion.methods import METHOD_CLASSES, Ambient
from diffmem.diffusion.weighting import DEFAULT_WEIGHT_CAP, Plain, make_weighting
from diffmem.errors import DiffmemError
from diffmem.evaluate.report_fields import ratio_tests_of
from diffmem.method_looks import param_label, title
from diffmem.utils.atomic import atomic_path, write_json_atomic

__all__ = ["RESULTS_CSV", "RESULTS_JSON", "COPY_KEY", "param_column", "make_row", "write_results",
           "read_results", "summarize", "format_table", "markdown_tables", "columns"]

RESULTS_CSV, RESULTS_JSON = "results.csv", "results.json"
COPY_KEY = "heldout_p99"  # the calibrated threshold a copy must reach by default


def param_column(method: str | None) -> str | None:
    """The row column holding `method`'s swept setting, asked of its class (`param_field`: sigma_n for the
    methods trained on fixed noisy copies, mask_p for masking; a row holds every setting of its method, see
    `diffmem.sweep.evaluation.run_info`), None for the baseline (or a method this version does not know)."""
    cls = METHOD_CLASSES.get(method or "")
    return None if cls is None else cls.param_field


def _copy_measure(report: dict[str, Any], copy_threshold: float | None) -> tuple[str, float | None, float | None,
                                                                             float | None]:
    """(metric name, threshold, sample fraction, held-out fraction) of the copy measure in one report."""
    feats = report.get("features") or "?"
    cal = report.get("calibrated_thresholds") or {}
    held = report.get("heldout") or {}
    if copy_threshold is None and COPY_KEY in cal:
        frac = (report.get("fraction_above_calibrated") or {}).get(COPY_KEY)
        held_frac = (held.get("fraction_above_calibrated") or {}).get(COPY_KEY)
        return f"{feats} >= held-out p99", float(cal[COPY_KEY]), frac, held_frac
    if copy_threshold is None:  # no held-out images: the highest fixed threshold
        copy_threshold = max(float(t) for t in report["thresholds"])
    key = f"{copy_threshold:g}"
    frac = report["fraction_above"].get(key)
    held_frac = (held.get("fraction_above") or {}).get(key)
    if frac is None:  # a threshold that was not in the report: not recoverable without the similarities
        raise DiffmemError(f"the audit of {feats} has no fraction above {key}; re-evaluate with that threshold")
    return f"{feats} >= {key}", float(copy_threshold), frac, held_frac


def make_row(info: dict[str, Any], reports: dict[str, dict[str, Any]], quality: dict[str, Any] | None,
             copy_threshold: float | None = None) -> dict[str, Any]:
    """One flat row from run information, memorization reports (feature name -> report.json) and quality.

    `info` holds what was run (name, method, sigma_n, mask_p, subset, seed, steps, batch, epochs,
    n_samples, ...); its keys come first. The first report defines `copy_frac`.
    """
    row: dict[str, Any] = dict(info)
    row["quality_metric"] = quality["fd_name"] if quality else None
    row["quality"] = quality["fd"] if quality else None
    row["quality_train_images"] = quality.get("fd_train_images") if quality else None
    kid = (quality or {}).get("kid") or {}
    pr = (quality or {}).get("precision_recall") or {}
    row["kid"] = kid.get("mean")
    row["precision"], row["recall"] = pr.get("precision"), pr.get("recall")
    first = True
    for feats, rep in reports.items():
        if first:
            metric, thr, frac, held_frac = _copy_measure(rep, copy_threshold)
            row.update({"copy_metric": metric, "copy_threshold": thr, "copy_frac": frac,
                        "heldout_copy_frac": held_frac, "n_heldout": (rep.get("heldout") or {}).get("n")})
            first = False
        sim = rep["similarity"]
        for k in ("mean", "median", "p95", "max"):
            row[f"{feats}:{k}"] = sim[k]
        for k, v in rep["fraction_above"].items():
            row[f"{feats}:>{k}"] = v
        for k, v in (rep.get("fraction_above_calibrated") or {}).items():
            row[f"{feats}:>{k}"] = v
        for k, v in (rep.get("calibrated_thresholds") or {}).items():
            row[f"{feats}:{k}"] = v
        held = rep.get("heldout")
        if held:
            row[f"{feats}:heldout_mean"] = held["similarity"]["mean"]
            for k, v in held["fraction_above"].items():
                row[f"{feats}:heldout>{k}"] = v
        for name, rt in ratio_tests_of(rep).items():  # each definition under its own name
            row[f"{feats}:ratio_{name}"] = rt["fraction_below"]
    return row


def columns(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Union of the rows' keys in first-seen order."""
    cols: list[str] = []
    for row in rows:
        cols.extend(k for k in row if k not in cols)
    return cols


def write_results(rows: list[dict[str, Any]], out_dir: str | Path) -> tuple[Path, Path]:
    """Write `results.csv` and `results.json` (one row per run) into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cols = columns(rows)
    csv_path, json_path = out / RESULTS_CSV, out / RESULTS_JSON
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    write_json_atomic(json_path, rows)
    return csv_path, json_path


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """Rows from a results.json (or the folder holding it)."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_JSON
    try:
        rows = json.loads(p.read_text())
    except FileNotFoundError:
        raise DiffmemError(f"{p} does not exist") from None
    except json.JSONDecodeError as err:
        raise DiffmemError(f"{p} is not valid JSON ({err})") from None
    if not isinstance(rows, list):
        raise DiffmemError(f"{p} does not hold a list of result rows")
    return rows


def context(row: dict[str, Any]) -> str:
    """What a row's numbers mean and cost: copy measure, quality measure, budget, samples. Rows are only
    averaged or compared within one context."""
    budget = f"{row.get('steps')}x{row.get('batch')}" if row.get("steps") is not None else "?"
    return f"{row.get('copy_metric')} | {row.get('quality_metric')} | {budget} steps | {row.get('n_samples')} samples"


def _group_key(row: dict[str, Any]) -> tuple:
    column = param_column(row.get("method"))
    param = row.get(column) if column is not None else None
    return (row.get("subset"), row.get("method"), param, context(row), row.get("ambient_weight"), row.get("lr"))


def summarize(rows: list[dict[str, Any]], keys: Iterable[str] = ("quality", "copy_frac")) -> list[dict[str, Any]]:
    """Rows averaged over seeds: one per (subset, method, parameter, context), with `KEY` (mean), `KEY_std`
    and `seeds`. The context (see `context`) keeps rows measured differently or trained with another budget
    apart. Every other numeric column present in all rows of a group is averaged too (no `_std`).
    """
    keys = list(keys)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(_group_key(row), []).append(row)
    out = []
    for (subset, method, param, ctx, weight, lr), members in groups.items():
        s: dict[str, Any] = {"subset": subset, "method": method, "param": param, "context": ctx,
                             "ambient_weight": weight, "lr": lr,
                             "sigma_n": members[0].get("sigma_n"), "mask_p": members[0].get("mask_p"),
                             "seeds": len(members), "names": [m.get("name") for m in members]}
        for col in columns(members):
            if col in s or col in ("seed", "name", "run"):
                continue
            vals = [m.get(col) for m in members]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
                arr = np.asarray(vals, dtype=np.float64)
                s[col] = float(arr.mean())
                if col in keys:
                    s[f"{col}_std"] = float(arr.std(ddof=1)) if len(arr) > 1 else None
            elif all(v == vals[0] for v in vals):
                s[col] = vals[0]
        out.append(s)
    return out


DEFAULT_LR = 1e-4  # OptimConfig's default: other learning rates are named in labels


def variant_label(s: dict[str, Any]) -> str:
    """', compensated' (', capped 4') and/or ', lr=...' when a row or group was trained with a weighting
    other than plain or a non-default lr."""
    w = s.get("ambient_weight")
    out = f", {make_weighting(w, s.get('weight_cap') or DEFAULT_WEIGHT_CAP).label()}" if w and w != Plain.name else ""
    lr = s.get("lr")
    if isinstance(lr, (int, float)) and not math.isclose(float(lr), DEFAULT_LR):
        out += f", lr={float(lr):g}"
    return out


def _param_label(s: dict[str, Any]) -> str:
    column = param_column(s["method"])
    text = f"{param_label(column)}={s['param']:g}" if column is not None and s.get("param") is not None else ""
    return (text + variant_label(s)).lstrip(", ")


def _fmt(v: Any, std: Any = None, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    text = f"{v:.{digits}g}" if isinstance(v, float) else str(v)
    if std is not None and isinstance(std, float) and math.isfinite(std):
        text += f" +- {std:.2g}"
    return text


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of the seed-averaged results (for the terminal)."""
    if not rows:
        return "(no results)"
    summary = summarize(rows)
    qname = next((r.get("quality_metric") for r in rows if r.get("quality_metric")), "quality")
    cname = next((r.get("copy_metric") for r in rows if r.get("copy_metric")), "copy fraction")
    mixed = len({s["context"] for s in summary}) > 1
    head = ["subset", "method", "param", "seeds", qname if not mixed else "quality",
            f"copies ({cname})" if not mixed else "copies", "held-out ref"] + (["measured as"] if mixed else [])
    lines = []
    for s in sorted(summary, key=lambda s: (_sort_none(s["subset"]), s["context"], _method_order(s["method"]),
                                            _sort_none(s["param"]))):
        lines.append([_fmt(s["subset"]) if s["subset"] is not None else "all", str(s["method"]), _param_label(s),
                      str(s["seeds"]), _fmt(s.get("quality"), s.get("quality_std")),
                      _fmt(s.get("copy_frac"), s.get("copy_frac_std"), 3), _fmt(s.get("heldout_copy_frac"), None, 3)]
                     + ([s["context"]] if mixed else []))
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


def _sort_none(v: Any) -> float:
    return float("inf") if v is None else float(v)


def _method_order(m: str) -> int:
    order = list(METHOD_CLASSES)  # baseline, Algorithm 1, masking, noise only
    return order.index(m) if m in order else len(order)


def markdown_tables(rows: list[dict[str, Any]], features: str | None = None,
                    chosen: dict[Any, float | None] | None = None) -> str:
    """The paper's table shape in markdown, one table per training-set size.

    Rows: held-out real images (reference), the baseline, Algorithm 1 (every sigma_n, or only `chosen[subset]`
    when given), masking, noise only. Columns: quality (Frechet distance, mean over seeds), the copy
    fraction, the fraction of samples above each fixed threshold and the mean similarity in `features`
    (default: the first memorization feature space of the rows).
    """
    if not rows:
        return "(no results)\n"
    summary = summarize(rows)
    if features is None:
        metric = next((r.get("copy_metric") for r in rows if r.get("copy_metric")), "") or ""
        features = metric.split(" >= ")[0]
    thr_cols = [c for c in columns(rows) if c.startswith(f"{features}:>") and "heldout" not in c]
    qname = next((r.get("quality_metric") for r in rows if r.get("quality_metric")), "quality")
    out = []
    for subset in sorted({s["subset"] for s in summary}, key=_sort_none):
        group = [s for s in summary if s["subset"] == subset]
        if chosen is not None and subset in chosen:
            group = [s for s in group if s["method"] != Ambient.name or s["param"] == chosen[subset]]
        group.sort(key=lambda s: (_method_order(s["method"]), _sort_none(s["param"])))
        head = ["method", "seeds", qname, "copies"] + [">= " + c.split(":>", 1)[1] for c in thr_cols] + ["sim mean"]
        n_seeds = max(s["seeds"] for s in group)
        out.append(f"### {subset if subset is not None else 'all'} training images\n")
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join(["---"] * len(head)) + "|")
        ref = group[0]
        held_cols = [c.replace(f"{features}:>", f"{features}:heldout>") for c in thr_cols]
        out.append("| held-out real images (reference) | - | "
                   + _fmt(ref.get("quality_train_images"), None, 4) + "\u00b9 | "
                   + _fmt(ref.get("heldout_copy_frac"), None, 3) + " | "
                   + " | ".join(_fmt(ref.get(c), None, 3) for c in held_cols) + " | "
                   + _fmt(ref.get(f"{features}:heldout_mean"), None, 4) + " |")
        for s in group:
            label = title(s["method"]) + (f" ({_param_label(s)})" if _param_label(s) else "")
            cells = [label, str(s["seeds"]), _fmt(s.get("quality"), s.get("quality_std")),
                     _fmt(s.get("copy_frac"), s.get("copy_frac_std"), 3)]
            cells += [_fmt(s.get(c), None, 3) for c in thr_cols] + [_fmt(s.get(f"{features}:mean"), None, 4)]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        if n_seeds > 1:
            out.append("Values are means over seeds (+- sample standard deviation).\n")
    copy_metric = next((r.get("copy_metric") for r in rows if r.get("copy_metric")), "")
    out.append(f"Quality: {qname} of samples against the held-out images (lower is better). "
               f"\u00b9 The reference row's quality is the training images' own {qname} (what returning the "
               "training set scores; fewer images, so it is biased upward relative to the samples). "
               f"Copies: share of samples with {copy_metric} (nearest-training cosine similarity; for pixels, a Pearson correlation); the reference "
               "row gives the same share for held-out real images. Threshold columns: share with similarity >= T.\n")
    return "\n".join(out)
