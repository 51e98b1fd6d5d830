"""docs/cluster.md: every ``degtrans`` command on the page parses with the real command line."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from degtrans.cli import build_parser

PAGE = Path(__file__).resolve().parents[2] / "docs" / "cluster.md"
BASH = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)


def page_commands() -> list[str]:
    """The ``degtrans ...`` lines of the page's bash blocks (comments dropped)."""
    lines = []
    for block in BASH.findall(PAGE.read_text(encoding="utf-8")):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["degtrans"]:
                lines.append(shlex.join(words))
    return lines


def _parse(words: list[str]):
    try:
        return build_parser().parse_args(words)
    except SystemExit as error:
        raise AssertionError(f"degtrans {shlex.join(words)}: does not parse") from error


def test_the_page_shows_every_stage():
    stages = {shlex.split(c)[1] for c in page_commands()}
    assert {"calibrate", "simulate", "train", "sweep", "submit"} <= stages


@pytest.mark.parametrize("command", page_commands())
def test_command_parses(command):
    words = shlex.split(command)[1:]
    args = _parse(words)
    if args.command == "submit" and args.rest[:1] == ["--"]:
        _parse(args.rest[1:])  # the job's own command line
