"""CPU throughput of candidate networks at 32x32 RGB (CIFAR-10's size): training and sampling images/s.

Training goes through diffmem's own step (`draw_batch` + `training_step`: Algorithm 1's loss, AdamW, EMA;
built as in bench/train_speed.py); sampling through `diffmem.generate` (EDM Heun, 18 steps, 35 network
evaluations). Every configuration is measured at each thread count in turn, several rounds, so that
drift on a shared machine hits all alike. Each rate is given per second of wall time and per core-second
(the process's CPU time: what a core-hour budget pays, and much less disturbed by other jobs on a shared
machine); the ratios to `tiny` are medians of per-core-second ratios within a round. Random images:
speed does not depend on the data.

    python bench/cifar_speed.py                     # all candidates, 1 and 2 threads
    python bench/cifar_speed.py --configs tiny,c16 --threads 1 --rounds 3
    python bench/cifar_speed.py --configs tiny --threads 1 --precisions fp32,bf16   # bfloat16 autocast
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
import torch

from diffmem.config import MethodConfig, NetworkConfig, OptimConfig, TrainConfig
from diffmem.generate import generate
from diffmem.diffusion.methods import build_method
from diffmem.models.denoiser import build_denoiser
from diffmem.models.unet import count_parameters
from diffmem.train.stack import EMA, ema_beta
from diffmem.train.loop import TrainData, draw_batch, training_step

RES, CH = 32, 3
# name: (channels per level, layers per block, attention resolutions)
CANDIDATES: dict[str, tuple[tuple[int, ...], int, tuple[int, ...]]] = {
    "tiny": ((32, 64, 64), 2, ()),
    "tiny-a16": ((32, 64, 64), 2, (16,)),
    "tiny-a8": ((32, 64, 64), 2, (8,)),
    "t1": ((32, 64, 64), 1, ()),
    "t1-a8": ((32, 64, 64), 1, (8,)),
    "c16": ((16, 32, 32), 1, ()),
    "c16-a8": ((16, 32, 32), 1, (8,)),
    "c2": ((32, 64), 1, ()),
    "c2-a16": ((32, 64), 1, (16,)),
}


class Candidate:
    """One network with its optimizer, EMA, training data and generator, ready to step."""

    def __init__(self, name: str, batch: int, sigma_n: float, precision: str = "fp32") -> None:
        self.precision = precision  # "bf16": training's forward pass and sampling under bfloat16 autocast
        channels, layers, attn = CANDIDATES[name]
        self.cfg = TrainConfig(network=NetworkConfig(name, channels, layers, attn, 0.0),
                               optim=OptimConfig(batch=batch), method=MethodConfig("ambient", sigma_n=sigma_n))
        self.method = build_method(self.cfg)
        gen = torch.Generator().manual_seed(0)
        x0 = torch.rand((300, CH, RES, RES), generator=gen) * 2 - 1  # 300 images: the paper's Table 1 size
        self.data = TrainData(x0, None, {"y": x0 + sigma_n * torch.randn(x0.shape, generator=gen)})
        torch.manual_seed(0)
        self.net = build_denoiser(self.cfg, RES, CH)
        self.ema = EMA(self.net)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=1e-4, weight_decay=0.01)
        self.beta = ema_beta(batch, 5.0, None)
        self.g = torch.Generator().manual_seed(0)
        self.params = count_parameters(self.net.backbone)

    def train_rate(self, steps: int) -> tuple[float, float]:
        """Training images per wall second and per CPU second over `steps` steps (after one warm-up step)."""
        dev = torch.device("cpu")
        step = lambda: training_step(self.method, self.net, self.ema, self.opt,  # noqa: E731
                                     draw_batch(self.data, self.cfg, self.method, self.g, dev), 1e-4, self.beta,
                                     precision=self.precision)
        step()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        n = steps * self.cfg.optim.batch
        return n / (time.perf_counter() - t0), n / (time.process_time() - c0)

    def sample_rate(self, n: int) -> tuple[float, float]:
        """Sampled images per wall and per CPU second, EDM Heun 18 steps, n images in one batch (after a
        1-image warm-up)."""
        self.net.eval()
        meta = {"channels": CH, "resolution": RES}
        bf16 = torch.autocast("cpu", dtype=torch.bfloat16) if self.precision == "bf16" else contextlib.nullcontext()
        with bf16:
            generate(self.net, self.cfg, meta, 1, batch=1, progress=False)
            t0, c0 = time.perf_counter(), time.process_time()
            generate(self.net, self.cfg, meta, n, batch=n, progress=False)
        rates = n / (time.perf_counter() - t0), n / (time.process_time() - c0)
        self.net.train()
        return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=",".join(CANDIDATES))
    ap.add_argument("--threads", default="1,2", help="comma list of torch thread counts")
    ap.add_argument("--batch", type=int, default=64, help="training batch (the issue's probe used 64)")
    ap.add_argument("--steps", type=int, default=2, help="timed training steps per measurement")
    ap.add_argument("--sample-n", type=int, default=16, help="images per sampling measurement")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--sigma-n", type=float, default=0.2)
    ap.add_argument("--precisions", default="fp32", help="comma list of fp32, bf16 (bfloat16 autocast)")
    args = ap.parse_args()
    precisions = args.precisions.split(",")
    if any(p not in ("fp32", "bf16") for p in precisions):
        ap.error(f"--precisions takes fp32 and/or bf16, got {args.precisions!r}")
    # a configuration is a network at one precision: "tiny" (fp32) or "tiny@bf16"
    names = [n if p == "fp32" else f"{n}@{p}" for n in args.configs.split(",") for p in precisions]
    threads = [int(t) for t in args.threads.split(",")]
    nets = {name: Candidate(name.split("@")[0], args.batch, args.sigma_n, (name.split("@") + ["fp32"])[1])
            for name in names}
    train: dict[tuple[str, int], list[tuple[float, float]]] = {}  # (per wall s, per core s) per round
    sample: dict[tuple[str, int], list[tuple[float, float]]] = {}
    t_start = time.perf_counter()
    for r in range(args.rounds):
        for t in threads:
            torch.set_num_threads(t)
            for name in names if r % 2 == 0 else reversed(names):  # alternate the order between rounds
                train.setdefault((name, t), []).append(nets[name].train_rate(args.steps))
                sample.setdefault((name, t), []).append(nets[name].sample_rate(args.sample_n))
                (tw, tc), (sw, sc) = train[name, t][-1], sample[name, t][-1]
                print(f"round {r} threads {t} {name}: train {tw:.1f} img/s ({tc:.1f} per core-s), "
                      f"sample {sw:.2f} img/s ({sc:.2f} per core-s)", flush=True)
    print(f"\n32x32 RGB, CPU, torch {torch.__version__}, train batch {args.batch} (Algorithm 1 loss, "
          f"sigma_n {args.sigma_n}), sampling Heun 18 steps in batches of {args.sample_n}; median of "
          f"{args.rounds} rounds; {time.perf_counter() - t_start:.0f} s in all\n")
    ref = "tiny" if "tiny" in names else names[0]
    cols = " | ".join(f"train img/s {t}t (per core-s) | sample img/s {t}t (per core-s)" for t in threads)
    print(f"| network | channels | layers/block | attention | parameters | {cols} | train vs {ref} | "
          f"sample vs {ref} |")
    print("|---|---|---|---|---|" + "---|---|" * len(threads) + "---|---|")

    def med(rates: list[tuple[float, float]], i: int) -> float:
        return float(np.median([r[i] for r in rates]))

    def ratio(table: dict, name: str) -> float:  # per core-second, within each round and thread count
        return float(np.median([a[1] / b[1] for t in threads for a, b in zip(table[name, t], table[ref, t])]))

    for name in names:
        channels, layers, attn = CANDIDATES[name.split("@")[0]]
        cells = []
        for t in threads:
            cells += [f"{med(train[name, t], 0):.1f} ({med(train[name, t], 1):.1f})",
                      f"{med(sample[name, t], 0):.2f} ({med(sample[name, t], 1):.2f})"]
        print(f"| {name} | {','.join(map(str, channels))} | {layers} | {','.join(map(str, attn)) or '-'} | "
              f"{nets[name].params / 1e6:.2f}M | " + " | ".join(cells) +
              f" | {ratio(train, name):.2f} | {ratio(sample, name):.2f} |")


if __name__ == "__main__":
    main()
