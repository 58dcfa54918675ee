"""The service under a real gunicorn on loopback, against the simulator.

Timing is asserted as ratios measured in the same run (first byte against the upstream's
time to first token, wall time against the sum of the sections), never as absolute numbers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backend_ai.app.gunicorn_process import GunicornProcess
from backend_ai.simulator import SimulatorProcess
from tests.support.protocol import check_protocol
from tests.support.sse import data_events
from tests.support.waiting import wait_until

from .conftest import (
    DREAM,
    SECRET_KEY,
    StartService,
    cut_while_every_section_streams,
    open_stream,
    read_through_sigterm,
)


def metric(server: GunicornProcess, http: httpx.Client, name: str, **labels: str) -> float:
    assert server.url is not None
    text = http.get(server.url + "metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def test_sections_stream_in_parallel_and_interleaved(
    service: GunicornProcess, http: httpx.Client
) -> None:
    body = {"dream": "a dream", "sim": {"ttft_ms": 100, "itl_ms": 10, "tokens": 30, "jitter": 0}}
    runs = []
    # Three runs, each checked whole; the timing ratios use the fastest, since a busy machine
    # only ever delays a run (a section started late), while sections run one after another
    # would fail them in every run.
    for _ in range(3):
        with open_stream(http, service, DREAM, body) as live:
            frames = live.read_all()
        check_protocol(frames)
        events = data_events(frames)
        first_done = next(i for i, e in enumerate(events) if e["type"] == "section_done")
        before = {e["section"] for e in events[:first_done] if e["type"] == "chunk"}
        assert before == {"summary", "symbols", "recommendations"}  # all live before any ends
        durations = [e["duration_ms"] for e in events if e["type"] == "section_done"]
        runs.append((events[-1]["duration_ms"], durations))
    wall_ms, durations = min(runs, key=lambda run: run[0] / max(run[1]))
    assert wall_ms < 0.6 * sum(durations), (wall_ms, durations)
    assert wall_ms < 1.3 * max(durations), (wall_ms, durations)


def test_first_byte_goes_out_long_before_the_upstream_answers(
    service: GunicornProcess, http: httpx.Client
) -> None:
    assert service.url is not None
    http.get(service.url + "health")  # connection and app warm: measure the request alone
    ttft_s = 0.5
    body = {"dream": "a dream", "sim": {"ttft_ms": ttft_s * 1000, "tokens": 3, "jitter": 0}}
    with open_stream(http, service, DREAM, body) as live:
        frames = live.read_all()
    check_protocol(frames)
    first_byte = frames[0].at - live.sent_at
    first_chunk = next(f for f in frames if f.type == "chunk").at - live.sent_at
    assert frames[0].type == "start"
    assert first_chunk >= ttft_s  # the upstream really was that slow...
    assert first_byte < 0.1 * ttft_s, f"first byte {first_byte * 1000:.1f} ms"  # ...we were not


def test_heartbeats_keep_a_silent_stream_alive(
    service: GunicornProcess, http: httpx.Client
) -> None:
    body = {"dream": "a dream", "sim": {"ttft_ms": 1000, "tokens": 2}}
    with open_stream(http, service, DREAM, body) as live:
        frames = live.read_all()
    check_protocol(frames)
    first_chunk = next(i for i, f in enumerate(frames) if f.type == "chunk")
    pings = [f for f in frames[:first_chunk] if f.comment == "ping"]
    assert len(pings) >= 3  # 1 s of silence, heartbeat every 0.2 s


def test_client_disconnect_closes_every_upstream_stream(
    service: GunicornProcess, http: httpx.Client, simulator: SimulatorProcess
) -> None:
    cut = cut_while_every_section_streams(http, service, simulator)
    assert cut.stats["streams_completed"] == 0
    assert cut.stats["streams_started"] == 3
    # Every upstream stream closed within a tiny fraction of what it would still have sent.
    assert cut.latency_s < 0.025 * cut.remaining_s, f"{cut.latency_s * 1000:.0f} ms"
    wait_until(
        lambda: metric(service, http, "backend_ai_active_streams") == 0,
        5.0,
        "the request's generator ended",
    )
    # The cut reading is still saved, marked as such, with the text that did go out.
    request_id = data_events(cut.frames)[0]["request_id"]
    assert service.url is not None

    def saved() -> list[dict[str, Any]]:
        readings = http.get(service.url + "history?limit=20").json()["readings"]
        return [r for r in readings if r["request_id"] == request_id]

    wait_until(saved, 5.0, "the cut reading is in /history")
    reading = saved()[0]
    assert reading["cancelled"] is True
    assert {s["status"] for s in reading["sections"].values()} == {"incomplete"}
    assert all(s["text"] for s in reading["sections"].values())


def test_history_and_metrics_through_gunicorn(service: GunicornProcess, http: httpx.Client) -> None:
    assert service.url is not None
    body = {"question": "Where next?", "sim": {"tokens": 5}}
    with open_stream(http, service, "tarot/three-card-stream", body) as live:
        frames = live.read_all()
    texts = check_protocol(frames)
    request_id = data_events(frames)[0]["request_id"]

    def saved() -> bool:
        readings = http.get(service.url + "history?limit=20").json()["readings"]
        return any(r["request_id"] == request_id for r in readings)

    wait_until(saved, 5.0, "the reading is in /history")
    readings = http.get(service.url + "history?limit=20").json()["readings"]
    reading = next(r for r in readings if r["request_id"] == request_id)
    assert reading["sections"]["reading"]["text"] == texts["reading"]
    assert len(reading["input"]["cards"]) == 3
    assert metric(service, http, "backend_ai_runs_total", route="tarot", outcome="ok") >= 1
    assert metric(service, http, "backend_ai_first_byte_seconds_count", route="tarot") >= 1


def test_no_secret_in_gunicorn_log(service: GunicornProcess, http: httpx.Client) -> None:
    body = {"dream": "a dream", "sim": {"status": 401}}  # an auth error upstream
    with open_stream(http, service, DREAM, body) as live:
        frames = live.read_all()
    check_protocol(frames)
    assert all(e["code"] == "auth_error" for e in data_events(frames) if e["type"] == "error")
    assert SECRET_KEY not in str(data_events(frames))
    assert SECRET_KEY not in "".join(service.log_lines)


def test_sigterm_ends_open_streams_with_a_final_done(
    start_service: StartService, http: httpx.Client, simulator: SimulatorProcess
) -> None:
    server = start_service()
    frames = read_through_sigterm(http, server)
    check_protocol(frames)
    events = data_events(frames)
    done = events[-1]
    assert done["type"] == "done"
    assert done["cancelled"] is True
    errors = [e for e in events if e["type"] == "error"]
    assert {e["code"] for e in errors} == {"cancelled"}
    assert {e["section"] for e in errors} == {"summary", "symbols", "recommendations"}
    assert server.wait(timeout=15) == 0
    simulator.wait_for_stats(lambda s: s["streams_active"] == 0, timeout=5.0)


@pytest.mark.parametrize("workers", [2])
def test_several_workers_share_one_history(
    start_service: StartService, http: httpx.Client, workers: int
) -> None:
    server = start_service(workers=workers)
    assert server.url is not None
    assert len(server.worker_pids) == workers
    ids = []
    for _ in range(4):
        with open_stream(http, server, DREAM, {"dream": "x", "sim": {"tokens": 3}}) as live:
            ids.append(data_events(live.read_all())[0]["request_id"])
        http.close()  # a new connection, so the next request may land on another worker
        http = httpx.Client(timeout=30.0)

    def all_saved() -> bool:
        readings = http.get(server.url + "history?limit=20").json()["readings"]
        return {r["request_id"] for r in readings} >= set(ids)

    wait_until(all_saved, 5.0, "every reading in the shared history")
    http.close()


def test_each_worker_freezes_its_start_up_objects(start_service: StartService) -> None:
    """Full garbage collections then skip what the worker built at start-up (the module
    docstring of ``gunicorn_conf`` says why: those scans were the long pauses)."""
    server = start_service(workers=2)
    line = re.compile(r"worker (\d+): (\d+) start-up objects frozen")

    def frozen() -> dict[int, int]:
        found = (line.search(text) for text in list(server.log_lines))
        return {int(m[1]): int(m[2]) for m in found if m}

    wait_until(lambda: set(frozen()) == set(server.worker_pids), 10.0, "every worker froze")
    # Flask, the SDK's models, the app: far more than this, in each worker.
    assert min(frozen().values()) > 20_000, frozen()


def test_root_gunicorn_conf_is_the_packaged_one() -> None:
    root = Path(__file__).resolve().parents[2] / "gunicorn.conf.py"
    namespace: dict[str, object] = {}
    exec(compile(root.read_text(), str(root), "exec"), namespace)
    assert namespace["worker_class"] == "gthread"
    assert namespace["wsgi_app"] == "backend_ai.app.factory:create_app()"
    assert callable(namespace["post_worker_init"])
    assert callable(namespace["worker_exit"])
