"""Text-to-image fine-tuning step: steps/s and peak memory, diffmem's step vs a bare diffusers step.

Both use the same randomly initialised UNet2DConditionModel, batch, precision and device in one process:
- diffmem: `diffmem.t2i.train.loss_step` (the method's loss, W24's extra no-grad forward if asked)
  + backward + clipping + AdamW + EMA update, as the training loop does it;
- bare: forward, MSE to the noise, backward, AdamW (what the diffusers example script does).
Latents and text embeddings are random (the VAE and text encoder are frozen and cost little per step).
The two are timed one after the other, each with its own UNet, so each gets its own peak memory; on a
shared machine repeat the run before trusting a small difference. Prints one table.

    python bench/t2i_speed.py                                   # tiny UNet, 32x32 images, CPU
    python bench/t2i_speed.py --unet sd2 --resolution 512 --batch 8 --device cuda \\
        --precision fp32,bf16 --gradient-checkpointing off,on --mitigation none,w24
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import time

import torch

from diffmem.t2i.config import T2IConfig
from diffmem.t2i.train import loss_step, trainable_state
from diffmem.train.stack import EMA

UNETS = {
    # SD 2(-base) UNet: 865M parameters, text embeddings 77 x 1024
    "sd2": dict(block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20), layers_per_block=2,
                cross_attention_dim=1024, use_linear_projection=True,
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
    "tiny": dict(block_out_channels=(32, 64), attention_head_dim=8, layers_per_block=1, cross_attention_dim=32,
                 down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
}
TEXT = {"sd2": (77, 1024), "tiny": (16, 32)}


def sd_alphas(n: int = 1000) -> torch.Tensor:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(unet_name: str, resolution: int, batch: int, steps: int, warmup: int, device: torch.device, precision: str,
          checkpointing: bool, method: str, mitigation: str) -> dict:
    from diffusers import UNet2DConditionModel

    factor = 8 if unet_name == "sd2" else 4
    h = resolution // factor
    seq, dim = TEXT[unet_name]
    cfg = T2IConfig(pretrained="-", data="-", method=method, t_n=100 if method == "ambient" else None,
                    mitigation=mitigation, w24_threshold=1e9 if mitigation == "w24" else None)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn((batch, 4, h, h), generator=gen).to(device)
    x_tn = (x0 + 0.1 * torch.randn(x0.shape, generator=gen).to(device)) if method == "ambient" else None
    emb = torch.randn((batch, seq, dim), generator=gen).to(device)
    empty = torch.randn((1, seq, dim), generator=gen).to(device) if mitigation == "w24" else None
    alphas = sd_alphas().to(device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()

    def make() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        unet = UNet2DConditionModel(sample_size=h, in_channels=4, out_channels=4, **UNETS[unet_name]).to(device)
        if checkpointing:
            unet.enable_gradient_checkpointing()
        unet.train()
        return unet, torch.optim.AdamW(unet.parameters(), lr=1e-5, weight_decay=0.01)

    def rate(fn) -> float:
        for _ in range(warmup):
            fn()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        _sync(device)
        return steps / (time.perf_counter() - t0)

    def peak() -> float:
        return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")

    def measure_diffmem() -> tuple[float, float, int]:
        unet, opt = make()
        params = trainable_state(unet)
        ema = EMA(params)

        def step() -> None:
            t = torch.randint(0, 1000, (batch,), generator=gen).to(device)
            noise = torch.randn(x0.shape, generator=gen).to(device)
            with amp:
                loss, *_ = loss_step(unet, unet, x0, x_tn, t, noise, emb, empty, alphas, "epsilon", cfg)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            ema.update(params, 0.9999)

        return rate(step), peak(), sum(p.numel() for p in params.values())

    def measure_bare() -> tuple[float, float]:
        unet, opt = make()

        def step() -> None:
            t = torch.randint(0, 1000, (batch,), generator=gen).to(device)
            noise = torch.randn(x0.shape, generator=gen).to(device)
            a = alphas[t].reshape(-1, 1, 1, 1)
            with amp:
                pred = unet(a.sqrt() * x0 + (1 - a).sqrt() * noise, t, encoder_hidden_states=emb).sample
            loss = (pred.float() - noise).pow(2).mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return rate(step), peak()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    r_d, peak_d, n_params = measure_diffmem()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    r_b, peak_b = measure_bare()
    return {"params": n_params, "diffmem": r_d, "bare": r_b, "peak": peak_d, "peak_bare": peak_b}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--unet", default="tiny", choices=sorted(UNETS))
    ap.add_argument("--resolution", type=int, default=None, help="image size (default: 32 tiny, 512 sd2)")
    ap.add_argument("--batch", type=int, default=None, help="default: 16 tiny, 8 sd2")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 tiny, 10 sd2)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", help="comma list of fp32,bf16")
    ap.add_argument("--gradient-checkpointing", default="off", help="comma list of off,on")
    ap.add_argument("--method", default="ambient", help="comma list of baseline,ambient")
    ap.add_argument("--mitigation", default="none", help="comma list of none,w24 (w24: one extra no-grad forward)")
    args = ap.parse_args()
    device = torch.device(args.device)
    res = args.resolution or (512 if args.unet == "sd2" else 32)
    batch = args.batch or (8 if args.unet == "sd2" else 16)
    steps = args.steps or (10 if args.unet == "sd2" else 20)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {name}, torch {torch.__version__}, UNet {args.unet}, {res}x{res} images, batch {batch}")
    print(f"{'method':8} {'mitig':5} {'prec':4} {'ckpt':4} {'params':>8} {'diffmem step/s':>14} {'bare step/s':>11} "
          f"{'overhead':>8} {'peak GiB':>8} {'bare GiB':>8}")
    for method in args.method.split(","):
        for mitigation in args.mitigation.split(","):
            for precision in args.precision.split(","):
                for ckpt in args.gradient_checkpointing.split(","):
                    r = bench(args.unet, res, batch, steps, 2, device, precision, ckpt == "on", method, mitigation)
                    print(f"{method:8} {mitigation:5} {precision:4} {ckpt:4} {r['params'] / 1e6:>7.1f}M "
                          f"{r['diffmem']:>14.2f} {r['bare']:>11.2f} {r['bare'] / r['diffmem'] - 1:>+8.1%} "
                          f"{r['peak']:>8.2f} {r['peak_bare']:>8.2f}", flush=True)
    if device.type == "cpu":
        print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
