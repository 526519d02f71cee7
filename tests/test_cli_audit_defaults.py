"""`diffmem audit` and `diffmem.audit` share one default feature space (pixels, offline) and fixed thresholds
chosen per feature space (docs/method.md, "Metrics"; diffmem.evaluate.options.fixed_thresholds)."""

from __future__ import annotations

import inspect
from pathlib import Path

import click
import numpy as np
import pytest

from conftest import run_cli
from diffmem.cli.audit import audit, audit_options_from_flags
from diffmem.evaluate.options import (DEFAULT_THRESHOLDS, PIXEL_THRESHOLDS, AuditOptions, EvalOptions,
                                      fixed_thresholds)


def _click_default(name: str):
    ctx = click.Context(audit)
    return {p.name: p.get_default(ctx) for p in audit.params}[name]


def test_cli_and_api_default_to_pixels() -> None:
    import diffmem.api as api

    api_default = inspect.signature(api.audit).parameters["features"].default
    assert _click_default("features") == AuditOptions().features == api_default == "pixels"
    assert audit_options_from_flags(train_spec="t").features == "pixels"


@pytest.mark.parametrize("features, expected", [
    ("pixels", PIXEL_THRESHOLDS), ("dinov2", DEFAULT_THRESHOLDS), ("dinov2:facebook/dinov2-small", DEFAULT_THRESHOLDS),
    ("inception", DEFAULT_THRESHOLDS), ("digits-net:16", DEFAULT_THRESHOLDS), (None, DEFAULT_THRESHOLDS)])
def test_fixed_thresholds_follow_the_feature_space(features, expected) -> None:
    """The audit and the sweeps' EvalOptions use one rule; an explicit --thresholds wins."""
    assert fixed_thresholds(features) == expected
    if features is not None:
        assert AuditOptions(features=features).fixed() == expected == EvalOptions().thresholds_for(features)
        assert audit_options_from_flags(train_spec="t", features=features).fixed() == expected
        assert audit_options_from_flags(train_spec="t", features=features, thresholds="0.5").fixed() == (0.5,)
    assert PIXEL_THRESHOLDS != DEFAULT_THRESHOLDS


def test_thresholds_help_names_both_defaults() -> None:
    opt = [p for p in audit.params if p.name == "thresholds"][0]
    assert opt.default is None
    assert "0.9,0.95,0.98,0.99 for pixels" in opt.help and "0.85,0.875,0.9,0.925,0.95" in opt.help


@pytest.fixture
def digit_files(tmp_path: Path) -> dict[str, Path]:
    from diffmem.data import load_images

    d = load_images("builtin:digits", 8).images
    paths = {"train": tmp_path / "train.npz", "unseen": tmp_path / "unseen.npz", "samples": tmp_path / "samples.npz"}
    np.savez(paths["train"], images=d[:60])
    np.savez(paths["unseen"], images=d[100:400])
    np.savez(paths["samples"], images=np.concatenate([d[:4], d[400:412]]))
    return paths


def test_cli_and_api_report_the_pixel_thresholds_by_default(digit_files, tmp_path: Path, capsys) -> None:
    """Without --features or --thresholds both audit pixels against 0.9 ... 0.99; with --features given
    explicitly the CLI still works (digits-net: no download) and reports the paper's thresholds."""
    import json

    import diffmem

    api = diffmem.audit(str(digit_files["samples"]), train=str(digit_files["train"]),
                        heldout=str(digit_files["unseen"]))
    assert api.report["features"] == "pixels" and api.report["thresholds"] == list(PIXEL_THRESHOLDS)
    base = ["audit", "--samples", str(digit_files["samples"]), "--train", str(digit_files["train"]),
            "--heldout", str(digit_files["unseen"]), "--quiet", "--no-cache"]
    code, _, err = run_cli(base + ["--out", str(tmp_path / "a")], capsys)
    assert code == 0, err
    rep = json.loads((tmp_path / "a" / "report.json").read_text())
    assert rep["features"] == "pixels" and rep["thresholds"] == list(PIXEL_THRESHOLDS)
    assert rep["fraction_above"] == api.report["fraction_above"]
    code, _, err = run_cli(base + ["--out", str(tmp_path / "b"), "--features", "digits-net"], capsys)
    assert code == 0, err
    rep = json.loads((tmp_path / "b" / "report.json").read_text())
    assert rep["features"].startswith("digits-net") and rep["thresholds"] == list(DEFAULT_THRESHOLDS)
