"""Generate images from a fine-tuned run, with W24's memorization score per sample and prompt.

Sample j (prompt j // K, K samples per prompt) starts from latent noise drawn with a generator seeded
by `sample_seed(seed, j)`, so it does not depend on the batch size. The default sampler is DDIM with
eta = 0 (deterministic given the initial noise) and classifier-free guidance 7.5, 50 steps.

W24 (Wen et al. 2024): at every step the text-conditional noise prediction eps(x_t, c) - eps(x_t, empty)
is computed anyway for guidance; its norm, averaged over the steps, is the detection score (high =
likely memorized prompt). With `w24_optimize`, each prompt embedding is first adjusted at the first step
to lower that score (diffmem.t2i.mitigations.w24_optimize_prompt), then sampling uses the new embedding.

A sample folder has the layout of a captioned training folder (PNGs + metadata.jsonl with `file_name`
and `text`), plus `prompts.jsonl` (per-prompt scores) and `sample_info.json` (what made it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from diffmem.diffusion.samplers import sample_seed
from diffmem.errors import DiffmemError
from diffmem.t2i import rundir
from diffmem.t2i.components import SDComponents, decode_latents, encode_text, load_components
from diffmem.t2i.config import T2IConfig
from diffmem.t2i.losses import eps_from_prediction
from diffmem.t2i.mitigations import w24_optimize_prompt, w24_score
from diffmem.utils.atomic import atomic_dir
from diffmem.utils.outdir import OWN, check_out_folder

__all__ = ["T2ISampleOptions", "T2ISamples", "load_trained", "generate", "save_samples", "read_prompts", "SCHEDULERS"]

SCHEDULERS = ("ddim", "ddpm")
WEIGHTS = ("ema", "raw", "pretrained")
_STEP_NOISE_TAG = 0x5354455053  # per-sample generator of the stochastic (ddpm) steps


@dataclass(frozen=True)
class T2ISampleOptions:
    """Stable Diffusion sampling: scheduler steps, guidance, batch and the W24 prompt-embedding mitigation."""

    steps: int = 50
    guidance: float = 7.5
    scheduler: str = "ddim"  # ddim (eta 0) | ddpm
    batch: int = 8  # samples per UNet batch (whole prompts: at least n_per_prompt)
    w24_optimize: bool = False
    w24_lr: float = 0.05
    w24_iters: int = 10
    w24_target: float | None = None  # stop optimizing a prompt once its score is <= this


@dataclass
class T2ISamples:
    images: np.ndarray  # uint8 [N, R, R, 3]
    prompts: list[str]  # [P]
    prompt_index: np.ndarray  # [N] int64: the prompt of each sample
    seeds: np.ndarray  # [N] int64: the generator seed of each sample's initial noise
    w24_score: np.ndarray  # [N] mean over steps of |eps(x_t,c) - eps(x_t,'')|
    w24_first: np.ndarray  # [N] the same at the first step
    w24_optimized: np.ndarray | None = None  # [P] first-step score after optimizing the prompt embedding

    def prompt_scores(self) -> np.ndarray:
        """W24 detection score per prompt: the mean of its samples' scores, [P]."""
        out = np.zeros(len(self.prompts))
        np.add.at(out, self.prompt_index, self.w24_score)
        return out / np.maximum(np.bincount(self.prompt_index, minlength=len(self.prompts)), 1)


def load_trained(run_dir: str | Path, weights: str = "ema", device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, checkpoint: str = "latest") -> tuple[SDComponents, T2IConfig]:
    """The run's Stable Diffusion with its trained UNet weights (`ema`, `raw`, or `pretrained` = untouched) of
    `checkpoint` ("latest" or "step-N"; those the run kept, `t2i train --keep-checkpoints`)."""
    from diffmem.t2i.train import run_config
    from diffmem.t2i.weights import add_lora, apply_trained_weights

    if weights not in WEIGHTS:
        raise DiffmemError(f"--weights must be one of {', '.join(WEIGHTS)}")
    run = rundir.check_run(run_dir)
    cfg = run_config(run)
    ckpt = None if weights == "pretrained" else _checkpoint(run, checkpoint)  # refused before SD is loaded
    parts = load_components(cfg.pretrained)
    if ckpt is not None:
        if cfg.lora_rank > 0:
            add_lora(parts.unet, cfg.lora_rank)
        path = ckpt / (rundir.EMA if weights == "ema" else rundir.UNET)
        apply_trained_weights(parts.unet, rundir.load_weights(path), str(path))
    for m in (parts.unet, parts.vae, parts.text_encoder):
        m.requires_grad_(False).eval().to(device)
        if dtype != torch.float32:
            m.to(dtype=dtype)
    return parts, cfg


def _checkpoint(run: Path, which: str) -> Path:
    """The checkpoint folder `which` names ("latest", "release": the step `t2i release` certified, or "step-N"),
    refused naming the fix or those the run has."""
    from diffmem.train.checkpoint import checkpoint_steps

    which = str(which).strip()
    if which == "release":
        from diffmem.release import RELEASE_JSON

        path = run / RELEASE_JSON
        if not path.is_file():
            raise DiffmemError(f"run {run} has no release ({RELEASE_JSON}); release it with `diffmem t2i release "
                               f"--run {run} --heldout DIR`, or pass --checkpoint latest or step-N")
        released = rundir.read_json(path).get("released") or {}
        if "step" not in released:
            raise DiffmemError(f"run {run} has no safe checkpoint to release (see {path}); pass --checkpoint "
                               "latest or step-N")
        which = f"step-{released['step']}"
    if which == "latest":
        ckpt = rundir.latest_checkpoint(run)
        if ckpt is None:
            raise DiffmemError(f"run {run} has no checkpoint yet; train it first (diffmem t2i train --out {run})")
        return ckpt
    steps = checkpoint_steps(run)
    step = int(which[5:]) if which.startswith("step-") and which[5:].isdigit() else None
    if step is None or step not in steps:
        have = ", ".join(f"step-{k}" for k in steps) or "none"
        raise DiffmemError(f"--checkpoint must be latest, release or step-N of run {run}, which has {have}; got "
                           f"{which!r} (t2i train --keep-checkpoints all keeps each one)")
    return run / rundir.CHECKPOINTS / f"step-{step:08d}"


def read_prompts(path: str | Path) -> list[str]:
    """Prompts from a text file (one per line, blank lines skipped) or a .jsonl with a "text" field."""
    p = Path(path)
    if not p.is_file():
        raise DiffmemError(f"--prompts {path}: no such file (one prompt per line, or .jsonl lines with \"text\")")
    lines = [ln for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if p.suffix == ".jsonl":
        try:
            prompts = [json.loads(ln)["text"] for ln in lines]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DiffmemError(f"--prompts {path}: every line of a .jsonl must be an object with \"text\"") from None
    else:
        prompts = [ln.strip() for ln in lines]
    if not prompts:
        raise DiffmemError(f"--prompts {path} holds no prompts")
    return prompts


def _scheduler(parts: SDComponents, name: str):
    from diffusers import DDIMScheduler, DDPMScheduler

    if name not in SCHEDULERS:
        raise DiffmemError(f"--scheduler must be one of {', '.join(SCHEDULERS)}")
    cls = DDIMScheduler if name == "ddim" else DDPMScheduler
    return cls.from_config(parts.scheduler.config)


@torch.no_grad()
def generate(parts: SDComponents, prompts: list[str], n_per_prompt: int, resolution: int, seed: int = 0,
             opts: T2ISampleOptions = T2ISampleOptions(), device: str | torch.device = "cpu",
             progress: bool = True) -> T2ISamples:
    """`n_per_prompt` images for every prompt (sample j = prompt j // K, seed sample_seed(seed, j))."""
    if n_per_prompt < 1 or not prompts:
        raise DiffmemError("need at least one prompt and --n-per-prompt >= 1")
    if opts.steps < 1:
        raise DiffmemError(f"--steps must be a positive integer, got {opts.steps}")
    if resolution % parts.vae_scale_factor:
        raise DiffmemError(f"--resolution {resolution} must be a multiple of {parts.vae_scale_factor}")
    device = torch.device(device)
    sched = _scheduler(parts, opts.scheduler)
    sched.set_timesteps(opts.steps, device=device)
    alphas = sched.alphas_cumprod.to(device)
    ptype = parts.prediction_type
    unet, k = parts.unet, n_per_prompt
    dtype = next(unet.parameters()).dtype
    shape = (unet.config.in_channels, resolution // parts.vae_scale_factor, resolution // parts.vae_scale_factor)
    uncond = encode_text(parts.tokenizer, parts.text_encoder, [""], device)  # [1, L, D]

    def eps(x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        pred = unet(x, t, encoder_hidden_states=emb).sample.float()
        return eps_from_prediction(pred, x.float(), alphas[t].float().expand(len(x)), ptype)

    group = max(1, opts.batch // k)  # prompts per UNet batch
    images, scores, firsts, optimized = [], [], [], []
    bar = tqdm(total=len(prompts) * k, disable=not progress, unit="img", desc="t2i sample")
    for lo in range(0, len(prompts), group):
        pidx = list(range(lo, min(lo + group, len(prompts))))
        sids = [p * k + i for p in pidx for i in range(k)]
        seeds = [sample_seed(seed, j) for j in sids]
        x = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])
        x = (x * sched.init_noise_sigma).to(device, dtype)  # [B, C, h, w]
        cond = encode_text(parts.tokenizer, parts.text_encoder, [prompts[p] for p in pidx], device)  # [G, L, D]
        if opts.w24_optimize:
            optimized += _optimize_prompts(eps, sched, x, cond, uncond, k, opts)
        emb = torch.cat([uncond.expand(len(sids), -1, -1), cond.repeat_interleave(k, dim=0)])  # [2B, L, D]
        x, s = _denoise(unet, sched, x, emb, alphas, ptype, opts, seeds, device)
        scores.append(s.mean(0).cpu())
        firsts.append(s[0].cpu())
        img = decode_latents(parts.vae, x)  # [B, 3, R, R] in [-1, 1]
        images.append(((img + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
        bar.update(len(sids))
    bar.close()
    n = len(prompts) * k
    return T2ISamples(
        images=np.concatenate(images), prompts=list(prompts), prompt_index=np.arange(n) // k,
        seeds=np.array([sample_seed(seed, j) for j in range(n)], dtype=np.int64),
        w24_score=torch.cat(scores).numpy().astype(np.float64), w24_first=torch.cat(firsts).numpy().astype(np.float64),
        w24_optimized=np.array(optimized) if opts.w24_optimize else None)


def _optimize_prompts(eps: Callable, sched: Any, x: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor,
                      k: int, opts: T2ISampleOptions) -> list[float]:
    """W24's mitigation at inference: optimize each prompt embedding of `cond` [G, L, D] in place (for its
    `k` samples of `x`) until its first-step score falls to the target; returns the scores after."""
    t0 = sched.timesteps[0]
    optimized = []
    for gi in range(len(cond)):
        xs = sched.scale_model_input(x[gi * k:(gi + 1) * k], t0)
        new, _ = w24_optimize_prompt(eps, xs, t0, cond[gi:gi + 1], uncond, opts.w24_lr, opts.w24_iters,
                                     opts.w24_target)
        cond[gi] = new[0]
        optimized.append(float(w24_score(eps(xs, t0, new.expand(k, -1, -1)),
                                         eps(xs, t0, uncond.expand(k, -1, -1))).mean()))
    return optimized


def _denoise(unet: torch.nn.Module, sched: Any, x: torch.Tensor, emb: torch.Tensor, alphas: torch.Tensor,
             ptype: str, opts: T2ISampleOptions, seeds: list[int], device: torch.device
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the scheduler from noise `x` [B, C, h, w] with classifier-free guidance (`emb` = [uncond; cond],
    [2B, L, D]); returns (final latents, W24 scores per step [steps, B])."""
    gens = None
    if opts.scheduler == "ddpm":
        gens = [torch.Generator(device=device).manual_seed(s ^ _STEP_NOISE_TAG) for s in seeds]
    per_step = []
    for t in sched.timesteps:
        xin = sched.scale_model_input(torch.cat([x, x]), t)
        pred = unet(xin, t, encoder_hidden_states=emb).sample.float()
        pred_u, pred_c = pred.chunk(2)
        a_t = alphas[t].float().expand(len(x))
        per_step.append(w24_score(eps_from_prediction(pred_c, xin[len(x):].float(), a_t, ptype),
                                  eps_from_prediction(pred_u, xin[:len(x)].float(), a_t, ptype)))
        guided = pred_u + opts.guidance * (pred_c - pred_u)  # classifier-free guidance
        x = sched.step(guided.to(x.dtype), t, x, generator=gens).prev_sample
    return x, torch.stack(per_step)


def save_samples(samples: T2ISamples, out: str | Path, info: dict, overwrite: bool = False) -> Path:
    """Write PNGs + metadata.jsonl (file_name, text, prompt_index, seed, w24 scores), prompts.jsonl and
    sample_info.json into the folder `out` (built in a temporary folder, then moved into place)."""
    out = Path(out)
    state = check_out_folder(out, kind="diffmem t2i sample folder", is_own=lambda p: (p / "sample_info.json").is_file())
    if state == OWN and not overwrite:
        raise DiffmemError(f"--out {out} exists and is not empty; choose another folder or pass --overwrite")
    with atomic_dir(out) as tmp:
        meta, scores = [], samples.prompt_scores()
        for j, img in enumerate(samples.images):
            name = f"{j:06d}.png"
            Image.fromarray(img).save(tmp / name, compress_level=1)
            p = int(samples.prompt_index[j])
            meta.append({"file_name": name, "text": samples.prompts[p], "prompt_index": p,
                         "seed": int(samples.seeds[j]), "w24_score": float(samples.w24_score[j]),
                         "w24_score_first_step": float(samples.w24_first[j])})
        (tmp / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
        prompt_rows = []
        for p, text in enumerate(samples.prompts):
            row = {"prompt_index": p, "text": text, "w24_score": float(scores[p])}
            if samples.w24_optimized is not None:
                row["w24_score_first_step_after_optimization"] = float(samples.w24_optimized[p])
            prompt_rows.append(row)
        (tmp / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prompt_rows))
        (tmp / "sample_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return out


def sample_run(run_dir: str | Path, out: str | Path, prompts: list[str] | None = None, n_per_prompt: int = 1,
               seed: int = 0, opts: T2ISampleOptions = T2ISampleOptions(), weights: str = "ema",
               device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, overwrite: bool = False,
               progress: bool = True, checkpoint: str = "latest") -> Path:
    """Sample a run (its `checkpoint`, see `load_trained`) into the folder `out`; prompts default to the run's
    training captions."""
    from diffmem.t2i.data import load_captioned

    parts, cfg = load_trained(run_dir, weights, device, dtype, checkpoint)
    source = "argument"
    if prompts is None:
        prompts, source = list(load_captioned(cfg.data).captions), f"training captions of {cfg.data}"
    samples = generate(parts, prompts, n_per_prompt, cfg.resolution, seed, opts, device, progress)
    info = {"run": str(Path(run_dir).resolve()), "label": cfg.label, "weights": weights, "seed": seed,
            "n_per_prompt": n_per_prompt, "prompts": source, "options": asdict(opts), "train_data": cfg.data,
            "resolution": cfg.resolution,
            "step": None if weights == "pretrained" else int(_checkpoint(Path(run_dir), checkpoint).name[5:])}
    return save_samples(samples, out, info, overwrite)
