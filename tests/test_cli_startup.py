"""Commands that evaluate or explain (audit, demo, fid, sample, trace, theory) import without torch, so
their `--help` and their refusals of bad flags answer at once; torch loads when a command runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

LIGHT = ["audit", "demo", "fid", "sample", "trace", "theory"]


@pytest.mark.parametrize("command", LIGHT)
def test_command_module_imports_without_torch(command: str) -> None:
    code = (f"import sys, diffmem.cli.{command}; "
            "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules); "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"diffmem.cli.{command} imports {out.stdout.strip()}"


def test_the_check_sees_torch_when_it_is_imported() -> None:
    """The same probe on a command that needs torch at import (train: the method registry's losses)."""
    code = "import sys, diffmem.cli.train; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True", out.stderr


def test_diffmem_warnings_print_as_one_line_and_others_keep_their_form(capsys, monkeypatch) -> None:
    """A warning from diffmem's own code reaches the CLI user as `warning: ...` on one line (Python's default
    adds the file and the source line); a warning of another library keeps Python's form."""
    import warnings

    import diffmem.cli as cli_mod
    from conftest import run_cli

    ours = str(Path(cli_mod.__file__).resolve().parents[1] / "data" / "readers.py")

    def fake_main(args=None, standalone_mode=False) -> None:
        warnings.warn_explicit("'photos' mixes gray and RGB images", UserWarning, ours, 112)
        warnings.warn_explicit("torch says so", UserWarning, "/elsewhere/torch/x.py", 7)

    handed_on = []
    monkeypatch.setattr(cli_mod.cli, "main", fake_main)
    monkeypatch.setattr(warnings, "showwarning", lambda message, category, filename, *a: handed_on.append(filename))
    code, _, err = run_cli(["audit"], capsys)
    lines = err.splitlines()
    assert code == 0 and lines == ["warning: 'photos' mixes gray and RGB images"]
    assert handed_on == ["/elsewhere/torch/x.py"]  # to Python's (here: the test's) own handler
    assert not any("readers.py" in line for line in lines)
