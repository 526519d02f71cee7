"""The quality a perfect memoriser scores: can the guard's quality tell copying from generalisation?

Usage: python bench/memoriser_quality.py RUN... [--n 1000] [--seed 0]

For each run, "samples" drawn uniformly with replacement from its own training images (every one an exact
copy) are scored as the run's guard scores its samples: the same quality features, metric and held-out
reference (`diffmem.monitor.CopyMonitor`, built from the run's config.json). The table puts that beside
the run's released quality (its q*, from release.json). When a memoriser scores as well as the release,
quality alone cannot separate a model that copies from one that generalises in that setting; only the
copy count can.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def memoriser_quality(run: Path, n: int, seed: int) -> tuple[str, float]:
    """(metric name, the quality of n uniform draws from the run's training images) with the run's guard."""
    from diffmem.monitor import make_monitor
    from diffmem.train.loop import select_train_images
    from diffmem.config import TrainConfig

    cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    settings = json.loads((run / "release.json").read_text()).get("settings", {})
    selected = select_train_images(cfg)
    source, train_idx, _ = selected
    mon = make_monitor(cfg, n_samples=n, features=settings.get("features", "pixels"), selected=selected,
                       quality_features=settings.get("quality_features"),
                       quality_metric=settings.get("quality_metric", "kid"))
    pick = np.random.default_rng(seed).integers(0, len(train_idx), n)
    images = source.subset(train_idx).images[pick]
    q = mon.quality_of(images)
    return q["metric"], q["value"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--n", type=int, default=1000, help="memoriser samples per run (the guard's --guard-samples)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    print("| run | memoriser quality | released quality (q*) | released step |")
    print("|---|---|---|---|")
    for run in a.runs:
        metric, value = memoriser_quality(run, a.n, a.seed)
        rel = json.loads((run / "release.json").read_text())
        released = rel.get("released") or {}
        q = released.get("quality")
        print(f"| {run.name} | {metric} {value:.4g} | {q if q is None else f'{q:.4g}'} | {released.get('step')} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
