"""The one check of a training configuration, run before anything is written.

`config.validate_fields` checks each field's range and names the flag at fault; the method's class then checks
its name (`--method`) and its own settings (their names, types and ranges, an ambient weighting's name and
cap), so a new method or weighting brings its own check with its class.
"""

from __future__ import annotations

from diffmem.config import TrainConfig, validate_fields
from diffmem.diffusion.methods import Method, build_method

__all__ = ["validate_config"]


def validate_config(cfg: TrainConfig) -> Method:
    """Raise a one-line DiffmemError naming the flag at fault, or return the run's method object."""
    validate_fields(cfg)
    return build_method(cfg)
