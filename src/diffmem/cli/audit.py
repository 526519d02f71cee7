"""`diffmem audit`: how much do generated samples copy their training set?"""

from __future__ import annotations

from typing import Any

import click

from diffmem.cli.sections import SectionedCommand
from diffmem.errors import DiffmemError
from diffmem.evaluate.options import (AUDIT_BACKENDS, DEFAULT_THRESHOLDS, PIXEL_THRESHOLDS, AuditOptions,
                                     check_audit_inputs)
from diffmem.evaluate.report_fields import ratio_tests_of
from diffmem.utils.flags import device_name, joined, parse_floats

__all__ = ["audit", "audit_options_from_flags", "cache_option", "FEATURES_HELP", "AUDIT"]

AUDIT = AuditOptions()  # the defaults of `diffmem audit`'s flags, written once in diffmem.evaluate.options

FEATURES_HELP = (
    "Feature space: pixels, dinov2[:HUB_ID_OR_DIR] (default facebook/dinov2-giant), clip[:HUB_ID_OR_DIR], "
    "inception[:WEIGHTS], torchscript:PATH (e.g. SSCD), digits-net[:RES] (built-in digits; no download), "
    "classifier:SPEC (a small classifier trained on labelled images SPEC; no download)."
)


def audit_options_from_flags(*, run_dir: str | None = None, train_spec: str | None = None,
                             heldout_spec: str | None = None, features: str = AUDIT.features,
                             thresholds: str | None = None, calibrate: str = joined(AUDIT.calibrate),
                             ratio_k: int | None = AUDIT.ratio_k, max_heldout: int = AUDIT.max_heldout,
                             resolution: int | None = AUDIT.resolution, resize: bool = AUDIT.resize,
                             image_size: int | None = AUDIT.image_size, xflip: bool = AUDIT.xflip,
                             shift: int = AUDIT.shift,
                             n_pictures: int = AUDIT.n_pictures, backend: str = AUDIT.backend,
                             batch: int = AUDIT.batch) -> AuditOptions:
    """The AuditOptions of `diffmem audit`'s flags; refuses exactly-one-of --run/--train broken, --heldout with
    --run, thresholds outside [-1, 1], percentiles outside [0, 100], and counts below 1. `thresholds` None: the
    feature space's own (`diffmem.evaluate.options.fixed_thresholds`)."""
    check_audit_inputs(run=run_dir, train=train_spec, heldout=heldout_spec, ratio_k=ratio_k, n_pictures=n_pictures,
                       max_heldout=max_heldout, flags=True, batch=batch, image_size=image_size, shift=shift)
    fixed = parse_floats(thresholds, "--thresholds", -1.0, 1.0) if thresholds is not None else None
    percentiles = parse_floats(calibrate, "--calibrate", 0.0, 100.0)
    if backend not in AUDIT_BACKENDS:
        raise DiffmemError(f"--backend must be one of {', '.join(AUDIT_BACKENDS)}, got {backend!r}")
    return AuditOptions(features=features, thresholds=fixed, calibrate=percentiles, ratio_k=ratio_k,
                        max_heldout=max_heldout, xflip=xflip, shift=shift, resolution=resolution,
                        resize=resize, image_size=image_size, n_pictures=n_pictures, backend=backend, batch=batch)


CHECKPOINT_SAMPLES = 1000  # samples drawn from a run's checkpoint by audit/fid --checkpoint


def check_sample_source(samples: str | None, run_dir: str | None, checkpoint: str | None, n: int) -> None:
    """Exactly one of --samples or --checkpoint (which needs --run, and must exist); --n-samples at least 2."""
    if samples is not None and checkpoint is not None:
        raise DiffmemError("give --samples or --checkpoint (which samples --run), not both")
    if samples is None and checkpoint is None:
        raise DiffmemError("give --samples, or --run RUN with --checkpoint release|latest|step-N to sample that run")
    if checkpoint is not None and run_dir is None:
        raise DiffmemError("--checkpoint samples a run: give --run RUN too")
    if n < 2:
        raise DiffmemError(f"--n-samples must be at least 2, got {n}")
    if checkpoint is not None:  # a checkpoint that is not there is refused before any model or image is loaded
        from diffmem.train.checkpoint import resolve_checkpoint

        resolve_checkpoint(run_dir, checkpoint)


def checkpoint_samples(run_dir: str, checkpoint: str, n: int, device: str, progress: bool = False) -> Any:
    """`n` samples (seed 0) of a run's checkpoint (release, latest or step-N), as `diffmem sample` draws them."""
    from diffmem.api import sample

    return sample(run_dir, n, seed=0, checkpoint=checkpoint, device=device, progress=progress)


def cache_option(cache_dir: str | None, no_cache: bool) -> str | None:
    """The feature cache folder: None with --no-cache, else --cache-dir or the default cache."""
    if no_cache:
        return None
    from diffmem.evaluate.cache import cache_root

    return cache_dir or str(cache_root())


# --help headings: each starts at the named parameter (diffmem.cli.sections)
AUDIT_HELP_SECTIONS = {"samples": "What to audit, and where", "features": "Copy features and thresholds",
                       "resolution": "Loading and matching images", "n_pictures": "Output and hardware",
                       "checkpoint": "Sampling a checkpoint (with --run)"}


@click.command(cls=SectionedCommand, sections=AUDIT_HELP_SECTIONS)
@click.option("--samples", default=None, help="Generated images: a folder, .zip or .npz (or --checkpoint with --run).")
@click.option("--run", "run_dir", default=None, type=click.Path(file_okay=False),
              help="A training run: its training subset is the training set, the rest of its data the held-out set.")
@click.option("--train", "train_spec", default=None, help="Training images: folder, .zip, .npz or builtin:digits.")
@click.option("--heldout", "heldout_spec", default=None,
              help="Held-out real images of the same distribution (with --train).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder: new, empty, or an earlier audit (replaced whole); other folders are refused.")
@click.option("--features", default=AUDIT.features, show_default=True, help=FEATURES_HELP)
@click.option("--thresholds", default=None,
              help=f"Fixed cosine-similarity thresholds [default: {joined(PIXEL_THRESHOLDS)} for pixels, "
                   f"{joined(DEFAULT_THRESHOLDS)} (the paper's, for DINOv2) for other features].")
@click.option("--calibrate", default=joined(AUDIT.calibrate), show_default=True,
              help="Held-out percentiles of nearest-training similarity used as calibrated thresholds.")
@click.option("--ratio-k", type=int, default=None,
              help="Neighbours in the ratio test [default: 50, or a tenth of the training images below 500].")
@click.option("--max-heldout", type=int, default=AUDIT.max_heldout, show_default=True,
              help="Use a seeded subset of at most this many held-out images.")
@click.option("--resolution", type=int, default=None, help="Load --train/--heldout at this size (see --resize).")
@click.option("--resize", is_flag=True, help="Center-crop and resize --train/--heldout images to --resolution.")
@click.option("--image-size", type=int, default=None, help="Model input size for dinov2/clip/torchscript.")
@click.option("--xflip", is_flag=True,
              help="Also match mirrored images: each image's similarity is the maximum over it and its mirror.")
@click.option("--shift", type=int, default=AUDIT.shift, show_default=True,
              help="Also match training images moved by up to this many pixels along each axis (the maximum "
                   "over every position; held-out images too, so the calibration stays fair).")
@click.option("--n-pictures", type=int, default=AUDIT.n_pictures, show_default=True,
              help="Pairs shown in neighbours.png.")
@click.option("--backend", type=click.Choice(AUDIT_BACKENDS), default=AUDIT.backend, show_default=True,
              help="Nearest-neighbour search (faiss: for millions of references; pip install faiss-cpu).")
@click.option("--batch", type=int, default=AUDIT.batch, show_default=True, help="Images per feature batch.")
@click.option("--device", default="auto", show_default=True)
@click.option("--cache-dir", default=None, help="Feature cache folder [default: $DIFFMEM_CACHE or ~/.cache/diffmem].")
@click.option("--no-cache", is_flag=True, help="Do not read or write cached features.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--checkpoint", default=None,
              help="With --run and no --samples: sample this checkpoint (release, latest or step-N) and audit that.")
@click.option("--n-samples", type=int, default=CHECKPOINT_SAMPLES, show_default=True,
              help="Samples drawn with --checkpoint (seed 0).")
def audit(samples, run_dir, train_spec, heldout_spec, features, out, thresholds, calibrate, ratio_k, max_heldout,
          resolution, resize, image_size, xflip, shift, n_pictures, backend, batch, device, cache_dir, no_cache, checkpoint,
          n_samples, quiet) -> None:
    """Compare samples with their nearest training images; write report.html/.md/.json, nearest.csv and pictures.

    Under torchrun every process embeds and searches a share of the images; rank 0 writes.
    """
    from diffmem.api import audit as api_audit
    from diffmem.evaluate.audit_files import check_out_dir

    opts = audit_options_from_flags(
        run_dir=run_dir, train_spec=train_spec, heldout_spec=heldout_spec, features=features, thresholds=thresholds,
        calibrate=calibrate, ratio_k=ratio_k, max_heldout=max_heldout, resolution=resolution, resize=resize,
        image_size=image_size, xflip=xflip, shift=shift, n_pictures=n_pictures, backend=backend, batch=batch)
    check_out_dir(out, {"--samples": samples, "--train": train_spec, "--heldout": heldout_spec})
    check_sample_source(samples, run_dir, checkpoint, n_samples)
    from diffmem.utils.distributed import init_world

    world, dev = init_world(device_name(device))  # torchrun: each rank embeds and searches a share
    if samples is None:
        samples = checkpoint_samples(run_dir, checkpoint, n_samples, dev, progress=not quiet and world.main)
    result = api_audit(
        samples, train_spec, heldout_spec, opts.features, out, run=run_dir, thresholds=opts.fixed(),
        calibrate=opts.calibrate, ratio_k=opts.ratio_k, xflip=opts.xflip, shift=opts.shift, max_heldout=opts.max_heldout,
        resolution=opts.resolution, resize=opts.resize, image_size=opts.image_size, device=dev,
        batch_size=opts.batch, cache_dir=cache_option(cache_dir, no_cache), backend=opts.backend,
        n_pictures=opts.n_pictures, progress=not quiet, world=world,
    )
    if world.main:
        _summary(result.report, out)
        click.echo(result.summary())


def _summary(report: dict, out: str) -> None:
    sim = report["similarity"]
    click.echo(f"features {report['features']}: {report['n_samples']} samples vs {report['n_train']} training images")
    click.echo(f"  samples:  similarity mean {sim['mean']:.4f}  median {sim['median']:.4f}  p95 {sim['p95']:.4f}  "
               f"max {sim['max']:.4f}")
    line = "  ".join(f">{k}: {v:.3f}" for k, v in report["fraction_above"].items())
    click.echo(f"  samples:  {line}")
    held = report.get("heldout")
    if held:
        hs = held["similarity"]
        click.echo(f"  held-out ({held['n']}): similarity mean {hs['mean']:.4f}  p95 {hs['p95']:.4f}  "
                   + "  ".join(f">{k}: {v:.3f}" for k, v in held["fraction_above"].items()))
        cal = report["calibrated_thresholds"]
        frac = report["fraction_above_calibrated"]
        click.echo("  calibrated: " + "  ".join(f"{k} = {cal[k]:.4f} -> samples above: {frac[k]:.3f}" for k in cal))
    for name, rt in ratio_tests_of(report).items():
        click.echo(f"  ratio test {name}: fraction flagged {rt['fraction_below']:.3f}")
    for w in report.get("warnings", []):
        click.echo(f"warning: {w}", err=True)
    click.echo(f"wrote {out}/report.html (open it), report.md, report.json, nearest.csv, nearest.npz, histogram.png, "
               "samples.png, neighbours.png")
