"""Captioned images: a folder with `metadata.jsonl` (diffusers' ImageFolder convention) or `.txt` captions.

Two layouts are accepted, both searched recursively:

- `metadata.jsonl` at the top of the folder, one JSON object per line with `file_name` (a path
  relative to the folder) and `text` (the caption); other keys are ignored. Every image in the
  folder must be listed, and every listed file must exist.
- no metadata.jsonl: every image `a/b.png` has a caption file `a/b.txt` beside it (UTF-8 text).

An image without a caption or a caption without an image is an error that names the file, never a
silent skip: a silently shrunken training set changes what the model memorizes.
Pixels are read lazily (`read_pixels`) so 10k images at 512x512 need not sit in memory at once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from diffmem.data.io import read_image_file
from diffmem.errors import DiffmemError

__all__ = ["CaptionedImages", "load_captioned", "center_crop_resize", "read_caption_folder_images"]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
METADATA = "metadata.jsonl"


@dataclass(frozen=True)
class CaptionedImages:
    """A captioned image folder: `files[i]` (relative path) has caption `captions[i]`."""

    root: Path
    files: tuple[str, ...]
    captions: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.files)

    def read_pixels(self, indices: list[int] | np.ndarray, resolution: int) -> np.ndarray:
        """uint8 `[B, R, R, 3]`: the images at `indices`, RGB, center-cropped and resized to R."""
        out = []
        for i in np.asarray(indices, dtype=np.int64).reshape(-1):
            img = read_image_file(self.root / self.files[int(i)])
            if img.shape[-1] == 1:
                img = np.repeat(img, 3, axis=-1)
            out.append(center_crop_resize(img, resolution))
        return np.stack(out) if out else np.zeros((0, resolution, resolution, 3), np.uint8)

    def content_hash(self) -> str:
        """sha256 of (relative name, file size, caption) for every image: cheap enough to check on resume.

        It does not read pixels, so an image edited in place with an unchanged size goes unnoticed.
        """
        h = hashlib.sha256()
        for name, cap in zip(self.files, self.captions):
            h.update(json.dumps([name, (self.root / name).stat().st_size, cap]).encode())
        return h.hexdigest()


def center_crop_resize(img: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 `[H, W, C]` -> `[R, R, C]`: resize the short side to R (bicubic), then center-crop.

    This is the `Resize(R) + CenterCrop(R)` preprocessing of the diffusers and S23 training scripts.
    """
    h, w = img.shape[:2]
    if (h, w) == (resolution, resolution):
        return img
    scale = resolution / min(h, w)
    nh, nw = max(resolution, round(h * scale)), max(resolution, round(w * scale))
    pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
    arr = np.asarray(pil.resize((nw, nh), Image.Resampling.BICUBIC)).reshape(nh, nw, img.shape[-1])
    top, left = (nh - resolution) // 2, (nw - resolution) // 2
    return np.ascontiguousarray(arr[top : top + resolution, left : left + resolution])


def _image_files(root: Path) -> list[str]:
    rels = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return [r for r in rels if Path(r).suffix.lower() in IMAGE_EXTENSIONS and "__MACOSX" not in r.split("/")
            and not Path(r).name.startswith("._")]


def _from_metadata(root: Path, images: list[str]) -> tuple[list[str], list[str]]:
    meta = root / METADATA
    files, captions, seen = [], [], set()
    for lineno, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise DiffmemError(f"{meta} line {lineno} is not valid JSON ({err}); fix that line") from None
        if not isinstance(rec, dict) or "file_name" not in rec or "text" not in rec:
            raise DiffmemError(f"{meta} line {lineno} needs the keys \"file_name\" and \"text\", "
                               f"e.g. {{\"file_name\": \"0001.png\", \"text\": \"a red car\"}}")
        name, text = rec["file_name"], rec["text"]
        if not isinstance(name, str) or not isinstance(text, str):
            raise DiffmemError(f"{meta} line {lineno}: \"file_name\" and \"text\" must be strings "
                               f"(one caption per image), got {type(name).__name__} and {type(text).__name__}")
        name = Path(name).as_posix().removeprefix("./")
        if name in seen:
            raise DiffmemError(f"{meta} line {lineno}: {name!r} is listed twice; give each image one caption")
        seen.add(name)
        files.append(name)
        captions.append(text)
    missing = [f for f in files if not (root / f).is_file()]
    if missing:
        raise DiffmemError(f"{meta} has captions without images: {len(missing)} listed file(s) do not exist in "
                           f"{root}, e.g. {missing[:3]}; remove those lines or add the images")
    uncaptioned = sorted(set(images) - seen)
    if uncaptioned:
        raise DiffmemError(f"{len(uncaptioned)} image(s) in {root} have no caption in {METADATA}, e.g. "
                           f"{uncaptioned[:3]}; add a line for each or move them out of the folder")
    return files, captions


def _from_txt(root: Path, images: list[str]) -> tuple[list[str], list[str]]:
    txts = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.txt") if p.is_file())
    if not txts:
        raise DiffmemError(f"{root} holds images but no captions: add a {METADATA} (lines of "
                           "{\"file_name\": ..., \"text\": ...}) or a same-named .txt caption beside each image")
    stems = {str(Path(f).with_suffix("")): f for f in images}
    doubled = [f for f in images if stems[str(Path(f).with_suffix(""))] != f]
    if doubled:
        raise DiffmemError(f"{root} has two images with the same name but different extensions (e.g. {doubled[0]}); "
                           "their .txt caption would be ambiguous, rename one")
    orphans = [t for t in txts if str(Path(t).with_suffix("")) not in stems]
    if orphans:
        raise DiffmemError(f"{root} has captions without images: {len(orphans)} .txt file(s) have no same-named "
                           f"image, e.g. {orphans[:3]}; remove them or add the images")
    uncaptioned = [f for f in images if not (root / Path(f).with_suffix(".txt")).is_file()]
    if uncaptioned:
        raise DiffmemError(f"{len(uncaptioned)} image(s) in {root} have no caption (.txt beside them), e.g. "
                           f"{uncaptioned[:3]}; add the captions or move those images out")
    captions = [(root / Path(f).with_suffix(".txt")).read_text(encoding="utf-8").strip() for f in images]
    return images, captions


def load_captioned(folder: str | Path) -> CaptionedImages:
    """Read the list of images and captions of a folder (pixels are read later, see `read_pixels`)."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DiffmemError(f"--data {folder}: no such folder (expected images with a {METADATA} or .txt captions)")
    images = _image_files(root)
    if not images:
        raise DiffmemError(f"--data {folder} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    if (root / METADATA).is_file():
        files, captions = _from_metadata(root, images)
    else:
        files, captions = _from_txt(root, images)
    return CaptionedImages(root=root, files=tuple(files), captions=tuple(captions))


def read_caption_folder_images(folder: str | Path, resolution: int | None = None) -> tuple[np.ndarray, list[str]]:
    """All images of a captioned folder as uint8 `[N, R, R, 3]` plus their captions.

    Used to read sample folders back (diffmem t2i sample writes the same layout). `resolution=None`
    keeps the size of the first image (all images must then share it).
    """
    data = load_captioned(folder)
    if resolution is None:
        first = read_image_file(data.root / data.files[0])
        if first.shape[0] != first.shape[1]:
            raise DiffmemError(f"{data.root / data.files[0]} is not square; pass a resolution")
        resolution = int(first.shape[0])
    return data.read_pixels(np.arange(len(data)), resolution), list(data.captions)
