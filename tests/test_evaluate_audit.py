"""`run_audit` and `diffmem audit`: files, keys, self-audit, --run, and clear errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from PIL import Image

from diffmem.evaluate.audit import run_audit


_cli = run_cli


def _blobs(n: int, seed: int, res: int = 8, c: int = 1) -> np.ndarray:
    """Smooth random images (so held-out images resemble training images without being copies)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 3, 3, c))
    up = np.kron(base, np.ones((1, res // 2, res // 2, 1)))[:, : res, : res]
    noisy = up + 0.3 * rng.normal(size=up.shape)
    return np.clip(128 + 60 * noisy, 0, 255).astype(np.uint8)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    train, held = _blobs(40, 0), _blobs(30, 1)
    paths = {}
    for name, arr in (("train", train), ("heldout", held), ("samples", np.concatenate([train[:5], held[:5]]))):
        paths[name] = str(tmp_path / f"{name}.npz")
        np.savez(paths[name], images=arr)
    return paths


def test_run_audit_writes_everything(tmp_path: Path) -> None:
    train, held = _blobs(40, 0), _blobs(30, 1)
    rep = run_audit(train, train, held, "pixels", tmp_path / "a", thresholds=(0.9, 0.95), n_pictures=4)
    assert rep["similarity"]["mean"] == pytest.approx(1.0, abs=1e-6)
    assert rep["fraction_above"] == {"0.9": 1.0, "0.95": 1.0}
    assert rep["heldout"]["similarity"]["mean"] < rep["similarity"]["mean"]
    on_disk = json.loads((tmp_path / "a" / "report.json").read_text())
    assert on_disk["features"] == "pixels" and on_disk["n_samples"] == 40 and on_disk["n_train"] == 40
    assert on_disk["heldout"]["n"] == 30 and "heldout_p99" in on_disk["calibrated_thresholds"]
    with np.load(tmp_path / "a" / "nearest.npz") as z:
        assert np.array_equal(z["nn_index"], np.arange(40))
        assert z["nn_similarity"].shape == (40,) and z["heldout_nn_similarity"].shape == (30,)
    for pic in ("histogram.png", "neighbours.png"):
        with Image.open(tmp_path / "a" / pic) as im:
            assert im.size[0] > 100 and im.size[1] > 50


def test_cli_audit_train_heldout(files: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "audit"
    code, stdout, err = _cli(["audit", "--samples", files["samples"], "--train", files["train"], "--heldout",
                              files["heldout"], "--features", "pixels", "--out", str(out), "--thresholds", "0.8,0.99",
                              "--calibrate", "90", "--ratio-k", "5", "--quiet", "--cache-dir", str(tmp_path / "c")],
                             capsys)
    assert code == 0, err
    rep = json.loads((out / "report.json").read_text())
    assert rep["n_samples"] == 10 and rep["fraction_above"]["0.99"] == pytest.approx(0.5)
    assert list(rep["calibrated_thresholds"]) == ["heldout_p90"] and rep["ratio_test"]["k"] == 5
    assert "features pixels: 10 samples vs 40 training images" in stdout
    cached = sorted((tmp_path / "c" / "features").iterdir())
    assert len(cached) == 2  # training and held-out features, reused by the next audit
    code, _, err = _cli(["audit", "--samples", files["samples"], "--train", files["train"], "--features", "pixels",
                         "--out", str(tmp_path / "again"), "--quiet", "--cache-dir", str(tmp_path / "c")], capsys)
    assert code == 0, err
    assert sorted((tmp_path / "c" / "features").iterdir()) == cached


def test_cli_audit_run_dir(files: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from diffmem.data.datasets import load_images

    source = np.concatenate([np.load(files["train"])["images"], np.load(files["heldout"])["images"]])
    spec = str(tmp_path / "source.npz")
    np.savez(spec, images=source)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"data": {"spec": spec, "resolution": None}}))
    (run / "subset.json").write_text(json.dumps({
        "source": spec, "n_source": 70, "content_hash": load_images(spec).content_hash(),
        "train_indices": list(range(40)), "heldout_indices": list(range(40, 70)),
    }))
    code, _, err = _cli(["audit", "--samples", files["samples"], "--run", str(run), "--features", "pixels",
                         "--out", str(tmp_path / "out"), "--quiet", "--no-cache"], capsys)
    assert code == 0, err
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["n_train"] == 40 and rep["n_heldout"] == 30
    # a run trained on all of its data has no held-out images: the audit still runs, and says so
    subset = json.loads((run / "subset.json").read_text())
    subset.update(train_indices=list(range(70)), heldout_indices=[])
    (run / "subset.json").write_text(json.dumps(subset))
    code, _, err = _cli(["audit", "--samples", files["samples"], "--run", str(run), "--features", "pixels",
                         "--out", str(tmp_path / "all"), "--quiet", "--no-cache"], capsys)
    assert code == 0, err
    rep = json.loads((tmp_path / "all" / "report.json").read_text())
    assert rep["n_train"] == 70 and rep["heldout"] is None and "no held-out images" in err


def test_cli_audit_bad_inputs(files: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    common = ["--out", str(tmp_path / "o"), "--quiet", "--no-cache"]
    code, _, err = _cli(["audit", "--samples", str(empty), "--train", files["train"], "--features", "pixels"] + common,
                        capsys)
    assert code == 2 and "no images found" in err
    rgb = str(tmp_path / "rgb.npz")
    np.savez(rgb, images=_blobs(6, 3, c=3))
    code, _, err = _cli(["audit", "--samples", rgb, "--train", files["train"], "--features", "pixels"] + common, capsys)
    assert code == 2 and "pixels features need samples and training images of one shape" in err
    assert "8x8 RGB" in err and "8x8 gray" in err
    code, _, err = _cli(["audit", "--samples", rgb, "--train", files["train"], "--run", str(tmp_path)] + common,
                        capsys)
    assert code == 2 and "exactly one of --run" in err
    code, _, err = _cli(["audit", "--samples", rgb, "--train", files["train"], "--features",
                         f"torchscript:{tmp_path / 'missing.pt'}"] + common, capsys)
    assert code == 2 and "missing.pt' does not exist" in err
    code, _, err = _cli(["audit", "--samples", rgb, "--train", files["train"], "--features", "pixels",
                         "--thresholds", "0.9,high"] + common, capsys)
    assert code == 2 and "--thresholds" in err
