"""Client-side faults against the real service: clients that vanish, stop reading, or crowd in.

After every scenario the test waits until the service has settled — every run the app started
has finished (``backend_ai_runs_total`` caught up with the 200 responses), no SSE response is
open (``backend_ai_active_streams``), the simulator holds no open stream — and then checks the
gunicorn worker from ``/proc``: threads, descriptors, sockets, TCP connections and RSS stay
within a small bound of their baseline, and the simulator accounts for every stream it started
(completed, faulted, or closed by the client).

The pool threads of the engine (``backend-ai-section-*``) and of gthread persist by design, and
both pools add threads on demand, up to their caps, whenever a round happens to overlap more
work than any round before it. So before a leak check the test grows both pools to their caps
(``fill_pools``): from then on a pool cannot add a thread, and any thread more is a leak.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backend_ai.simulator import SimulatorProcess

from .conftest import Service, StartService, sim_env
from .helpers import (
    ROUTES,
    ProcSample,
    RawClient,
    check_stream,
    http_response,
    parse_sse_body,
    post_stream,
    wait_until,
)

SHIM = Path(__file__).parent / "small_send_buffer"
THREADS = 64  # gthread request threads
MAX_WORKERS = 64  # the engine's section pool
BACKPRESSURE_S = 1.0
#: About 6 s of output per section (the smallest preset caps it at 300 tokens): any cleanup
#: the tests see well before that was caused by the client going away, not by the stream ending.
LONG = {"ttft_ms": 20, "itl_ms": 20, "tokens": 5000}
#: Slack on waits for the service to settle (a loaded 2-core machine).
SETTLE_S = 5.0
CLIENTS = 48
STREAM_ENDPOINTS = (
    "dream.interpret_stream",
    "iching.reading_stream",
    "tarot.reading_stream",
    "compare.compare_stream",
)


@pytest.fixture(scope="module")
def service(start_service: StartService, simulator_server: SimulatorProcess) -> Service:
    return start_service(
        simulator_server.base_url,
        threads=THREADS,
        **sim_env(
            BACKEND_AI_MAX_WORKERS=str(MAX_WORKERS),
            BACKEND_AI_BACKPRESSURE_TIMEOUT_S=str(BACKPRESSURE_S),
            BACKEND_AI_QUEUE_SIZE="32",
            BACKEND_AI_STALL_TIMEOUT_S="5",
            BACKEND_AI_MAX_RETRY_WAIT_S="30",
            BACKEND_AI_TEST_SO_SNDBUF="8192",
            PYTHONPATH=os.pathsep.join(filter(None, [str(SHIM), os.environ.get("PYTHONPATH")])),
        ),
    )


def _metrics(service: Service) -> dict[str, float]:
    """Answered stream requests, finished runs and open SSE responses, from ``/metrics``."""
    with httpx.Client(timeout=10.0) as http:
        text = http.get(service.url + "metrics").text
    answered = runs = active = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "backend_ai_http_requests_total" and s.labels.get("status") == "200":
                if s.labels.get("endpoint") in STREAM_ENDPOINTS:
                    answered += s.value
            elif s.name == "backend_ai_runs_total":
                runs += s.value
            elif s.name == "backend_ai_active_streams":
                active = s.value
    return {"answered": answered, "runs": runs, "active": active}


def wait_settled(
    service: Service, simulator: SimulatorProcess, *, timeout: float = SETTLE_S
) -> dict[str, Any]:
    """Wait until every run the app started has ended and nothing is open, stable for 0.5 s.

    Stability matters: a request the client abandoned may still be on its way into the app
    when everything else is quiet. Returns the simulator's stats.
    """
    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    while True:
        m = _metrics(service)
        stats = simulator.stats(records=False)
        quiet = m["runs"] == m["answered"] and m["active"] == 0 and stats["streams_active"] == 0
        now = time.monotonic()
        if quiet:
            quiet_since = quiet_since or now
            if now - quiet_since >= 0.5:
                break
        else:
            quiet_since = None
        if now > deadline:
            raise AssertionError(f"the service did not settle in {timeout} s: {m}, {stats}")
        time.sleep(0.05)
    cut = sum(1 for d in stats["disconnects"] if d["stream_started"])
    assert stats["streams_started"] == stats["streams_completed"] + stats["streams_faulted"] + cut
    wait_until(
        lambda: service.probe().sample().client_connections == 0, timeout, "client sockets closed"
    )
    return stats


def fill_pools(service: Service) -> None:
    """Grow gthread's pool and the engine's section pool to their caps, once.

    ``THREADS`` requests at once occupy every gthread thread; their sections (three each) wait
    for response headers the simulator holds back, so ``MAX_WORKERS`` of them occupy every
    section thread at the same time. A ``ThreadPoolExecutor`` starts a thread for a task only
    while it has no idle one and is under its cap, so afterwards neither pool can grow.
    """
    case = ROUTES["dream"]
    body = {**case.body, "sim": {"header_delay_ms": 400, "ttft_ms": 0, "itl_ms": 1, "tokens": 3}}
    assert THREADS * 3 >= MAX_WORKERS, "too few sections to fill the section pool"
    gate = threading.Barrier(THREADS)

    def one(_: int) -> None:
        gate.wait(timeout=30)
        with httpx.Client(timeout=30.0) as http:
            post_stream(http, service.url, case.path, body)

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(one, range(THREADS)))


#: Threads the worker may add after ``fill_pools`` without a leak: a connection reader for a
#: second upstream connection while the first one drains after a GOAWAY.
READER_SLACK = 2


def assert_no_growth(before: ProcSample, after: ProcSample, *, rss_kb: int) -> None:
    """Nothing the worker holds grew beyond a small bound since ``before``.

    Call ``fill_pools`` before ``before`` is sampled: then the pools are at their caps and the
    thread count may grow only by ``READER_SLACK``.
    """
    assert after.threads <= before.threads + READER_SLACK, (before, after)
    assert after.threads <= THREADS + MAX_WORKERS + 10, after
    assert after.fds <= before.fds + 4, (before, after)
    assert after.sockets <= before.sockets + 2, (before, after)
    assert after.upstream_connections <= 2, after  # HTTP/2: one connection, or two around a GOAWAY
    assert after.client_connections == 0, after
    assert after.rss_kb - before.rss_kb <= rss_kb, (before, after)


def _sim_requests(simulator: SimulatorProcess) -> int:
    return int(simulator.stats(records=False)["requests_total"])


PHASES = ["before-start", "after-start", "mid-stream"]


@pytest.mark.parametrize("phase", PHASES)
def test_a_client_gone_at_any_phase_leaves_nothing_open(
    service: Service, simulator: SimulatorProcess, figures: Callable[..., None], phase: str
) -> None:
    case = ROUTES["dream"]
    body = {**case.body, "sim": LONG}
    start = _metrics(service)
    latencies = []
    repeats = 6
    for i in range(repeats):
        client = RawClient(service.url)
        client.send_post(case.path, body)
        if phase == "after-start":
            client.read_until(b'"type":"start"')
        elif phase == "mid-stream":
            client.read_until(b'"type":"chunk"', count=6)
        seen = len(simulator.stats(records=False)["disconnects"])
        closed_at = time.time()
        client.close(reset=i % 2 == 1)
        if phase == "mid-stream":  # three streams were open upstream: all must be closed
            stats = simulator.wait_for_stats(
                lambda s, n=seen: len(s["disconnects"]) >= n + 3, timeout=SETTLE_S
            )
            latencies.append(max(d["t"] for d in stats["disconnects"][seen:]) - closed_at)
        stats = wait_settled(service, simulator)
    end = _metrics(service)
    # FIN-closed requests all reach the app; a reset one may be dropped before it does.
    assert end["answered"] - start["answered"] >= repeats // 2
    assert stats["streams_completed"] == 0, "a stream ran to its end: the close went unnoticed"
    if latencies:
        # Well under the 6 s each stream had left: the next write (a chunk every 20 ms, a
        # heartbeat every 0.2 s) finds the client gone, and the cancel follows at once.
        assert statistics.median(latencies) < 0.2, latencies
        assert max(latencies) < 1.0, latencies
        figures(
            f"disconnect_{phase}",
            repeats=repeats,
            close_to_upstream_closed_ms_median=round(statistics.median(latencies) * 1000, 1),
            close_to_upstream_closed_ms_max=round(max(latencies) * 1000, 1),
        )


def test_a_client_gone_during_a_rate_limit_wait_cancels_the_retry(
    service: Service, simulator: SimulatorProcess
) -> None:
    case = ROUTES["dream"]
    retry_after_s = 2.0
    body = {**case.body, "sim": {**LONG, "fail_first": 100, "retry_after": retry_after_s}}
    for reset in (False, True):
        simulator.reset()
        client = RawClient(service.url)
        client.send_post(case.path, body)
        client.read_until(b'"type":"rate_limit"')
        rate_limited_at = time.monotonic()
        rate_limited_wall = time.time()
        client.close(reset=reset)
        wait_until(lambda: _metrics(service)["active"] == 0, SETTLE_S, "the run ended")
        ended_after = time.monotonic() - rate_limited_at
        assert ended_after < retry_after_s / 2, f"the run outlived its client by {ended_after} s"
        # A retry is due retry_after_s after its own 429, none earlier than the first: watch
        # past that moment, then look at when each request reached the upstream. How many
        # sections had asked before the client left depends on the machine's load (a section
        # still setting up its request when the client left is cancelled before it asks), so
        # the claim is about timing: every request came before the run ended (under
        # retry_after_s / 2 after the first 429), none when a retry was due.
        while time.monotonic() < rate_limited_at + retry_after_s + 0.5:
            time.sleep(0.05)
        requests = simulator.stats()["requests"]
        assert 1 <= len(requests) <= 3, requests
        late = [r for r in requests if r["t_start"] > rate_limited_wall + retry_after_s / 2]
        assert not late, f"a retry went out for a client that left: {late}"
        wait_settled(service, simulator)


@pytest.mark.slow
def test_a_thousand_disconnects_in_a_row_leak_nothing(
    service: Service, simulator: SimulatorProcess, figures: Callable[..., None]
) -> None:
    """Fast profile, four phases in turn, RST and FIN in turn, four clients at a time."""
    case = ROUTES["dream"]
    body = {**case.body, "sim": {"ttft_ms": 5, "itl_ms": 2, "tokens": 100}}

    def disconnect(i: int) -> None:
        client = RawClient(service.url)
        try:
            client.send_post(case.path, body)
            phase = i % 4
            if phase == 1:
                client.read_until(b'"type":"start"')
            elif phase == 2:
                client.read_until(b'"type":"chunk"')
            elif phase == 3:
                client.read_until(b'"type":"chunk"', count=5)
        finally:
            client.close(reset=i % 2 == 0)

    probe = service.probe()
    fill_pools(service)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(disconnect, range(200)))  # warm the allocator
        wait_settled(service, simulator)
        simulator.reset()
        before = probe.sample()
        started = time.monotonic()
        list(pool.map(disconnect, range(1000)))
        elapsed = time.monotonic() - started
    stats = wait_settled(service, simulator)
    after = probe.sample()
    # A leaked run (its events, texts, channel, futures) costs well over 10 KB; allocator
    # noise after warm-up measured about 1 KB per request.
    assert_no_growth(before, after, rss_kb=10_000)
    # Leaked HTTP/2 stream slots would exhaust a connection (100-256 streams) and force new
    # ones; one connection per 1,000 requests is the upstream's own GOAWAY rotation.
    assert stats["connections_accepted"] <= stats["requests_total"] // 1000 + 2, stats
    # And the service still works: a whole run afterwards.
    with httpx.Client(timeout=30.0) as http:
        result = post_stream(http, service.url, case.path, case.body)
    assert all(o.end == "done" for o in result.outcomes.values())
    figures(
        "disconnect_storm",
        disconnects=1000,
        seconds=round(elapsed, 1),
        upstream_streams_started=stats["streams_started"],
        upstream_streams_cut=sum(1 for d in stats["disconnects"] if d["stream_started"]),
        before=before.as_dict(),
        after=after.as_dict(),
    )


def test_a_client_that_stops_reading_releases_the_upstream(
    service: Service, simulator: SimulatorProcess, figures: Callable[..., None]
) -> None:
    """The server's writes block (small send buffer), the run's buffer fills, and after the
    backpressure timeout every section gives up with ``slow_consumer`` and closes upstream —
    long before the upstream would have finished. A client that reads again later gets the
    errors and ``done``; one that never does frees the request thread when it goes."""
    case = ROUTES["compare"]
    models = [f"model-{i}" for i in range(9)]
    body = {**case.body, "models": models, "sim": {"ttft_ms": 5, "itl_ms": 10, "tokens": 5000}}
    natural_s = 500 * 0.010  # the medium preset's 500 tokens at 10 ms
    for resume in (True, False):
        simulator.reset()
        client = RawClient(service.url, rcvbuf=4096)
        client.send_post(case.path, body)
        client.read_until(b'"type":"start"')
        simulator.wait_for_stats(lambda s: s["streams_started"] == 9, timeout=SETTLE_S)
        stopped_at = time.monotonic()
        stats = simulator.wait_for_stats(
            lambda s: s["streams_active"] == 0 and len(s["disconnects"]) == 9,
            timeout=natural_s,
        )
        released_after = time.monotonic() - stopped_at
        assert released_after < BACKPRESSURE_S + 2.0, released_after
        assert stats["streams_completed"] == 0
        assert _metrics(service)["active"] == 1  # the client still holds its response
        if resume:
            client.sock.settimeout(SETTLE_S)
            while chunk := client.sock.recv(65536):
                client.received += chunk
            status, body_bytes = http_response(client.received)
            assert status == 200
            events, _ = parse_sse_body(body_bytes.decode())
            outcomes = check_stream(events)
            assert {o.code for o in outcomes.values()} == {"slow_consumer"}
            # Bounded memory: what was held for the client is the run's buffer plus the
            # socket buffers, a small part of the 4,500 chunks the upstream would have sent.
            received = sum(o.chunks for o in outcomes.values())
            assert received < 4500 // 4, received
        client.close(reset=not resume)
        wait_settled(service, simulator)
        figures(
            f"slow_reader_{'resumes' if resume else 'never_reads'}",
            upstream_released_after_s=round(released_after, 2),
        )


@pytest.mark.slow
def test_many_clients_at_once_get_their_streams_and_leave_nothing(
    service: Service, simulator: SimulatorProcess, figures: Callable[..., None]
) -> None:
    """48 clients at once on every route, twice: two in three read to the end and must get
    every chunk exactly once with the fault-free text; one in three leaves mid-stream."""
    routes = list(ROUTES.values())
    sim = {"ttft_ms": 20, "itl_ms": 5, "tokens": 60}
    with httpx.Client(timeout=30.0) as http:
        references = {
            case.name: post_stream(http, service.url, case.path, {**case.body, "sim": sim})
            for case in routes
        }
    wait_settled(service, simulator)
    probe = service.probe()
    failures: list[str] = []
    lock = threading.Lock()
    gate = threading.Barrier(CLIENTS)

    def client(i: int) -> None:
        case = routes[i % len(routes)]
        body = {**case.body, "sim": sim}
        try:
            gate.wait(timeout=30)
            if i % 3 == 2:
                raw = RawClient(service.url)
                raw.send_post(case.path, body)
                raw.read_until(b'"type":"chunk"', count=3)
                raw.close(reset=i % 2 == 0)
                return
            with httpx.Client(timeout=30.0) as http:
                result = post_stream(http, service.url, case.path, body)
            reference = references[case.name].outcomes
            for name, outcome in result.outcomes.items():
                assert outcome.end == "done", (name, outcome)
                if case.deterministic:
                    assert outcome.text == reference[name].text, name
                else:
                    assert outcome.chunks == reference[name].chunks, name
        except Exception as exc:  # collected: a thread's assertion must fail the test
            with lock:
                failures.append(f"client {i} ({case.name}): {exc!r}")

    fill_pools(service)
    wait_settled(service, simulator)
    samples = []
    # Two rounds warm the allocator; the last must not grow anything.
    for _ in range(3):
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(client, range(CLIENTS)))
        assert not failures, failures
        wait_settled(service, simulator, timeout=15.0)
        samples.append(probe.sample())
    warm, after = samples[-2:]
    assert_no_growth(warm, after, rss_kb=20_000)
    figures("many_clients", clients=CLIENTS, rounds=3, warm=warm.as_dict(), after=after.as_dict())
