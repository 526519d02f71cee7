"""Readers of image sets on disk: a folder of images, a .zip of images (both with optional EDM-style
labels in `dataset.json`), and a .npz with `images` and optional `labels`. Each returns the images (a
list or one array), the labels (int64 [N] or None) and one name per image."""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from diffmem.data.io import read_image_file
from diffmem.data.limits import DecodeBudget, check_fits, check_zip_sizes
from diffmem.errors import DiffmemError

__all__ = ["IMAGE_EXTENSIONS", "read_folder", "read_zip", "read_npz"]

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
_LABELS_FILE = "dataset.json"  # EDM dataset_tool: {"labels": [["rel/name.png", 3], ...]} or {"labels": null}


def _is_image_name(rel: str) -> bool:
    parts = rel.split("/")
    if "__MACOSX" in parts or parts[-1].startswith("._"):  # macOS resource-fork litter, not images
        return False
    return Path(parts[-1]).suffix.lower() in IMAGE_EXTENSIONS


def read_folder(root: Path) -> tuple[list[np.ndarray], np.ndarray | None, list[str]]:
    """The images under `root` (recursively, sorted by relative path), labels from `dataset.json`, names."""
    rels = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    names = [r for r in rels if _is_image_name(r)]
    if not names:
        raise DiffmemError(
            f"no images found in folder '{root}' (looked recursively for {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    budget = DecodeBudget(str(root), len(names))
    images = []
    for n in names:
        images.append(read_image_file(root / n, name=str(root / n)))
        budget.add(images[-1].size)
    labels = None
    meta_path = root / _LABELS_FILE
    if meta_path.is_file():
        labels = _labels_from_meta(_parse_json(meta_path.read_bytes(), str(meta_path)), names, str(meta_path))
    return images, labels, names


def read_zip(path: Path) -> tuple[list[np.ndarray], np.ndarray | None, list[str]]:
    """The images in the zip file `path` (sorted by member name), labels from its `dataset.json`, names."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DiffmemError(f"cannot open zip file '{path}': {exc}; check that it is a complete .zip archive") from exc
    with zf:
        members = {i.filename: i for i in zf.infolist() if not i.is_dir()}
        names = sorted(m for m in members if _is_image_name(m))
        if not names:
            raise DiffmemError(
                f"no images found in zip file '{path}' (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        labels_member = [members[_LABELS_FILE]] if _LABELS_FILE in members else []
        check_zip_sizes(path, [members[n] for n in names] + labels_member)
        images, budget = [], DecodeBudget(str(path), len(names))
        for n in names:
            label = f"{path}:{n}"
            try:
                data = zf.read(members[n])
            except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:  # includes CRC errors
                raise DiffmemError(f"cannot read '{label}': {exc}; the zip archive is damaged") from exc
            images.append(read_image_file(io.BytesIO(data), name=label))
            budget.add(images[-1].size)
        labels = None
        if _LABELS_FILE in members:
            label = f"{path}:{_LABELS_FILE}"
            labels = _labels_from_meta(_parse_json(zf.read(members[_LABELS_FILE]), label), names, label)
    return images, labels, names


def _parse_json(data: bytes, label: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DiffmemError(f"cannot parse '{label}' as JSON: {exc}; fix or remove the file") from exc


def _labels_from_meta(meta: Any, names: list[str], label: str) -> np.ndarray | None:
    """Labels in `names` order from EDM's `{"labels": [[name, int], ...]}`; None if any is missing."""
    fix = f"expected {{\"labels\": [[\"relative/name.png\", 3], ...]}} or {{\"labels\": null}}; fix or remove '{label}'"
    if not isinstance(meta, dict) or "labels" not in meta:
        raise DiffmemError(f"'{label}' has no 'labels' entry; {fix}")
    entries = meta["labels"]
    if entries is None:
        return None
    if not isinstance(entries, list):
        raise DiffmemError(f"'labels' in '{label}' is a {type(entries).__name__}, not a list; {fix}")
    table: dict[str, int | None] = {}
    for entry in entries:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str)):
            raise DiffmemError(f"bad entry {entry!r} in '{label}'; {fix}")
        value = entry[1]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise DiffmemError(f"label of '{entry[0]}' in '{label}' is {value!r}, not a non-negative integer; {fix}")
        table[entry[0].replace("\\", "/")] = value
    values = [table.get(n) for n in names]
    missing = [n for n, v in zip(names, values) if v is None]
    if missing:
        warnings.warn(
            f"'{label}' gives no label for {len(missing)} of {len(names)} images (e.g. '{missing[0]}'); "
            "loading the images without labels",
            stacklevel=4,
        )
        return None
    return np.asarray(values, dtype=np.int64)


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """The `images` array of a .npz (uint8 [N, H, W(, C)]), its optional `labels`, and index names."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.keys())
            if "images" not in keys:
                raise DiffmemError(f"'{path}' has no 'images' array (it has: {', '.join(keys) or 'nothing'}); "
                                   "save the pixels as images=uint8 [N, H, W, C]")
            _check_npz_images_fit(npz, path)
            images = npz["images"]
            labels = npz["labels"] if "labels" in keys else None
    except DiffmemError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DiffmemError(f"cannot read '{path}' as a .npz file: {exc}") from exc
    if images.dtype != np.uint8:
        raise DiffmemError(
            f"'images' in '{path}' has dtype {images.dtype}; store uint8 pixels in 0..255 "
            "(e.g. np.clip(np.rint(x), 0, 255).astype(np.uint8))"
        )
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        hint = ""
        if images.ndim == 4 and images.shape[1] in (1, 3):
            hint = " (this looks channels-first: use images.transpose(0, 2, 3, 1))"
        raise DiffmemError(
            f"'images' in '{path}' has shape {images.shape}; expected [N, H, W] or [N, H, W, C] with C = 1 or 3{hint}"
        )
    if images.shape[0] == 0:
        raise DiffmemError(f"'images' in '{path}' holds no images")
    if labels is not None:
        if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer) or (labels < 0).any():
            raise DiffmemError(
                f"'labels' in '{path}' must be non-negative integers of shape ({images.shape[0]},), "
                f"got {labels.dtype} {labels.shape}"
            )
        labels = labels.astype(np.int64)
    return images, labels, [f"{i}" for i in range(images.shape[0])]


def _check_npz_images_fit(npz: Any, path: Path) -> None:
    """Refuse an `images` array whose declared shape (read from its .npy header, nothing inflated) will not
    fit in memory with its float32 copy; a header that cannot be read is left to np.load to report."""
    try:
        with npz.zip.open("images.npy") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape = read(f)[0]
    except (KeyError, AttributeError, OSError, ValueError, zipfile.BadZipFile):
        return
    if len(shape) in (3, 4):
        check_fits(*shape[:3], shape[3] if len(shape) == 4 else 1, what=f"'images' in '{path}'",
                   fix="store fewer or smaller images")
