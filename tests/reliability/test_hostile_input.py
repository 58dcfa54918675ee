"""Hostile input: any request body to every streaming route, any model output, any text to the
SSE encoder, oversized bodies, and input that would make per-process state grow.

A request is either refused with a 4xx JSON error (``{"error": {"code", "message"}}``) or
answered with a correct stream (docs/PROTOCOL.md, checked frame by frame) — never a 500, never
a stream that breaks its framing, never a section that fails with ``internal`` (the code of a
bug). Model output is passed through exactly, one event per frame, whatever it contains.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from backend_ai.app.extension import get_state
from backend_ai.app.factory import create_app
from backend_ai.app.settings import Settings
from backend_ai.simulator import SimulatorProcess
from backend_ai.streaming import RunOptions, get_stream_performance_stats
from backend_ai.streaming.sse import format_sse
from backend_ai.streaming.stats import reset_stream_performance_stats
from tests.support.sse import parse_sse

from .conftest import StartService
from .helpers import CANARY_KEY, ScriptedUpstream, check_stream, http_response, parse_sse_body

ROUTE_FIELDS: dict[str, tuple[str, ...]] = {
    "/dream/interpret-stream": ("dream",),
    "/iching/reading-stream": ("question", "hexagram"),
    "/tarot/three-card-stream": ("question",),
    "/compare/stream": ("prompt", "models"),
}
MAX_CONTENT_LENGTH = 64 * 1024
MAX_TEXT_CHARS = 4000
#: Hypothesis budget per property: enough to reach the odd corners, small enough for CI.
EXAMPLES = 60

# Text as a client could send it through JSON: any code point, lone surrogates included (valid
# JSON escapes, but not encodable text; they also have their own regression test below).
any_text = st.text(st.characters(exclude_categories=()), max_size=60)
hostile_text = st.one_of(
    any_text,
    st.sampled_from(
        [
            '\n\ndata: {"type":"done"}\n\n',
            "\r\ndata: injected\r\n\r\n",
            "\r",
            "\x00\x01\x1b[31m\x7f",
            "\u2028\u2029\x85",
            "event: x\nid: 1\nretry: 0\n",
            "\ufeff",
            "x" * (MAX_TEXT_CHARS + 1),
        ]
    ),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    hostile_text,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def bodies(draw: st.DrawFn, fields: tuple[str, ...]) -> bytes:
    """A request body: anything from raw bytes to an almost valid request."""
    kind = draw(st.sampled_from(["bytes", "json", "fields", "near-valid", "deep", "huge"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "deep":
        depth = draw(st.integers(min_value=50, max_value=100_000))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        return (opener * depth + "1" + closer * depth).encode()
    if kind == "huge":
        size = draw(
            st.integers(min_value=MAX_CONTENT_LENGTH - 100, max_value=4 * MAX_CONTENT_LENGTH)
        )
        return json.dumps({fields[0]: "y" * size}).encode()
    body: dict[str, Any] = {}
    for name in fields:
        if kind == "near-valid":
            if name == "models":
                value: Any = draw(st.lists(hostile_text, min_size=0, max_size=11))
            elif name == "hexagram":
                value = draw(st.one_of(st.integers(-5, 70), json_scalars))
            else:
                value = draw(hostile_text)
        else:
            value = draw(json_values)
        if draw(st.integers(0, 9)) > 0:  # sometimes a field is missing
            body[name] = value
    for name in draw(st.lists(st.sampled_from(["mode", "sim", "sim_sections", "extra"]))):
        body[name] = draw(st.one_of(st.sampled_from(["interleaved", "ordered"]), json_values))
    return json.dumps(body).encode()


@pytest.fixture(scope="module")
def app(simulator_server: SimulatorProcess) -> Iterator[Flask]:
    """The app on the simulator (fast profile); ``sim`` controls refused, as in production."""
    app = create_app(
        Settings(
            openai_api_key=CANARY_KEY,
            openai_base_url=simulator_server.base_url,
            history_db_path=None,
            max_content_length=MAX_CONTENT_LENGTH,
            max_text_chars=MAX_TEXT_CHARS,
            run=RunOptions(heartbeat_s=None),
        )
    )
    yield app
    get_state(app).close()


@pytest.fixture(scope="module")
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def assert_refused_or_streamed(response: Any) -> None:
    """A 4xx JSON error, or a 200 stream that keeps the protocol; nothing else."""
    status = response.status_code
    text = response.get_data(as_text=True)
    assert status != 500, text[:300]
    if status != 200:
        assert 400 <= status < 500, (status, text[:300])
        assert response.mimetype == "application/json", (status, response.mimetype)
        error = json.loads(text)["error"]
        assert set(error) == {"code", "message"}, error
        assert isinstance(error["code"], str)
        assert isinstance(error["message"], str)
        assert "Traceback" not in error["message"]
        return
    assert response.mimetype == "text/event-stream"
    events, _ = parse_sse_body(text)
    outcomes = check_stream(events)
    internal = {name: o.message for name, o in outcomes.items() if o.code == "internal"}
    assert not internal, f"a section failed with a bug: {internal}"


@pytest.mark.parametrize("route", list(ROUTE_FIELDS))
@settings(
    max_examples=EXAMPLES,
    deadline=None,  # a loaded 2-core machine
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_any_request_body_is_refused_or_streamed_never_a_500(
    client: FlaskClient, route: str, data: st.DataObject
) -> None:
    body = data.draw(bodies(ROUTE_FIELDS[route]), label="body")
    content_type = data.draw(
        st.sampled_from(
            ["application/json", "application/json; charset=utf-8", "text/plain", None]
        ),
        label="content_type",
    )
    response = client.post(route, data=body, content_type=content_type)
    assert_refused_or_streamed(response)
    refusals = set()
    if content_type is None or content_type == "text/plain":
        refusals.add(415)
    if len(body) > MAX_CONTENT_LENGTH:
        refusals.add(413)
    if refusals:
        assert response.status_code in refusals


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/dream/interpret-stream", '{"dream": "a \\ud800 b"}'),
        ("/iching/reading-stream", '{"question": "why \\udfff", "hexagram": 3}'),
        ("/tarot/three-card-stream", '{"question": "\\udc00"}'),
        ("/compare/stream", '{"prompt": "hi", "models": ["gpt-4o", "\\ud83d"]}'),
        ("/compare/stream", '{"prompt": "\\ud83dhi", "models": ["gpt-4o"]}'),
    ],
)
def test_lone_surrogates_in_request_text_are_a_4xx_not_an_internal_error(
    client: FlaskClient, route: str, body: str
) -> None:
    """``"\\ud800"`` is valid JSON but not encodable text: it cannot be sent upstream, so it
    is a bad request (4xx) and must not reach the engine, where it fails every section with
    ``internal`` and logs a traceback."""
    response = client.post(route, data=body, content_type="application/json")
    assert 400 <= response.status_code < 500, response.get_data(as_text=True)[:500]
    assert_refused_or_streamed(response)


# -- model output through the whole service --------------------------------------------------


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def scripted_client(upstream: ScriptedUpstream) -> Iterator[FlaskClient]:
    app = create_app(
        Settings(
            openai_api_key=CANARY_KEY,
            openai_base_url=upstream.base_url,
            history_db_path=None,
            run=RunOptions(heartbeat_s=None),
        )
    )
    yield app.test_client()
    get_state(app).close()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(st.text(min_size=1, max_size=40).filter(str.strip) | hostile_text, max_size=8)
)
def test_any_model_output_reaches_the_client_exactly_one_event_per_frame(
    scripted_client: FlaskClient, upstream: ScriptedUpstream, pieces: list[str]
) -> None:
    pieces = [p for p in pieces if p]  # the engine sends no empty chunk
    upstream.content = pieces
    response = scripted_client.post("/tarot/single-card-stream", json={"question": "q"})
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    events, comments = parse_sse_body(text)
    outcomes = check_stream(events)
    assert outcomes["reading"].end == "done", outcomes
    chunks = [e["content"] for e in events if e["type"] == "chunk"]
    assert chunks == pieces
    dispatched = parse_sse([text])
    assert len(dispatched) == len(events) == text.count("\n\n") - len(comments)
    assert [json.loads(e.data) for e in dispatched] == events


_NO_BREAKS = re.compile(r"\r\n|\r|\n")
#: ``format_sse`` is a text API; what it returns goes on the wire as UTF-8, so no surrogates.
sse_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=60)
wire_hostile_text = hostile_text.filter(
    lambda text: not any("\ud800" <= c <= "\udfff" for c in text)
)


@settings(max_examples=200, deadline=None)
@given(data=sse_text | wire_hostile_text, event=st.none() | sse_text, id_=st.none() | sse_text)
def test_format_sse_gives_back_one_event_with_exactly_its_fields(
    data: str, event: str | None, id_: str | None
) -> None:
    frame = format_sse(data, event=event, id=id_)
    dispatched = parse_sse([frame])
    assert len(dispatched) == 1, (frame, dispatched)
    got = dispatched[0]
    assert got.data == _NO_BREAKS.sub("\n", data)  # SSE reads every line break back as LF
    assert got.event == (_NO_BREAKS.sub(" ", event) if event else "message")
    if id_ is not None:
        assume("\x00" not in id_)  # the specification ignores an id containing NUL
        assert got.id == _NO_BREAKS.sub(" ", id_)


# -- limits ----------------------------------------------------------------------------------


def test_the_body_size_limit_holds_at_the_exact_boundary(client: FlaskClient) -> None:
    def body_of(size: int) -> bytes:
        head = b'{"dream": "'
        tail = b'"}'
        return head + b"a" * (size - len(head) - len(tail)) + tail

    at_limit = client.post(
        "/dream/interpret-stream",
        data=body_of(MAX_CONTENT_LENGTH),
        content_type="application/json",
    )
    assert at_limit.status_code == 422  # read, and refused for its content (text too long)
    assert at_limit.get_json()["error"]["code"] == "text_too_long"
    over = client.post(
        "/dream/interpret-stream",
        data=body_of(MAX_CONTENT_LENGTH + 1),
        content_type="application/json",
    )
    assert over.status_code == 413
    assert over.get_json()["error"]["code"] == "payload_too_large"


@pytest.fixture(scope="module")
def dead_upstream_service(start_service: StartService) -> Any:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield start_service(f"http://127.0.0.1:{sock.getsockname()[1]}/v1")


@pytest.mark.parametrize("framing", ["content-length", "chunked", "lying-length"])
def test_oversized_bodies_through_gunicorn_are_413_without_reading_them_all(
    dead_upstream_service: Any, framing: str
) -> None:
    """A 4 MB body is refused with a JSON 413 whether it declares its length, streams it in
    chunks with no length, or declares a small length and sends more."""
    service = dead_upstream_service
    payload = b'{"dream": "' + b"a" * (4 * 1024 * 1024) + b'"}'
    sock = socket.create_connection(("127.0.0.1", service.port), timeout=10)
    try:
        head = (
            "POST /dream/interpret-stream HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/json\r\nConnection: close\r\n"
        )
        if framing == "chunked":
            head += "Transfer-Encoding: chunked\r\n\r\n"
            data = b"".join(
                b"%x\r\n%s\r\n" % (len(part), part)
                for part in (payload[i : i + 65536] for i in range(0, len(payload), 65536))
            )
            data += b"0\r\n\r\n"
        elif framing == "content-length":
            head += f"Content-Length: {len(payload)}\r\n\r\n"
            data = payload
        else:
            head += "Content-Length: 100\r\n\r\n"
            data = payload
        sock.sendall(head.encode())
        # The server may answer and close without reading it all: that is the point.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        received = b""
        while part := sock.recv(65536):  # Connection: close, so the answer ends at EOF
            received += part
    finally:
        sock.close()
    status, body = http_response(received)
    if framing == "lying-length":
        # Only the declared 100 bytes are the body (cut JSON): a 400, never a 500.
        assert status == 400, (status, body[:200])
        assert json.loads(body)["error"]["code"] == "invalid_json"
    else:
        assert status == 413, (status, body[:200])
        assert json.loads(body)["error"]["code"] == "payload_too_large"
    service.assert_alive()
    with httpx.Client(timeout=10.0) as http:
        assert http.get(service.url + "health").status_code == 200


@pytest.fixture
def dead_upstream_client() -> Iterator[FlaskClient]:
    """An app whose upstream refuses connections: every section fails in a millisecond."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        app = create_app(
            Settings(
                openai_api_key=CANARY_KEY,
                openai_base_url=f"http://127.0.0.1:{sock.getsockname()[1]}/v1",
                history_db_path=None,
            )
        )
        yield app.test_client()
        get_state(app).close()


def test_client_chosen_section_names_do_not_grow_process_state(
    dead_upstream_client: FlaskClient,
) -> None:
    """``/compare/stream`` names its sections after the client's model names, and the engine's
    per-section statistics keep a series per name: without a bound, a client sending new
    names grows the process's memory and ``/stats`` forever."""
    reset_stream_performance_stats()
    try:
        requests, per_request = 334, 9  # 3,006 distinct names
        for i in range(requests):
            models = [f"m-{i}-{j}-" + "x" * 150 for j in range(per_request)]
            response = dead_upstream_client.post(
                "/compare/stream", json={"prompt": "hi", "models": models}
            )
            response.get_data()
        names = len(get_stream_performance_stats())
        size = len(dead_upstream_client.get("/stats").get_data())
        assert names <= 1024, f"{names} series kept, /stats is {size} bytes"
    finally:
        reset_stream_performance_stats()
