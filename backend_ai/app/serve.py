"""``backend-ai serve``: the service under gunicorn, on the embedded simulator when no key is set.

gunicorn runs as a child process (``python -m gunicorn -c python:backend_ai.app.gunicorn_conf``)
rather than inside this one, so this process stays a small supervisor that owns everything it
started:

* with neither ``OPENAI_API_KEY`` nor ``OPENAI_BASE_URL`` set it first starts the upstream
  simulator (realistic default profile: ~300 ms to first token, ~30 ms per token) and points
  the app at it through the child's environment;
* the first SIGINT or SIGTERM is passed on to gunicorn as SIGTERM — a graceful shutdown in
  which every open stream ends with its final ``done`` event — and a second one as SIGQUIT
  (immediate); the simulator is stopped once gunicorn has exited;
* gunicorn is asked to receive SIGTERM if this process dies (Linux ``PR_SET_PDEATHSIG``), and
  the simulator exits when its stdin closes, so even a ``kill -9`` of this process leaves no
  orphans behind.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from types import FrameType

import httpx

from backend_ai.app.settings import Settings
from backend_ai.errors import BackendAIError

__all__ = ["add_arguments", "build_command", "run"]

logger = logging.getLogger("backend_ai.serve")

_APP = "backend_ai.app.factory:create_app()"
_CONFIG = "python:backend_ai.app.gunicorn_conf"
_SIMULATOR_KEY = "sk-simulator-local"
_READY_TIMEOUT_S = 60.0
_PR_SET_PDEATHSIG = 1


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


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _page_url(host: str, port: int) -> str:
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, host)
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def build_command(args: argparse.Namespace) -> list[str]:
    """The gunicorn command line for ``args``."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        _CONFIG,
        "--bind",
        _bind(args.host, args.port),
        "--workers",
        str(args.workers),
        "--threads",
        str(args.threads),
        "--log-level",
        args.log_level,
        _APP,
    ]


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel for SIGTERM when we die.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> bool:
    """Poll ``/health`` until it answers; False if gunicorn exited first or it took too long."""
    deadline = time.monotonic() + _READY_TIMEOUT_S
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                response = client.get(url + "health")
                ours = "upstream" in response.json()
            except (httpx.HTTPError, ValueError, TypeError):
                ours = False
            if ours:
                return True
            time.sleep(0.05)
    return False


class _Signals:
    """First SIGINT/SIGTERM: graceful stop of gunicorn; second: immediate stop."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
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
        forward = signal.SIGTERM if self.received == 1 else signal.SIGQUIT
        if self.received == 1:
            logger.info("stopping: open streams end with their final event")
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(forward)


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
    page = _page_url(args.host, args.port)
    with contextlib.ExitStack() as stack:
        if settings.openai_api_key is None and settings.openai_base_url is None:
            from backend_ai.simulator import SimulatorProcess

            simulator = stack.enter_context(SimulatorProcess(profile="default"))
            env.update(
                OPENAI_BASE_URL=simulator.base_url,
                OPENAI_API_KEY=_SIMULATOR_KEY,
                BACKEND_AI_UPSTREAM_SIMULATOR="1",
            )
            # The simulator speaks h2c: one TCP connection carries every parallel stream.
            env.setdefault("BACKEND_AI_HTTP_HTTP2_PRIOR_KNOWLEDGE", "1")
            ready_line = (
                f"no OPENAI_API_KEY or OPENAI_BASE_URL set: serving on the embedded simulator "
                f"({simulator.base_url}); open {page}"
            )
        else:
            upstream = settings.openai_base_url or "the OpenAI API"
            ready_line = f"upstream: {upstream}; open {page}"
        proc = subprocess.Popen(
            build_command(args),
            env=env,
            start_new_session=True,  # a terminal's Ctrl-C reaches us only; we pass it on
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        signals = _Signals(proc)
        signals.install()
        try:
            if _wait_ready(page, proc):
                logger.info("%s", ready_line)
            code = proc.wait()
        finally:
            if proc.poll() is None:  # an exception in this process: do not leave gunicorn
                proc.terminate()
                proc.wait()
            signals.restore()
    if signals.received and code in (0, -signal.SIGTERM, -signal.SIGQUIT):
        return 0
    return code if code >= 0 else 128 - code
