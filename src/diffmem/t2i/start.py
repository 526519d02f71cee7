"""The start of a t2i run: resolve the configuration, then create or reuse its folder, with the
training images encoded once (`latents.safetensors`) and, for the ambient method, their fixed noisy
copies x_tn drawn once from a generator that belongs to the run (Shah et al. 2025, Alg. 1)."""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from diffmem.data.corruption import corruption_generator
from diffmem.errors import DiffmemError
from diffmem.t2i import rundir
from diffmem.t2i.components import SDComponents, encode_images
from diffmem.t2i.config import T2IConfig, validate
from diffmem.t2i.data import CaptionedImages
from diffmem.train.rundir import resume_or_refuse
from diffmem.utils.atomic import save_atomic

__all__ = ["resolve_config", "start_run", "encode_dataset", "draw_noisy_latents"]

_NOISY_LATENT_TAG = 0x7432692D746E  # "t2i-tn": the generator purpose of the fixed noisy latents


def resolve_config(cfg: T2IConfig, parts: SDComponents) -> T2IConfig:
    """Fill in what the pretrained model decides (the resolution), make local paths absolute (so sampling and
    auditing work from any folder), and validate."""
    if cfg.resolution is None:
        cfg = dataclasses.replace(cfg, resolution=parts.default_resolution)
    pretrained = Path(cfg.pretrained).expanduser()
    cfg = dataclasses.replace(cfg, data=str(Path(cfg.data).expanduser().resolve()),
                              pretrained=str(pretrained.resolve()) if pretrained.exists() else cfg.pretrained)
    if cfg.resolution % parts.vae_scale_factor:
        raise DiffmemError(f"--resolution {cfg.resolution} must be a multiple of the VAE factor "
                           f"{parts.vae_scale_factor}")
    validate(cfg, len(parts.scheduler.alphas_cumprod))
    return cfg


def encode_dataset(parts: SDComponents, data: CaptionedImages, resolution: int, device: torch.device,
                   batch: int = 8, progress: bool = True) -> torch.Tensor:
    """Latents `[N, C, h, w]` (float32, CPU) of every training image, encoded once with the VAE mean."""
    vae = parts.vae.to(device)
    out = []
    for lo in tqdm(range(0, len(data), batch), disable=not progress, desc="encode images", unit="batch"):
        pixels = data.read_pixels(np.arange(lo, min(lo + batch, len(data))), resolution)  # [B, R, R, 3]
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)  # [B, 3, R, R] in [-1, 1]
        out.append(encode_images(vae, x.to(device)).cpu())
    parts.vae.to("cpu")
    return torch.cat(out)


def draw_noisy_latents(latents: torch.Tensor, a_tn: float, seed: int) -> torch.Tensor:
    """x_tn = sqrt(a_tn) x0 + sqrt(1 - a_tn) z, z ~ N(0, I): one fixed noisy copy per latent (drawn once)."""
    z = torch.randn(latents.shape, generator=corruption_generator(seed, _NOISY_LATENT_TAG), dtype=torch.float32)
    return math.sqrt(a_tn) * latents.float() + math.sqrt(1 - a_tn) * z


def _check_run_dir(cfg: dict, out: Path, overwrite: bool, resume: bool) -> bool:
    """New run (False), resume (True), or refuse (a foreign folder, another configuration, a finished run).

    Read-only, so every process can run it and raise the same error."""
    return resume_or_refuse(out, cfg, overwrite, resume, kind="t2i run", sample_cmd="diffmem t2i sample",
                            config_class=T2IConfig)


def _clear_run_dir(out: Path) -> None:
    from diffmem.release import RELEASE_DIR, RELEASE_JSON

    for name in (rundir.CONFIG, rundir.INFO, rundir.LATENTS, rundir.LOG, rundir.DONE, RELEASE_JSON):
        (out / name).unlink(missing_ok=True)
    for folder in (rundir.CHECKPOINTS, RELEASE_DIR):  # an earlier run's release must not stand for this one
        shutil.rmtree(out / folder, ignore_errors=True)


def _run_info(cfg: T2IConfig, parts: SDComponents, data: CaptionedImages) -> dict[str, Any]:
    """What info.json records: the model's parameterisation, the data's hash, t_n as an EDM sigma."""
    alphas = parts.scheduler.alphas_cumprod
    info = {"prediction_type": parts.prediction_type, "num_train_timesteps": int(len(alphas)),
            "n_images": len(data), "content_hash": data.content_hash(), "vae_scale_factor": parts.vae_scale_factor,
            "latent_shape": [int(parts.unet.config.in_channels)] + [cfg.resolution // parts.vae_scale_factor] * 2,
            "seed": cfg.seed, "noisy_latent_generator": {"seed": cfg.seed, "tag": _NOISY_LATENT_TAG}}
    if cfg.t_n is not None:
        a_tn = float(alphas[cfg.t_n])
        info.update(a_tn=a_tn, sigma_n_equivalent=math.sqrt((1 - a_tn) / a_tn))  # sigma^2 = (1-a)/a
    return info


def start_run(cfg: T2IConfig, parts: SDComponents, data: CaptionedImages, out: Path, accelerator: Any,
               overwrite: bool, resume: bool, progress: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Check (all processes), then create or reuse the run directory (main process): config.json,
    info.json, and latents.safetensors with the once-encoded latents and (ambient) their fixed noisy
    copies. Returns (latents [N, C, h, w], noisy copies or None), on the CPU."""
    info = _run_info(cfg, parts, data)
    reuse = _check_run_dir(cfg.to_dict(), out, overwrite, resume)
    old_info = rundir.read_json(out / rundir.INFO) if reuse and (out / rundir.INFO).is_file() else info
    if old_info.get("content_hash") != info["content_hash"]:
        raise DiffmemError(f"the images or captions in {cfg.data} changed since {out} was started; "
                           "use --overwrite or another --out")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if overwrite:
            _clear_run_dir(out)
        out.mkdir(parents=True, exist_ok=True)
        for name, content in ((rundir.CONFIG, cfg.to_dict()), (rundir.INFO, info)):  # first: a run interrupted
            if not (out / name).is_file():  # while encoding is then resumed, not refused as a foreign folder
                rundir.write_json_atomic(out / name, content)
        if not (out / rundir.LATENTS).is_file():
            latents = encode_dataset(parts, data, cfg.resolution, accelerator.device, progress=progress)
            tensors = {"latents": latents}
            if cfg.is_ambient:
                tensors["noisy"] = draw_noisy_latents(latents, info["a_tn"], cfg.seed)
            save_atomic(out / rundir.LATENTS, lambda tmp: save_file(tensors, str(tmp)), fixed=True)
    accelerator.wait_for_everyone()
    saved = load_file(str(out / rundir.LATENTS))
    if len(saved["latents"]) != len(data):
        raise DiffmemError(f"{out / rundir.LATENTS} holds {len(saved['latents'])} latents for {len(data)} images; "
                           "train again with --overwrite")
    return saved["latents"], saved.get("noisy")
