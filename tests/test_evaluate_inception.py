"""The FID Inception-v3: builds, loads a state dict through the user's path, refuses wrong files, and matches
pytorch-fid.

The real weights (pt_inception-2015-12-05-6726825d.pth) cannot be downloaded on build machines. Parity with
pytorch-fid is checked offline on shared random weights when pytorch-fid (which needs torchvision, not a
dependency of this project) imports; the preprocessing is checked against a hand-written bilinear resize
always. With DIFFMEM_INCEPTION_WEIGHTS pointing at the real file, the last test compares real features.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from diffmem.errors import DiffmemError
from diffmem.evaluate.features import get_extractor
from diffmem.evaluate.inception import FIDInceptionV3, fid_preprocess, inception_weights_path


def _random_state(prefixes: tuple[str, ...] = ("",)) -> dict[str, torch.Tensor]:
    """A random but well-scaled state dict (random init would take longer), keys starting with `prefixes`."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in FIDInceptionV3().state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked") or not key.startswith(prefixes):
            continue
        if key.endswith(("running_var", "bn.weight")):
            state[key] = torch.ones(shape)
        elif key.endswith(("running_mean", "bias")):
            state[key] = torch.zeros(shape)
        else:
            fan_in = int(np.prod(shape[1:]))
            state[key] = torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5
    return state


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inception") / "random_inception.safetensors"
    save_file(_random_state(), str(path))
    return path


def test_builds_loads_and_runs(weights: Path) -> None:
    ext = get_extractor(f"inception:{weights}")
    assert ext.name == f"inception-v3:{weights.name}" and ext.dim == 2048
    assert ext.model.input_size == 299
    ext.model.input_size = 75  # the smallest input Inception-v3 takes: 16x less work than 299 for this test
    feats = ext(np.random.default_rng(0).integers(0, 256, size=(2, 16, 16, 1), dtype=np.uint8))
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all() and (feats >= 0).all()  # post-ReLU pool


def test_pth_file_loads_with_weights_only(tmp_path: Path) -> None:
    state = _random_state(("Conv2d", "fc"))
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(DiffmemError, match="not the FID Inception-v3 state dict.*missing: Mixed"):
        get_extractor(f"inception:{path}")


def test_wrong_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DiffmemError, match="does not exist.*pt_inception-2015-12-05"):
        get_extractor(f"inception:{tmp_path / 'nope.pth'}")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(DiffmemError, match="cannot read Inception weights"):
        get_extractor(f"inception:{junk}")
    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises(DiffmemError, match="unexpected: weight"):
        get_extractor(f"inception:{other}")


def test_download_offline_or_unreachable_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFMEM_CACHE", str(tmp_path))
    monkeypatch.setenv("DIFFMEM_OFFLINE", "1")
    with pytest.raises(DiffmemError, match="downloads are off.*inception:PATH"):
        get_extractor("inception")
    monkeypatch.delenv("DIFFMEM_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with pytest.raises(DiffmemError, match="could not download"):  # port 9 (discard) refuses at once
        inception_weights_path(url="http://127.0.0.1:9/pt_inception.pth", cache_dir=tmp_path)
    assert not list(tmp_path.glob("*.pth"))


def _bilinear_reference(img: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of `[H, W]` with half-pixel centres (align_corners=False), no antialiasing, written out:
    source coordinate (i + 0.5) * H / size - 0.5, clamped at 0; the upper neighbour clamped at H - 1."""
    def taps(n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.maximum((np.arange(size) + 0.5) * n_in / size - 0.5, 0.0)
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, n_in - 1), src - lo

    (r0, r1, wr), (c0, c1, wc) = taps(img.shape[0]), taps(img.shape[1])
    rows = img[r0] * (1 - wr)[:, None] + img[r1] * wr[:, None]
    return rows[:, c0] * (1 - wc)[None] + rows[:, c1] * wc[None]


def test_preprocessing_is_pytorch_fids(weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """uint8 -> /255 -> gray to RGB -> bilinear 299 (align_corners=False, no antialias) -> 2x - 1, through the
    extractor; the network itself is replaced by a recorder."""
    ext = get_extractor(f"inception:{weights}")
    seen: list[torch.Tensor] = []
    monkeypatch.setattr(ext.model, "features", lambda x: seen.append(x) or x.mean(dim=(2, 3)))
    images = np.random.default_rng(1).integers(0, 256, size=(2, 13, 21, 1), dtype=np.uint8)
    ext(images)
    x = seen[0].double().numpy()
    assert x.shape == (2, 3, 299, 299)
    for b in range(2):
        expected = 2 * _bilinear_reference(images[b, :, :, 0] / 255.0, 299) - 1
        for c in range(3):
            np.testing.assert_allclose(x[b, c], expected, atol=1e-5)  # float32 source coordinates
    rgb = np.random.default_rng(2).random((1, 3, 37, 37))  # downsampling too: no antialiasing filter
    out = fid_preprocess(torch.from_numpy(rgb), 20).numpy()
    for c in range(3):
        np.testing.assert_allclose(out[0, c], 2 * _bilinear_reference(rgb[0, c], 20) - 1, atol=1e-12)


def _pytorch_fid_inception():
    """pytorch-fid's inception module, or a skip: it imports torchvision, which this project does not need."""
    try:
        import pytorch_fid.inception as module
    except Exception as err:  # missing, or a torchvision that does not load against this torch
        pytest.skip(f"pytorch-fid with a working torchvision is needed ({type(err).__name__}: {err})")
    return module


def test_matches_pytorch_fid_on_shared_random_weights(weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pytorch-fid's InceptionV3([3]) built with our random weights (its weight download replaced) gives the
    features ours gives, on images that need resizing."""
    module = _pytorch_fid_inception()
    state = _random_state()
    with torch.device("meta"):
        keys = list(FIDInceptionV3().state_dict())
    full = {**state, **{k: torch.tensor(0) for k in keys if k.endswith("num_batches_tracked")}}
    monkeypatch.setattr(module, "load_state_dict_from_url", lambda *a, **k: dict(full))
    ref_model = module.InceptionV3([3]).eval()
    images = np.random.default_rng(3).integers(0, 256, size=(2, 40, 40, 3), dtype=np.uint8)
    ours = get_extractor(f"inception:{weights}")(images)
    with torch.no_grad():
        ref = ref_model(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0)[0].flatten(1)
    assert ours.abs().max() > 0
    torch.testing.assert_close(ours, ref, atol=1e-5 * float(ref.abs().max()), rtol=1e-4)


@pytest.mark.skipif(not os.environ.get("DIFFMEM_INCEPTION_WEIGHTS"), reason="needs the real FID weights")
def test_matches_pytorch_fid() -> None:
    pytorch_fid = pytest.importorskip("pytorch_fid.inception")
    path = os.environ["DIFFMEM_INCEPTION_WEIGHTS"]
    images = np.random.default_rng(0).integers(0, 256, size=(4, 64, 64, 3), dtype=np.uint8)
    ours = get_extractor(f"inception:{path}")(images)
    ref_model = pytorch_fid.InceptionV3([3]).eval()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        ref = ref_model(x)[0].flatten(1)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
