"""Configuration of a text-to-image fine-tuning run: one frozen dataclass, JSON round-trip, validation.

Defaults follow the text-conditional experiment of Shah et al. 2025 (Sec. 5.2 and App. D: Stable Diffusion 2
fine-tuned on 10k LAION image-caption pairs, batch 16, 100k steps) where it states them; the learning
rate (1e-5) is the diffusers text-to-image fine-tuning default, as the paper does not state one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from diffmem.config import json_ready
from diffmem.diffusion.methods import METHOD_CLASSES, Ambient, Baseline, Method
from diffmem.diffusion.weighting import DEFAULT_WEIGHT_CAP, AmbientWeighting, make_weighting
from diffmem.errors import DiffmemError
from diffmem.t2i.mitigations import MITIGATIONS, S23Config, parse_mitigation

# `diffmem t2i train --method` (and T2IConfig.method, as a run's config.json holds it) -> the entry of the one
# method registry (diffmem.diffusion.methods) whose loss diffmem.t2i.losses writes in the latent form
T2I_METHOD_NAMES: dict[str, str] = {"baseline": Baseline.name, "ambient": Ambient.name}
MIXED_PRECISION = ("no", "fp16", "bf16")


@dataclass(frozen=True)
class T2IConfig:
    pretrained: str  # hub id or local folder in diffusers' pipeline layout
    data: str  # folder of captioned images (metadata.jsonl or .txt captions)
    resolution: int | None = None  # None: the UNet's native size (sample_size x VAE factor)
    method: str = "baseline"  # baseline | ambient (T2I_METHOD_NAMES)
    t_n: int | None = None  # ambient threshold timestep (0 .. num_train_timesteps-1)
    ambient_weight: str = "plain"  # plain | compensated | capped (diffmem.diffusion.weighting, diffmem.t2i.losses)
    weight_cap: float = DEFAULT_WEIGHT_CAP  # ambient_weight "capped": the largest gain over plain
    mitigation: str = "none"  # none | w24 | s23-replace | s23-add-words | s23-repeat-words | s23-embed-noise
    s23_prob: float = 0.1
    s23_words: int | None = None
    s23_noise_std: float = 0.1
    w24_threshold: float | None = None
    steps: int = 100_000
    batch: int = 16  # global batch per optimizer step (all processes, all accumulation micro-steps)
    grad_accum: int = 1
    lr: float = 1e-5
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 0
    max_grad_norm: float = 1.0  # 0: no clipping
    ema_decay: float = 0.9999  # per step, warmed up as min(decay, (1 + step) / (10 + step))
    mixed_precision: str = "no"  # no | fp16 | bf16
    gradient_checkpointing: bool = False
    lora_rank: int = 0  # > 0: train LoRA adapters of this rank instead of the full UNet (needs peft)
    seed: int = 0
    checkpoint_every: int = 1000
    log_every: int = 50

    @property
    def s23(self) -> S23Config | None:
        """The S23 variant and strength, or None when the mitigation is not S23."""
        variant = parse_mitigation(self.mitigation)
        if variant is None:
            return None
        return S23Config(variant, self.s23_prob, self.s23_words, self.s23_noise_std)

    @property
    def method_class(self) -> type[Method]:
        """The registry's class of --method (T2I_METHOD_NAMES)."""
        if self.method not in T2I_METHOD_NAMES:
            raise DiffmemError(f"--method {self.method!r} is not one of {', '.join(T2I_METHOD_NAMES)}")
        return METHOD_CLASSES[T2I_METHOD_NAMES[self.method]]

    @property
    def is_ambient(self) -> bool:
        """Trained with Algorithm 1's ambient loss above --t-n (on the fixed noisy latents)."""
        return issubclass(self.method_class, Ambient)

    @property
    def weighting(self) -> AmbientWeighting:
        """The ambient branch's weighting object (diffmem.diffusion.weighting)."""
        return make_weighting(self.ambient_weight, self.weight_cap)

    @property
    def label(self) -> str:
        """Short name for tables: baseline / ambient(t_n=...) / s23-... / w24, joined with '+'."""
        parts = [] if self.mitigation == "none" else [self.mitigation]
        if self.is_ambient:
            parts.append(f"ambient(t_n={self.t_n})")
        return "+".join(parts) if parts else "baseline"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return json_ready(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "T2IConfig":
        """Inverse of `to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise DiffmemError(f"unknown t2i configuration keys {sorted(unknown)} (a newer diffmem wrote this run?)")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def validate(cfg: T2IConfig, num_train_timesteps: int | None = None) -> None:
    """Raise a DiffmemError naming the flag at fault."""
    if cfg.is_ambient:  # also refuses a --method that is not one of T2I_METHOD_NAMES
        if cfg.t_n is None:
            raise DiffmemError("--method ambient needs --t-n, the timestep of the fixed noisy latents, e.g. --t-n 100")
        top = (num_train_timesteps - 2) if num_train_timesteps else None  # the ambient branch is t > t_n
        if cfg.t_n < 1 or (top is not None and cfg.t_n > top):
            raise DiffmemError(f"--t-n must be in [1, {top if top is not None else 'num_train_timesteps-2'}], "
                               f"got {cfg.t_n}")
    elif cfg.t_n is not None:
        raise DiffmemError("--t-n only applies to --method ambient")
    make_weighting(cfg.ambient_weight, cfg.weight_cap)  # refuses an unknown --ambient-weight, a bad --weight-cap
    if cfg.mitigation not in MITIGATIONS:
        raise DiffmemError(f"--mitigation {cfg.mitigation!r} is not one of {', '.join(MITIGATIONS)}")
    if cfg.mitigation == "w24" and cfg.w24_threshold is None:
        raise DiffmemError("--mitigation w24 needs --w24-threshold: samples whose score |eps(x_t,c) - eps(x_t,'')| "
                           "exceeds it are skipped (the log reports the scores to help choose it)")
    if cfg.w24_threshold is not None and not cfg.w24_threshold > 0:
        raise DiffmemError(f"--w24-threshold must be positive, got {cfg.w24_threshold}")
    if not 0 <= cfg.s23_prob <= 1:
        raise DiffmemError(f"--s23-prob must be in [0, 1], got {cfg.s23_prob}")
    if cfg.s23_words is not None and cfg.s23_words < 1:
        raise DiffmemError(f"--s23-words must be a positive integer, got {cfg.s23_words}")
    if cfg.s23_noise_std < 0:
        raise DiffmemError(f"--s23-noise-std must be >= 0, got {cfg.s23_noise_std}")
    for flag, value in (("--steps", cfg.steps), ("--batch", cfg.batch), ("--grad-accum", cfg.grad_accum),
                        ("--checkpoint-every", cfg.checkpoint_every), ("--log-every", cfg.log_every)):
        if value < 1:
            raise DiffmemError(f"{flag} must be a positive integer, got {value}")
    if not cfg.lr > 0:
        raise DiffmemError(f"--lr must be positive, got {cfg.lr}")
    if not 0 <= cfg.ema_decay < 1:
        raise DiffmemError(f"--ema-decay must be in [0, 1), got {cfg.ema_decay}")
    if cfg.mixed_precision not in MIXED_PRECISION:
        raise DiffmemError(f"--mixed-precision must be one of {', '.join(MIXED_PRECISION)}")
    if cfg.lora_rank < 0:
        raise DiffmemError(f"--lora-rank must be >= 0, got {cfg.lora_rank}")
    if cfg.resolution is not None and cfg.resolution < 8:
        raise DiffmemError(f"--resolution must be at least 8, got {cfg.resolution}")
