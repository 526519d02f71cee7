"""`diffmem t2i`: fine-tune Stable Diffusion (baseline / ambient, S23 / W24), sample it, audit the samples."""

from __future__ import annotations

import math

import click

from diffmem.diffusion.weighting import WEIGHTINGS
from diffmem.errors import DiffmemError
from diffmem.t2i.config import MIXED_PRECISION, T2I_METHOD_NAMES, T2IConfig
from diffmem.t2i.mitigations import MITIGATIONS
from diffmem.utils.flags import device_name

T2I = T2IConfig(pretrained="", data="")  # the defaults of `t2i train`'s flags, written once in diffmem.t2i.config


@click.group()
def t2i() -> None:
    """Text-to-image (Shah et al. 2025, Sec. 5.2): fine-tune Stable Diffusion with the ambient loss, sample, audit."""


@t2i.command()
@click.option("--pretrained", required=True, help="Hub id (e.g. stabilityai/stable-diffusion-2-base) or a local "
              "folder in diffusers' pipeline layout.")
@click.option("--data", "data", required=True, type=click.Path(file_okay=False),
              help="Folder of images with metadata.jsonl (file_name, text) or same-named .txt captions.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--resolution", type=int, default=None, help="Image size (default: the UNet's native size).")
@click.option("--method", type=click.Choice(list(T2I_METHOD_NAMES)), default=T2I.method, show_default=True)
@click.option("--t-n", "t_n", type=int, default=None,
              help="ambient: timestep of the fixed noisy latents; the model sees only them for t > t_n.")
@click.option("--ambient-weight", type=click.Choice(list(WEIGHTINGS)), default=T2I.ambient_weight, show_default=True,
              help="ambient: weight of the t > t_n branch: plain (the baseline's), compensated (the baseline's on "
                   "x0's error; infinite-variance loss), capped (compensated up to --weight-cap times plain).")
@click.option("--weight-cap", type=float, default=T2I.weight_cap, show_default=True,
              help="--ambient-weight capped: the largest gain over plain.")
@click.option("--mitigation", type=click.Choice(MITIGATIONS), default=T2I.mitigation, show_default=True,
              help="S23 caption/embedding corruption, or W24's training filter.")
@click.option("--s23-prob", type=float, default=T2I.s23_prob, show_default=True,
              help="S23: chance a caption is changed.")
@click.option("--s23-words", type=int, default=None, help="S23: words added/repeated (2) or replacement length (4).")
@click.option("--s23-noise-std", type=float, default=T2I.s23_noise_std, show_default=True,
              help="S23 embed-noise: noise std.")
@click.option("--w24-threshold", type=float, default=None, help="W24: skip samples whose score exceeds this.")
@click.option("--steps", type=int, default=T2I.steps, show_default=True, help="Optimizer steps.")
@click.option("--batch", type=int, default=T2I.batch, show_default=True, help="Global batch (all GPUs, accumulation).")
@click.option("--grad-accum", type=int, default=T2I.grad_accum, show_default=True,
              help="Gradient accumulation micro-steps.")
@click.option("--lr", type=float, default=T2I.lr, show_default=True)
@click.option("--weight-decay", type=float, default=T2I.weight_decay, show_default=True)
@click.option("--warmup-steps", type=int, default=T2I.warmup_steps, show_default=True)
@click.option("--max-grad-norm", type=float, default=T2I.max_grad_norm, show_default=True,
              help="Gradient clipping (0: off).")
@click.option("--ema-decay", type=float, default=T2I.ema_decay, show_default=True)
@click.option("--mixed-precision", type=click.Choice(MIXED_PRECISION), default=T2I.mixed_precision,
              show_default=True)
@click.option("--gradient-checkpointing", is_flag=True, help="Trade compute for UNet activation memory.")
@click.option("--lora-rank", type=int, default=T2I.lora_rank, show_default=True,
              help="> 0: train LoRA adapters (needs peft).")
@click.option("--seed", type=int, default=T2I.seed, show_default=True)
@click.option("--checkpoint-every", type=int, default=T2I.checkpoint_every, show_default=True)
@click.option("--keep-checkpoints", default="2", show_default=True,
              help="How many of the newest checkpoints stay on disk, or 'all' (to sample and audit each one).")
@click.option("--log-every", type=int, default=T2I.log_every, show_default=True)
@click.option("--guard", is_flag=True, help="Check every checkpoint while training (copies against --heldout, the "
              "safety test, quality), keep the best safe one and stop once copying sets in (one process).")
@click.option("--heldout", "heldout_dir", default=None,
              help="--guard: captioned images of the same kind, never trained on (at least 802).")
@click.option("--guard-features", default="dinov2", show_default=True,
              help="--guard: copy features (dinov2[:ID_OR_DIR], torchscript:SSCD.pt, clip[:ID], pixels).")
@click.option("--guard-quality", default="inception", show_default=True,
              help="--guard: Frechet distance to the held-out images in these features; 'none': the latest safe "
                   "checkpoint is released.")
@click.option("--guard-n-per-prompt", type=int, default=1, show_default=True,
              help="--guard: samples per training caption at each check.")
@click.option("--guard-sample-steps", type=int, default=50, show_default=True, help="--guard: sampler steps.")
@click.option("--guard-guidance", type=float, default=7.5, show_default=True, help="--guard: guidance scale.")
@click.option("--guard-patience", type=int, default=2, show_default=True,
              help="--guard: stop after this many unsafe checks in a row (0: never stop).")
@click.option("--resume", is_flag=True, help="Require an existing run to resume (re-running resumes anyway).")
@click.option("--overwrite", is_flag=True, help="Replace a finished or different run in --out.")
@click.option("--device", type=click.Choice(["auto", "cpu"]), default="auto", show_default=True,
              help="cpu forces the CPU; GPUs are chosen by accelerate (CUDA_VISIBLE_DEVICES, accelerate launch).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(pretrained, data, out, resolution, method, t_n, ambient_weight, weight_cap, mitigation, s23_prob,
          s23_words, s23_noise_std, w24_threshold, steps, batch, grad_accum, lr, weight_decay, warmup_steps,
          max_grad_norm, ema_decay, mixed_precision, gradient_checkpointing, lora_rank, seed, checkpoint_every,
          keep_checkpoints, log_every, guard, heldout_dir, guard_features, guard_quality, guard_n_per_prompt,
          guard_sample_steps, guard_guidance, guard_patience, resume, overwrite, device, quiet) -> None:
    """Fine-tune Stable Diffusion's UNet on captioned images (multi-GPU: accelerate launch -m diffmem t2i train);
    with --guard, release its best safe checkpoint as it trains (RUN/release.json and its page)."""
    from diffmem.cli.train import keep_checkpoints_from_flag
    from diffmem.t2i.train import train_t2i

    keep = keep_checkpoints_from_flag(keep_checkpoints)
    watch = _guard_from_flags(click.get_current_context(), guard, heldout_dir, guard_features, guard_quality,
                              guard_n_per_prompt, guard_sample_steps, guard_guidance, guard_patience, device, quiet)

    cfg = T2IConfig(pretrained=pretrained, data=data, resolution=resolution, method=method, t_n=t_n,
                    ambient_weight=ambient_weight, weight_cap=weight_cap, mitigation=mitigation, s23_prob=s23_prob,
                    s23_words=s23_words, s23_noise_std=s23_noise_std, w24_threshold=w24_threshold, steps=steps,
                    batch=batch, grad_accum=grad_accum, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
                    max_grad_norm=max_grad_norm, ema_decay=ema_decay, mixed_precision=mixed_precision,
                    gradient_checkpointing=gradient_checkpointing, lora_rank=lora_rank, seed=seed,
                    checkpoint_every=checkpoint_every, log_every=log_every)
    from diffmem.lock import is_main_process, locked

    with locked(out, enabled=is_main_process()):  # rank 0 of accelerate launch holds the run's lock
        run = train_t2i(cfg, out, overwrite=overwrite, resume=resume, progress=not quiet, cpu=device == "cpu",
                        keep_checkpoints=keep, guard=watch)
    if watch is None:
        click.echo(f"trained {cfg.label} for {steps} steps; run directory: {run}")
        return
    spent, trained = watch.cost()
    click.echo(f"the guard's checks took {spent:.0f} s, {spent / max(trained or 0.0, 1e-9):.0%} of the training time "
               f"({trained or 0.0:.0f} s); fewer --guard-n-per-prompt or a larger --checkpoint-every make them cheaper")
    _release_epilogue(run, cfg.label, device)


def _guard_from_flags(ctx, guard, heldout_dir, features, quality, n_per_prompt, sample_steps, guidance, patience,
                      device, quiet):
    """The `T2IGuard` the --guard flags describe (None without --guard); a guard flag without --guard, or
    --guard without --heldout, is refused by name."""
    from diffmem.cli.release import flags_given
    from diffmem.t2i.guard import T2IGuard

    if not guard:
        given = flags_given(ctx, lambda name: name.startswith("guard_") or name == "heldout_dir")
        if given:
            raise DiffmemError(f"{', '.join(given)} only apply with --guard; add --guard, or drop them")
        return None
    opts = _check_options("--guard", "--guard-", heldout_dir, n_per_prompt, sample_steps, guidance)
    return T2IGuard(heldout_dir, features=features, fd_features=None if quality.lower() == "none" else quality,
                    n_per_prompt=n_per_prompt, opts=opts, patience=patience, device=device_name(device),
                    echo=None if quiet else _above_the_bar)


def _check_options(command: str, prefix: str, heldout_dir, n_per_prompt: int, steps: int, guidance: float):
    """The checks' sampling options, after refusing a missing --heldout or a bad sampling flag (named with
    `prefix`: "--" for t2i release, "--guard-" for t2i train --guard, whose steps flag is --guard-sample-steps)."""
    from diffmem.t2i.sample import T2ISampleOptions

    if heldout_dir is None:
        raise DiffmemError(f"{command} needs --heldout DIR: captioned images of the same kind, never trained on (at "
                           "least 802), whose 99th percentile is the copy threshold")
    steps_flag = "--guard-sample-steps" if prefix == "--guard-" else "--steps"
    if n_per_prompt < 1 or steps < 1 or not (math.isfinite(guidance) and guidance >= 0):
        raise DiffmemError(f"{prefix}n-per-prompt and {steps_flag} must be positive and {prefix}guidance a finite "
                           f"number >= 0; got {n_per_prompt}, {steps}, {guidance}")
    return T2ISampleOptions(steps=steps, guidance=guidance)


def _above_the_bar(line: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(line)  # above the progress bar, not through it


def _release_epilogue(run, label: str, device) -> None:
    """After a guarded fine-tune or a `t2i release`: the release in one sentence and its page."""
    from diffmem.release import read_release, release_sentence
    from diffmem.report.t2i_release import write_t2i_release_report

    click.echo(release_sentence(read_release(run), label))
    try:
        shown = f" (to show: {write_t2i_release_report(run, device=device_name(device))})"
    except DiffmemError as err:  # the certificate is written; only its page is missing
        click.echo(f"warning: the release page was not written ({err}); write it later with `diffmem t2i release "
                   f"--run {run} --report-only`", err=True)
        shown = ""
    click.echo(f"certificate: {run}/release.json{shown}; sample it with `diffmem t2i sample --run {run} "
               "--checkpoint release`")


@t2i.command()
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help="A t2i run directory.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for PNGs + metadata.jsonl.")
@click.option("--prompts", "prompts_file", default=None, type=click.Path(dir_okay=False),
              help="Prompts, one per line (or .jsonl with \"text\"); default: the run's training captions.")
@click.option("--n-prompts", type=int, default=None, help="Use only the first N prompts.")
@click.option("--n-per-prompt", type=int, default=1, show_default=True, help="Samples per prompt.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sample j depends only on (seed, j).")
@click.option("--steps", type=int, default=50, show_default=True)
@click.option("--guidance", type=float, default=7.5, show_default=True, help="Classifier-free guidance scale.")
@click.option("--scheduler", type=click.Choice(["ddim", "ddpm"]), default="ddim", show_default=True)
@click.option("--batch", type=int, default=8, show_default=True, help="Samples per UNet batch (whole prompts).")
@click.option("--weights", type=click.Choice(["ema", "raw", "pretrained"]), default="ema", show_default=True,
              help="EMA or raw trained weights, or the untouched pretrained UNet (for comparison).")
@click.option("--checkpoint", default="latest", show_default=True,
              help="Which checkpoint: latest or step-N (train with --keep-checkpoints all to keep each one).")
@click.option("--w24-optimize", is_flag=True, help="W24 inference mitigation: optimize each prompt embedding first.")
@click.option("--w24-lr", type=float, default=0.05, show_default=True)
@click.option("--w24-iters", type=int, default=10, show_default=True)
@click.option("--w24-target", type=float, default=None, help="Stop optimizing a prompt once its score is <= this.")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default="float32", show_default=True)
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1, or auto.")
@click.option("--overwrite", is_flag=True)
@click.option("--quiet", is_flag=True)
def sample(run_dir, out, prompts_file, n_prompts, n_per_prompt, seed, steps, guidance, scheduler, batch, weights,
           checkpoint, w24_optimize, w24_lr, w24_iters, w24_target, dtype, device, overwrite, quiet) -> None:
    """Generate images from a run, with W24's memorization score per prompt (prompts.jsonl)."""
    import torch

    from diffmem.lock import is_main_process, locked
    from diffmem.t2i.sample import T2ISampleOptions, read_prompts, sample_run

    for flag, value in (("--n-per-prompt", n_per_prompt), ("--steps", steps), ("--batch", batch),
                        ("--w24-iters", w24_iters)):
        if value < 1:
            raise DiffmemError(f"{flag} must be a positive integer, got {value}")
    if not (math.isfinite(guidance) and guidance >= 0 and math.isfinite(w24_lr) and w24_lr > 0):
        raise DiffmemError(f"--guidance must be a finite number >= 0 and --w24-lr positive; got {guidance}, {w24_lr}")
    prompts = read_prompts(prompts_file) if prompts_file else None
    if n_prompts is not None:
        if n_prompts < 1:
            raise DiffmemError(f"--n-prompts must be a positive integer, got {n_prompts}")
        if prompts is None:
            from diffmem.t2i.data import load_captioned
            from diffmem.t2i.train import run_config

            prompts = list(load_captioned(run_config(run_dir).data).captions)
        prompts = prompts[:n_prompts]
    opts = T2ISampleOptions(steps=steps, guidance=guidance, scheduler=scheduler, batch=batch, w24_optimize=w24_optimize,
                            w24_lr=w24_lr, w24_iters=w24_iters, w24_target=w24_target)
    dev = device_name(device)
    with locked(out, enabled=is_main_process()):
        path = sample_run(run_dir, out, prompts, n_per_prompt, seed, opts, weights, dev, getattr(torch, dtype),
                          overwrite, progress=not quiet, checkpoint=checkpoint)
    click.echo(f"wrote samples, metadata.jsonl and W24 prompt scores (prompts.jsonl) to {path}")


@t2i.command()
@click.option("--samples", "samples", multiple=True, required=True, type=click.Path(file_okay=False),
              help="A folder written by `diffmem t2i sample` (repeat for one table row each).")
@click.option("--name", "names", multiple=True, help="Row names, in --samples order (default: the run's method).")
@click.option("--train", "train_dir", default=None, type=click.Path(file_okay=False),
              help="The training images (captioned folder); default: the data of the samples' run.")
@click.option("--features", "features", multiple=True, default=("dinov2",), show_default=True,
              help="Similarity features, repeatable: dinov2[:ID_OR_DIR], torchscript:SSCD.pt, clip[:ID], pixels.")
@click.option("--clip", "clip", default="openai/clip-vit-large-patch14", show_default=True,
              help="CLIP model (hub id or folder) for the CLIP score; 'none' to skip.")
@click.option("--fd-features", default="inception", show_default=True,
              help="Features of the Frechet distance (inception[:PATH] = FID); 'none' to skip.")
@click.option("--heldout", "heldout_dir", default=None,
              help="Captioned images of the same kind, never trained on (at least 802): adds each folder's copies "
                   "(above the held-out p99) and their safety test in every --features space.")
@click.option("--resolution", type=int, default=None, help="Size the training images are read at (default: samples').")
@click.option("--batch", type=int, default=64, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--out", "out", default=None, type=click.Path(dir_okay=False), help="Also write the table as JSON here.")
def audit(samples, names, train_dir, features, clip, fd_features, heldout_dir, resolution, batch, device, out) -> None:
    """Table 3 of Shah et al. 2025: similarity to the training set (mean, 95th percentile), CLIP score, Frechet
    distance; with --heldout, copies against what unseen images score."""
    from diffmem.t2i.audit import audit_t2i, format_table, write_report

    if batch < 1 or (resolution is not None and resolution < 1):
        raise DiffmemError(f"--batch and --resolution must be positive integers, got {batch}, {resolution}")
    if names and len(names) != len(samples):
        raise DiffmemError(f"--name was given {len(names)} times for {len(samples)} --samples; give one per folder")
    rows = audit_t2i(list(samples), train_dir=train_dir, features=list(features),
                     clip=None if clip.lower() == "none" else clip,
                     fd_features=None if fd_features.lower() == "none" else fd_features,
                     names=list(names) or None, resolution=resolution, batch=batch, device=device_name(device),
                     heldout_dir=heldout_dir)
    click.echo(format_table(rows))
    if out:
        write_report(rows, out)
        click.echo(f"wrote {out}")


@t2i.command()
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False),
              help="A t2i run trained with --keep-checkpoints all (or the checkpoints it kept).")
@click.option("--heldout", "heldout_dir", default=None,
              help="Captioned images of the same kind, never trained on (at least 802): the copy threshold. "
                   "Required unless --report-only.")
@click.option("--features", default="dinov2", show_default=True,
              help="Copy features: dinov2[:ID_OR_DIR], torchscript:SSCD.pt, clip[:ID], pixels.")
@click.option("--fd-features", default="inception", show_default=True,
              help="Quality: Frechet distance to the held-out images in these features; 'none' releases the latest "
                   "safe checkpoint.")
@click.option("--n-per-prompt", type=int, default=1, show_default=True, help="Samples per training caption.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--steps", type=int, default=50, show_default=True)
@click.option("--guidance", type=float, default=7.5, show_default=True)
@click.option("--report-only", is_flag=True,
              help="Check nothing: write RUN/release/report.html again from the run's certificate.")
@click.option("--device", default="auto", show_default=True)
@click.pass_context
def release(ctx, run_dir, heldout_dir, features, fd_features, n_per_prompt, seed, steps, guidance, report_only,
            device) -> None:
    """Check every kept checkpoint of a fine-tune (its captions' samples: copies against the held-out images,
    the safety test, quality), write RUN/release.json and RUN/release/report.html; `t2i sample --checkpoint
    release` then uses it."""
    from diffmem.cli.release import refuse_check_flags
    from diffmem.release import read_release
    from diffmem.report.t2i_release import write_t2i_release_report
    from diffmem.t2i.release import release_t2i
    from diffmem.t2i.train import run_config

    if report_only:
        refuse_check_flags(ctx, lambda name: name not in ("run_dir", "report_only", "device"))
        read_release(run_dir)  # a run without a certificate is refused naming the fix, before any writing
        click.echo(f"release page: {write_t2i_release_report(run_dir, device=device_name(device))}")
        return
    opts = _check_options("t2i release", "--", heldout_dir, n_per_prompt, steps, guidance)
    release_t2i(run_dir, heldout_dir, features=features,
                fd_features=None if fd_features.lower() == "none" else fd_features, n_per_prompt=n_per_prompt,
                opts=opts, seed=seed, device=device_name(device), progress=click.echo)
    _release_epilogue(run_dir, run_config(run_dir).label, device)
