"""``backend-ai serve``: the service under gunicorn, on the embedded simulator when no key is set.

gunicorn runs as a child process (``GunicornProcess``) rather than inside this one, so this
process stays a small supervisor that owns everything it started:

* with neither ``OPENAI_API_KEY`` nor ``OPENAI_BASE_URL`` set it first starts the upstream
  simulator (realistic default profile: ~300 ms to first token, ~30 ms per token) and points
  the app at it through the child's environment;
* the first SIGINT or SIGTERM is passed on to gunicorn as SIGTERM — a graceful shutdown in
  which every open stream ends with its final ``done`` event — and a second one as SIGQUIT
  (immediate); the simulator is stopped once gunicorn has exited;
* gunicorn receives SIGTERM if this process dies, and the simulator exits when its stdin
  closes, so even a ``kill -9`` of this process leaves no orphans behind.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType
from urllib.parse import urlsplit

from backend_ai.app.gunicorn_process import GunicornProcess
from backend_ai.app.settings import Settings
from backend_ai.errors import BackendAIError

__all__ = ["add_arguments", "run"]

logger = logging.getLogger("backend_ai.serve")

_SIMULATOR_KEY = "sk-simulator-local"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    parser.add_argument(
        "--workers", type=_positive_int, default=2, help="gunicorn worker processes (default 2)"
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=32,
        help="threads per worker = concurrent streams per worker (default 32)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="log level of this process and gunicorn (default info)",
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _page_url(host: str, port: int) -> str:
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


class _Signals:
    """First SIGINT/SIGTERM: graceful stop of gunicorn; second: immediate stop."""

    def __init__(self, server: GunicornProcess) -> None:
        self.server = server
        self.received = 0
        self._previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received += 1
        if self.received == 1:
            logger.info("stopping: open streams end with their final event")
            self.server.send_signal(signal.SIGTERM)
        else:
            self.server.send_signal(signal.SIGQUIT)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; the exit status is gunicorn's (0 after a requested stop)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    # One line per request of the readiness poll would drown the line that matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        settings = Settings.from_env()
    except BackendAIError as exc:
        logger.error("configuration error: %s", exc)
        return 2
    env = dict(os.environ)
    with contextlib.ExitStack() as stack:
        embedded = settings.openai_api_key is None and settings.openai_base_url is None
        if embedded:
            from backend_ai.simulator import SimulatorProcess

            simulator = stack.enter_context(SimulatorProcess(profile="default"))
            env.update(
                OPENAI_BASE_URL=simulator.base_url,
                OPENAI_API_KEY=_SIMULATOR_KEY,
                BACKEND_AI_UPSTREAM_SIMULATOR="1",
            )
            # The simulator speaks h2c: one TCP connection carries every parallel stream.
            env.setdefault("BACKEND_AI_HTTP_HTTP2_PRIOR_KNOWLEDGE", "1")
        server = GunicornProcess(
            host=args.host,
            port=args.port,
            workers=args.workers,
            threads=args.threads,
            log_level=args.log_level,
            env=env,
            output=sys.stderr,
        )
        signals = _Signals(server)
        signals.install()
        try:
            try:
                server.start()
            except BackendAIError as exc:
                logger.error("%s", exc)
                return 1
            # With --port 0 the kernel chose; GunicornProcess bound the socket and knows the port.
            port = urlsplit(server.url).port if server.url else None
            page = _page_url(args.host, port or args.port)
            if embedded:
                logger.info(
                    "no OPENAI_API_KEY or OPENAI_BASE_URL set: serving on the embedded "
                    "simulator (%s); open %s",
                    env["OPENAI_BASE_URL"],
                    page,
                )
            else:
                logger.info("upstream: %s; open %s", settings.openai_base_url or "OpenAI", page)
            code = server.wait()
        finally:
            server.stop()  # no-op once it exited; otherwise (an exception here) do not leak it
            signals.restore()
    if signals.received and code in (0, -signal.SIGTERM, -signal.SIGQUIT):
        return 0
    return code if code >= 0 else 128 - code
