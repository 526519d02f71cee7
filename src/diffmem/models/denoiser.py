"""Build the preconditioned denoiser of a run from its configuration (loading: train/checkpoint.py)."""

from __future__ import annotations

from diffmem.config import TrainConfig
from diffmem.diffusion.methods import Method, method_of
from diffmem.diffusion.precond import EDMPrecond
from diffmem.models.unet import build_unet


def build_denoiser(cfg: TrainConfig, resolution: int, channels: int, method: Method | None = None) -> EDMPrecond:
    """EDMPrecond around a UNet with the method's extra input channels (masking: the mask); `method` is the
    run's object when the caller has it."""
    extra = (method if method is not None else method_of(cfg.method)).extra_channels
    unet = build_unet(cfg.network, resolution, channels + extra, channels)
    return EDMPrecond(unet, sigma_data=cfg.sigma_data)
