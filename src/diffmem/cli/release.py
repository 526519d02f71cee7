"""`diffmem release`: release a trained run afterwards, checking every checkpoint it kept."""

from __future__ import annotations

import click

from diffmem.cli.configs import SAMPLE_PRECISION_HELP
from diffmem.cli.sections import SectionedCommand
from diffmem.guard import GuardConfig
from diffmem.utils.flags import device_name
from diffmem.utils.precision import PRECISIONS

GUARD = GuardConfig()


RELEASE_HELP_SECTIONS = {"run_dir": "What to release", "n_samples": "Copies and the safety test",
                         "quality_features": "Quality", "sample_precision": "Compute"}


@click.command(cls=SectionedCommand, sections=RELEASE_HELP_SECTIONS)
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False),
              help="A run trained with --keep-checkpoints all (or --guard).")
@click.option("--allow-pruned", is_flag=True, help="Release among the checkpoints left when some were pruned.")
@click.option("--samples", "n_samples", type=int, default=GUARD.n_samples, show_default=True,
              help="Samples per checkpoint.")
@click.option("--features", default=GUARD.features, show_default=True, help="Copy features.")
@click.option("--level", type=float, default=GUARD.level, show_default=True, help="Level of the safety test.")
@click.option("--quality", "quality_features", default=None,
              help="Quality features [default: digits-net for builtin:digits, else pixels].")
@click.option("--metric", "quality_metric", type=click.Choice(["kid", "fd"]), default=GUARD.quality_metric,
              show_default=True)
@click.option("--sample-precision", type=click.Choice(PRECISIONS), default=GUARD.sample_precision, show_default=True,
              help=SAMPLE_PRECISION_HELP)
@click.option("--device", default="auto", show_default=True)
def release(run_dir, n_samples, features, quality_features, quality_metric, level, sample_precision, allow_pruned,
            device) -> None:
    """Check every kept checkpoint of RUN as `train --guard` would (copies against held-out images, the safety
    test, quality), write RUN/release.json and the released samples; `sample --checkpoint release` then uses it."""
    from pathlib import Path

    from diffmem.guard import release_run
    from diffmem.release import release_sentence
    from diffmem.report.release import write_release_report
    from diffmem.train.rundir import load_train_config

    gc = GuardConfig(n_samples=n_samples, features=features, quality_features=quality_features,
                     quality_metric=quality_metric, level=level, sample_precision=sample_precision)
    record = release_run(run_dir, gc, device=device_name(device), allow_pruned=allow_pruned, progress=click.echo)
    click.echo(release_sentence(record, load_train_config(run_dir).method.name))
    page = write_release_report(run_dir, device=device_name(device))
    click.echo(f"certificate: {Path(run_dir) / 'release.json'} (to show: {page})")
