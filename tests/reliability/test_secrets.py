"""Secrets and exposure: a canary API key through every error path, CORS, bearer-token auth.

The canary (``sk-canary-<32 random hex>``) is the service's upstream key. A scripted upstream
answers each section differently — 401, 403, 400, 429 and 500 whose messages quote the key, a
502 HTML page with the key, an error event mid-stream quoting it, a malformed line carrying it,
a reset connection — and the test then looks for the key (and for its random part alone, in
case a prefix was masked) in every event, every error message, every log line at DEBUG (the
Flask test client's records through ``caplog``, and a real gunicorn's whole stderr), ``/stats``,
``/metrics`` and the history rows. Upstream messages must reach the client shortened and on
one line.

Already covered in ``tests/integration/test_validation.py`` and not repeated here: the bearer
token on the dream route and ``/history``, open ``/health`` and ``/metrics``, configured CORS
origins, a generic 500 at INFO level, no key in ``/health``.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask

from backend_ai.app.extension import get_state
from backend_ai.app.factory import create_app
from backend_ai.app.settings import Settings
from backend_ai.errors import ConfigError
from backend_ai.streaming import RunOptions

from .conftest import Service, StartService
from .helpers import (
    CANARY_KEY,
    ScriptedUpstream,
    check_stream,
    parse_sse_body,
    post_stream,
    wait_until,
)

#: The random part of the canary: caught even if an upstream masks the ``sk-canary-`` prefix.
CANARY_TAIL = CANARY_KEY.removeprefix("sk-canary-")
#: The bearer token clients must send when auth is on: a secret too.
AUTH_TOKEN = "tok-" + CANARY_TAIL[::-1]
MAX_MESSAGE_CHARS = 200  # upstream.MAX_MESSAGE_CHARS

#: Model name -> what the scripted upstream does -> the code the section must end with.
ERROR_PATHS = {
    "echo-401": "auth_error",
    "echo-403": "auth_error",
    "echo-400": "bad_request",
    "echo-429": "rate_limited",
    "echo-500": "upstream_error",
    "echo-502-html": "upstream_error",
    "midstream-error": "upstream_error",
    "malformed-key": "malformed",
    "reset": "connection_error",
}
COMPARE_BODY = {"prompt": "Say something", "models": list(ERROR_PATHS)}


def assert_no_secret(text: str, where: str) -> None:
    for secret in (CANARY_KEY, CANARY_TAIL, AUTH_TOKEN):
        assert secret not in text, f"a secret in {where}: ...{_around(text, secret)}..."


def _around(text: str, secret: str) -> str:
    i = text.find(secret)
    return text[max(0, i - 120) : i + len(secret) + 20]


def check_error_paths(events: list[dict[str, Any]]) -> None:
    """Each scripted fault ended its section with its code and a short, one-line message."""
    outcomes = check_stream(events)
    for model, code in ERROR_PATHS.items():
        outcome = outcomes[model]
        assert (outcome.end, outcome.code) == ("error", code), (model, outcome)
        assert outcome.message, model
        assert len(outcome.message) <= MAX_MESSAGE_CHARS, (model, len(outcome.message))
        assert "\n" not in outcome.message, (model, outcome.message)
    # The key-quoting upstream messages do reach the client, shortened and without the key.
    assert "***" in outcomes["echo-401"].message, outcomes["echo-401"].message


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as server:
        yield server


@pytest.fixture
def app(upstream: ScriptedUpstream, tmp_path: Path) -> Iterator[Flask]:
    app = create_app(
        Settings(
            openai_api_key=CANARY_KEY,
            openai_base_url=upstream.base_url,
            history_db_path=str(tmp_path / "history.sqlite3"),
            run=RunOptions(max_retry_wait_s=0.05),
            auth_token=AUTH_TOKEN,
        )
    )
    yield app
    get_state(app).close()


AUTH = {"Authorization": f"Bearer {AUTH_TOKEN}"}
WRONG = {"Authorization": f"Bearer {AUTH_TOKEN}x"}


def test_no_secret_in_any_event_log_line_or_operational_route(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    client = app.test_client()
    with caplog.at_level(logging.DEBUG):  # every logger, every level
        response = client.post("/compare/stream", json=COMPARE_BODY, headers=AUTH)
        text = response.get_data(as_text=True)
        events, _ = parse_sse_body(text)
        check_error_paths(events)
        assert_no_secret(text, "the stream")
        assert_no_secret(json.dumps(dict(response.headers)), "the response headers")

        # Other error paths: bad requests, validation, auth, not found, method, media type.
        refused = [
            client.post("/compare/stream", json={"prompt": "x"}, headers=AUTH),
            client.post("/dream/interpret-stream", json={"dream": ""}, headers=AUTH),
            client.post("/dream/interpret-stream", data=b"{", headers=AUTH),
            client.post("/dream/interpret-stream", data=b"x", content_type="text/plain"),
            client.post("/dream/interpret-stream", json={"dream": "x"}),  # no token
            client.post("/dream/interpret-stream", json={"dream": "x"}, headers=WRONG),
            client.get("/nowhere"),
            client.get("/dream/interpret-stream", headers=AUTH),
            client.post("/tarot/nope-stream", json={"question": "x"}, headers=AUTH),
        ]
        for r in refused:
            assert 400 <= r.status_code < 500, r.status_code
            assert_no_secret(r.get_data(as_text=True), f"a {r.status_code} answer")

        history = get_state(app).history
        assert history is not None
        wait_until(
            lambda: client.get("/history?limit=5", headers=AUTH).get_json()["readings"],
            5.0,
            "the failed reading is saved",
        )
        rows = client.get("/history?limit=5", headers=AUTH).get_data(as_text=True)
        assert "echo-401" in rows  # the failed sections are there, with their messages...
        assert_no_secret(rows, "/history")  # ...and without the key
        assert_no_secret(client.get("/stats", headers=AUTH).get_data(as_text=True), "/stats")
        assert_no_secret(client.get("/metrics").get_data(as_text=True), "/metrics")
        assert_no_secret(client.get("/health").get_data(as_text=True), "/health")
    assert "auth_error" in caplog.text  # the failures were logged...
    assert_no_secret(caplog.text, "the log")  # ...without the key


def test_no_secret_when_the_upstream_refuses_connections(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        app = create_app(
            Settings(
                openai_api_key=CANARY_KEY,
                openai_base_url=f"http://127.0.0.1:{closed.getsockname()[1]}/v1",
                history_db_path=None,
            )
        )
        try:
            with caplog.at_level(logging.DEBUG):
                response = app.test_client().post("/dream/interpret-stream", json={"dream": "x"})
                text = response.get_data(as_text=True)
            events, _ = parse_sse_body(text)
            outcomes = check_stream(events)
            assert {o.code for o in outcomes.values()} == {"connection_error"}
            assert_no_secret(text, "the stream")
            assert_no_secret(caplog.text, "the log")
        finally:
            get_state(app).close()


def test_no_secret_in_the_log_of_an_unhandled_error_even_at_debug(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """At DEBUG level the app logs the traceback of a 500; a traceback carries the exception's
    message, which may quote whatever the failing code had in hand — here the key."""

    def boom() -> str:
        raise RuntimeError(f"upstream rejected {CANARY_KEY}")

    app.add_url_rule("/boom", "boom", boom)
    with caplog.at_level(logging.DEBUG):
        response = app.test_client().get("/boom", headers=AUTH)
    assert response.status_code == 500
    assert_no_secret(response.get_data(as_text=True), "the 500 answer")
    assert "RuntimeError" in caplog.text
    assert_no_secret(caplog.text, "the log at DEBUG")


def test_a_key_that_cannot_be_sent_is_refused_at_start_up() -> None:
    """A key with a character HTTP headers cannot carry (a typographic ellipsis from a
    copy-paste) fails every section with ``internal`` at request time; it should stop the
    process at start-up with a message naming the setting."""
    with pytest.raises(ConfigError, match="openai_api_key"):
        Settings(openai_api_key="sk-canary-abc\u2026def", openai_base_url="http://x/v1")


# -- the same through a real gunicorn, every log line of the process ----------------------------


@pytest.fixture(scope="module")
def service(start_service: StartService, upstream: ScriptedUpstream) -> Service:
    return start_service(
        upstream.base_url,
        log_level="DEBUG",
        BACKEND_AI_AUTH_TOKEN=AUTH_TOKEN,
        BACKEND_AI_MAX_RETRY_WAIT_S="0.05",
    )


def test_no_secret_in_gunicorns_stderr_at_debug(service: Service, http: httpx.Client) -> None:
    result = post_stream(http, service.url, "compare/stream", COMPARE_BODY, headers=AUTH)
    check_error_paths(result.events)
    assert_no_secret(json.dumps(result.events), "the stream")
    for response in (
        http.post(service.url + "dream/interpret-stream", json={"dream": "x"}),  # no token
        http.post(service.url + "dream/interpret-stream", json={"dream": 1}, headers=AUTH),
        http.get(service.url + "stats", headers=AUTH),
        http.get(service.url + "metrics"),
    ):
        assert_no_secret(response.text, f"{response.request.url.path}")
    wait_until(
        lambda: "echo-401" in http.get(service.url + "history", headers=AUTH).text,
        5.0,
        "the reading is saved",
    )
    assert_no_secret(http.get(service.url + "history", headers=AUTH).text, "/history")
    service.process.stop()  # graceful: the worker's exit hooks log too
    log = service.log_text()
    assert "section 'echo-401' ended with auth_error" in log  # the app's lines are here...
    assert "DEBUG" in log  # ...at every level
    assert_no_secret(log, "gunicorn's stderr")


# -- bearer-token auth and CORS: the gaps ----------------------------------------------------


STREAM_ROUTES = [
    ("/dream/interpret-stream", {"dream": "x"}),
    ("/iching/reading-stream", {"question": "x"}),
    ("/tarot/three-card-stream", {"question": "x"}),
    ("/compare/stream", {"prompt": "x", "models": ["gpt-4o"]}),
]


@pytest.mark.parametrize(("route", "body"), STREAM_ROUTES)
def test_every_streaming_route_and_stats_need_the_token(
    app: Flask, upstream: ScriptedUpstream, route: str, body: dict[str, Any]
) -> None:
    client = app.test_client()
    before = len(upstream.requests)
    for headers in (
        {},
        {"Authorization": AUTH_TOKEN},  # no scheme
        {"Authorization": f"Basic {AUTH_TOKEN}"},
        {"Authorization": f"Bearer {AUTH_TOKEN[:-1]}"},
        {"Authorization": f"Bearer {AUTH_TOKEN}{AUTH_TOKEN}"},
        {"Authorization": "Bearer \u00e9\u00e9"},  # latin-1 on the wire
        {"Authorization": "Bearer " + "a" * 8000},
    ):
        response = client.post(route, json=body, headers=headers)
        assert response.status_code == 401, (headers, response.status_code)
        assert response.get_json()["error"]["code"] == "unauthorized"
        assert_no_secret(response.get_data(as_text=True), "a 401")
    assert client.get("/stats").status_code == 401
    assert len(upstream.requests) == before  # nothing reached the upstream
    ok = client.post(route, json=body, headers={"Authorization": f"bearer  {AUTH_TOKEN} "})
    assert ok.status_code == 200
    assert client.get("/stats", headers=AUTH).status_code == 200


def test_the_token_is_compared_in_constant_time(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    client = app.test_client()
    assert client.get("/stats", headers={"Authorization": "Bearer guess"}).status_code == 401
    assert client.get("/stats", headers=AUTH).status_code == 200
    assert len(calls) == 2, "every check goes through hmac.compare_digest"
    assert {a.decode() if isinstance(a, bytes) else a for a, _ in calls} == {"guess", AUTH_TOKEN}


def test_cors_is_off_unless_configured(upstream: ScriptedUpstream) -> None:
    app = create_app(
        Settings(openai_api_key=CANARY_KEY, openai_base_url=upstream.base_url, history_db_path=None)
    )
    try:
        client = app.test_client()
        origin = {"Origin": "https://evil.example"}
        responses = [
            client.get("/health", headers=origin),
            client.post("/dream/interpret-stream", json={"dream": "x"}, headers=origin),
            client.post("/dream/interpret-stream", json={}, headers=origin),
            client.options(
                "/dream/interpret-stream",
                headers={**origin, "Access-Control-Request-Method": "POST"},
            ),
        ]
        for response in responses:
            response.get_data()
            cors = [h for h, _ in response.headers if h.lower().startswith("access-control")]
            assert not cors, (response.status_code, cors)
    finally:
        get_state(app).close()


def test_cors_wildcard_echoes_the_origin_and_never_allows_credentials(
    upstream: ScriptedUpstream,
) -> None:
    app = create_app(
        Settings(
            openai_api_key=CANARY_KEY,
            openai_base_url=upstream.base_url,
            history_db_path=None,
            cors_origins=("*",),
        )
    )
    try:
        client = app.test_client()
        response = client.post(
            "/dream/interpret-stream", json={"dream": "x"}, headers={"Origin": "https://a.example"}
        )
        response.get_data()
        assert response.headers["Access-Control-Allow-Origin"] == "https://a.example"
        assert "Origin" in response.headers["Vary"]
        assert "Access-Control-Allow-Credentials" not in response.headers
        assert "X-Request-Id" in response.headers["Access-Control-Expose-Headers"]
    finally:
        get_state(app).close()
