"""The main job on the built-in data: the baseline and Algorithm 1, same budget and seed, both guarded.

Steps: train `edm` and `ambient` on a seeded subset of the built-in digits with the guard (each run
resumes if it was interrupted): at its checkpoints each is checked for copies against the held-out
digits and for quality, its best safe checkpoint is released (RUN/release.json, RUN/release/released.npz)
and it stops once copying has set in (docs/method.md, "The release and safe quality"). Then the released
samples are drawn side by side and audited against the training and held-out digits (report.md/.html).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from diffmem.config import PRESETS, DataConfig, MethodConfig, OptimConfig, TrainConfig, json_ready
from diffmem.errors import DiffmemError
from diffmem.guard import GuardConfig
from diffmem.utils.processes import cpu_cores, run_spawned


@dataclass(frozen=True)
class DemoConfig:
    """The demo's setting: a point of `diffmem frontier`'s measured paths (docs/results.md, "Protection
    against slower-clock controls"): 50 digits at 8x8, 1200 steps of 64 (1536 epochs: the baseline copies
    most of its samples by then)."""

    subset: int = 50
    steps: int = 1200
    batch: int = 64
    sigma_n: float = 1.0
    ambient_weight: str = "plain"
    weight_cap: float = 4.0
    n_samples: int = 400
    seed: int = 0
    resolution: int = 8
    preset: str = "tiny"
    channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    checkpoint_every: int = 100  # the guard checks every `guard_every`-th checkpoint, densely once copying may set in
    guard_every: int = 2
    patience: int = 2

    def guard(self) -> GuardConfig:
        """The guard both runs train with: n_samples per check, digits-net KID, the stopping rule (off when a
        short demo has too few checkpoints for it)."""
        checks = self.steps // max(1, min(self.checkpoint_every, self.steps // 4))
        patience = self.patience if checks > self.patience else 0
        return GuardConfig(n_samples=self.n_samples, quality_features="digits-net", quality_metric="kid",
                           patience=patience, every=self.guard_every)


DEMO_OUT = "runs/demo"  # where `diffmem demo` writes when --out is not given


def validate_demo(d: DemoConfig) -> None:
    """Refuse a demo setting a user got wrong, naming the flag: the demo's own ranges, then both runs'
    TrainConfigs (`diffmem.train.checks.validate_config`: method, weighting, cap, budget)."""
    import math

    from diffmem.train.checks import validate_config

    for flag, value, low in (("--subset", d.subset, 2), ("--steps", d.steps, 1), ("--batch", d.batch, 1),
                             ("--n-samples", d.n_samples, 50), ("--resolution", d.resolution, 4)):
        if value < low:
            raise DiffmemError(f"{flag} must be an integer >= {low}, got {value}")
    if not (math.isfinite(d.sigma_n) and d.sigma_n > 0):
        raise DiffmemError(f"--sigma-n must be a positive noise level, e.g. 0.5; got {d.sigma_n}")
    from diffmem.guard import validate_guard

    for cfg in demo_configs(d).values():
        validate_config(cfg)
        validate_guard(d.guard(), cfg)


def demo_configs(d: DemoConfig) -> dict[str, TrainConfig]:
    """The two runs of the demo: identical but for the method."""
    from diffmem.diffusion.methods import Ambient, Baseline

    net = dataclasses.replace(PRESETS[d.preset], channels=tuple(d.channels), layers_per_block=d.layers_per_block)
    base = TrainConfig(
        data=DataConfig("builtin:digits", d.resolution, False, d.subset, d.seed),
        network=net,
        optim=OptimConfig(steps=d.steps, batch=d.batch),
        seed=d.seed,
        checkpoint_every=max(1, min(d.checkpoint_every, d.steps // 4)),
    )
    method = MethodConfig(Ambient.name, sigma_n=d.sigma_n, ambient_weight=d.ambient_weight, weight_cap=d.weight_cap)
    return {Baseline.name: base, Ambient.name: dataclasses.replace(base, method=method)}


def side_by_side(panels: dict[str, np.ndarray], path: Path, n: int = 64,
                 is_copy: dict[str, np.ndarray | None] | None = None) -> Path:
    """One PNG: a titled grid per panel (e.g. training digits | baseline | Algorithm 1), enlarged without
    smoothing, samples flagged in `is_copy` framed red (evaluate.pictures.side_by_side_grid)."""
    from diffmem.evaluate.pictures import side_by_side_grid

    return side_by_side_grid(path, panels, is_copy, n=n)


def run_demo(out: str | Path, d: DemoConfig = DemoConfig(), device: str = "cpu", progress: bool = True,
             overwrite: bool = False,
             audit: Callable[[Path, dict[str, Path]], None] | None = None,
             echo: Callable[[str], None] = print) -> dict[str, Path]:
    """Train both runs with the guard and compare their releases; returns {method: the released samples}.
    `audit` hooks in the evaluation."""
    from diffmem.diffusion.methods import METHOD_CLASSES, Baseline
    from diffmem.method_looks import short, title
    from diffmem.train.rundir import CONFIG, DONE, run_datasets, stored_config

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    samples: dict[str, Path] = {}
    timings: dict[str, float] = {}
    cfgs = demo_configs(d)
    todo = {}
    for method, cfg in cfgs.items():
        run = out / method
        if overwrite or not (run / DONE).is_file():
            todo[method] = cfg
        elif stored_config(run / CONFIG) != json_ready(cfg.to_dict()):
            raise DiffmemError(f"{run} holds a finished run with other settings; pass --overwrite or another --out")
    t0 = time.perf_counter()
    if len(todo) == 2 and str(device) == "cpu" and cpu_cores() >= 2:
        # Two processes of one torch thread each train faster on a small CPU than one after the other
        # (docs/performance.md); each run stays deterministic for its thread count.
        echo(f"[demo] training the baseline and Algorithm 1 side by side (2 processes) on {d.subset} digits, up to "
             f"{d.steps} steps of {d.batch}, each guarded: checked at its checkpoints, its best safe one released")
        _train_parallel(todo, out, overwrite, d)
    else:
        for method, cfg in todo.items():
            echo(f"[demo] training {method} on {d.subset} digits for up to {d.steps} steps (batch {d.batch}), guarded")
            _train_guarded(cfg, str(out / method), d, device, progress, overwrite)
    timings["training"] = time.perf_counter() - t0
    for method in cfgs:
        path = out / method / "release" / "released.npz"
        if not path.is_file():
            raise DiffmemError(f"{out / method} has no released checkpoint (no check was safe; see "
                               f"{out / method / 'release.json'}); try fewer --steps or a smaller --subset")
        samples[method] = path
    train_set, _ = run_datasets(out / Baseline.name)
    panels = {f"training digits ({d.subset})": train_set.images}
    for method, path in samples.items():
        cls = METHOD_CLASSES[method]
        label = f"{short(method)} (sigma_n={d.sigma_n})" if cls.param_field == "sigma_n" else title(method)
        panels[f"{label}, released"] = np.load(path)["images"]
    pic = side_by_side(panels, out / "side_by_side.png")
    echo(f"[demo] samples: {', '.join(str(p) for p in samples.values())}; picture: {pic}")
    echo("[demo] time: " + ", ".join(f"{m} {t:.0f}s" for m, t in timings.items()))
    if audit is not None:
        audit(out, samples)
    return samples


def _train_guarded(cfg: TrainConfig, run: str, d: DemoConfig, device: str = "cpu", progress: bool = False,
                   overwrite: bool = False) -> None:
    """Train one run with the demo's guard (its checks write RUN/release.json and the released samples)."""
    from diffmem.guard import make_guard
    from diffmem.train.loop import train

    guard = make_guard(cfg, d.guard(), run, device=device)
    train(cfg, run, device=device, progress=progress, overwrite=overwrite, monitor=guard,
          monitor_every=cfg.checkpoint_every)


def _train_one(cfg: TrainConfig, run: str, overwrite: bool, d: DemoConfig) -> None:
    """Train one guarded run in a worker of one torch thread."""
    _train_guarded(cfg, run, d, overwrite=overwrite)


def _train_parallel(todo: dict[str, TrainConfig], out: Path, overwrite: bool, d: DemoConfig) -> None:
    """Train and sample the runs in `todo` at once, one spawned process (one torch thread) each; a
    DiffmemError of either run is raised here."""
    run_spawned(_train_one, [(cfg, str(out / method), overwrite, d) for method, cfg in todo.items()],
                jobs=len(todo), threads_per_job=1)
