"""Flags -> configurations: the functions the training commands (train, sweep, frontier) call to turn
their flags into configurations (`audit` and `demo` keep theirs beside their commands, so that their
`--help` does not load torch).

Each takes keyword arguments named like the flags, with the defaults of the library (`diffmem.config`,
`diffmem.evaluate.options`, `diffmem.sweep.spec`, `diffmem.sweep.frontier`; the click
options read the same defaults, so each default is written once), and validates the result once.
Nothing here reads files, except `train_config_from_flags` asking the data layer how many classes the
labels of --data hold when --cond is given.
"""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

from diffmem.config import FLAT_METHOD_DEFAULTS, DataConfig, NetworkConfig, OptimConfig, PRESETS, TrainConfig
from diffmem.diffusion.methods import METHOD_CLASSES, method_config
from diffmem.diffusion.weighting import WEIGHTINGS, make_weighting
from diffmem.errors import DiffmemError
from diffmem.evaluate.options import EvalOptions
from diffmem.sweep.frontier import (CANDIDATE_SIGMA_N, CANDIDATE_WEIGHTINGS, CONTROL_LR_FACTORS, FRONTIER_STEPS,
                                    FrontierConfig, default_variants, validate_frontier)
from diffmem.sweep.spec import SweepConfig, parse_float_list, parse_int_list, parse_methods, validate_sweep
from diffmem.train.checks import validate_config
from diffmem.utils.flags import float_list, int_list, joined, str_list

__all__ = ["DATA", "METHOD", "NETWORK", "OPTIM", "TRAIN", "SWEEP", "SWEEP_VALUES", "EVAL", "FRONTIER",
           "MONITOR_SAMPLES", "duration", "check_method_flags", "data_resolution", "network_from_flags", "train_config_from_flags",
           "check_monitor_flags", "eval_options_from_flags", "sweep_config_from_flags",
           "frontier_config_from_flags"]

# the defaults, written once in diffmem.config (and diffmem.evaluate.options, diffmem.sweep.spec,
# diffmem.sweep.frontier)
DATA, NETWORK, OPTIM, TRAIN, EVAL = DataConfig(), NetworkConfig(), OptimConfig(), TrainConfig(), EvalOptions()
# the method flags (--method, --sigma-n, --ambient-weight, --weight-cap, --mask-p, --mask-delta) and their
# defaults: each method takes from them the settings its class declares (`Method.settings_of`)
METHOD = SimpleNamespace(name=TRAIN.method.name, **FLAT_METHOD_DEFAULTS)
SWEEP = SweepConfig(base=TRAIN)
# a sweep's default values of each swept setting, declared by the classes (None: the data's grid of sigma_n)
SWEEP_VALUES = {cls.param_field: cls.sweep_values for cls in METHOD_CLASSES.values() if cls.param_field}
MONITOR_SAMPLES = SWEEP.monitor_samples  # samples per copy-monitor check
FRONTIER = FrontierConfig(base=TRAIN, variants=())  # its field defaults: subsets, seeds, checkpoints, samples

# the help of every flag that sets the guard's sample precision (train, frontier, release)
SAMPLE_PRECISION_HELP = ("The checks' sampler: float32, or bfloat16 autocast (about twice as fast on CPUs with AMX; "
                         "docs/performance.md, \"What the guard costs\").")


def duration(steps: int | None = None, kimg: float | None = None, batch: int = OPTIM.batch) -> int:
    """Training steps from --steps or --kimg (thousands of images at --batch images per step)."""
    if steps is not None and kimg is not None:
        raise DiffmemError("give either --steps or --kimg, not both")
    if batch < 1:
        raise DiffmemError(f"--batch must be a positive integer, got {batch}")
    if kimg is not None:
        if not (kimg > 0 and math.isfinite(kimg)):
            raise DiffmemError(f"--kimg must be a positive number of thousands of images, got {kimg}")
        return max(1, round(kimg * 1000 / batch))
    if steps is not None and steps < 1:
        raise DiffmemError(f"--steps must be a positive integer, got {steps}")
    return steps if steps is not None else OPTIM.steps


def data_resolution(data_spec: str, resolution: int | None) -> int | None:
    """--resolution, or the built-in digits' default size when it is not given."""
    from diffmem.data.datasets import DIGITS_DEFAULT_RESOLUTION  # late: loads torch

    if data_spec.startswith("builtin:") and resolution is None:
        return DIGITS_DEFAULT_RESOLUTION
    return resolution


def network_from_flags(preset: str = NETWORK.preset, channels: str | None = None, layers_per_block: int | None = None,
                       attn_resolutions: str | None = None, dropout: float | None = None) -> NetworkConfig:
    """The --preset network with the overrides that were given (--channels, --attn-resolutions: '32,64,64')."""
    overrides = {"channels": int_list(channels, "--channels", example="32,64,64"), "layers_per_block": layers_per_block,
                 "attn_resolutions": int_list(attn_resolutions, "--attn-resolutions", example="32,64,64"),
                 "dropout": dropout}
    return dataclasses.replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})


def check_method_flags(sigma_n: float = METHOD.sigma_n, ambient_weight: str = METHOD.ambient_weight,
                       weight_cap: float = METHOD.weight_cap, mask_p: float = METHOD.mask_p,
                       mask_delta: float = METHOD.mask_delta) -> None:
    """Refuse a method flag out of its range even where the chosen method does not take it (its section holds
    only its own settings, which its class checks further: Algorithm 1 needs a positive --sigma-n)."""
    if not (math.isfinite(sigma_n) and sigma_n >= 0):
        raise DiffmemError(f"--sigma-n must be a finite number >= 0, got {sigma_n}")
    if not 0 <= mask_p < 1:
        raise DiffmemError(f"--mask-p must be in [0, 1), got {mask_p}")
    if not 0 <= mask_delta < 1:
        raise DiffmemError(f"--mask-delta must be in [0, 1), got {mask_delta}")
    make_weighting(ambient_weight, weight_cap)  # an unknown --ambient-weight, a bad --weight-cap


def train_config_from_flags(*, data_spec: str = DATA.spec, resolution: int | None = DATA.resolution,
                            resize: bool = DATA.resize, subset: int | None = DATA.subset,
                            subset_seed: int = DATA.subset_seed, cond: bool = DATA.cond, xflip: bool = DATA.xflip,
                            method: str = METHOD.name, sigma_n: float = METHOD.sigma_n,
                            ambient_weight: str = METHOD.ambient_weight, weight_cap: float = METHOD.weight_cap,
                            mask_p: float = METHOD.mask_p, mask_delta: float = METHOD.mask_delta,
                            preset: str = NETWORK.preset, channels: str | None = None,
                            layers_per_block: int | None = None, attn_resolutions: str | None = None,
                            dropout: float | None = None, steps: int | None = None, kimg: float | None = None,
                            batch: int = OPTIM.batch, lr: float = OPTIM.lr, weight_decay: float = OPTIM.weight_decay,
                            warmup_steps: int = OPTIM.warmup_steps, ema_halflife: float = OPTIM.ema_halflife_kimg,
                            ema_decay: float | None = OPTIM.ema_decay, seed: int = TRAIN.seed,
                            checkpoint_every: int = TRAIN.checkpoint_every,
                            log_every: int = TRAIN.log_every) -> TrainConfig:
    """The validated TrainConfig of `diffmem train`'s flags. With --cond the network gets one class per
    label of --data (`diffmem.data.datasets.count_classes`)."""
    check_method_flags(sigma_n, ambient_weight, weight_cap, mask_p, mask_delta)
    net = network_from_flags(preset, channels, layers_per_block, attn_resolutions, dropout)
    if cond:
        from diffmem.data.datasets import count_classes

        net = dataclasses.replace(net, num_classes=count_classes(data_spec, resolution, resize))
    cfg = TrainConfig(
        data=DataConfig(spec=data_spec, resolution=data_resolution(data_spec, resolution), resize=resize,
                        subset=subset, subset_seed=subset_seed, xflip=xflip, cond=cond),
        method=method_config(method, sigma_n=sigma_n, ambient_weight=ambient_weight, weight_cap=weight_cap,
                             mask_p=mask_p, mask_delta=mask_delta),
        network=net,
        optim=OptimConfig(steps=duration(steps, kimg, batch), batch=batch, lr=lr, weight_decay=weight_decay,
                          warmup_steps=warmup_steps, ema_halflife_kimg=ema_halflife, ema_decay=ema_decay),
        seed=seed, checkpoint_every=checkpoint_every, log_every=log_every,
    )
    validate_config(cfg)
    return cfg


def check_monitor_flags(monitor_every: int = 0, monitor_samples: int = MONITOR_SAMPLES) -> None:
    """Refuse a negative --monitor-every, and fewer than 2 --monitor-samples when monitoring."""
    if monitor_every < 0:
        raise DiffmemError(f"--monitor-every must be >= 0 (0: off), got {monitor_every}")
    if monitor_every > 0 and monitor_samples < 2:
        raise DiffmemError(f"--monitor-samples must be at least 2, got {monitor_samples}")


def eval_options_from_flags(*, n_samples: int = EVAL.n_samples, sample_steps: int = EVAL.sample_steps,
                            sample_seed: int = EVAL.sample_seed, features: str = joined(EVAL.features),
                            quality_features: str | None = EVAL.quality_features, thresholds: str | None = None,
                            copy_threshold: float | None = EVAL.copy_threshold,
                            no_pictures: bool = not EVAL.pictures) -> EvalOptions:
    """How `diffmem sweep` and `diffmem compare` measure every run."""
    feats = str_list(features, "--features", what="feature space", example="pixels")
    thr = float_list(thresholds, "--thresholds")
    if thr is not None and (not thr or any(not -1 <= t <= 1 for t in thr)):
        raise DiffmemError(f"--thresholds must be cosine similarities in [-1, 1], got {thresholds!r}")
    return EvalOptions(n_samples=n_samples, sample_steps=sample_steps, sample_seed=sample_seed, features=feats,
                       quality_features=quality_features or None, thresholds=thr, copy_threshold=copy_threshold,
                       pictures=not no_pictures)


def sweep_config_from_flags(*, data_spec: str = DATA.spec, resolution: int | None = DATA.resolution,
                            resize: bool = DATA.resize, subsets: str | None = None, subset_seed: int = DATA.subset_seed,
                            xflip: bool = DATA.xflip, methods: str = joined(SWEEP.methods),
                            sigma_ns: str | None = None, mask_ps: str = joined(SWEEP_VALUES["mask_p"]),
                            mask_delta: float = METHOD.mask_delta, ambient_weight: str = METHOD.ambient_weight,
                            weight_cap: float = METHOD.weight_cap, seeds: str = joined(SWEEP.seeds),
                            preset: str = NETWORK.preset, channels: str | None = None,
                            layers_per_block: int | None = None, attn_resolutions: str | None = None,
                            dropout: float | None = None, steps: int | None = None, kimg: float | None = None,
                            batch: int = OPTIM.batch, lr: float = OPTIM.lr,
                            ema_halflife: float = OPTIM.ema_halflife_kimg, ema_decay: float | None = OPTIM.ema_decay,
                            checkpoint_every: int | None = None, monitor_every: int = SWEEP.monitor_every,
                            monitor_samples: int = SWEEP.monitor_samples, tolerance: float = SWEEP.tolerance,
                            eval: EvalOptions | None = None) -> SweepConfig:
    """The validated SweepConfig of `diffmem sweep`'s flags. Without --subset every image is trained on
    (subsets = (None,)); --checkpoint-every defaults to a quarter of the steps; `eval`: see
    `eval_options_from_flags` (default: its defaults)."""
    method_list = parse_methods(methods)
    check_method_flags(ambient_weight=ambient_weight, weight_cap=weight_cap, mask_delta=mask_delta)
    sigmas = parse_float_list(sigma_ns, "--sigma-n")
    masks = parse_float_list(mask_ps, "--mask-p") or ()
    seed_list = parse_int_list(seeds, "--seeds")
    subset_list = parse_int_list(subsets, "--subset") if subsets is not None else (None,)
    net = network_from_flags(preset, channels, layers_per_block, attn_resolutions, dropout)
    n_steps = duration(steps, kimg, batch)
    base = TrainConfig(
        data=DataConfig(spec=data_spec, resolution=data_resolution(data_spec, resolution), resize=resize, subset=None,
                        subset_seed=subset_seed, xflip=xflip, cond=False),
        network=net,
        optim=OptimConfig(steps=n_steps, batch=batch, lr=lr, ema_halflife_kimg=ema_halflife, ema_decay=ema_decay),
        checkpoint_every=checkpoint_every if checkpoint_every is not None else max(1, n_steps // 4),
    )
    sc = SweepConfig(base=base, methods=method_list, values={"sigma_n": sigmas, "mask_p": masks},
                     settings={"ambient_weight": ambient_weight, "weight_cap": weight_cap, "mask_delta": mask_delta},
                     subsets=subset_list,
                     seeds=seed_list, monitor_every=monitor_every, monitor_samples=monitor_samples, tolerance=tolerance,
                     eval=eval if eval is not None else eval_options_from_flags())
    validate_sweep(sc)
    return sc


def frontier_config_from_flags(*, data_spec: str = DATA.spec, resolution: int | None = DATA.resolution,
                               subsets: str = joined(FRONTIER.subsets), seeds: str = joined(FRONTIER.seeds),
                               sigma_n: float | str = joined((CANDIDATE_SIGMA_N,)),
                               weightings: str = joined(CANDIDATE_WEIGHTINGS),
                               weight_cap: float = METHOD.weight_cap, lr_factors: str = joined(CONTROL_LR_FACTORS),
                               preset: str = NETWORK.preset, channels: str | None = None,
                               layers_per_block: int | None = None, attn_resolutions: str | None = None,
                               steps: int = FRONTIER_STEPS, batch: int = OPTIM.batch, lr: float = OPTIM.lr,
                               checkpoints: int = FRONTIER.checkpoints, n_samples: int = FRONTIER.n_samples,
                               sample_steps: int = FRONTIER.sample_steps,
                               quality_features: str = FRONTIER.quality_features,
                               quality_metric: str = FRONTIER.quality_metric,
                               patience: int = FRONTIER.patience,
                               check_every: int = FRONTIER.check_every, resize: bool = False,
                               precision: str = FRONTIER.precision,
                               sample_precision: str = FRONTIER.sample_precision) -> FrontierConfig:
    """The validated FrontierConfig of `diffmem frontier`'s flags (`diffmem.sweep.frontier.validate_frontier`):
    controls, the baseline at --lr times each --lr-factors; candidates, Algorithm 1 at each --sigma-n (one value
    or a comma-separated list) with each --weightings."""
    sigmas = (float(sigma_n),) if isinstance(sigma_n, (int, float)) else parse_float_list(sigma_n, "--sigma-n")
    if not sigmas or any(not sn > 0 for sn in sigmas):
        raise DiffmemError(f"--sigma-n needs positive noise levels, e.g. 1 or 1,2.7; got {sigma_n!r}")
    wts = tuple(w.strip() for w in weightings.split(",") if w.strip())
    for w in wts:
        if w not in WEIGHTINGS:
            raise DiffmemError(f"--weightings: {w!r} is not one of {', '.join(WEIGHTINGS)}")
    net = network_from_flags(preset, channels, layers_per_block, attn_resolutions)
    if resize and resolution is None:
        raise DiffmemError("--resize needs a target size: pass --resolution with it")
    base = TrainConfig(data=DataConfig(spec=data_spec, resolution=data_resolution(data_spec, resolution), resize=resize),
                       network=net,
                       optim=OptimConfig(steps=steps, batch=batch, lr=lr), log_every=max(1, min(50, steps // 20)))
    variants = default_variants(sigmas, wts, parse_float_list(lr_factors, "--lr-factors") or (), weight_cap)
    fc = FrontierConfig(base, variants, subsets=parse_int_list(subsets, "--subset") or (),
                        seeds=parse_int_list(seeds, "--seeds") or (), checkpoints=checkpoints, n_samples=n_samples,
                        sample_steps=sample_steps, quality_features=quality_features, quality_metric=quality_metric,
                        patience=patience, check_every=check_every, precision=precision,
                        sample_precision=sample_precision)
    validate_frontier(fc)
    return fc
