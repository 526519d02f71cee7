"""How heavy-tailed is each ambient weighting's loss at the exact optimum? Prints a table.

    python bench/weighting_tails.py                 # 1e6 draws per weighting, sigma_n 0.5 (a few minutes)
    python bench/weighting_tails.py --n 200000 --sigma-n 1
    python bench/weighting_tails.py --runs RUN [RUN ...] --n 100000   # trained networks on their own data

Gaussian data (sd 0.5 per pixel, 64 pixels), the exact denoiser, s from EDM's training log-normal
(diffmem.diffusion.tails). Columns: mean and median per-sample loss, the Hill tail index of the loss
(top 0.1%; below 2: infinite variance, below 1: infinite mean), the share of the total loss carried by
the top 0.1% of draws, the largest draw, the tail index of the high-branch gradient, the spread (std)
of the batch-mean loss over batches of 64, and Adam's late-step RMS in the one-parameter toy (3 seeds).
With --runs: the same loss statistics for trained runs (EMA weights), drawn the way training draws its
batches (the run's own data, noisy copies, noise levels and objective), so that the tails can be read
during real training too; the Adam step sizes of real training are in each run's log (update_rms).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from diffmem.diffusion.tails import adam_toy, hill_tail_index, optimum_draws
from diffmem.diffusion.weighting import WEIGHTINGS, make_weighting


def run_draws(run: str, n: int, seed: int) -> "torch.Tensor":
    """n per-sample losses of a trained run's own objective at its EMA weights (no gradient)."""
    from diffmem.diffusion.methods import compute_loss
    from diffmem.train.checkpoint import load_denoiser
    from diffmem.train.loop import draw_batch, load_train_data

    net, cfg, _ = load_denoiser(run)
    data = load_train_data(cfg, Path(run), True)
    g = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for _ in range(max(1, n // 1000)):
            batch = draw_batch(data, cfg, g, torch.device("cpu"))
            while batch.x0.shape[0] < 1000:  # widen to 1000 rows by drawing more batches
                more = draw_batch(data, cfg, g, torch.device("cpu"))
                batch = type(batch)(**{k: (torch.cat([getattr(batch, k), getattr(more, k)])
                                           if getattr(batch, k) is not None else None)
                                       for k in batch.__dataclass_fields__})
            out.append(compute_loss(cfg, net, batch).loss[:1000].double())
    return torch.cat(out)


def runs_table(runs: list[str], n: int, seed: int) -> None:
    print(f"{n} draws per run (EMA weights, the run's own data and objective), seed {seed}")
    print("| run | mean | median | loss tail index | top 0.1% share | max | batch-loss std (64) |")
    print("|---|---|---|---|---|---|---|")
    for run in runs:
        loss = run_draws(run, n, seed)
        top = float(loss.sort(descending=True).values[: max(1, loss.numel() // 1000)].sum() / loss.sum())
        batches = loss[: loss.numel() // 64 * 64].reshape(-1, 64).mean(1)
        print(f"| {Path(run).name} | {float(loss.mean()):.3g} | {float(loss.median()):.3g} | "
              f"{hill_tail_index(loss):.2f} | {top:.3f} | {float(loss.max()):.3g} | {float(batches.std()):.3g} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="draws per weighting (default 1e6)")
    p.add_argument("--sigma-n", type=float, default=0.5)
    p.add_argument("--cap", type=float, default=4.0, help="the capped weighting's cap (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", nargs="+", default=None, help="trained run folders: their own loss statistics")
    a = p.parse_args()
    if a.runs:
        runs_table(a.runs, a.n, a.seed)
        return
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
