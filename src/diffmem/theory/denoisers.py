"""Closed-form optimal denoisers of a finite training set, and the exact samplers they drive.

Notation (Shah et al. 2025, Sec. 2.2-2.3 and Alg. 1; EDM variance-exploding form `x_s = x0 + s n`):

- Baseline optimum (the minimizer of the ordinary loss on the empirical distribution of {x_i}):
  `D*(x; s) = E[x0 | x_s = x] = sum_i w_i(x; s) x_i`, `w = softmax_i(-|x - x_i|^2 / (2 s^2))`.
- Ambient optimum for `s >= sigma_n` (Algorithm 1, line 3; Lemma 4.1, proof in Appendix C.1.1): the network
  only sees `x_s = y_i + tau n` with `tau = sqrt(s^2 - sigma_n^2)`, so its best prediction of the noisy copy is
  the optimal denoiser of the empirical distribution of the copies {y_i} at noise level tau,
  `E[y | x_s] = sum_i softmax_i(-|x - y_i|^2 / (2 tau^2)) y_i`, and the identity
  `E[y | x_s] = (sigma_n^2/s^2) x_s + (tau^2/s^2) E[x0 | x_s]` turns it into
  `E[x0 | x_s] = (s^2 E[y | x_s] - sigma_n^2 x_s) / tau^2`.

All softmaxes are computed in float64, in log space, streaming over chunks of the training set (a running
max / running sums, like an online softmax), so memory stays bounded for large sets.

The samplers reuse samplers of `diffmem.diffusion.samplers` (EDM Algorithm 2) unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffmem.diffusion.samplers import Denoiser, karras_sigmas, sampler

__all__ = [
    "Posterior",
    "algorithm1_sample",
    "ambient_denoiser",
    "ambient_sample",
    "baseline_sample",
    "empirical_denoiser",
    "empirical_posterior",
]

_BLOCK = 1 << 21  # float64 elements per [queries, points] block of logits (16 MiB)
_QUERY_BLOCK = 4096  # queries per block


@dataclass(frozen=True)
class Posterior:
    """Summary of the softmax posterior `w_i(x; s)` over a point set, one entry per query (float64).

    mean: `sum_i w_i p_i`, [B, d].  max_weight: `max_i w_i`, [B].  argmax: index of the largest weight, [B].
    eff_count: `1 / sum_i w_i^2` (how many points share the weight), [B].  log_norm: `logsumexp_i logit_i`, [B],
    so that the weight of point j is `exp(logit_j - log_norm)`.
    """

    mean: torch.Tensor
    max_weight: torch.Tensor
    argmax: torch.Tensor
    eff_count: torch.Tensor
    log_norm: torch.Tensor


def _as_noise(sigma: float | torch.Tensor, batch: int) -> torch.Tensor:
    s = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)
    if s.numel() == 1:
        s = s.expand(batch)
    if s.shape != (batch,):
        raise ValueError(f"noise level must be a scalar or [{batch}], got shape {tuple(s.shape)}")
    if not bool(torch.all(torch.isfinite(s) & (s > 0))):
        raise ValueError(f"noise levels must be finite and > 0, got min {float(s.min())}")
    return s


@torch.no_grad()
def empirical_posterior(
    x: torch.Tensor,  # [B, ...] queries
    points: torch.Tensor,  # [N, ...] the point set (training images or noisy copies)
    sigma: float | torch.Tensor,  # scalar or [B]: the Gaussian noise level of the empirical mixture
    chunk: int | None = None,
    with_mean: bool = True,
) -> Posterior:
    """Posterior over `points` of a query seen at noise `sigma`: `w_i = softmax_i(-|x - p_i|^2 / (2 sigma^2))`.

    This is the posterior of the mixture `(1/N) sum_i N(p_i, sigma^2 I)` (Shah et al. 2025, Sec. 2.2); its mean is the
    optimal denoiser. Float64, log space, streamed over chunks of `chunk` points (default: a 16 MiB budget).
    `with_mean=False` skips the mean (returned as an empty [B, 0] tensor) when only the weights matter.
    """
    if x.ndim < 2 or points.ndim < 2 or x.shape[1:] != points.shape[1:]:
        raise ValueError(f"queries {tuple(x.shape)} and points {tuple(points.shape)} must be [B, ...] and [N, ...] "
                         "with the same trailing shape")
    b, n = x.shape[0], points.shape[0]
    if n == 0:
        raise ValueError("empirical_posterior needs at least one point")
    if b > _QUERY_BLOCK:  # bound memory in the number of queries too: blocks of queries, results concatenated
        sig = _as_noise(sigma, b)
        parts = [empirical_posterior(x[i : i + _QUERY_BLOCK], points, sig[i : i + _QUERY_BLOCK], chunk, with_mean)
                 for i in range(0, b, _QUERY_BLOCK)]
        return Posterior(*(torch.cat([getattr(p, f) for p in parts]) for f in Posterior.__dataclass_fields__))
    q = x.reshape(b, -1).to(torch.float64)  # [B, d]
    p_all = points.reshape(n, -1)  # [N, d], converted to float64 chunk by chunk
    d = q.shape[1]
    var2 = 2.0 * _as_noise(sigma, b) ** 2  # [B]
    chunk = chunk or max(1, min(n, _BLOCK // max(b, 1), _BLOCK // max(d, 1)))

    run_max = torch.full((b,), -torch.inf, dtype=torch.float64)
    s1 = torch.zeros(b, dtype=torch.float64)  # sum_i exp(l_i - run_max)
    s2 = torch.zeros(b, dtype=torch.float64)  # sum_i exp(2 (l_i - run_max))
    wsum = torch.zeros(b, d if with_mean else 0, dtype=torch.float64)  # sum_i exp(l_i - run_max) p_i
    argmax = torch.zeros(b, dtype=torch.int64)
    qn = (q * q).sum(1, keepdim=True)  # [B, 1]
    for start in range(0, n, chunk):
        p = p_all[start : start + chunk].to(torch.float64)  # [n_c, d]
        # |x - p|^2 = |x|^2 - 2 x.p + |p|^2 in float64 (the cancellation error is ~1e-14 |x|^2, far below s^2).
        d2 = (qn - 2.0 * q @ p.T + (p * p).sum(1)[None, :]).clamp_min_(0.0)  # [B, n_c]
        logits = -d2 / var2[:, None]
        c_max, c_arg = logits.max(dim=1)
        new_max = torch.maximum(run_max, c_max)
        old = torch.exp(run_max - new_max)  # 0 on the first chunk (run_max = -inf)
        e = torch.exp(logits - new_max[:, None])  # [B, n_c]
        s1 = s1 * old + e.sum(1)
        s2 = s2 * old * old + (e * e).sum(1)
        if with_mean:
            wsum = wsum * old[:, None] + e @ p
        argmax = torch.where(c_max > run_max, c_arg + start, argmax)
        run_max = new_max
    return Posterior(
        mean=wsum / s1[:, None],
        max_weight=1.0 / s1,  # the largest term is exp(run_max - run_max) = 1
        argmax=argmax,
        eff_count=s1 * s1 / s2,
        log_norm=run_max + torch.log(s1),
    )


def empirical_denoiser(points: torch.Tensor, chunk: int | None = None) -> Denoiser:
    """The baseline's optimal denoiser of the finite set `points` [N, ...] (Shah et al. 2025, Sec. 2.2).

    `D*(x; s) = sum_i softmax_i(-|x - x_i|^2 / (2 s^2)) x_i`; returns a `denoiser(x [B, ...], sigma [B])` callable
    for the samplers of `diffusion.samplers`. Its output has x's shape and dtype.
    """

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        post = empirical_posterior(x, points, sigma, chunk)
        return post.mean.reshape(x.shape).to(x.dtype)

    return denoise


def ambient_denoiser(noisy_copies: torch.Tensor, sigma_n: float, chunk: int | None = None) -> Denoiser:
    """The optimal `E[x0 | x_s]` of Algorithm 1's high-noise branch for the fixed copies `y_i`, for s > sigma_n.

    `E[y | x_s]` is the softmax mean over the y_i at noise `tau = sqrt(s^2 - sigma_n^2)`; then
    `E[x0 | x_s] = (s^2 E[y | x_s] - sigma_n^2 x_s) / tau^2` (the identity behind the Ambient Score Matching loss,
    Shah et al. 2025, eq. 6 in Sec. 2.3, solved for E[x0 | x_s]; docs/method.md). Undefined at s <= sigma_n (raises
    ValueError); to sample down to exactly sigma_n use `ambient_sample`, which integrates the same ODE in tau.
    """
    if not sigma_n > 0:
        raise ValueError(f"sigma_n must be > 0, got {sigma_n}")
    y_denoise = empirical_denoiser(noisy_copies, chunk)

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = _as_noise(sigma, x.shape[0])
        tau2 = s * s - sigma_n**2
        if bool(torch.any(tau2 <= 0)):
            raise ValueError(f"the ambient denoiser is defined for s > sigma_n = {sigma_n}, got s = {float(s.min())}")
        ey = y_denoise(x.to(torch.float64), tau2.sqrt())  # E[y | x_s], [B, ...]
        shape = (-1,) + (1,) * (x.ndim - 1)
        x0 = ((s * s).reshape(shape) * ey - sigma_n**2 * x.to(torch.float64)) / tau2.reshape(shape)
        return x0.to(x.dtype)

    return denoise


def baseline_sample(
    train: torch.Tensor,  # [N, ...] training images
    x_init: torch.Tensor,  # [B, ...] standard normal latents (the sampler scales them by sigma_max)
    num_steps: int = 32,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    solver: str = "heun",
) -> torch.Tensor:
    """Sample with the baseline's optimal denoiser from sigma_max to 0 (EDM Algorithm 2, `diffusion.samplers`).

    The result lands on training points (total memorization; Shah et al. 2025, Sec. 2.2). Returns [B, ...] float32.
    """
    sigmas = karras_sigmas(num_steps, sigma_min, sigma_max, rho)
    return sampler(solver)(empirical_denoiser(train), x_init, sigmas)


def ambient_sample(
    noisy_copies: torch.Tensor,  # [N, ...] the fixed copies y_i = x_i + sigma_n z_i
    sigma_n: float,
    x_init: torch.Tensor,  # [B, ...] standard normal; the start is x_init * sigma_max
    num_steps: int = 32,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    solver: str = "heun",
    s_stop: float | None = None,
) -> torch.Tensor:
    """Sample with the ambient optimum from sigma_max down to s = sigma_n (Lemma 4.1). Returns [B, ...] float32.

    The probability-flow ODE `dx/ds = (x - E[x0|x_s]) / s` with the ambient E[x0|x_s] equals, after the change of
    time `tau = sqrt(s^2 - sigma_n^2)`, the EDM ODE `dx/dtau = (x - E[y|x]) / tau` of the empirical distribution
    of the copies {y_i}, its softmax at temperature tau (substitute the identity of `ambient_denoiser`).
    Integrating in tau from sqrt(sigma_max^2 - sigma_n^2) to 0 with the EDM sampler avoids the 1/(s^2 - sigma_n^2)
    singularity at s = sigma_n and ends exactly at s = sigma_n, on the y_i. `sigma_min` is the smallest tau of the
    Karras grid before 0. `s_stop` (> sigma_n): stop at s = s_stop instead, i.e. at tau = sqrt(s_stop^2 - sigma_n^2)
    (`num_steps` Karras steps down to it, no final step to 0); there the state can be compared with the s-ODE
    driven by `ambient_denoiser`.
    """
    if not 0 < sigma_n < sigma_max:
        raise ValueError(f"need 0 < sigma_n < sigma_max, got sigma_n={sigma_n}, sigma_max={sigma_max}")
    tau_max = (sigma_max**2 - sigma_n**2) ** 0.5
    if s_stop is None:
        taus = karras_sigmas(num_steps, min(sigma_min, tau_max / 2), tau_max, rho)
    elif sigma_n < s_stop < sigma_max:
        taus = karras_sigmas(num_steps, (s_stop**2 - sigma_n**2) ** 0.5, tau_max, rho)[:-1]
    else:
        raise ValueError(f"need sigma_n < s_stop < sigma_max, got s_stop={s_stop}")
    # the sampler starts at x_init * taus[0]; the forward process at s = sigma_max has std sigma_max.
    return sampler(solver)(empirical_denoiser(noisy_copies), x_init * (sigma_max / tau_max), taus)


def algorithm1_sample(
    train: torch.Tensor,  # [N, ...] clean training images x_i
    noisy_copies: torch.Tensor,  # [N, ...] their fixed copies y_i
    sigma_n: float,
    x_init: torch.Tensor,  # [B, ...] standard normal
    num_steps: int = 32,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    solver: str = "heun",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample with Algorithm 1's exact optimum on a finite set: ambient above sigma_n, baseline below.

    Returns `(x_at_sigma_n, x_final)`, both [B, ...] float32: the state at s = sigma_n (on the y_i, Lemma 4.1),
    then the baseline-optimum ODE from sigma_n to 0 (`num_steps` Karras steps), which ends on training points.
    """
    x_n = ambient_sample(noisy_copies, sigma_n, x_init, num_steps, sigma_min, sigma_max, rho, solver)
    sigmas = karras_sigmas(num_steps, min(sigma_min, sigma_n / 2), sigma_n, rho)
    x0 = sampler(solver)(empirical_denoiser(train), x_n.to(torch.float64) / sigmas[0], sigmas)
    return x_n, x0
