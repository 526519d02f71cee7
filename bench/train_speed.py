"""Training throughput: diffmem's training step vs a bare forward/backward/optimizer loop.

Both loops use the same network (the preset's UNet inside EDM preconditioning), batch and device in
the same process; the ratio is what matters on a shared, noisy machine. Prints one table.

    python bench/train_speed.py                      # tiny and cifar presets, CPU
    python bench/train_speed.py --presets cifar --batch 256 --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from diffmem.config import PRESETS, MethodConfig, OptimConfig, TrainConfig
from diffmem.diffusion.losses import noise_levels
from diffmem.diffusion.precond import EDMPrecond
from diffmem.diffusion.methods import build_method
from diffmem.models.denoiser import build_denoiser
from diffmem.train.stack import EMA, ema_beta
from diffmem.train.loop import TrainData, draw_batch, training_step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(preset: str, res: int, ch: int, batch: int, steps: int, warmup: int, device: torch.device,
          method: str, precision: str = "fp32", compile: bool = False) -> tuple[float, float, int]:
    cfg = TrainConfig(network=PRESETS[preset], optim=OptimConfig(batch=batch),
                      method=MethodConfig(method, sigma_n=0.5) if method == "ambient" else MethodConfig(method))
    loss = build_method(cfg)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand((512, ch, res, res), generator=gen) * 2 - 1
    data = TrainData(x0, None, {"y": x0 + 0.5 * torch.randn(x0.shape, generator=gen)} if method == "ambient" else {})

    torch.manual_seed(0)
    net = build_denoiser(cfg, res, ch).to(device)
    ema = EMA(net)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.01)
    beta = ema_beta(batch, 5.0, None)
    g = torch.Generator().manual_seed(0)

    train_net = EDMPrecond(torch.compile(net.backbone), cfg.sigma_data) if compile else None

    def diffmem_step() -> None:
        training_step(loss, net, ema, opt, draw_batch(data, cfg, loss, g, device), 1e-4, beta, train_net, precision)

    bare_net = build_denoiser(cfg, res, ch).to(device)
    if compile:
        bare_net.backbone = torch.compile(bare_net.backbone)
    amp = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
           else contextlib.nullcontext())
    bare_opt = torch.optim.AdamW(bare_net.parameters(), lr=1e-4, weight_decay=0.01)
    xb = x0[:batch].to(device) if batch <= 512 else x0.repeat(batch // 512 + 1, 1, 1, 1)[:batch].to(device)
    nb = torch.randn_like(xb)
    sb = noise_levels(torch.rand(batch, generator=gen), -1.2, 1.2).to(device)

    def bare_step() -> None:  # the minimum any trainer must do: forward, loss, backward, step
        with amp:
            out = bare_net(xb + sb.reshape(-1, 1, 1, 1) * nb, sb)
        loss = ((out.float() - xb) ** 2).mean()
        bare_opt.zero_grad(set_to_none=True)
        loss.backward()
        bare_opt.step()

    def rate(fn) -> float:
        for _ in range(warmup):
            fn()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        _sync(device)
        return steps * batch / (time.perf_counter() - t0)

    # interleave the two measurements twice so drift on a shared machine hits both alike
    r_d1, r_b1 = rate(diffmem_step), rate(bare_step)
    r_b2, r_d2 = rate(bare_step), rate(diffmem_step)
    params = sum(p.numel() for p in net.backbone.parameters())
    return (r_d1 + r_d2) / 2, (r_b1 + r_b2) / 2, params


def sample_rate(preset: str, res: int, ch: int, batch: int, device: torch.device) -> float:
    """Images/s of EDM Heun with 18 steps (35 network evaluations) through diffmem.generate."""
    from diffmem.generate import generate

    cfg = TrainConfig(network=PRESETS[preset])
    net = build_denoiser(cfg, res, ch).to(device).eval()
    meta = {"channels": ch, "resolution": res}
    generate(net, cfg, meta, min(batch, 8), batch=batch, device=device, progress=False)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    generate(net, cfg, meta, batch, batch=batch, device=device, progress=False)
    _sync(device)
    return batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="tiny,cifar")
    ap.add_argument("--batch", type=int, default=None, help="default: 64 for tiny, 16 for cifar on CPU")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--method", default="ambient", choices=["edm", "ambient"])
    ap.add_argument("--precision", default="fp32", help="comma list of fp32,bf16")
    ap.add_argument("--compile", default="off", help="comma list of off,on")
    ap.add_argument("--sample", action="store_true", help="also measure sampling images/s")
    args = ap.parse_args()
    device = torch.device(args.device)
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}"
          f" ({torch.get_num_threads()} threads), torch {torch.__version__}, method {args.method}")
    print(f"{'preset':8} {'res':>4} {'params':>8} {'batch':>5} {'prec':>5} {'compile':>7} "
          f"{'diffmem img/s':>14} {'bare img/s':>11} {'overhead':>9} {'peak GiB':>9}")
    for preset in args.presets.split(","):
        res, ch = (16, 1) if preset == "tiny" else (32, 3)
        batch = args.batch or (64 if preset == "tiny" else 16)
        steps = args.steps or (30 if preset == "tiny" else 4)
        for precision in args.precision.split(","):
            for comp in args.compile.split(","):
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                d, b, params = bench(preset, res, ch, batch, steps, 3 if comp == "on" else 2, device,
                                     args.method, precision, comp == "on")
                peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
                print(f"{preset:8} {res:>4} {params / 1e6:>7.2f}M {batch:>5} {precision:>5} {comp:>7} "
                      f"{d:>14.1f} {b:>11.1f} {b / d - 1:>+8.1%} {peak:>9.2f}", flush=True)
        if args.sample:
            print(f"{preset:8} sampling (Heun, 18 steps, batch {batch}): "
                  f"{sample_rate(preset, res, ch, batch, device):.1f} img/s", flush=True)


if __name__ == "__main__":
    main()
