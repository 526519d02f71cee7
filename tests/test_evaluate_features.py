"""Feature extractors through the user's code path: pixels, TorchScript, cached embedding, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diffmem.errors import DiffmemError
from diffmem.evaluate.features import PixelFeatures, embed_dataset, fd_name, get_extractor


def _images(n: int = 6, res: int = 8, c: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, res, res, c), dtype=np.uint8)


def test_pixels_are_centred_unit_vectors() -> None:
    ext = get_extractor("pixels")
    feats = ext(_images(), batch_size=4)  # two batches
    assert feats.shape == (6, 64) and feats.dtype == torch.float32 and ext.dim == 64
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(6))
    torch.testing.assert_close(feats.mean(dim=1), torch.zeros(6), atol=1e-6, rtol=0)
    # brightness and contrast changes do not move pixel features (cosine = Pearson correlation)
    img = _images(1)
    brighter = (img.astype(np.float64) * 0.5 + 60).round().astype(np.uint8)
    sim = (ext(img) * ext(brighter)).sum()
    assert sim > 0.999


def test_pixels_refuse_mixed_channels() -> None:
    ext = PixelFeatures()
    ext(_images(c=1))
    with pytest.raises(DiffmemError, match="8x8 gray.*8x8 RGB"):
        ext(_images(c=3))


def test_bad_names_and_inputs() -> None:
    with pytest.raises(DiffmemError, match="unknown feature extractor"):
        get_extractor("resnet")
    with pytest.raises(DiffmemError, match="torchscript:PATH"):
        get_extractor("torchscript")
    with pytest.raises(DiffmemError, match="no images"):
        get_extractor("pixels")(np.zeros((0, 8, 8, 1), np.uint8))
    with pytest.raises(DiffmemError, match="uint8"):
        get_extractor("pixels")(np.zeros((2, 8, 8, 1), np.float32))
    with pytest.raises(DiffmemError, match="resolution"):
        get_extractor("digits-net:abc")


def test_fd_names() -> None:
    assert fd_name("inception-v3:pt_inception-2015-12-05-6726825d.pth") == "FID"
    assert fd_name("dinov2:facebook/dinov2-giant@224") == "FD_dinov2"
    assert fd_name("digits-net:16") == "FD_digits-net"
    assert fd_name("pixels") == "FD_pixels"


class _Embed(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.mean(dim=(2, 3)))  # [B, 3] -> [B, 5]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch 2.13 deprecates TorchScript
def test_torchscript_round_trip_and_gray_to_rgb(tmp_path: Path) -> None:
    path = tmp_path / "embed.pt"
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(_Embed()), str(path))
    ext = get_extractor(f"torchscript:{path}", image_size=16)
    assert ext.name.startswith("torchscript:") and ext.name.endswith("@16")
    gray = _images(3, c=1)
    feats = ext(gray)
    assert feats.shape == (3, 5)
    torch.testing.assert_close(feats, ext(np.repeat(gray, 3, axis=-1)))  # gray is repeated to RGB


def test_torchscript_missing_and_broken(tmp_path: Path) -> None:
    with pytest.raises(DiffmemError, match="does not exist"):
        get_extractor(f"torchscript:{tmp_path / 'nope.pt'}")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(DiffmemError, match="not a TorchScript model"):
        get_extractor(f"torchscript:{bad}")


class _CountingPixels(PixelFeatures):
    calls = 0

    def __call__(self, images, batch_size=256, progress=False):  # type: ignore[no-untyped-def]
        type(self).calls += 1
        return super().__call__(images, batch_size, progress)


def test_embed_dataset_caches_by_content(tmp_path: Path) -> None:
    from diffmem.data.datasets import ImageDataset

    imgs = _images(5)
    data = ImageDataset(images=imgs, labels=None, source="toy", names=tuple(map(str, range(5))))
    ext = _CountingPixels()
    first = embed_dataset(ext, data, tmp_path)
    again = embed_dataset(_CountingPixels(), data, tmp_path)  # a fresh extractor, same key: from disk
    assert _CountingPixels.calls == 1
    torch.testing.assert_close(first, again)
    other = embed_dataset(_CountingPixels(), imgs[::-1].copy(), tmp_path)  # other content: recomputed
    assert _CountingPixels.calls == 2
    torch.testing.assert_close(other, first.flip(0))
    assert len(list((tmp_path / "features").glob("*.safetensors"))) == 2
    assert embed_dataset(_CountingPixels(), data, None).shape == (5, 64) and _CountingPixels.calls == 3
