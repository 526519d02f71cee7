"""Pictures of an audit: the similarity histogram and the most similar samples beside their nearest
training images."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["similarity_histogram", "neighbours_picture"]

_BG = (255, 255, 255)
_INK = (20, 20, 20)


def similarity_histogram(
    path: str | Path,
    sample_sims: np.ndarray,
    heldout_sims: np.ndarray | None = None,
    thresholds: tuple[float, ...] = (),
    calibrated: dict[str, float] | None = None,
    title: str = "",
) -> Path:
    """Densities of nearest-training similarity for samples and held-out images, with threshold lines."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, no display needed

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = [np.asarray(sample_sims, np.float64)]
    if heldout_sims is not None and len(heldout_sims):
        arrays.append(np.asarray(heldout_sims, np.float64))
    lo = min(float(a.min()) for a in arrays)
    bins = np.linspace(min(lo, 1.0 - 1e-3), 1.0, 61)
    fig = Figure(figsize=(6.4, 3.8), dpi=100)
    ax = fig.subplots()
    ax.hist(arrays[0], bins=bins, density=True, alpha=0.6, color="tab:red", label=f"samples (n={len(arrays[0])})")
    if len(arrays) > 1:
        ax.hist(arrays[1], bins=bins, density=True, alpha=0.5, color="tab:blue",
                label=f"held-out real (n={len(arrays[1])})")
    for t in thresholds:
        ax.axvline(t, color="gray", lw=0.8, ls=":")
    for name, t in (calibrated or {}).items():
        ax.axvline(t, color="black", lw=1.0, ls="--")
        ax.text(t, ax.get_ylim()[1] * 0.95, name.replace("heldout_", " "), rotation=90, va="top", fontsize=7)
    ax.set_xlabel("cosine similarity to the nearest training image")
    ax.set_ylabel("density")
    ax.set_title(title or "nearest-training similarity", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    return path


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


def neighbours_picture(
    path: str | Path,
    sample_images: np.ndarray,
    train_images: np.ndarray,
    nn_similarity: np.ndarray,
    nn_index: np.ndarray,
    n: int = 16,
    pairs_per_row: int = 4,
    title: str = "",
) -> Path:
    """The `n` most similar samples, each left of its nearest training image, similarity printed below."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    order = np.argsort(-np.asarray(nn_similarity), kind="stable")[: max(1, int(n))]
    h = int(sample_images.shape[1])
    size = h * math.ceil(64 / h) if h < 64 else min(h, 128)
    gap, pad, caption, header = 2, 10, 16, 22 if title else 6
    cols = min(pairs_per_row, len(order))
    rows = math.ceil(len(order) / cols)
    cell_w, cell_h = 2 * size + gap, size + caption
    canvas = Image.new("RGB", (pad + cols * (cell_w + pad), header + rows * (cell_h + pad)), _BG)
    draw = ImageDraw.Draw(canvas)
    font = _font(11)
    if title:
        draw.text((pad, 4), title, fill=_INK, font=_font(12))
    for slot, i in enumerate(order):
        r, c = divmod(slot, cols)
        x, y = pad + c * (cell_w + pad), header + r * (cell_h + pad)
        j = int(nn_index[i])
        canvas.paste(_tile(sample_images[i], size), (x, y))
        canvas.paste(_tile(train_images[j], size), (x + size + gap, y))
        draw.text((x, y + size + 2), f"{float(nn_similarity[i]):.3f}  s{i}/t{j}", fill=_INK, font=font)
    canvas.save(path)
    return path
