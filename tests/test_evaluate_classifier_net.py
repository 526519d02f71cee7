"""classifier:SPEC: accuracy on separable data, deterministic training, the cache, bad specs, features."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from diffmem.errors import DiffmemError
from diffmem.evaluate import classifier_net
from diffmem.evaluate.classifier_net import ClassifierFeatures, Recipe, load_or_train_classifier
from diffmem.evaluate.features import fd_name, get_extractor

FAST = Recipe(epochs=10, batch=16)


def _stripes(path: Path, n: int = 80, res: int = 16, seed: int = 0) -> Path:
    """Two classes of RGB patterns: horizontal (0) or vertical (1) stripes, random period, phase, colour, noise."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 2).astype(np.int64)
    grid = np.arange(res, dtype=np.float64)
    images = np.empty((n, res, res, 3), np.uint8)
    for i, lab in enumerate(labels):
        period, phase = rng.uniform(3, 6), rng.uniform(0, 2 * np.pi)
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * grid / period + phase)
        img = np.repeat(wave[:, None], res, 1) if lab == 0 else np.repeat(wave[None, :], res, 0)
        colour = rng.uniform(0.3, 1.0, 3)
        pix = img[..., None] * colour + rng.normal(0, 0.1, (res, res, 3))
        images[i] = np.clip(pix * 255, 0, 255).astype(np.uint8)
    np.savez(path, images=images, labels=labels)
    return path


def _digits8(path: Path) -> Path:
    from diffmem.data.datasets import load_images

    data = load_images("builtin:digits", resolution=8)
    np.savez(path, images=data.images, labels=data.labels)
    return path


@pytest.fixture(scope="module")
def stripes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _stripes(tmp_path_factory.mktemp("stripes") / "stripes.npz")


def test_separable_patterns_are_learned_and_cached(stripes: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    state = torch.random.get_rng_state()
    net, info = load_or_train_classifier(str(stripes), tmp_path, FAST)
    assert torch.equal(state, torch.random.get_rng_state())
    assert info["n_images"] == 80 and info["n_heldout"] == 16 and info["n_train"] == 64
    assert info["heldout_accuracy"] >= 0.9 and info["train_accuracy"] >= 0.9  # chance is 0.5
    assert info["channels"] == 3 and info["resolution"] == 16 and info["num_classes"] == 2
    assert json.loads(next(tmp_path.glob("*.json")).read_text()) == info

    def no_training(*args: object, **kw: object) -> None:
        raise AssertionError("retrained although the cache holds this classifier")

    monkeypatch.setattr(classifier_net, "_train", no_training)
    again, info2 = load_or_train_classifier(str(stripes), tmp_path, FAST)
    assert info2 == info
    for (name, a), b in zip(net.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    moved = tmp_path / "elsewhere.npz"  # the same content under another name: the same classifier
    shutil.copy(stripes, moved)
    ext_a = ClassifierFeatures(str(stripes), cache_dir=tmp_path, recipe=FAST)
    ext_b = ClassifierFeatures(str(moved), cache_dir=tmp_path, recipe=FAST)
    assert ext_a.cache_key == ext_b.cache_key and ext_a.name != ext_b.name
    with pytest.raises(AssertionError, match="retrained"):  # another recipe is another classifier
        load_or_train_classifier(str(stripes), tmp_path, Recipe(epochs=11, batch=16))


def test_digits_at_8x8_are_classified(tmp_path: Path) -> None:
    _, info = load_or_train_classifier(str(_digits8(tmp_path / "digits.npz")), tmp_path, Recipe(epochs=4, flip=False))
    assert info["n_heldout"] == 359 and info["num_classes"] == 10
    assert info["heldout_accuracy"] > 0.85  # chance is 0.1


def test_training_is_deterministic(stripes: Path, tmp_path: Path) -> None:
    a = ClassifierFeatures(str(stripes), cache_dir=tmp_path / "a", recipe=FAST)
    b = ClassifierFeatures(str(stripes), cache_dir=tmp_path / "b", recipe=FAST)
    for (name, pa), pb in zip(a.net.state_dict().items(), b.net.state_dict().values()):
        assert torch.equal(pa, pb), name
    images = np.load(stripes)["images"][:10]
    assert torch.equal(a(images), b(images))
    c = ClassifierFeatures(str(stripes), cache_dir=tmp_path / "c", recipe=Recipe(epochs=10, batch=16, seed=1))
    assert not torch.equal(a(images), c(images))


def test_features_standardized_any_size_and_channels(stripes: Path, tmp_path: Path) -> None:
    ext = ClassifierFeatures(str(stripes), cache_dir=tmp_path, recipe=FAST)
    data = np.load(stripes)
    fit = np.sort(np.random.default_rng(0).permutation(80)[16:])  # the split of the recipe's seed 0
    feats = ext(data["images"][fit])
    assert feats.shape == (64, classifier_net.FEATURE_DIM)
    torch.testing.assert_close(feats.mean(0), torch.zeros(classifier_net.FEATURE_DIM), atol=1e-4, rtol=0)
    assert abs(float(feats.pow(2).mean()) - 1.0) < 1e-4  # rms 1 over images and dimensions
    gray = data["images"][:4, :, :, :1]  # gray in: repeated to RGB
    assert ext(gray).shape == (4, classifier_net.FEATURE_DIM)
    bigger = np.repeat(np.repeat(data["images"][:4], 2, 1), 2, 2)  # 32x32 in: resized to the net's 16x16
    assert ext(bigger).shape == (4, classifier_net.FEATURE_DIM)
    assert fd_name(ext.name) == "FD_classifier"


def test_get_extractor_names_it_default_recipe(stripes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFMEM_CACHE", str(tmp_path))
    ext = get_extractor(f"classifier:{stripes}")
    assert isinstance(ext, ClassifierFeatures) and ext.name == f"classifier:{stripes}"
    assert ext.info["heldout_accuracy"] >= 0.9
    assert list((tmp_path / "classifier").glob("*.safetensors"))  # in the cache convention of digits-net


def _one_line(err: pytest.ExceptionInfo[DiffmemError]) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_bad_specs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "nolabels.npz", images=images)
    np.savez(tmp_path / "oneclass.npz", images=images, labels=np.zeros(40, np.int64))
    np.savez(tmp_path / "few.npz", images=images[:10], labels=(np.arange(10) % 2).astype(np.int64))
    cases = {"nolabels.npz": "has no labels", "oneclass.npz": "only one class", "few.npz": "only 10 images"}
    for name, expected in cases.items():
        with pytest.raises(DiffmemError) as err:
            get_extractor(f"classifier:{tmp_path / name}")
        assert expected in _one_line(err) and name in str(err.value)
    with pytest.raises(DiffmemError) as err:
        get_extractor("classifier")
    assert "classifier:PATH" in _one_line(err)
    with pytest.raises(DiffmemError) as err:
        get_extractor(f"classifier:{tmp_path / 'missing.npz'}")
    assert "does not exist" in _one_line(err)
    assert not (tmp_path / "classifier").exists() and not list(tmp_path.glob("*.safetensors"))


def _cifar_dir() -> Path | None:
    folder = Path(os.environ.get("DIFFMEM_CIFAR10", Path(__file__).resolve().parents[1] / "shared/data/cifar10"))
    return folder if (folder / "cifar10-test.npz").is_file() else None


@pytest.mark.skipif(_cifar_dir() is None, reason="the CIFAR-10 copy is not in shared/data/cifar10/ "
                    "(set DIFFMEM_CIFAR10 to its folder); the classifier is tested on synthetic data above")
def test_cifar_test_split_beats_chance(tmp_path: Path) -> None:
    folder = _cifar_dir()
    assert folder is not None
    _, info = load_or_train_classifier(str(folder / "cifar10-test.npz"), tmp_path, Recipe(epochs=2))
    assert info["n_images"] == 2000 and info["num_classes"] == 10 and info["resolution"] == 32
    assert info["heldout_accuracy"] > 0.2  # chance 0.1; the full 40-epoch recipe reaches ~0.58
