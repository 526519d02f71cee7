"""The fixed corruptions of a run, drawn ONCE before training (Algorithm 1, line 1).

They come from a generator that belongs to the run (seeded from the run's seed and a purpose tag),
never from global RNG state, so two runs with the same seed draw the same copies, a resumed run
reloads them from disk, and the number of processes does not change them.
"""

from __future__ import annotations

import torch

_NOISE_TAG = 0x6E6F697379  # "noisy"
_MASK_TAG = 0x6D61736B  # "mask"


def corruption_generator(seed: int, tag: int) -> torch.Generator:
    """A CPU generator for one kind of corruption of a run."""
    return torch.Generator().manual_seed((seed * 1_000_003 + tag) % (2**63 - 1))


def draw_noisy_copies(x0: torch.Tensor, sigma_n: float, seed: int) -> torch.Tensor:
    """y_i = x_i + sigma_n z_i, z_i ~ N(0, I): one noisy copy per training image, [N, C, H, W]."""
    z = torch.randn(x0.shape, generator=corruption_generator(seed, _NOISE_TAG), dtype=torch.float32)
    return x0.to(torch.float32) + sigma_n * z


def draw_masks(shape: tuple[int, ...], erase_p: float, seed: int) -> torch.Tensor:
    """Fixed inpainting masks A_i (1 = observed, 0 = erased), one per image and pixel, [N, 1, H, W].

    A pixel is erased in every channel at once, as in Ambient Diffusion's random inpainting.
    """
    n, _, h, w = shape
    u = torch.rand((n, 1, h, w), generator=corruption_generator(seed, _MASK_TAG))
    return (u >= erase_p).to(torch.float32)
