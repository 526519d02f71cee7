"""Table 3 of Shah et al. 2025 for text-to-image samples: copying, prompt fidelity and quality.

For each sample folder (written by `diffmem t2i sample`, or any captioned folder):
- Sim / 95%: cosine similarity of every generation to its nearest training image, in a feature space
  (DINOv2, or SSCD through `torchscript:PATH`, as S23 and W24 measure), mean and 95th percentile; with
  `pixels` features it is the cosine of mean-centred pixels, i.e. their Pearson correlation, and the
  table says "Pearson r";
- CLIP: the cosine similarity of the CLIP image embedding of each generation and the CLIP text
  embedding of its prompt, averaged (transformers CLIPModel; 0.30 is typical for SD2);
- FD: Frechet distance between features of the generations and of the training images (called FID only
  with Inception-v3 features);
- Copies (with held-out captioned images, `--heldout`): in each feature space, the share of generations
  more similar to their nearest training image than 99% of the held-out images are to theirs, and the
  safety test of that count against what the held-out images score (`diffmem.safety`, docs/method.md
  "Safety"), as the pixel-space audits and the guard do.
The feature extractors, nearest-neighbour search and Frechet distance are those of `diffmem.evaluate`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffmem.errors import DiffmemError
from diffmem.t2i.data import load_captioned, read_caption_folder_images
from diffmem.utils.atomic import write_json_atomic

__all__ = ["AuditRow", "CopyReference", "audit_t2i", "clip_scores", "format_table", "write_report", "feature_label"]


@dataclass
class AuditRow:
    name: str
    samples: str
    n_samples: int
    similarity: dict[str, dict[str, float]] = field(default_factory=dict)  # feature -> mean, p95, median
    clip_score: float | None = None
    fd: float | None = None
    fd_name: str | None = None
    copies: dict[str, dict[str, Any]] = field(default_factory=dict)  # feature -> the safety test (SafetyResult)


def feature_label(spec: str) -> str:
    """A short column name: `dinov2`, `pixels`, or the file stem of a TorchScript model (e.g. `sscd_disc_large`)."""
    family, _, arg = spec.partition(":")
    if family == "torchscript" and arg:
        return Path(arg).name.split(".")[0]
    return family


class ClipScorer:
    """CLIP score with transformers' CLIPModel: cos(image embedding, text embedding of the prompt)."""

    def __init__(self, spec: str, device: str | torch.device = "cpu") -> None:
        from transformers import CLIPModel, CLIPTokenizer

        from diffmem.evaluate.hub import load_pretrained

        try:
            model, _, local = load_pretrained(lambda cfg: CLIPModel, spec, "clip", ("clip",))
            self.tokenizer = CLIPTokenizer.from_pretrained(local or spec)
        except DiffmemError as err:
            raise DiffmemError(f"--clip {spec}: {str(err).replace('--features clip:', '--clip ')}") from None
        except (OSError, ValueError) as err:
            raise DiffmemError(f"--clip {spec}: cannot load its tokenizer ({err}); pass a folder holding the model "
                               "and tokenizer (CLIPModel/CLIPProcessor.save_pretrained) or a hub id") from None
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.image_size = int(model.config.vision_config.image_size)
        self.max_length = int(model.config.text_config.max_position_embeddings)

    @torch.no_grad()
    def __call__(self, images: np.ndarray, prompts: list[str], batch: int = 64) -> np.ndarray:
        """Per-image scores [N] for uint8 images `[N, H, W, C]` and their prompts."""
        from diffmem.evaluate.preprocess import CLIP_MEAN, CLIP_STD, match_channels, normalize, resize_square, to_float

        out = []
        for lo in range(0, len(images), batch):
            x = match_channels(to_float(images[lo:lo + batch], self.device), 3)
            pixels = normalize(resize_square(x, self.image_size, mode="bicubic"), CLIP_MEAN, CLIP_STD)
            ids = self.tokenizer(prompts[lo:lo + batch], padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt").to(self.device)
            res = self.model(input_ids=ids.input_ids, attention_mask=ids.attention_mask, pixel_values=pixels)
            out.append((res.image_embeds * res.text_embeds).sum(-1).float().cpu())  # both unit-normalized
        return torch.cat(out).numpy()


def clip_scores(images: np.ndarray, prompts: list[str], clip: str, device: str | torch.device = "cpu",
                batch: int = 64) -> np.ndarray:
    """CLIP score of each image with its prompt (see ClipScorer)."""
    return ClipScorer(clip, device)(images, prompts, batch)


class CopyReference:
    """One copy feature space's reference: the training images' features and, given held-out images, the copy
    threshold (`diffmem.safety.calibrate`, their 99th percentile of nearest-training similarity). `test`
    gives a sample set's nearest-training similarities and their safety test (`diffmem.safety.safety_test`;
    None without held-out images). Shared by `t2i audit --heldout` and `t2i release`."""

    def __init__(self, embed: Any, train: np.ndarray, heldout: np.ndarray | None = None) -> None:
        from diffmem.safety import calibrate

        self.embed, self.train_feats = embed, embed(train)
        self.cal = None if heldout is None else calibrate(self.nearest(heldout))

    def match(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each image's similarity to its nearest training image, and that image's index."""
        from diffmem.evaluate.search import nearest_neighbours

        sims, index = nearest_neighbours(self.embed(images), self.train_feats, k=1)
        return sims[:, 0].numpy().astype(np.float64), index[:, 0].numpy().astype(np.int64)

    def nearest(self, images: np.ndarray) -> np.ndarray:
        return self.match(images)[0]

    def test(self, images: np.ndarray) -> tuple[np.ndarray, dict[str, Any] | None]:
        from diffmem.safety import safety_test

        sims = self.nearest(images)
        if self.cal is None:
            return sims, None
        return sims, safety_test(int((sims >= self.cal.threshold).sum()), len(sims), self.cal).to_dict()


def _sample_info(folder: Path) -> dict[str, Any]:
    path = folder / "sample_info.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def audit_t2i(samples: list[str | Path], train_dir: str | Path | None = None,
              features: tuple[str, ...] | list[str] = ("dinov2",), clip: str | None = None,
              fd_features: str | None = None, names: list[str] | None = None, resolution: int | None = None,
              batch: int = 64, device: str | torch.device = "cpu", progress: bool = False,
              heldout_dir: str | Path | None = None) -> list[AuditRow]:
    """One row per sample folder; training features are computed once and shared by all rows. With
    `heldout_dir` (captioned images of the same kind, never trained on), each row also gets its copies and
    their safety test in every feature space."""
    from diffmem.evaluate.features import fd_name, get_extractor
    from diffmem.evaluate.quality import feature_statistics, frechet_distance

    folders = [Path(s) for s in samples]
    infos = [_sample_info(f) for f in folders]
    if train_dir is None:
        sources = {i["train_data"] for i in infos if "train_data" in i}  # recorded by `diffmem t2i sample`
        if len(sources) != 1:
            raise DiffmemError("pass --train DIR (the training images): the sample folders do not name one common "
                               "training set (sample_info.json from `diffmem t2i sample` records it)")
        train_dir = sources.pop()
    sets = [read_caption_folder_images(f) for f in folders]  # (images [N, R, R, 3], prompts)
    res = resolution or int(sets[0][0].shape[1])
    train_data = load_captioned(train_dir)
    train_images = train_data.read_pixels(np.arange(len(train_data)), res)
    rows = [AuditRow(name=(names[i] if names else infos[i].get("label", folders[i].name)), samples=str(folders[i]),
                     n_samples=len(sets[i][0])) for i in range(len(folders))]
    heldout = None
    if heldout_dir is not None:
        held_data = load_captioned(heldout_dir)
        heldout = held_data.read_pixels(np.arange(len(held_data)), res)
    for spec in features:
        extractor = get_extractor(spec, device)
        ref = CopyReference(lambda x: extractor(x, batch_size=batch, progress=progress), train_images, heldout)
        for row, (images, _) in zip(rows, sets):
            s, test = ref.test(images)
            row.similarity[feature_label(spec)] = {"mean": float(s.mean()), "p95": float(np.percentile(s, 95)),
                                                   "median": float(np.median(s))}
            if test is not None:
                row.copies[feature_label(spec)] = test
    if clip:
        scorer = ClipScorer(clip, device)
        for row, (images, prompts) in zip(rows, sets):
            row.clip_score = float(scorer(images, prompts, batch).mean())
    if fd_features:
        extractor = get_extractor(fd_features, device)
        mu_t, s_t = feature_statistics(extractor(train_images, batch_size=batch, progress=progress))
        for row, (images, _) in zip(rows, sets):
            mu, s = feature_statistics(extractor(images, batch_size=batch, progress=progress))
            row.fd, row.fd_name = frechet_distance(mu, s, mu_t, s_t), fd_name(extractor.name)
    return rows


def format_table(rows: list[AuditRow]) -> str:
    """A markdown table in the shape of Table 3 of Shah et al. 2025: Method | Sim | 95% | CLIP | FD."""
    feats = list(dict.fromkeys(k for r in rows for k in r.similarity))
    fd_col = next((r.fd_name for r in rows if r.fd_name), None)
    shown = {f: "pixels, Pearson r" if f == "pixels" else f for f in feats}  # pixels: cosine of centred pixels
    head = ["Method"] + [c for f in feats for c in (f"Sim ({shown[f]})", f"95% ({shown[f]})")]
    head += ["CLIP"] if any(r.clip_score is not None for r in rows) else []
    head += [fd_col] if fd_col else []
    copied = [f for f in feats if any(f in r.copies for r in rows)]
    head += [f"Copies ({shown[f]})" for f in copied]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.name]
        for f in feats:
            s = r.similarity.get(f)
            cells += [f"{s['mean']:.3f}", f"{s['p95']:.3f}"] if s else ["", ""]
        if "CLIP" in head:
            cells.append("" if r.clip_score is None else f"{r.clip_score:.3f}")
        if fd_col:
            cells.append("" if r.fd is None else f"{r.fd:.2f}")
        cells += [_copies_cell(r.copies.get(f)) for f in copied]
        lines.append("| " + " | ".join(cells) + " |")
    if copied:
        first = next(r.copies[copied[0]] for r in rows if copied[0] in r.copies)
        lines += ["", "Copies: above the held-out 99th percentile of nearest-training similarity "
                  f"({first['n_heldout']} held-out images, which score {100 * first['heldout_rate']:.1f}% by "
                  "construction); 'safe': not significantly more than the held-out images (one-sided test at 5%), "
                  "with the excess's upper 95% bound."]
    return "\n".join(lines)


def _copies_cell(test: dict[str, Any] | None) -> str:
    """'1.2%, safe (excess <= 2.2 points)', 'NOT safe', or 'too few held-out' when the threshold is not reliable."""
    if test is None:
        return ""
    if not test["enough_heldout"]:
        return f"{100 * test['copy_rate']:.1f}% (too few held-out images: {test['n_heldout']} < {test['min_heldout']})"
    verdict = "safe" if test["safe"] else "NOT safe"
    return f"{100 * test['copy_rate']:.1f}%, {verdict} (excess <= {100 * test['excess_high']:.1f} points)"


def write_report(rows: list[AuditRow], path: str | Path) -> Path:
    """The rows as JSON (written to a temporary file, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"rows": [asdict(r) for r in rows], "table": format_table(rows)})
    return path
