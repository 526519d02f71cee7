"""`quality_report`, statistics files and `diffmem fid`: names, counts, warnings, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
import torch

from diffmem.evaluate.fid import load_statistics, quality_report, save_statistics


_cli = run_cli


def test_quality_report_names_and_counts() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(60, 4, generator=gen), torch.randn(50, 4, generator=gen)
    rep = quality_report(a, b, features="dinov2:facebook/dinov2-giant@224", kid_subsets=5, kid_subset_size=20)
    assert rep["fd_name"] == "FD_dinov2" and rep["n_samples"] == 60 and rep["n_ref"] == 50
    assert rep["kid"]["subset_size"] == 20 and rep["precision_recall"]["k"] == 3
    assert any("biased upward" in w for w in rep["warnings"])
    assert quality_report(a, a, features="inception-v3:x.pth", kid_subsets=2, kid_subset_size=10)["fd_name"] == "FID"


def test_quality_report_precision_is_samples_on_the_reference_manifold() -> None:
    """Reference 0, 1, 3, 6, 10 and samples -3.5, 4.5, 15, 17.5, 20 on a line, k = 2: 2 of 5 samples lie on the
    reference manifold (precision 0.4) and every reference point on the samples' (recall 1); swapped
    arguments would give (1, 0.4). See test_evaluate_quality for the hand count."""
    ref = torch.tensor([[0.0], [1.0], [3.0], [6.0], [10.0]])
    samples = torch.tensor([[-3.5], [4.5], [15.0], [17.5], [20.0]])
    rep = quality_report(samples, ref, features="pixels", kid_subsets=3, kid_subset_size=3, pr_k=2)
    assert rep["precision_recall"] == {"precision": 0.4, "recall": 1.0, "k": 2}


def test_quality_report_warns_when_a_kid_subset_is_a_whole_set() -> None:
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(60, 4, generator=gen), torch.randn(50, 4, generator=gen)
    rep = quality_report(a, b, features="pixels", kid_subsets=4)  # default subset size 1000 > 50
    assert rep["kid"]["subset_size"] == 50 and rep["kid"]["subset_size_requested"] == 1000
    assert any("all 50 reference images" in w and "understates" in w for w in rep["warnings"])
    rep = quality_report(a, b, features="pixels", kid_subsets=4, kid_subset_size=20)
    assert not any("KID" in w for w in rep["warnings"])


def test_statistics_round_trip(tmp_path: Path) -> None:
    path = save_statistics(tmp_path / "s.npz", np.zeros(3), np.eye(3), 7, "pixels", "src")
    st = load_statistics(path)
    assert st["n"] == 7 and st["features"] == "pixels" and np.array_equal(st["sigma"], np.eye(3))
    np.savez(tmp_path / "fid_stats.npz", mu=np.zeros(3), sigma=np.eye(3))  # pytorch-fid's layout
    assert load_statistics(tmp_path / "fid_stats.npz")["features"] is None


def test_cli_fid_with_images_and_statistics(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFMEM_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    ref, samples = str(tmp_path / "ref.npz"), str(tmp_path / "samples.npz")
    np.savez(ref, images=rng.integers(0, 256, size=(40, 4, 4, 1), dtype=np.uint8))
    np.savez(samples, images=rng.integers(0, 256, size=(30, 4, 4, 1), dtype=np.uint8))
    stats, out = tmp_path / "ref_stats.npz", tmp_path / "fid.json"
    code, stdout, err = _cli(["fid", "--samples", samples, "--ref", ref, "--features", "pixels", "--out", str(out),
                              "--save-stats", str(stats), "--kid-subsets", "4", "--kid-subset-size", "10",
                              "--quiet", "--no-cache", "--json"], capsys)
    assert code == 0, err
    rep = json.loads(stdout)
    assert rep == json.loads(out.read_text())
    assert rep["fd_name"] == "FD_pixels" and rep["n_samples"] == 30 and rep["n_ref"] == 40 and rep["fd"] > 0
    assert "FD_pixels of 30 samples vs 40 reference images" in err and "warning:" in err
    assert "FID" not in err.replace("FID rests", "")
    code, stdout, err = _cli(["fid", "--samples", samples, "--ref", str(stats), "--features", "pixels", "--quiet",
                              "--json"], capsys)
    assert code == 0, err
    again = json.loads(stdout)
    assert again["fd"] == pytest.approx(rep["fd"], rel=1e-9) and again["kid"] is None
    code, _, err = _cli(["fid", "--samples", samples, "--ref", str(stats), "--features", "digits-net:8", "--quiet"],
                        capsys)
    assert code == 2 and "were made with features 'pixels'" in err


def test_cli_fid_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(["fid", "--ref", "builtin:digits", "--features", "pixels"], capsys)
    assert code == 2 and "--samples" in err
    code, _, err = _cli(["fid", "--samples", str(tmp_path / "none"), "--ref", "builtin:digits", "--features",
                         "pixels", "--quiet", "--no-cache"], capsys)
    assert code == 2 and "does not exist" in err
