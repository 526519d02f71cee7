"""Tests for `diffmem sweep` and `diffmem compare`, and the default sigma_n grid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import tiny_config, write_npz
from diffmem.cli import main


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFMEM_CACHE", str(tmp_path / "cache"))


TINY = ["--resolution", "8", "--channels", "8,16", "--layers-per-block", "1", "--steps", "2", "--batch", "4",
        "--n-samples", "8", "--sample-steps", "2", "--quality-features", "pixels", "--no-pictures", "--device", "cpu",
        "--quiet"]


@pytest.mark.parametrize("flags, message", [
    (["--sigma-n", ""], "--sigma-n is empty"),
    (["--sigma-n", ","], "--sigma-n is empty"),
    (["--sigma-n", "0.5,-1"], "--method ambient needs a positive --sigma-n"),
    (["--sigma-n", "0.5,abc"], "--sigma-n takes comma-separated numbers"),
    (["--methods", "edm,diffusion"], "unknown method 'diffusion'"),
    (["--methods", ""], "--methods is empty"),
    (["--seeds", ""], "--seeds is empty"),
    (["--jobs", "0"], "--jobs must be a positive integer"),
    (["--n-samples", "1"], "--n-samples must be at least 2"),
    (["--features", ","], "--features is empty"),
    (["--features", "nonsense"], "unknown feature extractor 'nonsense'"),
])
def test_sweep_bad_input_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture, flags: list[str],
                                     message: str) -> None:
    data = str(write_npz(tmp_path / "data.npz", n=20))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--data", data, "--subset", "12", *TINY, *flags, "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not out.exists()  # refused before anything was written


def test_sweep_and_compare_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = str(write_npz(tmp_path / "data.npz", n=20))
    out = tmp_path / "out"
    main(["sweep", "--data", data, "--subset", "12", "--methods", "edm,ambient", "--sigma-n", "0.5", *TINY,
          "--out", str(out)])
    text = capsys.readouterr().out
    assert "FD_pixels" in text and "Rule of thumb" in text and "results.csv" in text
    rows = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in rows] == ["n12-edm-seed0", "n12-ambient-sn0.5-seed0"]
    assert rows[0]["steps"] == 2 and rows[1]["sigma_n"] == 0.5
    assert (out / "pareto.png").is_file()

    cmp = tmp_path / "cmp"
    main(["compare", *[str(out / "runs" / r["name"]) for r in rows], "--out", str(cmp), "--quiet"])
    assert "Rule of thumb" in capsys.readouterr().out
    assert (cmp / "results.csv").read_text() == (out / "results.csv").read_text()
    assert (cmp / "pareto.png").is_file()


def test_compare_cli_refuses_missing_paths(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["compare", str(tmp_path / "missing")])
    assert exc.value.code == 2 and "does not exist" in capsys.readouterr().err


def test_default_grid_from_commitment_curve(tmp_path: Path) -> None:
    import torch

    from diffmem.data.datasets import load_images, split_subset, to_model_range
    from diffmem.sweep import SweepConfig, default_grids
    from diffmem.theory.commitment import DEFAULT_SIGMAS, commitment_curve, default_sigma_grid

    data = str(write_npz(tmp_path / "data.npz", n=20))
    sc = SweepConfig(tiny_config(data), methods=("edm", "ambient"), subsets=(12,))
    messages: list[str] = []
    grids = default_grids(sc, tmp_path, messages.append)
    source = load_images(data, 8)
    tr, he = split_subset(len(source), 12, 0)
    curve = commitment_curve(to_model_range(source.subset(tr).images), to_model_range(source.subset(he).images),
                             DEFAULT_SIGMAS, torch.Generator().manual_seed(0))
    assert grids == {12: tuple(default_sigma_grid(curve))}
    assert (tmp_path / "commitment-n12.json").is_file() and "default sigma_n grid" in messages[0]
    assert default_grids(sc, tmp_path, messages.append) == grids and len(messages) == 1  # reused, not recomputed
    assert default_grids(SweepConfig(tiny_config(data), methods=("edm",)), tmp_path, messages.append) == {}
