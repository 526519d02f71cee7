"""The FID Inception-v3: builds, loads a state dict through the user's path, refuses wrong files.

The real weights (pt_inception-2015-12-05-6726825d.pth) cannot be downloaded on build machines. With
DIFFMEM_INCEPTION_WEIGHTS pointing at that file and pytorch-fid installed, the last test checks that our
features match pytorch-fid's on the same input.
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
from diffmem.evaluate.inception import FIDInceptionV3, inception_weights_path


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
