"""Audit outputs that name files: exact, mirrored (--xflip) and noisy copies found and named in nearest.csv;
--out refuses foreign folders, is written whole (a kill leaves the previous audit), permission errors are one line."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]


def _digits() -> np.ndarray:
    from diffmem.data import load_images

    return load_images("builtin:digits", 16).images


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """40 training digits; samples: 10 exact, 10 mirrored, 10 noisy copies of them and 20 new digits (PNG folders)."""
    root = tmp_path_factory.mktemp("copies")
    d = _digits()
    rng = np.random.default_rng(0)
    train, held, new = d[:40], d[100:600], d[600:620]
    noisy = np.clip(train[20:30].astype(int) + rng.normal(0, 12, train[20:30].shape), 0, 255).astype(np.uint8)
    samples = np.concatenate([train[:10], train[10:20, :, ::-1], noisy, new])
    paths = {}
    for name, arr in (("train", train), ("heldout", held), ("samples", samples)):
        paths[name] = root / name
        paths[name].mkdir()
        for i, im in enumerate(arr):
            Image.fromarray(im[..., 0]).save(paths[name] / f"{name[0]}{i:03d}.png")
    return paths


def _audit(folders: dict[str, Path], out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code, _, err = run_cli(["audit", "--samples", str(folders["samples"]), "--train", str(folders["train"]),
                            "--heldout", str(folders["heldout"]), "--features", "pixels", "--out", str(out), "--quiet",
                            "--no-cache", *extra], capsys)
    return code, err


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "nearest.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_xflip_catches_mirrored_copies_and_names_files(folders, tmp_path, capsys) -> None:
    code, err = _audit(folders, tmp_path / "flip", capsys, "--xflip")
    assert code == 0, err
    rows = _rows(tmp_path / "flip")
    assert [r["sample"] for r in rows] == [f"s{i:03d}.png" for i in range(50)]
    copies = [int(r["copy"]) for r in rows]
    assert copies[:30] == [1] * 30 and sum(copies[30:]) == 0  # exact, mirrored and noisy copies; no new digit
    assert all(rows[i]["nearest_train"] == f"t{i:03d}.png" for i in range(30))
    with np.load(tmp_path / "flip" / "nearest.npz") as z:  # every row names the file the search found
        assert [r["nearest_train"] for r in rows] == [f"t{j:03d}.png" for j in z["nn_index"]]
        assert [float(r["similarity"]) for r in rows] == pytest.approx(z["nn_similarity"].tolist(), abs=1e-5)
    assert [int(r["mirrored"]) for r in rows[:30]] == [0] * 10 + [1] * 10 + [0] * 10
    rep = json.loads((tmp_path / "flip" / "report.json").read_text())
    assert rep["xflip"] is True and rep["n_train"] == 40 and rep["fraction_mirrored"] >= 0.2
    html = (tmp_path / "flip" / "report.html").read_text()
    assert "60.0% of the audited samples are copies" in html and "s010.png" in html and "t010.png" in html
    assert not any("ratio test" in w for w in rep["warnings"])  # ratio_k follows the training-set size

    code, err = _audit(folders, tmp_path / "plain", capsys)
    assert code == 0, err
    plain = [int(r["copy"]) for r in _rows(tmp_path / "plain")]
    assert plain[:10] == [1] * 10 and plain[20:30] == [1] * 10 and sum(plain[10:20]) <= 2  # mirrors mostly missed


def test_out_refuses_foreign_folder_and_replaces_an_audit(folders, tmp_path, capsys) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    code, err = _audit(folders, foreign, capsys)
    assert code == 2 and "holds other files (notes.txt)" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    out = tmp_path / "audit"
    assert _audit(folders, out, capsys)[0] == 0
    (out / "quality.json").write_text("{}")  # the sweep's measurement beside an audit survives a rewrite
    assert _audit(folders, out, capsys, "--thresholds", "0.5")[0] == 0
    assert json.loads((out / "report.json").read_text())["thresholds"] == [0.5]
    assert (out / "quality.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit", "mine"]  # no temporary folders left
    code, err = _audit(folders, out / "report.json", capsys)
    assert code == 2 and "is a file" in err


def test_permission_error_is_one_line(folders, tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "locked" / "audit"
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args, **kwargs):
        if "locked" in str(self):
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    code, err = _audit(folders, out, capsys)
    assert code == 2 and f"cannot write the audit --out {out} (Permission denied)" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


_KILL = """
import os, sys, numpy as np
from diffmem.cli import main
real = np.savez
def savez(path, **kw):  # the kill: half-way through writing the new output set
    real(path, **kw)
    os._exit(9)
np.savez = savez
main(sys.argv[1:])
"""


def test_kill_during_audit_leaves_previous_audit(folders, tmp_path, capsys) -> None:
    out = tmp_path / "audit"
    assert _audit(folders, out, capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    args = ["audit", "--samples", str(folders["samples"]), "--train", str(folders["train"]), "--heldout",
            str(folders["heldout"]), "--features", "pixels", "--out", str(out), "--quiet", "--no-cache",
            "--thresholds", "0.5"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-c", _KILL, *args], env=env, capture_output=True, timeout=300)
    assert proc.returncode == 9, proc.stderr.decode()[-2000:]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the previous complete audit, untouched
    assert len(list(tmp_path.glob(".audit.tmp-*"))) == 1  # the killed audit's partial set, hidden beside it
    assert _audit(folders, out, capsys, "--thresholds", "0.5")[0] == 0  # the same command then completes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit"]  # and clears what the kill left
    assert json.loads((out / "report.json").read_text())["thresholds"] == [0.5]


def test_shift_catches_moved_copies_and_says_by_how_much(tmp_path, capsys) -> None:
    """Copies moved by one pixel: most are missed in plain pixels, all found with --shift 1, each named with
    its move; the held-out images are matched the same way, so unseen digits stay below the threshold."""
    d = _digits()
    train, held, new = d[:40], d[100:600], d[600:620]
    padded = np.pad(train[:20], ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    moved = np.concatenate([padded[:10, 2:18, 1:17], padded[10:20, 1:17, 0:16]])  # content moved up 1; right 1
    root = tmp_path / "in"
    paths = {}
    for name, arr in (("train", train), ("heldout", held), ("samples", np.concatenate([moved, new]))):
        paths[name] = root / name
        paths[name].mkdir(parents=True)
        for i, im in enumerate(arr):
            Image.fromarray(im[..., 0]).save(paths[name] / f"{name[0]}{i:03d}.png")
    code, err = _audit(paths, tmp_path / "shift", capsys, "--shift", "1")
    assert code == 0, err
    rows = _rows(tmp_path / "shift")
    assert [int(r["copy"]) for r in rows] == [1] * 20 + [0] * 20
    assert all(rows[i]["nearest_train"] == f"t{i:03d}.png" for i in range(20))
    with np.load(tmp_path / "shift" / "nearest.npz") as z:
        assert z["nn_shift"][:10].tolist() == [[-1, 0]] * 10 and z["nn_shift"][10:20].tolist() == [[0, 1]] * 10
    rep = json.loads((tmp_path / "shift" / "report.json").read_text())
    assert rep["shift"] == 1 and rep["fraction_shifted"] >= 0.5
    code, err = _audit(paths, tmp_path / "plain", capsys)
    assert code == 0, err
    assert sum(int(r["copy"]) for r in _rows(tmp_path / "plain")[:20]) <= 10  # moved copies mostly missed
    code, err = _audit(paths, tmp_path / "bad", capsys, "--shift", "-1")
    assert code == 2 and "--shift must be 0 to 4 pixels" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("shift", [-1, 5, 1.5, True])
def test_the_api_refuses_a_bad_shift_before_loading(shift, tmp_path) -> None:
    import diffmem
    from diffmem.errors import DiffmemError

    with pytest.raises(DiffmemError, match=r"shift \(--shift\) must be 0 to 4 pixels"):
        diffmem.audit(str(tmp_path / "missing"), train=str(tmp_path / "also-missing"), shift=shift)
