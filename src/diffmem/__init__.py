"""diffmem: diffusion models that create instead of copying, and tools that measure copying.

Python API (see diffmem.api; nothing heavy is imported until used):

```python
import diffmem
result = diffmem.audit("samples.npz", train="train/", heldout="unseen/", features="pixels")
print(result)  # the finding in one line; result.to_dict(), result.nearest, result.copy_fraction
```
- `audit(samples, train, heldout=None, features="pixels", out=None, ...)` -> `AuditResult`
- `fid(samples, ref, features="inception", ...)` -> `FidResult`
- `load_images(spec, resolution=None, resize=False)` -> `ImageDataset`
- `sample(run, n, seed=0)` -> uint8 images; `train_run(config, out)` trains a `TrainConfig`
  (`diffmem.train` is the training subpackage)
- `DiffmemError`: bad input, with a message naming the input and the fix
"""

from __future__ import annotations

from typing import Any

from diffmem.errors import DiffmemError

__version__ = "0.1.0"
__all__ = ["audit", "fid", "load_images", "sample", "train_run", "AuditResult", "FidResult", "DiffmemError"]

_API = {"audit": "audit", "fid": "fid", "load_images": "load_images", "sample": "sample", "train_run": "train",
        "AuditResult": "AuditResult", "FidResult": "FidResult"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from diffmem import api

        return getattr(api, _API[name])
    raise AttributeError(f"module 'diffmem' has no attribute '{name}'")
