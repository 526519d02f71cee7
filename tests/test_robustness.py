"""Runs survive kill -9, stop cleanly on a NaN loss, and name data that changed under them."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import tiny_config
from diffmem.diffusion.methods import Baseline
from diffmem.errors import DiffmemError
from diffmem.train import loop
from diffmem.train.checkpoint import latest_checkpoint

ARGS = ["--data", "builtin:digits", "--subset", "24", "--resolution", "8", "--channels", "8,16",
        "--layers-per-block", "1", "--batch", "4", "--method", "ambient", "--sigma-n", "0.5",
        "--checkpoint-every", "2", "--log-every", "1", "--quiet", "--device", "cpu"]


def _cli(out: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "diffmem", "train", *ARGS, "--steps", str(steps), "--out", str(out)]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def test_kill_9_then_rerun_matches_uninterrupted(tmp_path: Path) -> None:
    steps = 40
    subprocess.run(_cli(tmp_path / "straight", steps), check=True, env=_env(), capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(killed, steps), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while latest_checkpoint(killed) is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(random.Random(os.getpid()).uniform(0.0, 0.3))  # a random moment, checkpoint writes included
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "done.json").exists(), "the run finished before it could be killed; raise steps"
    subprocess.run(_cli(killed, steps), check=True, env=_env(), capture_output=True)
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_file(str(tmp_path / "straight" / "checkpoints" / f"step-{steps:08d}" / name))
        b = load_file(str(killed / "checkpoints" / f"step-{steps:08d}" / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    steps_logged = [int(line.split('"step": ')[1].split(",")[0]) for line in (killed / "log.jsonl").read_text().splitlines()]
    assert steps_logged == list(range(1, steps + 1))  # every step logged exactly once


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path: Path, npz_data: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = Baseline.__call__

    def poisoned(self, net, batch):
        calls["n"] += 1
        out = real(self, net, batch)
        if calls["n"] == 3:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(Baseline, "__call__", poisoned)
    cfg = tiny_config(npz_data, steps=6, checkpoint_every=2, log_every=2)
    with pytest.raises(DiffmemError, match="at step 3"):
        loop.train(cfg, tmp_path / "run", progress=False)
    ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt is not None and ckpt.name == "step-00000002"
    weights = load_file(str(ckpt / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values())
    assert not (tmp_path / "run" / "done.json").exists()


def _folder(tmp_path: Path, n: int = 10) -> Path:
    root = tmp_path / "imgs"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(root / f"{i:02d}.png")
    return root


def test_truncated_file_after_start_is_named(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    cfg = tiny_config(str(root), steps=4)
    loop.train(cfg, tmp_path / "run", progress=False, stop_after=2)
    victim = root / "03.png"
    victim.write_bytes(victim.read_bytes()[:20])
    with pytest.raises(DiffmemError, match="03.png"):
        loop.train(cfg, tmp_path / "run", progress=False)


def test_removed_file_after_start_is_reported(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    cfg = tiny_config(str(root), steps=4)
    loop.train(cfg, tmp_path / "run", progress=False, stop_after=2)
    (root / "05.png").unlink()
    with pytest.raises(DiffmemError, match="10 images when the run started, 9 now"):
        loop.train(cfg, tmp_path / "run", progress=False)


def test_bf16_autocast_trains_close_to_fp32(tmp_path: Path, npz_data: str) -> None:
    cfg = tiny_config(npz_data, steps=2)
    loop.train(cfg, tmp_path / "fp32", progress=False)
    loop.train(cfg, tmp_path / "bf16", progress=False, precision="bf16")
    a = load_file(str(tmp_path / "fp32/checkpoints/step-00000002/model.safetensors"))
    b = load_file(str(tmp_path / "bf16/checkpoints/step-00000002/model.safetensors"))
    assert all(v.dtype == torch.float32 for v in b.values())  # weights stay fp32
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert 0 < diff < 0.05  # bf16 changes the arithmetic, not the training
    with pytest.raises(DiffmemError, match="--precision"):
        loop.train(cfg, tmp_path / "bad", progress=False, precision="fp8")
