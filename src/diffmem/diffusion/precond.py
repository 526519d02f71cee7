"""EDM preconditioning (Karras et al. 2022, Table 1; docs/method.md)."""

from __future__ import annotations

import torch
from torch import nn


class EDMPrecond(nn.Module):
    """D(x; s) = c_skip(s) x + c_out(s) F(c_in(s) x; c_noise(s)), the denoiser E[x0 | x_s].

    `backbone(x_in, c_noise, class_labels=...)` is a diffusers UNet2DModel (or anything with that
    call signature returning an object with `.sample` or a tensor).
    `extra` (optional, [B, k, H, W]) is concatenated to the scaled input, e.g. the mask of the
    masking method; it is not scaled. `observed` (the masking method's mask) switches erased pixels to
    a direct prediction `sigma_data * F` (see `forward`).
    """

    def __init__(self, backbone: nn.Module, sigma_data: float = 0.5) -> None:
        super().__init__()
        self.backbone = backbone
        self.sigma_data = sigma_data

    def coefficients(self, sigma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(c_skip, c_out, c_in, c_noise) for noise levels `sigma` [B]."""
        sd = self.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        c_in = 1 / (sd**2 + sigma**2).sqrt()
        c_noise = sigma.log() / 4
        return c_skip, c_out, c_in, c_noise

    def forward(
        self,
        x: torch.Tensor,  # [B, C, H, W] noisy images x_s
        sigma: torch.Tensor,  # [B] or scalar noise levels
        class_labels: torch.Tensor | None = None,  # [B] int64
        extra: torch.Tensor | None = None,  # [B, k, H, W] unscaled extra input channels
        observed: torch.Tensor | None = None,  # [B, 1 or C, H, W] 1 where x holds a value, 0 where erased
    ) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(x.shape[0])
        c_skip, c_out, c_in, c_noise = (c.reshape(-1, 1, 1, 1) for c in self.coefficients(sigma))
        x_in = c_in * x
        if extra is not None:
            x_in = torch.cat([x_in, extra], dim=1)
        out = self.backbone(x_in, c_noise.reshape(-1), class_labels=class_labels)
        f = (out.sample if hasattr(out, "sample") else out).to(torch.float32)
        if observed is None:
            return c_skip * x + c_out * f
        # Masked input (the masking method): EDM's preconditioning per pixel. An observed pixel is a noisy
        # value, as above. An erased pixel holds no value, so D there is the direct prediction sd * F, whose
        # target x0 / sd has unit variance at every noise level; EDM's c_out(s) -> 0 would ask F for
        # x0 / c_out(s) there, and the sampler's erased pixels would fade to 0 (grey) as s -> 0.
        return observed * (c_skip * x + c_out * f) + (1 - observed) * self.sigma_data * f
