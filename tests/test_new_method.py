"""A new method with its own setting and its own fixed corruption is one class and its registry line.

`Blur` trains EDM's loss on fixed Gaussian-blurred copies of the training images, drawn once per run; its
setting `blur_sigma` is no field of any other method and no flag. With nothing else changed it trains (and
resumes from its saved corruption), samples, sweeps over `blur_sigma` and reports.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import RecordingBackbone, tiny_config, write_npz
from diffmem.diffusion.losses import Batch, LossOutput, edm_loss
from diffmem.diffusion.methods import METHOD_CLASSES, Method
from diffmem.diffusion.precond import EDMPrecond
from diffmem.errors import DiffmemError
from diffmem.evaluate.options import EvalOptions


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [N, C, H, W] images, reflecting at the borders."""
    r = max(1, math.ceil(2 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    x = torch.nn.functional.pad(x, (r, r, r, r), mode="reflect")
    x = torch.nn.functional.conv2d(x, k.reshape(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return torch.nn.functional.conv2d(x, k.reshape(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


@dataclass(frozen=True)
class Blur(Method):
    """EDM's loss on a fixed blurred copy of each training image (blurred once per run, like Algorithm 1's y)."""

    name: ClassVar[str] = "blur"
    param_field: ClassVar[str | None] = "blur_sigma"
    param_tag: ClassVar[str] = "b"
    blur_sigma: float = 1.0  # the blur's standard deviation in pixels

    def __post_init__(self) -> None:
        if not self.blur_sigma > 0:
            raise DiffmemError(f"--method blur needs a positive blur_sigma, got {self.blur_sigma}")

    def prepare(self, x0: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
        return {"blurred": gaussian_blur(x0, self.blur_sigma)}

    def loss(self, net: EDMPrecond, batch: Batch, sigma: torch.Tensor) -> LossOutput:
        return edm_loss(net, batch.fixed["blurred"], sigma, batch.noise, batch.labels)


@pytest.fixture
def blur_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(METHOD_CLASSES, Blur.name, Blur)  # the registry line


def test_the_blur_method_trains_resumes_and_samples(blur_registered: None, tmp_path: Path) -> None:
    from diffmem.generate import SampleOptions, generate
    from diffmem.train.checkpoint import load_denoiser
    from diffmem.train.loop import load_train_data, train
    from diffmem.train.rundir import CONFIG, CORRUPTION

    data = str(write_npz(tmp_path / "data.npz"))
    cfg = tiny_config(data, name="blur", blur_sigma=1.5, steps=4)
    run = tmp_path / "run"
    train(cfg, run, progress=False, stop_after=2)
    assert json.loads((run / CONFIG).read_text())["method"] == {"name": "blur", "blur_sigma": 1.5}
    blurred = load_file(str(run / CORRUPTION))["blurred"]  # the method's own corruption, under its own key
    (tmp_path / "scratch").mkdir()
    x0 = load_train_data(cfg, tmp_path / "scratch", resuming=False).x0
    torch.testing.assert_close(blurred, gaussian_blur(x0, 1.5))
    assert not torch.allclose(blurred, x0, atol=0.05)
    raw = (run / CORRUPTION).read_bytes()
    train(cfg, run, progress=False)  # resumes: the corruption is reloaded, not drawn again
    assert (run / CORRUPTION).read_bytes() == raw and (run / "done.json").is_file()
    net, loaded, meta = load_denoiser(run)
    assert loaded.method == cfg.method
    img = generate(net, loaded, meta, 3, seed=0, opts=SampleOptions(steps=2), progress=False)
    assert img.shape == (3, 8, 8, 1) and img.dtype == np.uint8
    with pytest.raises(DiffmemError, match="needs a positive blur_sigma"):
        train(tiny_config(data, name="blur", blur_sigma=0.0), tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


def test_the_blur_method_trains_on_its_corruption(blur_registered: None, npz_data: str, tmp_path: Path) -> None:
    """The loss sees the blurred copies, never x0: the same batch scores differently once x0 is replaced."""
    from diffmem.diffusion.methods import build_method
    from diffmem.train.loop import draw_batch, load_train_data

    cfg = tiny_config(npz_data, name="blur", blur_sigma=1.0, batch=6)
    method = build_method(cfg)
    data = load_train_data(cfg, tmp_path, resuming=False, method=method)
    batch = draw_batch(data, cfg, method, torch.Generator().manual_seed(0), torch.device("cpu"))
    net = EDMPrecond(RecordingBackbone(), sigma_data=0.5)
    before = method(net, batch).loss
    batch.x0 = torch.full_like(batch.x0, 1e3)
    torch.testing.assert_close(method(net, batch).loss, before)


def test_the_blur_method_sweeps_and_reports(blur_registered: None, tmp_path: Path) -> None:
    from diffmem.sweep.results import read_results
    from diffmem.sweep.runner import run_sweep
    from diffmem.sweep.spec import SweepConfig, sweep_points

    data = str(write_npz(tmp_path / "data.npz", n=20))
    base = tiny_config(data, steps=2, batch=4, checkpoint_every=2, log_every=1)
    sc = SweepConfig(base, methods=("edm", "blur"), values={"blur_sigma": (0.5, 1.5)}, subsets=(12,),
                     eval=EvalOptions(n_samples=8, sample_steps=2, quality_features="pixels", pictures=False))
    assert [p.name for p in sweep_points(sc)] == ["n12-edm-seed0", "n12-blur-b0.5-seed0", "n12-blur-b1.5-seed0"]
    out = tmp_path / "sweep"
    result = run_sweep(sc, out, cache_dir=tmp_path / "cache", progress=False, echo=lambda s: None)
    assert result.trained == [p.name for p in sweep_points(sc)]
    rows = read_results(out)
    assert [r.get("blur_sigma") for r in rows] == [None, 0.5, 1.5]  # a column of its own setting
    tables = (out / "results.md").read_text()
    assert "| blur (blur_sigma=0.5, lr=0.001) |" in tables and "| blur (blur_sigma=1.5, lr=0.001) |" in tables
    from diffmem.report.sweep import write_sweep_report  # as `diffmem sweep` does after the sweep

    write_sweep_report(result.rows, out, dict(result.files), result.choices)
    assert "blur (blur_sigma=1.5, lr=0.001)" in (out / "report.md").read_text()
    assert "blur" in result.table and (out / "pareto.png").is_file()
    with pytest.raises(DiffmemError, match="needs a positive blur_sigma"):
        run_sweep(SweepConfig(base, methods=("blur",), values={"blur_sigma": (-1.0,)}), tmp_path / "bad",
                  progress=False, echo=lambda s: None)
