"""The ``backend-ai`` console script: one entry point, one subcommand per concern.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args)``;
modules are imported lazily so ``backend-ai simulate`` never pays for Flask and vice versa.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]

_SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("backend_ai.app.serve", "run the web service under gunicorn"),
    "simulate": ("backend_ai.simulator.cli", "run the OpenAI-compatible upstream simulator"),
    "batch": ("backend_ai.batch_cli", "run a JSONL file of requests; results as they finish"),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="backend-ai", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (module_path, help_text) in _SUBCOMMANDS.items():
        module = importlib.import_module(module_path)
        module.add_arguments(subparsers.add_parser(name, help=help_text, description=help_text))
        modules[name] = module
    args = parser.parse_args(argv)
    return int(modules[args.command].run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
