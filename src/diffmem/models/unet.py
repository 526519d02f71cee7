"""The UNet backbone: diffusers' UNet2DModel, configured from a NetworkConfig.

The backbone F(x_in, c_noise, labels) is wrapped by `diffmem.diffusion.precond.EDMPrecond`;
it knows nothing about noise levels beyond the scalar conditioning input it receives.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DModel

from diffmem.config import NetworkConfig
from diffmem.errors import DiffmemError


def _groups(channels: tuple[int, ...]) -> int:
    """Largest GroupNorm group count <= 32 that divides every level's width."""
    for g in (32, 16, 8, 4, 2, 1):
        if all(c % g == 0 for c in channels):
            return g
    return 1


def build_unet(net: NetworkConfig, resolution: int, in_channels: int, out_channels: int) -> UNet2DModel:
    """A UNet2DModel for square images of `resolution` pixels.

    `in_channels` may exceed `out_channels` (the masking method feeds the mask as extra channels).
    """
    levels = len(net.channels)
    if resolution % (2 ** (levels - 1)) != 0:
        raise DiffmemError(
            f"resolution {resolution} is not divisible by 2^{levels - 1} ({levels} UNet levels); "
            "choose another --resolution or fewer --channels"
        )
    res = [resolution // 2**i for i in range(levels)]
    down = tuple("AttnDownBlock2D" if r in net.attn_resolutions else "DownBlock2D" for r in res)
    up = tuple("AttnUpBlock2D" if r in net.attn_resolutions else "UpBlock2D" for r in reversed(res))
    return UNet2DModel(
        sample_size=resolution,
        in_channels=in_channels,
        out_channels=out_channels,
        block_out_channels=tuple(net.channels),
        layers_per_block=net.layers_per_block,
        down_block_types=down,
        up_block_types=up,
        dropout=net.dropout,
        norm_num_groups=_groups(tuple(net.channels)),
        time_embedding_type="positional",  # sinusoidal embedding of c_noise, as EDM's DDPM++
        num_class_embeds=net.num_classes if net.num_classes > 0 else None,
    )


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
