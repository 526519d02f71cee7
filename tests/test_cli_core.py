"""The train and sample commands end to end (tiny budgets, CPU), and how they refuse bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_npz
from diffmem.cli import main

TINY = ["--channels", "8,16", "--layers-per-block", "1", "--device", "cpu", "--quiet"]

def run_cli(args: list[str]) -> None:
    main([str(a) for a in args])


def cli_error(args: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run a command that must fail with exit code 2; return its message."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_cli(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _png(path: Path, size: tuple[int, int], value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, dtype=np.uint8)).save(path)


# ---------------------------------------------------------------------------------------------------
# bad input


@pytest.fixture(scope="module")
def existing_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run that bad commands aimed at the same --out must leave alone."""
    root = tmp_path_factory.mktemp("existing")
    data = write_npz(root / "data.npz")
    out = root / "run"
    run_cli(["train", "--data", data, "--resolution", 8, "--steps", 2, "--batch", 4, "--out", out, *TINY])
    assert (out / "done.json").is_file()
    return out


def _bad_inputs(tmp: Path) -> dict[str, tuple[list, str]]:
    """name -> (train arguments, a piece of text the message must contain)."""
    (tmp / "empty").mkdir()
    corrupt = tmp / "corrupt"
    _png(corrupt / "a.png", (8, 8))
    (corrupt / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    _png(corrupt / "c.png", (8, 8))
    mixed = tmp / "mixed"
    _png(mixed / "a.png", (8, 8))
    _png(mixed / "b.png", (10, 12))
    data = write_npz(tmp / "small.npz", n=5)
    return {
        "missing": (["--data", tmp / "nowhere"], "nowhere"),
        "empty": (["--data", tmp / "empty"], "no images found"),
        "corrupt": (["--data", corrupt], str(corrupt / "b.png")),
        "mixed": (["--data", mixed, "--resolution", 8], "different sizes"),
        "subset": (["--data", data, "--resolution", 8, "--subset", 6], "--subset 6"),
        "sigma_n": (["--data", data, "--resolution", 8, "--method", "ambient"], "--sigma-n"),
        "sigma_n_zero": (["--data", data, "--resolution", 8, "--method", "ambient", "--sigma-n", 0], "--sigma-n"),
        "noisy_only": (["--data", data, "--resolution", 8, "--method", "noisy-only"], "--sigma-n"),
        "no_labels": (["--data", write_npz(tmp / "nolab.npz", labels=False), "--resolution", 8, "--cond"], "labels"),
    }


def test_bad_input_is_refused_and_nothing_is_written(existing_run: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    before = _snapshot(existing_run)
    for name, (args, needle) in _bad_inputs(tmp_path).items():
        common = ["--steps", 2, "--batch", 4, *TINY]
        # into the existing run, even with --overwrite: refused before the run is touched
        err = cli_error(["train", *args, *common, "--out", existing_run, "--overwrite"], capsys)
        assert needle in err, (name, err)
        assert _snapshot(existing_run) == before, name
        # into a new folder: refused before the folder is created
        fresh = tmp_path / f"fresh-{name}"
        err = cli_error(["train", *args, *common, "--out", fresh], capsys)
        assert needle in err, (name, err)
        assert not fresh.exists(), name


def test_mixed_sizes_train_with_resize(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    for i in range(4):
        _png(folder / f"{i}.png", (8 + 2 * i, 12), value=40 * i)
    out = tmp_path / "run"
    run_cli(["train", "--data", folder, "--resize", "--resolution", 8, "--steps", 2, "--batch", 4, "--out", out, *TINY])
    assert (out / "done.json").is_file()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["data"]["resize"] is True and cfg["data"]["resolution"] == 8
    assert json.loads((out / "checkpoints" / "step-00000002" / "meta.json").read_text())["resolution"] == 8


def test_cli_run_directory_rules(existing_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = json.loads((existing_run / "config.json").read_text())
    data = cfg["data"]["spec"]
    base = ["train", "--data", data, "--resolution", 8, "--batch", 4, "--out", existing_run, *TINY]
    before = _snapshot(existing_run)
    assert "--overwrite" in cli_error([*base, "--steps", 2], capsys)  # finished
    err = cli_error([*base, "--steps", 2, "--lr", 0.001], capsys)  # another configuration
    assert "optim.lr" in err
    assert "cannot be shortened" in cli_error([*base, "--steps", 1], capsys)  # more steps extend; fewer do not
    assert _snapshot(existing_run) == before
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"meow")
    assert "not a diffmem run" in cli_error(["train", "--data", data, "--resolution", 8, "--steps", 2,
                                             "--out", photos, "--overwrite", *TINY], capsys)
    assert _snapshot(photos) == {"cat.jpg": b"meow"}
    # sample refuses a folder that is not a run, and an existing --out
    assert "not a diffmem run" in cli_error(["sample", "--run", photos, "--n", 2, "--out", tmp_path / "s.npz"],
                                            capsys)
    (tmp_path / "s.npz").write_bytes(b"old")
    err = cli_error(["sample", "--run", existing_run, "--n", 2, "--out", tmp_path / "s.npz", "--steps", 2,
                     "--device", "cpu", "--quiet"], capsys)
    assert "--overwrite" in err and (tmp_path / "s.npz").read_bytes() == b"old"


# ---------------------------------------------------------------------------------------------------
# end to end on the built-in digits


DIGITS = ["--data", "builtin:digits", "--subset", 40, "--resolution", 8, "--steps", 4, "--batch", 8,
          "--method", "ambient", "--sigma-n", 0.5, *TINY]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("digits") / "run"
    run_cli(["train", *DIGITS, "--out", out])
    return out


def _sample(run: Path, out: Path, *extra) -> np.lib.npyio.NpzFile:
    run_cli(["sample", "--run", run, "--n", 6, "--out", out, "--steps", 4, "--device", "cpu", "--quiet", *extra])
    return np.load(out)


def test_digits_train_writes_the_run(digits_run: Path) -> None:
    cfg = json.loads((digits_run / "config.json").read_text())
    assert cfg["method"]["name"] == "ambient" and cfg["method"]["sigma_n"] == 0.5
    assert cfg["data"]["spec"] == "builtin:digits" and cfg["data"]["subset"] == 40 and cfg["data"]["resolution"] == 8
    assert cfg["network"]["channels"] == [8, 16] and cfg["network"]["layers_per_block"] == 1
    assert cfg["optim"]["steps"] == 4 and cfg["optim"]["batch"] == 8 and cfg["seed"] == 0
    sub = json.loads((digits_run / "subset.json").read_text())
    train, held = sub["train_indices"], sub["heldout_indices"]
    assert sub["n_source"] == 1797 and len(train) == 40 and len(held) == 1757
    assert sorted(train + held) == list(range(1797)) and train == sorted(train)
    assert len(sub["content_hash"]) == 64
    records = [json.loads(line) for line in (digits_run / "log.jsonl").read_text().splitlines()]
    assert records and records[-1]["step"] == 4 and np.isfinite(records[-1]["loss"])
    assert 0 <= records[-1]["frac_high"] <= 1
    assert (digits_run / "done.json").is_file() and (digits_run / "corruption.safetensors").is_file()
    assert (digits_run / "checkpoints" / "LATEST").read_text().strip() == "step-00000004"


def test_digits_sample_is_reproducible(digits_run: Path, tmp_path: Path) -> None:
    a = _sample(digits_run, tmp_path / "x.npz")
    assert a["images"].shape == (6, 8, 8, 1) and a["images"].dtype == np.uint8
    assert "labels" not in a.files
    grid = tmp_path / "x_grid.png"
    assert grid.is_file()
    assert Image.open(grid).size == (3 * 64 + 4, 2 * 64 + 3)  # 3 x 2 tiles of 8x8 upscaled 8 times, 1-pixel gaps
    b = _sample(digits_run, tmp_path / "y.npz")
    np.testing.assert_array_equal(a["images"], b["images"])
    c = _sample(digits_run, tmp_path / "z.npz", "--seed", 1)
    assert not np.array_equal(a["images"], c["images"])
    # training again with the same command gives the same model, hence the same samples
    again = tmp_path / "again"
    run_cli(["train", *DIGITS, "--out", again])
    d = _sample(again, tmp_path / "w.npz")
    np.testing.assert_array_equal(a["images"], d["images"])


def test_conditional_digits_sample_a_class(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "cond"
    run_cli(["train", *DIGITS, "--cond", "--out", run])
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["data"]["cond"] is True and cfg["network"]["num_classes"] == 10
    three = _sample(run, tmp_path / "three.npz", "--class", 3)
    assert three["images"].shape == (6, 8, 8, 1)
    assert three["labels"].tolist() == [3] * 6
    five = _sample(run, tmp_path / "five.npz", "--class", 5)
    assert five["labels"].tolist() == [5] * 6
    assert not np.array_equal(three["images"], five["images"])  # the label reaches the network
    mixed = _sample(run, tmp_path / "mixed.npz")  # no --class: classes cycle 0, 1, 2, ...
    assert mixed["labels"].tolist() == [0, 1, 2, 3, 4, 5]
    np.testing.assert_array_equal(mixed["images"][3], three["images"][3])  # sample 3 of class 3 both times
    err = cli_error(["sample", "--run", run, "--n", 2, "--out", tmp_path / "bad.npz", "--class", 10,
                     "--device", "cpu", "--quiet"], capsys)
    assert "--class" in err and not (tmp_path / "bad.npz").exists()
