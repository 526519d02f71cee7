"""`t2i train --guard`: in-training checks of a Stable Diffusion fine-tune (the tiny model), the same checks as
`t2i release` afterwards, the release kept on disk, the stopping rule, and a resume to the same release."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diffmem.cli import main

try:
    from t2i_fixtures import captioned, sscd_like, tiny_sd, write_captioned  # noqa: F401 (pytest fixtures)
except ImportError:  # tests/ collected as a package
    from tests.t2i_fixtures import captioned, sscd_like, tiny_sd, write_captioned  # noqa: F401


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> str:
    main(args)
    return capsys.readouterr().out


def _train(tiny_sd: str, data: str, out: Path, *extra: str) -> list[str]:
    return ["t2i", "train", "--pretrained", tiny_sd, "--data", data, "--out", str(out), "--steps", "3", "--batch", "2",
            "--lr", "1e-2", "--checkpoint-every", "1", "--log-every", "1", "--device", "cpu", "--quiet", *extra]


def test_guarded_training_checks_what_release_checks_afterwards(tiny_sd: str, captioned: str, sscd_like: str,
                                                                tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The guard's checks during training equal `t2i release`'s checks of the same run trained unguarded with
    every checkpoint kept (same seed, so the same weights): the same copies, p-values and FD at each step, and
    the same release and released samples. The guarded run is cut twice: after step 1's check, and between
    step 2's checkpoint and its check (its record removed), which the resume checks first. The release stays
    on disk besides the newest checkpoint."""
    from diffmem.data.datasets import load_images
    from diffmem.errors import DiffmemError
    from diffmem.release import read_release
    from diffmem.t2i.config import T2IConfig
    from diffmem.t2i.guard import T2IGuard
    from diffmem.t2i.sample import T2ISampleOptions
    from diffmem.t2i.train import train_t2i

    held = write_captioned(tmp_path / "held", n=810, seed=5)
    cfg = T2IConfig(pretrained=tiny_sd, data=captioned, steps=3, batch=2, lr=1e-2, checkpoint_every=1, log_every=1)
    guarded, plain, lines = tmp_path / "guarded", tmp_path / "plain", []

    def guard() -> T2IGuard:
        return T2IGuard(str(held), features="pixels", fd_features=f"torchscript:{sscd_like}",
                        opts=T2ISampleOptions(steps=2), echo=lines.append)

    for stop_after in (1, 2, None):
        train_t2i(cfg, guarded, progress=False, cpu=True, keep_checkpoints=1, guard=guard(), stop_after=stop_after)
        if stop_after == 1:  # a resume must check as before
            with pytest.raises(DiffmemError, match="guarded with other settings \\(fd_features: 'torchscript"):
                train_t2i(cfg, guarded, progress=False, cpu=True, keep_checkpoints=1, stop_after=2,
                          guard=T2IGuard(str(held), features="pixels", opts=T2ISampleOptions(steps=2)))
        if stop_after == 2:  # as if killed after step 2's checkpoint, before its check
            state = json.loads((guarded / "release" / "guard.json").read_text())
            state["records"] = [r for r in state["records"] if r["step"] < 2]
            (guarded / "release" / "guard.json").write_text(json.dumps(state))
    train_t2i(cfg, plain, progress=False, cpu=True, keep_checkpoints=0)
    run_cli(["t2i", "release", "--run", str(plain), "--heldout", str(held), "--features", "pixels", "--fd-features",
             f"torchscript:{sscd_like}", "--steps", "2", "--device", "cpu"], capsys)
    during, after = read_release(guarded), read_release(plain)
    assert [c["step"] for c in during["checks"]] == [1, 2, 3] and during["finished"] and during["stopped"] is None
    assert during["checks"] == after["checks"] and during["released"]["step"] == after["released"]["step"]
    assert during["released"]["safety"] == after["released"]["safety"]
    assert during["trained"]["precision"] == after["trained"]["precision"] == ["fp32"]
    reread = guard()  # the cost of the three sessions, from the run's files
    reread.run, reread.records = guarded, json.loads((guarded / "release" / "guard.json").read_text())["records"]
    spent, trained = reread.cost()
    assert len(reread.records) == 3 and all(r["monitor"]["seconds"] > 0 for r in reread.records)
    assert spent == pytest.approx(sum(r["monitor"]["seconds"] for r in reread.records)) and trained > 0
    assert [line.split(":")[0] for line in lines] == ["[guard] step 1", "[guard] step 2", "[guard] step 2",
                                                      "[guard] step 3"]
    assert np.array_equal(load_images(str(guarded / "release" / "released.npz")).images,
                          load_images(str(plain / "release" / "released.npz")).images)
    kept = sorted(int(p.name[5:]) for p in (guarded / "checkpoints").glob("step-*"))
    assert kept == sorted({3, during["released"]["step"]})  # the newest one, and the release


def _unsafe_from(step_unsafe: int):
    """A stand-in for T2IChecker whose checks copy nothing before `step_unsafe` and every sample from it on
    (real safety tests of those counts against one calibration); it records the steps it was asked."""
    from diffmem.safety import calibrate, safety_test

    cal = calibrate(np.linspace(0.0, 1.0, 1000))

    class Checker:
        asked: list[int] = []

        def __init__(self, run, heldout_dir, **kw) -> None:
            self.settings = {"features": "fake", "heldout": str(heldout_dir)}

        def trained(self) -> dict:
            return {"precision": ["fp32"], "diffmem": "test"}

        def check(self, step: int):
            Checker.asked.append(step)
            copies = 100 if step >= step_unsafe else 0
            return ({"features": "fake", "n_samples": 100, "calibration": cal.to_dict(),
                     "safety": safety_test(copies, 100, cal).to_dict(), "quality": {"metric": "FD", "value": 1.0 / step}},
                    np.zeros((2, 32, 32, 3), np.uint8))

    return Checker


def test_the_guard_stops_once_copying_sets_in_and_a_resume_stays_stopped(
        tiny_sd: str, captioned: str, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    """Checks unsafe from step 2 with patience 2: training stops after step 3's check, releases step 1 (kept on
    disk although --keep-checkpoints 1), says why in release.json and done.json, and a rerun refuses to train a
    finished run. A guard flag without --guard, and --guard without --heldout, are refused by name."""
    import diffmem.t2i.release as t2i_release
    from diffmem.release import read_release

    held = write_captioned(tmp_path / "held", n=810, seed=5)
    for extra, needle in ((["--guard-patience", "1"], "--guard-patience only apply with --guard"),
                          (["--guard"], "--guard needs --heldout DIR")):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(_train(tiny_sd, captioned, tmp_path / "never", *extra), capsys)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "never").exists()
    checker = _unsafe_from(2)
    monkeypatch.setattr(t2i_release, "T2IChecker", checker)
    run = tmp_path / "run"
    args = [a for a in _train(tiny_sd, captioned, run, "--guard", "--heldout", str(held), "--keep-checkpoints", "1")
            if a != "--quiet"]  # a line per check
    args[args.index("--steps") + 1] = "6"
    main(args)
    out, err = capsys.readouterr()
    assert "[guard] step 3: 100.0% copies, NOT safe" in out and "(release so far: step 1)" in out
    assert "the guard's checks took " in out
    rec = read_release(run)
    assert checker.asked == [1, 2, 3] and rec["released"]["step"] == 1
    assert rec["stopped"] == "the last 2 checks (steps 2, 3) copied more than unseen images score"
    assert json.loads((run / "done.json").read_text())["stopped"] == rec["stopped"]
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-00000001", "step-00000003"]
    assert "Released: baseline at step 1" in out and "warning: the release page was not written" in err  # fake features
    with pytest.raises(SystemExit) as exit_info:
        run_cli(args, capsys)
    assert exit_info.value.code == 2 and "already finished" in capsys.readouterr().err
    run_cli(_train(tiny_sd, captioned, run, "--overwrite", "--steps", "1"), capsys)  # unguarded: no release
    assert not (run / "release.json").exists() and not (run / "release").exists()
