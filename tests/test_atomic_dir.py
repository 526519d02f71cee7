"""diffmem.utils.atomic.atomic_dir: a folder is replaced whole or not at all (checkpoints, audits, image folders)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from diffmem.errors import DiffmemError
from diffmem.utils.atomic import atomic_dir


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _old(tmp_path: Path) -> Path:
    final = tmp_path / "out"
    (final / "sub").mkdir(parents=True)
    (final / "a.txt").write_text("old a")
    (final / "sub" / "b.bin").write_bytes(bytes(range(256)))
    return final


def test_success_replaces_the_folder_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    final = _old(tmp_path)
    with atomic_dir(final) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.") and tmp.is_dir() and not any(tmp.iterdir())
        (tmp / "new.txt").write_text("new")
    assert _tree(final) == {"new.txt": b"new"}  # the old files are gone, not mixed in
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failure_in_the_block_keeps_the_old_folder_and_no_temporary(tmp_path: Path) -> None:
    final = _old(tmp_path)
    before = _tree(final)
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_dir(final) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("killed")
    assert _tree(final) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failed_swap_puts_the_old_folder_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    final = _old(tmp_path)
    before = _tree(final)
    real = os.replace
    calls = []

    def replace(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # the temporary onto the final name
            raise PermissionError(errno.EACCES, "Permission denied", str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(DiffmemError, match="Permission denied"):
        with atomic_dir(final) as tmp:
            (tmp / "new.txt").write_text("new")
    monkeypatch.undo()
    assert _tree(final) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_first_write_creates_the_folder_and_its_parents(tmp_path: Path) -> None:
    final = tmp_path / "a" / "b" / "out"
    with atomic_dir(final) as tmp:
        (tmp / "x.txt").write_text("x")
    assert _tree(final) == {"x.txt": b"x"}
    assert sorted(p.name for p in final.parent.iterdir()) == ["out"]


def test_fixed_names_before_swap_and_clean_on(tmp_path: Path) -> None:
    final = _old(tmp_path)
    leftover = tmp_path / "out.tmp"
    leftover.mkdir()
    (leftover / "junk").write_text("from a killed run")
    seen = []
    with atomic_dir(final, tmp_name="out.tmp", old_name=".out.old", fsync=True,
                    before_swap=lambda old, new: seen.append((old, new, sorted(p.name for p in new.iterdir())))) as tmp:
        assert tmp == leftover and not any(tmp.iterdir())  # the leftover of that name is cleared first
        (tmp / "n.txt").write_text("n")
    assert seen == [(final, leftover, ["n.txt"])]
    assert _tree(final) == {"n.txt": b"n"} and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(KeyboardInterrupt):  # clean_on=(Exception,): an interrupt leaves it, as a kill would
        with atomic_dir(final, tmp_name="out.tmp", clean_on=(Exception,)) as tmp:
            (tmp / "half").write_text("h")
            raise KeyboardInterrupt
    assert (leftover / "half").is_file() and _tree(final) == {"n.txt": b"n"}
    with pytest.raises(ValueError):
        with atomic_dir(final, tmp_name="out.tmp", clean_on=(Exception,)):
            raise ValueError
    assert not leftover.exists()


def test_os_errors_of_its_own_steps_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(DiffmemError, match=r"cannot use '.*file': .*; check the path"):
        with atomic_dir(tmp_path / "file"):
            pass

    def denied(self: Path, *args, **kwargs) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    with monkeypatch.context() as m:
        m.setattr(Path, "mkdir", denied)
        with pytest.raises(DiffmemError, match=r"cannot write '.*locked.*': Permission denied; choose a path"):
            with atomic_dir(tmp_path / "locked" / "out", tmp_name="out.tmp"):
                pass
    with pytest.raises(DiffmemError, match="my message"):
        with atomic_dir(tmp_path / "file", on_os_error=lambda err: DiffmemError(f"my message ({err.strerror})")):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"] and (tmp_path / "file").read_text() == "x"
    with pytest.raises(FileNotFoundError):  # what the block raises passes through unchanged
        with atomic_dir(tmp_path / "out"):
            raise FileNotFoundError(errno.ENOENT, "No such file", "input.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
