"""The Django integration's helpers in this process, for a project's own views: a real Django
``StreamingHttpResponse`` read as a WSGI server reads it, and closed as one closes it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.http import HttpRequest, HttpResponseBase
from django.test import RequestFactory, override_settings

from backend_ai.errors import ConfigError
from backend_ai.integrations.django import (
    close_service,
    get_service,
    json_errors,
    settings_from_django,
    stream_response,
)
from backend_ai.simulator import SimulatorProcess
from backend_ai.streaming import StreamConfig
from tests.support.protocol import check_protocol
from tests.support.sse import parse_frames

from .conftest import SECRET_KEY

if not django_settings.configured:
    django_settings.configure(ALLOWED_HOSTS=["testserver"], USE_TZ=True)


@pytest.fixture
def service_settings(simulator: SimulatorProcess) -> Iterator[None]:
    fields = {
        "openai_api_key": SECRET_KEY,
        "openai_base_url": simulator.base_url,
        "upstream_is_simulator": True,
        "run": {"heartbeat_s": 0.2},
        "http": {"http2_prior_knowledge": True},
    }
    with override_settings(BACKEND_AI=fields):
        yield
    close_service()


def sections(**sim: Any) -> list[StreamConfig]:
    return [StreamConfig(n, f"Write the {n}.", extra_body={"sim": sim}) for n in ("a", "b")]


@json_errors
def my_view(request: HttpRequest) -> HttpResponseBase:
    body = json.loads(request.body)
    return stream_response(sections(**body.get("sim", {})), route="custom")


def post(body: dict[str, Any]) -> HttpRequest:
    return RequestFactory().post("/mine", data=json.dumps(body), content_type="application/json")


def test_a_projects_own_view_streams_the_protocol(service_settings: None) -> None:
    response = my_view(post({"sim": {"tokens": 5}}))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-store"
    body = b"".join(response).decode()  # what a WSGI server does with the response
    response.close()
    texts = check_protocol(parse_frames(body))
    assert set(texts) == {"a", "b"}
    assert all(texts.values())


def test_closing_the_response_cancels_every_upstream_stream(
    service_settings: None, simulator: SimulatorProcess
) -> None:
    """Django calls the body iterator's ``close`` from ``HttpResponseBase.close()``, which a
    WSGI server calls when the client is gone: the run's upstream streams must close."""
    response = my_view(post({"sim": {"ttft_ms": 10, "itl_ms": 10, "tokens": 2000}}))
    chunks = 0
    for frame in response:
        chunks += b'"type":"chunk"' in frame
        if chunks >= 4:
            break
    response.close()
    stats = simulator.wait_for_stats(
        lambda s: len(s["disconnects"]) >= 2 and s["streams_active"] == 0, timeout=10.0
    )
    assert stats["streams_completed"] == 0


def test_refusals_become_json_errors(service_settings: None) -> None:
    @json_errors
    def duplicate_sections(request: HttpRequest) -> HttpResponseBase:
        return stream_response([StreamConfig("a", "x"), StreamConfig("a", "y")])

    response = duplicate_sections(post({}))
    assert response.status_code == 422
    assert json.loads(response.content)["error"]["code"] == "invalid_value"
    get_service().begin_drain()  # a server shutting down refuses new runs
    response = my_view(post({}))
    assert response.status_code == 503
    assert json.loads(response.content)["error"]["code"] == "shutting_down"


def test_the_service_is_built_once_per_process_and_rebuilt_after_close(
    service_settings: None,
) -> None:
    first = get_service()
    assert get_service() is first
    close_service()
    assert first.closed
    second = get_service()
    assert second is not first
    assert not second.closed


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"no_such_setting": 1}, "unknown settings: no_such_setting"),
        ({"http": {"no_such_pool_field": 1}}, "no_such_pool_field"),
        ("sk-...", "must be a Settings or a mapping"),
        ({"run": {"heartbeat_s": -1}}, "heartbeat_s must be a positive number or None"),
        ({"run": {"heartbeats": 1}}, "unknown run settings: heartbeats"),
        ({"heartbeat_s": 1}, r"unknown settings: heartbeat_s \(it is run.heartbeat_s\)"),
    ],
)
def test_bad_django_settings_say_what_is_wrong(value: Any, message: str) -> None:
    with override_settings(BACKEND_AI=value), pytest.raises(ConfigError, match=message):
        settings_from_django()
