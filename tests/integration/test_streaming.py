"""The streaming routes on the Flask test client against the simulator: protocol, modes,
failure isolation, heartbeats, history, metrics."""

from __future__ import annotations

import logging
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from backend_ai.app.extension import get_state
from backend_ai.simulator import SimulatorProcess
from backend_ai.streaming import RunOptions
from backend_ai.streaming.events import Event
from tests.support.protocol import check_protocol
from tests.support.sse import Frame, data_events, parse_frames

from .conftest import SECRET_KEY, MakeApp

DREAM_SECTIONS = ["summary", "symbols", "recommendations"]
ICHING_SECTIONS = ["hexagram", "interpretation", "guidance"]
MODELS = ["gpt-4o", "gpt-4o-mini", "gpt-4.1-mini"]

ROUTES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("/dream/interpret-stream", {"dream": "I was flying over a city"}, DREAM_SECTIONS),
    (
        "/iching/reading-stream",
        {"question": "Should I move?", "hexagram": 7},
        ICHING_SECTIONS,
    ),
    ("/iching/reading-stream", {"question": "Should I move?"}, ICHING_SECTIONS),
    ("/tarot/three-card-stream", {"question": "What now?"}, ["reading"]),
    ("/tarot/celtic-cross-stream", {"question": "What now?"}, ["reading"]),
    ("/compare/stream", {"prompt": "Say hi", "models": MODELS}, MODELS),
]  # fmt: skip


def stream(client: FlaskClient, route: str, body: dict[str, Any]) -> list[Frame]:
    response = client.post(route, json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert len(response.headers["X-Request-Id"]) == 32
    return parse_frames(response.get_data(as_text=True))


@pytest.mark.parametrize(("route", "body", "sections"), ROUTES)
def test_route_streams_every_section_by_the_protocol(
    sim_client: FlaskClient, route: str, body: dict[str, Any], sections: list[str]
) -> None:
    frames = stream(sim_client, route, body)
    texts = check_protocol(frames)
    events = data_events(frames)
    start = next(e for e in events if e["type"] == "start")
    assert start["sections"] == sections
    assert events[-1]["completed"]
    assert sorted(events[-1]["completed"]) == sorted(sections)
    assert all(texts[name] for name in sections)


def test_compare_gives_each_model_its_own_section(sim_client: FlaskClient) -> None:
    frames = stream(sim_client, "/compare/stream", {"prompt": "Say hi", "models": MODELS})
    starts = [e for e in data_events(frames) if e["type"] == "section_start"]
    assert {e["section"]: e["model"] for e in starts} == {m: m for m in MODELS}


def test_sections_use_the_configured_model_per_preset(make_app: MakeApp, simulator: Any) -> None:
    app = make_app(
        openai_base_url=simulator.base_url,
        upstream_is_simulator=True,
        models={"simple": "gpt-4.1-mini", "medium": "gpt-4.1", "complex": "o4-mini"},
    )
    frames = stream(app.test_client(), "/dream/interpret-stream", {"dream": "a dream"})
    starts = {e["section"]: e["model"] for e in data_events(frames) if e["type"] == "section_start"}
    assert starts == {
        "summary": "gpt-4.1-mini",
        "symbols": "gpt-4.1",
        "recommendations": "gpt-4.1-mini",
    }


def _slow_first(mode: str) -> dict[str, Any]:
    return {
        "dream": "a dream",
        "mode": mode,
        "sim": {"ttft_ms": 5, "itl_ms": 1, "tokens": 8},
        "sim_sections": {"summary": {"ttft_ms": 300}},
    }


def _chunk_sections(frames: list[Frame]) -> list[str]:
    return [e["section"] for e in data_events(frames) if e["type"] == "chunk"]


def test_interleaved_mode_sends_chunks_as_they_arrive(sim_client: FlaskClient) -> None:
    frames = stream(sim_client, "/dream/interpret-stream", _slow_first("interleaved"))
    check_protocol(frames)
    order = _chunk_sections(frames)
    assert order[0] != "summary"  # the slow first section does not hold the others back
    assert order[-1] == "summary"


def test_ordered_mode_sends_sections_in_request_order(sim_client: FlaskClient) -> None:
    frames = stream(sim_client, "/dream/interpret-stream", _slow_first("ordered"))
    check_protocol(frames)
    order = _chunk_sections(frames)
    rank = [DREAM_SECTIONS.index(name) for name in order]
    assert rank == sorted(rank)
    assert order[0] == "summary"


def test_one_failing_section_does_not_stop_the_others(sim_client: FlaskClient) -> None:
    body = {
        "dream": "a dream",
        "sim_sections": {"symbols": {"status": 500}, "recommendations": {"error_after": 3}},
    }
    frames = stream(sim_client, "/dream/interpret-stream", body)
    texts = check_protocol(frames)
    events = data_events(frames)
    errors = {e["section"]: e for e in events if e["type"] == "error"}
    assert errors["symbols"]["code"] == "upstream_error"
    assert errors["symbols"]["chunks"] == 0
    assert errors["recommendations"]["code"] == "upstream_error"
    assert errors["recommendations"]["chunks"] == 3
    assert texts["recommendations"]  # chunks before the error stay delivered
    assert events[-1]["completed"] == ["summary"]
    assert SECRET_KEY not in str(events)


def test_sim_sections_must_name_sections_of_the_route(
    sim_client: FlaskClient, simulator: SimulatorProcess
) -> None:
    body = {"dream": "a dream", "sim_sections": {"symbolz": {"status": 500}}}
    response = sim_client.post("/dream/interpret-stream", json=body)
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "unknown_section"
    assert simulator.stats(records=False)["requests_total"] == 0


def test_heartbeats_flow_while_the_upstream_is_silent(make_app: MakeApp, simulator: Any) -> None:
    app = make_app(
        openai_base_url=simulator.base_url,
        upstream_is_simulator=True,
        run=RunOptions(heartbeat_s=0.05),
    )
    body = {"dream": "a dream", "sim": {"ttft_ms": 400}}
    frames = stream(app.test_client(), "/dream/interpret-stream", body)
    check_protocol(frames)
    first_chunk = next(i for i, f in enumerate(frames) if f.type == "chunk")
    pings = [f for f in frames[:first_chunk] if f.comment == "ping"]
    assert len(pings) >= 3, [f.type for f in frames[:first_chunk]]


def test_start_goes_out_before_any_upstream_call(
    sim_client: FlaskClient, simulator: SimulatorProcess
) -> None:
    response = sim_client.post("/dream/interpret-stream", json={"dream": "a dream"}, buffered=False)
    body = iter(response.response)
    first = next(body)
    assert first.startswith(b'data: {"type":"start"')
    assert simulator.stats(records=False)["requests_total"] == 0
    rest = b"".join(body)
    response.close()
    check_protocol(parse_frames((first + rest).decode()))
    assert simulator.stats(records=False)["requests_total"] == 3


def test_history_saves_each_reading_after_the_stream(sim_app: Flask) -> None:
    client = sim_app.test_client()
    frames = stream(client, "/dream/interpret-stream", {"dream": "I was flying"})
    texts = check_protocol(frames)
    store = get_state(sim_app).history
    assert store is not None
    assert store.flush(5.0)
    readings = client.get("/history?limit=5").get_json()["readings"]
    assert len(readings) == 1
    reading = readings[0]
    assert reading["route"] == "dream"
    assert reading["request_id"] == data_events(frames)[0]["request_id"]
    assert reading["input"] == {"dream": "I was flying"}
    assert reading["cancelled"] is False
    assert {name: s["text"] for name, s in reading["sections"].items()} == texts
    assert all(s["status"] == "done" for s in reading["sections"].values())
    assert all(s["ttft_ms"] > 0 for s in reading["sections"].values())


def test_history_saves_how_the_engine_ended_each_section(sim_app: Flask) -> None:
    client = sim_app.test_client()
    body = {
        "dream": "a dream",
        "sim_sections": {"symbols": {"status": 500}, "recommendations": {"error_after": 3}},
    }
    texts = check_protocol(stream(client, "/dream/interpret-stream", body))
    store = get_state(sim_app).history
    assert store is not None
    assert store.flush(5.0)
    (reading,) = client.get("/history?limit=5").get_json()["readings"]
    sections = reading["sections"]
    assert reading["cancelled"] is False
    assert {name: s["status"] for name, s in sections.items()} == {
        "summary": "done",
        "symbols": "error",
        "recommendations": "error",
    }
    assert {name: s["text"] for name, s in sections.items()} == texts
    assert sections["recommendations"]["text"]  # what streamed before the error is kept
    assert sections["symbols"]["error_code"] == "upstream_error"
    assert sections["symbols"]["error_message"]
    assert sections["symbols"]["ttft_ms"] is None
    assert sections["summary"]["error_code"] is None
    assert sections["summary"]["duration_ms"] > 0


def test_history_lists_newest_first_and_honours_the_limit(sim_app: Flask) -> None:
    client = sim_app.test_client()
    for question in ("one", "two", "three"):
        stream(client, "/tarot/single-card-stream", {"question": question})
    store = get_state(sim_app).history
    assert store is not None
    assert store.flush(5.0)
    readings = client.get("/history?limit=2").get_json()["readings"]
    assert [r["input"]["question"] for r in readings] == ["three", "two"]
    assert len(readings[0]["input"]["cards"]) == 1


def test_a_broken_history_database_never_breaks_a_stream(
    make_app: MakeApp, simulator: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A directory cannot be opened as a SQLite file: every write fails.
    app = make_app(
        openai_base_url=simulator.base_url,
        upstream_is_simulator=True,
        history_db_path=str(tmp_path),
    )
    with caplog.at_level(logging.WARNING):
        frames = stream(app.test_client(), "/dream/interpret-stream", {"dream": "a dream"})
        check_protocol(frames)
        store = get_state(app).history
        assert store is not None
        assert store.flush(5.0)
    assert store.failed == 1
    assert "history write failed" in caplog.text
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert _metric(metrics, "backend_ai_history_failed_total") == 1
    assert str(tmp_path) not in caplog.text
    assert SECRET_KEY not in caplog.text


def _metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"no sample {name}{labels} in /metrics")


def test_metrics_count_runs_sections_errors_and_latencies(sim_client: FlaskClient) -> None:
    stream(sim_client, "/dream/interpret-stream", {"dream": "a dream"})
    stream(
        sim_client,
        "/compare/stream",
        {"prompt": "p", "models": MODELS, "sim_sections": {"gpt-4o": {"status": 503}}},
    )
    response = sim_client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert _metric(text, "backend_ai_runs_total", route="dream", outcome="ok") == 1
    assert _metric(text, "backend_ai_runs_total", route="compare", outcome="partial") == 1
    assert _metric(text, "backend_ai_sections_total", route="dream", outcome="done") == 3
    assert _metric(text, "backend_ai_sections_total", route="compare", outcome="error") == 1
    assert _metric(text, "backend_ai_section_errors_total", code="upstream_error") == 1
    assert _metric(text, "backend_ai_section_ttft_seconds_count", route="dream") == 3
    assert _metric(text, "backend_ai_first_byte_seconds_count", route="compare") == 1
    assert _metric(text, "backend_ai_active_streams") == 0
    assert _metric(text, "backend_ai_chunks_total", route="dream") > 0
    assert (
        _metric(
            text,
            "backend_ai_http_requests_total",
            endpoint="dream.interpret_stream",
            status="200",
        )
        == 1
    )


def test_a_rate_limited_run_falls_back_and_is_counted(sim_client: FlaskClient) -> None:
    body = {
        "dream": "a dream",
        "sim": {"tokens": 4},
        "sim_sections": {
            "symbols": {"fail_first": 1, "retry_after_ms": 30, "attempt_key": "symbols"},
        },
    }
    frames = stream(sim_client, "/dream/interpret-stream", body)
    check_protocol(frames)
    events = data_events(frames)
    assert any(e["type"] == "rate_limit" and "symbols" in e["sections"] for e in events)
    assert sorted(events[-1]["completed"]) == sorted(DREAM_SECTIONS)
    text = sim_client.get("/metrics").get_data(as_text=True)
    assert _metric(text, "backend_ai_rate_limit_fallbacks_total", route="dream") == 1
    assert _metric(text, "backend_ai_runs_total", route="dream", outcome="ok") == 1


def test_stats_reports_the_engines_per_section_numbers(sim_client: FlaskClient) -> None:
    stream(sim_client, "/dream/interpret-stream", {"dream": "a dream"})
    stats = sim_client.get("/stats").get_json()
    for name in DREAM_SECTIONS:
        assert stats[name]["count"] >= 1
        assert stats[name]["avg_time_ms"] > 0


def test_tarot_sends_the_drawn_cards_first_and_saves_the_same_cards(
    sim_client: FlaskClient, sim_app: Flask
) -> None:
    frames = stream(sim_client, "/tarot/three-card-stream", {"question": "What now?"})
    check_protocol(frames)
    reading, start = data_events(frames)[:2]
    assert reading["type"] == "reading"
    assert (reading["route"], reading["spread"]) == ("tarot", "three-card")
    assert reading["request_id"] == start["request_id"]
    assert len(reading["cards"]) == 3
    assert len(set(reading["cards"])) == 3
    history = get_state(sim_app).history
    assert history is not None
    assert history.flush(5.0)
    assert history.recent(1)[0]["input"]["cards"] == reading["cards"]


@pytest.mark.parametrize("given", [None, 12])
def test_iching_sends_the_cast_hexagram_first(sim_client: FlaskClient, given: int | None) -> None:
    body: dict[str, Any] = {"question": "Should I move?"}
    if given is not None:
        body["hexagram"] = given
    frames = stream(sim_client, "/iching/reading-stream", body)
    check_protocol(frames)
    reading = data_events(frames)[0]
    assert reading["type"] == "reading"
    assert reading["route"] == "iching"
    number = reading["hexagram"]["number"]
    assert 1 <= number <= 64
    if given is not None:
        assert number == given
    assert reading["hexagram"]["name"]


def test_routes_without_a_draw_start_with_the_engine_start(sim_client: FlaskClient) -> None:
    frames = stream(sim_client, "/dream/interpret-stream", {"dream": "a dream"})
    assert data_events(frames)[0]["type"] == "start"


def test_an_engine_exception_mid_run_cuts_the_stream_and_logs_only_its_type(
    sim_app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The body adds no events of its own: an exception from the engine's generator (a bug,
    stood in for here by wrapping the real run) ends the body where it is, with no ``done``
    that the engine never sent, and the log names the exception's type, never its message."""
    manager = get_state(sim_app).manager
    real = manager.stream_batches

    def breaks_after_start(*args: Any, **kwargs: Any) -> Generator[list[Event], None, None]:
        batches = real(*args, **kwargs)
        try:
            yield next(batches)
            raise RuntimeError(f"engine bug holding {SECRET_KEY}")
        finally:
            batches.close()

    monkeypatch.setattr(manager, "stream_batches", breaks_after_start)
    client = sim_app.test_client()
    with caplog.at_level(logging.INFO):
        frames = stream(client, "/dream/interpret-stream", {"dream": "a dream"})
    assert [e["type"] for e in data_events(frames)] == ["start"]
    assert "RuntimeError" in caplog.text
    assert SECRET_KEY not in caplog.text
    metrics = client.get("/metrics").get_data(as_text=True)
    assert _metric(metrics, "backend_ai_runs_total", route="dream", outcome="cancelled") == 1
    assert _metric(metrics, "backend_ai_active_streams") == 0
