"""Fine-tune Stable Diffusion's UNet on captioned images: baseline or ambient loss, S23 / W24 mitigations.

One process or many (`accelerate launch -m diffmem t2i train ...`); accelerate's Accelerator handles the
device, mixed precision, gradient accumulation and gradient synchronisation. The VAE and text encoder
are frozen. Each image is encoded ONCE (`latents.safetensors`), and for the ambient method its one noisy
copy x_tn is drawn once from a generator that belongs to the run, so both are identical after a resume.

All per-step randomness (which images, timesteps, noise, S23 caption edits and embedding noise) is
drawn for the whole global batch from one CPU generator owned by the run and saved in every
checkpoint; each process takes its slice. A resumed run therefore continues the same sequence, and
the sequence does not depend on the number of processes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from diffmem.data.corruption import corruption_generator
from diffmem.errors import DiffmemError
from diffmem.t2i import rundir
from diffmem.train.rundir import resume_or_refuse
from diffmem.t2i.components import SDComponents, encode_images, encode_text, load_components
from diffmem.t2i.config import T2IConfig, validate
from diffmem.t2i.data import CaptionedImages, load_captioned
from diffmem.t2i.losses import LossOutput, eps_from_prediction, t2i_loss
from diffmem.t2i.mitigations import (S23Config, s23_captions, s23_embedding_noise, w24_keep, w24_kept_mean,
                                     w24_score)

__all__ = ["train_t2i", "loss_step", "add_lora", "trainable_state", "apply_trained_weights", "draw_step", "StepDraw"]

_NOISY_LATENT_TAG = 0x7432692D746E  # "t2i-tn": the generator purpose of the fixed noisy latents


# ------------------------------------------------------------------------------------------------
# model pieces


def add_lora(unet: torch.nn.Module, rank: int, seed: int | None = None) -> None:
    """Freeze the UNet and add trainable LoRA adapters (rank `rank`) to its attention projections.

    peft draws the adapters' Gaussian start from torch's global generator; with `seed` that generator is
    seeded first, so two runs with one seed start from the same adapters (paired baseline/ambient runs)."""
    try:
        from peft import LoraConfig
    except ImportError:
        raise DiffmemError("--lora-rank needs the peft package, which is not installed: pip install peft "
                           "(or leave --lora-rank out to fine-tune the full UNet)") from None
    unet.requires_grad_(False)
    if seed is not None:
        torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                target_modules=["to_k", "to_q", "to_v", "to_out.0"]))


def trainable_state(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trained parameters by name: the whole UNet, or only the LoRA adapters."""
    return {name: p for name, p in unet.named_parameters() if p.requires_grad}


def apply_trained_weights(unet: torch.nn.Module, weights: dict[str, torch.Tensor], where: str) -> None:
    """Load `weights` (from unet/ema.safetensors) into a UNet prepared like the run's (LoRA added if any)."""
    expected = set(trainable_state(unet)) or {n for n, _ in unet.named_parameters()}
    missing, unexpected = expected - set(weights), set(weights) - {n for n, _ in unet.named_parameters()}
    if missing or unexpected:
        raise DiffmemError(f"{where} does not match the UNet of --pretrained (missing {sorted(missing)[:3]}, "
                           f"unexpected {sorted(unexpected)[:3]}); was the run trained from another model?")
    unet.load_state_dict(weights, strict=False)


class EMAWeights:
    """Exponential moving average (float32) of the trained parameters: p_ema <- p_ema + (1 - beta)(p - p_ema)."""

    def __init__(self, params: dict[str, torch.Tensor]) -> None:
        self.shadow = {k: v.detach().float().clone() for k, v in params.items()}

    @staticmethod
    def beta(step: int, decay: float) -> float:
        """Per-step decay, warmed up as min(decay, (1 + step) / (10 + step)) (diffusers' EMAModel)."""
        return min(decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, params: dict[str, torch.Tensor], beta: float) -> None:
        for k, p in params.items():
            self.shadow[k].lerp_(p.detach().float(), 1 - beta)


# ------------------------------------------------------------------------------------------------
# data: latents encoded once, the fixed noisy copies, per-step draws


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


@dataclass
class StepDraw:
    """The random choices of one global micro-batch."""

    idx: torch.Tensor  # [B] training image indices
    t: torch.Tensor  # [B] timesteps
    noise: torch.Tensor  # [B, C, h, w]
    captions: list[str]  # [B] after S23's caption edits (if any)
    emb_noise: torch.Tensor | None  # [B, L, D] S23 embed-noise, else None


def draw_step(g: torch.Generator, captions: tuple[str, ...], batch: int, num_timesteps: int,
              latent_shape: tuple[int, ...], s23: S23Config | None, tokenizer: Any,
              emb_shape: tuple[int, int]) -> StepDraw:
    """Draw one global micro-batch from the run generator `g` (always in this order)."""
    idx = torch.randint(0, len(captions), (batch,), generator=g)
    t = torch.randint(0, num_timesteps, (batch,), generator=g)
    noise = torch.randn((batch, *latent_shape), generator=g)
    caps = [captions[int(i)] for i in idx]
    emb_noise = None
    if s23 is not None:
        caps = s23_captions(caps, s23, tokenizer, g)
        emb_noise = s23_embedding_noise((batch, *emb_shape), s23, g)
    return StepDraw(idx, t, noise, caps, emb_noise)


def loss_step(unet: torch.nn.Module, raw_unet: torch.nn.Module, x0: torch.Tensor, x_tn: torch.Tensor | None,
              t: torch.Tensor, noise: torch.Tensor, emb: torch.Tensor, empty: torch.Tensor | None,
              alphas: torch.Tensor, prediction_type: str, cfg: T2IConfig, processes: int = 1,
              reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None
              ) -> tuple[torch.Tensor, LossOutput, torch.Tensor, torch.Tensor]:
    """The loss of one micro-batch: the method's per-sample loss, W24's filter (if `empty`, the embedding
    of the empty prompt, is given), mean over the kept samples of the global batch (`w24_kept_mean`, with
    `reduce_sum` summing over the `processes`). Returns (loss, per-sample output, keep mask [B], W24
    scores [B] (zeros without W24))."""
    res = t2i_loss(lambda x, tt: unet(x, tt, encoder_hidden_states=emb).sample, x0, t, noise, alphas,
                   prediction_type, x_tn, cfg.t_n, cfg.ambient_weight)
    keep, score = torch.ones_like(res.loss), torch.zeros_like(res.loss)
    if empty is not None:  # W24: skip samples whose memorization score |eps(x_t,c) - eps(x_t,'')| is too high
        with torch.no_grad():
            pred_u = raw_unet(res.x_t, t, encoder_hidden_states=empty.expand(len(t), -1, -1)).sample
        a_t = alphas[t].float()
        score = w24_score(eps_from_prediction(res.pred.detach(), res.x_t, a_t, prediction_type),
                          eps_from_prediction(pred_u.float(), res.x_t, a_t, prediction_type))
        keep = w24_keep(score, cfg.w24_threshold)
        return w24_kept_mean(res.loss, keep, processes, reduce_sum), res, keep, score
    return res.loss.mean(), res, keep, score  # every sample kept: the local mean is the global one


# ------------------------------------------------------------------------------------------------
# run directory


def _check_run_dir(cfg: dict, out: Path, overwrite: bool, resume: bool) -> bool:
    """New run (False), resume (True), or refuse (a foreign folder, another configuration, a finished run).

    Read-only, so every process can run it and raise the same error."""
    return resume_or_refuse(out, cfg, overwrite, resume, kind="t2i run", sample_cmd="diffmem t2i sample")


def _clear_run_dir(out: Path) -> None:
    for name in (rundir.CONFIG, rundir.INFO, rundir.LATENTS, rundir.LOG, rundir.DONE):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / rundir.CHECKPOINTS, ignore_errors=True)


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


def _start_run(cfg: T2IConfig, parts: SDComponents, data: CaptionedImages, out: Path, accelerator: Any,
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
            if cfg.method == "ambient":
                tensors["noisy"] = draw_noisy_latents(latents, info["a_tn"], cfg.seed)
            tmp = out / (rundir.LATENTS + ".tmp")
            save_file(tensors, str(tmp))
            tmp.replace(out / rundir.LATENTS)
    accelerator.wait_for_everyone()
    saved = load_file(str(out / rundir.LATENTS))
    if len(saved["latents"]) != len(data):
        raise DiffmemError(f"{out / rundir.LATENTS} holds {len(saved['latents'])} latents for {len(data)} images; "
                           "train again with --overwrite")
    return saved["latents"], saved.get("noisy")


# ------------------------------------------------------------------------------------------------
# the loop


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


def _prepare_unet(unet: torch.nn.Module, cfg: T2IConfig, device: torch.device) -> dict[str, torch.Tensor]:
    """Full fine-tuning or LoRA, gradient checkpointing; returns the trained parameters by name."""
    if cfg.lora_rank > 0:
        add_lora(unet, cfg.lora_rank, seed=cfg.seed)
    else:
        unet.requires_grad_(True)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.to(device).train()
    return trainable_state(unet)


def _log_record(stats: torch.Tensor, score_max: float, step: int, lr: float, rate: float, w24: bool,
                device: torch.device) -> dict[str, Any]:
    """One log.jsonl line from the summed window statistics (see `_window_stats`)."""
    loss, loss_high, n_high, n_dropped, score_sum, n = (float(v) for v in stats)
    rec = {"step": step, "loss": loss / n, "loss_high": loss_high / n_high if n_high else None,
           "frac_high": n_high / n, "lr": lr, "images_per_s": rate, "time": time.time()}
    if w24:
        rec.update(w24_frac_dropped=n_dropped / n, w24_score_mean=score_sum / n, w24_score_max=score_max)
    if device.type == "cuda":
        rec["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return rec


def _window_stats(res: LossOutput, keep: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """[loss sum, ambient-branch loss sum, ambient count, W24-dropped count, score sum, batch size]."""
    loss, hi = res.loss.detach(), res.high.float()
    return torch.stack([loss.sum(), (loss * hi).sum(), hi.sum(), (1 - keep).sum(), score.sum(),
                        torch.tensor(float(len(loss)), device=loss.device)])


def train_t2i(cfg: T2IConfig, out: str | Path, *, overwrite: bool = False, resume: bool = False,
              progress: bool = True, stop_after: int | None = None, cpu: bool = False) -> Path:
    """Train (or resume) the run in `out` up to cfg.steps optimizer steps; `stop_after` stops early (tests)."""
    from accelerate import Accelerator

    validate(cfg)
    accelerator = Accelerator(cpu=cpu, mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum)
    world, rank, main, device = (accelerator.num_processes, accelerator.process_index, accelerator.is_main_process,
                                 accelerator.device)
    if cfg.batch % (world * cfg.grad_accum):
        raise DiffmemError(f"--batch {cfg.batch} must be divisible by processes x --grad-accum = "
                           f"{world} x {cfg.grad_accum}")
    micro = cfg.batch // (world * cfg.grad_accum)  # samples per process per micro-step
    out = Path(out)
    parts = load_components(cfg.pretrained)
    cfg = resolve_config(cfg, parts)
    data = load_captioned(cfg.data)
    latents, noisy = _start_run(cfg, parts, data, out, accelerator, overwrite, resume, progress)

    # the frozen text encoder in the compute precision; the trained UNet (float32 master weights)
    weight_dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[cfg.mixed_precision]
    tokenizer, text_encoder = parts.tokenizer, parts.text_encoder.to(device, dtype=weight_dtype)
    params = _prepare_unet(parts.unet, cfg, device)
    torch.manual_seed(cfg.seed)  # global RNG, again after the adapters' start: only dropout (0 in SD) draws from it
    opt = torch.optim.AdamW(params.values(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    ema = EMAWeights(params) if main else None  # only the main process saves checkpoints
    g = torch.Generator().manual_seed(cfg.seed)  # all per-step randomness, identical on every process
    step, state = 0, {}
    ckpt = rundir.latest_checkpoint(out)
    if ckpt is not None:  # resume: weights, optimizer, generator, EMA, step
        apply_trained_weights(parts.unet, rundir.load_weights(ckpt / rundir.UNET), str(ckpt / rundir.UNET))
        state = rundir.load_state(ckpt / rundir.STATE)
        opt.load_state_dict(state["optimizer"])
        g.set_state(state["generator"])
        step = int(state["step"])
        if ema is not None:
            ema.shadow = {k: v.to(device) for k, v in rundir.load_weights(ckpt / rundir.EMA).items()}
    unet, opt = accelerator.prepare(parts.unet, opt)
    if accelerator.scaler is not None and "scaler" in state:
        accelerator.scaler.load_state_dict(state["scaler"])
    raw_unet = accelerator.unwrap_model(unet)

    alphas, ptype = parts.scheduler.alphas_cumprod.to(device), parts.prediction_type
    emb_shape = (tokenizer.model_max_length, text_encoder.config.hidden_size)
    empty = encode_text(tokenizer, text_encoder, [""], device) if cfg.mitigation == "w24" else None
    reduce_sum = (lambda x: accelerator.reduce(x, reduction="sum")) if world > 1 else None  # W24's global count
    meta = {"label": cfg.label, "prediction_type": ptype, "processes": world,
            "trained_parameters": sum(p.numel() for p in params.values())}
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    log = open(out / rundir.LOG, "a") if main else None
    bar = tqdm(total=cfg.steps, initial=step, disable=not (progress and main), unit="step", desc=f"t2i {cfg.label}")
    window: list[torch.Tensor] = []
    scores: list[torch.Tensor] = []
    t_last, step_last = time.perf_counter(), step
    try:
        while step < end:
            lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else cfg.lr
            for group in opt.param_groups:
                group["lr"] = lr
            for _ in range(cfg.grad_accum):  # micro-steps; accelerate syncs and steps on the last one
                draw = draw_step(g, data.captions, micro * world, len(alphas), tuple(latents.shape[1:]), cfg.s23,
                                 tokenizer, emb_shape)
                local = slice(rank * micro, (rank + 1) * micro)  # this process's share of the global batch
                idx, t = draw.idx[local], draw.t[local].to(device)
                x0, noise = latents[idx].to(device), draw.noise[local].to(device)
                x_tn = noisy[idx].to(device) if cfg.method == "ambient" else None
                emb = encode_text(tokenizer, text_encoder, draw.captions[local], device)
                if draw.emb_noise is not None:  # S23 embed-noise: c <- c + std * n
                    emb = emb + draw.emb_noise[local].to(device, emb.dtype)
                with accelerator.accumulate(unet):
                    with accelerator.autocast():
                        loss, res, keep, score = loss_step(unet, raw_unet, x0, x_tn, t, noise, emb, empty, alphas,
                                                           ptype, cfg, world, reduce_sum)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(list(params.values()), cfg.max_grad_norm)
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                window.append(_window_stats(res, keep, score))
                scores.append(score.max())
            step += 1
            if ema is not None:
                ema.update(params, EMAWeights.beta(step, cfg.ema_decay))
            if step % cfg.log_every == 0 or step == end or step % cfg.checkpoint_every == 0:
                stats = accelerator.reduce(torch.stack(window).sum(0), reduction="sum").cpu()  # over processes
                score_max = float(accelerator.gather(torch.stack(scores).max().reshape(1)).max())
                window.clear()
                scores.clear()
                if not torch.isfinite(stats[0]):
                    raise DiffmemError(f"the loss became {float(stats[0])} by step {step}; the last good checkpoint "
                                       f"is kept in {out / rundir.CHECKPOINTS}. Lower --lr or check the data")
                now = time.perf_counter()
                rate = (step - step_last) * cfg.batch / max(now - t_last, 1e-9)
                rec = _log_record(stats, score_max, step, lr, rate, empty is not None, device)
                if log is not None:
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                bar.set_postfix(loss=f"{rec['loss']:.4f}")
                bar.update(step - bar.n)
                t_last, step_last = now, step
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                accelerator.wait_for_everyone()
                if main:
                    state = {"optimizer": opt.state_dict(), "generator": g.get_state(), "step": torch.tensor(step),
                             "torch_rng": torch.get_rng_state()}
                    if accelerator.scaler is not None:
                        state["scaler"] = accelerator.scaler.state_dict()
                    rundir.save_checkpoint(out, step, trainable_state(raw_unet), ema.shadow, state, meta)
    finally:
        bar.close()
        if log is not None:
            log.close()
    if step >= cfg.steps and main:
        rundir.write_json_atomic(out / rundir.DONE, {"step": step, "time": time.time()})
    accelerator.wait_for_everyone()
    return out


def read_log(run_dir: str | Path) -> list[dict]:
    """The log records of a run (one dict per logged step)."""
    path = Path(run_dir) / rundir.LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_config(run_dir: str | Path) -> T2IConfig:
    """The resolved configuration of a t2i run."""
    return T2IConfig.from_dict(rundir.read_json(rundir.check_run(run_dir) / rundir.CONFIG))

