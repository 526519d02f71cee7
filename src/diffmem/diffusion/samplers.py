"""EDM samplers (Karras et al. 2022, Algorithms 1 and 2) as pure functions with injectable randomness.

Every sampler has one signature (`Sampler`; `SAMPLERS` names them for `--solver`, as k-diffusion's) and takes a
`denoiser(x, sigma) -> E[x0 | x]` callable, so the same code drives a trained network
and the closed-form optimal denoisers of `diffmem.theory`; a `callback` sees each step's state and denoised
estimate (`diffmem trace` records the latter). Randomness comes from
`per_sample_noise`, which makes sample i depend only on (seed, i), never on the batch it is in; and a
network runs through `fixed_rows`, so that its arithmetic does not depend on the batch either.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Protocol

import torch

from diffmem.diffusion.sample_options import SOLVERS

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x [B, ...], sigma [B]) -> x0_hat [B, ...]
RowsFn = Callable[..., torch.Tensor]  # (t1 [B, ...], t2 [B, ...] or None, ...) -> [B, ...]
NoiseFn = Callable[[int], torch.Tensor]  # step index -> standard normal noise shaped like x


def karras_sigmas(num_steps: int = 18, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                  dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """EDM eq. 5: sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho, plus a final 0."""
    if num_steps < 1:
        raise ValueError("num_steps must be >= 1")
    i = torch.arange(num_steps, dtype=dtype)
    denom = max(num_steps - 1, 1)
    s = (sigma_max ** (1 / rho) + i / denom * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([s, torch.zeros(1, dtype=dtype)])


def sample_seed(seed: int, index: int) -> int:
    """The generator seed of sample `index` in a run seeded `seed` (a 63-bit mix of both)."""
    return (seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) % (2**63 - 1)


def per_sample_noise(seed: int, indices: torch.Tensor | list[int], shape: tuple[int, ...],
                     num_draws: int) -> torch.Tensor:
    """Standard normal noise [num_draws, B, *shape]; column b depends only on (seed, indices[b]).

    Draw 0 is the initial latent; draws 1.. feed stochastic (churn) steps. Draw k does not depend on
    `num_draws` (each draw is its own `randn` call: one call for all draws would not do, as torch's
    CPU `randn` takes another code path for large sizes), so sample i starts from the same latent
    whatever the number of steps or churn.
    """
    cols = []
    for idx in [int(i) for i in indices]:
        g = torch.Generator().manual_seed(sample_seed(seed, idx))
        cols.append(torch.stack([torch.randn(shape, generator=g) for _ in range(num_draws)]))
    return torch.stack(cols, dim=1)


def fixed_rows(fn: RowsFn, rows: int) -> RowsFn:
    """`fn(*tensors)` (a network call on tensors of B rows each, or None) evaluated on chunks of exactly
    `rows` rows: the last chunk is padded with copies of its last row, the padding's outputs dropped.

    The same row of a network's input gives bitwise the same output in any batch of the same shape (its
    position and the other rows do not matter), but not in a batch of another size: CPU and GPU kernels
    choose their blocking, vector tails and threads' shares by the shape, which changes the last bits of
    float32 sums, and a sampler carries such bits into a pixel now and then. Running every sample in
    batches of one shape makes sample i independent of how many samples were asked for together."""
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")

    def call(*tensors: torch.Tensor | None) -> torch.Tensor:
        n = next(t for t in tensors if t is not None).shape[0]
        outs = []
        for lo in range(0, n, rows):
            take = min(rows, n - lo)
            chunk = [None if t is None else _pad_rows(t[lo : lo + take], rows) for t in tensors]
            outs.append(fn(*chunk)[:take])
        return torch.cat(outs)

    return call


def _pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    if t.shape[0] == rows:
        return t
    return torch.cat([t, t[-1:].expand(rows - t.shape[0], *t.shape[1:])])


Callback = Callable[[dict[str, Any]], None]  # sees {x, i, sigma, sigma_hat, sigma_next, denoised} each step


class Sampler(Protocol):
    """The one signature of every sampler here (k-diffusion's shape): `denoiser`, the initial standard normal
    `x_init` [B, ...] (scaled by sigmas[0] inside), the decreasing noise levels `sigmas` [N+1] (e.g.
    `karras_sigmas()`; the last may be 0 or a stopping level), EDM's churn settings, `denoise_last` and
    `callback`. Returns float32 [B, ...]."""

    def __call__(self, denoiser: Denoiser, x_init: torch.Tensor, sigmas: torch.Tensor, *, s_churn: float = 0.0,
                 s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
                 churn_noise: NoiseFn | None = None, denoise_last: bool = False,
                 callback: Callback | None = None) -> torch.Tensor: ...


def _denoise(denoiser: Denoiser, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """D(x; s): the state is float64, the network runs in float32."""
    sig = s.to(torch.float32).expand(x.shape[0])
    return denoiser(x.to(torch.float32), sig).to(torch.float64)


def _churn(x: torch.Tensor, i: int, sigmas: torch.Tensor, s_churn: float, s_tmin: float, s_tmax: float,
           s_noise: float, churn_noise: NoiseFn | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 2, lines 4-6: raise the noise from sigma_i to sigma_hat = (1 + gamma_i) sigma_i with fresh
    noise (draw i + 1 of `churn_noise`); gamma_i = min(S_churn / N, sqrt(2) - 1) inside [S_tmin, S_tmax]."""
    n, s_cur = len(sigmas) - 1, sigmas[i]
    gamma = min(s_churn / n, math.sqrt(2) - 1) if (s_churn > 0 and s_tmin <= s_cur <= s_tmax) else 0.0
    s_hat = s_cur * (1 + gamma)
    if gamma > 0:
        if churn_noise is None:
            raise ValueError("s_churn > 0 needs churn_noise")
        eps = churn_noise(i + 1).to(x)
        x = x + (s_hat**2 - s_cur**2).sqrt() * s_noise * eps
    return x, s_hat


def _run(second_order: bool, denoiser: Denoiser, x_init: torch.Tensor, sigmas: torch.Tensor, s_churn: float,
         s_tmin: float, s_tmax: float, s_noise: float, churn_noise: NoiseFn | None, denoise_last: bool,
         callback: Callback | None) -> torch.Tensor:
    """The loop of Algorithm 2: churn, an Euler step (line 8), with `second_order` Heun's correction
    (lines 9-11, skipped on a step to sigma = 0); then, with `denoise_last`, D(x; sigmas[-1])."""
    x = x_init.to(torch.float64) * sigmas[0]
    for i in range(len(sigmas) - 1):
        x, s_hat = _churn(x, i, sigmas, s_churn, s_tmin, s_tmax, s_noise, churn_noise)
        s_next = sigmas[i + 1]
        denoised = _denoise(denoiser, x, s_hat)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": s_hat, "sigma_next": s_next,
                      "denoised": denoised})
        d_cur = (x - denoised) / s_hat
        x_next = x + (s_next - s_hat) * d_cur
        if second_order and s_next > 0:
            d_next = (x_next - _denoise(denoiser, x_next, s_next)) / s_next
            x_next = x + (s_next - s_hat) * (0.5 * d_cur + 0.5 * d_next)
        x = x_next
    if denoise_last:
        x = _denoise(denoiser, x, sigmas[-1])
    return x.to(torch.float32)


@torch.no_grad()
def sample_heun(denoiser: Denoiser, x_init: torch.Tensor, sigmas: torch.Tensor, *, s_churn: float = 0.0,
                s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
                churn_noise: NoiseFn | None = None, denoise_last: bool = False,
                callback: Callback | None = None) -> torch.Tensor:
    """EDM's stochastic sampler (Karras et al. 2022, Algorithm 2; Algorithm 1, the deterministic one, when
    `s_churn` is 0): Heun's second-order steps of the probability-flow ODE, the last step to sigma = 0 an Euler
    step. `churn_noise(k)`: the standard normal noise of churn draw k (needed when `s_churn` > 0).
    `denoise_last`: return D(x; sigmas[-1]) instead of x (for stopping at sigma_n > 0, as the noise-only
    method samples). `callback` is called once per step, before it, with {x: the state at sigma_hat, i,
    sigma: sigmas[i], sigma_hat: the level after churn (sigmas[i] without), sigma_next: sigmas[i + 1],
    denoised: D(x; sigma_hat)} (float64 tensors). The state is float64, the network float32."""
    return _run(True, denoiser, x_init, sigmas, s_churn, s_tmin, s_tmax, s_noise, churn_noise, denoise_last,
                callback)


@torch.no_grad()
def sample_euler(denoiser: Denoiser, x_init: torch.Tensor, sigmas: torch.Tensor, *, s_churn: float = 0.0,
                 s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
                 churn_noise: NoiseFn | None = None, denoise_last: bool = False,
                 callback: Callback | None = None) -> torch.Tensor:
    """Karras et al. 2022, Algorithm 2 with first-order (Euler) steps only: line 8 without Heun's correction
    (lines 9-11); one network call per step. Arguments and `callback` as `sample_heun`."""
    return _run(False, denoiser, x_init, sigmas, s_churn, s_tmin, s_tmax, s_noise, churn_noise, denoise_last,
                callback)


SAMPLERS: dict[str, Sampler] = {"heun": sample_heun, "euler": sample_euler}  # keys: sample_options.SOLVERS


def sampler(solver: str) -> Sampler:
    """The sampler of a `--solver` name (`SOLVERS`: heun, euler)."""
    if solver not in SAMPLERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    return SAMPLERS[solver]
