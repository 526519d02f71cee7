"""Configuration: frozen dataclasses, named network presets, JSON round-trip.

The resolved `TrainConfig` is written to every run directory as config.json; re-running a command
compares against it to decide between resuming and refusing a foreign run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from diffmem.errors import DiffmemError

METHODS = ("edm", "ambient", "masking", "noisy-only")
AMBIENT_WEIGHTINGS = ("plain", "compensated", "capped")  # diffmem.diffusion.weighting


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
        """Inverse of `to_dict`; unknown keys are an error (they usually mean a typo or a newer version)."""
        return _from_dict(cls, d)


def json_ready(obj: Any) -> Any:
    """Tuples -> lists, recursively (what json.loads(json.dumps(x)) gives back)."""
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    return obj


def _from_dict(cls: type, d: dict[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(fields)
    if unknown:
        raise DiffmemError(f"unknown configuration keys for {cls.__name__}: {sorted(unknown)}")
    kwargs = {}
    for name, value in d.items():
        ftype = fields[name].type
        sub = {"DataConfig": DataConfig, "MethodConfig": MethodConfig, "NetworkConfig": NetworkConfig,
               "OptimConfig": OptimConfig}.get(ftype if isinstance(ftype, str) else getattr(ftype, "__name__", ""))
        if sub is not None and isinstance(value, dict):
            value = _from_dict(sub, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def validate(cfg: TrainConfig) -> None:
    """Check a configuration and raise a DiffmemError that names the flag at fault."""
    m = cfg.method
    if m.name not in METHODS:
        raise DiffmemError(f"--method {m.name!r} is not one of {', '.join(METHODS)}")
    if m.name in ("ambient", "noisy-only") and not m.sigma_n > 0:
        raise DiffmemError(f"--method {m.name} needs a positive --sigma-n (the noise level of the fixed noisy copies), "
                           "e.g. --sigma-n 0.5")
    if m.sigma_n < 0:
        raise DiffmemError("--sigma-n must be >= 0")
    if m.ambient_weight not in AMBIENT_WEIGHTINGS:
        raise DiffmemError(f"--ambient-weight must be one of {', '.join(AMBIENT_WEIGHTINGS)}, got {m.ambient_weight!r}")
    if not (isinstance(m.weight_cap, (int, float)) and 0 < m.weight_cap < float("inf")):
        raise DiffmemError(f"--weight-cap must be a positive number (the largest gain of the capped weighting "
                           f"over plain, e.g. 4), got {m.weight_cap}")
    if m.name == "masking" and not 0 < m.mask_p < 1:
        raise DiffmemError("--method masking needs --mask-p in (0, 1), the share of pixels erased, e.g. 0.2")
    if not 0 <= m.mask_delta < 1:
        raise DiffmemError("--mask-delta must be in [0, 1)")
    o = cfg.optim
    for name, value in (("--steps", o.steps), ("--batch", o.batch)):
        if value < 1:
            raise DiffmemError(f"{name} must be a positive integer, got {value}")
    if not o.lr > 0:
        raise DiffmemError(f"--lr must be positive, got {o.lr}")
    if o.ema_decay is not None and not 0 <= o.ema_decay < 1:
        raise DiffmemError(f"--ema-decay must be in [0, 1), got {o.ema_decay}")
    if cfg.checkpoint_every < 1:
        raise DiffmemError("--checkpoint-every must be a positive integer")
    n = cfg.network
    if not n.channels or any(c < 1 for c in n.channels):
        raise DiffmemError("--channels must be a list of positive integers")
    if not 0 <= n.dropout < 1:
        raise DiffmemError("--dropout must be in [0, 1)")
