"""`diffmem train`: flags -> TrainConfig (diffmem.cli.configs) -> diffmem.train.loop.train."""

from __future__ import annotations

import click

from diffmem.cli.configs import (DATA, METHOD, MONITOR_SAMPLES, NETWORK, OPTIM, SAMPLE_PRECISION_HELP, SWEEP, TRAIN,
                                  check_monitor_flags,
                                  train_config_from_flags)
from diffmem.cli.sections import SectionedCommand
from diffmem.config import PRESETS
from diffmem.diffusion.methods import METHOD_CLASSES
from diffmem.diffusion.weighting import WEIGHTINGS
from diffmem.errors import DiffmemError
from diffmem.guard import GuardConfig
from diffmem.utils.flags import device_name
from diffmem.utils.precision import PRECISIONS

GUARD = GuardConfig()


def _watch(cfg, out, dev, gc: GuardConfig | None, monitor_every: int, monitor_samples: int, monitor_features: str,
           quiet: bool = False):
    """(the guard or the copy monitor, or None, and how often the loop calls it). The guard prints a line per
    check above the progress bar unless `quiet`."""
    if gc is not None:
        from tqdm.auto import tqdm

        from diffmem.guard import make_guard

        echo = None if quiet else (lambda line: tqdm.write(f"[guard] {line}"))
        return make_guard(cfg, gc, out, device=dev, echo=echo), cfg.checkpoint_every
    if monitor_every > 0:
        from diffmem.monitor import make_monitor

        return make_monitor(cfg, n_samples=monitor_samples, features=monitor_features, device=dev), monitor_every
    return None, 0


def _guard_epilogue(run, method: str, dev) -> None:
    """After a guarded run: its release in one sentence, what the checks cost, and the release's page."""
    from diffmem.monitor import check_cost
    from diffmem.release import read_release, release_sentence
    from diffmem.report.release import write_release_report

    click.echo(release_sentence(read_release(run), method))
    spent, trained = check_cost(run)
    click.echo(f"the guard's checks took {spent:.0f} s, {spent / max(trained, 1e-9):.0%} of the training time "
               f"({trained:.0f} s); fewer --guard-samples or a larger --checkpoint-every make them cheaper")
    try:
        shown = f" (to show: {write_release_report(run, device=dev)})"
    except DiffmemError as err:  # the run and its certificate are complete; only the page is missing
        click.echo(f"warning: the release page was not written ({err}); write it later with `diffmem release "
                   f"--run {run} --report-only`", err=True)
        shown = ""
    click.echo(f"certificate: {run / 'release.json'}{shown}; sample it with `diffmem sample --run {run} "
               "--checkpoint release`")


def keep_checkpoints_from_flag(value: str) -> int:
    """--keep-checkpoints: 'all' -> 0 (keep every one), else a positive count."""
    if str(value).strip().lower() == "all":
        return 0
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise DiffmemError(f"--keep-checkpoints must be a positive number or 'all', got {value!r}")
    return n


# --help headings: each starts at the named parameter (diffmem.cli.sections)
TRAIN_HELP_SECTIONS = {"data_spec": "Data", "method": "Method (docs/method.md)", "preset": "Network",
                       "steps": "Optimisation", "seed": "Run folder, seed and checkpoints",
                       "device": "Hardware and output", "monitor_every": "Copy monitor",
                       "guard": "Guard and release (docs/method.md, \"The release and safe quality\")"}


@click.command(cls=SectionedCommand, sections=TRAIN_HELP_SECTIONS)
@click.option("--data", "data_spec", default=DATA.spec, show_default=True,
              help="Images: a folder (png/jpg, recursive), a .zip, a .npz with 'images', or builtin:digits.")
@click.option("--resolution", type=int, default=None, help="Image size (builtin:digits default 16).")
@click.option("--resize", is_flag=True, help="Resize (center-crop + Lanczos) images to --resolution.")
@click.option("--subset", type=int, default=None, help="Train on a seeded random subset of N images.")
@click.option("--subset-seed", type=int, default=DATA.subset_seed, show_default=True)
@click.option("--cond", is_flag=True, help="Class-conditional training (needs labels).")
@click.option("--xflip", is_flag=True, help="Random horizontal flips (applied to the image and its noisy copy).")
@click.option("--method", type=click.Choice(list(METHOD_CLASSES)), default=METHOD.name, show_default=True)
@click.option("--sigma-n", type=float, default=METHOD.sigma_n, show_default=True,
              help="Algorithm 1 threshold noise level on the [-1,1] data scale (ambient, noisy-only).")
@click.option("--ambient-weight", type=click.Choice(list(WEIGHTINGS)), default=METHOD.ambient_weight, show_default=True,
              help="Weight of the high-noise branch: plain (lambda), compensated (lambda on D's error; "
                   "infinite-variance loss), capped (compensated up to --weight-cap times plain). docs/method.md.")
@click.option("--weight-cap", type=float, default=METHOD.weight_cap, show_default=True,
              help="--ambient-weight capped: the largest gain over plain.")
@click.option("--mask-p", type=float, default=METHOD.mask_p, help="masking: share of pixels erased in each fixed mask.")
@click.option("--mask-delta", type=float, default=METHOD.mask_delta, show_default=True, help="masking: extra erase probability.")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=NETWORK.preset, show_default=True)
@click.option("--channels", default=None, help="Override: widths per level, e.g. 32,64,64.")
@click.option("--layers-per-block", type=int, default=None)
@click.option("--attn-resolutions", default=None, help="Override: resolutions with attention, e.g. 16 (empty: none).")
@click.option("--dropout", type=float, default=None)
@click.option("--steps", type=int, default=None, help=f"Training steps (default {OPTIM.steps}).")
@click.option("--kimg", type=float, default=None, help="Training length in thousands of images instead of --steps.")
@click.option("--batch", type=int, default=OPTIM.batch, show_default=True)
@click.option("--lr", type=float, default=OPTIM.lr, show_default=True)
@click.option("--weight-decay", type=float, default=OPTIM.weight_decay, show_default=True)
@click.option("--warmup-steps", type=int, default=OPTIM.warmup_steps, show_default=True)
@click.option("--ema", "ema_halflife", type=float, default=OPTIM.ema_halflife_kimg, show_default=True,
              help="EMA half-life in kimg.")
@click.option("--ema-decay", type=float, default=OPTIM.ema_decay, help="Fixed per-step EMA decay instead of --ema.")
@click.option("--seed", type=int, default=TRAIN.seed, show_default=True)
@click.option("--checkpoint-every", type=int, default=TRAIN.checkpoint_every, show_default=True)
@click.option("--log-every", type=int, default=TRAIN.log_every, show_default=True)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--resume", is_flag=True, help="Require an existing run to resume (re-running resumes anyway).")
@click.option("--overwrite", is_flag=True, help="Replace a finished or different run in --out.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1, or auto.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="bf16: bfloat16 autocast for the forward pass (GPUs); weights stay fp32.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the network (GPUs; slow first steps).")
@click.option("--channels-last", is_flag=True, help="channels-last memory format (GPUs).")
@click.option("--monitor-every", type=int, default=SWEEP.monitor_every, show_default=True,
              help="Every K steps, sample the EMA model and log how many samples copy the training set "
                   "(0: off); draws monitor.png in --out.")
@click.option("--monitor-samples", type=int, default=MONITOR_SAMPLES, show_default=True, help="Samples per monitor check.")
@click.option("--monitor-features", default="pixels", show_default=True,
              help="Feature space of the monitor's nearest-neighbour search (pixels needs no download).")
@click.option("--guard", is_flag=True,
              help="At every checkpoint, test copies against held-out images and measure quality; keep the best "
                   "safe checkpoint, write release.json, stop once copying has set in (docs/method.md).")
@click.option("--guard-samples", type=int, default=GUARD.n_samples, show_default=True, help="Samples per check.")
@click.option("--guard-features", default=GUARD.features, show_default=True,
              help="Copy features: pixels, dinov2:DIR, torchscript:FILE (e.g. SSCD), ...")
@click.option("--guard-quality", default=None,
              help="Quality features: digits-net, pixels, inception:FILE, dinov2:DIR, classifier:SPEC "
                   "[default: digits-net for builtin:digits, else pixels].")
@click.option("--guard-metric", type=click.Choice(["kid", "fd"]), default=GUARD.quality_metric, show_default=True,
              help="Quality metric: KID (unbiased) or Frechet distance.")
@click.option("--guard-level", type=float, default=GUARD.level, show_default=True,
              help="Level of the one-sided safety test.")
@click.option("--guard-patience", type=int, default=GUARD.patience, show_default=True,
              help="Stop after this many unsafe checks in a row (0: never stop).")
@click.option("--guard-every", type=int, default=GUARD.every, show_default=True,
              help="Check every k-th checkpoint, and every one once a check hints at copying.")
@click.option("--guard-sample-precision", type=click.Choice(PRECISIONS), default=GUARD.sample_precision,
              show_default=True, help=SAMPLE_PRECISION_HELP)
@click.option("--keep-checkpoints", default="2", show_default=True,
              help="Newest checkpoints kept on disk, or 'all' (needed by `diffmem release`); the guard also keeps "
                   "its released one.")
def train(data_spec, resolution, resize, subset, subset_seed, cond, xflip, method, sigma_n, ambient_weight, weight_cap, mask_p,
          mask_delta, preset, channels, layers_per_block, attn_resolutions, dropout, steps, kimg, batch, lr,
          weight_decay, warmup_steps, ema_halflife, ema_decay, seed, checkpoint_every, log_every, out, resume,
          overwrite, device, quiet, precision, compile_, channels_last, monitor_every, monitor_samples, monitor_features,
          guard, guard_samples, guard_features, guard_quality, guard_metric, guard_level, guard_patience,
          guard_every, guard_sample_precision, keep_checkpoints) -> None:
    """Train a pixel-space diffusion model: the EDM baseline or Algorithm 1 (--method ambient)."""
    from diffmem.train.loop import train as run_train

    cfg = train_config_from_flags(
        data_spec=data_spec, resolution=resolution, resize=resize, subset=subset, subset_seed=subset_seed, cond=cond,
        xflip=xflip, method=method, sigma_n=sigma_n, ambient_weight=ambient_weight, weight_cap=weight_cap,
        mask_p=mask_p, mask_delta=mask_delta, preset=preset, channels=channels, layers_per_block=layers_per_block,
        attn_resolutions=attn_resolutions, dropout=dropout, steps=steps, kimg=kimg, batch=batch, lr=lr,
        weight_decay=weight_decay, warmup_steps=warmup_steps, ema_halflife=ema_halflife, ema_decay=ema_decay,
        seed=seed, checkpoint_every=checkpoint_every, log_every=log_every)
    check_monitor_flags(monitor_every, monitor_samples)
    keep = keep_checkpoints_from_flag(keep_checkpoints)
    if guard and monitor_every > 0:
        raise DiffmemError("--guard checks at every --checkpoint-every already; drop --monitor-every")
    from diffmem.utils.distributed import init_world

    world, dev = init_world(device_name(device))  # torchrun: one process per device, the batch split among them
    gc = GuardConfig(n_samples=guard_samples, features=guard_features, quality_features=guard_quality,
                     quality_metric=guard_metric, level=guard_level, patience=guard_patience,
                     every=guard_every, sample_precision=guard_sample_precision) if guard else None
    monitor, monitor_every = _watch(cfg, out, dev, gc, monitor_every, monitor_samples, monitor_features, quiet)
    run = run_train(cfg, out, device=dev, overwrite=overwrite, resume=resume, progress=not quiet,
                    monitor=monitor, monitor_every=monitor_every, world=world, precision=precision,
                    compile=compile_, channels_last=channels_last, keep_checkpoints=keep)
    if not world.main:
        return
    from diffmem.train.rundir import DONE, read_json

    done = read_json(run / DONE) if (run / DONE).is_file() else {}
    if done.get("stopped"):
        click.echo(f"stopped {cfg.method.name} at step {done['step']} of {cfg.optim.steps}: {done['stopped']}")
    click.echo(f"trained {cfg.method.name} for {done.get('step', cfg.optim.steps)} steps; run directory: {run}")
    if guard:
        _guard_epilogue(run, cfg.method.name, dev)
    elif monitor is not None:
        from diffmem.monitor import monitor_records, plot_monitor

        records = monitor_records(run)
        if records:
            last = records[-1]["monitor"]
            cal = (last.get("fraction_above_calibrated") or {}).get("heldout_p99")
            line = "  ".join(f">={k}: {v:.3f}" for k, v in last["fraction_above"].items())
            click.echo(f"copy monitor at step {records[-1]['step']} ({last['n_samples']} samples, {last['features']}): "
                       f"{line}" + (f"  >= held-out p99: {cal:.3f}" if cal is not None else ""))
            click.echo(f"copy-rate curve: {plot_monitor(run)}")
