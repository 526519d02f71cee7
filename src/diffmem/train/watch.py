"""The training loop's side of a monitor or a guard: when to check, what to log, keep and stop on.

A *monitor* is any callable `monitor(step, ema_model) -> dict` (diffmem.monitor.CopyMonitor); its dict is
logged as `{"step": .., "monitor": {...}}`. A guard (diffmem.guard.Guard) is a monitor that may also
have `resume(records)` (its earlier checks, read back from the log on resume), `keep_steps()` (checkpoints
to keep besides the newest), `stop_reason()` (why training should stop now, or None) and
`finish(stopped)` (called once when training ends), `wants_check(step)` (whether to check at a due
step: a guard checks densely where copying sets in) and `backfilled` (records of earlier checkpoints the
last call went back to, logged after its own). The loop asks `Watch`, which asks the object for
what it has.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Callable

import torch

from diffmem.train.rundir import log_records

__all__ = ["Watch"]


class Watch:
    """Checks at every `every` steps and at the last step; nothing at all without a monitor."""

    def __init__(self, monitor: Callable[[int, torch.nn.Module], dict] | None, every: int, last: int,
                 batch: int) -> None:
        self.monitor = monitor if every > 0 else None
        self.every, self.last, self.batch = int(every), int(last), int(batch)

    def due(self, step: int) -> bool:
        if self.monitor is None or not (step % self.every == 0 or step == self.last):
            return False
        wants = getattr(self.monitor, "wants_check", None)
        return step == self.last or wants is None or bool(wants(step))

    def resume(self, log_path: Path, step: int) -> bool:
        """Hand the monitor its logged records (the log is already trimmed to `step`); True when the check
        due at the restored `step` is missing (killed between the checkpoint and its check)."""
        if self.monitor is None:
            return False
        records = [rec for rec in log_records(log_path) if "monitor" in rec]
        if hasattr(self.monitor, "resume"):
            self.monitor.resume(records)
        return step > 0 and self.due(step) and not any(r.get("step") == step for r in records)

    def check(self, step: int, ema_model: torch.nn.Module, log: IO[str]) -> None:
        assert self.monitor is not None
        ema_model.eval()
        log.write(json.dumps({"step": step, "kimg": step * self.batch / 1000,
                              "monitor": self.monitor(step, ema_model)}) + "\n")
        for rec in getattr(self.monitor, "backfilled", None) or []:  # a guard's checks of skipped checkpoints
            log.write(json.dumps({"step": rec["step"], "kimg": rec["step"] * self.batch / 1000,
                                  "monitor": rec["monitor"]}) + "\n")
        log.flush()

    def keep_steps(self) -> frozenset[int]:
        fn = getattr(self.monitor, "keep_steps", None)
        return frozenset(fn()) if fn is not None else frozenset()

    def stop_reason(self) -> str | None:
        fn = getattr(self.monitor, "stop_reason", None)
        return fn() if fn is not None else None

    def finish(self, stopped: str | None) -> None:
        fn = getattr(self.monitor, "finish", None)
        if fn is not None:
            fn(stopped)
