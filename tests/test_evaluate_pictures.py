"""The side-by-side picture of the demo (evaluate/pictures.py:side_by_side_grid), checked pixel by pixel:
no smoothing, red frames exactly on the samples flagged as copies, a title over each panel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from diffmem.evaluate.pictures import COPY_COLOUR, side_by_side_grid
from diffmem.report.document import is_pixel_picture


def _checkers(n: int, seed: int) -> np.ndarray:
    """n gray 8x8 images of random 0/255 pixels: any smoothing would create values in between."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 2, size=(n, 8, 8, 1)) * 255).astype(np.uint8)


@pytest.fixture
def picture(tmp_path: Path) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    panels = {"training digits": _checkers(5, 0), "baseline": _checkers(6, 1), "Algorithm 1": _checkers(6, 2)}
    flags = {"baseline": np.array([True, False, True, False, False, True]),
             "Algorithm 1": np.zeros(6, dtype=bool)}
    path = side_by_side_grid(tmp_path / "side_by_side.png", panels, flags, ncol=3, size=32)
    assert path == tmp_path / "side_by_side.png" and is_pixel_picture(path)
    return np.asarray(Image.open(path).convert("RGB")).astype(int), panels, flags


def test_red_frames_mark_exactly_the_flagged_samples(picture) -> None:
    img, panels, flags = picture
    red = np.all(img == COPY_COLOUR, axis=-1)
    labels, count = ndimage.label(red)
    assert count == int(flags["baseline"].sum()) == 3  # one frame per copy, none in the other panels
    boxes = ndimage.find_objects(labels)
    widths = {b[1].stop - b[1].start for b in boxes}
    assert len(widths) == 1 and widths.pop() > 32  # each frame surrounds one 32 px tile
    third = img.shape[1] / 3
    assert all(third <= b[1].start < 2 * third for b in boxes)  # all in the middle (baseline) panel
    # the frames' order follows the flags: samples 0, 2 and 5 of a 3-column grid
    cells = sorted(((b[0].start, b[1].start) for b in boxes))
    rows = sorted({r for r, _ in cells})
    cols = sorted({c for _, c in cells})
    assert [(rows.index(r), cols.index(c)) for r, c in cells] == [(0, 0), (0, 1), (1, 1)]  # (0,0) (0,2) (1,2)
    # inside each frame: the sample itself, enlarged 4x by nearest neighbour
    for k, b in zip((0, 2, 5), sorted(boxes, key=lambda b: (b[0].start, b[1].start))):
        frame = red[b]
        inner = np.argwhere(~frame)
        (y0, x0), (y1, x1) = inner.min(0), inner.max(0) + 1
        tile = img[b][y0:y1, x0:x1, 0]
        assert tile.shape == (32, 32)
        np.testing.assert_array_equal(tile, np.kron(panels["baseline"][k][..., 0], np.ones((4, 4), int)))


def test_no_smoothing_and_a_title_per_panel(picture) -> None:
    img, _, _ = picture
    gray = img[..., 0]
    neutral = (img[..., 0] == img[..., 1]) & (img[..., 1] == img[..., 2])
    body = img[30:]  # below the titles: tiles (0 / 255), white background and red frames only
    values = {tuple(v) for v in body.reshape(-1, 3)}
    assert values <= {(0, 0, 0), (255, 255, 255), tuple(COPY_COLOUR)}, sorted(values)[:5]
    assert neutral[30:].sum() + np.all(body == COPY_COLOUR, axis=-1).sum() == body.shape[0] * body.shape[1]
    header = gray[:30]
    third = img.shape[1] // 3
    for p in range(3):  # dark title text over each of the three panels
        assert (header[:, p * third:(p + 1) * third] < 128).sum() > 20


def test_copy_flags_must_match_the_panel(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3 copy flags for 5 images"):
        side_by_side_grid(tmp_path / "x.png", {"a": _checkers(5, 0)}, {"a": np.ones(3, bool)})
    assert not (tmp_path / "x.png").exists()


def test_long_names_keep_their_informative_end() -> None:
    """File names keep their end (the name, not the folders); captions keep their start (what was asked)."""
    from diffmem.evaluate.pictures import _short

    path, caption = "some/deep/folder/img0042.png", "a photo of a red cat sitting on a tree"
    assert _short(path, 12) == "...g0042.png" and len(_short(path, 12)) == 12
    assert _short(caption, 12, keep_start=True) == "a photo o..." and _short("a cat", 12, keep_start=True) == "a cat"
