"""`write_report`: a markdown table with linked pictures and a self-contained HTML file."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffmem.errors import DiffmemError
from diffmem.evaluate.memorization import memorization_report
from diffmem.report.comparison import audit_row, heldout_row, write_report


def test_rows_and_files(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    train, held = torch.randn(30, 6, generator=gen), torch.randn(20, 6, generator=gen)
    audit = memorization_report(train[:10], train, held, (0.9,))
    quality = {"fd_name": "FD_digits-net", "fd": 12.5, "n_samples": 10}
    rows = [audit_row("baseline", audit, quality, sigma_n=None), audit_row("ambient", audit, quality, sigma_n=0.5),
            heldout_row(audit)]
    assert rows[0]["FD_digits-net (n=10)"] == 12.5 and rows[0]["> 0.9"] == 1.0
    assert rows[2]["method"] == "held-out real images" and rows[2]["n"] == 20
    pic = tmp_path / "figs" / "grid.png"
    pic.parent.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(pic)
    md, html = write_report(tmp_path / "rep", rows, {"samples <grid>": pic}, "Digits: baseline vs ambient")
    text = md.read_text()
    assert text.startswith("# Digits: baseline vs ambient")
    assert "| method | sigma_n | n | FD_digits-net (n=10) |" in text and "| ambient | 0.5 | 10 | 12.5 |" in text
    assert "](../figs/grid.png)" in text
    page = html.read_text()
    assert base64.b64encode(pic.read_bytes()).decode() in page and "src=\"data:image/png;base64," in page
    assert "samples &lt;grid&gt;" in page and "<table>" in page
    with pytest.raises(DiffmemError, match="not found"):
        write_report(tmp_path / "rep", rows, {"x": tmp_path / "missing.png"}, "t")
