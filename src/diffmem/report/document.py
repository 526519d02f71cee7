"""A report document rendered twice: self-contained HTML (for a browser, phone included) and Markdown."""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffmem.errors import DiffmemError
from diffmem.utils.atomic import write_text_atomic

__all__ = ["Document", "VERDICT_COLOURS", "is_pixel_picture"]

VERDICT_COLOURS = {"copies": "#c62828", "reduced": "#ef6c00", "none beyond unseen images": "#2e7d32"}
_CSS = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:16px;line-height:1.45;"
    "margin:0 auto;padding:0.8em;max-width:62em;color:#222}"
    "h1{font-size:1.3em;margin:0.2em 0}h2{font-size:1.12em;margin-top:1.4em}"
    ".headline{font-size:1.15em;border-left:6px solid #888;padding:0.4em 0.7em;background:#f6f6f6}"
    ".verdict{color:#fff;padding:0.05em 0.45em;border-radius:4px;font-weight:600;white-space:nowrap}"
    ".scroll{overflow-x:auto;max-width:100%}.row{display:flex;flex-wrap:wrap;gap:0 1.5em}.row figure{margin:0.5em 0;max-width:20em}"
    "table{border-collapse:collapse;font-size:0.92em}td,th{border:1px solid #ccc;padding:3px 7px;"
    "text-align:right;white-space:nowrap}td:first-child,th:first-child{text-align:left}"
    "th{background:#f0f0f0}img{max-width:100%;height:auto}img.pixels{image-rendering:pixelated}"
    "figure{margin:1em 0}figcaption{font-size:0.9em;color:#444}.warn{color:#8a4b00}dt{font-weight:600}"
    "dd{margin:0 0 0.4em 1.2em}.cap{font-size:0.9em;color:#444;margin:0.8em 0 0.2em}"
    # a phone: each table row becomes a card of 'column: value' lines, so no column hides off-screen
    "@media (max-width:40em){.scroll table,.scroll tbody,.scroll tr,.scroll td{display:block;width:auto}"
    ".scroll thead{display:none}.scroll tr{border:1px solid #ccc;border-radius:6px;margin:0 0 0.6em;"
    "padding:0.25em 0.6em}.scroll td{border:0;padding:1px 0;display:flex;justify-content:space-between;gap:1em;"
    "white-space:normal;overflow-wrap:anywhere;text-align:right}.scroll td::before{content:attr(data-label);"
    "font-weight:600;color:#555;text-align:left;overflow-wrap:normal}.scroll td:first-child{font-weight:600}}"
)

def is_pixel_picture(path: str | Path) -> bool:
    """Whether a PNG carries `PIXEL_MARK`: a grid of images, shown with nearest-neighbour scaling in HTML
    (charts are smoothed instead)."""
    from PIL import Image

    from diffmem.evaluate.pictures import PIXEL_MARK

    with Image.open(path) as im:
        return im.info.get(PIXEL_MARK[0]) == PIXEL_MARK[1]


@dataclass
class Document:
    """Blocks in order; `write` renders them. Figures are PNG files (embedded in HTML, linked from Markdown)."""

    title: str
    headline: str = ""
    verdict: str | None = None
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def bullets(self, items: list[str]) -> None:
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, columns: list[str], rows: list[list[Any]], caption: str = "") -> None:
        self.blocks.append(("table", (columns, [["-" if v is None else str(v) for v in r] for r in rows], caption)))

    def figure(self, path: str | Path, caption: str, pixels: bool | None = None) -> None:
        """A PNG with its caption. `pixels`: scale it without smoothing (grids of images); None: when the PNG
        carries PIXEL_MARK, as every picture of diffmem.evaluate.pictures does (charts do not)."""
        p = Path(path)
        if not p.is_file():
            raise DiffmemError(f"report picture not found: {p}")
        self.blocks.append(("figure", (p, caption, is_pixel_picture(p) if pixels is None else pixels)))

    def figure_row(self, figures: list[tuple[str | Path, str]]) -> None:
        """Figures side by side on a wide screen, one under another on a phone."""
        for path, _ in figures:
            if not Path(path).is_file():
                raise DiffmemError(f"report picture not found: {path}")
        self.blocks.append(("row", [(Path(p), c, is_pixel_picture(p)) for p, c in figures]))

    def glossary(self, terms: dict[str, str]) -> None:
        self.blocks.append(("glossary", dict(terms)))

    def warnings(self, items: list[str]) -> None:
        if items:
            self.blocks.append(("warnings", list(items)))

    def write(self, out_dir: str | Path, name: str = "report") -> tuple[Path, Path]:
        """Write `out_dir/NAME.md` and a self-contained `out_dir/NAME.html`; return their paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        md_path, html_path = out / f"{name}.md", out / f"{name}.html"
        _write(md_path, self.markdown(out))
        _write(html_path, self.html())
        return md_path, html_path

    def markdown(self, out: Path) -> str:
        lines = [f"# {self.title}", ""]
        if self.headline:
            word = f"**{self.verdict}**: " if self.verdict else ""
            lines += [f"> {word}{self.headline}", ""]
        for kind, payload in self.blocks:
            lines += _MD[kind](payload, out) + [""]
        return "\n".join(lines)

    def html(self) -> str:
        esc = html.escape
        parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                 '<meta name="viewport" content="width=device-width, initial-scale=1">',
                 f"<title>{esc(self.title)}</title><style>{_CSS}</style></head><body>", f"<h1>{esc(self.title)}</h1>"]
        if self.headline:
            colour = VERDICT_COLOURS.get(self.verdict or "", "#555")
            badge = f'<span class="verdict" style="background:{colour}">{esc(self.verdict)}</span> ' if self.verdict else ""
            parts.append(f'<p class="headline" id="headline" style="border-color:{colour}">{badge}{esc(self.headline)}</p>')
        for kind, payload in self.blocks:
            parts.append(_HTML[kind](payload))
        parts.append("</body></html>")
        return "\n".join(parts)


def _write(path: Path, text: str) -> None:
    write_text_atomic(path, text)


def _md_table(payload: Any, _out: Path) -> list[str]:
    cols, rows, caption = payload
    lines = [f"*{caption}*", ""] if caption else []
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    return lines + ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]


def _md_figure(payload: Any, out: Path) -> list[str]:
    p, caption, _pixels = payload
    rel = Path(os.path.relpath(p.resolve(), out.resolve())).as_posix()
    return [f"![{caption}]({rel})", "", f"*{caption}*"]


_MD = {
    "h2": lambda t, _o: [f"## {t}"],
    "p": lambda t, _o: [t],
    "ul": lambda items, _o: [f"- {i}" for i in items],
    "table": _md_table,
    "figure": _md_figure,
    "row": lambda figs, out: [line for f in figs for line in _md_figure(f, out) + [""]],
    "glossary": lambda terms, _o: [f"- **{k}**: {v}" for k, v in terms.items()],
    "warnings": lambda items, _o: ["**Warnings**", ""] + [f"- {w}" for w in items],
}


def _html_table(payload: Any) -> str:
    cols, rows, caption = payload
    esc = html.escape
    cap = f'<p class="cap">{esc(caption)}</p>' if caption else ""
    head = "<thead><tr>" + "".join(f"<th>{esc(c)}</th>" for c in cols) + "</tr></thead>"
    body = "".join("<tr>" + "".join(f'<td data-label="{esc(col)}">{esc(c)}</td>' for col, c in zip(cols, r))
                   + "</tr>" for r in rows)
    return f'{cap}<div class="scroll"><table>{head}<tbody>{body}</tbody></table></div>'


def _html_figure(payload: Any) -> str:
    p, caption, pixels = payload
    data = base64.b64encode(p.read_bytes()).decode("ascii")
    esc = html.escape
    kind = ' class="pixels"' if pixels else ""
    return (f'<figure><img{kind} src="data:image/png;base64,{data}" alt="{esc(caption)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


_HTML = {
    "h2": lambda t: f"<h2>{html.escape(t)}</h2>",
    "p": lambda t: f"<p>{html.escape(t)}</p>",
    "ul": lambda items: "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>",
    "table": _html_table,
    "figure": _html_figure,
    "row": lambda figs: '<div class="row">' + "".join(_html_figure(f) for f in figs) + "</div>",
    "glossary": lambda terms: "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>"
                                               for k, v in terms.items()) + "</dl>",
    "warnings": lambda items: '<div class="warn"><h2>Warnings</h2><ul>'
                              + "".join(f"<li>{html.escape(w)}</li>" for w in items) + "</ul></div>",
}
