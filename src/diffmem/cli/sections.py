"""`--help` in sections: a click command whose options are listed under headings (Data, Method, Guard...).

click lists every option of a command in one flat block; `diffmem train` has about 50. click has no option
groups of its own (the click-option-group package adds them, but through a decorator per group and a new
dependency), so this small subclass does the one thing needed: it starts a new heading at named options and
keeps the declared order, so every option is listed exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

__all__ = ["SectionedCommand"]


class SectionedCommand(click.Command):
    """A click command whose `--help` lists its options in sections.

    `sections` maps the name of the first parameter of each section to its heading, e.g.
    `{"data_spec": "Data", "method": "Method"}`; options before the first named one, and `--help`, go under
    "Options". Naming a parameter the command does not have is a programming error (ValueError)."""

    def __init__(self, *args: Any, sections: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        sections = sections or {}
        unknown = sorted(set(sections) - {p.name for p in self.params})
        if unknown:
            raise ValueError(f"command {self.name!r}: help sections start at unknown parameters {unknown}")
        self.sections = dict(sections)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        groups: dict[str, list[tuple[str, str]]] = {"Options": []}
        heading = "Options"
        help_option = self.get_help_option(ctx)
        for param in self.get_params(ctx):
            heading = self.sections.get(param.name or "", heading)
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param is help_option:  # click's own --help, added last: list it first, with the general options
                groups["Options"].insert(0, record)
            else:
                groups.setdefault(heading, []).append(record)
        for heading, records in groups.items():
            if records:
                with formatter.section(heading):
                    formatter.write_dl(records)
