"""Latent-space training losses, variance-preserving form (docs/method.md): baseline and ambient.

With a_t = alphas_cumprod[t] and the FIXED noisy latent x_tn = sqrt(a_tn) x0 + sqrt(1-a_tn) z (drawn once
per run), for a batch of timesteps t:
    t <= t_n:  x_t = sqrt(a_t) x0 + sqrt(1-a_t) e;   loss = |pred - target|^2 (target: e, v or x0)
    t >  t_n:  x_t = sqrt(r) x_tn + sqrt(1-r) e,  r = a_t / a_tn   (no clean latent enters)
               yhat = ((1-r) sqrt(a_tn) x0hat + sqrt(r) (1-a_tn) x_t) / (1-a_t)   = E[x_tn | x_t]
               loss = w(t) |yhat - x_tn|^2 / a_tn
x0hat = E[x0 | x_t] is read off the prediction: eps: (x_t - sqrt(1-a) eps)/sqrt(a); v: sqrt(a) x_t - sqrt(1-a) v.
The baseline loss equals lam(t) |x0hat - x0|^2 with lam = a/(1-a) (eps), 1/(1-a) (v), 1 (sample).
The ambient rows are the pixel trainer's loss (diffmem.diffusion.losses) in its variance-exploding scale:
x_t / sqrt(a_t) = y + sqrt(s^2 - S^2) e with y = x_tn / sqrt(a_tn), the VE noise level s = sigma(t) =
sqrt((1-a_t)/a_t) and S = sigma(t_n). With rho = S^2/s^2, 1 - rho = (1-r)/(1-a_t), and
    |yhat - x_tn|^2 / a_tn = (1 - rho)^2 |x0hat - x0t|^2,  x0t = (x_tn - sqrt(r)(1-a_tn)/(1-a_t) x_t) / c,
c = (1-r) sqrt(a_tn)/(1-a_t) = sqrt(a_tn)(1 - rho) (x0t is the pixel trainer's target Dt), and
w = lam(t) g(1 - rho), g the weighting's gain of the same 1 - rho as in pixels: "plain" weights the x0 error by
lam (1-rho)^2, "compensated" by lam (the baseline's weight: lam |x0hat - x0t|^2), "capped" by
lam min(1, C (1-rho)^2). Each weighting therefore weighs a noise level as the pixel trainer does
(docs/method.md, "Text-to-image training").
At t = t_n itself r = 1 and yhat = x_t = x_tn whatever the network predicts: the ambient loss would be
identically 0, so t = t_n takes the clean loss (t <= t_n), as Algorithm 1 does for s < sigma_n.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from diffmem.diffusion.weighting import AmbientWeighting, Plain

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t [B,C,h,w], t [B]) -> prediction


def _b(a: torch.Tensor) -> torch.Tensor:
    return a.reshape(-1, 1, 1, 1)


def x0_from_prediction(pred: torch.Tensor, x_t: torch.Tensor, a_t: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """E[x0 | x_t] from the network output (a_t: [B] alphas_cumprod at t)."""
    a = _b(a_t)
    if prediction_type == "epsilon":
        return (x_t - (1 - a).sqrt() * pred) / a.sqrt()
    if prediction_type == "v_prediction":
        return a.sqrt() * x_t - (1 - a).sqrt() * pred
    if prediction_type == "sample":
        return pred
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def eps_from_prediction(pred: torch.Tensor, x_t: torch.Tensor, a_t: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """E[e | x_t] from the network output (W24's noise prediction for any parameterisation)."""
    a = _b(a_t)
    if prediction_type == "epsilon":
        return pred
    if prediction_type == "v_prediction":
        return (1 - a).sqrt() * x_t + a.sqrt() * pred
    if prediction_type == "sample":
        return (x_t - a.sqrt() * pred) / (1 - a).sqrt()
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def prediction_target(x0: torch.Tensor, noise: torch.Tensor, a_t: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """The baseline regression target: e, v = sqrt(a) e - sqrt(1-a) x0, or x0."""
    a = _b(a_t)
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return a.sqrt() * noise - (1 - a).sqrt() * x0
    return x0


def x0_weight(a_t: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """lam(t) with |pred - target|^2 = lam(t) |x0hat - x0|^2."""
    if prediction_type == "epsilon":
        return a_t / (1 - a_t)
    if prediction_type == "v_prediction":
        return 1 / (1 - a_t)
    return torch.ones_like(a_t)


def ambient_posterior_mean(x0_hat: torch.Tensor, x_t: torch.Tensor, a_t: torch.Tensor,
                           a_tn: float | torch.Tensor) -> torch.Tensor:
    """E[x_tn | x_t] = ((1-r) sqrt(a_tn) E[x0|x_t] + sqrt(r)(1-a_tn) x_t) / (1-a_t), r = a_t/a_tn (docs/method.md)."""
    a, a_n = _b(a_t), torch.as_tensor(a_tn, dtype=a_t.dtype, device=a_t.device)
    r = (a / a_n).clamp(max=1.0)
    return ((1 - r) * a_n.sqrt() * x0_hat + r.sqrt() * (1 - a_n) * x_t) / (1 - a)


def ve_sigma(a: torch.Tensor | float) -> torch.Tensor:
    """The variance-exploding noise level of a VP timestep: x_t / sqrt(a_t) = x0 + sigma e, sigma = sqrt((1-a)/a)."""
    a = torch.as_tensor(a)
    return ((1 - a) / a).sqrt()


def one_minus_rho(a_t: torch.Tensor, a_tn: float | torch.Tensor) -> torch.Tensor:
    """1 - sigma(t_n)^2 / sigma(t)^2 = (1 - r) / (1 - a_t), r = a_t / a_tn: the share of the noisy copy's
    posterior E[y | x_t] that the denoiser supplies, as `1 - rho` of the pixel trainer (docs/method.md)."""
    a_n = torch.as_tensor(a_tn, dtype=a_t.dtype, device=a_t.device)
    return (1 - (a_t / a_n).clamp(max=1.0)) / (1 - a_t)


@dataclass
class LatentLossOutput:
    """The latent loss of one batch, with what W24's filter and the log read (the pixel trainer's is
    diffmem.diffusion.losses.LossOutput)."""

    loss: torch.Tensor  # [B] per-sample loss (mean over latent elements)
    high: torch.Tensor  # [B] bool: went through the ambient branch
    x_t: torch.Tensor  # [B, C, h, w] the network input
    pred: torch.Tensor  # [B, C, h, w] the network output (float32)


def t2i_loss(model: Model, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor,
             prediction_type: str, x_tn: torch.Tensor | None = None, t_n: int | None = None,
             weighting: AmbientWeighting = Plain()) -> LatentLossOutput:
    """Per-sample loss; the baseline when `x_tn` is None, else the ambient loss for t > t_n (clean loss at and
    below `t_n`)."""
    a_t = alphas_cumprod[t].float()  # [B]
    ambient = x_tn is not None
    high = t > t_n if ambient else torch.zeros_like(t, dtype=torch.bool)  # [B]; at t_n the ambient loss is 0
    h = _b(high)
    clean = x0.masked_fill(h, 0.0)  # rows of the ambient branch: the clean latent is used nowhere
    x_t = _b(a_t).sqrt() * clean + _b(1 - a_t).sqrt() * noise  # t <= t_n
    if ambient:
        a_tn = alphas_cumprod[t_n].float()
        r = _b(a_t / a_tn).clamp(max=1.0)
        x_t = torch.where(h, r.sqrt() * x_tn + (1 - r).sqrt() * noise, x_t)  # t > t_n: from x_tn only
    pred = model(x_t, t).float()
    loss = _mean(pred - prediction_target(clean, noise, a_t, prediction_type))
    if ambient:
        y_hat = ambient_posterior_mean(x0_from_prediction(pred, x_t, a_t, prediction_type), x_t, a_t, a_tn)
        w = x0_weight(a_t, prediction_type) * weighting.gain_of_factor(one_minus_rho(a_t, a_tn))
        loss = torch.where(high, w * _mean(y_hat - x_tn) / a_tn, loss)  # the pixel loss of the VE-scaled latents
    return LatentLossOutput(loss, high, x_t, pred)


def _mean(diff: torch.Tensor) -> torch.Tensor:
    return diff.pow(2).flatten(1).mean(dim=1)
