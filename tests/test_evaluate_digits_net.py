"""digits-net: deterministic training, cached with its accuracies, features at the bound resolution."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from diffmem.evaluate import digits_net
from diffmem.evaluate.digits_net import DigitsNetFeatures, load_or_train_digits_net, train_digits_net


def _digits(res: int = 8):  # type: ignore[no-untyped-def]
    from diffmem.data.datasets import load_images

    return load_images("builtin:digits", resolution=res)


def test_training_is_deterministic_and_leaves_global_rng_alone() -> None:
    data = _digits().subset(np.arange(200))
    state = torch.random.get_rng_state()
    a = train_digits_net(data.images, data.labels, epochs=1, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())
    b = train_digits_net(data.images, data.labels, epochs=1, seed=3)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits-net cache with one (one-epoch) net at resolution 8, trained once for this module."""
    path = tmp_path_factory.mktemp("digits-net")
    load_or_train_digits_net(8, cache_dir=path, epochs=1)
    return path


def test_cached_with_accuracies(cache: Path) -> None:
    state = torch.random.get_rng_state()
    net, info = load_or_train_digits_net(8, cache_dir=cache, epochs=1)  # from the cache
    assert torch.equal(state, torch.random.get_rng_state())
    meta = json.loads(next(cache.glob("*.json")).read_text())
    assert meta == info and info["resolution"] == 8 and info["n_train"] == 1797
    assert info["train_accuracy"] > 0.2 and info["heldout_accuracy"] > 0.2  # ten classes: chance is 0.1
    again, info2 = load_or_train_digits_net(8, cache_dir=cache, epochs=1)
    assert info2 == info
    for pa, pb in zip(net.state_dict().values(), again.state_dict().values()):
        assert torch.equal(pa, pb)


def test_features_bind_resolution_and_accept_rgb(cache: Path) -> None:
    ext = DigitsNetFeatures(None, cache_dir=cache, epochs=1)
    assert ext.name == "digits-net"
    gray = _digits(8).images[:4]
    feats = ext(gray)
    assert ext.name == "digits-net:8" and feats.shape == (4, digits_net.FEATURE_DIM)
    rgb = np.repeat(gray, 3, axis=-1)  # equal channels: luma equals the gray value (up to rounding)
    torch.testing.assert_close(ext(rgb), feats, atol=1e-3, rtol=1e-3)
    bigger = np.repeat(np.repeat(gray, 2, axis=1), 2, axis=2)  # 16x16 input: resized to the bound 8x8
    assert ext(bigger).shape == (4, digits_net.FEATURE_DIM)
