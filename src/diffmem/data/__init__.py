"""Data: image sets (folder, zip, npz, built-in digits), seeded subsets, fixed corruptions.

Public API (see each module):
- `ImageDataset`, `load_images(spec, resolution=None, resize=False)`  -- datasets.py
- `split_subset(n_total, n_subset, seed)`                               -- datasets.py
- `to_model_range(images)`, `to_uint8(x)`                              -- datasets.py
- `save_images(images, path)`, `save_grid(images, path, nrow=None)`    -- io.py
- `draw_noisy_copies(x0, sigma_n, seed)`                                -- corruption.py
"""

from typing import Any

_EXPORTS = {"ImageDataset": "datasets", "load_images": "datasets", "split_subset": "datasets",
            "to_model_range": "datasets", "to_uint8": "datasets", "save_images": "io", "save_grid": "io",
            "draw_noisy_copies": "corruption"}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    """`from diffmem.data import load_images` (modules load on first use)."""
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"diffmem.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'diffmem.data' has no attribute '{name}'")
