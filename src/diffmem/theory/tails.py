"""How heavy-tailed each weighting's loss is at the exact optimum: draws, the Hill estimator, an Adam toy.

For Gaussian data x0 ~ N(0, sd^2 I) the exact denoiser is D*(x; s) = sd^2 / (sd^2 + s^2) x, for the noisy
copies as for clean images (the total noise of x_s is s either way). `optimum_draws` draws Algorithm 1's
per-sample loss at that optimum over the training distribution of s (log-normal), for a weighting; what
is left is the loss's irreducible noise, the part that decides how stable training is. The Hill
estimator (Hill 1975) of the tail index alpha (P(L > x) ~ x^-alpha) tells whether its mean (alpha > 1)
and variance (alpha > 2) exist. `adam_toy` runs Adam on the one parameter c of D = c D* from the optimum
and returns the RMS of its late steps: a loss with rare huge gradients inflates Adam's second moment and
shrinks every other step (a slower effective clock). Written by hand: no library provides these pieces
for this loss; `bench/weighting_tails.py` prints the figures.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from diffmem.diffusion.losses import edm_weight, noise_levels
from diffmem.diffusion.weighting import AmbientWeighting

__all__ = ["optimum_draws", "hill_tail_index", "adam_toy"]


def optimum_draws(weighting: AmbientWeighting, n: int, sigma_n: float, generator: torch.Generator, *,
                  dim: int = 64, sigma_data: float = 0.5, p_mean: float = -1.2, p_std: float = 1.2,
                  sigma_min: float = 0.0) -> dict[str, torch.Tensor]:
    """`n` per-sample losses (mean over `dim` pixels) of Algorithm 1 at the exact optimum, float64.

    `sigma_min`: draw s from the log-normal restricted to s >= sigma_min (sigma_n: the high branch only).
    Returns {"sigma", "high", "loss", "grad"}; `grad` is d loss / d c at c = 1 for D = c D*, the
    per-sample gradient of a one-parameter model (its mean over draws is 0 at the optimum).
    """
    sd = sigma_data
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    sigma = noise_levels(u, p_mean, p_std, sigma_min).to(torch.float64)
    s = sigma[:, None]
    x0 = sd * torch.randn(n, dim, generator=generator, dtype=torch.float64)
    z = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    noise = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    y = x0 + sigma_n * z
    high = sigma >= sigma_n
    x_s = torch.where(high[:, None], y + (s**2 - sigma_n**2).clamp_min(0).sqrt() * noise, x0 + s * noise)
    d_star = sd**2 / (sd**2 + s**2) * x_s
    lam = edm_weight(sigma, sd)
    rho = sigma_n**2 / s**2
    r_high = rho * x_s + (1 - rho) * d_star - y  # yhat - y (Alg. 1, high branch)
    r_low = d_star - x0
    w_high = lam * weighting.gain(sigma, sigma_n)
    loss = torch.where(high, w_high * (r_high**2).mean(1), lam * (r_low**2).mean(1))
    grad = torch.where(high, w_high * (2 * r_high * (1 - rho) * d_star).mean(1), lam * (2 * r_low * d_star).mean(1))
    return {"sigma": sigma, "high": high, "loss": loss, "grad": grad}


def hill_tail_index(x: torch.Tensor | np.ndarray, k: int | None = None) -> float:
    """Hill's estimator of the tail index from the `k` largest of the positive values in `x`.

    alpha = 1 / mean_i ln(x_(i) / x_(k+1)), i = 1..k, x_(1) >= x_(2) >= ... (Hill 1975, eq. 1.3).
    Default k: the largest 0.1% (at least 10).
    """
    v = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64).ravel()
    v = np.sort(v[v > 0])[::-1]
    if k is None:
        k = max(10, v.size // 1000)
    if v.size <= k:
        raise ValueError(f"the Hill estimator needs more than k = {k} positive values, got {v.size}")
    xi = float(np.mean(np.log(v[:k] / v[k])))
    return math.inf if xi == 0 else 1.0 / xi


def adam_toy(weighting: AmbientWeighting, sigma_n: float, generator: torch.Generator, *, steps: int = 2000,
             batch: int = 64, lr: float = 1e-3, dim: int = 16, high_only: bool = True) -> float:
    """RMS of Adam's steps over the second half of `steps` on D = c D*, started at the optimum c = 1.

    Each step's gradient is the batch mean of `optimum_draws(...)["grad"]` evaluated at c = 1: from the
    optimum the drift is 0 and the steps only reflect the gradient noise, scaled by Adam (Kingma & Ba
    2015, Alg. 1, betas 0.9 and 0.999, eps 1e-8). `high_only`: c scales the high-noise branch's denoiser
    and the batches hold only s >= sigma_n (the low branch is the same for every weighting, and its
    gradient noise at small s would otherwise dominate).
    """
    floor = sigma_n if high_only else 0.0
    g = optimum_draws(weighting, steps * batch, sigma_n, generator, dim=dim, sigma_min=floor)["grad"]
    g = g.reshape(steps, batch).mean(1)
    b1, b2, eps = 0.9, 0.999, 1e-8
    m = v = 0.0
    ups = []
    for t, gt in enumerate(g.tolist(), start=1):
        m = b1 * m + (1 - b1) * gt
        v = b2 * v + (1 - b2) * gt * gt
        ups.append(lr * (m / (1 - b1**t)) / (math.sqrt(v / (1 - b2**t)) + eps))
    late = np.asarray(ups[steps // 2:])
    return float(np.sqrt(np.mean(late**2)))
