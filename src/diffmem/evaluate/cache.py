"""The on-disk cache: downloaded weights, the digits classifier, and features of reference sets.

Root: `$DIFFMEM_CACHE`, else `~/.cache/diffmem`. Features are stored as
`features/<sha256(content hash + extractor key)[:24]>.safetensors` with a JSON header that says what
they are, so auditing 20 runs against one training set embeds that set once.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from diffmem.utils.atomic import save_atomic

__all__ = ["cache_root", "images_hash", "feature_cache_path", "load_features", "save_features", "offline",
           "save_model"]


def cache_root() -> Path:
    """The cache folder: `$DIFFMEM_CACHE` if set, else `~/.cache/diffmem` (not created here)."""
    env = os.environ.get("DIFFMEM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "diffmem"


def offline() -> bool:
    """True when downloads are switched off (`DIFFMEM_OFFLINE`, `HF_HUB_OFFLINE` or `TRANSFORMERS_OFFLINE`)."""
    for var in ("DIFFMEM_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


def images_hash(images: np.ndarray) -> str:
    """sha256 of the shape and bytes of a uint8 image array (for arrays without a dataset hash)."""
    h = hashlib.sha256()
    h.update(repr(tuple(int(s) for s in images.shape)).encode())
    h.update(np.ascontiguousarray(images).tobytes())
    return h.hexdigest()


def feature_cache_path(cache_dir: str | Path, content_hash: str, extractor_key: str) -> Path:
    """Where the features of the data with `content_hash` under `extractor_key` are cached."""
    key = hashlib.sha256(f"{content_hash}\n{extractor_key}".encode()).hexdigest()[:24]
    return Path(cache_dir).expanduser() / "features" / f"{key}.safetensors"


def load_features(path: Path, content_hash: str, extractor_key: str, n: int) -> torch.Tensor | None:
    """Cached features, or None when absent, unreadable or not what was asked for (then recomputed)."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("content_hash") != content_hash or meta.get("extractor") != extractor_key:
                return None
            feats = f.get_tensor("features")
    except (OSError, SafetensorError, ValueError, KeyError) as err:
        warnings.warn(f"ignoring unreadable feature cache {path} ({err})", stacklevel=2)
        return None
    if feats.ndim != 2 or feats.shape[0] != n:
        return None
    return feats


def save_features(path: Path, feats: torch.Tensor, content_hash: str, extractor_key: str) -> None:
    """Write features atomically (temporary file + rename), tagged with what they belong to."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"content_hash": content_hash, "extractor": extractor_key}
    tensors = {"features": feats.detach().to("cpu", torch.float32).contiguous()}
    save_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta), mode=0o644)  # a cache may be shared


def save_model(net: torch.nn.Module, info: dict, weights: Path, meta: Path, what: str) -> None:
    """Cache a small trained feature network (digits-net, classifier:SPEC): weights in safetensors and its
    record in JSON, each written whole and readable by others (a cache may be shared); a cache that cannot
    be written is a warning, not an error."""
    import json

    from diffmem.errors import DiffmemError

    try:
        weights.parent.mkdir(parents=True, exist_ok=True)
        for path, write in ((weights, lambda p: save_file(net.state_dict(), p)),
                            (meta, lambda p: Path(p).write_text(json.dumps(info, indent=2) + "\n"))):
            save_atomic(path, write, mode=0o644)
    except (OSError, DiffmemError) as err:
        warnings.warn(f"could not cache {what} in {weights.parent} ({err})", stacklevel=3)
