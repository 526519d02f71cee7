"""Fixtures for the text-to-image tests: a tiny random Stable Diffusion saved in diffusers' pipeline
layout (loaded through the same path as a hub id), captioned image folders, and a tiny random CLIP.

Test modules import the fixtures they use: `from t2i_fixtures import tiny_sd, captioned  # noqa: F401`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

WORDS = ("a", "photo", "of", "the", "cat", "dog", "red", "blue", "house", "tree", "on", "with", "big", "small")
CAPTIONS = ("a photo of a red cat", "the blue house", "a big dog on the tree", "a small red house",
            "photo of the blue cat", "a dog with a tree")
MAX_LEN = 16  # tokenizer.model_max_length = text encoder positions
RES = 32  # images 32x32 -> latents 4x8x8 (VAE factor 4)


def write_tokenizer_files(folder: Path) -> Path:
    """A byte-level BPE vocabulary for WORDS (vocab.json + merges.txt), readable by CLIPTokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    merges: list[str] = []
    for word in WORDS:  # merge left to right: "c a", "ca t</w>"
        cur = word[0]
        for i, ch in enumerate(word[1:], 1):
            nxt = ch + ("</w>" if i == len(word) - 1 else "")
            if f"{cur} {nxt}" not in merges:
                merges.append(f"{cur} {nxt}")
            cur += nxt
            vocab.setdefault(cur, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder


def tiny_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(write_tokenizer_files(folder)), model_max_length=MAX_LEN, pad_token="!")


def build_tiny_sd(folder: Path, prediction_type: str = "epsilon", seed: int = 0) -> Path:
    """Save a random-weight Stable Diffusion (UNet 32/64 channels, 8x8x4 latents, 32x32 images)."""
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer(folder.parent / (folder.name + "_tok"))
    unet = UNet2DConditionModel(
        sample_size=RES // 4, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 16, 16), latent_channels=4,
        norm_num_groups=8, layers_per_block=1, sample_size=RES)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=MAX_LEN, bos_token_id=0, eos_token_id=1, pad_token_id=2, projection_dim=32))
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, prediction_type=prediction_type, clip_sample=False,
                              steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(str(folder))
    return folder


def build_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """Save a random-weight CLIPModel (32x32 images, 16-d projections) with its processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer(folder.parent / (folder.name + "_tok"))
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=4, max_position_embeddings=MAX_LEN, bos_token_id=0, eos_token_id=1,
                pad_token_id=2)
    vision = dict(image_size=RES, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=4)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    image_processor = CLIPImageProcessor(size={"shortest_edge": RES}, crop_size={"height": RES, "width": RES})
    model.save_pretrained(str(folder))
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(str(folder))
    return folder


def write_tiny_torchscript(path: Path, seed: int = 0) -> Path:
    """A tiny TorchScript image embedding (32-d), standing in for SSCD; low-dimensional so that a
    Frechet distance on it is instant (pixels at 32x32 are 3072-d: scipy's sqrtm takes minutes)."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 16, stride=16), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(net.eval()), str(path))
    return path


def write_captioned(folder: Path, n: int = 6, layout: str = "jsonl", size: tuple[int, int] = (RES, RES),
                    seed: int = 0) -> Path:
    """n random RGB images with captions: `metadata.jsonl` (layout "jsonl") or `.txt` files ("txt")."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        name = f"img{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)).save(folder / name)
        caption = CAPTIONS[i % len(CAPTIONS)]
        if layout == "txt":
            (folder / name).with_suffix(".txt").write_text(caption + "\n")
        else:
            lines.append(json.dumps({"file_name": name, "text": caption}))
    if layout == "jsonl":
        (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Folder of a tiny epsilon-prediction Stable Diffusion pipeline (pass it as --pretrained)."""
    return str(build_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd", "epsilon"))


@pytest.fixture(scope="session")
def tiny_sd_v(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Folder of a tiny v-prediction Stable Diffusion pipeline."""
    return str(build_tiny_sd(tmp_path_factory.mktemp("sdv") / "tiny-sd-v", "v_prediction"))


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Folder of a tiny random CLIPModel + processor (pass it as --clip)."""
    return str(build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip"))


@pytest.fixture(scope="session")
def sscd_like(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path of a tiny TorchScript embedding model (use as torchscript:PATH features)."""
    return str(write_tiny_torchscript(tmp_path_factory.mktemp("sscd") / "sscd_tiny.torchscript.pt"))


@pytest.fixture
def captioned(tmp_path: Path) -> str:
    """A folder of 6 captioned 32x32 images with metadata.jsonl."""
    return str(write_captioned(tmp_path / "data"))
