"""The ``backend-ai`` console script: one entry point, one subcommand per concern.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args)``,
and optionally ``DESCRIPTION`` and ``EPILOG`` (the text of its ``--help`` above and below the
options); adding a subcommand is one entry in ``SUBCOMMANDS``.

``pip install backend-ai`` installs the engine alone; each command needs an extra (``serve``,
``simulator``, ``batch``, and ``redis`` when ``BACKEND_AI_REDIS_URL`` is set). A command whose
extra is missing says which one to install, in one line, with exit status 2 — before anything
is imported or started, so the user never meets a traceback from deep inside the service.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from backend_ai import __version__

__all__ = ["EXIT_MISSING_EXTRA", "SUBCOMMANDS", "Needs", "Subcommand", "main"]

#: Exit status of a command whose extra is not installed (argparse's for a usage error).
EXIT_MISSING_EXTRA = 2


@dataclass(frozen=True)
class Needs:
    """Modules a command imports, all installed by the extra ``extra`` of ``setup.cfg``."""

    extra: str
    modules: tuple[str, ...]
    #: Needed only when this environment variable is set (and not empty).
    when_set: str | None = None

    def missing(self) -> str | None:
        """The first module that cannot be imported; None when all can (or none is needed)."""
        if self.when_set is not None and not os.environ.get(self.when_set, "").strip():
            return None
        for module in self.modules:
            if importlib.util.find_spec(module) is None:
                return module
        return None


@dataclass(frozen=True)
class Subcommand:
    module: str
    help: str
    needs: tuple[Needs, ...]

    def missing(self) -> tuple[Needs, str] | None:
        """The first unmet need and its missing module; None when the command can run."""
        for need in self.needs:
            module = need.missing()
            if module is not None:
                return need, module
        return None


_SIMULATOR = ("hypercorn", "trustme")
_REDIS = Needs("redis", ("redis",), when_set="BACKEND_AI_REDIS_URL")

SUBCOMMANDS: dict[str, Subcommand] = {
    "serve": Subcommand(
        "backend_ai.app.serve",
        "run the web service under gunicorn",
        (Needs("serve", ("flask", "gunicorn", "prometheus_client", *_SIMULATOR)), _REDIS),
    ),
    "simulate": Subcommand(
        "backend_ai.simulator.cli",
        "run the OpenAI-compatible upstream simulator",
        (Needs("simulator", _SIMULATOR),),
    ),
    "batch": Subcommand(
        "backend_ai.batch_cli",
        "run a JSONL file of requests; results as they finish",
        (Needs("batch", ("tqdm", *_SIMULATOR)), _REDIS),
    ),
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
    for name, command in SUBCOMMANDS.items():
        unmet = command.missing()
        if unmet is not None:  # listed, with what to install; running it says the same
            subparsers.add_parser(name, help=f"{command.help} (needs the '{unmet[0].extra}' extra)")
            continue
        module = importlib.import_module(command.module)
        module.add_arguments(
            subparsers.add_parser(
                name,
                help=command.help,
                description=getattr(module, "DESCRIPTION", command.help),
                epilog=getattr(module, "EPILOG", None),
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
        )
        modules[name] = module
    return parser, modules


def _install(need: Needs) -> str:
    return f"pip install 'backend-ai[{need.extra}]'"


def _missing_extra_message(name: str) -> str | None:
    """One line naming the extra that ``backend-ai NAME`` needs, or None when it can run."""
    command = SUBCOMMANDS.get(name)
    unmet = None if command is None else command.missing()
    if unmet is None:
        return None
    need, module = unmet
    when = f" with {need.when_set} set" if need.when_set else ""
    return (
        f"backend-ai {name}{when} needs the '{need.extra}' extra ({module} is not installed): "
        f"{_install(need)}, or in a clone: pip install -e '.[{need.extra}]'"
    )


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    # The command is the first word that is not an option (the top level has only options
    # without values: --help, --version).
    name = next((word for word in arguments if not word.startswith("-")), None)
    message = None if name is None else _missing_extra_message(name)
    if message is not None:
        print(message, file=sys.stderr)
        return EXIT_MISSING_EXTRA
    parser, modules = _parser()
    args = parser.parse_args(arguments)
    return int(modules[args.command].run(args) or 0)  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main())
