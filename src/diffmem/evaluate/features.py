"""Feature extractors behind one interface, and cached embedding of data sets.

Every extractor takes uint8 images `[N, H, W, C]` (any size, gray or RGB) and returns float32
features `[N, D]` on the CPU, computed in batches on its device. Names (`get_extractor`):

| name                      | model                                                           | needs            |
|---------------------------|-----------------------------------------------------------------|------------------|
| `pixels`                  | flattened pixels, mean-centred per image, L2-normalized         | nothing          |
| `dinov2[:ID_OR_DIR]`      | DINOv2 CLS embedding (transformers `Dinov2Model`), default ViT-g/14 | hub id or folder |
| `clip[:ID_OR_DIR]`        | CLIP image embedding (transformers vision tower)                | hub id or folder |
| `inception[:PATH]`        | FID Inception-v3 pool features (2048-d)                         | weights file / URL |
| `torchscript:PATH`        | any TorchScript embedding model (e.g. SSCD copy detection)      | a .pt file       |
| `digits-net[:RES]`        | a small CNN trained on the built-in digits (penultimate layer)  | nothing          |
| `classifier:SPEC`         | a small CNN trained on the labelled images SPEC (penultimate layer) | labelled images |
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from diffmem.errors import DiffmemError
from diffmem.evaluate import cache
from diffmem.evaluate.extractor import FeatureExtractor, file_fingerprint
from diffmem.evaluate.preprocess import IMAGENET_MEAN, IMAGENET_STD, check_images, normalize, resize_square

__all__ = [
    "FeatureExtractor",
    "PixelFeatures",
    "TorchScriptFeatures",
    "EXTRACTOR_NAMES",
    "get_extractor",
    "embed_dataset",
    "fd_name",
    "file_fingerprint",
    "images_of",
    "default_device",
]

EXTRACTOR_NAMES = ("pixels", "dinov2", "clip", "inception", "torchscript", "digits-net", "classifier")


class PixelFeatures(FeatureExtractor):
    """Flattened pixels, mean-centred per image and L2-normalized (cosine = Pearson correlation).

    Pixels are only comparable between images of one shape: the first image set embedded fixes it, and
    a set of another size or channel count is refused (no silent gray/RGB conversion here).
    """

    name = family = "pixels"
    channels = None

    def __init__(self, device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        self.shape: tuple[int, ...] | None = None

    def prepare(self, images: np.ndarray) -> None:
        shape = tuple(int(s) for s in images.shape[1:])
        if self.shape is None:
            self.shape, self.dim = shape, int(np.prod(shape))
        elif shape != self.shape:
            raise DiffmemError(
                f"pixels features compare images pixel by pixel, but one image set is {_shape_str(self.shape)} "
                f"and another is {_shape_str(shape)}; convert them to one size and channel count, or use a "
                "feature model (dinov2, clip, inception, digits-net) that accepts any size and gray or RGB"
            )

    def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        v = x.flatten(1)  # [B, C*H*W]
        return F.normalize(v - v.mean(dim=1, keepdim=True), dim=1)


class TorchScriptFeatures(FeatureExtractor):
    """Any TorchScript embedding model (e.g. SSCD `sscd_disc_mixup.torchscript.pt`).

    Input: RGB, center-cropped and resized to `image_size` (bicubic), ImageNet-normalized; the first
    output (if the model returns several) is flattened to `[B, D]`. SSCD recommends `image_size=288`.
    """

    family = "torchscript"

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", image_size: int = 224) -> None:
        super().__init__(device)
        p = Path(path).expanduser()
        if not p.is_file():
            raise DiffmemError(
                f"TorchScript model file '{p}' does not exist; pass --features torchscript:PATH with a file "
                "saved by torch.jit.save (for copy detection e.g. SSCD's sscd_disc_mixup.torchscript.pt)"
            )
        try:
            with warnings.catch_warnings():  # torch 2.13 marks TorchScript deprecated; SSCD ships in it
                warnings.simplefilter("ignore", DeprecationWarning)
                self.model = torch.jit.load(str(p), map_location=self.device).eval()
        except (RuntimeError, ValueError, OSError) as err:
            raise DiffmemError(f"'{p}' is not a TorchScript model that torch.jit.load can read ({err})") from None
        self.path, self.image_size = p.resolve(), int(image_size)
        self.name = f"torchscript:{self.path}@{self.image_size}"

    @property
    def cache_key(self) -> str:
        return f"{self.name}#{file_fingerprint(self.path)}"

    def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        x = normalize(resize_square(x, self.image_size), IMAGENET_MEAN, IMAGENET_STD)
        y = self.model(x)
        if isinstance(y, (tuple, list)):
            y = y[0]
        if isinstance(y, dict):
            raise DiffmemError(f"TorchScript model {self.path} returns a dict; it must return a tensor [B, D]")
        return y.flatten(1)


def get_extractor(
    name: str,
    device: str | torch.device = "cpu",
    *,
    image_size: int | None = None,
    resolution: int | None = None,
) -> FeatureExtractor:
    """Build a feature extractor by name (see the module table).

    `image_size`: input size for dinov2 (default 224), clip (default: the model's) and torchscript
    (default 224). `resolution`: the digits-net resolution when the name does not give one (otherwise
    the first image set embedded decides). Raises DiffmemError for unknown names or missing models.
    """
    family, _, arg = str(name).partition(":")
    family = family.strip().lower()
    if family == "pixels":
        if arg:
            raise DiffmemError(f"'pixels' takes no argument, got '{name}'")
        return PixelFeatures(device)
    if family == "dinov2":
        from diffmem.evaluate.hub import DINOV2_DEFAULT, Dinov2Features

        return Dinov2Features(arg or DINOV2_DEFAULT, device, image_size=image_size or 224)
    if family == "clip":
        from diffmem.evaluate.hub import CLIP_DEFAULT, ClipFeatures

        return ClipFeatures(arg or CLIP_DEFAULT, device, image_size=image_size)
    if family == "inception":
        from diffmem.evaluate.inception import InceptionFeatures

        return InceptionFeatures(arg or None, device)
    if family == "torchscript":
        if not arg:
            raise DiffmemError("torchscript features need a model file: --features torchscript:PATH")
        return TorchScriptFeatures(arg, device, image_size=image_size or 224)
    if family == "digits-net":
        from diffmem.evaluate.digits_net import DigitsNetFeatures

        res = resolution
        if arg:
            try:
                res = int(arg)
            except ValueError:
                raise DiffmemError(f"digits-net takes a resolution, e.g. 'digits-net:16', got '{name}'") from None
        return DigitsNetFeatures(res, device)
    if family == "classifier":
        from diffmem.evaluate.classifier_net import ClassifierFeatures

        return ClassifierFeatures(arg.strip(), device)
    raise DiffmemError(
        f"unknown feature extractor '{name}'; choose one of: pixels, dinov2[:HUB_ID_OR_DIR], clip[:HUB_ID_OR_DIR], "
        "inception[:WEIGHTS_FILE], torchscript:PATH, digits-net[:RESOLUTION], classifier:LABELLED_IMAGES"
    )


def fd_name(extractor_name: str) -> str:
    """What to call a Frechet distance in this feature space: FID only for Inception-v3."""
    family = extractor_name.split(":", 1)[0].split("@", 1)[0]
    if family in ("inception", "inception-v3"):
        return "FID"
    return f"FD_{family}"


def images_of(data: Any) -> np.ndarray:
    """The checked uint8 `[N, H, W, C]` images of an ImageDataset or an array."""
    if hasattr(data, "images") and hasattr(data, "content_hash"):
        return check_images(data.images, f"data set '{getattr(data, 'source', '?')}'")
    return check_images(np.asarray(data))


def embed_dataset(
    extractor: FeatureExtractor,
    dataset_or_images: Any,
    cache_dir: str | Path | None = None,
    *,
    batch_size: int = 256,
    progress: bool = False,
    world: Any = None,
) -> torch.Tensor:
    """Features `[N, D]` of an ImageDataset or uint8 array, cached on disk when `cache_dir` is given.

    The cache is keyed by the data's content hash and `extractor.cache_key`, so a training set audited
    against 20 runs is embedded once. With a `world` of several processes (torchrun), rank 0 reads and
    writes the cache; on a miss every rank embeds its contiguous share and all get the features in order.
    """
    from diffmem.utils.distributed import World, broadcast_object, gather_in_order, local_slice

    world = world or World()
    images = images_of(dataset_or_images)
    extractor.prepare(images)
    path = content_hash = None
    if cache_dir is not None:
        if hasattr(dataset_or_images, "content_hash"):
            content_hash = dataset_or_images.content_hash()
        else:
            content_hash = cache.images_hash(images)
        path = cache.feature_cache_path(cache_dir, content_hash, extractor.cache_key)
    feats = None
    if path is not None and world.main:
        feats = cache.load_features(path, content_hash, extractor.cache_key, images.shape[0])
    if broadcast_object(feats is not None, world):
        feats = broadcast_object(feats, world)
        extractor.dim = int(feats.shape[1])
        return feats
    part = local_slice(images.shape[0], world)
    local = extractor(images[part], batch_size=batch_size, progress=progress) if part.stop > part.start else None
    local_np = local.numpy() if local is not None else np.zeros((0, 0), np.float32)
    feats = torch.from_numpy(np.ascontiguousarray(gather_in_order(local_np, world)))
    extractor.dim = int(feats.shape[1])
    if path is not None and world.main:
        try:
            cache.save_features(path, feats, content_hash, extractor.cache_key)
        except (OSError, DiffmemError) as err:
            warnings.warn(f"could not write the feature cache {path} ({err}); continuing without it", stacklevel=2)
    return feats


def _shape_str(shape: tuple[int, ...]) -> str:
    h, w, c = shape
    return f"{h}x{w} {'gray' if c == 1 else 'RGB'}"


def default_device() -> str:
    """'cuda' when a GPU is visible (and DIFFMEM_DEVICE does not say otherwise), else 'cpu'."""
    return os.environ.get("DIFFMEM_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
