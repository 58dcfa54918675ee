"""Fixtures for the service's tests: apps on the Flask test client, and a real gunicorn.

Apps are built from explicit ``Settings`` (never the ambient environment) and closed after the
test. ``service`` is one gunicorn (one worker, so ``/metrics`` is that of the process that
served the test) on the session's simulator; tests that stop a server start their own with
``start_service``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient

from backend_ai.app.extension import get_state
from backend_ai.app.factory import create_app
from backend_ai.app.gunicorn_process import GunicornProcess
from backend_ai.app.settings import Settings
from backend_ai.simulator import SimulatorProcess
from backend_ai.streaming import PoolSettings
from tests.support.sse import Frame, LiveStream

#: Must never appear in a response or a log line.
SECRET_KEY = "sk-test-SECRET-0123456789abcdef"
#: Nothing listens there: an app that would call upstream fails fast instead.
DEAD_UPSTREAM = "http://127.0.0.1:9/v1"

MakeApp = Callable[..., Flask]

DREAM = "dream/interpret-stream"


@contextlib.contextmanager
def open_stream(
    http: httpx.Client, server: GunicornProcess, route: str, body: dict[str, Any]
) -> Iterator[LiveStream]:
    """A POST whose frames are read as they arrive; leaving the block closes the connection.

    Checks the headers every streaming route sends, whichever framework serves it.
    """
    assert server.url is not None
    sent_at = time.perf_counter()
    with http.stream("POST", server.url + route, json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-accel-buffering"] == "no"
        assert len(response.headers["x-request-id"]) == 32
        yield LiveStream(response=response, sent_at=sent_at)


def read_through_sigterm(http: httpx.Client, server: GunicornProcess) -> list[Frame]:
    """A long dream run whose server gets SIGTERM at the run's first chunk, read to its end."""
    body = {"dream": "a dream", "sim": {"ttft_ms": 20, "itl_ms": 10, "tokens": 2000}}
    with open_stream(http, server, DREAM, body) as live:
        frames = iter(live)
        for frame in frames:
            if frame.type == "chunk":
                break
        server.send_signal(signal.SIGTERM)
        for _ in frames:
            pass
    return live.frames


@dataclass
class CutRun:
    """A dream run whose client closed the connection while all three sections streamed."""

    frames: list[Frame]
    #: The simulator's statistics once every upstream stream of the run was closed.
    stats: dict[str, Any]
    #: From the client's close to the last upstream stream's close.
    latency_s: float
    #: How long the upstream would still have streamed had nobody stopped it.
    remaining_s: float


def cut_while_every_section_streams(
    http: httpx.Client, server: GunicornProcess, simulator: SimulatorProcess
) -> CutRun:
    itl_ms, tokens = 10, 2000  # 20 s of output per section if nobody stops it
    body = {"dream": "a dream", "sim": {"ttft_ms": 20, "itl_ms": itl_ms, "tokens": tokens}}
    with open_stream(http, server, DREAM, body) as live:
        for _ in live:
            seen = {f.event["section"] for f in live.frames if f.type == "chunk" and f.event}
            if seen == {"summary", "symbols", "recommendations"}:
                break
        closed_at = time.time()
    stats = simulator.wait_for_stats(
        lambda s: len(s["disconnects"]) >= 3 and s["streams_active"] == 0, timeout=10.0
    )
    return CutRun(
        frames=live.frames,
        stats=stats,
        latency_s=max(d["t"] for d in stats["disconnects"]) - closed_at,
        remaining_s=tokens * itl_ms / 1000,
    )


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[MakeApp]:
    """``make_app(**settings_fields)``: a test app, closed at the end of the test."""
    apps: list[Flask] = []

    def factory(**overrides: Any) -> Flask:
        fields: dict[str, Any] = {
            "openai_api_key": SECRET_KEY,
            "openai_base_url": DEAD_UPSTREAM,
            "history_db_path": str(tmp_path / "history.sqlite3"),
        }
        fields.update(overrides)
        app = create_app(Settings(**fields))
        app.testing = True
        apps.append(app)
        return app

    yield factory
    for app in apps:
        get_state(app).close()


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def sim_app(make_app: MakeApp, simulator: SimulatorProcess) -> Flask:
    """An app on the (reset) simulator, over HTTP/2 as in production."""
    return make_app(
        openai_base_url=simulator.base_url,
        upstream_is_simulator=True,
        http=PoolSettings(http2_prior_knowledge=True),
    )


@pytest.fixture
def sim_client(sim_app: Flask) -> FlaskClient:
    return sim_app.test_client()


def service_env(simulator: SimulatorProcess, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a gunicorn child serving the app on ``simulator``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "BACKEND_AI_"))  # the test decides, not the shell
    }
    env.update(
        OPENAI_API_KEY=SECRET_KEY,
        OPENAI_BASE_URL=simulator.base_url,
        BACKEND_AI_UPSTREAM_SIMULATOR="1",
        BACKEND_AI_HTTP_HTTP2_PRIOR_KNOWLEDGE="1",
        BACKEND_AI_HEARTBEAT_S="0.2",
        BACKEND_AI_HISTORY_DB=str(tmp_path / "history.sqlite3"),
    )
    env.update(extra)
    return env


StartService = Callable[..., GunicornProcess]


@pytest.fixture
def start_service(simulator: SimulatorProcess, tmp_path: Path) -> Iterator[StartService]:
    """``start_service(**env)``: a gunicorn of this test only, stopped (or reaped) at the end."""
    servers: list[GunicornProcess] = []

    def start(workers: int = 1, **env: str) -> GunicornProcess:
        server = GunicornProcess(
            workers=workers, threads=16, env=service_env(simulator, tmp_path, **env)
        )
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def service_server(
    simulator_server: SimulatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GunicornProcess]:
    """One gunicorn for the session, on the session's simulator."""
    env = service_env(simulator_server, tmp_path_factory.mktemp("service"))
    with GunicornProcess(workers=1, threads=32, env=env) as server:
        yield server


@pytest.fixture
def service(service_server: GunicornProcess, simulator: SimulatorProcess) -> GunicornProcess:
    """The session's gunicorn, with the simulator reset for this test."""
    assert service_server.returncode is None, "the session's gunicorn died"
    return service_server


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A plain HTTP/1.1 client, as a browser or curl would talk to the service."""
    with httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0)) as client:
        yield client
