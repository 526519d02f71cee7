"""Shared fixtures for the core tests: tiny configurations, tiny data, a recording backbone."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import torch
from torch import nn

from diffmem.config import DataConfig, NetworkConfig, OptimConfig, TrainConfig
from diffmem.diffusion.methods import method_config

TINY_NET = NetworkConfig("test", (8, 16), 1, (), 0.0, 0)


def tiny_config(spec: str, **overrides: Any) -> TrainConfig:
    """A TrainConfig that trains in well under a second on CPU: 8x8 images, a 2-level 8/16-channel UNet.

    `overrides` may name any field of TrainConfig or of its parts (data, network, optim); `name` and any other
    key are the method's (its section takes the settings its class declares, the others their defaults),
    e.g. `tiny_config(spec, name="ambient", sigma_n=0.5, steps=6)`.
    """
    parts: dict[str, dict[str, Any]] = {"data": {}, "method": {}, "network": {}, "optim": {}, "top": {}}
    owners = {"data": DataConfig, "network": NetworkConfig, "optim": OptimConfig, "top": TrainConfig}
    for key, value in overrides.items():
        for part, cls in owners.items():
            if key in {f.name for f in dataclasses.fields(cls)} and key != "method":
                parts[part][key] = value
                break
        else:
            parts["method"][key] = value
    data = DataConfig(**{"spec": spec, "resolution": 8, **parts["data"]})
    method = method_config(parts["method"].pop("name", "edm"), **parts["method"])
    network = dataclasses.replace(TINY_NET, **parts["network"])
    optim = OptimConfig(**{"steps": 4, "batch": 4, "lr": 1e-3, "ema_decay": 0.9, **parts["optim"]})
    top = {"checkpoint_every": 2, "log_every": 1, **parts["top"]}
    return TrainConfig(data=data, method=method, network=network, optim=optim, **top)


def write_npz(path: Path, n: int = 12, res: int = 8, channels: int = 1, seed: int = 0,
              labels: bool = True) -> Path:
    """A small .npz data set of random uint8 images (all distinct) with labels 0..2."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, res, res, channels), dtype=np.uint8)
    arrays: dict[str, np.ndarray] = {"images": images}
    if labels:
        arrays["labels"] = (np.arange(n) % 3).astype(np.int64)
    np.savez(path, **arrays)
    return path


@pytest.fixture
def npz_data(tmp_path: Path) -> str:
    """Path (as a string) of a 12-image 8x8 gray .npz with labels."""
    return str(write_npz(tmp_path / "data.npz"))


@pytest.fixture
def make_config(npz_data: str) -> Callable[..., TrainConfig]:
    """Factory: `make_config(**overrides)` -> tiny TrainConfig on the `npz_data` set."""
    return lambda **overrides: tiny_config(npz_data, **overrides)


class RecordingBackbone(nn.Module):
    """A backbone F(x_in, c_noise) that stores every input it receives.

    It returns a smooth function of its inputs (with one trainable scale) so losses and gradients are
    not trivial; `inputs` and `c_noise` hold detached copies of what it was called with.
    """

    def __init__(self, out_channels: int | None = None) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.scale = nn.Parameter(torch.tensor(0.7))
        self.inputs: list[torch.Tensor] = []
        self.c_noise: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, class_labels: torch.Tensor | None = None):
        self.inputs.append(x_in.detach().clone())
        self.c_noise.append(c_noise.detach().clone())
        x = x_in if self.out_channels is None else x_in[:, : self.out_channels]
        out = self.scale * torch.tanh(x) + 0.1 * c_noise.reshape(-1, 1, 1, 1)
        out.retain_grad()
        self.outputs.append(out)
        return out


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one CPU thread (tiny tensors; on a shared 2-core machine more threads only spin)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run `diffmem ARGS` in-process: (exit code, stdout, stderr)."""
    from diffmem.cli import main

    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Every test runs torch on one CPU thread: the tensors are tiny, and on a shared 2-core machine
    extra threads only wait for each other."""
    with single_thread():
        yield
