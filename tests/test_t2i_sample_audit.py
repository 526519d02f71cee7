"""Sampling a fine-tuned tiny Stable Diffusion (per-sample seeds, W24 scores) and auditing the samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffmem.errors import DiffmemError
from diffmem.t2i.config import T2IConfig
from diffmem.t2i.sample import T2ISampleOptions, generate, load_trained, read_prompts, sample_run
from diffmem.t2i.train import train_t2i

try:
    from t2i_fixtures import CAPTIONS, sscd_like, tiny_clip, tiny_sd, tiny_sd_v, write_captioned  # noqa: F401
except ImportError:  # tests/ collected as a package
    from tests.t2i_fixtures import CAPTIONS, sscd_like, tiny_clip, tiny_sd, tiny_sd_v, write_captioned  # noqa: F401

FAST = T2ISampleOptions(steps=3, batch=4)


@pytest.fixture(scope="module")
def run(tiny_sd: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ambient + W24 run (2 steps) on 6 captioned images."""
    root = tmp_path_factory.mktemp("t2i_run")
    data = write_captioned(root / "data", n=6)
    cfg = T2IConfig(pretrained=tiny_sd, data=str(data), method="ambient", t_n=100, mitigation="w24",
                    w24_threshold=1e6, steps=2, batch=2, lr=1e-3, checkpoint_every=2, log_every=1)
    return train_t2i(cfg, root / "run", progress=False, cpu=True)


def read_pngs(folder: Path, n: int) -> np.ndarray:
    return np.stack([np.asarray(Image.open(folder / f"{j:06d}.png")) for j in range(n)])


def test_default_prompts_are_the_training_captions(run: Path, tmp_path: Path) -> None:
    out = sample_run(run, tmp_path / "s", n_per_prompt=2, opts=FAST, progress=False)
    meta = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert [m["text"] for m in meta] == [c for c in CAPTIONS for _ in range(2)]
    assert [m["prompt_index"] for m in meta] == [j // 2 for j in range(12)]
    assert len({m["seed"] for m in meta}) == 12 and all(m["w24_score"] > 0 for m in meta)
    prompts = [json.loads(line) for line in (out / "prompts.jsonl").read_text().splitlines()]
    assert [p["text"] for p in prompts] == list(CAPTIONS)
    for p in prompts:  # per-prompt detection score = mean of its samples' scores
        mine = [m["w24_score"] for m in meta if m["prompt_index"] == p["prompt_index"]]
        assert p["w24_score"] == pytest.approx(np.mean(mine))
    info = json.loads((out / "sample_info.json").read_text())
    assert info["label"] == "w24+ambient(t_n=100)" and info["weights"] == "ema"
    assert read_pngs(out, 12).shape == (12, 32, 32, 3)
    with pytest.raises(DiffmemError, match="not empty"):
        sample_run(run, out, n_per_prompt=1, opts=FAST, progress=False)


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm"])
def test_samples_do_not_depend_on_the_batch(run: Path, tmp_path: Path, scheduler: str) -> None:
    prompts = ["a red cat", "the blue dog"]
    a = sample_run(run, tmp_path / "a", prompts, 2, seed=3,
                   opts=T2ISampleOptions(steps=3, batch=1, scheduler=scheduler), progress=False)
    b = sample_run(run, tmp_path / "b", prompts, 2, seed=3,
                   opts=T2ISampleOptions(steps=3, batch=8, scheduler=scheduler), progress=False)
    # the same noise per image whatever the batch; batched convolutions may round differently in float32
    # (by CPU kernel), which can move a pixel across a uint8 level: at most 1 level, on a few pixels
    diff = np.abs(read_pngs(a, 4).astype(int) - read_pngs(b, 4).astype(int))
    assert diff.max() <= 1 and diff.mean() < 1e-3
    c = sample_run(run, tmp_path / "c", prompts, 2, seed=4, opts=T2ISampleOptions(steps=3, scheduler=scheduler),
                   progress=False)
    assert np.abs(read_pngs(a, 4).astype(int) - read_pngs(c, 4).astype(int)).mean() > 1  # another seed: others


def test_weights_choice_changes_the_unet(run: Path) -> None:
    ema, _ = load_trained(run, "ema")
    raw, _ = load_trained(run, "raw")
    pre, _ = load_trained(run, "pretrained")
    name = "conv_in.weight"
    w = {k: dict(m.unet.named_parameters())[name] for k, m in (("ema", ema), ("raw", raw), ("pre", pre))}
    assert not torch.equal(w["raw"], w["pre"]) and not torch.equal(w["ema"], w["raw"])
    with pytest.raises(DiffmemError, match="--weights"):
        load_trained(run, "best")


def test_w24_prompt_optimisation_lowers_the_first_step_score(run: Path) -> None:
    parts, cfg = load_trained(run)
    prompts = ["a photo of a red cat", "a big dog on the tree"]
    plain = generate(parts, prompts, 2, cfg.resolution, opts=T2ISampleOptions(steps=2), progress=False)
    opt = generate(parts, prompts, 2, cfg.resolution,
                   opts=T2ISampleOptions(steps=2, w24_optimize=True, w24_lr=0.1, w24_iters=5), progress=False)
    before = np.array([plain.w24_first[plain.prompt_index == p].mean() for p in range(2)])
    assert opt.w24_optimized is not None and (opt.w24_optimized < before).all()
    after = np.array([opt.w24_first[opt.prompt_index == p].mean() for p in range(2)])
    np.testing.assert_allclose(after, opt.w24_optimized, rtol=1e-4)  # sampling used the optimized embedding


def test_v_prediction_run_samples(tiny_sd_v: str, tmp_path: Path) -> None:
    data = write_captioned(tmp_path / "data", n=2)
    cfg = T2IConfig(pretrained=tiny_sd_v, data=str(data), method="ambient", t_n=100, steps=1, batch=2,
                    checkpoint_every=1, log_every=1)
    run = train_t2i(cfg, tmp_path / "run", progress=False, cpu=True)
    out = sample_run(run, tmp_path / "s", ["a cat"], 1, opts=FAST, progress=False)
    assert read_pngs(out, 1).shape == (1, 32, 32, 3)


def test_lora_run_samples(tiny_sd: str, tmp_path: Path) -> None:
    pytest.importorskip("peft")
    data = write_captioned(tmp_path / "data", n=2)
    cfg = T2IConfig(pretrained=tiny_sd, data=str(data), lora_rank=2, steps=1, batch=2, checkpoint_every=1)
    run = train_t2i(cfg, tmp_path / "run", progress=False, cpu=True)
    assert read_pngs(sample_run(run, tmp_path / "s", ["a cat"], 1, opts=FAST, progress=False), 1).shape[0] == 1


def test_read_prompts(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("a cat\n\n  a dog  \n")
    assert read_prompts(tmp_path / "p.txt") == ["a cat", "a dog"]
    (tmp_path / "p.jsonl").write_text('{"text": "x"}\n{"text": "y", "k": 1}\n')
    assert read_prompts(tmp_path / "p.jsonl") == ["x", "y"]
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x"}\n')
    with pytest.raises(DiffmemError, match="\"text\""):
        read_prompts(tmp_path / "bad.jsonl")
    with pytest.raises(DiffmemError, match="no such file"):
        read_prompts(tmp_path / "missing.txt")


def test_audit_table(run: Path, tmp_path: Path, tiny_clip: str, sscd_like: str) -> None:
    """Rows for generated samples and for the training images themselves (which copy perfectly)."""
    from diffmem.t2i.audit import audit_t2i, format_table, write_report
    from diffmem.t2i.train import run_config

    gen = sample_run(run, tmp_path / "gen", n_per_prompt=1, opts=FAST, progress=False)
    train_dir = run_config(run).data
    rows = audit_t2i([gen, train_dir], features=["pixels", f"torchscript:{sscd_like}"], clip=tiny_clip,
                     fd_features=f"torchscript:{sscd_like}", names=["ambient", "copies"])
    copies = rows[1]
    assert copies.similarity["pixels"]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert copies.similarity["sscd_tiny"]["p95"] == pytest.approx(1.0, abs=1e-5)
    assert copies.fd == pytest.approx(0.0, abs=1e-4) and rows[0].fd > copies.fd + 1e-3
    assert rows[0].similarity["pixels"]["mean"] < 0.9 and rows[0].n_samples == 6
    assert -1 <= rows[0].clip_score <= 1 and rows[0].fd_name == "FD_torchscript"
    table = format_table(rows)
    assert table.splitlines()[0] == ("| Method | Sim (pixels, Pearson r) | 95% (pixels, Pearson r) | Sim (sscd_tiny) "
                                     "| 95% (sscd_tiny) | CLIP | FD_torchscript |")
    assert table.splitlines()[3].startswith("| copies | 1.000 | 1.000 |")
    report = json.loads(write_report(rows, tmp_path / "audit.json").read_text())
    assert report["rows"][0]["name"] == "ambient" and "table" in report
    # the sample folder records its training data: no --train needed; a plain folder needs one
    assert audit_t2i([gen], features=["pixels"])[0].name == "w24+ambient(t_n=100)"
    with pytest.raises(DiffmemError, match="--train"):
        audit_t2i([train_dir], features=["pixels"])


def test_clip_score_prefers_the_matching_prompt(tiny_clip: str) -> None:
    """The score is the cosine of the CLIP image and text embeddings (checked against CLIPModel directly)."""
    from transformers import CLIPModel

    from diffmem.t2i.audit import clip_scores

    images = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    scores = clip_scores(images, ["a cat", "a dog"], tiny_clip)
    model = CLIPModel.from_pretrained(tiny_clip)
    from diffmem.t2i.audit import ClipScorer

    scorer = ClipScorer(tiny_clip)
    assert scores.shape == (2,) and np.all(np.abs(scores) <= 1)
    ids = scorer.tokenizer(["a cat"], return_tensors="pt")
    from diffmem.evaluate.preprocess import CLIP_MEAN, CLIP_STD, normalize, to_float

    pixels = normalize(to_float(images[:1], torch.device("cpu")), CLIP_MEAN, CLIP_STD)
    with torch.no_grad():
        out = model(input_ids=ids.input_ids, pixel_values=pixels)
    assert scores[0] == pytest.approx(float(torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds)),
                                      abs=1e-5)
    with pytest.raises(DiffmemError, match="--clip"):
        clip_scores(images, ["a"] * 2, "/nonexistent/clip")


def _pearson_nearest(images: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Brute force: each image's largest Pearson correlation with a training image (flattened pixels)."""
    def unit(x: np.ndarray) -> np.ndarray:
        v = x.reshape(len(x), -1).astype(np.float64)
        v -= v.mean(1, keepdims=True)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    return (unit(images) @ unit(train).T).max(1)


def test_audit_with_heldout_images_counts_copies_and_tests_them(tmp_path: Path) -> None:
    """--heldout: the copy threshold is the held-out images' 99th percentile of nearest-training Pearson r, and
    each folder's copies (checked by brute force) get the safety test: the training images themselves copy
    100% (not safe), fresh images of the same kind copy about as often as held-out ones (safe); too few
    held-out images are said to be too few."""
    from diffmem.t2i.audit import audit_t2i, format_table
    from diffmem.t2i.data import load_captioned

    train_dir = write_captioned(tmp_path / "train", n=6, seed=0)
    held_dir = write_captioned(tmp_path / "held", n=810, seed=1)
    fresh_dir = write_captioned(tmp_path / "fresh", n=200, seed=2)
    rows = audit_t2i([train_dir, fresh_dir], train_dir=train_dir, features=["pixels"], names=["copies", "fresh"],
                     heldout_dir=held_dir)
    pixels = {d: (lambda c: c.read_pixels(np.arange(len(c)), 32))(load_captioned(d))
              for d in (train_dir, held_dir, fresh_dir)}
    threshold = np.percentile(_pearson_nearest(pixels[held_dir], pixels[train_dir]), 99)
    expected = int((_pearson_nearest(pixels[fresh_dir], pixels[train_dir]) >= threshold).sum())
    copies, fresh = rows[0].copies["pixels"], rows[1].copies["pixels"]
    assert copies["copy_rate"] == 1.0 and not copies["safe"] and copies["n_heldout"] == 810
    assert fresh["copies"] == expected and fresh["safe"] and fresh["enough_heldout"]
    table = format_table(rows)
    assert "| Copies (pixels, Pearson r) |" in table.splitlines()[0]
    assert "100.0%, NOT safe" in table and f"{100 * expected / 200:.1f}%, safe" in table and "810 held-out" in table
    few = audit_t2i([fresh_dir], train_dir=train_dir, features=["pixels"], heldout_dir=write_captioned(
        tmp_path / "few", n=20, seed=3))
    assert "too few held-out images: 20 < 802" in format_table(few)
