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
import errno
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from types import FrameType
from urllib.parse import urlsplit

from backend_ai.app import gunicorn_conf
from backend_ai.app.gunicorn_process import GunicornProcess, listen
from backend_ai.app.settings import Settings
from backend_ai.errors import BackendAIError

__all__ = ["DESCRIPTION", "EPILOG", "add_arguments", "run"]

logger = logging.getLogger("backend_ai.serve")

_SIMULATOR_KEY = "sk-simulator-local"

DESCRIPTION = """\
Serve the web service under gunicorn: the streaming routes (dream, I Ching, tarot, compare),
the live page at / and /health, /metrics, /history.

Each request's sections run in parallel and come back as one Server-Sent-Events stream; one
log line per request says how it went (never its text or a key)."""

EPILOG = """\
environment:
  OPENAI_API_KEY      the upstream's API key (OpenAI unless OPENAI_BASE_URL says otherwise)
  OPENAI_BASE_URL     any OpenAI-compatible /v1 URL (a key is optional there)
  with neither set, serve starts the embedded upstream simulator (about 300 ms to the first
  token, then 30 ms a token) and points the service at it: no account needed to try it.
  BACKEND_AI_*        limits, timeouts, models, history; all in docs/SERVICE.md, checked
                      before anything starts (a bad value is one line and exit status 2)

history:
  finished readings go to $XDG_STATE_HOME/backend_ai/history.sqlite3 (~/.local/state/...),
  or BACKEND_AI_HISTORY_DB, or --history PATH; --no-history keeps none. Readings older than
  BACKEND_AI_HISTORY_MAX_AGE_DAYS (30) and beyond BACKEND_AI_HISTORY_MAX_ROWS (10000) are
  pruned.

examples:
  backend-ai serve                              # simulator, http://127.0.0.1:8000/
  OPENAI_API_KEY=sk-... backend-ai serve --host 0.0.0.0 --port 8080 --workers 4
  backend-ai serve --port 0 --no-history       # any free port, nothing written to disk"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; 0.0.0.0 for every interface (default 127.0.0.1)",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=8000,
        help="port to listen on; 0 picks a free one (default 8000)",
    )
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=gunicorn_conf.workers,
        help=f"gunicorn worker processes; about one per CPU core (default {gunicorn_conf.workers})",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=gunicorn_conf.threads,
        help="threads per worker = concurrent streams per worker "
        f"(default {gunicorn_conf.threads})",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="log level of this process and gunicorn; info shows one line per request "
        "(default info)",
    )
    history = parser.add_mutually_exclusive_group()
    history.add_argument(
        "--history",
        metavar="PATH",
        help="SQLite file for the reading history (default: BACKEND_AI_HISTORY_DB, else "
        "$XDG_STATE_HOME/backend_ai/history.sqlite3)",
    )
    history.add_argument(
        "--no-history", action="store_true", help="keep no history (GET /history answers 404)"
    )


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 0 to 65535, got {value}")
    return value


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


def _refuse(message: str) -> int:
    """A problem the user can fix: one line, argparse's style and exit status."""
    print(f"backend-ai serve: error: {message}", file=sys.stderr)
    return 2


def _check_history(path: str) -> str | None:
    """Why the history file cannot be written, or None (its directory is created here)."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        return f"cannot create the history directory {directory}: {exc.strerror}"
    if os.path.isdir(path):
        return f"the history path {path} is a directory; give a file name"
    target = path if os.path.exists(path) else directory
    if not os.access(target, os.W_OK):
        return f"cannot write the history file {path}: permission denied"
    return None


def _bind(host: str, port: int) -> socket.socket | str:
    """The listening socket, or why it cannot be had."""
    try:
        return listen(host, port)
    except socket.gaierror:
        return f"cannot listen on {host!r}: not a known address (try 127.0.0.1 or 0.0.0.0)"
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return (
                f"port {port} on {host} is already in use; stop what uses it or pick another "
                "with --port (0 picks a free one)"
            )
        if exc.errno == errno.EACCES:
            return f"no permission to listen on port {port}; ports below 1024 need privileges"
        return f"cannot listen on {host} port {port}: {exc.strerror}"


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; the exit status is gunicorn's (0 after a requested stop).

    Everything a user can get wrong — settings, the history file, the port — is checked
    before anything starts, so a mistake is one line and exit status 2, not a traceback after
    the simulator came up.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    # One line per request of the readiness poll would drown the line that matters.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    env = dict(os.environ)
    if args.history:
        env["BACKEND_AI_HISTORY_DB"] = os.path.abspath(args.history)
    elif args.no_history:
        env["BACKEND_AI_HISTORY_DB"] = "off"
    try:
        settings = Settings.from_env(env)
    except BackendAIError as exc:
        return _refuse(f"configuration: {exc}")
    if settings.history_db_path is not None:
        problem = _check_history(settings.history_db_path)
        if problem is not None:
            return _refuse(f"{problem} (or run with --no-history)")
    listener = _bind(args.host, args.port)
    if isinstance(listener, str):
        return _refuse(listener)
    with contextlib.ExitStack() as stack:
        stack.callback(listener.close)  # gunicorn got its own copy; a failed start closes ours
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
            listener=listener,
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
            if settings.history_db_path is None:
                logger.info("history: off")
            else:
                logger.info("history: %s", settings.history_db_path)
            code = server.wait()
        finally:
            server.stop()  # no-op once it exited; otherwise (an exception here) do not leak it
            signals.restore()
    if signals.received and code in (0, -signal.SIGTERM, -signal.SIGQUIT):
        return 0
    return code if code >= 0 else 128 - code
