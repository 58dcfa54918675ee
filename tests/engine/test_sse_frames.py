"""``create_parallel_stream``: ready SSE text frames, usable as written inside a Flask route."""

from __future__ import annotations

import json
import time

import flask
import pytest

from backend_ai.errors import ConfigError
from backend_ai.streaming import StreamConfig, create_parallel_stream
from tests.support.sse import parse_sse

from .helpers import expected_text, section, threads_in_run_section

NAMES = ("summary", "symbols", "advice")


def _configs():
    return [section(name, ttft_ms=30, itl_ms=3, tokens=15) for name in NAMES]


def _payloads(text_pieces) -> list[dict]:
    return [json.loads(event.data) for event in parse_sse(text_pieces)]


def test_frames_are_str_and_parse_back_into_the_run(client):
    frames = list(create_parallel_stream(client, _configs()))
    assert all(isinstance(frame, str) and frame.endswith("\n\n") for frame in frames)
    payloads = _payloads(frames)
    assert payloads[0]["type"] == "start"
    assert payloads[0]["sections"] == list(NAMES)
    assert payloads[-1]["type"] == "done"
    for config in _configs():
        name = config.section_name
        chunks = [p for p in payloads if p["type"] == "chunk" and p["section"] == name]
        assert [c["seq"] for c in chunks] == list(range(15))
        assert "".join(c["content"] for c in chunks) == expected_text(client, config)
        (done,) = [p for p in payloads if p["type"] == "section_done" and p["section"] == name]
        assert done["chunks"] == 15
        assert done["usage"]["completion_tokens"] == 15


def test_options_are_run_options(client):
    frames = list(create_parallel_stream(client, _configs(), mode="ordered", heartbeat_s=None))
    payloads = _payloads(frames)
    assert payloads[0]["mode"] == "ordered"
    names = [p["section"] for p in payloads if "section" in p]
    assert names == sorted(names, key=NAMES.index)


@pytest.mark.parametrize(
    ("configs", "options", "message"),
    [
        (lambda: [section("a"), section("a")], {}, "duplicate section name 'a'"),
        (list, {}, "at least one StreamConfig"),
        (lambda: [section("a")], {"mode": "random"}, "mode must be one of"),
        (lambda: [section("a")], {"queue_size": 0}, "queue_size must be at least 1"),
    ],
)
def test_bad_input_fails_at_the_call_before_any_request(
    configs, options, message, client, simulator
):
    with pytest.raises(ConfigError, match=message):
        create_parallel_stream(client, configs(), **options)
    assert simulator.stats(records=False)["requests_total"] == 0


def test_bad_stream_config_fails_at_construction_before_any_request(client, simulator):
    with pytest.raises(ConfigError, match="temperature"):
        create_parallel_stream(client, [StreamConfig("a", "p", temperature=3)])
    assert simulator.stats(records=False)["requests_total"] == 0


def _app(client) -> flask.Flask:
    app = flask.Flask(__name__)

    @app.route("/reading-stream")
    def reading_stream():
        configs = _configs()

        def generate():
            # Written the way the README shows it: a plain loop over the generator.
            for chunk in create_parallel_stream(client, configs):  # noqa: UP028
                yield chunk

        return flask.Response(generate(), mimetype="text/event-stream")

    return app


def test_works_as_written_inside_a_flask_route(client):
    response = _app(client).test_client().get("/reading-stream")
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    payloads = _payloads([response.get_data(as_text=True)])
    assert payloads[0]["type"] == "start"
    assert payloads[-1]["type"] == "done"
    assert set(payloads[-1]["completed"]) == set(NAMES)


def test_flask_closing_the_response_cancels_the_upstream(client, simulator):
    long_configs = [section(name, itl_ms=20, tokens=200) for name in NAMES]
    app = flask.Flask(__name__)

    @app.route("/s")
    def stream():
        def generate():
            for chunk in create_parallel_stream(client, long_configs):  # noqa: UP028
                yield chunk

        return flask.Response(generate(), mimetype="text/event-stream")

    response = app.test_client().get("/s", buffered=False)
    body = iter(response.response)
    seen = 0
    for piece in body:
        seen += b'"type":"chunk"' in piece
        if seen >= 6:
            break
    closed_at = time.time()
    response.close()  # the WSGI server's close() when the browser goes away
    assert threads_in_run_section() == []
    stats = simulator.wait_for_stats(lambda s: len(s["disconnects"]) == len(NAMES))
    assert all(d["t"] - closed_at < 0.1 for d in stats["disconnects"])
