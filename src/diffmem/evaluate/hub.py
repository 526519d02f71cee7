"""DINOv2 and CLIP image features through Hugging Face transformers, with clear offline errors.

A model is a hub id (looked up in the local Hugging Face cache first, then downloaded unless
`HF_HUB_OFFLINE`/`DIFFMEM_OFFLINE` is set or the hub cannot be reached within a few seconds) or a
local folder written by `save_pretrained`. Whatever goes wrong ends in one DiffmemError that says
which id or folder to provide.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from diffmem.errors import DiffmemError
from diffmem.evaluate.cache import offline
from diffmem.evaluate.extractor import FeatureExtractor, file_fingerprint
from diffmem.evaluate.preprocess import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, normalize, resize_square

__all__ = ["DINOV2_DEFAULT", "CLIP_DEFAULT", "Dinov2Features", "ClipFeatures", "load_pretrained"]

DINOV2_DEFAULT = "facebook/dinov2-giant"  # ViT-g/14, the paper's feature space
CLIP_DEFAULT = "openai/clip-vit-large-patch14"
_PROBE_TIMEOUT_S = 3.0


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", ".", "~")) or spec.endswith("/") or spec.count("/") > 1 or "\\" in spec


def _hub_reachable() -> bool:
    """Can a TCP connection to the Hugging Face endpoint be opened within a few seconds?"""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _how_to_provide(family: str, spec: str, cls_name: str) -> str:
    return (
        f"where there is internet, run `hf download {spec}` (then copy the Hugging Face cache), or save it with "
        f"`{cls_name}.from_pretrained('{spec}').save_pretrained(DIR)` and pass --features {family}:DIR"
    )


def load_pretrained(
    pick: Any, spec: str, family: str, model_types: tuple[str, ...]
) -> tuple[Any, dict, str | None]:
    """Load a model from a hub id or a save_pretrained folder: (model, loading info, local folder or None).

    `pick(config)` returns the transformers class to load. The checkpoint's `model_type` must be one
    of `model_types` (a CLIP folder given as DINOv2 would otherwise load as a random model).
    """
    from transformers import AutoConfig

    path = Path(spec).expanduser()
    local = path.exists() or _looks_like_path(spec)
    if local:
        if not path.is_dir() or not (path / "config.json").is_file():
            what = "is not a folder written by save_pretrained (no config.json)" if path.exists() else "does not exist"
            example = DINOV2_DEFAULT if family == "dinov2" else CLIP_DEFAULT
            raise DiffmemError(
                f"{family} model folder '{path}' {what}; pass a folder saved with save_pretrained or a hub id, "
                f"e.g. --features {family}:{example}"
            )
        source = str(path)
        attempts = [True]
    else:
        source = spec
        attempts = [True] if offline() else [True, False]
    last: Exception | None = None
    cls_name = "Dinov2Model" if family == "dinov2" else "CLIPVisionModelWithProjection"
    for local_only in attempts:
        if not local_only and not _hub_reachable():
            raise DiffmemError(
                f"{family} model '{spec}' is not in the local Hugging Face cache and the hub cannot be reached; "
                + _how_to_provide(family, spec, cls_name) + _not_a_folder(spec)
            )
        try:
            config = AutoConfig.from_pretrained(source, local_files_only=local_only)
            if config.model_type not in model_types:
                raise DiffmemError(
                    f"'{spec}' holds a '{config.model_type}' model, not {family} ({' or '.join(model_types)}); "
                    f"pass a {family} checkpoint"
                )
            cls = pick(config)
            model, info = cls.from_pretrained(source, local_files_only=local_only, output_loading_info=True)
            return model, info, (str(path.resolve()) if local else None)
        except (OSError, ValueError) as err:
            last = err
    if offline() and not local:
        raise DiffmemError(
            f"{family} model '{spec}' is not in the local Hugging Face cache and downloads are off "
            "(HF_HUB_OFFLINE/DIFFMEM_OFFLINE); " + _how_to_provide(family, spec, cls_name) + _not_a_folder(spec)
        )
    raise DiffmemError(
        f"cannot load {family} model '{spec}' ({last}); " + _how_to_provide(family, spec, cls_name)
        + ("" if local else _not_a_folder(spec))
    )


def _not_a_folder(spec: str) -> str:
    return f" (read as a hub id: there is no folder '{spec}' here)"


class _HubFeatures(FeatureExtractor):
    """Shared parts: the model, its folder fingerprint, and the preprocessing."""

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    local_dir: str | None = None
    image_size: int = 224

    @property
    def cache_key(self) -> str:
        return f"{self.name}#{file_fingerprint(self.local_dir)}" if self.local_dir else self.name

    def _pixels(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(resize_square(x, self.image_size, mode="bicubic"), self.mean, self.std)


class Dinov2Features(_HubFeatures):
    """DINOv2 CLS embedding (`pooler_output`, the layer-normed CLS token) of bicubic-resized RGB images.

    Images are center-cropped and resized to `image_size` (a multiple of the patch size 14; default
    224) and ImageNet-normalized; DINOv2 interpolates its position embeddings to that grid.
    """

    family = "dinov2"

    def __init__(self, spec: str, device: str | torch.device = "cpu", image_size: int = 224) -> None:
        super().__init__(device)
        from transformers import Dinov2Model

        model, info, self.local_dir = load_pretrained(lambda cfg: Dinov2Model, spec, "dinov2", ("dinov2",))
        _check_loaded(info, spec, "dinov2")
        patch = int(model.config.patch_size)
        if image_size % patch:
            raise DiffmemError(f"dinov2 image size must be a multiple of the patch size {patch}, got {image_size}")
        self.model = model.to(self.device).eval()
        self.image_size, self.dim = int(image_size), int(model.config.hidden_size)
        self.name = f"dinov2:{self.local_dir or spec}@{self.image_size}"

    def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=self._pixels(x)).pooler_output  # [B, hidden]


class ClipFeatures(_HubFeatures):
    """CLIP image embedding (vision tower + projection; the pooled output if there is no projection).

    Images are center-cropped and resized (bicubic) to the model's input size and CLIP-normalized.
    """

    family = "clip"
    mean, std = CLIP_MEAN, CLIP_STD

    def __init__(self, spec: str, device: str | torch.device = "cpu", image_size: int | None = None) -> None:
        super().__init__(device)
        from transformers import CLIPVisionModel, CLIPVisionModelWithProjection

        def pick(config: Any) -> Any:
            # A vision tower saved without its projection (CLIPVisionModel) gives its pooled output.
            bare = list(getattr(config, "architectures", None) or []) == ["CLIPVisionModel"]
            return CLIPVisionModel if bare else CLIPVisionModelWithProjection

        model, info, self.local_dir = load_pretrained(pick, spec, "clip", ("clip", "clip_vision_model"))
        _check_loaded(info, spec, "clip")
        self.projected = isinstance(model, CLIPVisionModelWithProjection)
        self.model = model.to(self.device).eval()
        cfg = model.config
        self.image_size = int(image_size or cfg.image_size)
        self.dim = int(cfg.projection_dim if self.projected else cfg.hidden_size)
        self.name = f"clip:{self.local_dir or spec}@{self.image_size}"

    def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=self._pixels(x))
        return out.image_embeds if self.projected else out.pooler_output


def _check_loaded(info: dict, spec: str, family: str) -> None:
    """Refuse a checkpoint that left weights randomly initialized."""
    missing = list(info.get("missing_keys", []))
    if missing:
        raise DiffmemError(
            f"{family} checkpoint '{spec}' lacks {len(missing)} weights (e.g. {missing[0]}); "
            "it would run with random weights. Pass a complete checkpoint"
        )
