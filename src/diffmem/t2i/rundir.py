"""The layout of a text-to-image run directory, checkpoints included.

```
RUN/
  config.json             T2IConfig (resolved: the resolution is filled in), written once
  info.json               prediction type, timesteps, t_n as an EDM sigma, data hash, image count, seeds
  latents.safetensors     "latents" [N, 4, h, w]: each image encoded once (VAE mean, scaled);
                          "noisy" [N, 4, h, w] (ambient): the one fixed noisy copy x_tn of each latent
  log.jsonl               one JSON object per logged step
  checkpoints/LATEST      name of the newest complete checkpoint
  checkpoints/step-00001000/{unet.safetensors, ema.safetensors, state.pt, meta.json}
  done.json               written when training finished
```
`unet.safetensors` / `ema.safetensors` hold the TRAINED parameters only (the whole UNet, or the LoRA
adapters); the rest comes from `--pretrained`. `state.pt` (optimizer, run generator, step, loss-scaler)
is loaded with `torch.load(weights_only=True)`. Checkpoints are written under a temporary name and
renamed when complete.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from diffmem.errors import DiffmemError
from diffmem.train.checkpoint import latest_checkpoint, load_state, load_weights
from diffmem.train.rundir import read_json, write_json_atomic
from diffmem.utils.atomic import write_text_atomic

__all__ = ["CONFIG", "INFO", "LATENTS", "LOG", "DONE", "UNET", "EMA", "STATE", "META", "save_checkpoint",
           "latest_checkpoint", "load_state", "load_weights", "read_json", "write_json_atomic", "check_run"]

CONFIG = "config.json"
INFO = "info.json"
LATENTS = "latents.safetensors"
LOG = "log.jsonl"
DONE = "done.json"
CHECKPOINTS = "checkpoints"
UNET = "unet.safetensors"
EMA = "ema.safetensors"
STATE = "state.pt"
META = "meta.json"
KEEP = 2  # complete checkpoints kept on disk


def check_run(run_dir: str | Path) -> Path:
    """The run directory as a Path, or a DiffmemError if it is not a t2i run."""
    run = Path(run_dir)
    if not (run / CONFIG).is_file() or not (run / INFO).is_file():
        raise DiffmemError(f"{run} is not a diffmem t2i run (no {CONFIG} / {INFO}); pass the --out of "
                           "`diffmem t2i train`")
    return run


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def save_checkpoint(run_dir: Path, step: int, unet: dict[str, torch.Tensor], ema: dict[str, torch.Tensor],
                    state: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write checkpoint `step` atomically (temp folder + rename), point LATEST at it, keep the newest KEEP."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    final, tmp = root / name, root / (name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(_cpu(unet), str(tmp / UNET))
    save_file(_cpu(ema), str(tmp / EMA))
    torch.save(state, tmp / STATE)
    (tmp / META).write_text(json.dumps({"step": step, **meta}, indent=2) + "\n")
    for f in tmp.iterdir():  # durable before the rename publishes it
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    write_text_atomic(root / "LATEST", name + "\n", fixed=True)
    complete = sorted(p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))
    for old in complete[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final
