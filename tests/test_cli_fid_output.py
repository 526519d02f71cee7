"""`diffmem fid` prints the number, as clean-fid and torch-fidelity users expect; JSON only with --json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli


@pytest.fixture
def sets(tmp_path: Path) -> tuple[str, str]:
    rng = np.random.default_rng(0)
    ref, samples = tmp_path / "ref.npz", tmp_path / "samples.npz"
    np.savez(ref, images=rng.integers(0, 256, size=(40, 4, 4, 1), dtype=np.uint8))
    np.savez(samples, images=rng.integers(0, 256, size=(30, 4, 4, 1), dtype=np.uint8))
    return str(samples), str(ref)


def test_fid_prints_one_line_with_the_number(sets, tmp_path: Path, capsys) -> None:
    samples, ref = sets
    base = ["fid", "--samples", samples, "--ref", ref, "--features", "pixels", "--kid-subsets", "4",
            "--kid-subset-size", "30", "--quiet", "--no-cache"]
    code, out, err = run_cli(base + ["--out", str(tmp_path / "r.json")], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert out == f"FD_pixels: {report['fd']:.4f}\n"  # stdout: the number alone, one line
    assert float(out.split(": ")[1]) == pytest.approx(report["fd"], abs=1e-4)
    assert "FD_pixels of 30 samples vs 40 reference images" in err and "KID = " in err
    kid_warning = [line for line in err.splitlines() if line.startswith("warning: KID subsets")]
    assert len(kid_warning) == 1 and "--kid-subset-size" in kid_warning[0]  # names the flag that fixes it
    code, out, err = run_cli(base + ["--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["fd"] == pytest.approx(report["fd"], rel=1e-12)


def test_fid_help_names_the_output_and_the_inception_preprocessing(capsys) -> None:
    code, out, _ = run_cli(["fid", "--help"], capsys)
    assert code == 0
    text = " ".join(out.split())
    assert "FID: 12.3456" in text and "--json" in text
    assert "pytorch-fid's Inception preprocessing" in text and "without antialiasing" in text
