"""A throw-away ``redis-server`` as a child process: for tests, benchmarks and the scaling run.

The shared budget is tested against a real Redis, not a fake: a fake would agree with whatever
our Lua script assumes. Each ``RedisProcess`` runs its own server on a free loopback port in a
temporary directory, with persistence off (no RDB snapshots, no append-only file), so nothing
outlives it and two test runs never share state. ``kill()`` and ``restart()`` exist because
"Redis died" and "Redis came back empty" are the faults the budget must survive.

The child gets SIGTERM if this process dies (Linux ``PR_SET_PDEATHSIG``), as gunicorn does.
The port is chosen by binding port 0 and closing it, which another process could take before
``redis-server`` binds it; a server that fails to start is retried on a new port.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import redis

from backend_ai.app.child_process import die_with_parent
from backend_ai.errors import BackendAIError, LifecycleError

__all__ = ["REDIS_SERVER", "RedisProcess", "RedisServerError"]

#: The Debian package ``redis-server`` installs this command.
REDIS_SERVER = "redis-server"
_START_ATTEMPTS = 5


class RedisServerError(BackendAIError):
    """``redis-server`` is missing, or did not start."""


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class RedisProcess:
    """One ``redis-server`` on loopback, no persistence; ``stop()`` safe twice."""

    def __init__(
        self,
        *,
        executable: str = REDIS_SERVER,
        host: str = "127.0.0.1",
        ready_timeout: float = 10.0,
    ) -> None:
        path = shutil.which(executable)
        if path is None:
            raise RedisServerError(
                f"{executable!r} not found on PATH (Debian: apt-get install redis-server)"
            )
        self._executable = path
        self.host = host
        self.port = 0
        self._ready_timeout = ready_timeout
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available(executable: str = REDIS_SERVER) -> bool:
        return shutil.which(executable) is not None

    @property
    def url(self) -> str:
        if not self.port:
            raise LifecycleError("redis-server was not started")
        return f"redis://{self.host}:{self.port}/0"

    @property
    def directory(self) -> Path | None:
        """The server's working directory while it exists."""
        return self._dir

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Start on a free port and return once it answers PING."""
        if self.running:
            raise LifecycleError("this redis-server is already running")
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="backend-ai-redis-"))
        last = ""
        for _ in range(_START_ATTEMPTS):
            self.port = _free_port(self.host)
            if self._spawn():
                return self
            last = self._log_tail()
        raise RedisServerError(f"redis-server did not start; its log ends with:\n{last}")

    def restart(self) -> Self:
        """Start again on the same port after ``kill()``/``stop()``: an empty Redis is back."""
        if self.running:
            raise LifecycleError("stop or kill redis-server before restarting it")
        if not self.port or not self._spawn():
            raise RedisServerError(f"redis-server did not restart:\n{self._log_tail()}")
        return self

    def _spawn(self) -> bool:
        assert self._dir is not None
        log = self._dir / "redis.log"
        command = [
            self._executable,
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self._dir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(log),
            "--loglevel", "notice",
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        client = redis.Redis(host=self.host, port=self.port, socket_timeout=1.0)
        deadline = time.monotonic() + self._ready_timeout
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    return False
                try:
                    if client.ping():
                        return True
                except redis.RedisError:
                    time.sleep(0.02)
        finally:
            client.close()
        self._terminate(signal.SIGKILL)
        return False

    def _log_tail(self, lines: int = 10) -> str:
        if self._dir is None:
            return ""
        with contextlib.suppress(OSError):
            return "".join((self._dir / "redis.log").read_text().splitlines(True)[-lines:])
        return ""

    def _terminate(self, signum: int) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signum)
            try:
                self._proc.wait(10.0)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def kill(self) -> None:
        """SIGKILL: Redis vanishes mid-conversation, as in a crash (the port stays reserved)."""
        self._terminate(signal.SIGKILL)

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        self._terminate(signal.SIGTERM)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
