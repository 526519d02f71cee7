"""`diffmem train` refuses, in one line with exit code 2 and before changing anything: an --out under a
file, an --out inside its data folder (or holding it), a hand-edited config.json that fails its check,
and a checkpoint whose training state or weights cannot be resumed from (a pickle payload included)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_cli, write_npz

TINY = ["--channels", "8,16", "--layers-per-block", "1", "--device", "cpu", "--quiet"]


def _train(data: Path | str, out: Path, steps: int = 2, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--resolution", "8", "--steps", str(steps), "--batch", "4",
            "--checkpoint-every", "2", *TINY, *extra, "--out", str(out)]


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _refused(args: list[str], capsys, *needles: str) -> str:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = run_cli(args, capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert [str(w.message) for w in caught] == []  # torch's pickle-protocol warning is silenced too
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data, a finished 2-step run on it)."""
    root = tmp_path_factory.mktemp("finished")
    data = write_npz(root / "data.npz")
    from diffmem.cli import main

    main(_train(data, root / "run"))
    return data, root / "run"


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


# ---------------------------------------------------------------------------------------------------
# --out under a file


@pytest.mark.parametrize("below", ["run", "deeper/run"])
def test_out_under_a_file_is_one_line(finished, tmp_path: Path, capsys, below: str) -> None:
    data, _ = finished
    (tmp_path / "F").write_text("a file")
    _refused(_train(data, tmp_path / "F" / below), capsys, f"{tmp_path / 'F'} is a file, not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["F"] and (tmp_path / "F").read_text() == "a file"


def test_check_out_folder_names_the_file_on_the_way(tmp_path: Path) -> None:
    from diffmem.errors import DiffmemError
    from diffmem.utils.outdir import ABSENT, check_out_folder

    (tmp_path / "F").write_text("x")
    with pytest.raises(DiffmemError, match="F is a file, not a folder; choose another --out"):
        check_out_folder(tmp_path / "F" / "a" / "b", kind="diffmem run")
    assert check_out_folder(tmp_path / "G" / "a", kind="diffmem run") == ABSENT


# ---------------------------------------------------------------------------------------------------
# --out and the data folder


def _image_folder(root: Path, n: int = 8) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(root / f"{i:02d}.png")
    return root


@pytest.mark.parametrize("layout", ["out inside data", "data inside out", "same folder", "through a link"])
def test_out_inside_the_data_folder_is_refused(tmp_path: Path, capsys, layout: str) -> None:
    if layout == "data inside out":
        data, out = _image_folder(tmp_path / "work" / "imgs"), tmp_path / "work"
    else:
        data = _image_folder(tmp_path / "imgs")
        out = {"out inside data": data / "run", "same folder": data,
               "through a link": tmp_path / "link" / "run"}[layout]
        if layout == "through a link":
            os.symlink(data, tmp_path / "link")
    before = _snapshot(tmp_path)
    err = _refused(_train(data, out), capsys, "inside")
    assert ("--data" in err) if layout == "data inside out" else ("the next read of the data" in err)
    assert _snapshot(tmp_path) == before  # nothing written, not even a lock file


def test_out_beside_the_data_folder_trains(tmp_path: Path, capsys) -> None:
    data = _image_folder(tmp_path / "imgs")
    code, _, err = run_cli(_train(data, tmp_path / "imgs-run", 1), capsys)  # a sibling whose name extends it
    assert code == 0, err


# ---------------------------------------------------------------------------------------------------
# a hand-edited config.json


@pytest.mark.parametrize("edit", [("optim", "steps", -5), ("optim", "lr", -1.0), ("method", "sigma_n", float("nan"))])
def test_stored_config_that_fails_its_check_is_refused_unchanged(finished, tmp_path: Path, capsys, edit) -> None:
    data, run = finished
    out = _copy(run, tmp_path)
    cfg = json.loads((out / "config.json").read_text())
    cfg[edit[0]][edit[1]] = edit[2]
    (out / "config.json").write_text(json.dumps(cfg))
    before = _snapshot(out)
    for steps in (4, 2, 1):  # would extend, is the same, would shorten
        _refused(_train(data, out, steps), capsys, str(out / "config.json"), f"{edit[0]}.{edit[1]}")
        assert _snapshot(out) == before


def test_faulty_keys_finds_the_key_at_fault() -> None:
    from diffmem.config import TrainConfig, json_ready
    from diffmem.train.rundir import _faulty_keys

    good = json_ready(TrainConfig().to_dict())
    assert _faulty_keys(good) == []
    bad = json.loads(json.dumps(good))
    bad["optim"]["batch"], bad["checkpoint_every"] = 0, 0
    assert sorted(_faulty_keys(bad)) == []  # two faults: resetting either alone still fails
    bad["checkpoint_every"] = good["checkpoint_every"]
    assert _faulty_keys(bad) == ["optim.batch"]


# ---------------------------------------------------------------------------------------------------
# checkpoints that cannot be resumed from


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _latest(run: Path) -> Path:
    return run / "checkpoints" / (run / "checkpoints" / "LATEST").read_text().strip()


@pytest.mark.parametrize("damage", ["pickle payload", "missing keys", "truncated state", "bad weights", "no weights"])
@pytest.mark.parametrize("finished_run", [True, False])
def test_bad_checkpoint_refused_before_the_run_changes(finished, tmp_path: Path, capsys, damage: str,
                                                       finished_run: bool) -> None:
    """Extending a finished run (more --steps) or resuming an unfinished one: the checkpoint is checked
    before done.json or config.json change; no code in the file runs; one line, no torch warning."""
    data, run = finished
    out = _copy(run, tmp_path)
    if not finished_run:
        (out / "done.json").unlink()
        cfg = json.loads((out / "config.json").read_text())
        cfg["optim"]["steps"] = 4
        (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    ckpt, marker = _latest(out), tmp_path / "code-ran"
    if damage == "pickle payload":
        (ckpt / "state.pt").write_bytes(pickle.dumps(_Payload(marker), protocol=4))
    elif damage == "missing keys":
        torch.save({"step": torch.tensor(2)}, ckpt / "state.pt")
    elif damage == "truncated state":
        (ckpt / "state.pt").write_bytes((ckpt / "state.pt").read_bytes()[:100])
    elif damage == "bad weights":
        (ckpt / "ema.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    else:
        (ckpt / "model.safetensors").unlink()
    before = _snapshot(out)
    file = "model.safetensors" if damage == "no weights" else "ema.safetensors" if damage == "bad weights" else "state.pt"
    _refused(_train(data, out, 4), capsys, str(ckpt / file), "left unchanged")
    assert not marker.exists()
    assert _snapshot(out) == before  # config.json keeps its length, done.json stays


def test_good_checkpoint_passes_the_check(finished, tmp_path: Path, capsys) -> None:
    data, run = finished
    out = _copy(run, tmp_path)
    code, _, err = run_cli(_train(data, out, 4), capsys)
    assert code == 0, err
    assert json.loads((out / "done.json").read_text())["step"] == 4
