"""Training methods as objects: each owns its settings and its loss, and says what the rest of the code needs.

    Baseline   EDM's denoising loss at every noise level (Karras et al. 2022, eq. 2 and 8)
    Ambient    Algorithm 1 (Shah et al. 2025, Alg. 1): clean loss below sigma_n, the ambient loss on the
               fixed noisy copies above it, with a weighting object (diffmem.diffusion.weighting)
    Masking    Ambient Diffusion with random inpainting (Daras et al. 2023, Sec. 3)
    NoiseOnly  only the ambient loss, never below sigma_n; sampling stops at sigma_n

`method_of(cfg.method)` builds the object from the configuration (docs/method.md states the math). Adding a
method means one class here, its entry in METHOD_CLASSES and its tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch

from diffmem.diffusion.losses import Batch, LossOutput, ambient_loss, edm_loss, masking_loss, noise_levels
from diffmem.diffusion.precond import EDMPrecond
from diffmem.diffusion.weighting import AmbientWeighting, Plain, make_weighting
from diffmem.errors import DiffmemError

if TYPE_CHECKING:
    from diffmem.config import MethodConfig, TrainConfig

__all__ = ["Method", "Baseline", "Ambient", "Masking", "NoiseOnly", "METHOD_CLASSES", "method_of", "compute_loss"]


@dataclass(frozen=True)
class Method:
    """What every method declares. Subclasses set the class attributes and implement `loss`."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""  # label in tables
    short: ClassVar[str] = ""  # label in headlines and picture captions
    style: ClassVar[tuple[str, str]] = ("gray", "x")  # (matplotlib colour, marker) in plots
    needs_noisy_copies: ClassVar[bool] = False  # fixed y = x0 + sigma_n z drawn once per run
    needs_masks: ClassVar[bool] = False  # fixed inpainting masks drawn once per run
    extra_channels: ClassVar[int] = 0  # input channels beyond the image's
    param_field: ClassVar[str | None] = None  # the MethodConfig field a sweep varies (sigma_n, mask_p)
    param_tag: ClassVar[str] = ""  # its short name in run folders, e.g. `sn` in n300-ambient-sn0.5-seed0

    @property
    def train_sigma_min(self) -> float:
        """Lowest noise level drawn in training (0: the whole log-normal)."""
        return 0.0

    @property
    def sample_stop(self) -> float | None:
        """None: sample down to EDM's sigma_min; else stop at this level and return D(x; level)."""
        return None

    @property
    def param(self) -> float | None:
        """The method's swept parameter (sigma_n or mask_p), None for the baseline."""
        return None

    def label(self) -> str:
        """Table label with the parameter, e.g. `Algorithm 1 (ambient), sigma_n 0.5, capped 4`."""
        return self.title

    @classmethod
    def from_config(cls, m: "MethodConfig") -> "Method":
        """The object for a configuration's `method` part."""
        return cls()

    def loss(self, net: EDMPrecond, batch: Batch, sigma: torch.Tensor) -> LossOutput:  # pragma: no cover
        raise NotImplementedError


@dataclass(frozen=True)
class Baseline(Method):
    name: ClassVar[str] = "edm"
    title: ClassVar[str] = "baseline (EDM)"
    short: ClassVar[str] = "baseline"
    style: ClassVar[tuple[str, str]] = ("black", "*")

    def loss(self, net: EDMPrecond, batch: Batch, sigma: torch.Tensor) -> LossOutput:
        return edm_loss(net, batch.x0, sigma, batch.noise, batch.labels)


@dataclass(frozen=True)
class Ambient(Method):
    name: ClassVar[str] = "ambient"
    title: ClassVar[str] = "Algorithm 1 (ambient)"
    short: ClassVar[str] = "Algorithm 1"
    style: ClassVar[tuple[str, str]] = ("tab:red", "o")
    needs_noisy_copies: ClassVar[bool] = True
    param_field: ClassVar[str | None] = "sigma_n"
    param_tag: ClassVar[str] = "sn"
    sigma_n: float = 0.5
    weighting: AmbientWeighting = field(default_factory=Plain)

    def __post_init__(self) -> None:
        if not (self.sigma_n > 0 and self.sigma_n < float("inf")):
            raise DiffmemError(f"--method {self.name} needs a positive --sigma-n (the noise level of the fixed noisy "
                               f"copies), e.g. --sigma-n 0.5; got {self.sigma_n}")

    @classmethod
    def from_config(cls, m: "MethodConfig") -> "Method":
        return cls(m.sigma_n, make_weighting(m.ambient_weight, m.weight_cap))

    @property
    def param(self) -> float | None:
        return self.sigma_n

    def label(self) -> str:
        w = "" if isinstance(self.weighting, Plain) else f", {self.weighting.label()}"
        return f"{self.title}, sigma_n {self.sigma_n:g}{w}"

    def loss(self, net: EDMPrecond, batch: Batch, sigma: torch.Tensor) -> LossOutput:
        assert batch.y is not None
        return ambient_loss(net, batch.x0, batch.y, self.sigma_n, sigma, batch.noise, batch.labels, self.weighting)


@dataclass(frozen=True)
class NoiseOnly(Ambient):
    """The ambient loss alone: noise levels from the log-normal truncated to s >= sigma_n, no clean image."""

    name: ClassVar[str] = "noisy-only"
    title: ClassVar[str] = "noise only"
    short: ClassVar[str] = "noise only"
    style: ClassVar[tuple[str, str]] = ("tab:green", "^")

    @property
    def train_sigma_min(self) -> float:
        return self.sigma_n

    @property
    def sample_stop(self) -> float | None:
        return self.sigma_n

    def loss(self, net: EDMPrecond, batch: Batch, sigma: torch.Tensor) -> LossOutput:
        assert batch.y is not None  # x0 := y: no clean image anywhere
        return ambient_loss(net, batch.y, batch.y, self.sigma_n, sigma, batch.noise, batch.labels, self.weighting)


@dataclass(frozen=True)
class Masking(Method):
    name: ClassVar[str] = "masking"
    title: ClassVar[str] = "masking"
    short: ClassVar[str] = "masking"
    style: ClassVar[tuple[str, str]] = ("tab:blue", "s")
    needs_masks: ClassVar[bool] = True
    extra_channels: ClassVar[int] = 1  # the mask A~ as an input channel
    param_field: ClassVar[str | None] = "mask_p"
    param_tag: ClassVar[str] = "p"
    mask_p: float = 0.2
    mask_delta: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.mask_p < 1:
            raise DiffmemError(f"--method masking needs --mask-p in (0, 1), the share of pixels erased, e.g. 0.2; "
                               f"got {self.mask_p}")

    @classmethod
    def from_config(cls, m: "MethodConfig") -> "Method":
        return cls(m.mask_p, m.mask_delta)

    @property
    def param(self) -> float | None:
        return self.mask_p

    def label(self) -> str:
        return f"{self.title}, p {self.mask_p:g}"

    def loss(self, net: EDMPrecond, batch: Batch, sigma: torch.Tensor) -> LossOutput:
        assert batch.mask is not None and batch.extra_mask is not None
        return masking_loss(net, batch.x0, batch.mask, batch.extra_mask, sigma, batch.noise, batch.labels)


METHOD_CLASSES: dict[str, type[Method]] = {c.name: c for c in (Baseline, Ambient, Masking, NoiseOnly)}


def method_of(m: "MethodConfig") -> Method:
    """The method object of a configuration's `method` part (names as in METHOD_CLASSES); it checks its own
    settings and raises a DiffmemError naming the flag at fault."""
    if m.name not in METHOD_CLASSES:
        raise DiffmemError(f"--method {m.name!r} is not one of {', '.join(METHOD_CLASSES)}")
    return METHOD_CLASSES[m.name].from_config(m)


def compute_loss(cfg: "TrainConfig", net: EDMPrecond, batch: Batch) -> LossOutput:
    """The per-sample loss of the configured method on one batch."""
    method = method_of(cfg.method)
    sigma = noise_levels(batch.u, cfg.p_mean, cfg.p_std, sigma_min=method.train_sigma_min)
    return method.loss(net, batch, sigma)
