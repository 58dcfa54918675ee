"""``python -m backend_ai.simulator``: the same as ``backend-ai simulate``, without Flask."""

from __future__ import annotations

import argparse
import sys

from .cli import add_arguments, run

__all__: list[str] = []

if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m backend_ai.simulator",
        description="OpenAI-compatible upstream simulator (HTTP/1.1 and HTTP/2).",
    )
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
