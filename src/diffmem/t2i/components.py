"""Stable Diffusion's parts, loaded from a hub id or a local folder in diffusers' pipeline layout.

A pipeline folder holds `model_index.json` and the subfolders `unet/`, `vae/`, `text_encoder/`,
`tokenizer/` and `scheduler/` (what `StableDiffusionPipeline.save_pretrained` writes). A hub id such as
`stabilityai/stable-diffusion-2-base` is downloaded once into the Hugging Face cache; offline, pass the
local folder (or set HF_HUB_OFFLINE=1 after one online run).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffmem.errors import DiffmemError

__all__ = ["SDComponents", "load_components", "load_unet", "encode_text", "encode_images", "decode_latents",
           "latent_scale"]


@dataclass
class SDComponents:
    """The frozen parts (VAE, text encoder, tokenizer), the trainable UNet, and the training scheduler."""

    tokenizer: Any  # transformers CLIPTokenizer
    text_encoder: torch.nn.Module  # transformers CLIPTextModel
    vae: torch.nn.Module  # diffusers AutoencoderKL
    unet: torch.nn.Module  # diffusers UNet2DConditionModel
    scheduler: Any  # diffusers DDPMScheduler (training noise schedule)

    @property
    def prediction_type(self) -> str:
        """`epsilon`, `v_prediction` or `sample`, as the scheduler config says."""
        return str(self.scheduler.config.prediction_type)

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent pixel (8 for Stable Diffusion)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def default_resolution(self) -> int:
        """The image size the UNet was trained at (512 for SD2-base, 768 for SD2)."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor


def _load(cls: Any, pretrained: str, subfolder: str, what: str, **kwargs: Any) -> Any:
    try:
        return cls.from_pretrained(pretrained, subfolder=subfolder, **kwargs)
    except (OSError, ValueError, EnvironmentError) as err:
        local = Path(pretrained).expanduser()
        hint = (f"the folder {local} has no usable {subfolder}/ (expected diffusers' pipeline layout, as written "
                "by StableDiffusionPipeline.save_pretrained)" if local.exists() else
                "if this is a hub id, check the spelling and the network (offline: pass a local folder in "
                "diffusers' pipeline layout, or set HF_HUB_OFFLINE=1 after one online download)")
        raise DiffmemError(f"--pretrained {pretrained}: cannot load the {what} ({type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else ''}); {hint}") from None


def load_unet(pretrained: str) -> torch.nn.Module:
    """Just the UNet of a pipeline (float32)."""
    from diffusers import UNet2DConditionModel

    return _load(UNet2DConditionModel, pretrained, "unet", "UNet")


def load_components(pretrained: str) -> SDComponents:
    """Load tokenizer, text encoder, VAE, UNet and the DDPM training scheduler (all float32, on CPU)."""
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    parts = SDComponents(
        tokenizer=_load(CLIPTokenizer, pretrained, "tokenizer", "tokenizer"),
        text_encoder=_load(CLIPTextModel, pretrained, "text_encoder", "text encoder"),
        vae=_load(AutoencoderKL, pretrained, "vae", "VAE"),
        unet=load_unet(pretrained),
        scheduler=_load(DDPMScheduler, pretrained, "scheduler", "noise scheduler"),
    )
    if parts.prediction_type not in ("epsilon", "v_prediction", "sample"):
        raise DiffmemError(f"--pretrained {pretrained}: scheduler prediction_type {parts.prediction_type!r} is not "
                           "supported (epsilon, v_prediction or sample)")
    parts.vae.requires_grad_(False).eval()
    parts.text_encoder.requires_grad_(False).eval()
    return parts


def latent_scale(vae: torch.nn.Module) -> tuple[float, float]:
    """(scaling_factor, shift_factor) that take VAE latents to the diffusion model's latents."""
    shift = getattr(vae.config, "shift_factor", None)
    return float(vae.config.scaling_factor), float(shift) if shift is not None else 0.0


@torch.no_grad()
def encode_text(tokenizer: Any, text_encoder: torch.nn.Module, captions: list[str],
                device: torch.device | str) -> torch.Tensor:
    """Text embeddings `[B, L, D]` (the encoder's last hidden state, as StableDiffusionPipeline uses)."""
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt")
    mask = None
    if getattr(text_encoder.config, "use_attention_mask", False):
        mask = ids.attention_mask.to(device)
    dtype = next(text_encoder.parameters()).dtype
    return text_encoder(ids.input_ids.to(device), attention_mask=mask)[0].to(dtype)


@torch.no_grad()
def encode_images(vae: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Latents `[B, 4, R/8, R/8]` of images in [-1, 1]: the VAE posterior MEAN, scaled for the UNet.

    The mean, not a draw: each image is encoded once per run, and a fixed draw would only add a
    fixed perturbation of the (tiny) posterior variance.
    """
    scale, shift = latent_scale(vae)
    dtype = next(vae.parameters()).dtype
    mean = vae.encode(pixels.to(dtype)).latent_dist.mean
    return ((mean.float() - shift) * scale).contiguous()


@torch.no_grad()
def decode_latents(vae: torch.nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (float32 `[B, 3, R, R]`) from UNet-scaled latents."""
    scale, shift = latent_scale(vae)
    dtype = next(vae.parameters()).dtype
    return vae.decode((latents / scale + shift).to(dtype)).sample.float().clamp(-1, 1)
