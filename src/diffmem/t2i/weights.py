"""The trained weights of a t2i run: LoRA adapters or the full UNet, and loading them back.

Their EMA is the pixel runs' one (`diffmem.train.stack.EMA`, built on the dict of trained parameters)."""

from __future__ import annotations

import torch

from diffmem.errors import DiffmemError

__all__ = ["add_lora", "trainable_state", "apply_trained_weights"]


def add_lora(unet: torch.nn.Module, rank: int, seed: int | None = None) -> None:
    """Freeze the UNet and add trainable LoRA adapters (rank `rank`) to its attention projections.

    peft draws the adapters' Gaussian start from torch's global generator; with `seed` that generator is
    seeded first, so two runs with one seed start from the same adapters (paired baseline/ambient runs)."""
    try:
        from peft import LoraConfig
    except ImportError:
        raise DiffmemError("--lora-rank needs the peft package, which is not installed: pip install peft "
                           "(or leave --lora-rank out to fine-tune the full UNet)") from None
    unet.requires_grad_(False)
    if seed is not None:
        torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                target_modules=["to_k", "to_q", "to_v", "to_out.0"]))


def trainable_state(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trained parameters by name: the whole UNet, or only the LoRA adapters."""
    return {name: p for name, p in unet.named_parameters() if p.requires_grad}


def apply_trained_weights(unet: torch.nn.Module, weights: dict[str, torch.Tensor], where: str) -> None:
    """Load `weights` (from unet/ema.safetensors) into a UNet prepared like the run's (LoRA added if any)."""
    expected = set(trainable_state(unet)) or {n for n, _ in unet.named_parameters()}
    missing, unexpected = expected - set(weights), set(weights) - {n for n, _ in unet.named_parameters()}
    if missing or unexpected:
        raise DiffmemError(f"{where} does not match the UNet of --pretrained (missing {sorted(missing)[:3]}, "
                           f"unexpected {sorted(unexpected)[:3]}); was the run trained from another model?")
    unet.load_state_dict(weights, strict=False)

