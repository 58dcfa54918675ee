"""The simulator as a child process, driven from Python (tests, benchmarks, the service).

A child process, not a thread: the simulator's CPU then never counts against the client being
measured, and its event loop never competes with the client's threads for the GIL. The child
binds port 0 and announces its address as one JSON line on stdout; it also stops when its stdin
closes, so it cannot outlive a parent that was killed.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import json
import logging
import os
import select
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx2

from backend_ai.errors import LifecycleError, SimulatorError

from .profile import (
    DEFAULT_PROFILE,
    FAST_PROFILE,
    Budget,
    SimProfile,
    parse_budget,
    parse_sim_keys,
)
from .server import ServerInfo
from .tls import client_ssl_context

__all__ = ["SimulatorProcess", "run_simulator"]

logger = logging.getLogger(__name__)

_PROFILES = {"default": DEFAULT_PROFILE, "fast": FAST_PROFILE}
_STOP_TIMEOUT_S = 5.0


class _State(enum.Enum):
    UNSTARTED = "unstarted"
    RUNNING = "running"
    CLOSED = "closed"


class SimulatorProcess:
    """Start, query and stop one simulator child process.

    ``sim_keys`` are server-wide defaults (``ttft_ms=20, itl_ms=2, ...``) applied over
    ``profile`` ("default" looks like a real model, "fast" is for tests); they are validated
    here, so a typo fails in the caller, not in the child.
    """

    def __init__(
        self,
        *,
        tls: bool = False,
        host: str = "127.0.0.1",
        profile: str = "default",
        budget: Budget | Mapping[str, Any] | None = None,
        startup_timeout: float = 20.0,
        log_level: str = "WARNING",
        **sim_keys: Any,
    ) -> None:
        if profile not in _PROFILES:
            raise SimulatorError(f"unknown profile {profile!r}; allowed: {sorted(_PROFILES)}")
        self.defaults: SimProfile = _PROFILES[profile].with_keys(
            parse_sim_keys(sim_keys, source="run_simulator()")
        )
        if isinstance(budget, Mapping):
            budget = parse_budget(budget)
        self.budget: Budget = budget if budget is not None else Budget()
        self.tls = tls
        self.host = host
        self.startup_timeout = startup_timeout
        self.log_level = log_level
        self.info: ServerInfo | None = None
        self._state = _State.UNSTARTED
        self._owner_pid = os.getpid()
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._client: httpx2.Client | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def _command(self, workdir: Path) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "backend_ai.simulator",
            f"--host={self.host}",
            "--port=0",
            "--announce=json",
            "--exit-on-stdin-eof",
            f"--log-level={self.log_level}",
        ]
        for key, value in self.defaults.as_dict().items():
            if value is not None:
                command.append(f"--{key.replace('_', '-')}={value}")
        if self.budget.max_concurrent_per_key is not None:
            command.append(f"--max-concurrent-per-key={self.budget.max_concurrent_per_key}")
        if self.budget.rps_per_key is not None:
            command.append(f"--rps-per-key={self.budget.rps_per_key}")
        for key in ("rpm_per_key", "tpm_per_key"):
            if getattr(self.budget, key) is not None:
                command.append(f"--{key.replace('_', '-')}={getattr(self.budget, key)}")
        if self.budget.window_s != Budget.window_s:
            command.append(f"--budget-window-s={self.budget.window_s}")
        if self.tls:
            command += ["--tls", f"--tls-dir={workdir / 'tls'}"]
        return command

    def start(self) -> SimulatorProcess:
        """Start the child and return once it answers; raises SimulatorError if it cannot."""
        if self._state is not _State.UNSTARTED:
            raise LifecycleError(f"cannot start a simulator that is {self._state.value}")
        self._state = _State.RUNNING
        atexit.register(self.close)
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        self._workdir = Path(tempfile.mkdtemp(prefix="backend-ai-sim-"))
        log_path = self._workdir / "simulator.log"
        with log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                self._command(self._workdir),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.info = self._read_announcement()
        self._client = httpx2.Client(
            base_url=self.info.origin,
            verify=self.ssl_context() if self.tls else True,
            timeout=10.0,
            trust_env=False,
        )
        self._request("GET", "/_sim/health")
        logger.info("simulator pid %d ready at %s", self.info.pid, self.info.base_url)

    def _read_announcement(self) -> ServerInfo:
        proc = self._proc
        assert proc is not None
        assert proc.stdout is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SimulatorError(
                    f"simulator did not start within {self.startup_timeout:g}s{self._log_tail()}"
                )
            readable, _, _ = select.select([proc.stdout], [], [], remaining)
            if not readable:
                continue
            line = proc.stdout.readline()
            if not line:
                code = proc.wait(timeout=_STOP_TIMEOUT_S)
                raise SimulatorError(
                    f"simulator exited with code {code} before it was ready{self._log_tail()}"
                )
            try:
                return ServerInfo(**json.loads(line))
            except (ValueError, TypeError):
                logger.debug("simulator said: %r", line)

    def _log_tail(self, lines: int = 20) -> str:
        if self._workdir is None:
            return ""
        try:
            text = (self._workdir / "simulator.log").read_text(errors="replace")
        except OSError:
            return ""
        tail = "\n".join(text.splitlines()[-lines:])
        return f"; its log ends with:\n{tail}" if tail else ""

    def close(self) -> None:
        """Stop the child (gracefully, then by force) and reap it; safe to call twice.

        Does nothing in a forked copy of the process that started it.
        """
        if self._state is _State.CLOSED:
            return
        if os.getpid() != self._owner_pid:
            # A forked child (a gunicorn worker, say) inherited this handle and its atexit
            # hook; the simulator belongs to the process that started it.
            return
        self._state = _State.CLOSED
        atexit.unregister(self.close)
        if self._client is not None:
            self._client.close()
        proc = self._proc
        if proc is not None:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                logger.warning("simulator pid %d ignored SIGTERM; killing it", proc.pid)
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> SimulatorProcess:
        return self.start() if self._state is _State.UNSTARTED else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- where it is ---------------------------------------------------------------------------
    def _info(self) -> ServerInfo:
        if self._state is not _State.RUNNING or self.info is None:
            raise LifecycleError(f"the simulator is {self._state.value}, not running")
        return self.info

    @property
    def base_url(self) -> str:
        """``http(s)://127.0.0.1:PORT/v1``: pass as the OpenAI client's ``base_url``."""
        return self._info().base_url

    @property
    def origin(self) -> str:
        return self._info().origin

    @property
    def port(self) -> int:
        return self._info().port

    @property
    def pid(self) -> int:
        return self._info().pid

    @property
    def ca_cert_path(self) -> str | None:
        """PEM file of the simulator's CA when ``tls=True``, else None."""
        return self._info().ca_cert_path

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting the simulator's CA (ALPN h2, http/1.1); TLS only."""
        path = self.ca_cert_path
        if path is None:
            raise SimulatorError("this simulator was started without tls=True")
        return client_ssl_context(path)

    # -- control -------------------------------------------------------------------------------
    def _request(self, method: str, path: str, json_body: Any = None) -> Any:
        self._info()
        assert self._client is not None
        try:
            response = self._client.request(method, path, json=json_body)
        except httpx2.HTTPError as exc:
            raise SimulatorError(f"simulator did not answer {method} {path}: {exc!r}") from exc
        if response.status_code != 200:
            raise SimulatorError(
                f"simulator answered {method} {path} with {response.status_code}: {response.text}"
            )
        return response.json()

    def stats(self, *, records: bool = True) -> dict[str, Any]:
        """``GET /_sim/stats``; ``records=False`` leaves out the per-request records."""
        return dict(self._request("GET", "/_sim/stats" + ("" if records else "?records=0")))

    def reset(self) -> None:
        """Zero the stats and fault counters; restore the start-up defaults and budget."""
        self._request("POST", "/_sim/reset")

    def configure(
        self,
        defaults: Mapping[str, Any] | None = None,
        budget: Budget | Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Replace the defaults (applied over the start-up ones) and/or the budget.

        Returns the resulting config. ``None`` leaves that part unchanged; ``budget={}``
        removes the limits.
        """
        body: dict[str, Any] = {}
        if defaults is not None:
            body["defaults"] = dict(defaults)
        if isinstance(budget, Budget):
            body["budget"] = budget.as_dict()
        elif budget is not None:
            body["budget"] = dict(budget)
        return dict(self._request("POST", "/_sim/config", body))

    def wait_for_stats(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        timeout: float = 5.0,
        interval: float = 0.005,
        records: bool = False,
    ) -> dict[str, Any]:
        """Poll the stats until ``predicate(stats)`` holds; raise SimulatorError on timeout.

        For facts the server learns asynchronously (a client's disconnect), where asserting
        on one snapshot right away would race the server.
        """
        deadline = time.monotonic() + timeout
        while True:
            snapshot = self.stats(records=records)
            if predicate(snapshot):
                return snapshot
            if time.monotonic() >= deadline:
                raise SimulatorError(
                    f"stats condition not met within {timeout:g}s; last stats: {snapshot}"
                )
            time.sleep(interval)


@contextlib.contextmanager
def run_simulator(
    *,
    tls: bool = False,
    profile: str = "default",
    budget: Budget | Mapping[str, Any] | None = None,
    **sim_keys: Any,
) -> Iterator[SimulatorProcess]:
    """``with run_simulator(ttft_ms=20, itl_ms=2) as sim:`` a running simulator child process."""
    sim = SimulatorProcess(tls=tls, profile=profile, budget=budget, **sim_keys)
    with sim:
        yield sim
