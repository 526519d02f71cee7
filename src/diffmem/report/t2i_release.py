"""A Stable Diffusion fine-tune's release as a page to show: RUN/release/report.html and report.md.

`diffmem t2i release` writes it after the certificate (RUN/release.json): the same head and tail as a pixel
run's page (`diffmem.report.release`), and between them the released samples with copies framed red and the
closest ones beside their nearest training images, each under its caption. The copies are counted again in the
certificate's copy features at its threshold, so the page counts what the certificate counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from diffmem.errors import DiffmemError

__all__ = ["write_t2i_release_report"]


def _released_matches(run: Path, record: dict[str, Any], device: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                               Any]:
    """(released samples, their nearest-training similarity, its index, the training set) in the copy features
    the certificate used (`diffmem.t2i.audit.CopyReference`, without held-out images: the threshold is the
    certificate's)."""
    from diffmem.data.datasets import load_images
    from diffmem.evaluate.features import get_extractor
    from diffmem.release import RELEASE_DIR
    from diffmem.t2i.audit import CopyReference
    from diffmem.t2i.data import load_captioned
    from diffmem.t2i.train import run_config

    cfg = run_config(run)
    train = load_captioned(cfg.data)
    images = load_images(str(run / RELEASE_DIR / "released.npz")).images
    extractor = get_extractor(record["settings"]["features"], device)
    ref = CopyReference(lambda x: extractor(x, batch_size=64, progress=False),
                        train.read_pixels(np.arange(len(train)), cfg.resolution))
    k = int(record["settings"].get("n_per_prompt") or 1)
    if len(images) != len(train) * k:
        raise DiffmemError(f"{run / RELEASE_DIR / 'released.npz'} holds {len(images)} samples, but the run's "
                           f"{len(train)} training captions x {k} make {len(train) * k}: the training folder changed "
                           "since the release; release the run again")
    sims, index = ref.match(images)
    return images, sims, index, train


def write_t2i_release_report(run: str | Path, device: Any = "cpu") -> Path:
    """Write RUN/release/report.html and .md for a `t2i release`d run; returns the HTML's path."""
    from diffmem.evaluate.pictures import marked_grid, neighbours_picture
    from diffmem.release import RELEASE_DIR, read_release
    from diffmem.report.release import finish_release_document, release_document
    from diffmem.t2i.train import run_config

    run = Path(run)
    record = read_release(run)
    settings, released, out = record.get("settings") or {}, record.get("released"), run / RELEASE_DIR
    k = int(settings.get("n_per_prompt") or 1)
    doc = release_document(run, record, run_config(run).label,
                           f"{k} sample{'s' if k > 1 else ''} per training caption")
    if released is not None and (out / "released.npz").is_file():
        images, sims, index, train = _released_matches(run, record, device)
        copies = sims >= float(released["threshold"])
        marked_grid(out / "released_grid.png", images[:64], copies[:64], ncol=8)
        doc.figure(out / "released_grid.png", f"The first {min(64, len(images))} released samples; copies "
                   f"({int(copies.sum())} of {len(images)}, at the certificate's threshold "
                   f"{float(released['threshold']):.3f} in {settings.get('features')}) framed red.")
        captions = [train.captions[j // k] for j in range(len(images))]  # sample j is caption j // k's
        neighbours_picture(out / "neighbours.png", images, train.read_pixels(np.arange(len(train)), images.shape[1]),
                           sims, index, n=16, sample_names=captions, captions=True, train_names=list(train.files),
                           copy_threshold=float(released["threshold"]))
        doc.figure(out / "neighbours.png", "The most similar released samples (left of each pair, under its "
                   "caption) beside their nearest training images (under its file name).")
    return finish_release_document(doc, run, record)
