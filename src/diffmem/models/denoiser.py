"""Build the preconditioned denoiser of a run from its configuration, and load its weights."""

from __future__ import annotations

from pathlib import Path

import torch

from diffmem.config import TrainConfig
from diffmem.diffusion.methods import method_of
from diffmem.diffusion.precond import EDMPrecond
from diffmem.errors import DiffmemError
from diffmem.models.unet import build_unet


def build_denoiser(cfg: TrainConfig, resolution: int, channels: int) -> EDMPrecond:
    """EDMPrecond around a UNet; the masking method gets the mask as one extra input channel."""
    extra = method_of(cfg.method).extra_channels
    unet = build_unet(cfg.network, resolution, channels + extra, channels)
    return EDMPrecond(unet, sigma_data=cfg.sigma_data)


def load_denoiser(run_dir: str | Path, ema: bool = True, device: str | torch.device = "cpu") -> tuple[EDMPrecond, TrainConfig, dict]:
    """The denoiser of a run's newest checkpoint (EMA weights by default), its config and meta."""
    from diffmem.train.checkpoint import EMA_FILE, MODEL, latest_checkpoint, load_weights
    from diffmem.train.rundir import load_train_config, read_json

    run = Path(run_dir)
    cfg = load_train_config(run)
    ckpt = latest_checkpoint(run)
    if ckpt is None:
        raise DiffmemError(f"run {run} has no checkpoint yet; train it first (diffmem train --out {run})")
    meta = read_json(ckpt / "meta.json")
    net = build_denoiser(cfg, meta["resolution"], meta["channels"])
    weights = load_weights(ckpt / (EMA_FILE if ema else MODEL))
    missing, unexpected = net.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise DiffmemError(f"{ckpt} does not match the run's network (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return net.to(device).eval(), cfg, meta
