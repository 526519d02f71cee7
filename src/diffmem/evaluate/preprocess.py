"""Image preprocessing shared by the feature extractors: checks, channels, resizing, normalization."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from diffmem.errors import DiffmemError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CLIP_MEAN",
    "CLIP_STD",
    "check_images",
    "to_float",
    "match_channels",
    "resize_square",
    "normalize",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights, as PIL's convert("L")


def check_images(images: np.ndarray, what: str = "images") -> np.ndarray:
    """Validate uint8 `[N, H, W, C]` (C in 1, 3; `[N, H, W]` is read as gray) with N >= 1."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype != np.uint8:
        raise DiffmemError(f"{what}: expected uint8 pixels in 0..255, got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DiffmemError(f"{what}: expected images [N, H, W, C] with C = 1 or 3, got shape {images.shape}")
    if images.shape[0] == 0:
        raise DiffmemError(f"{what}: there are no images")
    return images


def to_float(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 `[B, H, W, C]` -> float32 `[B, C, H, W]` in [0, 1] on `device`."""
    x = torch.from_numpy(np.ascontiguousarray(batch)).to(device)
    return x.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)


def match_channels(x: torch.Tensor, channels: int | None) -> torch.Tensor:
    """Gray -> RGB by repetition, RGB -> gray by BT.601 luma; `channels=None` leaves `x` as it is."""
    c = x.shape[1]
    if channels is None or c == channels:
        return x
    if channels == 3 and c == 1:
        return x.expand(-1, 3, -1, -1)
    if channels == 1 and c == 3:
        w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * w).sum(dim=1, keepdim=True)
    raise ValueError(f"cannot convert {c} channels to {channels}")


def resize_square(x: torch.Tensor, size: int, mode: str = "bicubic", antialias: bool = True) -> torch.Tensor:
    """Center-crop `[B, C, H, W]` to a square, resize to `size` x `size`, clamp to [0, 1]."""
    h, w = x.shape[-2:]
    s = min(h, w)
    if h != w:
        top, left = (h - s) // 2, (w - s) // 2
        x = x[..., top : top + s, left : left + s]
    if s == size:
        return x
    align = False if mode in ("bilinear", "bicubic") else None
    y = F.interpolate(x, size=(size, size), mode=mode, align_corners=align, antialias=antialias)
    return y.clamp_(0.0, 1.0)


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """`(x - mean) / std` per channel."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s
