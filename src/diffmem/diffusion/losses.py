"""Training losses, per sample: the EDM baseline and Algorithm 1 (ambient, threshold sigma_n).

Algorithm 1 (Shah et al. 2025, Alg. 1; docs/method.md), for a batch of clean images x0, their FIXED noisy copies
y = x0 + sigma_n z (drawn once per run), and noise levels s:
    s <  sigma_n:  x_s = x0 + s n,                      loss = lambda(s) |D(x_s; s) - x0|^2
    s >= sigma_n:  x_s = y + sqrt(s^2 - sigma_n^2) n,   yhat = (sigma_n^2/s^2) x_s + (1 - sigma_n^2/s^2) D(x_s; s)
                                                         loss = w(s) |yhat - y|^2
with lambda(s) = (s^2 + sd^2) / (s sd)^2 and w = lambda g(s), g the gain of an `AmbientWeighting`
(diffmem.diffusion.weighting: plain, compensated, capped).
In the high-noise branch the network only ever sees x_s built from y: no clean pixel enters it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from diffmem.diffusion.precond import EDMPrecond
from diffmem.diffusion.weighting import AmbientWeighting, Plain


@dataclass
class Batch:
    """One training batch; every random draw already made by the training loop's generator."""

    x0: torch.Tensor  # [B, C, H, W] clean images (the masking method only uses pixels its mask shows)
    u: torch.Tensor  # [B] uniform quantiles, turned into noise levels by the method (`noise_levels`)
    noise: torch.Tensor  # [B, C, H, W] standard normal
    labels: torch.Tensor | None = None  # [B] class labels
    # the method's own tensors (diffusion/methods.py): rows of its fixed corruptions (`prepare`, e.g. the noisy
    # copies y [B, C, H, W] or the masks A [B, 1, H, W]) and this step's draws (`draw`, e.g. masking's B)
    fixed: dict[str, torch.Tensor] = field(default_factory=dict)
    drawn: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class LossOutput:
    loss: torch.Tensor  # [B] per-sample loss (mean over pixels)
    high: torch.Tensor  # [B] bool: sample went through the ambient (high-noise) branch


def edm_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """lambda(s) = (s^2 + sd^2) / (s sd)^2 (EDM eq. 8 weighting)."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def noise_levels(u: torch.Tensor, p_mean: float, p_std: float, sigma_min: float = 0.0) -> torch.Tensor:
    """Training noise levels from uniform quantiles: ln(s) ~ N(p_mean, p_std^2), truncated to s >= sigma_min.

    Inverse-CDF sampling, so the noise-only method draws from the same log-normal restricted to
    [sigma_min, inf) without rejection.
    """
    u = u.to(torch.float64)
    if sigma_min > 0:
        lo = torch.special.ndtr(torch.tensor((math.log(sigma_min) - p_mean) / p_std, dtype=torch.float64))
        u = lo + u * (1 - lo)
    z = torch.special.ndtri(u.clamp(1e-12, 1 - 1e-12))
    return (z * p_std + p_mean).exp().clamp_min(max(sigma_min, 1e-6)).to(torch.float32)


def _per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(dim=1)


def edm_loss(net: EDMPrecond, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
             labels: torch.Tensor | None = None) -> LossOutput:
    """Baseline: lambda(s) |D(x0 + s n; s) - x0|^2 at every noise level."""
    s = sigma.reshape(-1, 1, 1, 1)
    denoised = net(x0 + s * noise, sigma, labels)
    loss = edm_weight(sigma, net.sigma_data) * _per_sample_mean((denoised - x0) ** 2)
    return LossOutput(loss, torch.zeros_like(sigma, dtype=torch.bool))


def ambient_loss(net: EDMPrecond, x0: torch.Tensor, y: torch.Tensor, sigma_n: float, sigma: torch.Tensor,
                 noise: torch.Tensor, labels: torch.Tensor | None = None,
                 weighting: AmbientWeighting = Plain()) -> LossOutput:
    """Algorithm 1 (Shah et al. 2025, Alg. 1): clean loss below sigma_n, ambient loss on the fixed noisy
    copy y at and above it, weighted by lambda(s) times the weighting's gain (docs/method.md)."""
    high = sigma >= sigma_n  # [B]
    s = sigma.reshape(-1, 1, 1, 1)
    h = high.reshape(-1, 1, 1, 1)
    extra_std = (s**2 - sigma_n**2).clamp_min(0).sqrt()
    x_s = torch.where(h, y + extra_std * noise, x0 + s * noise)  # high branch: built from y only
    denoised = net(x_s, sigma, labels)
    ratio = sigma_n**2 / s**2
    y_hat = ratio * x_s + (1 - ratio) * denoised  # E[y | x_s] from E[x0 | x_s]
    lam = edm_weight(sigma, net.sigma_data)
    err_clean = _per_sample_mean((denoised - x0) ** 2)
    err_high = _per_sample_mean((y_hat - y) ** 2)
    w_high = lam * weighting.gain(sigma, sigma_n)
    loss = torch.where(high, w_high * err_high, lam * err_clean)
    return LossOutput(loss, high)


def masking_loss(net: EDMPrecond, x0: torch.Tensor, mask: torch.Tensor, extra_mask: torch.Tensor,
                 sigma: torch.Tensor, noise: torch.Tensor, labels: torch.Tensor | None = None) -> LossOutput:
    """Ambient Diffusion with random inpainting (Daras et al. 2023, Sec. 3; docs/method.md).

    The network sees A~ x_s with A~ = B A (fixed mask A, fresh further corruption B) and the mask A~
    as an extra channel; the loss |A (D(A~ x_s, A~; s) - x0)|^2 covers only pixels A shows, weighted per
    pixel by 1 / c_out^2 of that pixel's preconditioning: lambda(s) where A~ shows the pixel (EDM eq. 8),
    1 / sigma_data^2 where B erased it (there D = sigma_data F, see EDMPrecond.forward).
    """
    s = sigma.reshape(-1, 1, 1, 1)
    a_tilde = mask * extra_mask
    denoised = net(a_tilde * (x0 + s * noise), sigma, labels, extra=a_tilde, observed=a_tilde)
    lam = edm_weight(sigma, net.sigma_data).reshape(-1, 1, 1, 1)
    weight = a_tilde * lam + (1 - a_tilde) / net.sigma_data**2
    loss = _per_sample_mean(mask * weight * (denoised - x0) ** 2)
    return LossOutput(loss, torch.zeros_like(sigma, dtype=torch.bool))
