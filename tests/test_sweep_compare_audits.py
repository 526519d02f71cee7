"""`diffmem compare` on audit folders: a missing baseline is explained in compare's own terms (it has no
--methods), and audits that differ in --xflip are flagged as not comparable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from diffmem.sweep.compare import audit_warnings


@pytest.fixture
def audits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Path]:
    """Three pixel audits of one training set: plain, plain again, and with --xflip."""
    rng = np.random.default_rng(0)
    train = rng.integers(0, 255, (30, 8, 8, 1), dtype=np.uint8)
    held = rng.integers(0, 255, (40, 8, 8, 1), dtype=np.uint8)
    np.savez(tmp_path / "train.npz", images=train)
    np.savez(tmp_path / "held.npz", images=held[10:])
    np.savez(tmp_path / "s.npz", images=np.concatenate([train[:5], held[:5]]))
    out = {}
    for name, extra in (("a", []), ("b", []), ("flipped", ["--xflip"])):
        code, _, err = run_cli(["audit", "--samples", str(tmp_path / "s.npz"), "--train", str(tmp_path / "train.npz"),
                                "--heldout", str(tmp_path / "held.npz"), "--out", str(tmp_path / name), "--quiet",
                                "--no-cache"] + extra, capsys)
        assert code == 0, err
        out[name] = tmp_path / name
    return out


def test_compare_without_a_baseline_names_what_compare_takes(audits, capsys) -> None:
    code, out, err = run_cli(["compare", str(audits["a"]), str(audits["b"]), "--quiet"], capsys)
    assert code == 0, err
    assert "(add edm to --methods)" not in out  # compare has no --methods
    assert "no baseline (edm) run" in out and "give `diffmem compare` an edm run or sweep" in out
    assert "--xflip" not in err  # same settings: no warning


def test_compare_warns_when_only_some_audits_matched_mirrors(audits, capsys) -> None:
    code, _, err = run_cli(["compare", str(audits["a"]), str(audits["flipped"]), str(audits["b"]), "--quiet"], capsys)
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("warning:") and "--xflip" in line]
    assert len(lines) == 1
    assert f"{audits['flipped']} matched mirrored images (--xflip) and {audits['a']}, {audits['b']} did not" in lines[0]
    assert audit_warnings([audits["flipped"]]) == [] == audit_warnings([audits["a"], audits["b"]])
