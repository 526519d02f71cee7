"""How heavy-tailed is each ambient weighting's loss at the exact optimum? Prints a table.

    python bench/weighting_tails.py                 # 1e6 draws per weighting, sigma_n 1 and 0.5 (minutes)
    python bench/weighting_tails.py --n 200000 --sigma-n 1
    python bench/weighting_tails.py --runs RUN [RUN ...] --n 100000   # trained networks on their own data

Gaussian data (sd 0.5 per pixel, 64 pixels), the exact denoiser, s from EDM's training log-normal
(diffmem.theory.tails), at sigma_n 1 (the frontier's, docs/results.md) and 0.5. Columns: mean and median
per-sample loss, the Hill tail index of the loss (below 2: infinite variance, below 1: infinite mean) from its
k = n/1000 largest draws with the bootstrap standard deviation of that estimate (20 resamples of the n draws),
the same estimate at k = 100 and k = 10^4 (a tail index that drifts with k is not yet a power law's), the share
of the total loss carried by the top 0.1% of draws, the largest draw, the tail index of the high-branch gradient
(k = 0.1% of those draws), the spread (std) of the batch-mean loss over batches of 64, and Adam's late-step RMS
in the one-parameter toy (3 seeds).
With --runs: the same loss statistics for trained runs (EMA weights), drawn the way training draws its
batches (the run's own data, noisy copies, noise levels and objective), so that the tails can be read
during real training too; the Adam step sizes of real training are in each run's log (update_rms).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from diffmem.theory.tails import adam_toy, hill_tail_index, optimum_draws
from diffmem.diffusion.weighting import WEIGHTINGS, make_weighting


def run_draws(run: str, n: int, seed: int) -> "torch.Tensor":
    """n per-sample losses of a trained run's own objective at its EMA weights (no gradient)."""
    from diffmem.diffusion.methods import build_method
    from diffmem.train.checkpoint import load_denoiser
    from diffmem.train.loop import draw_batch, load_train_data

    net, cfg, _ = load_denoiser(run)
    method = build_method(cfg)
    data = load_train_data(cfg, Path(run), True, method=method)
    g = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for _ in range(max(1, n // 1000)):
            batch = draw_batch(data, cfg, method, g, torch.device("cpu"))
            while batch.x0.shape[0] < 1000:  # widen to 1000 rows by drawing more batches
                more = draw_batch(data, cfg, method, g, torch.device("cpu"))
                batch = type(batch)(**{k: _cat(getattr(batch, k), getattr(more, k))
                                       for k in batch.__dataclass_fields__})
            out.append(method(net, batch).loss[:1000].double())
    return torch.cat(out)


def _cat(a, b):
    """Rows of two batches' field together (tensors, the method's dicts of tensors, or None)."""
    import torch

    if a is None:
        return None
    if isinstance(a, dict):
        return {k: torch.cat([a[k], b[k]]) for k in a}
    return torch.cat([a, b])


def runs_table(runs: list[str], n: int, seed: int) -> None:
    print(f"{n} draws per run (EMA weights, the run's own data and objective), seed {seed}; "
          f"Hill k = {max(10, n // 1000)}")
    print("| run | mean | median | loss tail index | top 0.1% share | max | batch-loss std (64) |")
    print("|---|---|---|---|---|---|---|")
    for run in runs:
        loss = run_draws(run, n, seed)
        top = float(loss.sort(descending=True).values[: max(1, loss.numel() // 1000)].sum() / loss.sum())
        batches = loss[: loss.numel() // 64 * 64].reshape(-1, 64).mean(1)
        print(f"| {Path(run).name} | {float(loss.mean()):.3g} | {float(loss.median()):.3g} | "
              f"{hill_tail_index(loss):.2f} | {top:.3f} | {float(loss.max()):.3g} | {float(batches.std()):.3g} |")


def hill_spread(x: torch.Tensor, k: int, resamples: int, seed: int) -> float:
    """Bootstrap standard deviation of the Hill estimate with `k` (resampling the draws with replacement)."""
    v = np.asarray(x, dtype=np.float64)
    rng = np.random.default_rng(seed)
    return float(np.std([hill_tail_index(v[rng.integers(0, v.size, v.size)], k) for _ in range(resamples)], ddof=1))


def hill_cell(x: torch.Tensor, k: int, resamples: int, seed: int) -> str:
    """'alpha ± bootstrap sd' at k, or '-' when there are not more than k positive draws."""
    if int((x > 0).sum()) <= k:
        return "-"
    return f"{hill_tail_index(x, k):.2f} ± {hill_spread(x, k, resamples, seed):.2f}"


def optimum_table(sigma_n: float, n: int, cap: float, seed: int, resamples: int) -> None:
    """The exact-optimum table of every weighting at one sigma_n."""
    k = max(10, n // 1000)
    print(f"\nsigma_n {sigma_n:g}, {n} draws, seed {seed}; Hill k = {k} (0.1%) unless given, ± bootstrap sd "
          f"({resamples} resamples)")
    print(f"| weighting | mean | median | loss tail index (k = {k}) | at k = 100 / 10^4 | top 0.1% share | max "
          "| high-branch gradient tail index | batch-loss std (64) | Adam step RMS / lr |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in WEIGHTINGS:
        w = make_weighting(name, cap)
        d = optimum_draws(w, n, sigma_n, torch.Generator().manual_seed(seed))
        loss = d["loss"]
        top = float(loss.sort(descending=True).values[: max(1, n // 1000)].sum() / loss.sum())
        batches = loss[: n // 64 * 64].reshape(-1, 64).mean(1)
        g_high = d["grad"][d["high"]].abs()
        adam = [adam_toy(w, sigma_n, torch.Generator().manual_seed(seed + j)) / 1e-3 for j in range(3)]
        other = " / ".join(f"{hill_tail_index(loss, kk):.2f}" if loss.numel() > kk else "-" for kk in (100, 10_000))
        print(f"| {w.label()} | {float(loss.mean()):.3g} | {float(loss.median()):.3g} | "
              f"{hill_cell(loss, k, resamples, seed)} | {other} | {top:.3f} | {float(loss.max()):.3g} | "
              f"{hill_cell(g_high, max(10, g_high.numel() // 1000), resamples, seed)} | {float(batches.std()):.3g} | "
              f"{np.mean(adam):.3f} ± {np.std(adam, ddof=1):.3f} |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="draws per weighting (default 1e6)")
    p.add_argument("--sigma-n", type=float, nargs="+", default=[1.0, 0.5],
                   help="one table per value (default 1, the frontier's, and 0.5)")
    p.add_argument("--cap", type=float, default=4.0, help="the capped weighting's cap (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resamples", type=int, default=20, help="bootstrap resamples of the Hill estimate (default 20)")
    p.add_argument("--runs", nargs="+", default=None, help="trained run folders: their own loss statistics")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    if a.runs:
        runs_table(a.runs, a.n, a.seed)
        return
    for sigma_n in a.sigma_n:
        optimum_table(sigma_n, a.n, a.cap, a.seed, a.resamples)


if __name__ == "__main__":
    main()
