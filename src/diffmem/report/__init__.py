"""Every report of diffmem, in one unit above the layers whose results it shows (docs/architecture.md): the
callers above (the API, the demo's report, the commands) call it; nothing below imports it.

- `Document` (document.py): headline with verdict, paragraphs, tables, figures, glossary, warnings;
  `write(out_dir)` gives a self-contained report.html (viewport tag, scrolling tables, embedded PNGs) and
  report.md with the same content.
- findings.py: copy numbers of an audit, the verdict (two binomial standard errors) and the headline.
- audit.py: the report of one audit (`write_audit_report`, passed to `evaluate.audit.audit_to` as its `report`).
- comparison.py: a table of audits (and quality reports) with pictures (`write_report`, `audit_row`, `heldout_row`).
- sweep.py: the report of a sweep or a comparison (`diffmem sweep`, `diffmem compare --out`).
- frontier.py: the frontier's paths averaged over seeds, its verdicts, table and plot (`diffmem frontier`).
- trace.py: the table and plot of `diffmem trace` (where copies are decided along sampling).
- demo.py: the demo's audit of its released samples and its report; `python -m diffmem.report.demo
  runs/demo/summary.json` publishes the demo's summary to the README and docs/figures.
"""

from diffmem.report.document import Document
from diffmem.report.findings import CopyNumbers, copy_numbers, headline, pct, verdict

__all__ = ["Document", "CopyNumbers", "copy_numbers", "headline", "pct", "verdict"]
