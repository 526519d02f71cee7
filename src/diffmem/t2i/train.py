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

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from diffmem.errors import DiffmemError
from diffmem.t2i import rundir
from diffmem.t2i.components import SDComponents, encode_text, load_components
from diffmem.t2i.config import T2IConfig, validate
from diffmem.t2i.data import CaptionedImages, load_captioned
from diffmem.t2i.losses import LatentLossOutput, eps_from_prediction, t2i_loss
from diffmem.t2i.mitigations import S23Config, s23_captions, s23_embedding_noise, w24_keep, w24_kept_mean, w24_score
from diffmem.t2i.start import draw_noisy_latents, encode_dataset, resolve_config, start_run
from diffmem.t2i.weights import add_lora, apply_trained_weights, trainable_state
from diffmem.train.checkpoint import KEEP, prune_checkpoints, save_checkpoint
from diffmem.train.stack import (EMA, ema_warmup_beta, log_record, reduce_window, restore_training_state, training_state,
                                 world_of)

__all__ = ["train_t2i", "loss_step", "add_lora", "trainable_state", "apply_trained_weights", "draw_step", "StepDraw",
           "draw_noisy_latents", "encode_dataset", "resolve_config", "read_log", "run_config"]


# ------------------------------------------------------------------------------------------------
# per-step draws and the loss of one micro-batch


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
              ) -> tuple[torch.Tensor, LatentLossOutput, torch.Tensor, torch.Tensor]:
    """The loss of one micro-batch: the method's per-sample loss, W24's filter (if `empty`, the embedding
    of the empty prompt, is given), mean over the kept samples of the global batch (`w24_kept_mean`, with
    `reduce_sum` summing over the `processes`). Returns (loss, per-sample output, keep mask [B], W24
    scores [B] (zeros without W24))."""
    res = t2i_loss(lambda x, tt: unet(x, tt, encoder_hidden_states=emb).sample, x0, t, noise, alphas,
                   prediction_type, x_tn, cfg.t_n, cfg.weighting)
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
# the loop


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


def _micro_stats(res: LatentLossOutput, keep: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """[loss sum, ambient-branch loss sum, ambient count, W24-dropped count, W24 score sum] of a micro-batch."""
    loss, hi = res.loss.detach(), res.high.float()
    return torch.stack([loss.sum(), (loss * hi).sum(), hi.sum(), (1 - keep).sum(), score.sum()])


def _step(run: _Run, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step of `cfg.grad_accum` micro-steps at learning rate `lr`. Returns the step's row of
    the log window (`diffmem.train.stack`: the mean loss of this process's share first) and its top W24 score."""
    for group in run.opt.param_groups:
        group["lr"] = lr
    rows, scores = [], []
    for _ in range(run.cfg.grad_accum):  # micro-steps; accelerate syncs and steps on the last one
        res, keep, score = _micro_step(run)
        rows.append(_micro_stats(res, keep, score))
        scores.append(score.max())
    row = torch.stack(rows).sum(0)
    row[0] /= run.micro * run.cfg.grad_accum
    return row, torch.stack(scores).max()


@dataclass


class _Run:
    """What a t2i run holds while it trains (built by `_setup_training`)."""

    cfg: T2IConfig
    out: Path
    accelerator: Any
    captions: tuple[str, ...]
    latents: torch.Tensor  # [N, C, h, w] on the CPU
    noisy: torch.Tensor | None  # the fixed noisy copies (ambient), else None
    tokenizer: Any
    text_encoder: torch.nn.Module
    params: dict[str, torch.Tensor]  # the trained parameters by name
    opt: Any
    ema: EMA | None  # main process only
    g: torch.Generator  # all per-step randomness, identical on every process
    unet: Any  # wrapped by accelerate
    raw_unet: torch.nn.Module
    alphas: torch.Tensor
    ptype: str
    empty: torch.Tensor | None  # W24: the embedding of the empty prompt
    micro: int  # samples per process per micro-step
    step: int = 0
    keep: int = KEEP  # checkpoints kept on disk (0: all)


def train_t2i(cfg: T2IConfig, out: str | Path, *, overwrite: bool = False, resume: bool = False,
              progress: bool = True, stop_after: int | None = None, cpu: bool = False,
              keep_checkpoints: int = KEEP, guard: Any = None) -> Path:
    """Train (or resume) the run in `out` up to cfg.steps optimizer steps; `stop_after` stops early (tests).
    `keep_checkpoints`: the newest checkpoints kept on disk (0: all, so that each can be sampled and audited).
    `guard` (`diffmem.t2i.guard.T2IGuard`, one process only) checks every checkpoint, keeps the release on disk
    and stops the run by its rule."""
    from accelerate import Accelerator

    validate(cfg)
    accelerator = Accelerator(cpu=cpu, mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum)
    world = accelerator.num_processes
    if cfg.batch % (world * cfg.grad_accum):
        raise DiffmemError(f"--batch {cfg.batch} must be divisible by processes x --grad-accum = "
                           f"{world} x {cfg.grad_accum}")
    if guard is not None and world > 1:
        raise DiffmemError(f"--guard checks in one process, but this run has {world}; train without --guard and "
                           "release afterwards with `diffmem t2i release` (train with --keep-checkpoints all)")
    out = Path(out)
    parts = load_components(cfg.pretrained)
    cfg = resolve_config(cfg, parts)
    data = load_captioned(cfg.data)
    latents, noisy = start_run(cfg, parts, data, out, accelerator, overwrite, resume, progress)
    run = _setup_training(cfg, out, accelerator, parts, data, latents, noisy)
    run.keep = keep_checkpoints
    meta = {"label": cfg.label, "prediction_type": run.ptype, "processes": world,
            "trained_parameters": sum(p.numel() for p in run.params.values())}
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    log = None
    stopped = guard.begin(out, run.step) if guard is not None else None
    if accelerator.is_main_process:
        rundir.trim_log(out / rundir.LOG, run.step)  # steps redone after a resume: logged once
        log = open(out / rundir.LOG, "a")
    bar = tqdm(total=cfg.steps, initial=run.step, disable=not (progress and accelerator.is_main_process),
               unit="step", desc=f"t2i {cfg.label}")
    try:
        stopped = stopped or _train_loop(run, end, meta, log, bar, guard)
    finally:
        bar.close()
        if log is not None:
            log.close()
    if (run.step >= cfg.steps or stopped is not None) and accelerator.is_main_process:
        if guard is not None:
            guard.finish(stopped)
        rundir.write_json_atomic(out / rundir.DONE, {"step": run.step, "time": time.time(), "stopped": stopped})
    accelerator.wait_for_everyone()
    return out


def _train_loop(run: _Run, end: int, meta: dict[str, Any], log: Any, bar: Any, guard: Any) -> str | None:
    """Optimizer steps up to `end`: EMA, a log line per window, a checkpoint (and the guard's check of it) every
    `checkpoint_every` steps; returns the guard's stop reason, or None."""
    cfg = run.cfg
    window: list[torch.Tensor] = []
    scores: list[torch.Tensor] = []
    t_last, step_last = time.perf_counter(), run.step
    while run.step < end:
        lr = cfg.lr * min(1.0, (run.step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else cfg.lr
        row, score_max = _step(run, lr)
        window.append(row)
        scores.append(score_max)
        run.step += 1
        if run.ema is not None:
            run.ema.update(run.params, ema_warmup_beta(run.step, cfg.ema_decay))
        if run.step % cfg.log_every == 0 or run.step == end or run.step % cfg.checkpoint_every == 0:
            now = time.perf_counter()
            rec = _log_window(run, window, scores, lr, now - t_last, run.step - step_last, log)
            bar.set_postfix(loss=f"{rec['loss']:.4f}")
            bar.update(run.step - bar.n)
            t_last, step_last = now, run.step
        if run.step % cfg.checkpoint_every == 0 or run.step == cfg.steps:
            _save_checkpoint(run, meta, guard.protect() if guard is not None else frozenset())
            if guard is not None:
                stopped = guard(run.step)
                prune_checkpoints(run.out, run.keep, guard.protect())  # a release this check replaced goes
                if stopped is not None:
                    return stopped
                t_last = time.perf_counter()  # the check is not training time
    return None


def _setup_training(cfg: T2IConfig, out: Path, accelerator: Any, parts: SDComponents, data: CaptionedImages,
                    latents: torch.Tensor, noisy: torch.Tensor | None) -> _Run:
    """Text encoder, trained parameters, optimizer, EMA and the run generator; from the latest checkpoint
    when there is one (weights, optimizer, generator, EMA, step)."""
    device = accelerator.device
    # the frozen text encoder in the compute precision; the trained UNet (float32 master weights)
    weight_dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[cfg.mixed_precision]
    text_encoder = parts.text_encoder.to(device, dtype=weight_dtype)
    params = _prepare_unet(parts.unet, cfg, device)
    torch.manual_seed(cfg.seed)  # global RNG, again after the adapters' start: only dropout (0 in SD) draws from it
    opt = torch.optim.AdamW(params.values(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    ema = EMA(params) if accelerator.is_main_process else None  # only the main process saves checkpoints
    g = torch.Generator().manual_seed(cfg.seed)
    step, state = 0, {}
    ckpt = rundir.latest_checkpoint(out)
    if ckpt is not None:
        loaders = {rundir.UNET: lambda w: apply_trained_weights(parts.unet, w, str(ckpt / rundir.UNET)),
                   **({rundir.EMA: ema.load_state_dict} if ema is not None else {})}
        step, state = restore_training_state(ckpt, loaders, opt, g)
    unet, opt = accelerator.prepare(parts.unet, opt)
    if accelerator.scaler is not None and "scaler" in state:
        accelerator.scaler.load_state_dict(state["scaler"])
    empty = encode_text(parts.tokenizer, text_encoder, [""], device) if cfg.mitigation == "w24" else None
    return _Run(cfg=cfg, out=out, accelerator=accelerator, captions=data.captions, latents=latents, noisy=noisy,
                tokenizer=parts.tokenizer, text_encoder=text_encoder, params=params, opt=opt, ema=ema, g=g,
                unet=unet, raw_unet=accelerator.unwrap_model(unet), alphas=parts.scheduler.alphas_cumprod.to(device),
                ptype=parts.prediction_type, empty=empty,
                micro=cfg.batch // (accelerator.num_processes * cfg.grad_accum), step=step)


def _micro_step(run: _Run) -> tuple[LatentLossOutput, torch.Tensor, torch.Tensor]:
    """Draw one global micro-batch, take this process's slice, and backpropagate its loss (accelerate
    steps the optimizer on the last micro-step). Returns (per-sample output, keep mask, W24 scores)."""
    cfg, acc, device = run.cfg, run.accelerator, run.accelerator.device
    world, rank = acc.num_processes, acc.process_index
    emb_shape = (run.tokenizer.model_max_length, run.text_encoder.config.hidden_size)
    draw = draw_step(run.g, run.captions, run.micro * world, len(run.alphas), tuple(run.latents.shape[1:]), cfg.s23,
                     run.tokenizer, emb_shape)
    local = slice(rank * run.micro, (rank + 1) * run.micro)  # this process's share of the global batch
    idx, t = draw.idx[local], draw.t[local].to(device)
    x0, noise = run.latents[idx].to(device), draw.noise[local].to(device)
    x_tn = run.noisy[idx].to(device) if cfg.is_ambient else None
    emb = encode_text(run.tokenizer, run.text_encoder, draw.captions[local], device)
    if draw.emb_noise is not None:  # S23 embed-noise: c <- c + std * n
        emb = emb + draw.emb_noise[local].to(device, emb.dtype)
    reduce_sum = (lambda x: acc.reduce(x, reduction="sum")) if world > 1 else None  # W24's global count
    with acc.accumulate(run.unet):
        with acc.autocast():
            loss, res, keep, score = loss_step(run.unet, run.raw_unet, x0, x_tn, t, noise, emb, run.empty,
                                               run.alphas, run.ptype, cfg, world, reduce_sum)
        acc.backward(loss)
        if acc.sync_gradients and cfg.max_grad_norm > 0:
            acc.clip_grad_norm_(list(run.params.values()), cfg.max_grad_norm)
        run.opt.step()
        run.opt.zero_grad(set_to_none=True)
    return res, keep, score


def _log_window(run: _Run, window: list[torch.Tensor], scores: list[torch.Tensor], lr: float, seconds: float,
                steps_timed: int, log: Any) -> dict[str, Any]:
    """The shared log record of the window (`diffmem.train.stack.log_record`, after its NaN guard) with W24's
    figures, written as one log.jsonl line (main process); empties the window and returns the record."""
    acc = run.accelerator
    stats = reduce_window(window, world_of(acc))  # over processes
    score_max = float(acc.gather(torch.stack(scores).max().reshape(1)).max())
    window.clear()
    scores.clear()
    rec = log_record(stats, run.step, run.out, run.cfg.batch, lr, seconds, steps_timed, run.opt)
    if run.empty is not None:
        n = len(stats) * run.cfg.batch
        rec.update(w24_frac_dropped=float(stats[:, 3].sum()) / n, w24_score_mean=float(stats[:, 4].sum()) / n,
                   w24_score_max=score_max)
    if log is not None:
        log.write(json.dumps(rec) + "\n")
        log.flush()
    return rec


def _save_checkpoint(run: _Run, meta: dict[str, Any], protect: frozenset[int] = frozenset()) -> None:
    """Save weights, EMA, optimizer, generator and step (the main process, after every process arrives); prune
    all but the newest `run.keep` and the steps in `protect` (the guard's release)."""
    acc = run.accelerator
    acc.wait_for_everyone()
    if acc.is_main_process:
        weights = {rundir.UNET: trainable_state(run.raw_unet), rundir.EMA: run.ema.state_dict()}
        save_checkpoint(run.out, run.step, weights, training_state(run.opt, run.g, run.step, acc.scaler), meta,
                        keep=run.keep, protect=protect)


def read_log(run_dir: str | Path) -> list[dict]:
    """The log records of a run (one dict per logged step; `diffmem.train.rundir.log_records`)."""
    return rundir.log_records(Path(run_dir) / rundir.LOG)


def run_config(run_dir: str | Path) -> T2IConfig:
    """The resolved configuration of a t2i run."""
    return T2IConfig.from_dict(rundir.read_json(rundir.check_run(run_dir) / rundir.CONFIG))

