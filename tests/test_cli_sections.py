"""`--help` in sections (diffmem.cli.sections): every option listed once, under the heading it belongs to."""

from __future__ import annotations

import importlib
import re

import click
import pytest
from click.testing import CliRunner

from diffmem.cli import cli
from diffmem.cli.sections import SectionedCommand

COMMANDS = ["train", "sweep", "frontier", "audit", "sample", "release"]


def _help_sections(name: str) -> list[tuple[str, list[str]]]:
    """[(heading, [first flag of each option row])] in the order `diffmem NAME --help` prints them."""
    text = CliRunner().invoke(cli, [name, "--help"], terminal_width=100).output
    body = text.split("\n\n", 2)[2]  # after "Usage: ..." and the command's description
    sections: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if re.match(r"^\S.*:$", line):
            sections.append((line[:-1], []))
        elif re.match(r"^  -", line):
            sections[-1][1].append(line.split()[0].rstrip(","))
    return sections


def _command(name: str) -> click.Command:
    return getattr(importlib.import_module(f"diffmem.cli.{name}"), name)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_is_listed_once_under_its_heading(name):
    cmd = _command(name)
    assert isinstance(cmd, SectionedCommand)
    sections = _help_sections(name)
    listed = [flag for _, flags in sections for flag in flags]
    expected = [p.opts[0] for p in cmd.params if isinstance(p, click.Option) and not p.hidden] + ["-h"]
    assert sorted(listed) == sorted(expected)  # none dropped, none twice
    headings = [h for h, _ in sections]
    assert headings == ["Options", *cmd.sections.values()]  # declared order, general options first
    assert sections[0][1] == ["-h"]
    # each option sits under the last heading that starts at or before it, in declared order
    heading, where = "Options", {}
    for p in cmd.params:
        heading = cmd.sections.get(p.name, heading)
        where[p.opts[0]] = heading
    for h, flags in sections[1:]:
        assert all(where[f] == h for f in flags), (h, flags)
        assert flags == [p.opts[0] for p in cmd.params if where[p.opts[0]] == h]


def test_named_sections_place_the_guard_and_the_output_where_users_look():
    train = dict(_help_sections("train"))
    guard = next(flags for h, flags in train.items() if h.startswith("Guard"))
    assert guard[:3] == ["--guard", "--guard-samples", "--guard-features"]
    audit = dict(_help_sections("audit"))
    assert "--out" in audit["What to audit, and where"]
    assert audit["Sampling a checkpoint (with --run)"] == ["--checkpoint", "--n-samples"]


def test_a_section_at_an_unknown_parameter_is_refused():
    with pytest.raises(ValueError, match="unknown parameters \\['nope'\\]"):
        @click.command(cls=SectionedCommand, sections={"nope": "Nope"})
        @click.option("--x", default=1)
        def cmd(x):  # pragma: no cover - never called
            pass
