"""`diffmem release`: release a trained run afterwards, checking every checkpoint it kept."""

from __future__ import annotations

from typing import Callable

import click

from diffmem.cli.configs import SAMPLE_PRECISION_HELP
from diffmem.cli.sections import SectionedCommand
from diffmem.guard import GuardConfig
from diffmem.utils.flags import device_name
from diffmem.utils.precision import PRECISIONS

GUARD = GuardConfig()


CHECK_FLAGS = ("n_samples", "features", "quality_features", "quality_metric", "level", "sample_precision",
               "allow_pruned")  # what only a check uses
RELEASE_HELP_SECTIONS = {"run_dir": "What to release", "n_samples": "Copies and the safety test",
                         "quality_features": "Quality", "sample_precision": "Compute"}


def flags_given(ctx: click.Context, wanted: Callable[[str], bool]) -> list[str]:
    """The flags, as typed, of the command's parameters `wanted` (by name) that the command line set."""
    return [p.opts[0] for p in ctx.command.params if wanted(p.name)
            and ctx.get_parameter_source(p.name) is click.core.ParameterSource.COMMANDLINE]


def refuse_check_flags(ctx: click.Context, wanted: Callable[[str], bool]) -> None:
    """--report-only checks nothing: refuse the check flags (`wanted`) given with it, by name."""
    from diffmem.errors import DiffmemError

    given = flags_given(ctx, wanted)
    if given:
        raise DiffmemError(f"--report-only checks nothing, so {', '.join(given)} would be ignored; drop "
                           f"{'it' if len(given) == 1 else 'them'}, or drop --report-only to check again")


@click.command(cls=SectionedCommand, sections=RELEASE_HELP_SECTIONS)
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False),
              help="A run trained with --keep-checkpoints all (or --guard).")
@click.option("--allow-pruned", is_flag=True, help="Release among the checkpoints left when some were pruned.")
@click.option("--report-only", is_flag=True,
              help="Check nothing: write RUN/release/report.html from the release.json RUN has (a run trained "
                   "with --guard, or one of a frontier's runs).")
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
@click.pass_context
def release(ctx, run_dir, n_samples, features, quality_features, quality_metric, level, sample_precision,
            allow_pruned, report_only, device) -> None:
    """Check every kept checkpoint of RUN as `train --guard` would (copies against held-out images, the safety
    test, quality), write RUN/release.json, the released samples and RUN/release/report.html; `sample
    --checkpoint release` then uses it."""
    from pathlib import Path

    from diffmem.errors import DiffmemError
    from diffmem.guard import release_run
    from diffmem.release import read_release, release_sentence
    from diffmem.report.release import write_release_report
    from diffmem.train.rundir import load_train_config

    if report_only:
        refuse_check_flags(ctx, lambda name: name in CHECK_FLAGS)
        read_release(run_dir)  # a run without a certificate is refused naming the fix, before any writing
        click.echo(f"release page: {write_release_report(run_dir, device=device_name(device))}")
        return
    gc = GuardConfig(n_samples=n_samples, features=features, quality_features=quality_features,
                     quality_metric=quality_metric, level=level, sample_precision=sample_precision)
    record = release_run(run_dir, gc, device=device_name(device), allow_pruned=allow_pruned, progress=click.echo)
    click.echo(release_sentence(record, load_train_config(run_dir).method.name))
    try:
        shown = f" (to show: {write_release_report(run_dir, device=device_name(device))})"
    except DiffmemError as err:  # the certificate is written; only its page is missing
        click.echo(f"warning: the release page was not written ({err}); write it later with --report-only", err=True)
        shown = ""
    click.echo(f"certificate: {Path(run_dir) / 'release.json'}{shown}")
