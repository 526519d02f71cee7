"""Image files in and out: decode one file, save a set of images (PNG folder or .npz), save a grid.

Images are always uint8 arrays `[N, H, W, C]` with C = 1 (gray) or 3 (RGB), the layout of
`diffmem.data.datasets.ImageDataset.images`.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from diffmem.errors import DiffmemError
from diffmem.utils.atomic import atomic_dir, save_atomic
from diffmem.utils.outdir import OWN, check_out_folder

__all__ = ["read_image_file", "save_images", "save_grid", "PAD_VALUE"]

PAD_VALUE = 224  # gray level of the gaps in `save_grid` (white-ish, so black digits and white pictures both show)
_SAMPLE_NAME = re.compile(r"^\d{6}\.png$")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError)


def read_image_file(path: str | Path | BinaryIO, *, name: str | None = None) -> np.ndarray:
    """Decode one image file into uint8 `[H, W, C]`.

    Gray images ("1", "L", "LA", 16-bit "I;16") give C = 1 (16-bit values are scaled to 0..255);
    everything else (RGB, RGBA, palette, CMYK, ...) gives C = 3 with any alpha channel dropped.
    `path` may be an open binary file (e.g. a zip member); `name` is then what error messages call it.
    Raises DiffmemError naming the file when it cannot be decoded.
    """
    label = name if name is not None else str(path)
    try:
        with Image.open(path) as img:
            img.load()  # decode now, inside the try: truncated files fail here, not at Image.open
            mode = img.mode
            if mode in ("1", "L", "LA"):
                arr = np.asarray(img.convert("L"))
            elif mode.startswith("I;16"):
                arr16 = np.asarray(img).astype(np.float64)
                arr = np.clip(np.rint(arr16 / 257.0), 0, 255).astype(np.uint8)
            elif mode in ("I", "F"):
                raise DiffmemError(
                    f"image file '{label}' has pixel mode '{mode}' (32-bit integer or float); "
                    "convert it to an 8-bit gray or RGB PNG first"
                )
            elif mode == "RGB":
                arr = np.asarray(img)
            else:
                arr = np.asarray(img.convert("RGB"))
    except DiffmemError:
        raise
    except FileNotFoundError as exc:
        raise DiffmemError(f"image file '{label}' does not exist") from exc
    except Image.DecompressionBombError as exc:  # PIL's cap on one image's pixels: raised before decoding
        raise DiffmemError(f"image file '{label}' is too large to decode ({exc}); it may be a decompression bomb. "
                           "Shrink or remove it") from None
    except _DECODE_ERRORS as exc:
        raise DiffmemError(
            f"cannot read image file '{label}': {exc}. The file is corrupt or not an image; "
            "fix or remove it"
        ) from exc
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _check_images(images: np.ndarray, what: str) -> np.ndarray:
    """Validate a uint8 `[N, H, W, C]` array (also accept `[N, H, W]` as C = 1)."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"{what}: images must be uint8, got {images.dtype} (use to_uint8 first)")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"{what}: images must be [N, H, W, C] with C in (1, 3), got shape {images.shape}")
    return images


def _to_pil(img: np.ndarray) -> Image.Image:
    """uint8 `[H, W, C]` -> PIL image ("L" or "RGB")."""
    if img.shape[-1] == 1:
        return Image.fromarray(np.ascontiguousarray(img[:, :, 0]))
    return Image.fromarray(np.ascontiguousarray(img))


def _check_labels(labels: np.ndarray | None, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers of shape ({n},), got {labels.dtype} {labels.shape}")
    return labels.astype(np.int64)


def save_images(
    images: np.ndarray,
    path: str | Path,
    *,
    overwrite: bool = False,
    labels: np.ndarray | None = None,
) -> Path:
    """Save uint8 `[N, H, W, C]` images; return the path written.

    - `*.npz`: one file with `images` (and `labels` if given), written to a temporary file first and
      moved into place.
    - anything else: a folder of `{i:06d}.png` (plus EDM-style `dataset.json` when labels are given),
      readable again with `load_images(folder)`.

    Refuses (DiffmemError) to replace an existing .npz file or to write into a non-empty folder unless
    `overwrite=True`. Either output appears whole or not at all: overwriting a folder writes a new
    folder (keeping copies of the old one's files other than `NNNNNN.png` and `dataset.json`) and
    swaps it in.
    """
    images = _check_images(images, "save_images")
    labels = _check_labels(labels, len(images))
    path = Path(path).expanduser()
    if path.suffix.lower() == ".npz":
        return _save_npz(images, labels, path, overwrite)
    return _save_folder(images, labels, path, overwrite)


def _save_npz(images: np.ndarray, labels: np.ndarray | None, path: Path, overwrite: bool) -> Path:
    if path.is_dir():
        raise DiffmemError(f"cannot write '{path}': it is a folder; choose a file name ending in .npz")
    if path.exists() and not overwrite:
        raise DiffmemError(f"'{path}' already exists; choose another output path or allow overwriting")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"images": images} if labels is None else {"images": images, "labels": labels}
    save_atomic(path, lambda tmp: np.savez(tmp, **arrays))
    return path


def _write_pngs(images: np.ndarray, labels: np.ndarray | None, folder: Path) -> None:
    names = [f"{i:06d}.png" for i in range(len(images))]
    for name, img in zip(names, images):
        _to_pil(img).save(folder / name, format="PNG", compress_level=1)
    if labels is not None:
        meta = {"labels": [[name, int(lab)] for name, lab in zip(names, labels)]}
        (folder / "dataset.json").write_text(json.dumps(meta))


def _keep_other_files(old: Path, new: Path) -> None:
    """Copy what is not a sample (`NNNNNN.png`, dataset.json) from the old folder into the new one."""
    for entry in old.iterdir():
        if entry.is_file() and (_SAMPLE_NAME.match(entry.name) or entry.name == "dataset.json"):
            continue
        if entry.is_dir():
            shutil.copytree(entry, new / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, new / entry.name, follow_symlinks=False)


def _save_folder(images: np.ndarray, labels: np.ndarray | None, path: Path, overwrite: bool) -> Path:
    replacing = check_out_folder(path, kind="folder of images", flag=None) == OWN  # any non-empty folder
    if replacing and not overwrite:
        raise DiffmemError(f"output folder '{path}' is not empty; choose another folder, empty it, or allow overwriting")
    # Write the whole set into a sibling temporary folder, then move it into place, so an interrupted
    # run never leaves a partial set under the final name. Replacing an earlier set swaps two folders:
    # a kill between the two renames leaves the name absent (the old set stays in `.NAME.*.old`).
    with atomic_dir(path, before_swap=_keep_other_files) as tmp:
        _write_pngs(images, labels, tmp)
    return path


def make_grid(images: np.ndarray, nrow: int | None = None, pad: int = 1, scale: int = 1) -> np.ndarray:
    """Tile uint8 `[N, H, W, C]` images into one uint8 `[H', W', C]` array.

    `nrow` images per row (default `ceil(sqrt(N))`, at most N), `pad` pixels of gap (gray level PAD_VALUE) between
    and around the tiles, each tile upscaled `scale` times by nearest neighbour (pass 4 to make 16x16
    digits visible). With `rows = ceil(N / nrow)` the output is
    `rows*H*scale + (rows+1)*pad` pixels high and `nrow*W*scale + (nrow+1)*pad` wide.
    """
    images = _check_images(images, "make_grid")
    n, h, w, c = images.shape
    if n == 0:
        raise ValueError("make_grid: no images to tile")
    if scale < 1 or pad < 0 or (nrow is not None and nrow < 1):
        raise ValueError(f"make_grid: need scale >= 1, pad >= 0, nrow >= 1; got {scale}, {pad}, {nrow}")
    ncol = nrow if nrow is not None else math.ceil(math.sqrt(n))
    ncol = min(ncol, n)
    rows = math.ceil(n / ncol)
    th, tw = h * scale, w * scale
    canvas = np.full((rows * th + (rows + 1) * pad, ncol * tw + (ncol + 1) * pad, c), PAD_VALUE, np.uint8)
    tiles = images.repeat(scale, axis=1).repeat(scale, axis=2) if scale > 1 else images  # [N, th, tw, C]
    for i, tile in enumerate(tiles):
        r, col = divmod(i, ncol)
        y, x = pad + r * (th + pad), pad + col * (tw + pad)
        canvas[y : y + th, x : x + tw] = tile
    return canvas


def save_grid(
    images: np.ndarray,
    path: str | Path,
    nrow: int | None = None,
    pad: int = 1,
    scale: int = 1,
) -> Path:
    """Tile images with `make_grid` and write the picture; return the path written.

    The format follows the file extension (PNG when there is none). Existing files are replaced, whole
    (a temporary file, then a rename: a kill never leaves half a picture).
    """
    canvas = make_grid(images, nrow, pad, scale)
    path = Path(path).expanduser()
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    return save_atomic(path, lambda tmp: _to_pil(canvas).save(tmp, format=fmt))
