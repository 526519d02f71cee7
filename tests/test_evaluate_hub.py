"""DINOv2 and CLIP through transformers: tiny random models saved locally, loaded like users load them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diffmem.errors import DiffmemError
from diffmem.evaluate.features import embed_dataset, get_extractor


transformers = pytest.importorskip("transformers")

_VISION = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28,
               patch_size=14)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    torch.manual_seed(0)
    cfg = transformers.Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2,
                                    image_size=28, patch_size=14)
    transformers.Dinov2Model(cfg).save_pretrained(root / "dinov2")
    vision = transformers.CLIPVisionConfig(projection_dim=8, **_VISION)
    transformers.CLIPVisionModelWithProjection(vision).save_pretrained(root / "clip")
    transformers.CLIPVisionModel(vision).save_pretrained(root / "clip-bare")
    return root


def _images(c: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(3, 12, 12, c), dtype=np.uint8)


def test_dinov2_from_folder(models: Path, tmp_path: Path) -> None:
    ext = get_extractor(f"dinov2:{models / 'dinov2'}", image_size=28)
    assert ext.name.endswith("dinov2@28") and ext.dim == 16
    gray = _images(1)
    feats = ext(gray)
    assert feats.shape == (3, 16) and torch.isfinite(feats).all()
    torch.testing.assert_close(feats, ext(np.repeat(gray, 3, axis=-1)), atol=1e-5, rtol=1e-5)  # gray -> RGB
    cached = embed_dataset(ext, gray, tmp_path)
    torch.testing.assert_close(cached, embed_dataset(ext, gray, tmp_path))
    with pytest.raises(DiffmemError, match="multiple of the patch size"):
        get_extractor(f"dinov2:{models / 'dinov2'}", image_size=30)


def test_clip_with_and_without_projection(models: Path) -> None:
    proj = get_extractor(f"clip:{models / 'clip'}")
    assert proj(_images(3)).shape == (3, 8)
    bare = get_extractor(f"clip:{models / 'clip-bare'}")
    assert bare(_images(3)).shape == (3, 16)


def test_wrong_or_missing_models(models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DiffmemError, match="holds a 'clip_vision_model' model, not dinov2"):
        get_extractor(f"dinov2:{models / 'clip'}")
    with pytest.raises(DiffmemError, match="does not exist"):
        get_extractor(f"dinov2:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DiffmemError, match="no config.json"):
        get_extractor(f"clip:{tmp_path / 'empty'}")
    monkeypatch.setenv("DIFFMEM_OFFLINE", "1")
    with pytest.raises(DiffmemError, match=r"downloads are off.*save_pretrained\(DIR\)"):
        get_extractor("dinov2:someone/not-downloaded-model")
