"""The one check of a training configuration, run before anything is written.

`config.validate_fields` checks each field's range and names the flag at fault; the method object
(`diffusion.methods.method_of`) then checks what its method needs of those settings, so a new method
brings its own check with its class.
"""

from __future__ import annotations

from diffmem.config import TrainConfig, validate_fields
from diffmem.diffusion.methods import Method, method_of

__all__ = ["validate_config"]


def validate_config(cfg: TrainConfig) -> Method:
    """Raise a one-line DiffmemError naming the flag at fault, or return the configuration's method object."""
    validate_fields(cfg)
    return method_of(cfg.method)
