"""The Django example project under a real gunicorn (gthread) against the simulator.

The same protocol checker as the Flask tests reads every stream; the same table of bad requests
must get the same JSON errors. Timing is asserted as ratios within one run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability.test_hostile_input import ROUTE_FIELDS, bodies

from backend_ai.app.gunicorn_process import GunicornProcess
from backend_ai.simulator import SimulatorProcess
from tests.support.protocol import check_protocol
from tests.support.sse import data_events, parse_frames

from .conftest import (
    DREAM,
    SECRET_KEY,
    cut_while_every_section_streams,
    open_stream,
    read_through_sigterm,
    service_env,
)
from .test_access_log import access_lines
from .test_validation import BAD_REQUESTS

EXAMPLE_DIR = Path(__file__).resolve().parents[2] / "examples" / "django_app"
WSGI_APP = "django_app.wsgi"
ROUTES: list[tuple[str, dict[str, Any], set[str]]] = [
    (DREAM, {"dream": "a glass city"}, {"summary", "symbols", "recommendations"}),
    ("iching/reading-stream", {"question": "Where?"}, {"hexagram", "interpretation", "guidance"}),
    ("tarot/three-card-stream", {"question": "Where?"}, {"reading"}),
    ("compare/stream", {"prompt": "Hi", "models": ["gpt-4o", "o4-mini"]}, {"gpt-4o", "o4-mini"}),
]


def django_server(env: dict[str, str], **kwargs: Any) -> GunicornProcess:
    """``gunicorn --chdir examples/django_app django_app.wsgi``: the example's own
    ``gunicorn.conf.py`` (gthread workers, the integration's hooks) is read from there."""
    return GunicornProcess(
        workers=1,
        threads=16,
        env=env,
        app=WSGI_APP,
        config=None,
        extra_args=["--chdir", str(EXAMPLE_DIR)],
        **kwargs,
    )


@pytest.fixture(scope="session")
def django_service_server(
    simulator_server: SimulatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GunicornProcess]:
    env = service_env(simulator_server, tmp_path_factory.mktemp("django"))
    with django_server(env) as server:
        yield server


@pytest.fixture
def django_service(
    django_service_server: GunicornProcess, simulator: SimulatorProcess
) -> GunicornProcess:
    assert django_service_server.returncode is None, "the session's Django gunicorn died"
    return django_service_server


@pytest.mark.parametrize(("route", "body", "sections"), ROUTES, ids=[r[0] for r in ROUTES])
def test_every_route_streams_the_protocol(
    django_service: GunicornProcess,
    http: httpx.Client,
    route: str,
    body: dict[str, Any],
    sections: set[str],
) -> None:
    with open_stream(http, django_service, route, {**body, "sim": {"tokens": 8}}) as live:
        frames = live.read_all()
    texts = check_protocol(frames)
    assert set(texts) == sections
    assert all(texts.values())
    done = data_events(frames)[-1]
    assert sorted(done["completed"]) == sorted(sections)


@pytest.mark.parametrize(
    ("route", "body", "reading"),
    [
        (DREAM, {"dream": "d"}, None),
        ("iching/reading-stream", {"question": "Where?", "hexagram": 12}, {"hexagram"}),
        ("tarot/three-card-stream", {"question": "Where?"}, {"spread", "cards"}),
    ],
    ids=["dream", "iching", "tarot"],
)
def test_what_was_drawn_or_cast_goes_out_first_as_in_flask(
    django_service: GunicornProcess,
    http: httpx.Client,
    route: str,
    body: dict[str, Any],
    reading: set[str] | None,
) -> None:
    with open_stream(http, django_service, route, {**body, "sim": {"tokens": 3}}) as live:
        frames = live.read_all()
    check_protocol(frames)
    first, second = data_events(frames)[:2]
    if reading is None:
        assert first["type"] == "start"
        return
    assert first["type"] == "reading"
    assert first["request_id"] == second["request_id"]
    assert set(first) - {"type", "request_id", "route"} == reading
    if "hexagram" in reading:
        assert first["hexagram"]["number"] == 12
    else:
        assert len(first["cards"]) == 3


def test_each_request_gets_one_access_line_with_its_run_and_no_prompt(
    django_service: GunicornProcess, http: httpx.Client
) -> None:
    path = "/" + DREAM
    before = access_lines(django_service.log_lines, 0, path=path, timeout=0)
    sim = {"ttft_ms": 30, "itl_ms": 2, "tokens": 5}
    prompt = "a PRIVATE glass city"
    with open_stream(http, django_service, DREAM, {"dream": prompt, "sim": sim}) as live:
        check_protocol(live.read_all())
        request_id = live.response.headers["x-request-id"]
    assert django_service.url is not None
    refused = http.post(django_service.url + DREAM, json={"dream": prompt, "mode": "x"})
    assert refused.status_code == 422

    lines = access_lines(django_service.log_lines, len(before) + 2, path=path)
    # The two lines may come in either order: each is written when its response is closed.
    (run,) = [line for line in lines if line["request_id"] == request_id]
    (refusal,) = [line for line in lines[len(before) :] if line is not run]
    assert (run["route"], run["sections"], run["status"], run["outcome"]) == (
        "dream",
        "3",
        "200",
        "ok",
    )
    assert 30 <= float(run["first"]) <= float(run["duration"])
    assert (refusal["request_id"], refusal["status"], refusal["outcome"]) == ("-", "422", "refused")
    assert "PRIVATE" not in "".join(django_service.log_lines)


def test_sections_run_in_parallel_and_the_first_byte_comes_at_once(
    django_service: GunicornProcess, http: httpx.Client
) -> None:
    assert django_service.url is not None
    http.get(django_service.url + "health")  # connection and app warm
    ttft_s = 0.5
    sim = {"ttft_ms": ttft_s * 1000, "itl_ms": 10, "tokens": 20, "jitter": 0}
    with open_stream(http, django_service, DREAM, {"dream": "d", "sim": sim}) as live:
        frames = live.read_all()
    check_protocol(frames)
    events = data_events(frames)
    first_byte = frames[0].at - live.sent_at
    first_chunk = next(f for f in frames if f.type == "chunk").at - live.sent_at
    assert first_chunk >= ttft_s  # the upstream really was that slow...
    assert first_byte < 0.1 * ttft_s, f"first byte {first_byte * 1000:.1f} ms"  # ...we were not
    durations = [e["duration_ms"] for e in events if e["type"] == "section_done"]
    assert events[-1]["duration_ms"] < 0.6 * sum(durations), durations
    # Heartbeats (every 0.2 s here) filled the upstream's silence before the first chunk.
    first = next(i for i, f in enumerate(frames) if f.type == "chunk")
    assert len([f for f in frames[:first] if f.comment == "ping"]) >= 1


def test_client_disconnect_cancels_every_upstream_stream(
    django_service: GunicornProcess, http: httpx.Client, simulator: SimulatorProcess
) -> None:
    """gunicorn calls ``close()`` on Django's response when a write fails; that must reach the
    engine's generator and close every upstream stream of the run."""
    cut = cut_while_every_section_streams(http, django_service, simulator)
    assert cut.stats["streams_started"] == 3
    assert cut.stats["streams_completed"] == 0
    assert cut.latency_s < 0.025 * cut.remaining_s, f"{cut.latency_s * 1000:.0f} ms"


def _httpx_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The Flask test client's request arguments of the shared table, for httpx."""
    if "json" in kwargs:
        return {
            "content": json.dumps(kwargs["json"]),
            "headers": {"Content-Type": "application/json"},
        }
    data = kwargs.get("data", b"")
    headers = {}
    if "content_type" in kwargs:
        headers["Content-Type"] = kwargs["content_type"]
    elif "data" in kwargs:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    return {"content": data.encode() if isinstance(data, str) else data, "headers": headers}


HOSTILE: list[tuple[str, dict[str, Any], int, str]] = [
    (DREAM, {"content": "[" * 30_000, "headers": {"Content-Type": "application/json"}}, 400,
     "invalid_json"),
    (DREAM, {"content": '{"dream": "\\ud800"}', "headers": {"Content-Type": "application/json"}},
     400, "invalid_json"),
    (DREAM, {"content": json.dumps({"dream": "x" * 70_000}),
             "headers": {"Content-Type": "application/json"}}, 413, "payload_too_large"),
    (DREAM, {"json": {"dream": "x", "sim": {"no_such_key": 1}}}, 422, "invalid_sim"),
    (DREAM, {"json": {"dream": "x", "sim_sections": {"nope": {}}}}, 422, "unknown_section"),
    ("compare/stream", {"json": {"prompt": "p", "models": ["a"], "history": [{"role": "system",
     "content": "x"}]}}, 422, "invalid_value"),
]  # fmt: skip


@pytest.mark.parametrize(("route", "kwargs", "status", "code"), BAD_REQUESTS)
def test_bad_requests_get_the_flask_services_json_errors(
    django_service: GunicornProcess,
    http: httpx.Client,
    simulator: SimulatorProcess,
    route: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    assert django_service.url is not None
    response = http.post(django_service.url + route.lstrip("/"), **_httpx_kwargs(kwargs))
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code
    assert simulator.stats()["requests_total"] == 0


@pytest.mark.parametrize(("route", "kwargs", "status", "code"), HOSTILE)
def test_hostile_input_is_a_4xx_json_or_a_correct_stream(
    django_service: GunicornProcess,
    http: httpx.Client,
    route: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    assert django_service.url is not None
    response = http.post(django_service.url + route, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code
    assert "x" * 100 not in response.text


@pytest.mark.parametrize("route", list(ROUTE_FIELDS))
@settings(
    max_examples=25,
    deadline=None,  # a loaded 2-core machine
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # the fixtures hold no per-example state
    ],
)
@given(data=st.data())
def test_any_request_body_is_refused_or_streamed_never_a_500(
    django_service: GunicornProcess, http: httpx.Client, route: str, data: st.DataObject
) -> None:
    """The Flask service's hostile-body generator, sent to the Django example: a 4xx JSON
    error, or a stream that keeps the protocol with no section failing as a bug.

    One connection per request: after refusing a body it did not read, gunicorn drains at most
    64 KiB of it and otherwise closes the keep-alive connection it had just offered, so a
    client reusing it at once may find it closed (gunicorn's choice, for Flask alike).
    """
    assert django_service.url is not None
    body = data.draw(bodies(ROUTE_FIELDS[route]), label="body")
    content_type = data.draw(
        st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain"]),
        label="content_type",
    )
    response = http.post(
        django_service.url + route.lstrip("/"),
        content=body,
        headers={"Content-Type": content_type, "Connection": "close"},
    )
    status = response.status_code
    assert status != 500, response.text[:300]
    if status != 200:
        assert 400 <= status < 500, (status, response.text[:300])
        assert response.headers["content-type"] == "application/json"
        assert set(response.json()["error"]) == {"code", "message"}
        return
    frames = parse_frames(response.text)
    check_protocol(frames)
    codes = {e["code"] for e in data_events(frames) if e["type"] == "error"}
    assert "internal" not in codes


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_wrong_method_is_405_json_with_allow(
    django_service: GunicornProcess, http: httpx.Client, method: str
) -> None:
    assert django_service.url is not None
    response = http.request(method, django_service.url + DREAM)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_no_secret_reaches_a_stream_or_the_log(
    django_service: GunicornProcess, http: httpx.Client
) -> None:
    with open_stream(http, django_service, DREAM, {"dream": "d", "sim": {"status": 401}}) as live:
        frames = live.read_all()
    check_protocol(frames)
    events = data_events(frames)
    assert {e["code"] for e in events if e["type"] == "error"} == {"auth_error"}
    assert SECRET_KEY not in str(events)
    assert SECRET_KEY not in "".join(django_service.log_lines)


def test_sigterm_ends_open_streams_with_done_and_closes_the_service(
    simulator: SimulatorProcess, http: httpx.Client, tmp_path: Path
) -> None:
    with django_server(service_env(simulator, tmp_path)) as server:
        frames = read_through_sigterm(http, server)
        assert server.wait(timeout=15) == 0
    check_protocol(frames)
    events = data_events(frames)
    assert events[-1]["cancelled"] is True
    assert {e["code"] for e in events if e["type"] == "error"} == {"cancelled"}
    simulator.wait_for_stats(lambda s: s["streams_active"] == 0, timeout=5.0)


def test_without_key_or_url_the_example_starts_its_own_simulator(
    http: httpx.Client, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BACKEND_AI_"))}
    with django_server(env) as server:
        assert server.url is not None
        assert http.get(server.url + "health").json()["upstream"] == "simulator"
        body = {"question": "Where?", "sim": {"ttft_ms": 10, "itl_ms": 1, "tokens": 5}}
        with open_stream(http, server, "tarot/single-card-stream", body) as live:
            texts = check_protocol(live.read_all())
    assert texts["reading"]


def test_the_integration_imports_no_flask() -> None:
    code = (
        "import sys, backend_ai.integrations.django.views, backend_ai.app.gunicorn_conf; "
        "assert 'flask' not in sys.modules, sorted(m for m in sys.modules if 'flask' in m)"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "django_app.settings"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
