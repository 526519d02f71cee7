"""Loss weightings of Algorithm 1's high-noise (ambient) branch, as small objects.

At a noise level s >= sigma_n the network sees x_s = y + sqrt(s^2 - sigma_n^2) n, built from the fixed
noisy copy y only, and is scored on its estimate of y (Shah et al. 2025, Alg. 1; docs/method.md,
"The ambient loss and its weightings"):

    yhat = rho x_s + (1 - rho) D(x_s; s),   rho = sigma_n^2 / s^2,
    |yhat - y|^2 = (1 - rho)^2 |D - Dt|^2,  Dt = y - sigma_n^2 (x_s - y) / (s^2 - sigma_n^2).

Dt is an unbiased target for E[x0 | x_s] with per-pixel variance sigma_n^2 s^2 / (s^2 - sigma_n^2), which
grows without bound as s -> sigma_n. A weighting multiplies |yhat - y|^2 by lambda(s) g(s), lambda being
EDM's weight (Karras et al. 2022, eq. 8) and g(s) the weighting's gain:

    plain        g = 1                                 (the reference implementation)
    compensated  g = 1 / (1 - rho)^2                   (lambda |D - Dt|^2: the baseline's weight on D;
                                                        its per-sample loss has infinite mean over the
                                                        log-normal s: tail index 1)
    capped       g = min(1 / (1 - rho)^2, cap)         (compensated wherever that is at most `cap` times
                                                        plain; bounded, so the per-sample loss keeps the
                                                        light tail of plain)

Every g(s) is a positive function of s alone, so at each s the minimiser of the expected loss is still
E[x0 | x_s] of the noisy-copy distribution, and no weighting changes what the network sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from diffmem.config import FLAT_METHOD_DEFAULTS
from diffmem.errors import DiffmemError

if TYPE_CHECKING:  # tensor methods only: importing the registry (e.g. for --help) does not load torch
    import torch

__all__ = ["AmbientWeighting", "Plain", "Compensated", "Capped", "WEIGHTINGS", "make_weighting", "check_cap",
           "DEFAULT_WEIGHT_CAP"]

DEFAULT_WEIGHT_CAP: float = FLAT_METHOD_DEFAULTS["weight_cap"]  # written once, in diffmem.config


@dataclass(frozen=True)
class AmbientWeighting:
    """Base class: `gain(sigma, sigma_n)` multiplies lambda(s) |yhat - y|^2 in the high-noise branch."""

    name: ClassVar[str] = ""

    def gain(self, sigma: torch.Tensor, sigma_n: float) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def gain_of_factor(self, c: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """The same gain as a function of the factor c = 1 - rho in |yhat - y|^2 = c^2 |D - Dt|^2, for a loss
        that reads rho off another parametrisation: the latent (variance-preserving) form of `diffmem.t2i.losses`
        passes 1 - rho = (1 - r) / (1 - a_t), rho = sigma(t_n)^2 / sigma(t)^2 with sigma(t)^2 = (1 - a_t) / a_t,
        and scores its noisy latents in the variance-exploding scale, so both trainers weigh a noise level alike."""
        raise NotImplementedError

    def label(self) -> str:
        """Short text for tables and plot legends."""
        return self.name

    @classmethod
    def build(cls, cap: float = DEFAULT_WEIGHT_CAP) -> "AmbientWeighting":
        """The weighting from the configuration's settings (only `capped` uses `cap`)."""
        return cls()


def _compensation(sigma: torch.Tensor, sigma_n: float) -> torch.Tensor:
    """1 / (1 - rho)^2 = s^4 / (s^2 - sigma_n^2)^2, the factor that turns |yhat - y|^2 into |D - Dt|^2."""
    return sigma**4 / (sigma**2 - sigma_n**2).clamp_min(1e-12) ** 2


@dataclass(frozen=True)
class Plain(AmbientWeighting):
    """g = 1: lambda(s) |yhat - y|^2, the reference implementation's weighting."""

    name: ClassVar[str] = "plain"

    def gain(self, sigma: torch.Tensor, sigma_n: float) -> torch.Tensor:
        return sigma.new_ones(sigma.shape)

    def gain_of_factor(self, c: torch.Tensor) -> torch.Tensor:
        return c.new_ones(c.shape)


@dataclass(frozen=True)
class Compensated(AmbientWeighting):
    """g = s^4 / (s^2 - sigma_n^2)^2: the baseline's weight lambda(s) on the denoiser's error |D - Dt|^2."""

    name: ClassVar[str] = "compensated"

    def gain(self, sigma: torch.Tensor, sigma_n: float) -> torch.Tensor:
        return _compensation(sigma, sigma_n)

    def gain_of_factor(self, c: torch.Tensor) -> torch.Tensor:
        return 1 / c.clamp_min(1e-6) ** 2


@dataclass(frozen=True)
class Capped(AmbientWeighting):
    """g = min(s^4 / (s^2 - sigma_n^2)^2, cap): compensated, but never more than `cap` times plain.

    The compensation is exact for s >= sigma_n / sqrt(1 - 1/sqrt(cap)) (cap 4: s >= 1.41 sigma_n); below
    that the weight is `cap` times plain, so the per-sample loss is at most `cap` times plain's.
    """

    name: ClassVar[str] = "capped"
    cap: float = DEFAULT_WEIGHT_CAP

    def __post_init__(self) -> None:
        check_cap(self.cap)

    @classmethod
    def build(cls, cap: float = DEFAULT_WEIGHT_CAP) -> "AmbientWeighting":
        return cls(cap)

    def gain(self, sigma: torch.Tensor, sigma_n: float) -> torch.Tensor:
        return _compensation(sigma, sigma_n).clamp_max(self.cap)

    def gain_of_factor(self, c: torch.Tensor) -> torch.Tensor:
        return (1 / c.clamp_min(1e-6) ** 2).clamp_max(self.cap)

    def label(self) -> str:
        return f"capped {self.cap:g}"


WEIGHTINGS: dict[str, type[AmbientWeighting]] = {w.name: w for w in (Plain, Compensated, Capped)}


def check_cap(cap: float) -> None:
    """Refuse a --weight-cap that is not a positive finite number."""
    if not (isinstance(cap, (int, float)) and 0 < cap < float("inf")):
        raise DiffmemError(f"--weight-cap must be a positive number (the largest gain of the capped weighting "
                           f"over plain, e.g. 4), got {cap}")


def make_weighting(name: str, cap: float = DEFAULT_WEIGHT_CAP) -> AmbientWeighting:
    """The weighting object for `--ambient-weight NAME` (`cap` is used by `capped` only, but checked always)."""
    if name not in WEIGHTINGS:
        raise DiffmemError(f"--ambient-weight must be one of {', '.join(WEIGHTINGS)}, got {name!r}")
    check_cap(cap)
    return WEIGHTINGS[name].build(cap)
