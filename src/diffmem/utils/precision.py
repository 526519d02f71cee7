"""The arithmetic of a network's forward pass: float32, or bfloat16 autocast (weights stay float32).

Shared by training (`diffmem train --precision`) and sampling (`diffmem sample --precision`, the guard's
checks: `--guard-precision`, `frontier --check-precision`); importable without torch, so the CLI can list
the choices without loading it.
"""

from __future__ import annotations

import contextlib
from typing import Any

from diffmem.errors import DiffmemError

__all__ = ["PRECISIONS", "check_precision", "autocast"]

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str, flag: str = "--precision") -> None:
    """Refuse anything but fp32 or bf16, naming the flag."""
    if precision not in PRECISIONS:
        raise DiffmemError(f"{flag} must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def autocast(device: Any, precision: str) -> contextlib.AbstractContextManager:
    """A context for the forward pass: nothing for fp32, `torch.autocast` to bfloat16 for bf16 (matrix
    products and convolutions in bfloat16, reductions and everything else in float32)."""
    check_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(getattr(device, "type", str(device).split(":")[0]), dtype=torch.bfloat16)
