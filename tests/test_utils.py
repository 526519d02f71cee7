"""diffmem.utils: atomic writes and flag parsing, the one home of each (docs/architecture.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffmem.errors import DiffmemError
from diffmem.utils.atomic import atomic_path, save_atomic, write_json_atomic, write_text_atomic
from diffmem.utils.flags import device_name, float_list, int_list, str_list


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = write_text_atomic(tmp_path / "a.json", "old\n")

    def half_then_crash(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        save_atomic(path, half_then_crash)
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_temporary_keeps_the_suffix_or_is_the_fixed_name(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "plot.png") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".plot.png.") and tmp.suffix == ".png"
        tmp.write_bytes(b"x")
    with atomic_path(tmp_path / "config.json", fixed=True) as tmp:
        assert tmp == tmp_path / "config.json.tmp"  # a resumed run recognises its own leftover by this name
        tmp.write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "plot.png"]


def test_json_is_indented_with_a_final_newline(tmp_path: Path) -> None:
    path = write_json_atomic(tmp_path / "sub" / "r.json", {"a": 1, "b": 0.5})
    assert path.read_text() == json.dumps({"a": 1, "b": 0.5}, indent=2) + "\n"


def test_a_permission_error_names_the_file(tmp_path: Path) -> None:
    def denied(tmp: Path) -> None:
        raise PermissionError(13, "Permission denied")

    with pytest.raises(DiffmemError, match="r.json.*Permission denied"):
        save_atomic(tmp_path / "r.json", denied)
    assert list(tmp_path.iterdir()) == []


def test_list_flags_name_the_flag() -> None:
    assert int_list("32, 64,64", "--channels") == (32, 64, 64)
    assert int_list(None, "--channels") is None and int_list("", "--channels") == ()
    assert float_list("0.2,1", "--sigma-n") == (0.2, 1.0)
    assert str_list(" edm, ambient ", "--methods", ("edm", "ambient")) == ("edm", "ambient")
    with pytest.raises(DiffmemError, match=r"--channels takes comma-separated integers, e.g. 32,64; got '3,x'"):
        int_list("3,x", "--channels", example="32,64")
    with pytest.raises(DiffmemError, match="--seeds is empty; give comma-separated integers"):
        int_list(",", "--seeds", allow_empty=False)
    with pytest.raises(DiffmemError, match="--sigma-n takes comma-separated numbers"):
        float_list("0.5,abc", "--sigma-n")
    with pytest.raises(DiffmemError, match="--methods: unknown method 'edn'; choose from edm, ambient"):
        str_list("edn", "--methods", ("edm", "ambient"), what="method")
    with pytest.raises(DiffmemError, match="--features is empty; give at least one feature space, e.g. pixels"):
        str_list(" ,", "--features", what="feature space", example="pixels")


def test_device_flag() -> None:
    assert device_name("cpu") == "cpu"
    assert device_name("auto") in ("cpu", "cuda")
    with pytest.raises(DiffmemError, match="--device 'bogus' is not a device"):
        device_name("bogus")
