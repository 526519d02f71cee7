"""`digits-net`: a small CNN trained on the built-in digits, whose penultimate layer is a feature space
that needs no download (for Frechet distances on `builtin:digits`; never call those FID).

Trained deterministically (fixed seed, CPU) on all 1797 digits at the requested resolution and cached
as `$DIFFMEM_CACHE/digits-net/r{RES}-v{VERSION}.safetensors` + `.json`. Before that, the same recipe is
fitted once on a seeded 80% split to measure held-out accuracy; the json reports both accuracies.
"""

from __future__ import annotations

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

__all__ = ["DigitsNet", "train_digits_net", "load_or_train_digits_net", "DigitsNetFeatures"]

VERSION = 3
FEATURE_DIM = 64
EPOCHS = 8
_MAX_INPUT = 16  # larger inputs are area-downsampled to 16x16 first (the digits are 8x8 at heart)


class DigitsNet(nn.Module):
    """Gray `[B, 1, R, R]` in [0, 1] -> logits `[B, 10]`; `features` gives the 64-d penultimate layer."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.conv3 = nn.Conv2d(2 * width, 4 * width, 3, padding=1)
        self.fc1 = nn.Linear(4 * width * 4, FEATURE_DIM)  # from the 2x2-pooled last conv
        self.fc2 = nn.Linear(FEATURE_DIM, 10)
        # The training digits' mean feature and overall spread: features are standardized with them, so
        # cosine similarity compares directions around the data's centre and KID's kernel (x.y/d + 1)^3
        # sees unit-scale inputs, as with Inception features
        self.register_buffer("feature_mean", torch.zeros(FEATURE_DIM))
        self.register_buffer("feature_scale", torch.ones(()))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate layer (before its ReLU), standardized with the training digits' statistics, `[B, 64]`."""
        if x.shape[-1] > _MAX_INPUT:
            x = F.adaptive_avg_pool2d(x, _MAX_INPUT)
        x = (x - 0.5) / 0.5
        x = F.relu(self.conv1(x))  # [B, w, R, R]
        if x.shape[-1] >= 8:
            x = F.max_pool2d(x, 2)
        x = F.relu(self.conv2(x))
        if x.shape[-1] >= 8:
            x = F.max_pool2d(x, 2)
        x = F.adaptive_avg_pool2d(F.relu(self.conv3(x)), 2)  # [B, 4w, 2, 2]
        return (self.fc1(x.flatten(1)) - self.feature_mean) / self.feature_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.features(x) * self.feature_scale + self.feature_mean))


def train_digits_net(images: np.ndarray, labels: np.ndarray, *, epochs: int = EPOCHS, seed: int = 0,
                     batch_size: int = 32, lr: float = 1e-2) -> DigitsNet:
    """Train DigitsNet on uint8 `[N, R, R, 1]` images (CPU, one thread, Adam, seeded init and shuffling).

    One thread keeps the result bit-reproducible and is also the fastest for a net this small.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(images, labels, epochs=epochs, seed=seed, batch_size=batch_size, lr=lr)
    finally:
        torch.set_num_threads(threads)


def _train(images: np.ndarray, labels: np.ndarray, *, epochs: int, seed: int, batch_size: int,
           lr: float) -> DigitsNet:
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0  # [N, 1, R, R]
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    with torch.random.fork_rng(devices=[]):  # the init draws from the global RNG: fork it, do not disturb it
        torch.manual_seed(seed)
        net = DigitsNet()
    gen = torch.Generator().manual_seed(seed)
    params = list(net.parameters())
    m1 = [torch.zeros_like(p) for p in params]
    m2 = [torch.zeros_like(p) for p in params]
    total, step = epochs * -(-len(x) // batch_size), 0
    b1, b2, eps = 0.9, 0.999, 1e-8
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            grads = torch.autograd.grad(F.cross_entropy(net(x[idx]), y[idx]), params)
            step += 1
            # Adam (Kingma & Ba 2015) with a cosine learning-rate decay, written out: torch.optim's first use
            # imports torch._dynamo, which costs seconds on a small CPU
            lr_t = lr * 0.5 * (1.0 + math.cos(math.pi * (step - 1) / total))
            with torch.no_grad():
                for p, g, m, v in zip(params, grads, m1, m2):
                    m.mul_(b1).add_(g, alpha=1 - b1)  # m = b1 m + (1 - b1) g
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)  # v = b2 v + (1 - b2) g^2
                    denom = (v / (1 - b2**step)).sqrt_().add_(eps)
                    p.addcdiv_(m, denom, value=-lr_t / (1 - b1**step))  # p -= lr m_hat / (sqrt(v_hat) + eps)
    net.eval()
    with torch.no_grad():
        f = net.features(x)  # [N, 64] with mean 0 and scale 1 still in place
        net.feature_mean.copy_(f.mean(dim=0))
        net.feature_scale.copy_((f - f.mean(dim=0)).pow(2).mean().sqrt())  # rms over digits and dimensions
    return net


def _accuracy(net: DigitsNet, images: np.ndarray, labels: np.ndarray) -> float:
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        pred = net(x).argmax(1).numpy()
    return float((pred == labels).mean())


def load_or_train_digits_net(resolution: int, cache_dir: str | Path | None = None,
                             epochs: int = EPOCHS) -> tuple[DigitsNet, dict[str, Any]]:
    """The cached digits-net for `resolution` (trained and cached on first use) and its json info."""
    from diffmem.data.datasets import load_images

    folder = Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / "digits-net"
    stem = folder / f"r{resolution}-v{VERSION}-e{epochs}"
    weights, meta = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    if weights.is_file() and meta.is_file():
        with torch.device("meta"):  # no random init (it would draw from the global RNG)
            net = DigitsNet()
        try:
            net.load_state_dict(load_file(str(weights)), assign=True)
            return net.eval(), json.loads(meta.read_text())
        except (OSError, RuntimeError, ValueError) as err:
            warnings.warn(f"retraining digits-net: the cached copy {weights} is unreadable ({err})", stacklevel=2)
    data = load_images("builtin:digits", resolution=resolution)
    t0 = time.perf_counter()
    perm = np.random.default_rng(0).permutation(len(data))
    n_fit = int(0.8 * len(data))
    fit, held = np.sort(perm[:n_fit]), np.sort(perm[n_fit:])
    probe = train_digits_net(data.images[fit], data.labels[fit], epochs=epochs)
    heldout_acc = _accuracy(probe, data.images[held], data.labels[held])
    net = train_digits_net(data.images, data.labels, epochs=epochs)
    info = {
        "name": f"digits-net:{resolution}",
        "version": VERSION,
        "resolution": resolution,
        "feature_dim": FEATURE_DIM,
        "epochs": epochs,
        "seed": 0,
        "data_hash": data.content_hash(),
        "n_train": len(data),
        "train_accuracy": _accuracy(net, data.images, data.labels),
        "heldout_accuracy": heldout_acc,
        "heldout_note": f"same recipe fitted on a seeded 80% split ({n_fit} digits), tested on the other {len(held)}",
        "train_seconds": round(time.perf_counter() - t0, 2),
    }
    _save(net, info, weights, meta)
    return net, info


def _save(net: DigitsNet, info: dict, weights: Path, meta: Path) -> None:
    save_model(net, info, weights, meta, "digits-net")


class DigitsNetFeatures(FeatureExtractor):
    """Penultimate-layer features of digits-net (gray; RGB is turned into luma; resized to its resolution).

    With `resolution=None` the first image set embedded (normally the reference set) fixes it.
    """

    family = "digits-net"
    channels = 1
    dim = FEATURE_DIM

    def __init__(self, resolution: int | None = None, device: str | torch.device = "cpu",
                 cache_dir: str | Path | None = None, epochs: int = EPOCHS) -> None:
        super().__init__(device)
        if resolution is not None and int(resolution) < 4:
            raise DiffmemError(f"digits-net needs a resolution of at least 4, got {resolution}")
        self.cache_dir, self.epochs = cache_dir, int(epochs)
        self.resolution: int | None = None
        self.net: DigitsNet | None = None
        self.info: dict[str, Any] = {}
        if resolution is not None:
            self._bind(int(resolution))

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"digits-net:{self.resolution}" if self.resolution else "digits-net"

    @property
    def cache_key(self) -> str:
        return f"{self.name}#v{VERSION}-e{self.epochs}"

    def _bind(self, resolution: int) -> None:
        net, self.info = load_or_train_digits_net(resolution, self.cache_dir, self.epochs)
        self.net, self.resolution = net.to(self.device), resolution

    def prepare(self, images: np.ndarray) -> None:
        if self.net is None:
            self._bind(int(images.shape[1]))

    def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        assert self.net is not None and self.resolution is not None
        return self.net.features(resize_square(x, self.resolution, mode="bilinear"))
