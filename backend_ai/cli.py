"""The ``backend-ai`` console script: one entry point, one subcommand per concern.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args)``,
and optionally ``DESCRIPTION`` and ``EPILOG`` (the text of its ``--help`` above and below the
options); adding a subcommand is one line in ``_SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from backend_ai import __version__

__all__ = ["main"]

_SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("backend_ai.app.serve", "run the web service under gunicorn"),
    "simulate": ("backend_ai.simulator.cli", "run the OpenAI-compatible upstream simulator"),
    "batch": ("backend_ai.batch_cli", "run a JSONL file of requests; results as they finish"),
}

_DESCRIPTION = """\
Run several LLM completions at once from a synchronous Python backend, and serve them as one
live Server-Sent-Events stream."""

_EPILOG = """\
environment:
  OPENAI_API_KEY, OPENAI_BASE_URL   the upstream; with neither set, `serve` runs on the
                                    embedded simulator, so it works without an account
  BACKEND_AI_*                      the service's settings (docs/SERVICE.md)

examples:
  backend-ai serve                  # then open http://127.0.0.1:8000/
  backend-ai simulate --port 8001   # an OpenAI-compatible API at http://127.0.0.1:8001/v1
  backend-ai serve --help           # each command's options and environment"""


def _parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = argparse.ArgumentParser(
        prog="backend-ai",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules: dict[str, object] = {}
    for name, (module_path, help_text) in _SUBCOMMANDS.items():
        module = importlib.import_module(module_path)
        module.add_arguments(
            subparsers.add_parser(
                name,
                help=help_text,
                description=getattr(module, "DESCRIPTION", help_text),
                epilog=getattr(module, "EPILOG", None),
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
        )
        modules[name] = module
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    parser, modules = _parser()
    args = parser.parse_args(argv)
    return int(modules[args.command].run(args) or 0)  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main())
