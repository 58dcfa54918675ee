"""Fixtures of the reliability tests: gunicorn servers configured per test module.

Every server is a real gunicorn (gthread, one worker, so ``/metrics`` and ``/proc/<pid>`` are
those of the process that served the test) started with ``GunicornProcess``, its environment
decided here and never by the shell, its whole log written to a file the test can read (the
``log_lines`` of ``GunicornProcess`` keep only the last 500). The upstream is the session's
simulator from ``backend_ai.simulator.pytest_plugin``, reset before each test by the
``simulator`` fixture; a few servers point elsewhere (a closed port, a TLS server).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from backend_ai.app.gunicorn_process import GunicornProcess

from .helpers import CANARY_KEY, ProcessProbe

#: Short settings that make every fault visible within a second or two.
FAST_SERVICE_ENV: dict[str, str] = {
    "BACKEND_AI_HEARTBEAT_S": "0.2",
    "BACKEND_AI_STALL_TIMEOUT_S": "1",
    "BACKEND_AI_DEADLINE_S": "20",
    "BACKEND_AI_MAX_RETRY_WAIT_S": "5",
    "BACKEND_AI_HTTP_TIMEOUT": "10",
    "BACKEND_AI_HTTP_CONNECT_TIMEOUT": "3",
}


def log_config(path: Path, level: str) -> Path:
    """A gunicorn ``--log-config-json`` sending every logger at ``level`` to stderr.

    Without it only gunicorn's own loggers reach stderr; with it the app's, the SDK's and
    httpx's lines do too, so a test can read every line the process logged.
    """
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": False},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "generic",
                "stream": "ext://sys.stderr",
            }
        },
        "formatters": {
            "generic": {
                "format": "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s",
                "class": "logging.Formatter",
            }
        },
    }
    path.write_text(json.dumps(config))
    return path


@dataclass
class Service:
    """A running gunicorn and what the tests need to look at it."""

    process: GunicornProcess
    log_path: Path
    upstream_port: int

    @property
    def url(self) -> str:
        assert self.process.url is not None
        return self.process.url

    @property
    def port(self) -> int:
        return int(self.url.rstrip("/").rsplit(":", 1)[1])

    @property
    def worker_pid(self) -> int:
        assert len(self.process.worker_pids) == 1, self.process.worker_pids
        return self.process.worker_pids[0]

    def probe(self) -> ProcessProbe:
        return ProcessProbe(
            self.worker_pid, server_port=self.port, upstream_port=self.upstream_port
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def assert_alive(self) -> None:
        assert self.process.returncode is None, f"gunicorn died:\n{self.log_text()[-3000:]}"


StartService = Callable[..., Service]


def _service_env(base_url: str, log_level: str, log_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BACKEND_AI_"))}
    env.update(
        OPENAI_API_KEY=CANARY_KEY,
        OPENAI_BASE_URL=base_url,
        BACKEND_AI_HISTORY_DB=str(log_dir / "history.sqlite3"),
        **FAST_SERVICE_ENV,
    )
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def start_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartService]:
    """``start_service(base_url, threads=16, log_level="INFO", **env)``: a gunicorn for this
    module, stopped at its end. ``env`` overrides ``FAST_SERVICE_ENV``."""
    started: list[tuple[GunicornProcess, IO[str]]] = []

    def start(base_url: str, *, threads: int = 16, log_level: str = "INFO", **env: str) -> Service:
        directory = tmp_path_factory.mktemp("gunicorn")
        log_path = directory / "gunicorn.log"
        output = log_path.open("w")
        process = GunicornProcess(
            workers=1,
            threads=threads,
            env=_service_env(base_url, log_level, directory, **env),
            output=output,
            extra_args=["--log-config-json", str(log_config(directory / "log.json", log_level))],
        )
        started.append((process, output))
        process.start()
        upstream_port = httpx.URL(base_url).port or 443
        return Service(process=process, log_path=log_path, upstream_port=upstream_port)

    yield start
    for process, output in started:
        process.stop()
        output.close()


def sim_env(**extra: str) -> dict[str, str]:
    """Environment of a service on the simulator (h2c, sim controls accepted)."""
    return {
        "BACKEND_AI_UPSTREAM_SIMULATOR": "1",
        "BACKEND_AI_HTTP_HTTP2_PRIOR_KNOWLEDGE": "1",
        **extra,
    }


Figures = Callable[..., None]


@pytest.fixture(scope="session")
def figures() -> Iterator[Figures]:
    """``figures(name, **values)``: numbers for docs/RELIABILITY.md, written as JSON to the file
    named by ``BACKEND_AI_RELIABILITY_FIGURES`` at the end of the session (nowhere if unset)."""
    collected: dict[str, dict[str, Any]] = {}

    def record(name: str, **values: Any) -> None:
        collected.setdefault(name, {}).update(values)

    yield record
    target = os.environ.get("BACKEND_AI_RELIABILITY_FIGURES")
    if target and collected:
        path = Path(target)
        previous = json.loads(path.read_text()) if path.exists() else {}
        previous.update(collected)
        path.write_text(json.dumps(previous, indent=2, sort_keys=True) + "\n")


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A plain HTTP/1.1 client, as a browser or curl would talk to the service."""
    with httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0)) as client:
        yield client
