"""A comparison report: one table (a row per method, plus held-out real images) and pictures, as
report.md and a self-contained report.html (pictures embedded as base64)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffmem.errors import DiffmemError
from diffmem.evaluate.report_fields import ratio_tests_of

__all__ = ["audit_row", "heldout_row", "write_report"]


def _fd_columns(quality: dict[str, Any] | None) -> dict[str, Any]:
    if not quality:
        return {}
    return {f"{quality['fd_name']} (n={quality['n_samples']})": quality["fd"]}


def audit_row(method: str, audit: dict[str, Any], quality: dict[str, Any] | None = None,
              sigma_n: float | None = None) -> dict[str, Any]:
    """A table row from an audit report (report.json) and optionally a quality report (`diffmem fid`)."""
    row: dict[str, Any] = {"method": method, "sigma_n": sigma_n, "n": audit["n_samples"]}
    row.update(_fd_columns(quality))
    row["sim mean"] = audit["similarity"]["mean"]
    row["sim p95"] = audit["similarity"]["p95"]
    row.update({f"> {k}": v for k, v in audit["fraction_above"].items()})
    for key, value in (audit.get("fraction_above_calibrated") or {}).items():
        row[f"> {key.replace('heldout_', 'held-out ')}"] = value
    for name, rt in ratio_tests_of(audit).items():  # each definition under its own name
        row[f"ratio {name} < {rt.get('threshold', 1 / 3):.3g}"] = rt["fraction_below"]
    return row


def heldout_row(audit: dict[str, Any], quality: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The reference row: held-out real images scored like samples (what never copying scores)."""
    h = audit.get("heldout")
    if not h:
        return None
    pseudo = {"n_samples": h["n"], "similarity": h["similarity"], "fraction_above": h["fraction_above"],
              "fraction_above_calibrated": h.get("fraction_above_calibrated"), "ratio_tests": h.get("ratio_tests"),
              "ratio_test": h.get("ratio_test")}
    return audit_row("held-out real images", pseudo, quality)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for row in rows:
        cols.extend(k for k in row if k not in cols)
    return cols


def write_report(out_dir: str | Path, rows: list[dict[str, Any]], pictures: dict[str, Path],
                 title: str, notes: list[str] | None = None) -> tuple[Path, Path]:
    """Write `out_dir/report.md` (pictures linked by relative path) and a self-contained `report.html`
    with the report builder (diffmem.report.Document).

    `rows`: table rows (dicts; columns are the union of their keys in first-seen order; None prints
    as "-"), e.g. from `audit_row` and `heldout_row`. `pictures`: caption -> image file.
    """
    from diffmem.report.document import Document

    rows = [r for r in rows if r]
    cols = _columns(rows)
    missing = [str(p) for p in pictures.values() if not Path(p).is_file()]
    if missing:
        raise DiffmemError(f"report pictures not found: {', '.join(missing)}")
    doc = Document(title)
    doc.bullets(list(notes or []))
    if cols:
        doc.table(cols, [[_fmt(r.get(c)) for c in cols] for r in rows])
    for caption, p in pictures.items():
        doc.heading(caption)
        doc.figure(p, caption)
    return doc.write(out_dir)
