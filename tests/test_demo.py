"""The demo end to end at a toy budget: two runs, samples, side-by-side picture, report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from diffmem.demo import DemoConfig, demo_configs, run_demo
from diffmem.report.demo import audit_demo
from diffmem.errors import DiffmemError

TOY = DemoConfig(subset=20, steps=2, batch=8, n_samples=50, resolution=8, patience=0)


def test_demo_configs_differ_only_in_method() -> None:
    cfgs = demo_configs(TOY)
    a, b = cfgs["edm"].to_dict(), cfgs["ambient"].to_dict()
    assert a.pop("method")["name"] == "edm"
    m = b.pop("method")
    assert (m["name"], m["sigma_n"]) == ("ambient", TOY.sigma_n)
    assert a == b  # same data, subset, network, budget and seed


def test_demo_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFMEM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    samples = run_demo(out, TOY, progress=False, audit=lambda o, s: audit_demo(o, s, echo=lambda _: None),
                       echo=lambda _: None)
    assert set(samples) == {"edm", "ambient"}
    for path in samples.values():
        images = np.load(path)["images"]
        assert images.shape == (50, 8, 8, 1) and images.dtype == np.uint8
    assert (out / "side_by_side.png").stat().st_size > 0
    md = (out / "report.md").read_text()
    for needle in ("baseline", "Algorithm 1", "held-out", "FD_digits-net", "Glossary", "Which feature space"):
        assert needle in md
    assert "FID" not in md.replace("FID only with Inception", "")  # never called FID without Inception
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html  # self-contained
    summary = json.loads((out / "summary.json").read_text())
    assert summary["edm"]["pixels"]["audit"]["n_samples"] == 50
    assert summary["headline"]["sentence"].startswith("Released: the baseline at step ")
    assert set(summary["release"]) == {"edm", "ambient"} and (out / "paths.png").stat().st_size > 0
    for method, path in samples.items():  # the audited samples are the released ones
        assert path == out / method / "release" / "released.npz"

    # a second run reuses the finished runs and their samples
    before = (out / "edm" / "release" / "released.npz").stat().st_mtime_ns
    run_demo(out, TOY, progress=False, echo=lambda _: None)
    assert (out / "edm" / "release" / "released.npz").stat().st_mtime_ns == before
    # other settings in the same folder are refused without --overwrite, then replace the runs with it
    other = dataclasses.replace(TOY, steps=3)
    with pytest.raises(DiffmemError, match="--overwrite"):
        run_demo(out, other, progress=False, echo=lambda _: None)
    run_demo(out, other, progress=False, overwrite=True, echo=lambda _: None)
    assert json.loads((out / "edm" / "config.json").read_text())["optim"]["steps"] == 3
