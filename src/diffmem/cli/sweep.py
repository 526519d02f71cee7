"""`diffmem sweep` and `diffmem compare`: the memorization/quality trade-off, and choosing sigma_n."""

from __future__ import annotations

import click

from diffmem.cli.configs import (DATA, EVAL, METHOD, NETWORK, OPTIM, SWEEP, SWEEP_VALUES, eval_options_from_flags,
                                  sweep_config_from_flags)
from diffmem.cli.sections import SectionedCommand
from diffmem.config import PRESETS
from diffmem.diffusion.weighting import WEIGHTINGS
from diffmem.errors import DiffmemError
from diffmem.utils.flags import check_jobs, device_name, joined

FEATURES_HELP = ("Memorization feature spaces, comma-separated; the first defines the copy fraction: pixels, "
                 "digits-net[:RES], dinov2[:ID_OR_DIR], clip[:ID_OR_DIR], inception[:WEIGHTS], torchscript:PATH.")


def _eval_flags(f):
    """The measurement flags shared by sweep and compare."""
    for opt in reversed([
        click.option("--n-samples", type=int, default=EVAL.n_samples, show_default=True, help="Samples per run (same seeds for all)."),
        click.option("--sample-steps", type=int, default=EVAL.sample_steps, show_default=True, help="EDM Heun sampler steps."),
        click.option("--sample-seed", type=int, default=EVAL.sample_seed, show_default=True),
        click.option("--features", default=joined(EVAL.features), show_default=True, help=FEATURES_HELP),
        click.option("--quality-features", default=None,
                     help="Feature space of the Frechet distance [default: digits-net for builtin:digits, else "
                          "inception (FID)]."),
        click.option("--thresholds", default=None,
                     help="Fixed cosine thresholds reported [default: 0.9,0.95,0.98,0.99 for pixels, "
                          "0.85,...,0.95 otherwise]."),
        click.option("--copy-threshold", type=float, default=None,
                     help="A sample is a copy at this similarity or above [default: calibrated, the 99th percentile "
                          "of held-out images' nearest-training similarity]."),
        click.option("--tolerance", type=float, default=SWEEP.tolerance, show_default=True,
                     help="Rule of thumb: quality within this fraction of the baseline's."),
        click.option("--no-pictures", is_flag=True, help="Skip the audit pictures (histogram, neighbours)."),
        click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1, or auto."),
        click.option("--cache-dir", default=None, help="Feature cache [default: $DIFFMEM_CACHE or ~/.cache/diffmem]."),
        click.option("--quiet", is_flag=True, help="No progress bars."),
    ]):
        f = opt(f)
    return f


# --help headings: each starts at the named parameter (diffmem.cli.sections)
SWEEP_HELP_SECTIONS = {"data_spec": "Data", "methods": "Methods and seeds", "preset": "Network",
                       "steps": "Optimisation", "checkpoint_every": "Checkpoints, copy monitor and parallel runs",
                       "n_samples": "Evaluation", "device": "Hardware and output"}


@click.command(cls=SectionedCommand, sections=SWEEP_HELP_SECTIONS)
@click.option("--data", "data_spec", default=DATA.spec, show_default=True,
              help="Images: a folder, a .zip, a .npz with 'images', or builtin:digits.")
@click.option("--resolution", type=int, default=None, help="Image size (builtin:digits default 16).")
@click.option("--resize", is_flag=True, help="Resize (center-crop + Lanczos) images to --resolution.")
@click.option("--subset", "subsets", default=None,
              help="Training-set size(s), comma-separated, e.g. 300 or 100,300,1000 [default: all images].")
@click.option("--subset-seed", type=int, default=DATA.subset_seed, show_default=True)
@click.option("--xflip", is_flag=True, help="Random horizontal flips.")
@click.option("--methods", default=joined(SWEEP.methods), show_default=True,
              help="Comma-separated: edm (baseline), ambient (Algorithm 1), masking, noisy-only.")
@click.option("--sigma-n", "sigma_ns", default=None,
              help="Algorithm 1 (and noisy-only) thresholds, comma-separated, e.g. 0.2,0.5,1,2,5 [default: a grid "
                   "spanning the data's commitment scale, from diffmem.theory].")
@click.option("--mask-p", "mask_ps", default=joined(SWEEP_VALUES["mask_p"]), show_default=True, help="masking: erase probabilities, comma-separated.")
@click.option("--mask-delta", type=float, default=METHOD.mask_delta, show_default=True)
@click.option("--ambient-weight", type=click.Choice(list(WEIGHTINGS)), default=METHOD.ambient_weight, show_default=True,
              help="Weight of the high-noise branch: plain (lambda), compensated (lambda on D's error; "
                   "infinite-variance loss), capped (compensated up to --weight-cap times plain). docs/method.md.")
@click.option("--weight-cap", type=float, default=METHOD.weight_cap, show_default=True,
              help="--ambient-weight capped: the largest gain over plain.")
@click.option("--seeds", default=joined(SWEEP.seeds), show_default=True, help="Training seeds, comma-separated.")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=NETWORK.preset, show_default=True)
@click.option("--channels", default=None, help="Override: widths per level, e.g. 32,64,64.")
@click.option("--layers-per-block", type=int, default=None)
@click.option("--attn-resolutions", default=None, help="Override: resolutions with attention (empty: none).")
@click.option("--dropout", type=float, default=None)
@click.option("--steps", type=int, default=None, help=f"Training steps per run (default {OPTIM.steps}).")
@click.option("--kimg", type=float, default=None, help="Training length in thousands of images instead of --steps.")
@click.option("--batch", type=int, default=OPTIM.batch, show_default=True)
@click.option("--lr", type=float, default=OPTIM.lr, show_default=True)
@click.option("--ema", "ema_halflife", type=float, default=OPTIM.ema_halflife_kimg, show_default=True,
              help="EMA half-life in kimg.")
@click.option("--ema-decay", type=float, default=OPTIM.ema_decay, help="Fixed per-step EMA decay instead of --ema.")
@click.option("--checkpoint-every", type=int, default=None, help="[default: a quarter of the steps]")
@click.option("--monitor-every", type=int, default=SWEEP.monitor_every, show_default=True,
              help="Log copy statistics of EMA samples every K steps (0: off); draws monitor.png.")
@click.option("--monitor-samples", type=int, default=SWEEP.monitor_samples, show_default=True)
@click.option("--jobs", type=int, default=1, show_default=True,
              help="Points trained at once, each in its own process (and GPU, when several).")
@_eval_flags
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Sweep folder (re-running resumes).")
def sweep(data_spec, resolution, resize, subsets, subset_seed, xflip, methods, sigma_ns, mask_ps, mask_delta,
          ambient_weight, weight_cap, seeds, preset, channels, layers_per_block, attn_resolutions, dropout, steps, kimg, batch, lr,
          ema_halflife, ema_decay, checkpoint_every, monitor_every, monitor_samples, jobs, n_samples, sample_steps,
          sample_seed, features, quality_features, thresholds, copy_threshold, tolerance, no_pictures, device,
          cache_dir, quiet, out) -> None:
    """Train, sample, audit and measure every (method, sigma_n, subset, seed) with one budget; write
    results.csv/json, the Pareto plot and the rule of thumb for sigma_n."""
    from diffmem.report.sweep import write_sweep_report
    from diffmem.sweep.runner import run_sweep

    check_jobs(jobs)
    opts = eval_options_from_flags(n_samples=n_samples, sample_steps=sample_steps, sample_seed=sample_seed,
                                   features=features, quality_features=quality_features, thresholds=thresholds,
                                   copy_threshold=copy_threshold, no_pictures=no_pictures)
    sc = sweep_config_from_flags(
        data_spec=data_spec, resolution=resolution, resize=resize, subsets=subsets, subset_seed=subset_seed,
        xflip=xflip, methods=methods, sigma_ns=sigma_ns, mask_ps=mask_ps, mask_delta=mask_delta,
        ambient_weight=ambient_weight, weight_cap=weight_cap, seeds=seeds, preset=preset, channels=channels,
        layers_per_block=layers_per_block, attn_resolutions=attn_resolutions, dropout=dropout, steps=steps, kimg=kimg,
        batch=batch, lr=lr, ema_halflife=ema_halflife, ema_decay=ema_decay, checkpoint_every=checkpoint_every,
        monitor_every=monitor_every, monitor_samples=monitor_samples, tolerance=tolerance, eval=opts)
    if subsets is None:
        click.echo("note: without --subset every image is trained on, so there are no held-out images: copies are "
                   "counted at a fixed threshold instead of the calibrated one, and quality is measured against the "
                   "training images. Pass --subset N to keep a held-out reference.", err=True)
    from diffmem.lock import is_main_process, locked

    dev = device_name(device)
    with locked(out, enabled=is_main_process()):  # one sweep per folder (each run inside has its own lock too)
        result = run_sweep(sc, out, device=dev, jobs=jobs, cache_dir=cache_dir, progress=not quiet, echo=click.echo)
        result.files["report_md"], result.files["report"] = write_sweep_report(result.rows, out, dict(result.files),
                                                                               result.choices)
    click.echo("")
    click.echo(result.table.rstrip())
    click.echo("")
    click.echo("wrote " + ", ".join(str(p) for p in result.files.values()))


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=False))
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Write results.csv/json/md, summary.txt and pareto.png here (default: print only).")
@_eval_flags
def compare(paths, out, n_samples, sample_steps, sample_seed, features, quality_features, thresholds, copy_threshold,
            tolerance, no_pictures, device, cache_dir, quiet) -> None:
    """The sweep's table, Pareto plot and rule of thumb from existing sweeps, runs or audit folders.

    Runs that finished but were never measured are measured with the flags given (and the result stored
    in the run); measured runs keep their stored result.
    """
    from diffmem.sweep.compare import audit_warnings, collect_rows
    from diffmem.sweep.pareto import choose_sigma_n, rule_of_thumb_text
    from diffmem.sweep.results import format_table
    from diffmem.report.sweep import write_sweep_report
    from diffmem.sweep.runner import write_outputs
    from diffmem.sweep.spec import validate_eval
    from diffmem.utils.outdir import check_output

    if not tolerance >= 0:
        raise DiffmemError(f"--tolerance must be >= 0, got {tolerance}")
    opts = eval_options_from_flags(n_samples=n_samples, sample_steps=sample_steps, sample_seed=sample_seed,
                                   features=features, quality_features=quality_features, thresholds=thresholds,
                                   copy_threshold=copy_threshold, no_pictures=no_pictures)
    validate_eval(opts)  # before any run is measured, as is --out (under a file, or not writable)
    if out is not None:
        check_output(out, "--out", overwrite=True, folder_ok=True)
    rows = collect_rows(paths, opts, device=device_name(device), cache_dir=cache_dir, progress=not quiet,
                        echo=click.echo)
    click.echo(format_table(rows))
    click.echo("")
    click.echo(rule_of_thumb_text(choose_sigma_n(rows, tolerance)))
    for w in audit_warnings(paths):
        click.echo(f"warning: {w}", err=True)
    if out is not None:
        from diffmem.sweep.compare import expand_paths

        runs = {p.name: p for kind, p in expand_paths(paths) if kind == "run"}
        files = write_outputs(rows, out, tolerance, monitor=runs)
        files["report_md"], files["report"] = write_sweep_report(rows, out, dict(files), choose_sigma_n(rows, tolerance))
        click.echo("wrote " + ", ".join(str(p) for p in files.values()))
