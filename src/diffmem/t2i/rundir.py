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
is loaded with `torch.load(weights_only=True)`. Checkpoints are written, pruned and read back by the
pixel runs' code (`diffmem.train.checkpoint.save_checkpoint`, `diffmem.train.stack`): under a temporary
name, renamed when complete.
"""

from __future__ import annotations

from pathlib import Path

from diffmem.errors import DiffmemError
from diffmem.train.checkpoint import META, STATE, latest_checkpoint, load_state, load_weights
from diffmem.train.rundir import CHECKPOINTS, CONFIG, DONE, LOG, log_records, read_json, trim_log, write_json_atomic

__all__ = ["CONFIG", "INFO", "LATENTS", "LOG", "DONE", "UNET", "EMA", "STATE", "META", "latest_checkpoint",
           "load_state", "load_weights", "read_json", "write_json_atomic", "check_run", "trim_log", "log_records", "CHECKPOINTS"]

INFO = "info.json"
LATENTS = "latents.safetensors"
UNET = "unet.safetensors"
EMA = "ema.safetensors"


def check_run(run_dir: str | Path) -> Path:
    """The run directory as a Path, or a DiffmemError if it is not a t2i run."""
    run = Path(run_dir)
    if not (run / CONFIG).is_file() or not (run / INFO).is_file():
        raise DiffmemError(f"{run} is not a diffmem t2i run (no {CONFIG} / {INFO}); pass the --out of "
                           "`diffmem t2i train`")
    return run

