"""The interface every feature extractor implements, in a module of its own so that the extractors
(`hub.py`, `inception.py`, `digits_net.py`) and the factory that names them (`features.get_extractor`)
import it without importing each other.

Every extractor takes uint8 images `[N, H, W, C]` (any size, gray or RGB) and returns float32 features
`[N, D]` on the CPU, computed in batches on its device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from diffmem.evaluate.preprocess import check_images, match_channels, to_float

__all__ = ["FeatureExtractor", "file_fingerprint"]


class FeatureExtractor:
    """Images in, features out. Subclasses set `name`, `family`, `dim`, `channels`; implement `embed_batch`.

    `name` says which model (and preprocessing) made the features; `channels` is what the model
    wants (3: gray is repeated to RGB; 1: RGB becomes luma; None: images are used as they are).
    """

    name: str = ""
    family: str = ""
    dim: int | None = None
    channels: int | None = 3

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)

    @property
    def cache_key(self) -> str:
        """What feature caches are keyed by: the name, plus a fingerprint of local weight files."""
        return self.name

    def prepare(self, images: np.ndarray) -> None:
        """Hook called with every image set before it is embedded (or looked up in the cache)."""

    def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        """float32 `[B, C, H, W]` in [0, 1] on `self.device` -> features `[B, D]`."""
        raise NotImplementedError

    def __call__(self, images: np.ndarray, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        """Embed uint8 `[N, H, W, C]` images in batches; returns float32 `[N, D]` on the CPU."""
        images = check_images(images, f"images for {self.name or self.family}")
        self.prepare(images)
        out = []
        bs = max(1, int(batch_size))
        with torch.no_grad():
            for start in tqdm(range(0, images.shape[0], bs), disable=not progress, desc=f"embed {self.name}",
                              unit="batch", leave=False):
                x = match_channels(to_float(images[start : start + bs], self.device), self.channels)
                out.append(self.embed_batch(x).reshape(x.shape[0], -1).to("cpu", torch.float32))
        feats = torch.cat(out)
        self.dim = int(feats.shape[1])
        return feats

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, device={str(self.device)!r})"


def file_fingerprint(path: str | Path) -> str:
    """Size and modification time of a file or of the files in a folder (cheap change detection)."""
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    parts = []
    for f in files:
        st = f.stat()
        parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return ",".join(parts)
