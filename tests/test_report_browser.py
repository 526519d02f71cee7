"""A generated report in a real browser (headless Chromium) at 1400 px and at 412 px (a phone): every image
loads, the headline is inside the first screen, no table widens the page beyond the viewport or hides columns
behind a sideways scroll (on a phone each row is a card), charts are smoothed while pictures of images are
scaled without smoothing, and the text drawn into pictures is not shrunk below legibility.

Headless Chromium keeps windows at least 500 px wide, so the report is shown in an iframe of the tested
size (via srcdoc, so its measurements can be read), inside a window slightly larger.

Skips, saying why, where Chromium is not installed (.ci/run installs Debian's `chromium`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

CHART = re.compile(r"^(Similarity|Quality|Copy fraction)")  # captions of charts; the other figures show images

_CHECK = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var head = document.getElementById('headline');
  var r = {
    width: window.innerWidth, height: window.innerHeight,
    scrollWidth: document.documentElement.scrollWidth,
    images: imgs.length,
    broken: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).length,
    headlineBottom: head ? head.getBoundingClientRect().bottom : null,
    widestTable: Math.max.apply(null, [0].concat(Array.prototype.map.call(document.querySelectorAll('table'),
      function (t) { return t.getBoundingClientRect().right; }))),
    hiddenColumns: Array.prototype.filter.call(document.querySelectorAll('.scroll'),
      function (b) { return b.scrollWidth > b.clientWidth + 1; }).length,
    pictures: imgs.map(function (i) {
      return {alt: i.alt, rendering: getComputedStyle(i).imageRendering,
              scale: i.getBoundingClientRect().width / i.naturalWidth}; })
  };
  var doc = window.parent.document;
  var pre = doc.createElement('pre'); pre.id = 'diffmem-check'; pre.textContent = JSON.stringify(r);
  doc.body.appendChild(pre);
});
</script>"""


def _chromium() -> str | None:
    for name in (os.environ.get("DIFFMEM_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _measure(browser: str, html: Path, width: int, height: int, shot: Path | None = None) -> dict:
    import html as html_lib

    page = html.with_name(f"check-{width}.html")
    inner = html_lib.escape(html.read_text().replace("</body>", _CHECK + "</body>"), quote=True)
    page.write_text(f'<!DOCTYPE html><html><body style="margin:0"><iframe style="border:0;display:block" '
                    f'width="{width}" height="{height}" srcdoc="{inner}"></iframe></body></html>')
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              f"--window-size={max(width, 500) + 20},{height + 20}", "--virtual-time-budget=10000"]
    proc = subprocess.run(common + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="diffmem-check">(.*?)</pre>', proc.stdout)
    assert found, f"no measurement from Chromium (exit {proc.returncode}): {proc.stderr[-1500:]}"
    if shot is not None:
        subprocess.run(common + [f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=180)
    return json.loads(found.group(1).replace("&quot;", '"'))


def _fake_release(run: Path, copies: tuple[int, ...], n: int) -> None:
    """A guard's release.json for checks at steps 100, 200, ... with these copy counts of n samples."""
    from diffmem.release import checks_of, release_record
    from diffmem.safety import Calibration, safety_test

    cal = Calibration(0.9, 360)
    records = [{"step": 100 * (i + 1), "monitor": {"features": "pixels", "n_samples": n, "calibration": cal.to_dict(),
                                                  "safety": safety_test(k, n, cal).to_dict(),
                                                  "quality": {"metric": "KID_digits-net", "value": 1.0 / (i + 1)}}}
               for i, k in enumerate(copies)]
    (run / "release.json").write_text(json.dumps(release_record(checks_of(records), {"n_samples": n})))


def _fake_run(run: Path, spec: Path, n_source: int, n_train: int, samples: np.ndarray) -> Path:
    """A run folder as the demo's report reads it: config.json, subset.json, release.json and the released
    samples (release/released.npz)."""
    from diffmem.data import load_images

    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"data": {"spec": str(spec), "resolution": None}}))
    (run / "subset.json").write_text(json.dumps({
        "source": str(spec), "n_source": n_source, "content_hash": load_images(str(spec)).content_hash(),
        "train_indices": list(range(n_train)), "heldout_indices": list(range(n_train, n_source))}))
    (run / "release").mkdir()
    np.savez(run / "release" / "released.npz", images=samples)
    _fake_release(run, (0, 1, 20, 40), len(samples))
    return run / "release" / "released.npz"


def _rgb(images: np.ndarray) -> np.ndarray:
    """Grey digits ([..., H, W] or [..., H, W, 1]) as RGB [..., H, W, 3]."""
    grey = images if images.shape[-1] != 1 else images[..., 0]
    return np.repeat(grey[..., None], 3, axis=-1)


def _fake_t2i_run(run: Path, train: np.ndarray, samples: np.ndarray) -> Path:
    """A t2i run folder as its release page reads it: config.json, info.json, the captioned training images,
    release.json and the released samples; returns the page."""
    from PIL import Image

    from diffmem.report.t2i_release import write_t2i_release_report
    from diffmem.t2i.config import T2IConfig

    data = run.parent / "captioned"
    data.mkdir(parents=True)
    for i, im in enumerate(train):
        Image.fromarray(_rgb(im)).save(data / f"img{i:03d}.png")
    (data / "metadata.jsonl").write_text("".join(json.dumps({"file_name": f"img{i:03d}.png", "text": f"a "
                                                 f"handwritten digit {i % 10}, drawn in black ink on white paper"})
                                                 + "\n" for i in range(len(train))))
    run.mkdir(parents=True)
    res = int(train.shape[1])
    (run / "config.json").write_text(json.dumps(T2IConfig(pretrained="tiny", data=str(data), resolution=res).to_dict()))
    (run / "info.json").write_text("{}")
    (run / "release").mkdir()
    np.savez(run / "release" / "released.npz", images=_rgb(samples))
    _fake_release(run, (0, 1, 20, 40), len(samples))
    rec = json.loads((run / "release.json").read_text())
    rec["settings"] = {"features": "pixels", "n_per_prompt": 1, "heldout": "unseen/"}
    (run / "release.json").write_text(json.dumps(rec))
    return write_t2i_release_report(run)


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A standalone audit's, a comparison's, the demo's report (the demo's runs faked: no training) and one of
    those runs' release page."""
    import diffmem
    from diffmem.report.demo import audit_demo
    from diffmem.report.release import write_release_report
    from diffmem.sweep.compare import collect_rows
    from diffmem.report.sweep import write_sweep_report
    from diffmem.sweep.runner import write_outputs

    d = diffmem.load_images("builtin:digits", 16).images
    root = tmp_path_factory.mktemp("browser")
    samples = np.concatenate([d[:10], d[10:20, :, ::-1], d[600:620]])
    diffmem.audit(samples, train=d[:40], heldout=d[100:600], features="pixels", out=root / "audit", xflip=True)
    rows = collect_rows([root / "audit"])
    write_sweep_report(rows, root / "compare", write_outputs(rows, root / "compare"), [])
    spec = root / "source.npz"
    np.savez(spec, images=d[:400])
    runs = {"edm": _fake_run(root / "demo" / "edm", spec, 400, 40, np.concatenate([d[:30], d[500:530]])),
            "ambient": _fake_run(root / "demo" / "ambient", spec, 400, 40, np.concatenate([d[:10], d[530:580]]))}
    audit_demo(root / "demo", runs, sigma_n=0.5, echo=lambda _: None)
    release = write_release_report(root / "demo" / "edm")  # one run's page, from the same faked run
    t2i = _fake_t2i_run(root / "t2i" / "run", d[:40], np.concatenate([d[:10], d[530:560]]))  # a sample per caption
    return {**{name: root / name / "report.html" for name in ("audit", "compare", "demo")}, "release": release,
            "t2i-release": t2i}


@pytest.mark.parametrize("kind", ["demo", "audit", "compare", "release", "t2i-release"])
@pytest.mark.parametrize("width,height", [(1400, 900), (412, 860)])
def test_report_in_chromium(reports: dict[str, Path], kind: str, width: int, height: int) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (apt-get install chromium, or set DIFFMEM_CHROMIUM): "
                    "the report's browser test cannot run here")
    shot = Path(os.environ["DIFFMEM_SCREENSHOTS"]) / f"{kind}-{width}.png" if os.environ.get("DIFFMEM_SCREENSHOTS") \
        else None
    m = _measure(browser, reports[kind], width, height, shot)
    assert m["width"] == width
    assert m["images"] >= (0 if kind == "compare" else 3) and m["broken"] == 0, m
    assert m["headlineBottom"] is not None and 0 < m["headlineBottom"] <= height, m  # inside the first screen
    assert m["scrollWidth"] <= width, m  # the page never scrolls sideways
    assert m["hiddenColumns"] == 0, m  # nor does any table: no column waits behind a sideways scroll
    charts = [p for p in m["pictures"] if CHART.match(p["alt"])]
    pictures = [p for p in m["pictures"] if not CHART.match(p["alt"])]
    assert len(charts) >= (0 if kind == "compare" else 1) and len(pictures) >= (0 if kind == "compare" else 2), m
    assert all(p["rendering"] != "pixelated" for p in charts), charts  # charts (text, lines) are smoothed
    assert all(p["rendering"] == "pixelated" for p in pictures), pictures  # images keep their pixels
    if width < 600:
        # legends are drawn at 11 pt (17 px at 110 dpi): shown at >= 0.6 of their size they stay >= 10 px;
        # the neighbour pictures' 14 px file labels are shown unscaled
        assert all(p["scale"] >= 0.6 for p in charts), charts
        assert all(p["scale"] > 0.99 for p in pictures if "most similar" in p["alt"]), pictures
