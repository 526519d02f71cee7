"""Build the preconditioned denoiser of a run from its configuration (loading: train/checkpoint.py)."""

from __future__ import annotations

from diffmem.config import TrainConfig
from diffmem.diffusion.methods import method_of
from diffmem.diffusion.precond import EDMPrecond
from diffmem.models.unet import build_unet


def build_denoiser(cfg: TrainConfig, resolution: int, channels: int) -> EDMPrecond:
    """EDMPrecond around a UNet; the masking method gets the mask as one extra input channel."""
    extra = method_of(cfg.method).extra_channels
    unet = build_unet(cfg.network, resolution, channels + extra, channels)
    return EDMPrecond(unet, sigma_data=cfg.sigma_data)
