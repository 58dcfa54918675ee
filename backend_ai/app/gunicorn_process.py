"""The service under a real gunicorn, as a child process: for ``serve``, tests and load tests.

``GunicornProcess`` binds the listening socket itself (so ``port=0`` works and the address is
known whatever gunicorn's log level), hands it to ``python -m gunicorn -c
python:backend_ai.app.gunicorn_conf`` as ``fd://N``, reads its log for the worker pids (logged
at info level), waits until ``/health`` answers, and stops it with the signal the caller
chooses (SIGTERM: graceful).
The child gets SIGTERM if this process dies (Linux ``PR_SET_PDEATHSIG``), so a crashed test
run or a ``kill -9``-ed ``serve`` leaves no server behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import IO, Self

import httpx2

from backend_ai.app import gunicorn_conf
from backend_ai.app.child_process import die_with_parent
from backend_ai.errors import BackendAIError, LifecycleError

__all__ = ["GunicornError", "GunicornProcess", "listen"]

logger = logging.getLogger(__name__)

APP_SPEC = "backend_ai.app.factory:create_app()"
CONFIG_SPEC = "python:backend_ai.app.gunicorn_conf"
_BOOTING = re.compile(r"Booting worker with pid: (\d+)")


class GunicornError(BackendAIError):
    """gunicorn did not start, or did not become ready in time."""


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket gunicorn can inherit; ``OSError`` if the address is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


class GunicornProcess:
    """One gunicorn master (and its workers) serving the app; ``stop()`` safe twice."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        workers: int = 1,
        threads: int = gunicorn_conf.threads,
        log_level: str = "info",
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        output: IO[str] | None = None,
        ready_timeout: float = 60.0,
        app: str = APP_SPEC,
        config: str | None = CONFIG_SPEC,
        listener: socket.socket | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        """``app`` and ``config`` default to the Flask service; another WSGI app (the Django
        example) passes its own, and ``config=None`` lets gunicorn read the
        ``gunicorn.conf.py`` of its working directory (after ``--chdir``).

        ``cwd`` is the child's working directory (default: ours). ``python -m gunicorn`` puts
        it first on ``sys.path``, ahead of ``PYTHONPATH``, so serving another checkout's
        ``backend_ai`` through ``PYTHONPATH`` needs a ``cwd`` that holds no ``backend_ai``."""
        self._host = host
        self._port = port
        #: An already bound socket (from ``listen``) to serve on instead of binding host:port;
        #: ``start`` hands it to gunicorn and closes this process's copy.
        self._listener = listener
        self._arguments = [
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--log-level",
            log_level,
            *extra_args,
            app,
        ]
        self._config = config
        self._cwd = cwd
        self._env = dict(env) if env is not None else None
        self._output = output
        self._ready_timeout = ready_timeout
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()
        self.url: str | None = None
        self.worker_pids: list[int] = []
        #: The last lines gunicorn logged (bounded: ``serve`` may run for months).
        self.log_lines: deque[str] = deque(maxlen=500)

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise LifecycleError("gunicorn was not started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def start(self) -> Self:
        """Start gunicorn and return once ``/health`` answers; ``GunicornError`` otherwise."""
        if self._proc is not None:
            raise LifecycleError("this GunicornProcess was already started")
        listener = self._listener or listen(self._host, self._port)
        self._listener = None
        with listener:
            command = [
                sys.executable,
                "-m",
                "gunicorn",
                *(("--config", self._config) if self._config is not None else ()),
                "--bind",
                f"fd://{listener.fileno()}",
                *self._arguments,
            ]
            self._proc = subprocess.Popen(
                command,
                env=self._env,
                cwd=self._cwd,
                stdin=subprocess.DEVNULL,
                stdout=None,  # gunicorn logs to stderr; stdout is left to the app
                stderr=subprocess.PIPE,
                text=True,
                bufsize=1,
                pass_fds=(listener.fileno(),),
                start_new_session=True,  # a terminal's Ctrl-C reaches our process, which decides
                preexec_fn=die_with_parent,
            )
            host, port = listener.getsockname()[:2]
            self.url = _url(host, port)
        self._reader = threading.Thread(
            target=self._read_log, name="backend-ai-gunicorn-log", daemon=True
        )
        self._reader.start()
        try:
            self._wait_ready()
        except BaseException:
            self.stop(signal.SIGKILL)
            raise
        return self

    def _read_log(self) -> None:
        assert self._proc is not None
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            with self._lock:
                self.log_lines.append(line)
                if match := _BOOTING.search(line):
                    self.worker_pids.append(int(match.group(1)))
            if self._output is not None:
                self._output.write(line)
                self._output.flush()

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self._ready_timeout
        assert self.url is not None
        with httpx2.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    break
                try:
                    if "upstream" in client.get(self.url + "health").json():
                        return
                except (httpx2.HTTPError, ValueError, TypeError):
                    pass
                time.sleep(0.02)
        raise GunicornError(f"gunicorn at {self.url} did not become ready{self._tail()}")

    def _tail(self, lines: int = 15) -> str:
        with self._lock:
            tail = "".join(list(self.log_lines)[-lines:])
        return f"; its log ends with:\n{tail}" if tail else ""

    def send_signal(self, signum: int) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signum)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for gunicorn to exit; ``subprocess.TimeoutExpired`` after ``timeout``."""
        if self._proc is None:
            raise LifecycleError("gunicorn was not started")
        code = self._proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(5.0)
        if self._proc.stderr is not None and (self._reader is None or not self._reader.is_alive()):
            self._proc.stderr.close()
        return code

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Send ``signum`` (SIGTERM: graceful), wait, kill if needed; the exit code."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self.send_signal(signum)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("gunicorn pid %d did not stop in %.0f s; killing", self.pid, timeout)
                self._proc.kill()
                self._proc.wait()
        return self.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
