"""Commands that evaluate or explain (audit, demo, fid, sample, trace, theory) import without torch, so
their `--help` and their refusals of bad flags answer at once; torch loads when a command runs."""

from __future__ import annotations

import subprocess
import sys

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
