"""Every citation of the project's own docs resolves inside the repository.

Code and docs cite `docs/<page>.md` (optionally with a section: `docs/method.md, "Metrics"`), and the
README and docs link files with Markdown links. Each named page, figure and section must exist in this
repository, and nothing may point outside it (the paper's own files are not part of the repository).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# `docs/page.md` with an optional quoted section: `docs/page.md, "Title"` or `docs/page.md section "Title"`.
_CITE = re.compile(r'docs/([\w./-]+\.(?:md|png|json))(?:(?:,\s*|\s+)(?:section\s+)?"([^"]{1,120})")?')
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
_OUTSIDE = re.compile(r"DESIGN\.md|\.\./shared/")  # the paper's restatement beside the repository


def _sources() -> list[Path]:
    files = [p for d in ("src", "bench", "tests") for p in (ROOT / d).rglob("*.py")]
    files += sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md", ROOT / "Makefile"]
    return [p for p in files if p.is_file() and p.name != Path(__file__).name]


def _headings(page: Path) -> list[str]:
    """The page's headings without '#' marks and without a leading section number ('0. ', '4.2 ')."""
    heads = [line.lstrip("#").strip() for line in page.read_text().splitlines() if line.startswith("#")]
    return [re.sub(r"^\d+(\.\d+)*\.?\s+", "", h) for h in heads]


def citations(text: str) -> list[tuple[str, str | None]]:
    """(page, section or None) for each `docs/...` citation in `text`."""
    return [(m.group(1), m.group(2) and " ".join(m.group(2).split())) for m in _CITE.finditer(text)]


def unresolved(text: str, docs: Path) -> list[str]:
    """The citations in `text` that name a missing page or a section no heading of the page starts with."""
    bad = []
    for page, section in citations(text):
        path = docs / page
        if not path.is_file():
            bad.append(f"docs/{page}")
        elif section is not None and not any(h.casefold().startswith(section.casefold()) for h in _headings(path)):
            bad.append(f'docs/{page}, "{section}"')
    return bad


def test_the_checker_finds_a_missing_page_and_a_missing_section(tmp_path: Path) -> None:
    (tmp_path / "method.md").write_text("# The method\n## 2. Metrics and more\n")
    text = ('see docs/method.md, "Metrics" and docs/method.md section "metrics\n    and" and docs/method.md; '
            'docs/gone.md; docs/method.md, "Frontiers"')
    assert citations(text)[0] == ("method.md", "Metrics")
    assert unresolved(text, tmp_path) == ["docs/gone.md", 'docs/method.md, "Frontiers"']


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_citations_resolve_inside_the_repository(path: Path) -> None:
    text = path.read_text()
    assert unresolved(text, ROOT / "docs") == []
    assert not _OUTSIDE.findall(text), "points outside the repository"
    if path.suffix == ".md":
        for target in _LINK.findall(text):
            if "://" not in target:
                assert (path.parent / target).exists(), f"link to {target}"
