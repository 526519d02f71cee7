"""The report builder: verdicts from the safety test (and Fisher's exact test against a baseline), headline
sentences, HTML/Markdown, and `compare` on standalone audit folders (labelled by folder name)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from diffmem.report.document import Document
from diffmem.report.findings import CopyNumbers, copy_numbers, headline, pct, verdict


def _c(frac: float, n: int = 500, held: float = 0.01, n_held: int = 1747) -> CopyNumbers:
    return CopyNumbers(frac, n, held, n_held, 0.97)


def test_verdicts_use_the_safety_test() -> None:
    from scipy.stats import betabinom

    # 500 samples against 1747 held-out images: P(K >= k) under Beta-binomial(500, 19, 1729)
    law = betabinom(500, 19, 1729)
    for k in (5, 8, 10, 11, 12, 15):
        expected = "none beyond unseen images" if law.sf(k - 1) > 0.05 else "copies"
        assert verdict(_c(k / 500)) == expected
    assert verdict(_c(0.015)) == "none beyond unseen images" and verdict(_c(0.03)) == "copies"
    assert verdict(_c(0.444), _c(0.600)) == "reduced"  # Fisher: 222 vs 300 of 500
    assert verdict(_c(0.58), _c(0.60)) == "copies"  # 290 vs 300 of 500: not significantly fewer
    assert verdict(_c(0.012), _c(0.60)) == "none beyond unseen images"  # never "removed" while above held-out
    assert verdict(CopyNumbers(0.3, 100, None, 0, None)) is None  # no held-out images: no verdict


def test_headline_states_finding_reference_and_quality() -> None:
    text, word = headline("Algorithm 1", _c(0.444), baseline=_c(0.600), unseen="unseen digits",
                          quality=("FD_digits-net", 2.448, 2.487))
    assert word == "reduced"
    assert text.startswith("Copying reduced, not removed: 44.4% of Algorithm 1 samples are copies (baseline 60.0%, "
                           "unseen digits 1.1%; excess 37.7 to 48.9 points, 95%, 500 samples)")
    assert text.endswith("at FD_digits-net 2.448 vs 2.487 (lower is better).")
    assert "removed:" not in headline("x", _c(0.444), baseline=_c(0.6))[0].replace("not removed", "")
    assert pct(0.0006) == "0.1%" and pct(None) == "-"


def test_copy_numbers_read_defensively() -> None:
    assert copy_numbers({"n_samples": 5}).frac is None
    rep = {"n_samples": 10, "calibrated_thresholds": {"heldout_p99": 0.9, "heldout_p99.9": 0.95},
           "fraction_above_calibrated": {"heldout_p99": 0.5, "heldout_p99.9": 0.2},
           "heldout": {"n": 100, "fraction_above_calibrated": {"heldout_p99": 0.01}}}
    assert copy_numbers(rep) == CopyNumbers(0.5, 10, 0.01, 100, 0.9, 0.2)


def test_document_html_is_self_contained_and_phone_ready(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (20, 10)).save(tmp_path / "p.png")
    doc = Document("T <1>", "Copies: 5.0% of samples", "copies")
    doc.table(["a", "b"], [[1, None], ["x|y", 2]], "cap")
    doc.figure(tmp_path / "p.png", "a picture")
    doc.glossary({"copies": "explained"})
    doc.warnings(["careful"])
    md, html = doc.write(tmp_path / "r")
    text = html.read_text()
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in text
    assert '<div class="scroll"><table>' in text and "data:image/png;base64," in text and "T &lt;1&gt;" in text
    assert text.index('id="headline"') < text.index("<table>")
    m = md.read_text()
    assert "> **copies**: Copies: 5.0% of samples" in m and "| x\\|y | 2 |" in m and "](../p.png)" in m
    assert "- careful" in m and "- **copies**: explained" in m
    with pytest.raises(Exception, match="not found"):
        doc.figure(tmp_path / "missing.png", "x")


def test_compare_accepts_standalone_audits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 255, (30, 8, 8, 1), dtype=np.uint8)
    held = rng.integers(0, 255, (40, 8, 8, 1), dtype=np.uint8)
    for name, samples in (("copier", train[:10]), ("creator", held[:10])):
        np.savez(tmp_path / f"{name}.npz", images=samples)
    np.savez(tmp_path / "train.npz", images=train)
    np.savez(tmp_path / "held.npz", images=held[10:])
    for name in ("copier", "creator"):
        code, _, err = run_cli(["audit", "--samples", str(tmp_path / f"{name}.npz"), "--train",
                                str(tmp_path / "train.npz"), "--heldout", str(tmp_path / "held.npz"), "--features",
                                "pixels", "--out", str(tmp_path / name), "--quiet", "--no-cache"], capsys)
        assert code == 0, err
    code, out, err = run_cli(["compare", str(tmp_path / "copier"), str(tmp_path / "creator"), "--out",
                              str(tmp_path / "cmp"), "--quiet"], capsys)
    assert code == 0, err
    assert "copier" in out and "creator" in out and "Traceback" not in err
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "| copier | 30 | 1 | - | 100.0% |" in md and "| creator | 30 | 1 | - | " in md
    assert "100.0% of copier (the most copying) samples are copies" in md
    assert json.loads((tmp_path / "cmp" / "results.json").read_text())[0]["name"] == "copier"
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "report.json").write_text("[]")
    code, _, err = run_cli(["compare", str(tmp_path / "bad")], capsys)
    assert code == 2 and "is not a diffmem audit report" in err


def test_document_smooths_charts_and_stacks_tables_on_phones(tmp_path: Path) -> None:
    """Without a browser: only pictures made of images (marked by evaluate/pictures.py) get nearest-neighbour
    scaling, and every table cell carries its column name, which a phone shows when rows become cards."""
    from diffmem.evaluate.pictures import marked_grid, similarity_chart
    from diffmem.report.document import _CSS, is_pixel_picture

    grid = tmp_path / "grid.png"
    marked_grid(grid, np.zeros((4, 8, 8, 1), np.uint8), np.array([True, False, False, True]))
    chart = similarity_chart(tmp_path / "chart.png", {"samples": np.linspace(0.5, 1, 20)})
    assert is_pixel_picture(grid) and not is_pixel_picture(chart)
    doc = Document("T")
    doc.figure(grid, "grid")
    doc.figure(chart, "chart")
    doc.table(["name", "value"], [["a", 1]])
    text = doc.html()
    assert text.count('<img class="pixels"') == 1 and '<img class="pixels" src' in text.split("chart")[0]
    assert "img{max-width:100%;height:auto}" in _CSS and "img.pixels{image-rendering:pixelated}" in _CSS
    assert '<td data-label="name">a</td><td data-label="value">1</td>' in text and "<thead>" in text
    assert "@media (max-width:40em)" in _CSS and "content:attr(data-label)" in _CSS


def test_headline_without_heldout_images_names_near_replicas_and_the_fix() -> None:
    none = CopyNumbers(None, 20, None, 0, None)
    text, word = headline("the audited", none, fixed={"0.9": 0.9, "0.99": 0.8})
    assert word is None and "80.0% of samples have a nearest-training similarity of at least 0.99" in text
    assert "--heldout" in text


def test_headline_says_when_too_few_heldout_images_calibrate_the_threshold() -> None:
    text, _ = headline("the audited", _c(0.3, n=10, n_held=30))
    assert "only 30 held-out images calibrate the threshold, at least 802 are needed" in text
    assert "only" not in headline("the audited", _c(0.3))[0]
    zero, _ = headline("the audited", _c(0.0, n=32))
    assert "0.0% of the audited samples" in zero and "excess -1.7 to 12.2 points" in zero  # 1 - 0.0125^(1/32) - q_low
