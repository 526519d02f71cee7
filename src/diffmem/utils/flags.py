"""Parse command-line values: comma-separated lists and device names. Each refusal is a DiffmemError
naming the flag and an example of what it takes."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable

from diffmem.errors import DiffmemError

__all__ = ["int_list", "float_list", "str_list", "device_name", "joined", "defaults_of", "check_jobs",
           "parse_floats"]


def _items(text: str) -> list[str]:
    return [v for v in text.split(",") if v.strip()]


def int_list(text: str | None, flag: str, *, example: str = "100,300",
             allow_empty: bool = True) -> tuple[int, ...] | None:
    """'32,64,64' -> (32, 64, 64); None stays None; an empty list is refused unless `allow_empty`."""
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in _items(text))
    except ValueError:
        raise DiffmemError(f"{flag} takes comma-separated integers, e.g. {example}; got {text!r}") from None
    if not values and not allow_empty:
        raise DiffmemError(f"{flag} is empty; give comma-separated integers, e.g. {example}")
    return values


def float_list(text: str | None, flag: str, *, example: str = "0.2,0.5,1") -> tuple[float, ...] | None:
    """'0.2,0.5,1' -> (0.2, 0.5, 1.0); None stays None; an empty list is returned empty (checked later)."""
    if text is None:
        return None
    try:
        return tuple(float(v) for v in _items(text))
    except ValueError:
        raise DiffmemError(f"{flag} takes comma-separated numbers, e.g. {example}; got {text!r}") from None


def str_list(text: str, flag: str, choices: Iterable[str] | None = None, *, what: str = "value",
             example: str | None = None) -> tuple[str, ...]:
    """'edm, ambient' -> ('edm', 'ambient'): stripped, non-empty, each one of `choices` when given."""
    values = tuple(v.strip() for v in _items(text))
    options = tuple(choices) if choices is not None else None
    hint = f"; choose from {', '.join(options)}" if options is not None else ""
    if not values:
        hint = hint or (f"; give at least one {what}, e.g. {example}" if example else "")
        raise DiffmemError(f"{flag} is empty{hint}")
    for v in values:
        if options is not None and v not in options:
            raise DiffmemError(f"{flag}: unknown {what} {v!r}{hint}")
    return values


def device_name(name: str, flag: str = "--device") -> str:
    """A device flag as a torch device name: auto -> cuda when there is one, else cpu; refuses unknown
    names and GPUs this machine does not have."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise DiffmemError(f"{flag} {name!r} is not a device; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DiffmemError(f"{flag} {name}: no CUDA device is available here; use {flag} cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DiffmemError(f"{flag} {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                               f"numbered from 0")
    return name


def joined(values: tuple[Any, ...]) -> str:
    """A default tuple as the comma-separated text of its flag: (1.0, 0.5) -> '1,0.5'."""
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def defaults_of(fn: Callable[..., Any]) -> dict[str, Any]:
    """The keyword defaults of a library function, for the click options that pass them on to it."""
    return {n: p.default for n, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


def check_jobs(jobs: int) -> None:
    """Refuse a --jobs below 1 (runs trained at once)."""
    if jobs < 1:
        raise DiffmemError(f"--jobs must be a positive integer, got {jobs}")


def parse_floats(text: str, option: str, low: float, high: float) -> tuple[float, ...]:
    """'0.85,0.9' -> (0.85, 0.9), each in [low, high]; DiffmemError naming the option otherwise."""
    values = float_list(text, option, example="0.85,0.9")
    bad = [v for v in values if not low <= v <= high]
    if bad or not values:
        raise DiffmemError(f"{option} values must lie in [{low:g}, {high:g}]; got '{text}'")
    return values
