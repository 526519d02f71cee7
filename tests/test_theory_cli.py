"""`diffmem theory ...` writes its figure and numbers; bad input exits with code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffmem.cli import main


def _run(args: list[str]) -> None:
    main(["theory", *args])


def _exit_code(args: list[str]) -> int:
    with pytest.raises(SystemExit) as err:
        _run(args)
    return int(err.value.code)


def _outputs(out: Path, name: str) -> dict:
    png, js = out / f"{name}.png", out / f"{name}.json"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return json.loads(js.read_text())


def test_closed_form_writes_png_and_json(npz_data: str, tmp_path: Path) -> None:
    out = tmp_path / "cf"
    _run(["closed-form", "--data", npz_data, "--samples", "3", "--steps", "8", "--sigma-n", "0.5", "--out", str(out)])
    res = _outputs(out, "closed_form")
    assert res["baseline"]["distance_to_nearest_train"]["max"] < 1e-3
    assert res["ambient_at_sigma_n"]["distance_to_nearest_copy"]["max"] < 1e-3
    assert res["algorithm1"]["fraction_on_some_training_image"] == 1.0
    assert res["seed"] == 0 and res["copies_seed"] == 0 and res["data"] == npz_data
    # refuses to overwrite, then does with --overwrite
    args = ["closed-form", "--data", npz_data, "--samples", "2", "--steps", "4", "--out", str(out)]
    assert _exit_code(args) == 2
    _run([*args, "--overwrite"])


def test_commitment_writes_png_and_json(npz_data: str, tmp_path: Path) -> None:
    out = tmp_path / "c"
    _run(["commitment", "--data", npz_data, "--subset", "8", "--subset-seed", "1",
          "--sigmas", "0.05,0.2,1,4,16,64,256", "--out", str(out)])
    res = _outputs(out, "commitment")
    assert res["curve"]["n_train"] == 8 and res["curve"]["n_heldout"] == 4 and res["subset_seed"] == 1
    assert res["seed"] == 0 and res["suggestion"] is not None and res["sweep_grid"]
    assert "empirical heuristic" in res["suggestion"]["rule"] and "argmax_is_source_at" in res["suggestion"]


def test_leakage_writes_png_and_json(tmp_path: Path) -> None:
    _run(["leakage", "--m-max", "8", "--snr", "1", "--mc-draws", "300", "--mc-reps", "2", "--mc-m-max", "2",
          "--out", str(tmp_path / "l")])
    res = _outputs(tmp_path / "l", "leakage")
    assert res["seed"] == 0 and len(res["monte_carlo"]) == 4


def test_mixtures_writes_png_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _run(["mixtures", "--components", "40", "--train", "40", "--out", str(tmp_path / "m")])
    res = _outputs(tmp_path / "m", "mixtures")
    assert res["seed"] == 0 and len(res["tv"]["rows"]) == 3
    rows = res["subpopulations"]["rows"]
    assert rows[-1]["components"] == 1 and rows[-1]["tau1"] is None  # 0/0 is null in the JSON, not 0
    out = capsys.readouterr().out
    assert "merged when TV <= 0.5" in out and "'merged' is TV <= 0.1" in out and "tau1 (not what falls)" in out


def test_bad_input_exits_with_code_2(tmp_path: Path) -> None:
    out = str(tmp_path / "x")
    assert _exit_code(["commitment", "--data", str(tmp_path / "missing"), "--out", out]) == 2
    assert _exit_code(["commitment", "--sigmas", "0.1,abc", "--out", out]) == 2
    assert _exit_code(["leakage", "--snr", "-1", "--out", out]) == 2
    assert _exit_code(["mixtures", "--eps", "2", "--out", out]) == 2
    assert _exit_code(["closed-form", "--sigma-n", "0", "--out", out]) == 2
    assert not list((tmp_path).glob("x/*"))  # nothing half-written
