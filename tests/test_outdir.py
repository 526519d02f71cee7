"""diffmem.utils.outdir.check_out_folder: the one wording of the --out refusals (runs, sweeps, frontiers, audits)."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffmem.errors import DiffmemError
from diffmem.utils.outdir import ABSENT, EMPTY, OWN, check_out_folder


def _is_run(p: Path) -> bool:
    return (p / "config.json").is_file()


def test_absent_empty_own(tmp_path: Path) -> None:
    assert check_out_folder(tmp_path / "new", kind="diffmem run", is_own=_is_run) == ABSENT
    (tmp_path / "empty").mkdir()
    assert check_out_folder(tmp_path / "empty", kind="diffmem run", is_own=_is_run) == EMPTY
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    assert check_out_folder(tmp_path / "run", kind="diffmem run", is_own=_is_run) == OWN
    assert check_out_folder(tmp_path / "run", kind="folder", is_own=None) == OWN  # the caller decides
    (tmp_path / "hidden").mkdir()
    (tmp_path / "hidden" / ".DS_Store").write_text("")
    assert check_out_folder(tmp_path / "hidden", kind="diffmem audit", ignore_hidden=True, is_own=_is_run) == EMPTY
    with pytest.raises(DiffmemError, match=r"holds other files \(.DS_Store\)"):
        check_out_folder(tmp_path / "hidden", kind="diffmem run", is_own=_is_run)


def test_refusals_are_one_line_naming_the_flag_the_folder_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(DiffmemError) as err:
        check_out_folder(tmp_path / "a-file", kind="sweep", is_own=_is_run)
    assert str(err.value) == f"--out {tmp_path / 'a-file'} is a file, not a folder; choose another --out"
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("e.png", "d.png", "c.png", "b.png", "config.json.tmp", "report.json"):
        (photos / name).write_text("x")
    with pytest.raises(DiffmemError) as err:
        check_out_folder(photos, kind="diffmem run", is_own=_is_run, flag="--run")
    assert str(err.value) == (f"--run {photos} holds other files (b.png, c.png, config.json.tmp, ...) and is not a "
                              "diffmem run; choose another --run (a new or empty folder, or an earlier diffmem run)")
    with pytest.raises(DiffmemError, match=r"holds other files \(b.png, c.png, d.png, \.\.\.\)"):
        check_out_folder(photos, kind="diffmem audit", is_own=_is_run, known={"report.json", "config.json.tmp"})
    with pytest.raises(DiffmemError, match=rf"^'{photos / 'e.png'}' is a file, not a folder; choose another folder$"):
        check_out_folder(photos / "e.png", kind="folder of images", flag=None)
