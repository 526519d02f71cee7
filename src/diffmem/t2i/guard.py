"""Guarded fine-tuning: `t2i train --guard --heldout DIR` checks the run at every checkpoint while it trains.

docs/method.md, "The release and safe quality", as `train --guard` does for pixel runs. At each checkpoint the
checker (`diffmem.t2i.release.T2IChecker`, the one `t2i release` uses) samples the checkpoint's EMA weights for
every training caption, counts copies against the held-out p99, runs the safety test and measures quality;
then the guard

- writes RUN/release.json (`diffmem.release.release_record`) and the released and last checks' samples,
- keeps the released checkpoint on disk besides the newest ones (`protect`),
- and, by the stopping rule, stops training once the last `patience` checks were all unsafe.

Its state is its checks' records, kept in RUN/release/guard.json and cut back to the restored checkpoint on
resume, so a killed guarded run resumes to the same release.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from diffmem.errors import DiffmemError
from diffmem.t2i.sample import T2ISampleOptions

__all__ = ["T2IGuard", "GUARD_STATE"]

GUARD_STATE = "guard.json"  # RUN/release/guard.json: the settings and every check's record


class T2IGuard:
    """The t2i training loop's watch: `begin(run, step)`, then `guard(step) -> stop reason or None` after each
    checkpoint, `protect()`, and `finish(stopped)`."""

    def __init__(self, heldout_dir: str | Path, *, features: str = "dinov2", fd_features: str | None = None,
                 n_per_prompt: int = 1, opts: T2ISampleOptions = T2ISampleOptions(), seed: int = 0,
                 patience: int = 2, device: Any = "cpu", echo: Callable[[str], None] | None = None) -> None:
        from diffmem.t2i.release import heldout_images

        if patience < 0:
            raise DiffmemError(f"--guard-patience must be 0 (never stop) or a number of checks, got {patience}")
        heldout_images(heldout_dir)  # too few held-out images are refused before the run is written
        self.kw = dict(features=features, fd_features=fd_features, n_per_prompt=n_per_prompt, opts=opts, seed=seed,
                       device=device)
        self.heldout_dir, self.patience, self.echo = heldout_dir, patience, echo
        self.checker: Any = None
        self.records: list[dict[str, Any]] = []  # {"step", "monitor"} per check, in step order

    @property
    def checks(self) -> list[dict[str, Any]]:
        from diffmem.release import checks_of

        return checks_of(self.records)

    def begin(self, run: Path, step: int) -> str | None:
        """Build the checker for the run (its config is written by now) and take the checks of an earlier
        session up to the restored `step`, checking that step if its check was cut off; a run guarded with other
        settings is refused. Returns the stop reason those checks give (a stopped run resumed stays stopped)."""
        from diffmem.release import RELEASE_DIR, checks_of, choose_release, stop_reason
        from diffmem.t2i.release import T2IChecker, keep_samples
        from diffmem.train.rundir import config_diff, read_json

        self.run = run
        self.checker = T2IChecker(run, self.heldout_dir, **self.kw)
        path = run / RELEASE_DIR / GUARD_STATE
        if step > 0 and path.is_file():
            before = read_json(path)
            diff = config_diff(before.get("settings") or {}, self.settings())
            if diff:
                raise DiffmemError(f"{run} was guarded with other settings ({'; '.join(diff[:4])}); resume it with "
                                   "the same --guard-* flags and --heldout, or start another --out")
            was = choose_release(checks_of(before["records"]))
            self.records = [r for r in before["records"] if r["step"] <= step]
            best = choose_release(self.checks)
            if best is not None and best["step"] != was["step"]:  # the release was a dropped check: draw the
                keep_samples(run, self.checker.check(int(best["step"]))[1], last=False, released=True)  # new one's
            self._write(stopped=None, finished=False)
        if step > 0 and not any(r["step"] == step for r in self.records):  # killed between its save and its check
            return self(step)
        return stop_reason(self.checks, self.patience)

    def settings(self) -> dict[str, Any]:
        return {**self.checker.settings, "patience": self.patience}

    def cost(self) -> tuple[float, float | None]:
        """(seconds spent in checks, seconds spent training), as `diffmem.monitor.cost_of` counts them."""
        from diffmem.monitor import cost_of
        from diffmem.train.rundir import LOG, log_records

        return cost_of(log_records(self.run / LOG) + self.records)

    def __call__(self, step: int) -> str | None:
        """Check the checkpoint just saved at `step`; returns the stop reason, or None to go on."""
        from diffmem.release import check_line, choose_release, stop_reason
        from diffmem.t2i.release import keep_samples

        rec, images = self.checker.check(step)
        self.records = [r for r in self.records if r["step"] < step] + [{"step": step, "monitor": rec}]
        best = choose_release(self.checks)
        keep_samples(self.run, images, last=True, released=best is not None and best["step"] == step)
        self._write(stopped=None, finished=False)
        if self.echo is not None:
            self.echo(f"[guard] {check_line(step, rec, best['step'] if best else None)}")
        return stop_reason(self.checks, self.patience)

    def protect(self) -> frozenset[int]:
        """The released checkpoint, kept on disk besides the newest ones."""
        from diffmem.release import choose_release

        best = choose_release(self.checks)
        return frozenset() if best is None else frozenset({int(best["step"])})

    def finish(self, stopped: str | None) -> dict[str, Any]:
        """The final certificate: the run ended (at its last step, or `stopped` by the rule)."""
        return self._write(stopped=stopped, finished=True)

    def _write(self, stopped: str | None, finished: bool) -> dict[str, Any]:
        from diffmem.release import RELEASE_DIR, RELEASE_JSON, release_record
        from diffmem.train.rundir import write_json_atomic

        (self.run / RELEASE_DIR).mkdir(exist_ok=True)
        write_json_atomic(self.run / RELEASE_DIR / GUARD_STATE, {"settings": self.settings(), "records": self.records})
        record = release_record(self.checks, self.settings(), stopped=stopped, finished=finished)
        write_json_atomic(self.run / RELEASE_JSON, {**record, "trained": self.checker.trained(), "time": time.time()})
        return record
