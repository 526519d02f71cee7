"""Pictures of an audit: one chart of the similarity distributions with labelled threshold lines, sample
grids with copies framed, the most similar samples beside their nearest training images (file names below),
and titled grids side by side (the demo's side_by_side.png). Pictures of images are enlarged by nearest
neighbour and marked (PIXEL_MARK) so that reports do not smooth them either."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

__all__ = ["similarity_chart", "similarity_histogram", "marked_grid", "neighbours_picture", "COPY_COLOUR",
           "PIXEL_MARK", "save_pixel_picture", "side_by_side_grid"]

PIXEL_MARK = ("diffmem", "pixels")  # the PNG text chunk that tells reports (report/document.py) not to smooth a picture
_BG = (255, 255, 255)
_INK = (20, 20, 20)
COPY_COLOUR = (220, 30, 30)
_SERIES_COLOURS = ("tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink")


def save_pixel_picture(image: Image.Image, path: str | Path) -> Path:
    """Save a picture made of images as PNG with PIXEL_MARK (diffmem.report.document shows it pixelated)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    info.add_text(*PIXEL_MARK)
    image.save(path, format="PNG", pnginfo=info)
    return path


def _label(key: str) -> str:
    return key.replace("heldout_", "held-out ")


def similarity_chart(path: str | Path, series: dict[str, np.ndarray], calibrated: dict[str, float] | None = None,
                     thresholds: tuple[float, ...] = (), features: str = "", title: str = "") -> Path:
    """Densities of nearest-training similarity of every series (models, and held-out images drawn grey and
    filled) in one chart; calibrated thresholds as labelled dashed lines, fixed ones dotted (in the legend)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, no display needed

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.asarray(v, np.float64) for k, v in series.items() if v is not None and len(v)}
    lo = min(float(a.min()) for a in arrays.values())
    lo = min(lo, *(float(t) for t in (calibrated or {}).values()), 1.0 - 1e-3)
    bins = np.linspace(lo, 1.0, 61)
    fig = Figure(figsize=(5.2, 3.6), dpi=110)  # narrow with large text: legible at a phone's width too
    ax = fig.subplots()
    ax.tick_params(labelsize=10)
    colours = iter(_SERIES_COLOURS)
    for name, a in arrays.items():
        if name.startswith("held-out"):
            ax.hist(a, bins=bins, density=True, color="0.6", alpha=0.6, label=f"{name} (n={len(a)})")
        else:
            ax.hist(a, bins=bins, density=True, histtype="step", lw=1.8, color=next(colours, "black"),
                    label=f"{name} (n={len(a)})")
    for t in thresholds:
        ax.axvline(t, color="gray", lw=0.8, ls=":")
    styles = iter(("--", "-."))
    for name, t in (calibrated or {}).items():
        ax.axvline(t, color="black", lw=1.2, ls=next(styles, ":"), label=f"{_label(name)} = {t:.3f}"
                   + (" (copy threshold)" if name == "heldout_p99" else ""))
    what = f" ({features})" if features else ""
    ax.set_xlabel(f"similarity to the nearest training image{what}", fontsize=11)
    ax.set_ylabel("density", fontsize=11)
    ax.set_title(title or "How close is each image to its nearest training image?", fontsize=11)
    ax.legend(fontsize=11, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1, frameon=False)
    fig.savefig(path, bbox_inches="tight")
    return path


def similarity_histogram(path: str | Path, sample_sims: np.ndarray, heldout_sims: np.ndarray | None = None,
                         thresholds: tuple[float, ...] = (), calibrated: dict[str, float] | None = None,
                         title: str = "") -> Path:
    """Samples and held-out images in one chart (see `similarity_chart`)."""
    series = {"samples": sample_sims, "held-out real images": heldout_sims}
    return similarity_chart(path, series, calibrated, thresholds, title=title)


def _tile(img: np.ndarray, size: int) -> Image.Image:
    """uint8 `[H, W, C]` -> RGB PIL tile `size` x `size` (center-cropped; nearest when enlarging)."""
    h, w, _ = img.shape
    s = min(h, w)
    crop = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    pil = Image.fromarray(np.ascontiguousarray(crop[:, :, 0] if crop.shape[2] == 1 else crop)).convert("RGB")
    if s == size:
        return pil
    return pil.resize((size, size), Image.Resampling.NEAREST if s < size else Image.Resampling.LANCZOS)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _tile_size(h: int) -> int:
    return h * math.ceil(64 / h) if h < 64 else min(h, 128)


def marked_grid(path: str | Path | None, images: np.ndarray, is_copy: np.ndarray | None = None,
                ncol: int = 8, size: int | None = None) -> Image.Image:
    """A grid of images; those with `is_copy` get a red frame, the others a white one. Saved when `path`."""
    n = len(images)
    size = size or _tile_size(int(images.shape[1]))
    frame, gap = max(3, size // 16), 2
    cell = size + 2 * frame + gap
    cols = min(ncol, max(1, n))
    rows = max(1, math.ceil(n / cols))
    canvas = Image.new("RGB", (cols * cell + gap, rows * cell + gap), _BG)
    draw = ImageDraw.Draw(canvas)
    for i in range(n):
        r, c = divmod(i, cols)
        x, y = gap + c * cell, gap + r * cell
        if is_copy is not None and bool(is_copy[i]):
            draw.rectangle((x, y, x + size + 2 * frame - 1, y + size + 2 * frame - 1), fill=COPY_COLOUR)
        canvas.paste(_tile(images[i], size), (x + frame, y + frame))
    if path is not None:
        save_pixel_picture(canvas, path)
    return canvas


def _short(name: str, limit: int, keep_start: bool = False) -> str:
    """`name` cut to `limit` characters: its end kept (file names), or its start (captions)."""
    if len(name) <= limit:
        return name
    return name[:limit - 3] + "..." if keep_start else "..." + name[-(limit - 3):]


def neighbours_picture(path: str | Path, sample_images: np.ndarray, train_images: np.ndarray,
                       nn_similarity: np.ndarray, nn_index: np.ndarray, n: int = 16, pairs_per_row: int = 2,
                       title: str = "", *, sample_names: list[str] | None = None,
                       train_names: list[str] | None = None, mirrored: np.ndarray | None = None,
                       copy_threshold: float | None = None, shifts: np.ndarray | None = None,
                       captions: bool = False) -> Path:
    """The `n` most similar samples, each left of its nearest training image; below: similarity (red when a
    copy), the sample's and the training image's file names, "mirrored" for matches of a mirror image and
    "moved dy,dx" for matches of a translated one (`shifts`, pixels). With `captions`, `sample_names` are
    captions, cut at their end rather than their start.

    Two pairs per row and labels of at least 14 px: for images up to 87 px the picture is 382 px wide, so a
    phone (412 px) shows it unscaled; larger tiles get larger labels, as a phone shrinks them more.
    """
    order = np.argsort(-np.asarray(nn_similarity), kind="stable")[: max(1, int(n))]
    size = _tile_size(int(sample_images.shape[1]))
    cell_w = max(2 * size + 2, 176)  # two pairs in 382 px: a phone (412 px) shows them unscaled
    px = max(14, cell_w // 14)  # label size grows with the picture, which a phone shrinks more
    line, pad = px + 3, 10
    header = px + 10 if title else 6
    cols = min(pairs_per_row, len(order))
    rows = math.ceil(len(order) / cols)
    cell_h = size + 3 * line + 4
    limit = max(8, int(cell_w / (0.6 * px)))  # characters that fit in a cell
    canvas = Image.new("RGB", (pad + cols * (cell_w + pad), header + rows * (cell_h + pad)), _BG)
    draw = ImageDraw.Draw(canvas)
    font = _font(px)
    if title:
        draw.text((pad, 4), title, fill=_INK, font=font)
    for slot, i in enumerate(order):
        r, c = divmod(slot, cols)
        x, y = pad + c * (cell_w + pad), header + r * (cell_h + pad)
        j, sim = int(nn_index[i]), float(nn_similarity[i])
        canvas.paste(_tile(sample_images[i], size), (x, y))
        canvas.paste(_tile(train_images[j], size), (x + size + 2, y))
        copy = copy_threshold is not None and sim >= copy_threshold
        flip = mirrored is not None and bool(mirrored[i])
        move = tuple(int(v) for v in shifts[i]) if shifts is not None else (0, 0)
        head = (f"{sim:.3f}" + ("  copy" if copy else "") + ("  mirrored" if flip else "")
                + (f"  moved {move[0]},{move[1]}" if move != (0, 0) else ""))
        draw.text((x, y + size + 3), head, fill=COPY_COLOUR if copy else _INK, font=font)
        s_name = sample_names[i] if sample_names else f"#{i}"
        t_name = train_names[j] if train_names else f"#{j}"
        draw.text((x, y + size + 3 + line), _short(s_name, limit, keep_start=captions), fill=_INK, font=font)
        draw.text((x, y + size + 3 + 2 * line), "-> " + _short(t_name, limit - 3), fill=_INK, font=font)
    return save_pixel_picture(canvas, path)


def side_by_side_grid(path: str | Path, panels: dict[str, np.ndarray],
                      is_copy: dict[str, np.ndarray | None] | None = None, *, n: int = 64, ncol: int = 8,
                      size: int | None = None) -> Path:
    """One PNG: a titled grid per panel (e.g. training digits | baseline | Algorithm 1), side by side.

    `panels`: title -> uint8 images `[N, H, W, C]` (the first `n` are shown, `ncol` per row); `is_copy`:
    title -> one bool per image of that panel (a red frame marks a copy; a panel without an entry, or with
    None, is unframed). Images are enlarged by nearest neighbour to whole multiples of their size (no
    smoothing; `size` overrides the tile size) and the PNG carries PIXEL_MARK, so reports do not smooth it.
    """
    flags = is_copy or {}
    grids = []
    for title, images in panels.items():
        marks = flags.get(title)
        if marks is not None and len(marks) != len(images):
            raise ValueError(f"panel {title!r}: {len(marks)} copy flags for {len(images)} images")
        grids.append(marked_grid(None, images[:n], None if marks is None else np.asarray(marks)[:n], ncol, size))
    px = max(14, max(g.height for g in grids) // 24)
    font, header, gap = _font(px), px + 12, 16
    canvas = Image.new("RGB", (sum(g.width for g in grids) + gap * (len(grids) + 1),
                               header + max(g.height for g in grids) + gap // 2), _BG)
    draw = ImageDraw.Draw(canvas)
    x = gap
    for (title, _), grid in zip(panels.items(), grids):
        width = draw.textlength(title, font=font)
        draw.text((x + max(0, (grid.width - width) / 2), 4), title, fill=_INK, font=font)
        canvas.paste(grid, (x, header))
        x += grid.width + gap
    return save_pixel_picture(canvas, path)
