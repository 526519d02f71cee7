"""Configuration: frozen dataclasses, named network presets, JSON round-trip.

The resolved `TrainConfig` is written to every run directory as config.json; re-running a command
compares against it to decide between resuming and refusing a foreign run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from diffmem.errors import DiffmemError

EXTENSIONS = "extensions"  # config.json key: how a finished run was extended (`diffmem train` with more steps)
RELEASE_JSON = "release.json"  # a run's release certificate (diffmem.release), naming the released step
RELEASE_DIR = "release"  # the folder of a run's released and last checked samples (diffmem.release)


@dataclass(frozen=True)
class NetworkConfig:
    """A UNet backbone (diffusers' UNet2DModel); preconditioning lives outside it."""

    preset: str = "tiny"
    channels: tuple[int, ...] = (32, 64, 64)  # per resolution level, highest resolution first
    layers_per_block: int = 2
    attn_resolutions: tuple[int, ...] = ()  # resolutions (pixels) with self-attention blocks
    dropout: float = 0.0
    num_classes: int = 0  # > 0: class-conditional (label embedding added to the noise embedding)


# Named presets. `cifar` follows EDM's DDPM++ configuration for 32x32 (channels 128*[2,2,2],
# 4 blocks per level, attention at 16x16, dropout 0.13): ~59M parameters in diffusers' UNet2DModel
# (EDM's own implementation has ~56M; the blocks differ in detail).
PRESETS: dict[str, NetworkConfig] = {
    "tiny": NetworkConfig("tiny", (32, 64, 64), 2, (), 0.0),
    "small": NetworkConfig("small", (64, 128, 128), 2, (8,), 0.1),
    "cifar": NetworkConfig("cifar", (256, 256, 256), 4, (16,), 0.13),
}


@dataclass(frozen=True)
class DataConfig:
    spec: str = "builtin:digits"
    resolution: int | None = None  # None: the data's own size (builtin:digits: 16)
    resize: bool = False
    subset: int | None = None
    subset_seed: int = 0
    xflip: bool = False
    cond: bool = False


@dataclass(frozen=True)
class MethodConfig:
    """Which loss (docs/method.md) and its parameters."""

    name: str = "edm"
    sigma_n: float = 0.0  # Algorithm 1 threshold, on the data's [-1, 1] scale
    ambient_weight: str = "plain"  # plain | compensated | capped (diffusion/weighting.py)
    mask_p: float = 0.0  # masking: probability a pixel is erased in the fixed mask
    mask_delta: float = 0.1  # masking: extra erase probability during training
    weight_cap: float = 4.0  # ambient_weight "capped": the largest gain over plain (diffusion/weighting.py)


@dataclass(frozen=True)
class OptimConfig:
    steps: int = 2000
    batch: int = 64
    lr: float = 1e-4  # the paper: Adam(W) lr 1e-4, betas (0.9, 0.999), eps 1e-8, weight decay 0.01
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 0
    ema_halflife_kimg: float = 5.0  # EMA half-life in thousands of images (EDM convention)
    ema_decay: float | None = None  # if set, a fixed per-step decay instead of the half-life


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    network: NetworkConfig = field(default_factory=lambda: PRESETS["tiny"])
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    sigma_data: float = 0.5
    p_mean: float = -1.2  # training noise levels: ln(s) ~ N(p_mean, p_std^2)
    p_std: float = 1.2
    checkpoint_every: int = 500
    log_every: int = 50

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Inverse of `to_dict`; unknown keys and values of the wrong type are an error (they usually mean
        a typo, a hand edit or a newer version). The record of extensions (EXTENSIONS) is not configuration."""
        if isinstance(d, dict):
            d = {k: v for k, v in d.items() if k != EXTENSIONS}
        return _from_dict(cls, d)


def json_ready(obj: Any) -> Any:
    """Tuples -> lists, recursively (what json.loads(json.dumps(x)) gives back)."""
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    return obj


_SUBCONFIGS = {"DataConfig": DataConfig, "MethodConfig": MethodConfig, "NetworkConfig": NetworkConfig,
               "OptimConfig": OptimConfig}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# a field's annotation (a string: `from __future__ import annotations`) -> (check, what the message asks for)
_TYPES: dict[str, tuple[Any, str]] = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "float": (_is_number, "a number"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "tuple[int, ...]": (lambda v: isinstance(v, (list, tuple)) and all(_TYPES["int"][0](x) for x in v),
                        "a list of integers"),
    "tuple[float, float]": (lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(map(_is_number, v)),
                            "a list of two numbers"),
}


def _check_type(key: str, annotation: str, value: Any) -> None:
    """Raise a DiffmemError naming `key` when `value` (from JSON) does not fit the field's annotation."""
    optional = annotation.endswith(" | None")
    base = annotation.removesuffix(" | None")
    if value is None and optional:
        return
    check, what = _TYPES.get(base, (lambda v: True, ""))
    if not check(value):
        raise DiffmemError(f"configuration key {key!r} must be {what}{' or null' if optional else ''}, "
                           f"got {value!r}")


def _from_dict(cls: type, d: dict[str, Any], prefix: str = "") -> Any:
    if not isinstance(d, dict):
        raise DiffmemError(f"configuration {prefix.rstrip('.') or 'file'} must be a JSON object, got {d!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(fields)
    if unknown:
        raise DiffmemError(f"unknown configuration keys for {cls.__name__}: {sorted(unknown)}")
    kwargs = {}
    for name, value in d.items():
        ftype = fields[name].type
        sub = _SUBCONFIGS.get(ftype if isinstance(ftype, str) else getattr(ftype, "__name__", ""))
        if sub is not None:
            value = _from_dict(sub, value, f"{prefix}{name}.")
        else:
            _check_type(prefix + name, ftype if isinstance(ftype, str) else getattr(ftype, "__name__", ""), value)
            if isinstance(value, list):
                value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def _finite(value: float) -> bool:
    return math.isfinite(value)


def validate_fields(cfg: TrainConfig) -> None:
    """Check each field's range (types are checked on reading) and raise a DiffmemError that names the flag at
    fault. The names of methods and weightings and what a method needs of its settings (a positive sigma_n, a
    mask_p in (0, 1), a positive weight cap) are checked by the objects (`diffmem.diffusion.methods`,
    `diffmem.diffusion.weighting`); `diffmem.train.checks.validate_config` runs all of them."""
    m = cfg.method
    if not _finite(m.sigma_n) or m.sigma_n < 0:
        raise DiffmemError(f"--sigma-n must be a finite number >= 0, got {m.sigma_n}")
    if not 0 <= m.mask_p < 1:
        raise DiffmemError(f"--mask-p must be in [0, 1), got {m.mask_p}")
    if not 0 <= m.mask_delta < 1:
        raise DiffmemError(f"--mask-delta must be in [0, 1), got {m.mask_delta}")
    _validate_optim(cfg.optim)
    for name, value in (("--checkpoint-every", cfg.checkpoint_every), ("--log-every", cfg.log_every)):
        if value < 1:
            raise DiffmemError(f"{name} must be a positive integer, got {value}")
    if not (cfg.sigma_data > 0 and _finite(cfg.sigma_data) and cfg.p_std > 0 and _finite(cfg.p_std)
            and _finite(cfg.p_mean)):
        raise DiffmemError("sigma_data and p_std must be positive and p_mean finite (config.json)")
    n = cfg.network
    if not n.channels or any(c < 1 for c in n.channels):
        raise DiffmemError("--channels must be a list of positive integers")
    if n.layers_per_block < 1:
        raise DiffmemError(f"--layers-per-block must be a positive integer, got {n.layers_per_block}")
    if not 0 <= n.dropout < 1:
        raise DiffmemError("--dropout must be in [0, 1)")
    if n.num_classes < 0:
        raise DiffmemError(f"network.num_classes must be >= 0, got {n.num_classes}")
    d = cfg.data
    if d.resolution is not None and d.resolution < 1:
        raise DiffmemError(f"--resolution must be a positive integer, got {d.resolution}")
    if d.subset is not None and d.subset < 1:
        raise DiffmemError(f"--subset must be a positive integer, got {d.subset}")


def _validate_optim(o: OptimConfig) -> None:
    for name, value in (("--steps", o.steps), ("--batch", o.batch)):
        if value < 1:
            raise DiffmemError(f"{name} must be a positive integer, got {value}")
    if not (o.lr > 0 and _finite(o.lr)):
        raise DiffmemError(f"--lr must be a positive finite number, got {o.lr}")
    if not (o.weight_decay >= 0 and _finite(o.weight_decay)):
        raise DiffmemError(f"--weight-decay must be a finite number >= 0, got {o.weight_decay}")
    if o.warmup_steps < 0:
        raise DiffmemError(f"--warmup-steps must be >= 0 (0: no warm-up), got {o.warmup_steps}")
    if not (o.ema_halflife_kimg > 0 and _finite(o.ema_halflife_kimg)):
        raise DiffmemError(f"--ema must be a positive half-life in kimg, got {o.ema_halflife_kimg}")
    if o.ema_decay is not None and not 0 <= o.ema_decay < 1:
        raise DiffmemError(f"--ema-decay must be in [0, 1), got {o.ema_decay}")
    if not (all(0 <= b < 1 for b in o.betas) and o.eps > 0):
        raise DiffmemError(f"optim.betas must lie in [0, 1) and optim.eps be positive, got {o.betas}, {o.eps}")
