"""The Python API as the README documents it: three lines from images to an answer, same errors as the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, tiny_config, write_npz


@pytest.fixture
def digits(tmp_path: Path) -> dict[str, Path]:
    from diffmem.data import load_images  # the import the issue found broken

    d = load_images("builtin:digits", 16).images
    paths = {"train": tmp_path / "train.npz", "unseen": tmp_path / "unseen.npz", "samples": tmp_path / "samples.npz"}
    np.savez(paths["train"], images=d[:60])
    np.savez(paths["unseen"], images=d[100:700])
    np.savez(paths["samples"], images=np.concatenate([d[:8], d[700:712]]))  # 8 copies, 12 new digits
    return paths


def test_readme_notebook_example(digits: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import diffmem

    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = diffmem.audit(str(digits["samples"]), train=str(digits["train"]), heldout=str(digits["unseen"]),
                           features="pixels")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no out: nothing written
    line = str(result)
    assert "\n" not in line and line.startswith("Copying found: 40.0% of the audited samples are copies")
    assert result.copy_fraction == pytest.approx(0.4) and result.verdict == "copies"
    d = result.to_dict()
    assert d["n_samples"] == 20 and d["out"] is None and json.loads(json.dumps(d)) == d
    # an exact copy: similarity 1 up to float32 rounding (which BLAS kernel runs depends on the CPU)
    assert result.nearest[0] == {"sample": "samples.npz#0", "nearest_train": "train.npz#0",
                                 "similarity": pytest.approx(1.0, abs=1e-6), "mirrored": False, "copy": True}
    assert sum(r["copy"] for r in result.nearest) == 8

    arrays = diffmem.audit(np.load(digits["samples"])["images"], train=diffmem.load_images(str(digits["train"])),
                           heldout=np.load(digits["unseen"])["images"][..., 0], out=tmp_path / "a")
    assert arrays.copy_fraction == pytest.approx(0.4) and (tmp_path / "a" / "report.html").is_file()
    assert arrays.nearest[3]["sample"] == "#3"


def test_api_errors_match_cli(digits: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import diffmem

    rgb = tmp_path / "rgb.npz"
    np.savez(rgb, images=np.zeros((4, 16, 16, 3), np.uint8))
    with pytest.raises(diffmem.DiffmemError) as err:
        diffmem.audit(str(rgb), train=str(digits["train"]))
    code, _, stderr = run_cli(["audit", "--samples", str(rgb), "--train", str(digits["train"]), "--features",
                               "pixels", "--out", str(tmp_path / "o"), "--quiet", "--no-cache"], capsys)
    assert code == 2 and stderr.strip() == f"error: {err.value}"
    with pytest.raises(diffmem.DiffmemError, match="samples: expected uint8"):
        diffmem.audit(np.zeros((3, 8, 8), np.float32), train=str(digits["train"]))
    with pytest.raises(diffmem.DiffmemError, match="exactly one of train"):
        diffmem.audit(str(digits["samples"]))
    with pytest.raises(diffmem.DiffmemError, match="does not exist|not found|no such"):
        diffmem.audit(str(tmp_path / "nowhere"), train=str(digits["train"]))


def test_fid_and_evaluate_exports(digits: dict[str, Path]) -> None:
    import diffmem
    from diffmem.evaluate import memorization_report, run_audit  # noqa: F401  (exported)

    result = diffmem.fid(str(digits["samples"]), str(digits["unseen"]), features="digits-net", kid_subset_size=10)
    assert result.name == "FD_digits-net" and result.fd > 0
    assert result.summary().startswith(f"FD_digits-net = {result.fd:.4f} (20 samples vs 600 reference images")
    assert result.to_dict()["fd"] == result.fd


def test_train_run_and_sample(tmp_path: Path) -> None:
    import diffmem

    data = write_npz(tmp_path / "d.npz", n=8)
    run = diffmem.train_run(tiny_config(str(data), steps=2), tmp_path / "run")
    images = diffmem.sample(run, 3, seed=1)
    assert images.shape == (3, 8, 8, 1) and images.dtype == np.uint8
    assert np.array_equal(images, diffmem.sample(run, 3, seed=1))


def test_audit_out_inside_its_training_folder_is_refused(tmp_path) -> None:
    import numpy as np
    import pytest

    import diffmem

    (tmp_path / "train").mkdir()
    np.savez(tmp_path / "train" / "t.npz", images=np.zeros((4, 8, 8, 1), np.uint8))
    with pytest.raises(diffmem.DiffmemError, match="inside the data train"):
        diffmem.audit(np.zeros((4, 8, 8, 1), np.uint8), train=str(tmp_path / "train" / "t.npz"),
                      out=str(tmp_path / "train" / "t.npz" / "audit"))
    with pytest.raises(diffmem.DiffmemError, match="inside the data train"):
        diffmem.audit(np.zeros((4, 8, 8, 1), np.uint8), train=str(tmp_path / "train"),
                      out=str(tmp_path / "train" / "audit"))
    assert not (tmp_path / "train" / "audit").exists()
