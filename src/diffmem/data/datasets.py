"""Image sets: load (built-in digits, folder, zip, npz), seeded train/held-out split, pixel ranges.

Every loader returns an `ImageDataset` holding uint8 `[N, H, W, C]` pixels (C = 1 or 3), optional int64
labels, and one name per image (file path, zip member, or index) for reports and error messages.
Nothing here touches global random state.
"""

from __future__ import annotations

import hashlib
import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffmem.data.limits import check_fits
from diffmem.data.readers import IMAGE_EXTENSIONS, read_folder, read_npz, read_zip
from diffmem.errors import DiffmemError

__all__ = [
    "BUILTINS",
    "IMAGE_EXTENSIONS",
    "ImageDataset",
    "count_classes",
    "load_images",
    "split_subset",
    "to_model_range",
    "to_uint8",
]

BUILTINS: tuple[str, ...] = ("digits",)
DIGITS_DEFAULT_RESOLUTION = 16


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A loaded image set. `images` is uint8 `[N, H, W, C]`, `labels` int64 `[N]` or None."""

    images: np.ndarray
    labels: np.ndarray | None
    source: str
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] not in (1, 3):
            raise ValueError(
                f"ImageDataset needs uint8 [N, H, W, C] with C in (1, 3), got {self.images.dtype} {self.images.shape}"
            )
        n = self.images.shape[0]
        if self.labels is not None and (self.labels.dtype != np.int64 or self.labels.shape != (n,)):
            raise ValueError(f"ImageDataset labels must be int64 [{n}], got {self.labels.dtype} {self.labels.shape}")
        if len(self.names) != n:
            raise ValueError(f"ImageDataset has {n} images but {len(self.names)} names")

    def __len__(self) -> int:
        """Number of images."""
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """`(H, W, C)` of one image."""
        _, h, w, c = self.images.shape
        return int(h), int(w), int(c)

    @property
    def resolution(self) -> int:
        """Image height H (equal to the width for square images)."""
        return int(self.images.shape[1])

    @property
    def channels(self) -> int:
        """C: 1 for gray, 3 for RGB."""
        return int(self.images.shape[3])

    @property
    def num_classes(self) -> int:
        """`max(label) + 1`, or 0 without labels."""
        if self.labels is None or self.labels.size == 0:
            return 0
        return int(self.labels.max()) + 1

    def subset(self, indices: np.ndarray) -> ImageDataset:
        """The images at `indices` (ints, in the given order; a boolean mask also works)."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64, copy=False).reshape(-1)
        return ImageDataset(
            images=self.images[idx],
            labels=None if self.labels is None else self.labels[idx],
            source=self.source,
            names=tuple(self.names[i] for i in idx),
        )

    def content_hash(self) -> str:
        """sha256 hex digest of shape, pixels and labels; the same data gives the same hash on any run."""
        h = hashlib.sha256()
        h.update(repr(tuple(int(s) for s in self.images.shape)).encode())
        h.update(np.ascontiguousarray(self.images).tobytes())
        if self.labels is None:
            h.update(b"labels:none")
        else:
            h.update(b"labels:")
            h.update(np.ascontiguousarray(self.labels, dtype="<i8").tobytes())
        return h.hexdigest()


# ----------------------------------------------------------------------------------------------------
# load_images


def load_images(spec: str, resolution: int | None = None, resize: bool = False) -> ImageDataset:
    """Load an image set.

    `spec` is `builtin:digits`, a folder of png/jpg/jpeg/bmp/webp images (searched recursively, sorted
    by relative path), a `.zip` of such images, or a `.npz` with `images` uint8 `[N, H, W(, C)]` and
    optional `labels`. Folders and zips may carry EDM-style labels in `dataset.json`.

    All images must share one size. `resolution` checks that size (square `resolution` x `resolution`);
    with `resize=True` every image is instead center-cropped to a square and resized (Lanczos) to it.
    For `builtin:digits`, `resolution` (default 16) is the size the 8x8 digits are resized to.
    Raises DiffmemError for anything the user can fix (missing path, corrupt file, mixed sizes, ...).
    """
    if resolution is not None and (
        isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 1
    ):
        raise DiffmemError(f"resolution must be a positive integer, got {resolution!r}")
    if resize and resolution is None:
        raise DiffmemError(f"resize needs a target size: pass a resolution together with --resize (data: '{spec}')")

    spec = str(spec)
    if spec.startswith("builtin:"):
        return _load_builtin(spec, resolution)

    path = Path(spec).expanduser()
    if not path.exists():
        hint = f"; did you mean 'builtin:{spec}'?" if spec in BUILTINS else ""
        raise DiffmemError(
            f"data path '{spec}' does not exist; give a folder of images, a .zip, a .npz, "
            f"or one of {', '.join('builtin:' + b for b in BUILTINS)}{hint}"
        )
    if path.is_dir():
        images, labels, names = read_folder(path)
    elif path.suffix.lower() == ".zip":
        images, labels, names = read_zip(path)
    elif path.suffix.lower() == ".npz":
        images, labels, names = read_npz(path)
    else:
        raise DiffmemError(
            f"data path '{spec}' is a '{path.suffix or 'extensionless'}' file; give a folder of images, "
            "a .zip of images, or a .npz with an 'images' array"
        )
    stacked = _to_common_array(images, names, spec, resolution, resize)
    return ImageDataset(images=stacked, labels=labels, source=spec, names=tuple(names))


def count_classes(spec: str, resolution: int | None = None, resize: bool = False) -> int:
    """How many classes the labels of the image set `spec` hold (the largest label + 1), for --cond;
    a DiffmemError when it has no labels."""
    labels = load_images(spec, resolution, resize=resize).labels
    if labels is None:
        raise DiffmemError(f"--cond needs class labels, but {spec} has none "
                           "(add a dataset.json, or 'labels' to the .npz)")
    return int(labels.max()) + 1


def _load_builtin(spec: str, resolution: int | None) -> ImageDataset:
    name = spec[len("builtin:") :]
    if name != "digits":
        raise DiffmemError(
            f"unknown built-in data set '{spec}'; available: {', '.join('builtin:' + b for b in BUILTINS)}"
        )
    pixels, labels = _digits_arrays()
    res = DIGITS_DEFAULT_RESOLUTION if resolution is None else int(resolution)
    check_fits(len(pixels), res, res, 1, what=f"--resolution {res} for '{spec}'", fix="choose a smaller --resolution")
    raw = pixels * (255.0 / 16.0)  # [N, 8, 8] in 0..255
    if res == raw.shape[1]:
        out = np.rint(raw)
    else:
        # Resize the float image (no rounding before resizing), then clip: bicubic overshoots.
        bicubic = Image.Resampling.BICUBIC
        out = np.stack([np.asarray(Image.fromarray(im.astype(np.float32)).resize((res, res), bicubic)) for im in raw])
        out = np.rint(out)
    images = np.clip(out, 0, 255).astype(np.uint8)[..., None]  # [N, res, res, 1]
    names = tuple(f"digits/{i}" for i in range(len(images)))
    return ImageDataset(images=images, labels=labels, source=spec, names=names)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: float64 pixels `[1797, 8, 8]` in 0..16 and int64 labels `[1797]`.

    Reads the data file that `sklearn.datasets.load_digits` reads, without importing scikit-learn
    (about a second); falls back to `load_digits()` if the file is not where it used to be.
    """
    csv = _digits_csv_path()
    if csv is not None:
        data = np.loadtxt(csv, delimiter=",")
        if data.shape == (1797, 65):
            return data[:, :64].reshape(-1, 8, 8), data[:, 64].astype(np.int64)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.asarray(digits.images, dtype=np.float64), np.asarray(digits.target, dtype=np.int64)


def _digits_csv_path() -> Path | None:
    """Where scikit-learn keeps `digits.csv.gz`, found without importing scikit-learn; None if not there."""
    spec = importlib.util.find_spec("sklearn")
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        csv = Path(loc) / "datasets" / "data" / "digits.csv.gz"
        if csv.is_file():
            return csv
    return None


def _resize_square(img: np.ndarray, res: int) -> np.ndarray:
    """uint8 `[H, W, C]` -> center-crop to a square, Lanczos-resize to `[res, res, C]`."""
    h, w, c = img.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = np.ascontiguousarray(img[top : top + s, left : left + s])
    if s == res:
        return crop
    pil = Image.fromarray(crop[:, :, 0]) if c == 1 else Image.fromarray(crop)
    out = np.asarray(pil.resize((res, res), Image.Resampling.LANCZOS))
    return out.reshape(res, res, c)


def _to_common_array(
    images: list[np.ndarray] | np.ndarray,
    names: list[str],
    spec: str,
    resolution: int | None,
    resize: bool,
) -> np.ndarray:
    """Bring decoded images to one channel count and one size; stack to uint8 `[N, H, W, C]`."""
    if isinstance(images, list):
        gray = [i for i, im in enumerate(images) if im.shape[-1] == 1]
        if gray and len(gray) < len(images):  # gray + RGB mixed: make everything RGB, and say so
            rgb = next(i for i, im in enumerate(images) if im.shape[-1] == 3)
            warnings.warn(f"'{spec}' mixes gray and RGB images (e.g. '{names[gray[0]]}' is gray, '{names[rgb]}' "
                          f"is RGB): converting its {len(gray)} gray image{'s' if len(gray) > 1 else ''} to RGB "
                          "(gray copied to the three channels)", stacklevel=4)
            images = [np.repeat(im, 3, axis=-1) if im.shape[-1] == 1 else im for im in images]
        sizes = [im.shape[:2] for im in images]
    else:
        sizes = [images.shape[1:3]] * len(images)

    first = sizes[0]
    other = next((i for i, s in enumerate(sizes) if s != first), None)
    target = None if resolution is None else (int(resolution), int(resolution))
    if resize:
        assert target is not None
        channels = images.shape[-1] if isinstance(images, np.ndarray) else images[0].shape[-1]
        check_fits(len(images), *target, channels, what=f"--resolution {target[0]} with --resize for '{spec}'",
                   fix="choose a smaller --resolution")
        if other is None and first == target:
            return images if isinstance(images, np.ndarray) else np.stack(images)
        return np.stack([_resize_square(im, target[0]) for im in images])
    if other is not None:
        raise DiffmemError(
            f"images in '{spec}' have different sizes, e.g. '{names[0]}' is {first[0]}x{first[1]} (HxW) and "
            f"'{names[other]}' is {sizes[other][0]}x{sizes[other][1]}; pass a resolution with --resize "
            "to center-crop and resize them all"
        )
    if target is not None and first != target:
        raise DiffmemError(
            f"images in '{spec}' are {first[0]}x{first[1]} (HxW), not the requested {target[0]}x{target[1]}; "
            "add --resize to resize them, or ask for the resolution they have"
        )
    return images if isinstance(images, np.ndarray) else np.stack(images)


# ----------------------------------------------------------------------------------------------------
# subsets and pixel ranges


def split_subset(n_total: int, n_subset: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of `range(n_total)` into (train, held-out) sorted int64 index arrays.

    `n_subset=None` puts everything in train. Otherwise train is `n_subset` indices chosen by
    `np.random.default_rng(seed).permutation(n_total)`, held-out the rest.
    """
    if n_total < 0:
        raise ValueError(f"n_total must be >= 0, got {n_total}")
    if n_subset is None:
        return np.arange(n_total, dtype=np.int64), np.empty(0, dtype=np.int64)
    if isinstance(n_subset, bool) or int(n_subset) != n_subset or not 1 <= n_subset <= n_total:
        raise DiffmemError(
            f"--subset {n_subset!r} is out of range: the data set has {n_total} images, so choose 1..{n_total} "
            "(or leave --subset out to train on all of them)"
        )
    perm = np.random.default_rng(seed).permutation(n_total)
    train = np.sort(perm[: int(n_subset)]).astype(np.int64)
    heldout = np.sort(perm[int(n_subset) :]).astype(np.int64)
    return train, heldout


def to_model_range(images: np.ndarray) -> torch.Tensor:
    """uint8 `[N, H, W, C]` -> float32 `[N, C, H, W]` in [-1, 1] (`x / 127.5 - 1`)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"to_model_range needs uint8 [N, H, W, C], got {images.dtype} {images.shape}")
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(torch.float32)  # [N, C, H, W]
    return (x / 127.5 - 1.0).contiguous()


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float `[N, C, H, W]` in [-1, 1] -> uint8 `[N, H, W, C]` via `((x + 1) * 127.5).round().clamp(0, 255)`.

    Values outside [-1, 1] are clipped. NaN raises DiffmemError (the model that made `x` diverged).
    """
    if x.ndim != 4:
        raise ValueError(f"to_uint8 needs [N, C, H, W], got shape {tuple(x.shape)}")
    x = x.detach().to(device="cpu", dtype=torch.float32)
    if torch.isnan(x).any():
        raise DiffmemError(
            f"images contain {int(torch.isnan(x).sum())} NaN values; the model or checkpoint that made them "
            "has diverged (retrain, e.g. with a lower learning rate, or use an earlier checkpoint)"
        )
    y = ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return y.permute(0, 2, 3, 1).contiguous().numpy()  # [N, H, W, C]
