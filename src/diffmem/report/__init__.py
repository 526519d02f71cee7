"""Reports a person reads in ten seconds: one builder (HTML + Markdown) for demo, audit, sweep and compare.

- `Document` (document.py): headline with verdict, paragraphs, tables, figures, glossary, warnings;
  `write(out_dir)` gives a self-contained report.html (viewport tag, scrolling tables, embedded PNGs) and
  report.md with the same content.
- findings.py: copy numbers of an audit, the verdict (two binomial standard errors) and the headline.
- audit.py: the report of one audit; sweep.py: the report of a sweep or comparison.
"""

from diffmem.report.document import Document
from diffmem.report.findings import CopyNumbers, copy_numbers, headline, pct, verdict

__all__ = ["Document", "CopyNumbers", "copy_numbers", "headline", "pct", "verdict"]
