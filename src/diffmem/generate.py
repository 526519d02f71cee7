"""Generate images from a trained denoiser with the EDM samplers; the run's method says how its network is called
(`Method.denoiser`, `sample_inputs`) and where sampling stops (`sample_stop`).

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
from diffmem.diffusion.methods import Method, method_of
from diffmem.diffusion.precond import EDMPrecond
from diffmem.diffusion.sample_options import SAMPLE_BATCH, SampleOptions
from diffmem.diffusion.samplers import fixed_rows, karras_sigmas, per_sample_noise, sampler
from diffmem.errors import DiffmemError
from diffmem.utils.precision import autocast

# Rows per network call while sampling, whatever --batch is (the last call of a batch is padded): small on
# a CPU (64: at 8x8, 37 samples/s against 27 with 16 rows and 45 with 256, one thread), where a few samples
# should not cost a full batch; the default batch on accelerators.
NET_ROWS = {"cpu": 64}
NET_ROWS_ACCELERATOR = SAMPLE_BATCH


def net_rows(device: str | torch.device) -> int:
    """The rows of every network call `generate` makes on `device` (its type decides)."""
    return NET_ROWS.get(torch.device(device).type, NET_ROWS_ACCELERATOR)


def method_sigmas(cfg: TrainConfig, opts: SampleOptions, method: Method | None = None) -> tuple[torch.Tensor, bool]:
    """The noise schedule for a run's method (`method`, else built from `cfg`), and whether to return
    D(x; last sigma): a method with a `sample_stop` (noise-only models never learned below sigma_n) is sampled
    down to it and returns E[x0 | x_stop]."""
    stop = (method if method is not None else method_of(cfg.method)).sample_stop
    if stop is not None:
        return karras_sigmas(opts.steps, stop, opts.sigma_max, opts.rho)[:-1], True
    return karras_sigmas(opts.steps, opts.sigma_min, opts.sigma_max, opts.rho), False


def check_sample_count(n: int, meta: dict) -> None:
    """Refuse a sample count below 1, or one whose images would not fit in memory, before anything is allocated."""
    if n < 1:
        raise DiffmemError(f"--n must be a positive integer, got {n}")
    c, res = meta["channels"], meta["resolution"]
    check_fits(n, res, res, c, what=f"--n {n}", per_value=2, held="the uint8 samples, then all of them in one array",
               fix="ask for fewer samples (several runs with --seed give more)")


def generate(net: EDMPrecond, cfg: TrainConfig, meta: dict, n: int, seed: int = 0, batch: int = SAMPLE_BATCH,
             opts: SampleOptions = SampleOptions(), labels: np.ndarray | None = None, start: int = 0,
             device: str | torch.device = "cpu", progress: bool = True) -> np.ndarray:
    """n images (uint8 [n, H, W, C]) with indices start..start+n-1; labels [n] for conditional runs."""
    check_sample_count(n, meta)
    c, res = meta["channels"], meta["resolution"]
    conditional = cfg.network.num_classes > 0
    if conditional and labels is None:
        labels = (np.arange(start, start + n) % cfg.network.num_classes).astype(np.int64)
    if labels is not None:
        if not conditional:
            raise DiffmemError("class labels were given, but the run is unconditional (trained without --cond)")
        if labels.min() < 0 or labels.max() >= cfg.network.num_classes:
            raise DiffmemError(f"--class must be in [0, {cfg.network.num_classes - 1}]")
    method = method_of(cfg.method)
    sigmas, denoise_last = method_sigmas(cfg, opts, method)
    draws = 1 + (len(sigmas) - 1 if opts.s_churn > 0 else 0)
    rows = fixed_rows(method.denoiser(net), net_rows(device))  # (x, sigma, labels, per-sample inputs) -> D
    out = []
    bar = tqdm(total=n, disable=not progress, unit="img", desc="sample")
    for lo in range(start, start + n, batch):
        idx = list(range(lo, min(lo + batch, start + n)))
        noise = per_sample_noise(seed, idx, (c, res, res), draws).to(device)  # [draws, B, C, H, W]
        lab = torch.from_numpy(labels[idx[0] - start: idx[-1] - start + 1]).to(device) if labels is not None else None
        inputs = method.sample_inputs(seed, idx, (res, res))  # e.g. masking's inference masks
        inputs = inputs.to(device) if inputs is not None else None

        def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            with autocast(x.device, opts.precision):  # the sampler's own steps stay in float32
                return rows(x, sigma, lab, inputs).float()

        x = sampler(opts.solver)(denoiser, noise[0], sigmas.to(device), s_churn=opts.s_churn, s_tmin=opts.s_tmin,
                                 s_tmax=opts.s_tmax, s_noise=opts.s_noise, churn_noise=lambda k: noise[k],
                                 denoise_last=denoise_last)
        out.append(to_uint8(x.cpu()))
        bar.update(len(idx))
    bar.close()
    return np.concatenate(out)
