"""Generate images from a trained denoiser with the EDM samplers, per method.

Sample i depends only on (seed, i): its initial noise, churn noise and (masking) inference mask come
from a generator seeded by both, and the network always runs on NET_ROWS rows at a time
(`diffusion.samplers.fixed_rows`), so the batch size and the number of processes never change it, to the
last bit (on one device type: a GPU's arithmetic differs from a CPU's).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from diffmem.config import TrainConfig
from diffmem.data.datasets import to_uint8
from diffmem.data.limits import check_fits
from diffmem.diffusion.methods import method_of
from diffmem.diffusion.precond import EDMPrecond
from diffmem.diffusion.sample_options import SAMPLE_BATCH, SampleOptions
from diffmem.diffusion.samplers import fixed_rows, karras_sigmas, per_sample_noise, sample_seed, sampler
from diffmem.errors import DiffmemError

# Rows per network call while sampling, whatever --batch is (the last call of a batch is padded): small on
# a CPU (64: at 8x8, 37 samples/s against 27 with 16 rows and 45 with 256, one thread), where a few samples
# should not cost a full batch; the default batch on accelerators.
NET_ROWS = {"cpu": 64}
NET_ROWS_ACCELERATOR = SAMPLE_BATCH


def net_rows(device: str | torch.device) -> int:
    """The rows of every network call `generate` makes on `device` (its type decides)."""
    return NET_ROWS.get(torch.device(device).type, NET_ROWS_ACCELERATOR)


def method_sigmas(cfg: TrainConfig, opts: SampleOptions) -> tuple[torch.Tensor, bool]:
    """The noise schedule for a run's method, and whether to return D(x; last sigma).

    Noise-only models never learned below sigma_n: sample down to sigma_n and return E[x0 | x_{sigma_n}].
    """
    stop = method_of(cfg.method).sample_stop
    if stop is not None:
        return karras_sigmas(opts.steps, stop, opts.sigma_max, opts.rho)[:-1], True
    return karras_sigmas(opts.steps, opts.sigma_min, opts.sigma_max, opts.rho), False


def _inference_masks(cfg: TrainConfig, seed: int, indices: list[int], shape: tuple[int, int]) -> torch.Tensor:
    """Masking method: one fixed mask per sample for the whole trajectory, erasing pixels with the
    same probability as training's A~ = B A, i.e. 1 - (1 - p)(1 - delta)."""
    keep_p = (1 - cfg.method.mask_p) * (1 - cfg.method.mask_delta)
    masks = []
    for i in indices:
        g = torch.Generator().manual_seed(sample_seed(seed, i) ^ 0x5A5A5A5A)
        masks.append((torch.rand((1, *shape), generator=g) < keep_p).float())
    return torch.stack(masks)


def generate(net: EDMPrecond, cfg: TrainConfig, meta: dict, n: int, seed: int = 0, batch: int = SAMPLE_BATCH,
             opts: SampleOptions = SampleOptions(), labels: np.ndarray | None = None, start: int = 0,
             device: str | torch.device = "cpu", progress: bool = True) -> np.ndarray:
    """n images (uint8 [n, H, W, C]) with indices start..start+n-1; labels [n] for conditional runs."""
    if n < 1:
        raise DiffmemError(f"--n must be a positive integer, got {n}")
    c, res = meta["channels"], meta["resolution"]
    check_fits(n, res, res, c, what=f"--n {n}", per_value=2, held="the uint8 samples, then all of them in one array",
               fix="ask for fewer samples (several runs with --seed give more)")
    conditional = cfg.network.num_classes > 0
    if conditional and labels is None:
        labels = (np.arange(start, start + n) % cfg.network.num_classes).astype(np.int64)
    if labels is not None:
        if not conditional:
            raise DiffmemError("class labels were given, but the run is unconditional (trained without --cond)")
        if labels.min() < 0 or labels.max() >= cfg.network.num_classes:
            raise DiffmemError(f"--class must be in [0, {cfg.network.num_classes - 1}]")
    method = method_of(cfg.method)
    sigmas, denoise_last = method_sigmas(cfg, opts)
    draws = 1 + (len(sigmas) - 1 if opts.s_churn > 0 else 0)

    def network(x: torch.Tensor, sigma: torch.Tensor, lab: torch.Tensor | None, extra: torch.Tensor | None):
        if extra is not None:
            return net(extra * x, sigma, lab, extra=extra, observed=extra)
        return net(x, sigma, lab)

    rows = fixed_rows(network, net_rows(device))
    out = []
    bar = tqdm(total=n, disable=not progress, unit="img", desc="sample")
    for lo in range(start, start + n, batch):
        idx = list(range(lo, min(lo + batch, start + n)))
        noise = per_sample_noise(seed, idx, (c, res, res), draws).to(device)  # [draws, B, C, H, W]
        lab = torch.from_numpy(labels[idx[0] - start: idx[-1] - start + 1]).to(device) if labels is not None else None
        extra = _inference_masks(cfg, seed, idx, (res, res)).to(device) if method.needs_masks else None

        def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            return rows(x, sigma, lab, extra)

        x = sampler(opts.solver)(denoiser, noise[0], sigmas.to(device), s_churn=opts.s_churn, s_tmin=opts.s_tmin,
                                 s_tmax=opts.s_tmax, s_noise=opts.s_noise, churn_noise=lambda k: noise[k],
                                 denoise_last=denoise_last)
        out.append(to_uint8(x.cpu()))
        bar.update(len(idx))
    bar.close()
    return np.concatenate(out)
