"""Where along sampling is a copy decided? Trajectory diagnostic for trained runs (baseline and Algorithm 1).

    python bench/decision_point.py RUN [RUN ...] --n 300 --out DIR

For each run: sample `--n` images (the same seeds as `diffmem sample` and the sweep's audit), record the
nearest training digit of the denoiser's estimate D(x; sigma) at every step, and report the median noise
level at which copies (final similarity >= the held-out 99th percentile, pixel space) were decided, and
for Algorithm 1 the share of copies already decided at or above sigma_n. Writes DIR/decision.json and
DIR/decision.png (share of samples whose final nearest training image is already fixed, against sigma).
See `diffmem.evaluate.decision`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def analyse(run: Path, n: int, seed: int, steps: int) -> dict:
    """Trajectory statistics of one run (EMA weights, EDM Heun with `steps` steps)."""
    import numpy as np

    from diffmem.diffusion.samplers import per_sample_noise
    from diffmem.evaluate.decision import decision_summary, identity_trajectory
    from diffmem.evaluate.features import PixelFeatures
    from diffmem.evaluate.neighbours import nearest_neighbours
    from diffmem.generate import SampleOptions, method_sigmas
    from diffmem.models.denoiser import load_denoiser
    from diffmem.train.rundir import run_datasets

    net, cfg, meta = load_denoiser(run)
    if cfg.method.name not in ("edm", "ambient"):
        raise SystemExit(f"{run}: only edm and ambient runs are traced (this one is {cfg.method.name})")
    train, heldout = run_datasets(run)
    px = PixelFeatures()
    held_sim, _ = nearest_neighbours(px(heldout.images), px(train.images))
    threshold = float(np.percentile(held_sim[:, 0].numpy().astype(np.float64), 99))  # the audit's heldout_p99
    sigmas, _ = method_sigmas(cfg, SampleOptions(steps=steps))
    x0 = per_sample_noise(seed, list(range(n)), (meta["channels"], meta["resolution"], meta["resolution"]), 1)[0]
    traj = identity_trajectory(lambda x, s: net(x, s, None), x0, sigmas, train.images)
    sn = cfg.method.sigma_n if cfg.method.name == "ambient" else None
    summary = decision_summary(traj, threshold, sn)
    settled = traj.nn_index == traj.final_index[None]
    copies = traj.final_similarity >= threshold
    summary.update(run=str(run), method=cfg.method.name, sigmas=traj.sigmas.tolist(),
                   settled_copies=settled[:, copies].mean(axis=1).tolist() if copies.any() else None,
                   settled_others=settled[:, ~copies].mean(axis=1).tolist() if (~copies).any() else None,
                   settled_all=settled.mean(axis=1).tolist())
    return summary


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, r in enumerate(rows):
        label = "baseline" if r["method"] == "edm" else f"Algorithm 1, sigma_n {r['sigma_n']:g}"
        line = ax.plot(r["sigmas"], r["settled_copies"] or r["settled_all"], marker="o", ms=3,
                       label=f"{label}: copies ({r['copies']:.0%} of samples)")[0]
        if r["settled_others"]:
            ax.plot(r["sigmas"], r["settled_others"], ls="--", color=line.get_color(), label=f"{label}: the others")
        if r.get("sigma_n"):
            ax.axvline(r["sigma_n"], color=line.get_color(), ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("noise level sigma along the sampler (dotted: sigma_n)")
    ax.set_ylabel("share whose final nearest training image\nis already the nearest of D(x; sigma)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="Run directories (edm or ambient).")
    p.add_argument("--n", type=int, default=300, help="Samples per run (default 300).")
    p.add_argument("--seed", type=int, default=0, help="Sampler seed (default 0, as the sweep's audit).")
    p.add_argument("--steps", type=int, default=18, help="Heun steps (default 18).")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [analyse(r, args.n, args.seed, args.steps) for r in args.runs]
    print("| run | method | sigma_n | copies | median decision sigma: copies | others | copies decided >= sigma_n |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        fmt = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
        print(f"| {Path(r['run']).name} | {r['method']} | {fmt(r.get('sigma_n'))} | {r['copies']:.3f} | "
              f"{fmt(r['median_level_copies'])} | {fmt(r['median_level_others'])} | "
              f"{fmt(r.get('copies_decided_above_sigma_n'))} |")
    (args.out / "decision.json").write_text(json.dumps(rows, indent=1) + "\n")
    plot(rows, args.out / "decision.png")
    print(f"wrote {args.out / 'decision.json'} and {args.out / 'decision.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
