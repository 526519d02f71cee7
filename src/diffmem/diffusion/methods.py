"""Training methods as objects that own their run, as EDM2's loss object does (Karras et al. 2024): built once
per run from the configuration, holding their settings and the noise-level distribution, called on a batch.

    Baseline   EDM's denoising loss at every noise level (Karras et al. 2022, eq. 2 and 8)
    Ambient    Algorithm 1 (Shah et al. 2025, Alg. 1): clean loss below sigma_n, the ambient loss on the
               fixed noisy copies above it, with a weighting object (diffmem.diffusion.weighting)
    Masking    Ambient Diffusion with random inpainting (Daras et al. 2023, Sec. 3)
    NoiseOnly  only the ambient loss, never below sigma_n; sampling stops at sigma_n

What a method owns (docs/method.md states the math, docs/architecture.md the call chain):
    its settings        the dataclass fields it declares: the `method` section of config.json
    prepare(x0, seed)   its fixed corruptions, drawn once per run (Algorithm 1, line 1), saved by the loop
    draw(g, b, shape)   its per-step draws, from the run's generator after the loop's own
    __call__(net, b)    the per-sample loss: the batch's quantiles -> noise levels -> its loss
    denoiser(net)       the network as the sampler calls it, with `sample_inputs` (per-sample inputs) and
    sample_stop         where sampling stops
Adding a method is one class and its entry in METHOD_CLASSES (tests/test_methods.py adds one with its own
setting and its own fixed corruption).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

import torch

from diffmem.config import MethodConfig, TrainConfig, check_type
from diffmem.data.corruption import draw_masks, draw_noisy_copies
from diffmem.diffusion.losses import Batch, LossOutput, ambient_loss, edm_loss, masking_loss, noise_levels
from diffmem.diffusion.precond import EDMPrecond
from diffmem.diffusion.samplers import sample_seed
from diffmem.diffusion.weighting import DEFAULT_WEIGHT_CAP, AmbientWeighting, make_weighting
from diffmem.errors import DiffmemError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["Method", "Baseline", "Ambient", "Masking", "NoiseOnly", "METHOD_CLASSES", "method_of", "build_method",
           "method_config", "SampleNet"]

SampleNet = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", "torch.Tensor | None"], torch.Tensor]
_RUN = {"run": True}  # metadata of the fields a run gives every method (not settings of the method section)


@dataclass(frozen=True)
class Method:
    """What every method declares. A subclass adds its settings as fields and implements `loss`."""

    name: ClassVar[str] = ""
    extra_channels: ClassVar[int] = 0  # input channels beyond the image's
    param_field: ClassVar[str | None] = None  # the setting a sweep varies (sigma_n, mask_p)
    param_tag: ClassVar[str] = ""  # its short name in run folders, e.g. `sn` in n300-ambient-sn0.5-seed0
    sweep_values: ClassVar[tuple[float, ...] | None] = None  # a sweep's values when it is given none
    p_mean: float = field(default=TrainConfig.p_mean, kw_only=True, metadata=_RUN)  # ln(s) ~ N(p_mean, p_std^2)
    p_std: float = field(default=TrainConfig.p_std, kw_only=True, metadata=_RUN)

    @classmethod
    def setting_fields(cls) -> list[dataclasses.Field]:
        """The fields of the method's configuration section (all but the run's p_mean, p_std)."""
        return [f for f in dataclasses.fields(cls) if not f.metadata.get("run")]

    @classmethod
    def from_config(cls, m: MethodConfig, **run: float) -> "Method":
        """The object for a `method` section: refuses a setting the class does not declare or of the wrong type."""
        own = {f.name: f for f in cls.setting_fields()}
        settings = m.settings
        unknown = sorted(set(settings) - set(own))
        if unknown:
            raise DiffmemError(f"{', '.join('method.' + k for k in unknown)} is not a setting of --method {cls.name} "
                               f"(its settings: {', '.join(own) or 'none'})")
        for key, value in settings.items():
            check_type(f"method.{key}", own[key].type, value)
        return cls(**settings, **run)

    @classmethod
    def settings_of(cls, pool: Mapping[str, Any]) -> MethodConfig:
        """This method's section from a pool of settings (the command line's flags, a sweep's base): the
        settings it declares, each from `pool` or its default; the rest of the pool is not its business."""
        return MethodConfig(cls.name, **{f.name: pool[f.name] if f.name in pool else _default(f)
                                         for f in cls.setting_fields()})

    def config(self) -> MethodConfig:
        """The `method` section that builds this object again."""
        return MethodConfig(self.name, **{f.name: getattr(self, f.name) for f in self.setting_fields()})

    @property
    def param(self) -> float | None:
        """The swept setting's value (`param_field`), None for a method without one."""
        return None if self.param_field is None else getattr(self, self.param_field)

    @property
    def train_sigma_min(self) -> float:
        """Lowest noise level drawn in training (0: the whole log-normal)."""
        return 0.0

    @property
    def sample_stop(self) -> float | None:
        """None: sample down to EDM's sigma_min; else stop at this level and return D(x; level)."""
        return None

    def prepare(self, x0: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
        """The run's fixed corruptions of the training images x0 [N, C, H, W], one row per image, drawn once
        from generators of the run's seed (`diffmem.data.corruption`); the loop saves and reloads them."""
        return {}

    def draw(self, g: torch.Generator, batch: int, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        """This step's own draws for the global batch ([batch, ...] each), from the run's generator `g`."""
        return {}

    def __call__(self, net: EDMPrecond, batch: Batch) -> LossOutput:
        """The per-sample loss of one batch: its quantiles u become noise levels ln(s) ~ N(p_mean, p_std^2),
        truncated to s >= train_sigma_min (`noise_levels`), then `loss`."""
        sigma = noise_levels(batch.u, self.p_mean, self.p_std, sigma_min=self.train_sigma_min)
        return self.loss(net, batch, sigma)

    def loss(self, net: EDMPrecond, batch: Batch, sigma: torch.Tensor) -> LossOutput:  # pragma: no cover
        raise NotImplementedError

    def sample_inputs(self, seed: int, indices: list[int], shape: tuple[int, int]) -> torch.Tensor | None:
        """Per-sample inputs the sampler holds fixed along a trajectory ([B, k, H, W]), or None."""
        return None

    def denoiser(self, net: "nn.Module") -> SampleNet:
        """The network as the sampler calls it: (x, sigma, labels, the sample_inputs rows) -> D(x; sigma)."""
        return lambda x, sigma, labels, inputs: net(x, sigma, labels)


@dataclass(frozen=True)
class Baseline(Method):
    name: ClassVar[str] = "edm"

    def loss(self, net: EDMPrecond, batch: Batch, sigma: torch.Tensor) -> LossOutput:
        return edm_loss(net, batch.x0, sigma, batch.noise, batch.labels)


@dataclass(frozen=True)
class Ambient(Method):
    name: ClassVar[str] = "ambient"
    param_field: ClassVar[str | None] = "sigma_n"
    param_tag: ClassVar[str] = "sn"
    sigma_n: float = 0.5  # the noise level of the fixed noisy copies, on the data's [-1, 1] scale
    ambient_weight: str = "plain"  # the weighting of the high-noise branch (diffusion/weighting.py)
    weight_cap: float = DEFAULT_WEIGHT_CAP  # the capped weighting's largest gain over plain

    def __post_init__(self) -> None:
        if not (self.sigma_n > 0 and self.sigma_n < float("inf")):
            raise DiffmemError(f"--method {self.name} needs a positive --sigma-n (the noise level of the fixed noisy "
                               f"copies), e.g. --sigma-n 0.5; got {self.sigma_n}")
        object.__setattr__(self, "_weighting", make_weighting(self.ambient_weight, self.weight_cap))

    @property
    def weighting(self) -> AmbientWeighting:
        """The weighting object of the high-noise branch."""
        return self._weighting  # type: ignore[attr-defined]

    def prepare(self, x0: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
        return {"y": draw_noisy_copies(x0, self.sigma_n, seed)}  # y = x0 + sigma_n z

    def loss(self, net: EDMPrecond, batch: Batch, sigma: torch.Tensor) -> LossOutput:
        y = batch.fixed["y"]
        return ambient_loss(net, batch.x0, y, self.sigma_n, sigma, batch.noise, batch.labels, self.weighting)


@dataclass(frozen=True)
class NoiseOnly(Ambient):
    """The ambient loss alone: noise levels from the log-normal truncated to s >= sigma_n, no clean image."""

    name: ClassVar[str] = "noisy-only"

    @property
    def train_sigma_min(self) -> float:
        return self.sigma_n

    @property
    def sample_stop(self) -> float | None:
        return self.sigma_n

    def loss(self, net: EDMPrecond, batch: Batch, sigma: torch.Tensor) -> LossOutput:
        y = batch.fixed["y"]  # x0 := y: no clean image anywhere
        return ambient_loss(net, y, y, self.sigma_n, sigma, batch.noise, batch.labels, self.weighting)


@dataclass(frozen=True)
class Masking(Method):
    name: ClassVar[str] = "masking"
    extra_channels: ClassVar[int] = 1  # the mask A~ as an input channel
    param_field: ClassVar[str | None] = "mask_p"
    param_tag: ClassVar[str] = "p"
    sweep_values: ClassVar[tuple[float, ...] | None] = (0.2,)
    mask_p: float = 0.2  # probability a pixel is erased in the fixed mask A
    mask_delta: float = 0.1  # probability a shown pixel is erased again at each step (B)

    def __post_init__(self) -> None:
        if not 0 < self.mask_p < 1:
            raise DiffmemError(f"--method masking needs --mask-p in (0, 1), the share of pixels erased, e.g. 0.2; "
                               f"got {self.mask_p}")
        if not 0 <= self.mask_delta < 1:
            raise DiffmemError(f"--mask-delta must be in [0, 1), got {self.mask_delta}")

    def prepare(self, x0: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
        return {"mask": draw_masks(tuple(x0.shape), self.mask_p, seed)}  # A, one per image

    def draw(self, g: torch.Generator, batch: int, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        keep = torch.rand((batch, 1, *shape[1:]), generator=g)  # B: a fresh further corruption each step
        return {"extra_mask": (keep >= self.mask_delta).to(torch.float32)}

    def loss(self, net: EDMPrecond, batch: Batch, sigma: torch.Tensor) -> LossOutput:
        mask, extra_mask = batch.fixed["mask"], batch.drawn["extra_mask"]
        return masking_loss(net, batch.x0, mask, extra_mask, sigma, batch.noise, batch.labels)

    def sample_inputs(self, seed: int, indices: list[int], shape: tuple[int, int]) -> torch.Tensor | None:
        """One fixed mask per sample for the whole trajectory, erasing pixels with the same probability as
        training's A~ = B A, i.e. 1 - (1 - p)(1 - delta)."""
        keep_p = (1 - self.mask_p) * (1 - self.mask_delta)
        masks = []
        for i in indices:
            g = torch.Generator().manual_seed(sample_seed(seed, i) ^ 0x5A5A5A5A)
            masks.append((torch.rand((1, *shape), generator=g) < keep_p).float())
        return torch.stack(masks)

    def denoiser(self, net: "nn.Module") -> SampleNet:
        return lambda x, sigma, labels, masks: net(masks * x, sigma, labels, extra=masks, observed=masks)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise DiffmemError(f"--{f.name.replace('_', '-')} is needed")


METHOD_CLASSES: dict[str, type[Method]] = {c.name: c for c in (Baseline, Ambient, Masking, NoiseOnly)}


def _method_class(name: str) -> type[Method]:
    if name not in METHOD_CLASSES:
        raise DiffmemError(f"--method {name!r} is not one of {', '.join(METHOD_CLASSES)}")
    return METHOD_CLASSES[name]


def method_of(m: MethodConfig, **run: float) -> Method:
    """The method object of a `method` section (names as in METHOD_CLASSES; `run`: p_mean, p_std); it checks
    its own settings and raises a DiffmemError naming the flag at fault."""
    return _method_class(m.name).from_config(m, **run)


def build_method(cfg: TrainConfig) -> Method:
    """The method of a training run, built once per run: its section and the run's noise-level distribution."""
    return method_of(cfg.method, p_mean=cfg.p_mean, p_std=cfg.p_std)


def method_config(name: str, **pool: Any) -> MethodConfig:
    """The section of method `name` from a pool of settings (see `Method.settings_of`)."""
    return _method_class(name).settings_of(pool)
