"""Upstream faults against the real service: gunicorn on loopback, the simulator upstream.

For each fault the faulty section must end with an ``error`` carrying the code that names the
fault, every other section must finish with its full text — the same text as a fault-free run
of the same request, since the simulator's text is a function of the request — the stream must
end with ``done``, and it must end within the deadline configured for that fault (stall
timeout, read timeout, run deadline), never later. Afterwards the simulator must hold no open
stream. The drop fault runs on all four routes (and in ordered mode); the others on one route
each, since the route does not change how a fault is handled.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from backend_ai.simulator import SimulatorProcess

from .conftest import Service, StartService, sim_env
from .helpers import ROUTES, RouteCase, StreamResult, post_stream

STALL_TIMEOUT_S = 1.0  # FAST_SERVICE_ENV
READ_TIMEOUT_S = 1.0
RUN_DEADLINE_S = 2.5
#: Slack on top of a configured deadline before a test calls it a hang (a loaded 2-core box).
SLACK_S = 2.5


@dataclass(frozen=True)
class Fault:
    id: str
    sim: dict[str, Any]
    code: str | None  # None: the section must recover and finish
    routes: tuple[str, ...]
    chunks: int | None = None  # content chunks the faulty section delivers before the fault
    max_s: float = 10.0
    extra: dict[str, Any] = field(default_factory=dict)


FAULTS = [
    Fault("429-first-k-recovers", {"fail_first": 2, "retry_after_ms": 50}, None, ("dream",)),
    Fault(
        "429-first-k-exhausted",
        {"fail_first": 10, "retry_after": 0, "retry_after_ms": 50},
        "rate_limited",
        ("iching",),
        chunks=0,
    ),
    Fault("500", {"status": 500}, "upstream_error", ("compare",), chunks=0),
    Fault("503", {"status": 503, "retry_after": 1}, "upstream_error", ("tarot",), chunks=0),
    Fault(
        "reset-mid-stream",
        {"drop_after": 5},
        "connection_error",
        ("dream", "iching", "tarot", "compare"),
        chunks=5,
    ),
    Fault(
        "reset-mid-stream-ordered",
        {"drop_after": 5},
        "connection_error",
        ("dream",),
        chunks=5,
        extra={"mode": "ordered"},
    ),
    Fault(
        "stall-mid-stream",
        {"stall_after": 3, "stall_s": 15},
        "timeout",
        ("dream",),
        chunks=3,
        max_s=STALL_TIMEOUT_S + SLACK_S,
    ),
    Fault("malformed-chunk", {"malformed_after": 3}, "malformed", ("iching",), chunks=3),
    Fault("error-mid-stream", {"error_after": 4}, "upstream_error", ("compare",), chunks=4),
    Fault("truncated-body", {"truncate_after": 4}, "incomplete", ("tarot",), chunks=4),
]

CASES = [
    pytest.param(fault, route, id=f"{fault.id}-{route}")
    for fault in FAULTS
    for route in fault.routes
]


@pytest.fixture(scope="module")
def service(start_service: StartService, simulator_server: SimulatorProcess) -> Service:
    return start_service(simulator_server.base_url, **sim_env())


References = Callable[[RouteCase], dict[str, str]]


@pytest.fixture(scope="module")
def references(service: Service) -> Iterator[References]:
    """Each route's fault-free text per section, fetched once per module."""
    cache: dict[str, dict[str, str]] = {}

    def get(case: RouteCase) -> dict[str, str]:
        if case.name not in cache:
            with httpx.Client(timeout=30.0) as http:
                result = post_stream(http, service.url, case.path, case.body)
            assert all(o.end == "done" for o in result.outcomes.values()), result.outcomes
            cache[case.name] = {name: o.text for name, o in result.outcomes.items()}
        return cache[case.name]

    return get


def assert_no_open_upstream_stream(simulator: SimulatorProcess) -> dict[str, Any]:
    """Every stream the simulator started has ended, one way or another, and is accounted for."""
    stats = simulator.wait_for_stats(lambda s: s["streams_active"] == 0, timeout=5.0)
    cut = sum(1 for d in stats["disconnects"] if d["stream_started"])
    ended = stats["streams_completed"] + stats["streams_faulted"] + cut
    assert stats["streams_started"] == ended, stats
    return stats


def check_isolation(result: StreamResult, case: RouteCase, reference: dict[str, str]) -> None:
    """The sections the fault was not aimed at finished with their full, fault-free text."""
    for name in case.sections:
        if name == case.faulty:
            continue
        outcome = result.outcomes[name]
        assert outcome.end == "done", (name, outcome)
        assert outcome.finish_reason == "stop", (name, outcome)
        assert outcome.text == reference[name], name


@pytest.mark.parametrize(("fault", "route"), CASES)
def test_upstream_fault_fails_only_its_section(
    service: Service,
    simulator: SimulatorProcess,
    references: References,
    http: httpx.Client,
    fault: Fault,
    route: str,
) -> None:
    case = ROUTES[route]
    reference = references(case)
    body = {**case.body, **fault.extra, "sim_sections": {case.faulty: fault.sim}}
    result = post_stream(http, service.url, case.path, body)

    faulty = result.outcomes[case.faulty]
    if fault.code is None:
        assert faulty.end == "done", faulty
        assert any(e["type"] == "rate_limit" for e in result.events)
        if case.deterministic:
            assert faulty.text == reference[case.faulty]
    else:
        assert faulty.end == "error", faulty
        assert faulty.code == fault.code, faulty
        assert fault.chunks is not None
        assert faulty.chunks == fault.chunks, faulty
        if case.deterministic:  # what did arrive is exactly the start of the real text
            assert reference[case.faulty].startswith(faulty.text)
    check_isolation(result, case, reference)
    assert result.elapsed_s < fault.max_s, f"{result.elapsed_s:.2f} s"
    stats = assert_no_open_upstream_stream(simulator)
    if fault.id == "429-first-k-exhausted":
        # One attempt plus BACKEND_AI_MAX_RATE_LIMIT_RETRIES (2) retries, then it gives up.
        assert stats["status_counts"]["429"] == 3, stats["status_counts"]


def test_stalled_upstream_is_closed_when_the_section_times_out(
    service: Service, simulator: SimulatorProcess, http: httpx.Client
) -> None:
    """The stall timeout does not just end the section: the upstream stream is cancelled."""
    case = ROUTES["dream"]
    body = {**case.body, "sim_sections": {case.faulty: {"stall_after": 2, "stall_s": 30}}}
    result = post_stream(http, service.url, case.path, body)
    assert result.outcomes[case.faulty].code == "timeout"
    stats = simulator.wait_for_stats(
        lambda s: s["streams_active"] == 0 and len(s["disconnects"]) == 1, timeout=5.0
    )
    assert stats["disconnects"][0]["chunks_sent"] == 2


@pytest.mark.parametrize(("route", "models", "budget"), [("compare", 9, 2), ("dream", 3, 2)])
def test_a_burst_over_the_upstream_budget_falls_back_and_gets_every_section_through(
    service: Service,
    simulator: SimulatorProcess,
    http: httpx.Client,
    route: str,
    models: int,
    budget: int,
) -> None:
    case = ROUTES[route]
    body = dict(case.body)
    if route == "compare":
        body["models"] = [f"model-{i}" for i in range(models)]
    reference = post_stream(http, service.url, case.path, body)
    assert all(o.end == "done" for o in reference.outcomes.values())
    simulator.reset()
    simulator.configure(budget={"max_concurrent_per_key": budget})

    result = post_stream(http, service.url, case.path, body)

    assert len(result.outcomes) == models
    for name, outcome in result.outcomes.items():
        assert outcome.end == "done", (name, outcome)
        assert outcome.text == reference.outcomes[name].text, name
    fallbacks = [e for e in result.events if e["type"] == "rate_limit"]
    assert fallbacks, "the burst never hit the budget"
    stats = assert_no_open_upstream_stream(simulator)
    assert stats["status_counts"].get("429", 0) >= 1
    assert stats["streams_active_max"] <= budget
    assert stats["streams_completed"] == models
    # Sequential means it: after the streams the budget admitted at first, each stream
    # started only once every earlier one had ended (2 ms of slack for the two clocks).
    streams = sorted(
        (r for r in simulator.stats()["requests"] if r["status"] == 200),
        key=lambda r: r["t_start"],
    )
    first_wave = max(i for i, r in enumerate(streams) if r["t_start"] < streams[0]["t_end"]) + 1
    assert first_wave <= budget
    for i in range(first_wave, len(streams)):
        ended = max(r["t_end"] for r in streams[:i])
        assert streams[i]["t_start"] >= ended - 0.002, (i, streams[i]["t_start"] - ended)


@pytest.fixture(scope="module")
def timeouts_service(start_service: StartService, simulator_server: SimulatorProcess) -> Service:
    """Stall timeout off, so the HTTP read timeout and the run deadline are what fire."""
    return start_service(
        simulator_server.base_url,
        **sim_env(
            BACKEND_AI_STALL_TIMEOUT_S="off",
            BACKEND_AI_HTTP_TIMEOUT=str(READ_TIMEOUT_S),
            BACKEND_AI_DEADLINE_S=str(RUN_DEADLINE_S),
        ),
    )


def test_slow_upstream_headers_end_at_the_read_timeout(
    timeouts_service: Service, simulator: SimulatorProcess, http: httpx.Client
) -> None:
    case = ROUTES["dream"]
    sim = {"header_delay_ms": 6000}
    body = {**case.body, "sim_sections": {case.faulty: sim}}
    result = post_stream(http, timeouts_service.url, case.path, body)
    faulty = result.outcomes[case.faulty]
    assert (faulty.end, faulty.code, faulty.chunks) == ("error", "timeout", 0), faulty
    assert faulty.message == "the upstream did not answer in time"
    for name in case.sections:
        if name != case.faulty:
            assert result.outcomes[name].end == "done"
    assert result.elapsed_s < READ_TIMEOUT_S + SLACK_S, f"{result.elapsed_s:.2f} s"
    stats = simulator.wait_for_stats(lambda s: s["streams_active"] == 0, timeout=5.0)
    assert stats["streams_completed"] == 2


def test_the_run_deadline_ends_every_section_and_the_stream(
    timeouts_service: Service, simulator: SimulatorProcess, http: httpx.Client
) -> None:
    case = ROUTES["iching"]
    # The smallest preset caps a section at 300 tokens: at 20 ms each, 6 s unless cut.
    body = {**case.body, "sim": {"ttft_ms": 10, "itl_ms": 20, "tokens": 5000}}
    result = post_stream(http, timeouts_service.url, case.path, body)
    for name, outcome in result.outcomes.items():
        assert (outcome.end, outcome.code) == ("error", "timeout"), (name, outcome)
        assert outcome.chunks > 0, name  # they were streaming, and what came stays valid
    assert RUN_DEADLINE_S <= result.elapsed_s < RUN_DEADLINE_S + SLACK_S, result.elapsed_s
    simulator.wait_for_stats(
        lambda s: s["streams_active"] == 0 and len(s["disconnects"]) == 3, timeout=5.0
    )


@pytest.fixture(scope="module")
def refusing_port() -> Iterator[int]:
    """A port that refuses connections: bound (so nobody else takes it), never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _assert_every_section_failed(result: StreamResult, case: RouteCase, code: str) -> None:
    assert set(result.outcomes) == set(case.sections)
    for name, outcome in result.outcomes.items():
        assert (outcome.end, outcome.code, outcome.chunks) == ("error", code, 0), (name, outcome)
    assert result.events[-1]["failed"]
    assert not result.events[-1]["completed"]


def test_an_upstream_refusing_connections_fails_every_section_fast(
    start_service: StartService, refusing_port: int, http: httpx.Client
) -> None:
    service = start_service(f"http://127.0.0.1:{refusing_port}/v1")
    case = ROUTES["dream"]
    result = post_stream(http, service.url, case.path, case.body)
    _assert_every_section_failed(result, case, "connection_error")
    assert result.elapsed_s < 3.0 + SLACK_S  # BACKEND_AI_HTTP_CONNECT_TIMEOUT
    assert service.probe().sample().upstream_connections == 0


@pytest.mark.parametrize("variant", ["https-to-cleartext", "untrusted-ca"])
def test_a_tls_handshake_failure_fails_every_section(
    start_service: StartService,
    simulator_server: SimulatorProcess,
    simulator_tls_server: SimulatorProcess,
    http: httpx.Client,
    variant: str,
) -> None:
    if variant == "https-to-cleartext":
        base_url = f"https://127.0.0.1:{simulator_server.port}/v1"
        case = ROUTES["iching"]
    else:  # a real TLS server whose certificate chains to a CA the service does not trust
        base_url = simulator_tls_server.base_url
        case = ROUTES["compare"]
    service = start_service(base_url)
    result = post_stream(http, service.url, case.path, case.body)
    _assert_every_section_failed(result, case, "connection_error")
    assert result.elapsed_s < 3.0 + SLACK_S
    messages = {o.message for o in result.outcomes.values()}
    assert all(m and len(m) <= 200 for m in messages), messages
