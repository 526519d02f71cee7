"""Denoising error on training vs held-out images, per noise level: where has a model memorized?

    python bench/denoise_gap.py RUN [RUN ...] [--sigmas 0.05,0.2,0.5,1,2,4] [--n 300]

For each run (EMA weights) and noise level s: the mean squared error per pixel of D(x + s z; s) against x,
on the first `--n` of the run's training images and the first `--n` of its held-out images (a set smaller
than `--n` is used whole, so a run on 50 digits compares its 50 training digits with 300 held-out ones: the
table's "images" column gives both counts), with the same noise draws for every run.
A model that generalizes denoises both alike (ratio near 1); one that memorized denoises its training
images much better (held-out / train >> 1) at the noise levels where it memorized. Prints one table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def gap(run: Path, sigmas: list[float], n: int, seed: int) -> tuple[tuple[int, int], list[tuple[float, float, float]]]:
    """((training images, held-out images) used, [(s, train mse, held-out mse)]) of one run."""
    import torch

    from diffmem.data.datasets import to_model_range
    from diffmem.train.checkpoint import load_denoiser
    from diffmem.train.rundir import run_datasets

    net, cfg, _ = load_denoiser(run)
    if cfg.method.name == "masking":
        raise SystemExit(f"{run}: masking models take a mask; not measured here")
    train, held = run_datasets(run)
    counts = (len(train.images[:n]), len(held.images[:n]))
    out = []
    with torch.no_grad():
        for s in sigmas:
            errs = []
            for images in (train.images[:n], held.images[:n]):
                x = to_model_range(images)
                g = torch.Generator().manual_seed(seed)
                z = torch.randn(x.shape, generator=g)
                d = net(x + s * z, torch.full((x.shape[0],), s), None)
                errs.append(float(((d - x) ** 2).mean()))
            out.append((s, errs[0], errs[1]))
    return counts, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--sigmas", default="0.05,0.2,0.5,1,2,4")
    p.add_argument("--n", type=int, default=300, help="Images per set (default 300).")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    sigmas = [float(v) for v in args.sigmas.split(",")]
    heads = [f"s={s:g}: train / held-out (ratio)" for s in sigmas]
    print("| run | images: train / held-out | " + " | ".join(heads) + " |")
    print("|---|---|" + "---|" * len(sigmas))
    for run in args.runs:
        (n_train, n_held), rows = gap(run, sigmas, args.n, args.seed)
        cells = [f"{tr:.4f} / {he:.4f} ({he / tr:.2f})" for _, tr, he in rows]
        print(f"| {run.name} | {n_train} / {n_held} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
