"""Can FD and KID in `classifier:` feature space tell a copying generator from a generalising one on CIFAR-10?

The feature space is `classifier:<test split>` (a small CNN trained on the 2000 labelled test images,
disjoint from the training images compared here; docs/method.md, "Metrics"). Every comparison is
between a reference set A of n training images and a candidate set of n images, over seeded draws:

- floor:     n other training images (disjoint from A): what a perfect generaliser scores
- blur/noise: n other training images, Gaussian-blurred or with Gaussian pixel noise
- memoriser: n draws with replacement from 300 further training images (the paper's Table 1 size):
             a generator that returns its training images exactly

KID here is the unbiased MMD^2 of the two whole sets (polynomial kernel, evaluate/quality.py). Prints
the classifier's held-out accuracy and one markdown table of mean +- std over the draws.

    python bench/cifar_features.py --data shared/data/cifar10 --draws 10
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from diffmem.data.datasets import load_images
from diffmem.evaluate.features import get_extractor
from diffmem.evaluate.quality import feature_statistics, frechet_distance, kid


def gaussian_blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """uint8 `[N, H, W, C]` blurred by a separable Gaussian of `sigma` pixels (reflected borders)."""
    radius = max(1, int(np.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).float()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()  # [N, C, H, W]
    c = x.shape[1]
    x = F.pad(x, (radius,) * 4, mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    x = F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def add_noise(images: np.ndarray, std: float, seed: int) -> np.ndarray:
    """uint8 images plus Gaussian noise of `std` (on the [0, 1] pixel scale), clipped and rounded."""
    rng = np.random.default_rng(seed)
    noisy = images.astype(np.float64) + rng.normal(0.0, std * 255.0, images.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def compare(fa: torch.Tensor, fb: torch.Tensor) -> tuple[float, float]:
    """(FD, KID x 1e3) between two feature sets; KID on the whole sets (one subset of all n)."""
    mu_a, s_a = feature_statistics(fa)
    mu_b, s_b = feature_statistics(fb)
    n = min(len(fa), len(fb))
    return frechet_distance(mu_a, s_a, mu_b, s_b), 1e3 * kid(fa, fb, subsets=1, subset_size=n, generator=0)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="shared/data/cifar10", help="folder with cifar10-train.npz and cifar10-test.npz")
    ap.add_argument("--n", default="500,1000,2000", help="comma list of set sizes")
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--memorised", type=int, default=300, help="training images the memoriser returns")
    ap.add_argument("--blur", default="0.5,1.0", help="comma list of Gaussian blur sigmas (pixels)")
    ap.add_argument("--noise", default="0.05,0.1", help="comma list of noise stds (pixel range [0, 1])")
    args = ap.parse_args()
    folder = Path(args.data)
    sizes = [int(s) for s in args.n.split(",")]

    t0 = time.perf_counter()
    ext = get_extractor(f"classifier:{folder / 'cifar10-test.npz'}")
    info = ext.info
    print(f"feature space: classifier:<test split>, {info['n_train']} images fitted, held-out accuracy "
          f"{info['heldout_accuracy']:.3f} on {info['n_heldout']} (train accuracy {info['train_accuracy']:.3f}); "
          f"ready in {time.perf_counter() - t0:.0f} s (trained {info['train_seconds']:.0f} s when first made)")
    train = load_images(str(folder / "cifar10-train.npz")).images
    need = 2 * max(sizes) + args.memorised
    if need > len(train):
        raise SystemExit(f"need {need} training images for n={max(sizes)}, have {len(train)}")

    t0 = time.perf_counter()
    variants = {"floor": train}
    for s in args.blur.split(","):
        variants[f"blur {float(s):g} px"] = gaussian_blur(train, float(s))
    for i, s in enumerate(args.noise.split(",")):
        variants[f"noise {float(s):g}"] = add_noise(train, float(s), seed=100 + i)
    feats = {name: ext(images, batch_size=500) for name, images in variants.items()}
    print(f"embedded {len(variants)} x {len(train)} images in {time.perf_counter() - t0:.0f} s")

    rows: dict[str, dict[int, list[tuple[float, float]]]] = {}
    for n in sizes:
        for d in range(args.draws):
            perm = np.random.default_rng(d).permutation(len(train))
            a, b = perm[:n], perm[n : 2 * n]
            pool = perm[2 * n : 2 * n + args.memorised]
            copies = pool[np.random.default_rng(1000 + d).integers(0, len(pool), n)]
            fa = feats["floor"][a]
            for name, f in feats.items():
                rows.setdefault(name, {}).setdefault(n, []).append(compare(fa, f[b]))
            rows.setdefault(f"memoriser ({args.memorised} images)", {}).setdefault(n, []).append(
                compare(fa, feats["floor"][copies]))

    print(f"\n{args.draws} draws per cell, mean +- std; reference: n training images; KID x 1e3\n")
    head = " | ".join(f"FD n={n} | KID n={n}" for n in sizes)
    print(f"| candidate | {head} |")
    print("|---|" + "---|---|" * len(sizes))
    for name, by_n in rows.items():
        cells = []
        for n in sizes:
            v = np.asarray(by_n[n])
            cells += [f"{v[:, 0].mean():.3f} +- {v[:, 0].std(ddof=1):.3f}",
                      f"{v[:, 1].mean():.2f} +- {v[:, 1].std(ddof=1):.2f}"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    mem = rows[f"memoriser ({args.memorised} images)"]
    print("\nmemoriser - floor, paired over draws (mean +- std; share of draws where the memoriser scores worse):")
    for n in sizes:
        diff = np.asarray(mem[n]) - np.asarray(rows["floor"][n])
        print(f"  n={n}: FD {diff[:, 0].mean():+.3f} +- {diff[:, 0].std(ddof=1):.3f} ({(diff[:, 0] > 0).mean():.0%}), "
              f"KID x 1e3 {diff[:, 1].mean():+.2f} +- {diff[:, 1].std(ddof=1):.2f} ({(diff[:, 1] > 0).mean():.0%})")


if __name__ == "__main__":
    main()
