"""The one check of a training configuration, run before anything is written.

`config.validate_fields` checks each field's range and names the flag at fault; the registries then
check the names (`--method`, `--ambient-weight`), the weighting its cap, and the method object what its
method needs of those settings, so a new method or weighting brings its own check with its class.
"""

from __future__ import annotations

from diffmem.config import TrainConfig, validate_fields
from diffmem.diffusion.methods import Method, method_of
from diffmem.diffusion.weighting import make_weighting

__all__ = ["validate_config"]


def validate_config(cfg: TrainConfig) -> Method:
    """Raise a one-line DiffmemError naming the flag at fault, or return the configuration's method object."""
    validate_fields(cfg)
    make_weighting(cfg.method.ambient_weight, cfg.method.weight_cap)  # also for a method that does not use it
    return method_of(cfg.method)
