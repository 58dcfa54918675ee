"""Error isolation: one section's failure is an error event; the others finish with full text."""

from __future__ import annotations

import logging
import socket

import openai
import pytest

from backend_ai.streaming import ParallelStreamManager, PoolSettings
from backend_ai.streaming.events import ErrorCode, SectionDone, SectionError
from backend_ai.streaming.sse import encode_event

from .conftest import H1, H2
from .helpers import (
    API_KEY,
    assert_well_formed,
    chunks_of,
    collect,
    ends,
    expected_text,
    plain,
    section,
    texts,
)

# section name -> (sim controls, expected code, chunks delivered before the error)
FAULTS = {
    "status-500": ({"status": 500}, ErrorCode.UPSTREAM_ERROR, 0),
    "status-503": ({"status": 503}, ErrorCode.UPSTREAM_ERROR, 0),
    "status-400": ({"status": 400}, ErrorCode.BAD_REQUEST, 0),
    "status-401": ({"status": 401}, ErrorCode.AUTH_ERROR, 0),
    "drop": ({"drop_after": 3}, ErrorCode.CONNECTION_ERROR, 3),
    "malformed": ({"malformed_after": 3}, ErrorCode.MALFORMED, 3),
    "truncate": ({"truncate_after": 3}, ErrorCode.INCOMPLETE, 3),
    "error-mid-stream": ({"error_after": 3}, ErrorCode.UPSTREAM_ERROR, 3),
}
HEALTHY = ("healthy-1", "healthy-2")


@pytest.mark.parametrize("settings", [H2, H1], ids=["h2", "http1.1"])
def test_each_fault_fails_only_its_own_section(settings, make_client, make_manager, caplog):
    caplog.set_level(logging.DEBUG)
    client = make_client(settings)
    manager = make_manager(client)
    configs = [section(name, ttft_ms=40, itl_ms=5, tokens=20) for name in HEALTHY]
    configs += [section(name, tokens=20, **sim) for name, (sim, _, _) in FAULTS.items()]

    # Never raises out of the iterator: every failure is an event.
    events = plain(collect(manager.stream(configs)))

    done = assert_well_formed(events, [c.section_name for c in configs])
    assert set(done.completed) == set(HEALTHY)
    assert set(done.failed) == set(FAULTS)
    got = texts(events)
    for config in configs[: len(HEALTHY)]:
        end = ends(events)[config.section_name]
        assert isinstance(end, SectionDone)
        assert got[config.section_name] == expected_text(client, config)
    for name, (_, code, delivered) in FAULTS.items():
        error = ends(events)[name]
        assert isinstance(error, SectionError), name
        assert (error.code, error.chunks) == (code, delivered), name
        assert len(chunks_of(events, name)) == delivered, name
        assert error.message
    # Messages are safe to show: no key, in the event or in the logs.
    for event in events:
        assert API_KEY not in encode_event(event)
    assert API_KEY not in caplog.text


def test_error_messages_say_what_happened(manager):
    configs = [
        section("s503", status=503),
        section("mid", error_after=2),
        section("cut", truncate_after=2),
    ]
    errors = ends(plain(collect(manager.stream(configs))))
    assert errors["s503"].message == "upstream answered 503: Simulated error (status 503)."
    assert errors["mid"].message == (
        "upstream error mid-stream: Simulated error in the middle of the stream."
    )
    assert "finish_reason" in errors["cut"].message


def test_pooled_connection_survives_faults(manager, simulator):
    """A reset or broken stream ends only that stream: the HTTP/2 connection stays in use."""
    faults = [section(f"f{i}", drop_after=1) for i in range(3)]
    faults += [section("m", malformed_after=1), section("t", truncate_after=1)]
    plain(collect(manager.stream(faults)))
    events = plain(collect(manager.stream([section("after-1"), section("after-2")])))
    assert set(assert_well_formed(events, ["after-1", "after-2"]).completed) == {
        "after-1",
        "after-2",
    }
    stats = simulator.stats(records=False)
    assert stats["connections_accepted"] == 1
    assert stats["connections"][0]["http_version"] == "2"


def test_response_headers_slower_than_the_read_timeout(make_client, make_manager, simulator):
    client = make_client(PoolSettings(http2_prior_knowledge=True, timeout_s=0.5))
    manager = make_manager(client)
    configs = [section("slow-headers", header_delay_ms=5000), section("a"), section("b")]
    events = plain(collect(manager.stream(configs)))
    done = assert_well_formed(events, ["slow-headers", "a", "b"])
    assert set(done.completed) == {"a", "b"}
    error = ends(events)["slow-headers"]
    assert isinstance(error, SectionError)
    assert error.code is ErrorCode.TIMEOUT
    # The engine gave up on the stream: the simulator saw the client go.
    disconnects = simulator.wait_for_stats(lambda s: s["disconnects"])["disconnects"]
    assert [d["tag"] for d in disconnects] == ["slow-headers"]


def test_connection_refused_is_a_connection_error_per_section(make_client, make_manager):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sdk = make_client(H2)
    refused = sdk.with_options(base_url=f"http://127.0.0.1:{port}/v1")
    manager = make_manager(refused)
    events = plain(collect(manager.stream([section("a"), section("b")])))
    done = assert_well_formed(events, ["a", "b"])
    assert set(done.failed) == {"a", "b"}
    for error in ends(events).values():
        assert isinstance(error, SectionError)
        assert error.code is ErrorCode.CONNECTION_ERROR


def test_default_sdk_client_mid_stream_drop_is_connection_error(simulator, executor, stats):
    """openai 3.x's own transport is httpx2: its errors must not become ``internal``."""
    with openai.OpenAI(api_key=API_KEY, base_url=simulator.base_url, max_retries=0) as sdk:
        manager = ParallelStreamManager(sdk, executor=executor, stats=stats)
        events = plain(collect(manager.stream([section("drop", drop_after=3), section("ok")])))
    errors = ends(events)
    assert isinstance(errors["ok"], SectionDone)
    assert isinstance(errors["drop"], SectionError)
    assert errors["drop"].code is ErrorCode.CONNECTION_ERROR
