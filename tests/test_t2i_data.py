"""Captioned image folders: both layouts, and a clear error for every way captions and images disagree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffmem.errors import DiffmemError
from diffmem.t2i.data import center_crop_resize, load_captioned, read_caption_folder_images

try:
    from t2i_fixtures import CAPTIONS, write_captioned
except ImportError:  # tests/ collected as a package
    from tests.t2i_fixtures import CAPTIONS, write_captioned


@pytest.mark.parametrize("layout", ["jsonl", "txt"])
def test_both_layouts_load(tmp_path: Path, layout: str) -> None:
    folder = write_captioned(tmp_path / "d", n=4, layout=layout, size=(40, 48))
    data = load_captioned(folder)
    assert data.files == ("img000.png", "img001.png", "img002.png", "img003.png")
    assert data.captions == CAPTIONS[:4]
    pixels = data.read_pixels([2, 0], 32)
    assert pixels.shape == (2, 32, 32, 3) and pixels.dtype == np.uint8
    assert len(data.content_hash()) == 64


def test_metadata_may_list_subfolders_and_extra_keys(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "sub" / "x.jpg")
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "sub/x.jpg", "text": "hi", "score": 3}) + "\n\n")
    data = load_captioned(tmp_path)
    assert data.files == ("sub/x.jpg",) and data.captions == ("hi",)


def test_gray_images_become_rgb(tmp_path: Path) -> None:
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(tmp_path / "g.png")
    (tmp_path / "g.txt").write_text("gray\n")
    data = load_captioned(tmp_path)
    assert data.captions == ("gray",)
    assert data.read_pixels([0], 8).shape == (1, 8, 8, 3)


def test_image_without_caption_in_metadata(tmp_path: Path) -> None:
    folder = write_captioned(tmp_path / "d", n=3)
    lines = (folder / "metadata.jsonl").read_text().splitlines()
    (folder / "metadata.jsonl").write_text("\n".join(lines[:2]) + "\n")
    with pytest.raises(DiffmemError, match=r"1 image\(s\).*no caption.*img002.png"):
        load_captioned(folder)


def test_caption_without_image_in_metadata(tmp_path: Path) -> None:
    folder = write_captioned(tmp_path / "d", n=3)
    (folder / "img001.png").unlink()
    with pytest.raises(DiffmemError, match="captions without images.*img001.png"):
        load_captioned(folder)


def test_caption_without_image_txt(tmp_path: Path) -> None:
    folder = write_captioned(tmp_path / "d", n=3, layout="txt")
    (folder / "extra.txt").write_text("orphan")
    with pytest.raises(DiffmemError, match="captions without images.*extra.txt"):
        load_captioned(folder)


def test_image_without_caption_txt(tmp_path: Path) -> None:
    folder = write_captioned(tmp_path / "d", n=3, layout="txt")
    (folder / "img000.txt").unlink()
    with pytest.raises(DiffmemError, match="no caption.*img000.png"):
        load_captioned(folder)


@pytest.mark.parametrize("line, match", [
    ("{not json", "line 1 is not valid JSON"),
    (json.dumps({"file_name": "img000.png"}), "needs the keys"),
    (json.dumps({"file_name": "img000.png", "text": ["a", "b"]}), "must be strings"),
])
def test_bad_metadata_lines(tmp_path: Path, line: str, match: str) -> None:
    folder = write_captioned(tmp_path / "d", n=1)
    (folder / "metadata.jsonl").write_text(line + "\n")
    with pytest.raises(DiffmemError, match=match):
        load_captioned(folder)


def test_duplicate_metadata_line(tmp_path: Path) -> None:
    folder = write_captioned(tmp_path / "d", n=1)
    line = (folder / "metadata.jsonl").read_text()
    (folder / "metadata.jsonl").write_text(line + line)
    with pytest.raises(DiffmemError, match="listed twice"):
        load_captioned(folder)


def test_no_captions_no_images_no_folder(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(DiffmemError, match="no captions.*metadata.jsonl"):
        load_captioned(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DiffmemError, match="holds no images"):
        load_captioned(tmp_path / "empty")
    with pytest.raises(DiffmemError, match="no such folder"):
        load_captioned(tmp_path / "missing")


def test_center_crop_resize() -> None:
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, 10:30] = 255  # the central square is white
    out = center_crop_resize(img, 10)
    assert out.shape == (10, 10, 3) and out[:, 1:-1].min() >= 250 and out.min() > 200  # bicubic edge blur
    same = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    assert center_crop_resize(same, 4) is same


def test_read_caption_folder_images(tmp_path: Path) -> None:
    folder = write_captioned(tmp_path / "d", n=2)
    images, captions = read_caption_folder_images(folder)
    assert images.shape == (2, 32, 32, 3) and captions == list(CAPTIONS[:2])
