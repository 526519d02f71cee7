"""Tests for diffmem.data.datasets and diffmem.data.io (small images, CPU, fast)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffmem.data import datasets
from diffmem.data.datasets import ImageDataset, load_images, split_subset, to_model_range, to_uint8
from diffmem.data.io import PAD_VALUE, read_image_file, save_grid, save_images
from diffmem.errors import DiffmemError


def _rand_images(n: int, h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, c), dtype=np.uint8)


def _write_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img[:, :, 0] if img.shape[-1] == 1 else img).save(path)


# ---------------------------------------------------------------------------------------------------
# builtin:digits


def test_digits_shape_labels_and_determinism() -> None:
    a = load_images("builtin:digits")
    assert a.images.shape == (1797, 16, 16, 1) and a.images.dtype == np.uint8
    assert a.shape == (16, 16, 1) and a.resolution == 16 and a.channels == 1 and len(a) == 1797
    assert a.labels is not None and a.labels.dtype == np.int64 and set(a.labels.tolist()) == set(range(10))
    assert a.num_classes == 10
    assert a.names[0] == "digits/0" and a.names[-1] == "digits/1796"
    assert a.images.max() >= 250 and a.images.min() == 0  # scaled to the full 0..255 range
    b = load_images("builtin:digits")
    assert a.content_hash() == b.content_hash()
    np.testing.assert_array_equal(a.images, b.images)


def test_digits_resolution_and_same_as_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    d8 = load_images("builtin:digits", resolution=8)
    assert d8.images.shape == (1797, 8, 8, 1)
    expected = np.rint(digits.images * 255.0 / 16.0).astype(np.uint8)
    np.testing.assert_array_equal(d8.images[..., 0], expected)  # no resize at the native size
    np.testing.assert_array_equal(d8.labels, digits.target)
    monkeypatch.setattr(datasets, "_digits_csv_path", lambda: None)  # the load_digits() fallback agrees
    assert load_images("builtin:digits", resolution=8).content_hash() == d8.content_hash()
    d12 = load_images("builtin:digits", resolution=12)
    assert d12.images.shape == (1797, 12, 12, 1)
    assert d12.content_hash() != d8.content_hash()


def test_unknown_builtin_lists_builtins() -> None:
    with pytest.raises(DiffmemError, match=r"builtin:digits"):
        load_images("builtin:cifar")


# ---------------------------------------------------------------------------------------------------
# folders and zips


def test_folder_nested_sorted_with_labels(tmp_path: Path) -> None:
    imgs = _rand_images(3, 4, 5, 3)
    _write_png(tmp_path / "b.png", imgs[0])
    _write_png(tmp_path / "a" / "z.png", imgs[1])
    _write_png(tmp_path / "a.png", imgs[2])
    (tmp_path / "notes.txt").write_text("not an image")
    meta = {"labels": [["a.png", 2], ["a/z.png", 0], ["b.png", 1]]}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    ds = load_images(str(tmp_path))
    assert ds.names == ("a.png", "a/z.png", "b.png")  # sorted by relative path, recursive, non-images skipped
    np.testing.assert_array_equal(ds.images, imgs[[2, 1, 0]])
    assert ds.labels is not None and ds.labels.tolist() == [2, 0, 1]
    assert ds.num_classes == 3 and ds.shape == (4, 5, 3) and ds.resolution == 4
    sub = ds.subset(np.array([2, 0]))
    assert sub.names == ("b.png", "a.png") and sub.labels.tolist() == [1, 2]
    np.testing.assert_array_equal(sub.images, imgs[[0, 2]])


def test_folder_null_label_gives_no_labels(tmp_path: Path) -> None:
    imgs = _rand_images(2, 4, 4, 1)
    _write_png(tmp_path / "0.png", imgs[0])
    _write_png(tmp_path / "1.png", imgs[1])
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": [["0.png", 3], ["1.png", None]]}))
    with pytest.warns(UserWarning, match="no label"):
        ds = load_images(str(tmp_path))
    assert ds.labels is None and ds.num_classes == 0
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": None}))
    assert load_images(str(tmp_path)).labels is None


def test_bad_dataset_json_names_file(tmp_path: Path) -> None:
    _write_png(tmp_path / "0.png", _rand_images(1, 4, 4, 1)[0])
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DiffmemError, match="dataset.json"):
        load_images(str(tmp_path))


def test_zip_round_trip_with_labels(tmp_path: Path) -> None:
    imgs = _rand_images(3, 6, 6, 3, seed=1)
    zpath = tmp_path / "data.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for i, name in enumerate(["00000/img2.png", "00000/img0.png", "00000/img1.png"]):
            tmp = tmp_path / f"t{i}.png"
            _write_png(tmp, imgs[i])
            zf.write(tmp, name)
        zf.writestr("00000/", "")  # directory entry
        zf.writestr("__MACOSX/00000/._img0.png", b"\x00\x05junk")  # macOS litter, skipped
        labels = [["00000/img0.png", 5], ["00000/img1.png", 6], ["00000/img2.png", 4]]
        zf.writestr("dataset.json", json.dumps({"labels": labels}))
    ds = load_images(str(zpath))
    assert ds.names == ("00000/img0.png", "00000/img1.png", "00000/img2.png")
    np.testing.assert_array_equal(ds.images, imgs[[1, 2, 0]])
    assert ds.labels.tolist() == [5, 6, 4]


def test_corrupt_zip_member_names_member(tmp_path: Path) -> None:
    zpath = tmp_path / "bad.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("x/broken.png", b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DiffmemError, match=r"bad\.zip:x/broken\.png"):
        load_images(str(zpath))
    (tmp_path / "notzip.zip").write_bytes(b"hello")
    with pytest.raises(DiffmemError, match="notzip.zip"):
        load_images(str(tmp_path / "notzip.zip"))


def test_gray_and_rgb_mix_becomes_rgb(tmp_path: Path) -> None:
    gray = _rand_images(1, 4, 4, 1, seed=2)[0]
    rgba = _rand_images(1, 4, 4, 4, seed=3)[0]
    _write_png(tmp_path / "0_gray.png", gray)
    Image.fromarray(rgba).save(tmp_path / "1_rgba.png")
    with pytest.warns(UserWarning, match="mixes gray and RGB images .*'0_gray.png' is gray.* converting its 1 gray "
                      "image to RGB"):
        ds = load_images(str(tmp_path))
    assert ds.channels == 3
    np.testing.assert_array_equal(ds.images[0], np.repeat(gray, 3, axis=-1))
    np.testing.assert_array_equal(ds.images[1], rgba[..., :3])  # alpha dropped


def test_gray_or_rgb_only_folder_says_nothing(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    for i, c in enumerate((1, 1, 3)):
        _write_png(tmp_path / ("rgb" if c == 3 else "gray") / f"{i}.png", _rand_images(1, 4, 4, c, seed=i)[0])
    assert load_images(str(tmp_path / "gray")).channels == 1 and load_images(str(tmp_path / "rgb")).channels == 3
    assert [str(w.message) for w in recwarn] == []


def test_gray_only_folder_and_palette_and_16bit(tmp_path: Path) -> None:
    gray = _rand_images(1, 4, 4, 1, seed=4)[0]
    _write_png(tmp_path / "g.png", gray)
    assert load_images(str(tmp_path)).channels == 1
    p = Image.fromarray(_rand_images(1, 4, 4, 3)[0]).convert("P")
    p.save(tmp_path / "p.png")
    assert read_image_file(tmp_path / "p.png").shape == (4, 4, 3)
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "g16.png")
    arr16 = read_image_file(tmp_path / "g16.png")
    assert arr16.shape == (4, 4, 1) and arr16.dtype == np.uint8 and (arr16 == 255).all()


def test_corrupt_file_error_names_file(tmp_path: Path) -> None:
    _write_png(tmp_path / "ok.png", _rand_images(1, 4, 4, 3)[0])
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "broken.jpg").write_bytes(b"definitely not a jpeg")
    with pytest.raises(DiffmemError, match=r"broken\.jpg"):
        load_images(str(tmp_path))


def test_truncated_png_error_names_file(tmp_path: Path) -> None:
    _write_png(tmp_path / "full.png", _rand_images(1, 32, 32, 3)[0])
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DiffmemError, match=r"cut\.png"):
        read_image_file(tmp_path / "cut.png")


def test_missing_path_and_bad_file_type(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DiffmemError, match="nope.*does not exist"):
        load_images(str(missing))
    with pytest.raises(DiffmemError, match="builtin:digits"):
        load_images("digits")  # hint towards the builtin
    (tmp_path / "data.csv").write_text("1,2,3")
    with pytest.raises(DiffmemError, match=r"data\.csv"):
        load_images(str(tmp_path / "data.csv"))


def test_empty_folder_and_empty_zip(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(DiffmemError, match="no images"):
        load_images(str(tmp_path / "empty"))
    with zipfile.ZipFile(tmp_path / "e.zip", "w") as zf:
        zf.writestr("readme.txt", "nothing")
    with pytest.raises(DiffmemError, match="no images"):
        load_images(str(tmp_path / "e.zip"))


def test_mixed_sizes_error_and_resize(tmp_path: Path) -> None:
    _write_png(tmp_path / "a.png", _rand_images(1, 8, 8, 3)[0])
    _write_png(tmp_path / "b.png", _rand_images(1, 6, 10, 3)[0])
    with pytest.raises(DiffmemError) as err:
        load_images(str(tmp_path))
    msg = str(err.value)
    assert "8x8" in msg and "6x10" in msg and "--resize" in msg
    ds = load_images(str(tmp_path), resolution=4, resize=True)
    assert ds.images.shape == (2, 4, 4, 3)
    with pytest.raises(DiffmemError, match="resolution"):
        load_images(str(tmp_path), resize=True)  # resize without a target size


def test_resize_center_crops_before_resizing(tmp_path: Path) -> None:
    img = np.zeros((4, 8, 1), np.uint8)
    img[:, 2:6] = 200  # the centre 4x4 square is uniform; the sides, which the crop drops, are black
    _write_png(tmp_path / "wide.png", img)
    ds = load_images(str(tmp_path), resolution=2, resize=True)
    assert ds.images.shape == (1, 2, 2, 1) and (ds.images == 200).all()


def test_resolution_mismatch_suggests_resize(tmp_path: Path) -> None:
    imgs = _rand_images(2, 8, 8, 1)
    save_images(imgs, tmp_path / "d")
    assert load_images(str(tmp_path / "d"), resolution=8).resolution == 8
    with pytest.raises(DiffmemError, match="--resize"):
        load_images(str(tmp_path / "d"), resolution=4)
    assert load_images(str(tmp_path / "d"), resolution=4, resize=True).images.shape == (2, 4, 4, 1)
    # resize=True at the size the images already have leaves the pixels untouched
    np.testing.assert_array_equal(load_images(str(tmp_path / "d"), resolution=8, resize=True).images, imgs)


# ---------------------------------------------------------------------------------------------------
# npz


def test_npz_gray_3d_and_rgb_4d_with_labels(tmp_path: Path) -> None:
    g = _rand_images(3, 5, 5, 1)[..., 0]
    np.savez(tmp_path / "g.npz", images=g)
    ds = load_images(str(tmp_path / "g.npz"))
    assert ds.images.shape == (3, 5, 5, 1) and ds.labels is None and ds.names == ("0", "1", "2")
    np.testing.assert_array_equal(ds.images[..., 0], g)

    rgb = _rand_images(4, 5, 5, 3)
    np.savez(tmp_path / "rgb.npz", images=rgb, labels=np.array([0, 3, 1, 1], np.int32))
    ds = load_images(str(tmp_path / "rgb.npz"))
    np.testing.assert_array_equal(ds.images, rgb)
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [0, 3, 1, 1] and ds.num_classes == 4


def test_npz_errors_name_the_file(tmp_path: Path) -> None:
    np.savez(tmp_path / "nokey.npz", pixels=np.zeros((1, 2, 2), np.uint8))
    with pytest.raises(DiffmemError, match=r"nokey\.npz.*'images'"):
        load_images(str(tmp_path / "nokey.npz"))
    np.savez(tmp_path / "float.npz", images=np.zeros((1, 2, 2, 3), np.float32))
    with pytest.raises(DiffmemError, match=r"float\.npz.*uint8"):
        load_images(str(tmp_path / "float.npz"))
    np.savez(tmp_path / "chw.npz", images=np.zeros((2, 3, 8, 8), np.uint8))
    with pytest.raises(DiffmemError, match="channels-first"):
        load_images(str(tmp_path / "chw.npz"))
    np.savez(tmp_path / "lab.npz", images=np.zeros((2, 2, 2), np.uint8), labels=np.array([1]))
    with pytest.raises(DiffmemError, match=r"lab\.npz"):
        load_images(str(tmp_path / "lab.npz"))


# ---------------------------------------------------------------------------------------------------
# ImageDataset


def test_content_hash_sensitive_to_pixels_labels_and_shape() -> None:
    imgs = _rand_images(2, 4, 4, 1)
    names = ("0", "1")
    base = ImageDataset(imgs, np.array([0, 1], np.int64), "x", names)
    assert base.content_hash() == ImageDataset(imgs.copy(), np.array([0, 1], np.int64), "y", names).content_hash()
    changed = imgs.copy()
    changed[0, 0, 0, 0] ^= 1
    assert ImageDataset(changed, base.labels, "x", names).content_hash() != base.content_hash()
    assert ImageDataset(imgs, np.array([1, 1], np.int64), "x", names).content_hash() != base.content_hash()
    assert ImageDataset(imgs, None, "x", names).content_hash() != base.content_hash()
    reshaped = imgs.reshape(2, 2, 8, 1)
    assert ImageDataset(reshaped, base.labels, "x", names).content_hash() != base.content_hash()
    with pytest.raises(ValueError):
        ImageDataset(imgs, None, "x", ("0",))  # one name per image


# ---------------------------------------------------------------------------------------------------
# split_subset


def test_split_subset_properties_and_determinism() -> None:
    train, held = split_subset(100, 30, seed=7)
    assert train.dtype == np.int64 and held.dtype == np.int64
    assert len(train) == 30 and len(held) == 70
    assert (np.diff(train) > 0).all() and (np.diff(held) > 0).all()
    assert set(train.tolist()).isdisjoint(held.tolist())
    np.testing.assert_array_equal(np.sort(np.concatenate([train, held])), np.arange(100))
    again, _ = split_subset(100, 30, seed=7)
    np.testing.assert_array_equal(train, again)
    other, _ = split_subset(100, 30, seed=8)
    assert not np.array_equal(train, other)
    expected = np.sort(np.random.default_rng(7).permutation(100)[:30])
    np.testing.assert_array_equal(train, expected)

    all_train, none_held = split_subset(10, None, seed=0)
    np.testing.assert_array_equal(all_train, np.arange(10))
    assert none_held.shape == (0,) and none_held.dtype == np.int64
    full, empty = split_subset(10, 10, seed=0)
    np.testing.assert_array_equal(full, np.arange(10))
    assert empty.size == 0


@pytest.mark.parametrize("n_subset", [0, -1, 11])
def test_split_subset_errors(n_subset: int) -> None:
    with pytest.raises(DiffmemError, match=r"--subset.*10"):
        split_subset(10, n_subset, seed=0)


# ---------------------------------------------------------------------------------------------------
# pixel ranges


def test_model_range_round_trip_and_range() -> None:
    a = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    a = np.concatenate([a, a[:, ::-1]], axis=0).repeat(3, axis=-1)  # [2, 16, 16, 3]
    x = to_model_range(a)
    assert x.dtype == torch.float32 and x.shape == (2, 3, 16, 16)
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    assert torch.allclose(x[0, 0, 0, 1], torch.tensor(1 / 127.5 - 1))
    back = to_uint8(x)
    assert back.dtype == np.uint8 and back.shape == a.shape
    np.testing.assert_array_equal(back, a)


def test_to_uint8_clips_and_rounds() -> None:
    x = torch.tensor([-3.0, -1.0, 0.0, 1.0, 5.0, 1 / 127.5 - 1 + 0.003]).reshape(1, 1, 1, 6)
    assert to_uint8(x)[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255, 1]  # 127.5 rounds half to even -> 128
    with pytest.raises(DiffmemError, match="NaN"):
        to_uint8(torch.full((1, 1, 2, 2), float("nan")))


# ---------------------------------------------------------------------------------------------------
# saving


def test_save_images_folder_round_trip_and_overwrite(tmp_path: Path) -> None:
    imgs = _rand_images(3, 4, 4, 3, seed=5)
    labels = np.array([2, 0, 1])
    out = save_images(imgs, tmp_path / "out", labels=labels)
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000001.png", "000002.png", "dataset.json"]
    ds = load_images(str(out))
    np.testing.assert_array_equal(ds.images, imgs)
    assert ds.labels.tolist() == [2, 0, 1]
    with pytest.raises(DiffmemError, match="not empty"):
        save_images(imgs, out)
    fewer = _rand_images(2, 4, 4, 1, seed=6)
    save_images(fewer, out, overwrite=True)  # old samples and labels are removed, not mixed in
    ds2 = load_images(str(out))
    np.testing.assert_array_equal(ds2.images, fewer)
    assert ds2.labels is None
    (tmp_path / "empty").mkdir()
    save_images(fewer, tmp_path / "empty")  # an existing empty folder is fine
    assert len(load_images(str(tmp_path / "empty"))) == 2


def test_save_images_npz_round_trip(tmp_path: Path) -> None:
    imgs = _rand_images(3, 4, 4, 1, seed=7)
    out = save_images(imgs, tmp_path / "sub" / "s.npz", labels=np.array([1, 1, 0]))
    assert out == tmp_path / "sub" / "s.npz"
    assert sorted(p.name for p in out.parent.iterdir()) == ["s.npz"]  # no temporary file left behind
    ds = load_images(str(out))
    np.testing.assert_array_equal(ds.images, imgs)
    assert ds.labels.tolist() == [1, 1, 0]
    with pytest.raises(DiffmemError, match=r"s\.npz"):
        save_images(imgs, out)
    save_images(imgs[:1], out, overwrite=True)
    assert len(load_images(str(out))) == 1


def test_save_grid_size_and_content(tmp_path: Path) -> None:
    imgs = _rand_images(5, 4, 6, 3)
    out = save_grid(imgs, tmp_path / "grid.png", pad=1, scale=2)
    grid = np.asarray(Image.open(out))
    # ceil(sqrt(5)) = 3 per row, 2 rows: height 2*4*2 + 3, width 3*6*2 + 4
    assert grid.shape == (2 * 8 + 3, 3 * 12 + 4, 3)
    np.testing.assert_array_equal(grid[1:9, 1:13], imgs[0].repeat(2, 0).repeat(2, 1))
    assert (grid[0] == PAD_VALUE).all()
    gray = save_grid(_rand_images(4, 3, 3, 1), tmp_path / "g.png", nrow=4, pad=0)
    with Image.open(gray) as g:
        assert g.mode == "L" and g.size == (12, 3)


# ---------------------------------------------------------------------------------------------------
# sizes the memory cannot hold, zip bombs, decompression bombs: refused before the bytes are allocated


def _little_memory(monkeypatch: pytest.MonkeyPatch, room: int) -> None:
    from diffmem.data import limits

    monkeypatch.setattr(limits, "available_memory", lambda: room)


def test_resolution_memory_cannot_hold_is_refused_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's `--resolution 100000` (about 90 TB) is refused at once; with 10 MB of memory, 64x64 digits
    (1797 x 64 x 64 x 5 bytes = 36.8 MB) are refused and 16x16 ones (2.3 MB) load."""
    with pytest.raises(DiffmemError, match=r"--resolution 100000 .* 1797 images of 100000x100000x1 need about "
                                           r"89.8 TB .* choose a smaller --resolution"):
        load_images("builtin:digits", 100000)
    _little_memory(monkeypatch, 10 * 10**6)
    with pytest.raises(DiffmemError, match=r"need about 36.8 MB .* more than the 10.0 MB of memory available"):
        load_images("builtin:digits", 64)
    assert load_images("builtin:digits", 16).resolution == 16


def test_resize_memory_cannot_hold_is_refused_before_resizing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(3):
        _write_png(tmp_path / f"{i}.png", _rand_images(1, 6, 6, 3, seed=i)[0])
    _little_memory(monkeypatch, 3 * 6 * 6 * 3 * 5)  # room for the 6x6 images as they are
    monkeypatch.setattr(datasets, "_resize_square", lambda *a: pytest.fail("resized before the size was checked"))
    with pytest.raises(DiffmemError, match="--resolution 64 with --resize .* 3 images of 64x64x3"):
        load_images(str(tmp_path), 64, resize=True)


@pytest.mark.parametrize("kind", ["folder", "zip", "npz"])
def test_decoded_images_past_memory_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    images = _rand_images(10, 8, 8, 1)
    if kind == "npz":
        spec = tmp_path / "d.npz"
        np.savez(spec, images=images)
    else:
        spec = tmp_path / "imgs"
        for i, im in enumerate(images):
            _write_png(spec / f"{i}.png", im)
        if kind == "zip":
            with zipfile.ZipFile(tmp_path / "d.zip", "w") as zf:
                for f in sorted(spec.iterdir()):
                    zf.write(f, f.name)
            spec = tmp_path / "d.zip"
    _little_memory(monkeypatch, 3 * 64 * 5 + 1)  # three 8x8 gray images and their float copy fit, four do not
    match = "'images' in .* 10 images of 8x8x1" if kind == "npz" else "first 4 of 10 images already need about 1.3 kB"
    with pytest.raises(DiffmemError, match=match):
        load_images(str(spec))


def _zip_with(path: Path, name: str, size: int) -> Path:
    """A zip holding `size` zero bytes under `name`, deflated (a few hundred kB for 256 MiB)."""
    chunk = bytes(2**20)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open(name, "w", force_zip64=True) as f:
            for start in range(0, size, len(chunk)):
                f.write(chunk[: min(len(chunk), size - start)])
        zf.writestr("ok.png", b"")
    return path


def test_zip_member_past_the_cap_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's 2 GB big.png in a 2 MB zip, at the real cap (256 MiB + 1 byte here): refused from the zip's
    directory, without inflating a byte."""
    from diffmem.data import limits

    spec = _zip_with(tmp_path / "bomb.zip", "big.png", limits.MAX_MEMBER_BYTES + 1)
    assert spec.stat().st_size < 2 * 10**6
    monkeypatch.setattr(zipfile.ZipFile, "read", lambda *a, **k: pytest.fail("a member was inflated"))
    with pytest.raises(DiffmemError, match=r"bomb.zip:big.png' inflates to 268.4 MB, more than the 268.4 MB one image"):
        load_images(str(spec))


def test_zip_past_the_archive_cap_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from diffmem.data import limits

    with zipfile.ZipFile(tmp_path / "many.zip", "w") as zf:
        for i in range(4):
            zf.writestr(f"{i}.png", bytes(100))
    monkeypatch.setattr(limits, "MAX_ARCHIVE_BYTES", 399)
    with pytest.raises(DiffmemError, match="many.zip' inflates to 400 B, more than the 399 B a zip of images may"):
        load_images(str(tmp_path / "many.zip"))


def test_decompression_bomb_image_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_png(tmp_path / "imgs" / "huge.png", np.zeros((64, 64, 1), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses above twice this: 4096 pixels > 2000
    with pytest.raises(DiffmemError, match="huge.png' is too large to decode .* decompression bomb"):
        load_images(str(tmp_path / "imgs"))
