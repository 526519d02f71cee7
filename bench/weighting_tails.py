"""How heavy-tailed is each ambient weighting's loss at the exact optimum? Prints a table.

    python bench/weighting_tails.py                 # 1e6 draws per weighting, sigma_n 0.5 (a few minutes)
    python bench/weighting_tails.py --n 200000 --sigma-n 1

Gaussian data (sd 0.5 per pixel, 64 pixels), the exact denoiser, s from EDM's training log-normal
(diffmem.diffusion.tails). Columns: mean and median per-sample loss, the Hill tail index of the loss
(top 0.1%; below 2: infinite variance, below 1: infinite mean), the share of the total loss carried by
the top 0.1% of draws, the largest draw, the tail index of the high-branch gradient, the spread (std)
of the batch-mean loss over batches of 64, and Adam's late-step RMS in the one-parameter toy (3 seeds).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from diffmem.diffusion.tails import adam_toy, hill_tail_index, optimum_draws
from diffmem.diffusion.weighting import WEIGHTINGS, make_weighting


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="draws per weighting (default 1e6)")
    p.add_argument("--sigma-n", type=float, default=0.5)
    p.add_argument("--cap", type=float, default=4.0, help="the capped weighting's cap (default 4)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    print(f"sigma_n {a.sigma_n}, {a.n} draws, seed {a.seed}")
    print("| weighting | mean | median | loss tail index | top 0.1% share | max | high-branch gradient tail index "
          "| batch-loss std (64) | Adam step RMS / lr |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in WEIGHTINGS:
        w = make_weighting(name, a.cap)
        d = optimum_draws(w, a.n, a.sigma_n, torch.Generator().manual_seed(a.seed))
        loss = d["loss"]
        top = float(loss.sort(descending=True).values[: max(1, a.n // 1000)].sum() / loss.sum())
        batches = loss[: a.n // 64 * 64].reshape(-1, 64).mean(1)
        g_high = d["grad"][d["high"]].abs()
        adam = [adam_toy(w, a.sigma_n, torch.Generator().manual_seed(a.seed + k)) / 1e-3 for k in range(3)]
        print(f"| {w.label()} | {float(loss.mean()):.3g} | {float(loss.median()):.3g} | {hill_tail_index(loss):.2f} | "
              f"{top:.3f} | {float(loss.max()):.3g} | {hill_tail_index(g_high):.2f} | {float(batches.std()):.3g} | "
              f"{np.mean(adam):.3f} ± {np.std(adam, ddof=1):.3f} |")


if __name__ == "__main__":
    main()
