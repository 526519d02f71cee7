"""What sampling a guard's check in bfloat16 changes: copies, quality and time of the same check in each precision,
against what drawing the check's samples from another seed changes.

Each check goes through the guard's own monitor (`diffmem.monitor.make_monitor`: the run's training subset, the
rest held out, the held-out p99 copy threshold, the safety test, quality against the held-out images), on the
EMA weights of the run's kept checkpoints. The float32 check at seed 0 is the one the guard logged; the seed-1
check is the yardstick: a precision that moves copies and quality much less than a new draw does not change
what the guard decides.

    python bench/check_precision.py RUN --steps 2500,4000 \\
        --quality-features classifier:PATH/cifar10-test.npz --n-samples 500
"""

from __future__ import annotations

import argparse
import json

from diffmem.guard import GuardConfig
from diffmem.monitor import make_monitor
from diffmem.train.checkpoint import load_denoiser

GUARD = GuardConfig()


def check(run: str, step: int, seed: int, precision: str, args: argparse.Namespace) -> dict:
    """One guard check of RUN's checkpoint `step`: its copies, quality, safety and seconds."""
    net, cfg, _ = load_denoiser(run, checkpoint=f"step-{step}")
    mon = make_monitor(cfg, n_samples=args.n_samples, features="pixels", seed=seed, sample_steps=args.sample_steps,
                       quality_features=args.quality_features, quality_metric=args.quality_metric,
                       level=GUARD.level, sample_precision=precision)
    rec = mon(step, net)
    return {"step": step, "seed": seed, "precision": precision, "seconds": rec["seconds"],
            "copies": rec["fraction_above_calibrated"]["heldout_p99"], "quality": rec["quality"]["value"],
            "safe": rec["safety"]["safe"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--steps", required=True, help="Checkpoints to check, e.g. 2500,4000.")
    ap.add_argument("--n-samples", type=int, default=500)
    ap.add_argument("--sample-steps", type=int, default=18)
    ap.add_argument("--quality-features", default="pixels")
    ap.add_argument("--quality-metric", default="kid", choices=("kid", "fd"))
    args = ap.parse_args()
    rows = []
    for step in (int(s) for s in args.steps.split(",")):
        for seed, precision in ((0, "fp32"), (0, "bf16"), (1, "fp32")):
            rows.append(check(args.run, step, seed, precision, args))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| step | seed 0 fp32: copies, quality, s | seed 0 bf16 | seed 1 fp32 | bf16 vs fp32: quality, time "
          "| seed 1 vs 0: quality |")
    print("|---|---|---|---|---|---|")
    for step in dict.fromkeys(r["step"] for r in rows):
        a, b, c = (next(r for r in rows if (r["step"], r["seed"], r["precision"]) == (step, s, p))
                   for s, p in ((0, "fp32"), (0, "bf16"), (1, "fp32")))
        cell = lambda r: f"{100 * r['copies']:.1f}%, {r['quality']:.4g}, {r['seconds']:.0f}"  # noqa: E731
        print(f"| {step} | {cell(a)} | {cell(b)} | {cell(c)} | {100 * (b['quality'] / a['quality'] - 1):+.2f}%, "
              f"{a['seconds'] / b['seconds']:.2f}x faster | {100 * (c['quality'] / a['quality'] - 1):+.2f}% |")


if __name__ == "__main__":
    main()
