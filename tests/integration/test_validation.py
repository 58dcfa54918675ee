"""Bad requests: a 4xx JSON error that says what is wrong, never a 500, never a started stream."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from backend_ai.simulator import SimulatorProcess
from tests.support.sse import data_events, parse_frames

from .conftest import SECRET_KEY, MakeApp

DREAM = "/dream/interpret-stream"
ICHING = "/iching/reading-stream"
TAROT = "/tarot/three-card-stream"
COMPARE = "/compare/stream"

UNSUPPORTED = "unsupported_media_type"
TEN_MODELS = [f"model-{i}" for i in range(10)]

# (route, request kwargs for the test client, status, error code)
BAD_REQUESTS: list[tuple[str, dict[str, Any], int, str]] = [
    (DREAM, {"data": "dream=flying"}, 415, "unsupported_media_type"),
    (DREAM, {"data": '{"dream": "x"}', "content_type": "text/plain"}, 415, UNSUPPORTED),
    (DREAM, {}, 415, "unsupported_media_type"),
    (DREAM, {"data": "{", "content_type": "application/json"}, 400, "invalid_json"),
    (DREAM, {"data": b"\xff\xfe", "content_type": "application/json"}, 400, "invalid_json"),
    (DREAM, {"data": "", "content_type": "application/json"}, 400, "invalid_json"),
    (DREAM, {"json": ["dream"]}, 400, "invalid_json"),
    (DREAM, {"json": "dream"}, 400, "invalid_json"),
    (DREAM, {"json": {}}, 422, "missing_field"),
    (DREAM, {"json": {"dream": ""}}, 422, "empty_field"),
    (DREAM, {"json": {"dream": " \n\t "}}, 422, "empty_field"),
    (DREAM, {"json": {"dream": 42}}, 422, "invalid_type"),
    (DREAM, {"json": {"dream": None}}, 422, "invalid_type"),
    (DREAM, {"json": {"dream": ["a"]}}, 422, "invalid_type"),
    (DREAM, {"json": {"dream": "x" * 4001}}, 422, "text_too_long"),
    (DREAM, {"json": {"dream": "x", "prompt": "y"}}, 422, "unknown_field"),
    (DREAM, {"json": {"dream": "x", "mode": "sideways"}}, 422, "invalid_mode"),
    (DREAM, {"json": {"dream": "x", "mode": "As_Completed"}}, 422, "invalid_mode"),
    (DREAM, {"json": {"dream": "x", "sim": {"nonsense": 1}}}, 422, "invalid_sim"),
    (DREAM, {"json": {"dream": "x", "sim": {"tokens": "many"}}}, 422, "invalid_sim"),
    (DREAM, {"json": {"dream": "x", "sim": {"tokens": 10**6}}}, 422, "invalid_sim"),
    (DREAM, {"json": {"dream": "x", "sim": {"stall_after": 3}}}, 422, "invalid_sim"),
    (DREAM, {"json": {"dream": "x", "sim_sections": {"summary": {"itl": 3}}}}, 422, "invalid_sim"),
    (DREAM, {"json": {"dream": "x", "mode": ["ordered"]}}, 422, "invalid_mode"),
    (ICHING, {"json": {"question": "q", "hexagram": 0}}, 422, "invalid_value"),
    (ICHING, {"json": {"question": "q", "hexagram": 65}}, 422, "invalid_value"),
    (ICHING, {"json": {"question": "q", "hexagram": True}}, 422, "invalid_value"),
    (ICHING, {"json": {"question": "q", "hexagram": "7"}}, 422, "invalid_value"),
    (ICHING, {"json": {"hexagram": 7}}, 422, "missing_field"),
    (TAROT, {"json": {"question": ""}}, 422, "empty_field"),
    ("/tarot/no-such-spread-stream", {"json": {"question": "q"}}, 404, "unknown_spread"),
    (COMPARE, {"json": {"prompt": "p"}}, 422, "missing_field"),
    (COMPARE, {"json": {"prompt": "p", "models": []}}, 422, "empty_field"),
    (COMPARE, {"json": {"prompt": "p", "models": "gpt-4o"}}, 422, "invalid_type"),
    (COMPARE, {"json": {"prompt": "p", "models": ["gpt-4o", 4]}}, 422, "invalid_type"),
    (COMPARE, {"json": {"prompt": "p", "models": ["gpt-4o", " "]}}, 422, "invalid_value"),
    (COMPARE, {"json": {"prompt": "p", "models": TEN_MODELS}}, 422, "too_many_models"),
    (COMPARE, {"json": {"prompt": "p", "models": ["a", "b", "a"]}}, 422, "duplicate_model"),
    (COMPARE, {"json": {"prompt": "", "models": ["a"]}}, 422, "empty_field"),
    ("/nowhere", {"json": {}}, 404, "not_found"),
]  # fmt: skip


def assert_json_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    return body


@pytest.mark.parametrize(("route", "kwargs", "status", "code"), BAD_REQUESTS)
def test_bad_request_is_a_json_4xx_and_never_reaches_the_upstream(
    sim_client: FlaskClient,
    simulator: SimulatorProcess,
    route: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    response = sim_client.post(route, **kwargs)
    assert_json_error(response, status, code)
    assert simulator.stats(records=False)["requests_total"] == 0


def test_deeply_nested_json_is_400_not_500(client: FlaskClient) -> None:
    # json.loads raises RecursionError here, which Werkzeug's get_json does not catch.
    body = "[" * 20_000 + "]" * 20_000
    response = client.post(DREAM, data=body, content_type="application/json")
    assert_json_error(response, 400, "invalid_json")


def test_oversized_body_is_413_json(make_app: MakeApp) -> None:
    client = make_app(max_content_length=4096).test_client()
    response = client.post(DREAM, json={"dream": "x" * 5000})
    assert_json_error(response, 413, "payload_too_large")


def test_text_limit_is_configurable(make_app: MakeApp) -> None:
    client = make_app(max_text_chars=10).test_client()
    response = client.post(DREAM, json={"dream": "x" * 11})
    body = assert_json_error(response, 422, "text_too_long")
    assert "10" in body["error"]["message"]


def test_compare_allow_list_refuses_unknown_models(make_app: MakeApp) -> None:
    client = make_app(compare_models=("gpt-4o", "gpt-4o-mini")).test_client()
    response = client.post(COMPARE, json={"prompt": "p", "models": ["gpt-4o", "llama-9000"]})
    body = assert_json_error(response, 422, "unknown_model")
    assert "llama-9000" in body["error"]["message"]


def test_sim_controls_are_refused_when_the_upstream_is_not_the_simulator(
    client: FlaskClient,
) -> None:
    response = client.post(DREAM, json={"dream": "x", "sim": {"ttft_ms": 1}})
    assert_json_error(response, 422, "unknown_field")


@pytest.mark.parametrize("route", [DREAM, ICHING, TAROT, COMPARE, "/health", "/history"])
def test_wrong_method_is_405_json_with_allow(client: FlaskClient, route: str) -> None:
    method = client.get if route.endswith("stream") else client.put
    response = method(route)
    assert_json_error(response, 405, "method_not_allowed")
    assert response.headers["Allow"]


def test_error_messages_do_not_echo_the_text(client: FlaskClient) -> None:
    marker = "<script>alert(1)</script>" * 200
    response = client.post(DREAM, json={"dream": marker})
    assert response.status_code == 422
    assert "<script>" not in response.get_data(as_text=True)


def test_unhandled_error_is_a_generic_500_and_logs_no_key_path_or_traceback(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    def boom() -> str:
        raise RuntimeError(f"failed with key {SECRET_KEY} in /srv/app/secret.py")

    app.add_url_rule("/boom", "boom", boom)
    with caplog.at_level(logging.INFO):
        response = app.test_client().get("/boom")
    assert_json_error(response, 500, "internal")
    text = response.get_data(as_text=True)
    assert SECRET_KEY not in text
    assert "secret.py" not in text
    assert "RuntimeError" in caplog.text  # the type is logged, so the bug can be found
    assert SECRET_KEY not in caplog.text
    assert "secret.py" not in caplog.text
    assert "Traceback" not in caplog.text


def test_auth_token_guards_streams_and_history_but_not_health(make_app: MakeApp) -> None:
    client = make_app(auth_token="let-me-in").test_client()
    assert_json_error(client.post(DREAM, json={"dream": "x"}), 401, "unauthorized")
    assert_json_error(client.get("/history"), 401, "unauthorized")
    wrong = {"Authorization": "Bearer nope"}
    assert_json_error(client.post(DREAM, json={"dream": "x"}, headers=wrong), 401, "unauthorized")
    assert client.get("/health").status_code == 200
    assert client.get("/metrics").status_code == 200
    ok = {"Authorization": "Bearer let-me-in"}
    assert client.get("/history", headers=ok).status_code == 200
    # Authenticated but still invalid: validation runs after authentication.
    assert_json_error(client.post(DREAM, json={}, headers=ok), 422, "missing_field")


def test_cors_headers_only_for_allowed_origins(make_app: MakeApp) -> None:
    client = make_app(cors_origins=("https://ok.example",)).test_client()
    allowed = client.get("/health", headers={"Origin": "https://ok.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://ok.example"
    assert "Origin" in allowed.headers["Vary"]
    other = client.get("/health", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = client.options(
        DREAM,
        headers={
            "Origin": "https://ok.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 200
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]


def test_history_limit_is_validated(client: FlaskClient) -> None:
    for bad in ("0", "101", "x", "-1"):
        assert_json_error(client.get(f"/history?limit={bad}"), 422, "invalid_value")
    assert client.get("/history?limit=100").get_json() == {"readings": []}


def test_history_disabled_is_404_json(make_app: MakeApp) -> None:
    client = make_app(history_db_path=None).test_client()
    assert_json_error(client.get("/history"), 404, "history_disabled")


def test_health_tells_the_page_what_it_needs_and_no_secret(client: FlaskClient) -> None:
    body = client.get("/health").get_json()
    assert body["status"] == "ok"
    assert body["upstream"] == "openai-compatible"
    assert body["max_text_chars"] == 4000
    assert "three-card" in body["tarot_spreads"]
    assert SECRET_KEY not in json.dumps(body)
    assert "127.0.0.1" not in json.dumps(body)  # nor the upstream's address


@pytest.mark.parametrize(
    ("sim", "named"),
    [
        ({"nonsense": 1}, "'nonsense'"),
        ({"tokens": "SECRET-TEXT"}, "'tokens'"),
        ({"jitter": 7}, "'jitter'"),
    ],
)
def test_bad_sim_key_is_a_422_naming_the_key_without_echoing_the_value(
    sim_client: FlaskClient, simulator: SimulatorProcess, sim: dict[str, Any], named: str
) -> None:
    response = sim_client.post(DREAM, json={"dream": "x", "sim": sim})
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "invalid_sim"
    assert named in error["message"]
    assert "SECRET-TEXT" not in error["message"]
    assert not response.headers.get("Content-Type", "").startswith("text/event-stream")
    assert simulator.stats(records=False)["requests_total"] == 0


def test_valid_sim_keys_still_stream(sim_client: FlaskClient) -> None:
    sim = {"tokens": 3, "itl_ms": 0, "ttft_ms": 0, "stall_after": 1, "stall_s": 0.01}
    response = sim_client.post(DREAM, json={"dream": "x", "sim": sim})
    assert response.status_code == 200
    events = data_events(parse_frames(response.get_data(as_text=True)))
    assert sorted(events[-1]["completed"]) == ["recommendations", "summary", "symbols"]


@pytest.mark.parametrize("mode", ["interleaved", "ordered", "as_completed"])
def test_every_engine_mode_is_accepted(sim_client: FlaskClient, mode: str) -> None:
    sim = {"tokens": 5, "itl_ms": 1, "ttft_ms": 0}
    response = sim_client.post(DREAM, json={"dream": "x", "mode": mode, "sim": sim})
    assert response.status_code == 200
    events = data_events(parse_frames(response.get_data(as_text=True)))
    assert events[0] == {**events[0], "type": "start", "mode": mode}
    assert sorted(events[-1]["completed"]) == ["recommendations", "summary", "symbols"]
    if mode == "as_completed":
        # Whole sections: once another section's event appears, an earlier one never returns.
        order = [e["section"] for e in events if "section" in e]
        runs = [name for i, name in enumerate(order) if i == 0 or order[i - 1] != name]
        assert len(runs) == 3, runs
