"""The ``backend-ai`` command as a user meets it: ``--version`` and help written for people."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from backend_ai import __version__
from backend_ai.cli import _parser


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backend_ai.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_version() -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"backend-ai {__version__}"


def test_top_level_help_names_the_commands_the_environment_and_an_example() -> None:
    result = cli("--help")
    assert result.returncode == 0
    text = result.stdout
    for expected in ("serve", "simulate", "OPENAI_API_KEY", "simulator", "examples:", "--version"):
        assert expected in text, expected
    assert "``" not in text  # no raw reStructuredText


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("serve", ("OPENAI_API_KEY", "OPENAI_BASE_URL", "simulator", "history", "examples:")),
        ("simulate", ("X-Sim", "docs/SIMULATOR.md", "examples:", "--ttft-ms")),
    ],
)
def test_command_help_says_what_it_does_what_it_reads_and_how(
    command: str, expected: tuple[str, ...]
) -> None:
    result = cli(command, "--help")
    assert result.returncode == 0
    for word in expected:
        assert word in result.stdout, word
    assert "``" not in result.stdout


def test_every_option_of_every_command_is_described() -> None:
    parser, _ = _parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    undescribed = [
        f"{name} {action.option_strings or action.dest}"
        for name, sub in subparsers.choices.items()
        for action in sub._actions
        if not action.help or action.help == argparse.SUPPRESS
    ]
    assert not undescribed
