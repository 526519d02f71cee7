"""`classifier:SPEC`: a small CNN trained on any labelled image set, whose penultimate layer is a feature
space that needs no download (for Frechet distances and KID on natural images, e.g. CIFAR-10; never
call those FID: docs/method.md, "Metrics").

SPEC is whatever `diffmem.data.datasets.load_images` reads and carries labels: an .npz with `labels`,
a folder or zip with `dataset.json`, `builtin:digits`. The net is trained deterministically (fixed seed,
CPU, one thread) on a seeded 80% of the images and tested on the other 20%; that held-out accuracy is
the net's own (the features come from the very net that was tested). It is cached as
`$DIFFMEM_CACHE/classifier/<data hash>-<recipe hash>.safetensors` + `.json`, beside `digits-net/`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

from diffmem.errors import DiffmemError
from diffmem.evaluate.cache import cache_root, save_model
from diffmem.evaluate.extractor import FeatureExtractor
from diffmem.evaluate.preprocess import resize_square

__all__ = ["Recipe", "ClassifierNet", "train_classifier", "load_or_train_classifier", "ClassifierFeatures"]

VERSION = 1
FEATURE_DIM = 128
MAX_INPUT = 32  # larger images are resized to 32x32 (a net this small sees nothing finer anyway)
MIN_IMAGES = 20  # below this the 20% held out says nothing about the accuracy


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How the classifier is trained; every field is part of the cache key.

    Defaults: on 1600 CIFAR-10 images (80% of the 2000-image test split) 40 epochs reach about 58%
    held-out accuracy in about a minute and a half on one CPU thread (docs/performance.md).
    """

    epochs: int = 40
    batch: int = 64
    lr: float = 3e-3  # Adam, cosine decay to 0
    width: int = 16  # channels of the first block; the others have 2x and 4x
    holdout: float = 0.2  # share of the images held out to measure accuracy
    seed: int = 0  # initialisation, split, shuffling and augmentation
    shift: float = 0.125  # augmentation: random translation by up to this share of the size (reflected)
    flip: bool = True  # augmentation: random horizontal flips

    def key(self) -> str:
        """Hash of the recipe and the code version (the cache file name's second part)."""
        text = json.dumps({"version": VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class ClassifierNet(nn.Module):
    """`[B, C, R, R]` in [0, 1] -> logits `[B, classes]`; `features` gives the 128-d penultimate layer.

    Three stages of 3x3 conv + batch norm + ReLU (two convs of `w`, two of `2w`, one of `4w` channels),
    each followed by a 2x2 max pool while the map is at least 8 pixels wide, then a global average pool
    and a linear layer to the 128 features.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()
        w = int(width)
        self.stages = nn.ModuleList([
            nn.Sequential(_block(in_channels, w), _block(w, w)),
            nn.Sequential(_block(w, 2 * w), _block(2 * w, 2 * w)),
            nn.Sequential(_block(2 * w, 4 * w)),
        ])
        self.fc1 = nn.Linear(4 * w, FEATURE_DIM)
        self.fc2 = nn.Linear(FEATURE_DIM, num_classes)
        # As digits-net: the training images' mean feature and overall spread standardize the features, so
        # cosine similarity compares directions around the data's centre and KID's kernel sees unit scale
        self.register_buffer("feature_mean", torch.zeros(FEATURE_DIM))
        self.register_buffer("feature_scale", torch.ones(()))

    def _raw(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 0.5) / 0.5
        for stage in self.stages:
            x = stage(x)
            if x.shape[-1] >= 8:
                x = F.max_pool2d(x, 2)
        return self.fc1(x.mean(dim=(2, 3)))  # [B, 128], before its ReLU

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate layer (before its ReLU), standardized with the training images' statistics."""
        return (self._raw(x) - self.feature_mean) / self.feature_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self._raw(x)))


def _to_input(images: np.ndarray, resolution: int) -> torch.Tensor:
    """uint8 `[N, H, W, C]` -> float `[N, C, R, R]` in [0, 1], resized as the extractor resizes."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    return resize_square(x, resolution, mode="bilinear")


def _augment(x: torch.Tensor, recipe: Recipe, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and translations (reflection-padded crops), one draw per image."""
    b, _, r, _ = x.shape
    if recipe.flip:
        flip = torch.rand(b, generator=gen) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    pad = min(int(round(recipe.shift * r)), r - 1)
    if pad > 0:
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=gen).tolist()
        x = torch.stack([padded[i, :, dy : dy + r, dx : dx + r] for i, (dy, dx) in enumerate(offsets)])
    return x


def train_classifier(x: torch.Tensor, labels: np.ndarray, num_classes: int, recipe: Recipe = Recipe()) -> ClassifierNet:
    """Train ClassifierNet on float `[N, C, R, R]` images in [0, 1] (CPU, one thread, Adam, all draws seeded).

    One thread keeps the result bit-reproducible on any machine with the same torch build; the global
    random state is left as it was.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(x, labels, num_classes, recipe)
    finally:
        torch.set_num_threads(threads)


def _train(x: torch.Tensor, labels: np.ndarray, num_classes: int, recipe: Recipe) -> ClassifierNet:
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    with torch.random.fork_rng(devices=[]):  # the init draws from the global RNG: fork it, do not disturb it
        torch.manual_seed(recipe.seed)
        net = ClassifierNet(x.shape[1], num_classes, recipe.width)
    gen = torch.Generator().manual_seed(recipe.seed)
    params = list(net.parameters())
    m1 = [torch.zeros_like(p) for p in params]
    m2 = [torch.zeros_like(p) for p in params]
    total, step = recipe.epochs * -(-len(x) // recipe.batch), 0
    b1, b2, eps = 0.9, 0.999, 1e-8
    net.train()
    for _ in range(recipe.epochs):
        for idx in torch.randperm(len(x), generator=gen).split(recipe.batch):
            if len(idx) < 2:  # batch norm needs two images
                continue
            loss = F.cross_entropy(net(_augment(x[idx], recipe, gen)), y[idx])
            grads = torch.autograd.grad(loss, params)
            step += 1
            # Adam (Kingma & Ba 2015) with a cosine learning-rate decay, written out as in digits-net:
            # torch.optim's first use imports torch._dynamo, which costs seconds on a small CPU
            lr_t = recipe.lr * 0.5 * (1.0 + math.cos(math.pi * (step - 1) / total))
            with torch.no_grad():
                for p, g, m, v in zip(params, grads, m1, m2):
                    m.mul_(b1).add_(g, alpha=1 - b1)
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)
                    denom = (v / (1 - b2**step)).sqrt_().add_(eps)
                    p.addcdiv_(m, denom, value=-lr_t / (1 - b1**step))
    net.eval()
    with torch.no_grad():
        f = torch.cat([net.features(c) for c in x.split(256)])  # mean 0 and scale 1 still in place
        net.feature_mean.copy_(f.mean(dim=0))
        net.feature_scale.copy_((f - f.mean(dim=0)).pow(2).mean().sqrt())  # rms over images and dimensions
    return net


def _accuracy(net: ClassifierNet, x: torch.Tensor, labels: np.ndarray) -> float:
    with torch.no_grad():
        pred = torch.cat([net(c).argmax(1) for c in x.split(256)]).numpy()
    return float((pred == labels).mean())


def _check_labels(spec: str, labels: np.ndarray | None, n: int) -> np.ndarray:
    what = f"classifier features need labelled images, but '{spec}'"
    if labels is None:
        raise DiffmemError(f"{what} has no labels; add 'labels' to the .npz or a dataset.json to the folder/zip")
    classes = np.unique(labels)
    if len(classes) < 2:
        raise DiffmemError(f"{what} has only one class ({int(classes[0])}); a classifier needs at least two")
    if n < MIN_IMAGES:
        raise DiffmemError(f"{what} has only {n} images; give at least {MIN_IMAGES} (20% are held out to test it)")
    return labels


def _split(n: int, labels: np.ndarray, recipe: Recipe, spec: str) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(recipe.seed).permutation(n)
    n_held = max(1, int(round(recipe.holdout * n)))
    fit, held = np.sort(perm[n_held:]), np.sort(perm[:n_held])
    if len(np.unique(labels[fit])) < 2:
        raise DiffmemError(f"the training part of '{spec}' holds one class only; give more images of each class")
    return fit, held


def load_or_train_classifier(spec: str, cache_dir: str | Path | None = None,
                             recipe: Recipe = Recipe()) -> tuple[ClassifierNet, dict[str, Any]]:
    """The classifier of the labelled images `spec` (trained and cached on first use) and its json info."""
    from diffmem.data.datasets import load_images

    data = load_images(spec)
    labels = _check_labels(spec, data.labels, len(data))
    data_hash = data.content_hash()
    resolution = min(data.resolution, MAX_INPUT)
    num_classes = int(labels.max()) + 1
    folder = Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / "classifier"
    stem = folder / f"{data_hash[:16]}-{recipe.key()}"
    weights, meta = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    if weights.is_file() and meta.is_file():
        try:
            info = json.loads(meta.read_text())
            with torch.device("meta"):  # no random init (it would draw from the global RNG)
                net = ClassifierNet(info["channels"], info["num_classes"], recipe.width)
            net.load_state_dict(load_file(str(weights)), assign=True)
            if info.get("data_hash") == data_hash:
                return net.eval(), info
        except (OSError, RuntimeError, ValueError, KeyError) as err:
            warnings.warn(f"retraining the classifier: the cached copy {weights} is unreadable ({err})", stacklevel=2)
    x = _to_input(data.images, resolution)
    fit, held = _split(len(data), labels, recipe, spec)
    t0 = time.perf_counter()
    net = train_classifier(x[fit], labels[fit], num_classes, recipe)
    info = {
        "name": f"classifier:{spec}",
        "version": VERSION,
        "recipe": dataclasses.asdict(recipe),
        "recipe_key": recipe.key(),
        "data_hash": data_hash,
        "channels": data.channels,
        "resolution": resolution,
        "num_classes": num_classes,
        "feature_dim": FEATURE_DIM,
        "n_images": len(data),
        "n_train": len(fit),
        "n_heldout": len(held),
        "train_accuracy": _accuracy(net, x[fit], labels[fit]),
        "heldout_accuracy": _accuracy(net, x[held], labels[held]),
        "heldout_note": (f"trained on a seeded {len(fit)} of the {len(data)} images, tested on the other "
                         f"{len(held)}; the features come from this net"),
        "train_seconds": round(time.perf_counter() - t0, 2),
    }
    _save(net, info, weights, meta)
    return net, info


def _save(net: ClassifierNet, info: dict, weights: Path, meta: Path) -> None:
    save_model(net, info, weights, meta, "the classifier")


class ClassifierFeatures(FeatureExtractor):
    """Penultimate-layer features of the classifier trained on the labelled images `spec`.

    Images are converted to the training images' channels and resized to their size (at most 32).
    `info` (held-out accuracy, data hash, recipe) goes into audit and FD reports as `feature_model`.
    """

    family = "classifier"
    dim = FEATURE_DIM

    def __init__(self, spec: str, device: str | torch.device = "cpu", cache_dir: str | Path | None = None,
                 recipe: Recipe = Recipe()) -> None:
        super().__init__(device)
        if not str(spec).strip():
            raise DiffmemError("classifier features need labelled images: --features classifier:PATH "
                               "(an .npz with labels, or a folder/zip with dataset.json)")
        self.spec, self.recipe = str(spec), recipe
        net, self.info = load_or_train_classifier(self.spec, cache_dir, recipe)
        self.net = net.to(self.device)
        self.channels = int(self.info["channels"])
        self.resolution = int(self.info["resolution"])
        self.name = f"classifier:{self.spec}"

    @property
    def cache_key(self) -> str:
        """Keyed by the classifier's data and recipe, not the path it was read from."""
        return f"classifier:{self.info['data_hash'][:16]}#v{VERSION}-{self.recipe.key()}"

    def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(resize_square(x, self.resolution, mode="bilinear"))
