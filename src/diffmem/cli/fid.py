"""`diffmem fid`: Frechet distance, KID and precision/recall of samples against reference images."""

from __future__ import annotations

import contextlib
import json
import os

import click

from diffmem.api import fid as api_fid
from diffmem.cli.audit import CHECKPOINT_SAMPLES, FEATURES_HELP, cache_option, check_sample_source, checkpoint_samples
from diffmem.errors import DiffmemError, require_finite
from diffmem.lock import is_main_process, locked
from diffmem.utils.atomic import atomic_path, write_text_atomic
from diffmem.utils.flags import defaults_of, device_name
from diffmem.utils.outdir import check_output

FID = defaults_of(api_fid)  # the defaults of diffmem.fid (features, KID subsets, k, seed, batch)


@click.command()
@click.option("--samples", default=None, help="Generated images: a folder, .zip or .npz (or --run with --checkpoint).")
@click.option("--run", "run_dir", default=None, type=click.Path(file_okay=False),
              help="With --checkpoint and no --samples: a training run to sample.")
@click.option("--checkpoint", default=None, help="Sample this checkpoint of --run: release, latest or step-N.")
@click.option("--n-samples", type=int, default=CHECKPOINT_SAMPLES, show_default=True,
              help="Samples drawn with --checkpoint (seed 0).")
@click.option("--ref", "ref_spec", required=True,
              help="Reference: images (folder, .zip, .npz, builtin:digits) or a statistics .npz from --save-stats.")
@click.option("--features", default=FID["features"], show_default=True,
              help=FEATURES_HELP + " Only inception gives FID; others give FD_<name>.")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Also write the JSON to this file.")
@click.option("--save-stats", default=None, type=click.Path(dir_okay=False),
              help="Write the reference statistics (mu, sigma, n, features) to this .npz.")
@click.option("--kid-subsets", type=int, default=FID["kid_subsets"], show_default=True)
@click.option("--kid-subset-size", type=int, default=FID["kid_subset_size"], show_default=True)
@click.option("--pr-k", type=int, default=FID["pr_k"], show_default=True,
              help="k of the k-NN manifolds (precision/recall).")
@click.option("--seed", type=int, default=FID["seed"], show_default=True, help="Seed of the KID subsets.")
@click.option("--resolution", type=int, default=None, help="Load --ref images at this size (see --resize).")
@click.option("--resize", is_flag=True, help="Center-crop and resize --ref images to --resolution.")
@click.option("--image-size", type=int, default=None, help="Model input size for dinov2/clip/torchscript.")
@click.option("--batch", type=int, default=FID["batch_size"], show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--cache-dir", default=None, help="Feature cache folder [default: $DIFFMEM_CACHE or ~/.cache/diffmem].")
@click.option("--no-cache", is_flag=True, help="Do not read or write cached features.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out or --save-stats file.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the whole report (FD, KID, precision/recall, counts, warnings) as JSON instead of one line.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def fid(samples, run_dir, checkpoint, n_samples, ref_spec, features, out, save_stats, kid_subsets, kid_subset_size,
        pr_k, seed, resolution, resize, image_size, batch, device, cache_dir, no_cache, overwrite, as_json,
        quiet) -> None:
    """Print the Frechet distance as one line, `FID: 12.3456` (FID with inception features, else `FD_<features>:
    ...`); KID, precision/recall and warnings go to stderr, the whole report to --out and, with --json, to stdout.

    The FID follows pytorch-fid's Inception preprocessing (bilinear resize to 299x299 without antialiasing,
    docs/method.md "Metrics"), so it compares with pytorch-fid's numbers, not with clean-fid's default (clean)
    mode, which resizes with an antialiasing filter.
    """
    from diffmem.data.datasets import load_images
    from diffmem.evaluate.features import get_extractor
    from diffmem.evaluate.fid import check_statistics_family, is_statistics_file, load_statistics, run_fid

    if samples is None and checkpoint is None and save_stats is None:
        raise DiffmemError("give --samples (or --run with --checkpoint) to compare, or --save-stats to only write "
                           "reference statistics")
    if samples is not None or checkpoint is not None or run_dir is not None:
        check_sample_source(samples, run_dir, checkpoint, n_samples)
    _check_flags(samples or checkpoint, ref_spec, out, save_stats, overwrite, kid_subsets, kid_subset_size, pr_k,
                 batch, resolution, image_size)
    dev = device_name(device)
    if is_statistics_file(ref_spec):
        ref = str(ref_spec)
        stats = load_statistics(ref)
        require_finite(stats["mu"], f"statistics file {ref} (mu)")
        require_finite(stats["sigma"], f"statistics file {ref} (sigma)")
        check_statistics_family(stats, features, ref)
        stats_features = stats.get("features")
        if features == "digits-net" and stats_features and stats_features.startswith("digits-net:"):
            features = stats_features  # the statistics say at which resolution they were made
        res = None
    else:
        ref = load_images(ref_spec, resolution, resize=resize)
        res = ref.resolution
    extractor = get_extractor(features, dev, image_size=image_size, resolution=res)
    sample_set = load_images(samples) if samples is not None else None
    if checkpoint is not None:
        sample_set = checkpoint_samples(run_dir, checkpoint, n_samples, dev, progress=not quiet)
    with contextlib.ExitStack() as stack:  # one process per output; each written whole or not at all
        for path in (out, save_stats):
            if path is not None:
                stack.enter_context(locked(path, enabled=is_main_process()))
        stats_tmp = stack.enter_context(atomic_path(save_stats)) if save_stats is not None else None
        report = run_fid(
            sample_set, ref, extractor, device=dev, batch_size=batch, cache_dir=cache_option(cache_dir, no_cache),
            save_stats=stats_tmp, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, pr_k=pr_k, seed=seed,
            progress=not quiet,
        )
        if report is not None and out is not None:
            write_text_atomic(out, json.dumps(report, indent=2) + "\n")
    if save_stats is not None:
        click.echo(f"wrote reference statistics ({extractor.name}) to {save_stats}", err=True)
    if report is not None:
        _print_report(report, as_json)


def _print_report(report: dict, as_json: bool) -> None:
    """The number on stdout (or, with --json, the whole report); details and warnings on stderr."""
    click.echo(json.dumps(report, indent=2) if as_json else f"{report['fd_name']}: {report['fd']:.4f}")
    n, n_ref = report["n_samples"], report["n_ref"]
    counts = f"{n} samples vs {n_ref if n_ref is not None else '?'} reference images"
    click.echo(f"{report['fd_name']} of {counts} ({report['features']})", err=True)
    if report["kid"]:
        k = report["kid"]
        click.echo(f"KID = {k['mean']:.6f} +- {k['std']:.6f} ({k['subsets']} subsets of {k['subset_size']}; {counts})",
                   err=True)
    if report["precision_recall"]:
        pr = report["precision_recall"]
        click.echo(f"precision = {pr['precision']:.4f}, recall = {pr['recall']:.4f} (k={pr['k']}; {counts})", err=True)
    for w in report["warnings"]:
        click.echo(f"warning: {w}", err=True)


def _check_flags(samples: str | None, ref_spec: str, out: str | None, save_stats: str | None, overwrite: bool,
                 kid_subsets: int, kid_subset_size: int, pr_k: int, batch: int, resolution: int | None,
                 image_size: int | None) -> None:
    """Refuse bad flags and unwritable or existing outputs before any image is loaded (`samples`: --samples or
    --checkpoint, whichever gives the samples)."""
    if samples is None and save_stats is None:
        raise DiffmemError("give --samples (or --run with --checkpoint) to compare, or --save-stats to only write "
                           "reference statistics")
    if kid_subsets < 1 or kid_subset_size < 2 or pr_k < 1:
        raise DiffmemError("--kid-subsets must be >= 1, --kid-subset-size >= 2 and --pr-k >= 1")
    for flag, value in (("--batch", batch), ("--resolution", resolution), ("--image-size", image_size)):
        if value is not None and value < 1:
            raise DiffmemError(f"{flag} must be a positive integer, got {value}")
    inputs = {os.path.abspath(p) for p in (samples, ref_spec) if p is not None}
    if out is not None and save_stats is not None and os.path.abspath(out) == os.path.abspath(save_stats):
        raise DiffmemError("--out and --save-stats name the same file; give two paths")
    for flag, path in (("--out", out), ("--save-stats", save_stats)):
        if path is None:
            continue
        if os.path.abspath(path) in inputs:
            raise DiffmemError(f"{flag} {path} is also an input; choose another path")
        check_output(path, flag, overwrite)
