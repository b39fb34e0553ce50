"""The docs stay true to the ``kdc`` command: every ``kdc CMD --option`` they show exists, and none of them calls
an existing one missing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

from kdc.cli import app

ROOT = Path(__file__).parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "examples").rglob("*.md")])
#: ``kdc`` then its subcommand words, then the rest of the command up to a pipe, a separator or another ``kdc``.
COMMAND = re.compile(r"(?:^|[\s(|;&$])kdc ((?:[a-z][a-z-]* ?)+)(.*?)(?=$|\||;|&&|\)|\bkdc )")
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
#: Sentences that say a command or option does not exist yet.
MISSING = re.compile(r"[Uu]ntil `(kdc [^`]+)` exists|`(kdc [^`]+)` (?:does not exist|is not (?:yet )?implemented)")


def snippets(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each code-block line (without its ``#`` comment) and inline code span of ``path``."""
    block = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            block = not block
        elif block:
            yield number, line.split(" #")[0]
        else:
            yield from ((number, span) for span in re.findall(r"`([^`]*)`", line))


def unknown_options(command: str) -> list[str] | None:
    """The ``--options`` of ``command`` (``kdc CMD ...``) that its subcommand lacks; None if it names none."""
    match = COMMAND.search(command)
    if match is None:
        return None
    node, words = typer.main.get_command(app), match.group(1).split()
    used = 0
    while used < len(words) and words[used] in getattr(node, "commands", {}):
        node, used = node.commands[words[used]], used + 1
    if used == 0:
        return None
    known = {"--help"} | {name for param in node.params for name in (*param.opts, *param.secondary_opts)}
    rest = " ".join(words[used:]) + " " + match.group(2)
    return [option for option in OPTION.findall(rest) if option not in known]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_documented_option_exists(path):
    commands = [(number, text) for number, text in snippets(path) if COMMAND.search(text)]
    wrong = [f"{path.name}:{number}: {option}" for number, text in commands
             for match in COMMAND.finditer(text) for option in unknown_options(match.group(0).strip()) or []]
    assert not wrong


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_existing_command_is_called_missing(path):
    """docs/distill.md said "Until `kdc data build --complex` exists" after it did."""
    text = " ".join(path.read_text().split())
    claims = [next(filter(None, match.groups())) for match in MISSING.finditer(text)]
    assert not [claim for claim in claims if unknown_options(claim) == []]
