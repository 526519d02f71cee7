"""The FID Inception-v3 (TensorFlow's 2015-12-05 graph, ported to PyTorch) and its 2048-d pool features.

Why it is written out here: the usual source of this network is torchvision's Inception3 patched by
pytorch-fid or torch-fidelity, and both pull in torchvision, which this project does not depend on;
no well-kept library ships the FID variant without it. The layout below follows torchvision's
Inception3 module names, so the weights file used by those tools loads unchanged:

    pt_inception-2015-12-05-6726825d.pth   (95 MB, sha256 starts with 6726825d)
    https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth

It is downloaded once into `$DIFFMEM_CACHE/inception/` (torch.hub download with a hash check), or
given as a local file (`--features inception:PATH`, `.pth` or `.safetensors` with the same keys).
Preprocessing matches pytorch-fid 0.3.0 (`InceptionV3([3])`, resize_input and normalize_input on): uint8
-> float / 255 in [0, 1] (gray repeated to RGB), `F.interpolate(x, (299, 299), mode="bilinear",
align_corners=False)` (half-pixel centres, no antialiasing), then `2x - 1` (`fid_preprocess`). The network
then is pytorch-fid's `fid_inception_v3`: torchvision's Inception3 (1008 classes, no aux logits) with its
blocks A (Mixed_5b-d), C (Mixed_6b-e) and E (Mixed_7b, 7c) replaced: TensorFlow's average pooling ignores
padded zeros (`count_include_pad=False`), and the last block max-pools (FID's quirk); the features are
the global average pool of Mixed_7c, 2048-d. tests/test_evaluate_inception.py compares the features with
pytorch-fid's on shared random weights when pytorch-fid and torchvision import, and the preprocessing
alone against a hand-written bilinear resize always.
"""

from __future__ import annotations

import pickle
import socket
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffmem.errors import DiffmemError
from diffmem.evaluate.cache import cache_root, offline
from diffmem.evaluate.extractor import FeatureExtractor, file_fingerprint

__all__ = ["FIDInceptionV3", "InceptionFeatures", "INCEPTION_URL", "INCEPTION_FILE", "inception_weights_path",
           "fid_preprocess"]

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{INCEPTION_FILE}"
INCEPTION_SHA256_PREFIX = "6726825d"
_DOWNLOAD_TIMEOUT_S = 15.0


class BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm (eps 1e-3) + ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)  # TF: padding not counted


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg_pool(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """`max_pool=True` is FID's last block (Mixed_7c), which max-pools where the paper average-pools."""

    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pool = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pool)], 1)


def fid_preprocess(x: torch.Tensor, size: int = 299) -> torch.Tensor:
    """pytorch-fid's input: `[B, 3, H, W]` in [0, 1] -> bilinear (align_corners=False, no antialiasing) to
    `size` x `size`, then scaled to [-1, 1]."""
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return 2 * x - 1


class FIDInceptionV3(nn.Module):
    """FID Inception-v3: `[B, 3, H, W]` in [0, 1] -> 2048-d pool features `[B, 2048]`.

    `fc` (1008 classes, as in TF's graph) is kept only so the reference state dict loads strictly.
    `input_size` is 299 for FID; anything from 75 up runs (tests use a small one for speed).
    """

    def __init__(self, input_size: int = 299) -> None:
        super().__init__()
        self.input_size = input_size
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(fid_preprocess(x, self.input_size))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The network on preprocessed input `[B, 3, S, S]` in [-1, 1] -> `[B, 2048]`."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean(dim=(2, 3))  # adaptive average pool to 1x1 -> [B, 2048]


def inception_weights_path(path: str | Path | None = None, url: str = INCEPTION_URL,
                           cache_dir: str | Path | None = None) -> Path:
    """A local file with the FID Inception weights: `path` if given, else the cached download of `url`."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise DiffmemError(
                f"Inception weights file '{p}' does not exist; pass the FID weights {INCEPTION_FILE} "
                f"(from {INCEPTION_URL}) as --features inception:PATH"
            )
        return p
    folder = Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / "inception"
    target = folder / url.rsplit("/", 1)[-1]
    if target.is_file():
        return target
    where = f"download {url} elsewhere and pass it as --features inception:PATH (or put it at {target})"
    if offline():
        raise DiffmemError(f"the FID Inception weights are not cached and downloads are off; {where}")
    folder.mkdir(parents=True, exist_ok=True)
    prefix = INCEPTION_SHA256_PREFIX if url == INCEPTION_URL else None
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)  # urlopen inside torch.hub has no timeout of its own
    try:
        torch.hub.download_url_to_file(url, str(target), hash_prefix=prefix, progress=True)
    except (OSError, RuntimeError, ValueError) as err:  # URLError and timeouts are OSErrors; bad hash: RuntimeError
        raise DiffmemError(f"could not download the FID Inception weights ({err}); {where}") from None
    finally:
        socket.setdefaulttimeout(old_timeout)
    return target


def load_inception(path: Path) -> FIDInceptionV3:
    """Build FIDInceptionV3 and load a `.pth` (torch.load, weights only) or `.safetensors` state dict."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as err:
        raise DiffmemError(f"cannot read Inception weights '{path}' ({err}); expected {INCEPTION_FILE}") from None
    if not isinstance(state, dict):
        raise DiffmemError(f"'{path}' holds a {type(state).__name__}, not a state dict; expected {INCEPTION_FILE}")
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    with torch.device("meta"):  # shapes only; the weights come from the file (no random init to pay for)
        model = FIDInceptionV3()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    if missing or extra or wrong:
        detail = "; ".join(
            f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong)) if keys
        )
        raise DiffmemError(f"'{path}' is not the FID Inception-v3 state dict ({detail}); expected {INCEPTION_FILE}")
    full = {k: v.to(torch.float32) for k, v in state.items()}
    full.update({k: torch.tensor(0) for k in model.state_dict() if k.endswith("num_batches_tracked")})
    model.load_state_dict(full, strict=True, assign=True)
    return model.eval()


class InceptionFeatures(FeatureExtractor):
    """2048-d pool features of the FID Inception-v3 (the features FID is defined on)."""

    family = "inception"
    dim = 2048

    def __init__(self, path: str | Path | None = None, device: str | torch.device = "cpu",
                 url: str = INCEPTION_URL) -> None:
        super().__init__(device)
        self.path = inception_weights_path(path, url).resolve()
        self.model = load_inception(self.path).to(self.device)
        self.name = f"inception-v3:{self.path.name}"

    @property
    def cache_key(self) -> str:
        return f"{self.name}#{file_fingerprint(self.path)}"

    def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
