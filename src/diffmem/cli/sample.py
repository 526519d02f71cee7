"""`diffmem sample`: images from a trained run."""

from __future__ import annotations

import math
from pathlib import Path

import click

from diffmem.api import sample as api_sample
from diffmem.cli.sections import SectionedCommand
from diffmem.diffusion.sample_options import SAMPLE_BATCH, SOLVERS, SampleOptions
from diffmem.errors import DiffmemError, as_diffmem_error
from diffmem.utils.flags import defaults_of, device_name
from diffmem.utils.outdir import check_output
from diffmem.utils.precision import PRECISIONS

SAMPLE, API = SampleOptions(), defaults_of(api_sample)  # the sampler's defaults; n and seed of diffmem.sample


# --help headings: each starts at the named parameter (diffmem.cli.sections)
SAMPLE_HELP_SECTIONS = {"run_dir": "What to sample", "steps": "Sampler (EDM, Karras et al. 2022, Algorithm 2)",
                        "class_label": "Model", "batch": "Output and hardware"}


@click.command(cls=SectionedCommand, sections=SAMPLE_HELP_SECTIONS)
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help="A run directory.")
@click.option("--n", "n", type=int, default=API["n"], show_default=True, help="Number of images.")
@click.option("--out", "out", required=True, help="A folder of PNGs, or a path ending in .npz.")
@click.option("--seed", type=int, default=API["seed"], show_default=True, help="Sample i depends only on (seed, i).")
@click.option("--steps", type=int, default=SAMPLE.steps, show_default=True)
@click.option("--solver", type=click.Choice(SOLVERS), default=SAMPLE.solver, show_default=True)
@click.option("--churn", type=float, default=SAMPLE.s_churn, show_default=True, help="EDM S_churn (stochasticity).")
@click.option("--s-tmin", type=float, default=SAMPLE.s_tmin, show_default=True)
@click.option("--s-tmax", type=float, default=SAMPLE.s_tmax)
@click.option("--s-noise", type=float, default=SAMPLE.s_noise, show_default=True)
@click.option("--precision", type=click.Choice(PRECISIONS), default=SAMPLE.precision, show_default=True,
              help="The network's forward pass: float32, or bfloat16 autocast (about twice as fast on CPUs with "
                   "AMX and on GPUs; the images differ slightly).")
@click.option("--class", "class_label", type=int, default=None, help="Class of every sample (conditional runs).")
@click.option("--no-ema", is_flag=True, help="Use the raw weights instead of the EMA weights.")
@click.option("--checkpoint", default=API["checkpoint"], show_default=True,
              help="Which checkpoint: latest, release (the guard's certified one, release.json) or step-N.")
@click.option("--batch", type=int, default=SAMPLE_BATCH, show_default=True)
@click.option("--grid/--no-grid", default=True, show_default=True, help="Also write a grid PNG beside --out.")
@click.option("--overwrite", is_flag=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--quiet", is_flag=True)
def sample(run_dir, n, out, seed, steps, solver, churn, s_tmin, s_tmax, s_noise, precision, class_label, no_ema,
           checkpoint, batch, grid, overwrite, device, quiet) -> None:
    """Sample images from a run (EDM Heun, 18 steps, EMA weights by default)."""
    import numpy as np

    from diffmem.data.io import save_grid, save_images
    from diffmem.generate import check_sample_count, generate
    from diffmem.lock import is_main_process, locked
    from diffmem.train.checkpoint import load_denoiser
    from diffmem.utils.atomic import clean_leftovers
    from diffmem.utils.distributed import gather_in_order, init_world, local_slice

    _check_flags(n, steps, batch, churn, s_tmin, s_tmax, s_noise)
    dev = device_name(device)
    out_path = Path(out)
    grid_path = out_path.with_name(out_path.stem + "_grid.png") if out.endswith(".npz") else out_path.with_name(
        out_path.name + "_grid.png")
    net, cfg, meta = load_denoiser(run_dir, ema=not no_ema, device=dev, checkpoint=checkpoint)
    check_sample_count(n, meta)  # before the labels of n samples are allocated
    labels = np.full(n, class_label, dtype=np.int64) if class_label is not None else None
    opts = SampleOptions(steps=steps, solver=solver, s_churn=churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise,
                         precision=precision)
    if checkpoint == "release":
        _warn_uncertified(run_dir, out, opts, ema=not no_ema)
    if out_path.exists() and not overwrite and (out_path.is_file() or any(out_path.iterdir())):
        raise DiffmemError(f"--out {out} exists; pass --overwrite or choose another path")
    if not out.endswith(".npz") and out_path.is_file():
        raise DiffmemError(f"--out {out} is a file; give a folder for PNGs, or a path ending in .npz")
    check_output(out_path, "--out", overwrite=True, folder_ok=not out.endswith(".npz"))  # writable, before sampling
    world, dev = init_world(dev)
    with locked(out_path, enabled=world.main and is_main_process()):
        if grid and world.main:
            clean_leftovers(grid_path)  # what a killed writer of the grid left; the lock of --out covers it
        part = local_slice(n, world)  # each process samples a contiguous range of indices; gathered in order
        local = generate(net.to(dev), cfg, meta, part.stop - part.start, seed=seed, batch=batch, opts=opts,
                         labels=None if labels is None else labels[part], start=part.start, device=dev,
                         progress=not quiet and world.main) if part.stop > part.start else None
        images = gather_in_order(local if local is not None else np.zeros(
            (0, meta["resolution"], meta["resolution"], meta["channels"]), np.uint8), world)
        if not world.main:
            return
        if labels is None and cfg.network.num_classes > 0:
            labels = np.arange(n) % cfg.network.num_classes
        try:
            save_images(images, out_path, overwrite=overwrite, labels=labels)
            if grid:
                save_grid(images[:256], grid_path, scale=max(1, 64 // images.shape[1]))
        except OSError as err:  # a disk that filled up while sampling: one line naming the output
            raise as_diffmem_error(err, out_path) from None
    click.echo(f"wrote {n} samples of step {meta.get('step')} ({checkpoint}) to {out_path}"
               + (f" and a grid to {grid_path}" if grid else ""))


def _warn_uncertified(run_dir: str, out: str, opts: SampleOptions, ema: bool) -> None:
    """One warning line when samples of the release are drawn otherwise than the guard drew those it certified."""
    from diffmem.release import read_release, uncertified_sampling

    diff = uncertified_sampling(read_release(run_dir).get("settings") or {}, opts, ema)
    if diff:
        click.echo(f"warning: the certificate covers samples drawn as the guard drew them, and these differ "
                   f"({'; '.join(diff)}); audit them: diffmem audit --samples {out} --run {run_dir} --out AUDIT",
                   err=True)


def _check_flags(n: int, steps: int, batch: int, churn: float, s_tmin: float, s_tmax: float, s_noise: float) -> None:
    """Refuse flags that cannot sample, before the run is loaded."""
    for flag, value in (("--n", n), ("--steps", steps), ("--batch", batch)):
        if value < 1:
            raise DiffmemError(f"{flag} must be a positive integer, got {value}")
    if not (math.isfinite(churn) and churn >= 0):
        raise DiffmemError(f"--churn must be a finite number >= 0, got {churn}")
    if not (math.isfinite(s_noise) and s_noise > 0):
        raise DiffmemError(f"--s-noise must be a positive number, got {s_noise}")
    if math.isnan(s_tmin) or math.isnan(s_tmax) or not 0 <= s_tmin <= s_tmax:
        raise DiffmemError(f"--s-tmin and --s-tmax must satisfy 0 <= s_tmin <= s_tmax, got {s_tmin}, {s_tmax}")
