"""Command-line interface: a thin layer over the library (library code never imports click).

Subcommands live one per module in this package and are imported only when used, so
`diffmem --help` stays fast and a heavy dependency (diffusers, transformers) loads only
for the commands that need it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from pathlib import Path

import click

from diffmem.errors import DiffmemError, os_error_message

# name -> (module, attribute, one-line help). Each module defines a click command or group.
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("diffmem.cli.train", "train", "Train a pixel-space diffusion model (baseline or Algorithm 1)."),
    "sample": ("diffmem.cli.sample", "sample", "Sample images from a trained run."),
    "demo": ("diffmem.cli.demo", "demo", "Baseline vs Algorithm 1 on the built-in digits, end to end."),
    "audit": ("diffmem.cli.audit", "audit", "Measure how much generated samples copy their training set."),
    "fid": ("diffmem.cli.fid", "fid", "Frechet distance, KID and precision/recall of samples."),
    "theory": ("diffmem.cli.theory", "theory", "Compute and check the paper's theory, with figures."),
    "t2i": ("diffmem.cli.t2i", "t2i", "Text-to-image: fine-tune Stable Diffusion with the ambient loss."),
    "sweep": ("diffmem.cli.sweep", "sweep", "Sweep sigma_n and draw the memorization/quality frontier."),
    "compare": ("diffmem.cli.sweep", "compare", "Table and Pareto plot from existing runs or audits."),
    "frontier": ("diffmem.cli.frontier", "frontier",
                 "Quality/copies paths over training: Algorithm 1's weightings against slower-clock controls."),
    "trace": ("diffmem.cli.trace", "trace", "At which noise level sampling decides what each sample copies."),
    "release": ("diffmem.cli.release", "release",
                "Release a trained run: its best checkpoint whose copies stay within what unseen images score."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (mod, _, _) in _COMMANDS.items() if importlib.util.find_spec(mod) is not None]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _COMMANDS:
            return None
        module, attr, _ = _COMMANDS[name]
        if importlib.util.find_spec(module) is None:
            return None
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="diffmem")
def cli() -> None:
    """diffmem: train diffusion models that create instead of copying, and measure copying."""


def _one_line_warnings(previous):
    """A `warnings.showwarning` that prints diffmem's own warnings as one line, `warning: ...` (Python's
    default adds the file and the source line), and hands other libraries' warnings to `previous`."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if str(filename).startswith(_PACKAGE) and issubclass(category, UserWarning):
            click.echo(f"warning: {message}", err=True)
        else:
            previous(message, category, filename, lineno, file, line)

    return show


_PACKAGE = str(Path(__file__).resolve().parents[1])  # the diffmem package's folder


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the CLI; a DiffmemError, or a permission / disk-full error, becomes a one-line
    message and exit code 2. diffmem's own warnings print as one line."""
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            cli.main(args=argv, standalone_mode=False)
    except DiffmemError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    except OSError as err:  # permission denied, read-only or full disk: one line naming the path
        message = os_error_message(err)
        if message is None:
            raise
        click.echo(f"error: {message}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as err:  # a flag click itself refused: one line too, pointing at --help
        names, ctx = [], err.ctx
        while ctx is not None and ctx.parent is not None:
            names.insert(0, ctx.info_name)
            ctx = ctx.parent
        hint = f" (see `diffmem {' '.join(names)} --help`)" if names else ""
        click.echo(f"error: {err.format_message()}{hint}", err=True)
        sys.exit(err.exit_code)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
