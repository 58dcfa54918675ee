"""The pooled HTTP/2 client: one connection for a run's streams, TLS+ALPN, resets on early
close (hundreds in a row), safe under many threads, and an explicit lifecycle."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter

import httpx2
import openai
import pytest

from backend_ai.errors import ConfigError, LifecycleError
from backend_ai.streaming import (
    ParallelStreamManager,
    PoolSettings,
    RunOptions,
    build_http_client,
    get_http_client,
)
from backend_ai.streaming.cancel import CancelScope
from backend_ai.streaming.events import ContentChunk
from backend_ai.streaming.executor import SectionExecutor
from backend_ai.streaming.http_pool import HttpClientPool, close_http_client
from backend_ai.streaming.stats import StreamStats
from backend_ai.streaming.transport import UpstreamTransport
from backend_ai.streaming.upstream import iter_sse_data

from .conftest import H1, H2
from .helpers import assert_well_formed, collect, plain, section

MESSAGES = [{"role": "user", "content": "Three cards for the coming week."}]


def _run(manager, names, **sim):
    events = plain(collect(manager.stream([section(name, **sim) for name in names])))
    done = assert_well_formed(events, names)
    errors = [e for e in events if e.type == "error"]
    assert set(done.completed) == set(names), errors
    return events


# -- one connection, HTTP versions -------------------------------------------------------------


def test_parallel_streams_share_one_tcp_connection(manager, simulator):
    names = [f"s{i}" for i in range(9)]
    _run(manager, names, ttft_ms=100, itl_ms=5, tokens=10)
    stats = simulator.stats(records=False)
    assert stats["connections_accepted"] == 1
    (connection,) = stats["connections"]
    assert connection["http_version"] == "2"
    assert connection["requests"] == 9
    assert connection["max_active"] == 9


def test_tls_negotiates_h2_by_alpn_on_one_connection(make_client, make_manager, simulator_tls):
    client = make_client(PoolSettings(), sim=simulator_tls, verify=simulator_tls.ssl_context())
    assert client.base_url.scheme == "https"
    _run(make_manager(client), ["a", "b", "c"], ttft_ms=60)
    stats = simulator_tls.stats(records=False)
    assert stats["connections_accepted"] == 1
    assert stats["connections"][0]["http_version"] == "2"
    assert stats["connections"][0]["max_active"] == 3


def test_tls_with_http2_off_speaks_http11(make_client, make_manager, simulator_tls):
    client = make_client(
        PoolSettings(http2=False), sim=simulator_tls, verify=simulator_tls.ssl_context()
    )
    _run(make_manager(client), ["a", "b", "c"], ttft_ms=60)
    stats = simulator_tls.stats(records=False)
    assert {c["http_version"] for c in stats["connections"]} == {"1.1"}
    assert stats["connections_accepted"] == 3


def test_cleartext_without_prior_knowledge_uses_http11(make_client, make_manager, simulator):
    _run(make_manager(make_client(PoolSettings())), ["a", "b"], ttft_ms=60)
    stats = simulator.stats(records=False)
    assert {c["http_version"] for c in stats["connections"]} == {"1.1"}


def test_keep_alive_reuses_the_connection_across_runs(make_client, make_manager, simulator):
    manager = make_manager(make_client(H1))
    for _ in range(5):
        _run(manager, ["only"])
    assert simulator.stats(records=False)["connections_accepted"] == 1


# -- early closes ------------------------------------------------------------------------------


def _open_and_close_early(client: openai.OpenAI, tag: str) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        extra_body={"sim": {"tag": tag, "ttft_ms": 0, "itl_ms": 5, "tokens": 200}},
    ) as raw:
        for _ in raw.http_response.iter_bytes():
            break  # the first bytes are in: leave before the end


def test_hundreds_of_early_closes_leave_the_pool_healthy(client, manager, simulator):
    """Without a reset per early close, h2 runs out of streams after 100 of them."""
    closes = 300
    for i in range(closes):
        _open_and_close_early(client, f"early-{i}")
    stats = simulator.wait_for_stats(
        lambda s: len(s["disconnects"]) == closes and s["streams_active"] == 0, timeout=10
    )
    # Every early close reached the upstream as a reset of that one stream ...
    assert stats["streams_started"] == closes
    assert stats["streams_completed"] == 0
    # ... over the same connection, which still works for a full run.
    assert stats["connections_accepted"] == 1
    _run(manager, ["after-1", "after-2", "after-3"])
    assert simulator.stats(records=False)["connections_accepted"] == 1


def test_early_close_resets_only_its_own_stream(client, manager, simulator):
    events = manager.stream([section("keeps-going", ttft_ms=20, itl_ms=10, tokens=30)])
    received = [next(events), next(events)]  # start, section_start
    for i in range(20):
        _open_and_close_early(client, f"early-{i}")
    received.extend(events)
    assert_well_formed(received, ["keeps-going"])
    assert sum(isinstance(e, ContentChunk) for e in received) == 30
    stats = simulator.wait_for_stats(lambda s: len(s["disconnects"]) == 20)
    assert stats["streams_completed"] == 1
    assert stats["connections_accepted"] == 1


def test_h2_chunk_read_by_another_thread_reaches_its_stream_at_once(make_manager, simulator):
    """Six streams on one connection each send one chunk and go quiet. Every chunk is in the
    client by then; each must reach the consumer without waiting for more traffic."""
    stall_s = 1.0
    manager = make_manager(options=RunOptions(stall_timeout_s=None))
    names = [f"s{i}" for i in range(6)]
    for trial in range(5):
        configs = [
            section(name, ttft_ms=20, tokens=50, stall_after=1, stall_s=stall_s) for name in names
        ]
        events = manager.stream(configs)
        started = time.monotonic()
        firsts: set[str] = set()
        for event in events:
            if isinstance(event, ContentChunk):
                firsts.add(event.section)
                if len(firsts) == len(names):
                    break
        waited = time.monotonic() - started
        events.close()
        assert waited < 0.5 * stall_s, (
            f"trial {trial}: first chunks took {waited:.2f}s; upstream stalled {stall_s}s"
        )


# -- many threads at once ----------------------------------------------------------------------

ALLOWED_CANCEL_ERRORS = (openai.APIConnectionError, httpx2.TransportError)


@pytest.mark.parametrize("settings", [H2, H1], ids=["h2", "http1.1"])
def test_shared_client_under_many_threads(settings, make_client, simulator, caplog):
    """Open, read and cancel from many threads at once on one pooled client: no protocol
    error, no stuck stream, and the upstream's books balance."""
    caplog.set_level(logging.WARNING)
    client = make_client(settings)
    executor = SectionExecutor(48)
    manager = ParallelStreamManager(client, executor=executor, stats=StreamStats())
    threads, iterations = 12, 16
    actions: Counter[str] = Counter()
    failures: list[str] = []
    lock = threading.Lock()
    fast = {"ttft_ms": 5, "itl_ms": 1, "tokens": 20}
    long = {"ttft_ms": 5, "itl_ms": 3, "tokens": 300}

    def raw_stream(tag: str, sim: dict):
        return client.chat.completions.with_streaming_response.create(
            model="gpt-4o",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            extra_body={"sim": {"tag": tag, **sim}},
        )

    def one(rnd: random.Random, tag: str) -> str:
        action = rnd.choice(["run-full", "run-close", "raw-full", "raw-close", "raw-cancel"])
        if action == "run-full":
            _run(manager, [f"{tag}-a", f"{tag}-b"], **fast)
        elif action == "run-close":
            events = manager.stream([section(f"{tag}-a", **long), section(f"{tag}-b", **long)])
            wanted = rnd.randint(1, 6)
            seen = 0
            for event in events:
                seen += isinstance(event, ContentChunk)
                if seen >= wanted:
                    break
            events.close()
        elif action == "raw-full":
            with raw_stream(tag, fast) as raw:
                payloads = list(iter_sse_data(raw.http_response.iter_bytes()))
            assert payloads[-1] == b"[DONE]"
            contents = [p for p in payloads if b'"content":"' in p and b'"content":""' not in p]
            assert len(contents) == 20
        elif action == "raw-close":
            with raw_stream(tag, long) as raw:
                for _ in raw.http_response.iter_bytes():
                    break
        else:
            scope = CancelScope()
            timer = threading.Timer(rnd.uniform(0.0, 0.03), scope.cancel)
            timer.start()
            try:
                with scope, raw_stream(tag, long) as raw:
                    for _ in raw.http_response.iter_bytes():
                        pass
                raise AssertionError("a cancelled stream read to its end")
            except ALLOWED_CANCEL_ERRORS:
                pass
            finally:
                timer.cancel()
        return action

    def work(index: int) -> None:
        rnd = random.Random(index)
        for i in range(iterations):
            try:
                action = one(rnd, f"t{index}-{i}")
            except BaseException as exc:
                with lock:
                    failures.append(f"t{index}-{i}: {type(exc).__name__}: {exc}")
                continue
            with lock:
                actions[action] += 1

    workers = [threading.Thread(target=work, args=(i,), name=f"stress-{i}") for i in range(threads)]
    try:
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(90)
        assert not any(thread.is_alive() for thread in workers), "a stress thread hung"
        assert failures == []
        assert sum(actions.values()) == threads * iterations
        assert len(actions) == 5, actions

        # Every stream the upstream started ended, one way or another, and is accounted for.
        stats = simulator.wait_for_stats(lambda s: s["streams_active"] == 0, timeout=10)
        stream_disconnects = sum(1 for d in stats["disconnects"] if d["stream"])
        assert stats["streams_started"] == (
            stats["streams_completed"] + stats["streams_faulted"] + stream_disconnects
        )
        assert stats["streams_faulted"] == 0
        assert set(stats["status_counts"]) <= {"200"}
        assert stats["streams_completed"] >= 2 * actions["run-full"] + actions["raw-full"]
        if settings is H2:
            # All over one connection: no stream slot leaked, no protocol error closed it.
            assert stats["connections_accepted"] == 1
        _run(manager, ["after"])
    finally:
        manager.close()
        executor.shutdown()
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert problems == [], [r.getMessage() for r in problems]


# -- lifecycle ---------------------------------------------------------------------------------


def test_process_wide_client_lifecycle():
    close_http_client()
    first = get_http_client()
    assert get_http_client() is first
    close_http_client()
    assert first.is_closed
    second = get_http_client()
    assert second is not first
    assert not second.is_closed
    close_http_client()
    close_http_client()  # safe twice
    assert second.is_closed


def test_process_wide_client_defaults(monkeypatch):
    for name in (
        "MAX_KEEPALIVE",
        "MAX_CONNECTIONS",
        "KEEPALIVE_EXPIRY",
        "TIMEOUT",
        "CONNECT_TIMEOUT",
        "HTTP2",
        "HTTP2_PRIOR_KNOWLEDGE",
    ):
        monkeypatch.delenv(f"BACKEND_AI_HTTP_{name}", raising=False)
    close_http_client()
    try:
        client = get_http_client()
        transport = client._transport  # httpx2 keeps no public handle on it
        assert isinstance(transport, UpstreamTransport)
        assert (transport.pool.max_keepalive_connections, transport.pool.max_connections) == (
            10,
            20,
        )
        assert transport.http2 is True
        assert client.timeout == httpx2.Timeout(60, connect=15)
    finally:
        close_http_client()


def test_process_wide_client_reads_the_environment(monkeypatch):
    monkeypatch.setenv("BACKEND_AI_HTTP_MAX_KEEPALIVE", "3")
    monkeypatch.setenv("BACKEND_AI_HTTP_MAX_CONNECTIONS", "7")
    monkeypatch.setenv("BACKEND_AI_HTTP_TIMEOUT", "12.5")
    monkeypatch.setenv("BACKEND_AI_HTTP_CONNECT_TIMEOUT", "2")
    close_http_client()
    try:
        client = get_http_client()
        transport = client._transport  # httpx2 keeps no public handle on it
        assert isinstance(transport, UpstreamTransport)
        assert (transport.pool.max_keepalive_connections, transport.pool.max_connections) == (3, 7)
        assert client.timeout == httpx2.Timeout(12.5, connect=2)
    finally:
        close_http_client()


def test_pool_get_after_close_is_a_lifecycle_error():
    pool = HttpClientPool(PoolSettings(max_connections=2, max_keepalive_connections=1))
    client = pool.get()
    assert pool.get() is client
    pool.close()
    assert client.is_closed
    with pytest.raises(LifecycleError, match="closed"):
        pool.get()
    pool.close()  # safe twice


def test_pool_closed_before_first_use():
    pool = HttpClientPool()
    pool.close()
    with pytest.raises(LifecycleError):
        pool.get()


def test_pool_is_shared_safely_across_threads():
    pool = HttpClientPool(PoolSettings())
    try:
        barrier = threading.Barrier(8)
        got: list[httpx2.Client] = []

        def get() -> None:
            barrier.wait()
            got.append(pool.get())

        threads = [threading.Thread(target=get) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(got) == 8
        assert len({id(c) for c in got}) == 1
    finally:
        pool.close()


# -- settings ----------------------------------------------------------------------------------


def test_settings_defaults():
    assert PoolSettings() == PoolSettings.from_env({})
    settings = PoolSettings()
    assert (settings.max_keepalive_connections, settings.max_connections) == (10, 20)
    assert (settings.timeout_s, settings.connect_timeout_s) == (60.0, 15.0)
    assert settings.http2 is True
    assert settings.http2_prior_knowledge is False


def test_settings_from_env():
    settings = PoolSettings.from_env(
        {
            "BACKEND_AI_HTTP_MAX_KEEPALIVE": "4",
            "BACKEND_AI_HTTP_MAX_CONNECTIONS": "8",
            "BACKEND_AI_HTTP_KEEPALIVE_EXPIRY": "5",
            "BACKEND_AI_HTTP_TIMEOUT": "30",
            "BACKEND_AI_HTTP_CONNECT_TIMEOUT": "1.5",
            "BACKEND_AI_HTTP_HTTP2": "yes",
            "BACKEND_AI_HTTP_HTTP2_PRIOR_KNOWLEDGE": "1",
        }
    )
    assert settings == PoolSettings(
        max_keepalive_connections=4,
        max_connections=8,
        keepalive_expiry_s=5.0,
        timeout_s=30.0,
        connect_timeout_s=1.5,
        http2=True,
        http2_prior_knowledge=True,
    )


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"BACKEND_AI_HTTP_TIMEOUT": "soon"}, "BACKEND_AI_HTTP_TIMEOUT must be a"),
        ({"BACKEND_AI_HTTP_MAX_CONNECTIONS": "x"}, "BACKEND_AI_HTTP_MAX_CONNECTIONS"),
        ({"BACKEND_AI_HTTP_HTTP2": "maybe"}, "BACKEND_AI_HTTP_HTTP2 must be a boolean"),
        ({"BACKEND_AI_HTTP_TIMEOUT": "0"}, "timeout_s must be a positive number"),
        ({"BACKEND_AI_HTTP_CONNECT_TIMEOUT": "-1"}, "connect_timeout_s must be a positive"),
        ({"BACKEND_AI_HTTP_MAX_CONNECTIONS": "0"}, "max_connections must be a positive integer"),
        (
            {"BACKEND_AI_HTTP_MAX_KEEPALIVE": "30"},
            "max_keepalive_connections (30) cannot exceed max_connections (20)",
        ),
        (
            {"BACKEND_AI_HTTP_HTTP2": "0", "BACKEND_AI_HTTP_HTTP2_PRIOR_KNOWLEDGE": "1"},
            "http2_prior_knowledge needs http2 enabled",
        ),
    ],
)
def test_settings_from_env_rejects(environ, message):
    with pytest.raises(ConfigError) as info:
        PoolSettings.from_env(environ)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("MAX_CONNECTIONS", "inf"),
        ("MAX_CONNECTIONS", "nan"),
        ("MAX_CONNECTIONS", "2.7"),
        ("MAX_KEEPALIVE", "0.5"),
        ("TIMEOUT", "nan"),
        ("CONNECT_TIMEOUT", "nan"),
        ("KEEPALIVE_EXPIRY", "nan"),
    ],
)
def test_from_env_rejects_values_that_are_not_what_they_say(name, raw):
    """Counts must be integers, times finite; each error names the variable."""
    with pytest.raises(ConfigError) as info:
        PoolSettings.from_env({f"BACKEND_AI_HTTP_{name}": raw})
    assert f"BACKEND_AI_HTTP_{name}" in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_connections": 0},
        {"max_keepalive_connections": True},
        {"timeout_s": 0},
        {"connect_timeout_s": -1},
        {"keepalive_expiry_s": "5"},
        {"max_keepalive_connections": 21},
        {"http2": False, "http2_prior_knowledge": True},
    ],
)
def test_settings_validation(kwargs):
    with pytest.raises(ConfigError):
        PoolSettings(**kwargs)


def test_build_http_client_is_closeable_and_independent():
    first = build_http_client(H2)
    second = build_http_client(H2)
    try:
        assert first is not second
        assert isinstance(first._transport, UpstreamTransport)
        assert isinstance(second._transport, UpstreamTransport)
        assert first._transport.pool is not second._transport.pool
    finally:
        first.close()
        second.close()
    assert first.is_closed
    assert second.is_closed


def test_late_cancel_cannot_break_a_request_that_reused_the_connection(make_client, simulator):
    """HTTP/1.1: a scope's request ended (error status, connection back in the pool) and
    another request took the connection. Cancelling the old scope now must not shut down the
    socket under the new request. In the engine the window is a section that got an
    error status while the consumer cancels it (close, deadline, stall)."""
    client = make_client(PoolSettings(http2=False, max_connections=1, max_keepalive_connections=1))
    scope = CancelScope()
    outcome: dict[str, object] = {}
    with scope:
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(
                model="gpt-4o",
                messages=MESSAGES,  # type: ignore[arg-type]
                extra_body={"sim": {"status": 500}},
            )

        def other_request() -> None:
            try:
                stream = client.chat.completions.create(
                    model="gpt-4o",
                    messages=MESSAGES,  # type: ignore[arg-type]
                    stream=True,
                    extra_body={"sim": {"tag": "innocent", "itl_ms": 20, "tokens": 20}},
                )
                outcome["chunks"] = sum(
                    1 for chunk in stream if chunk.choices and chunk.choices[0].delta.content
                )
            except Exception as exc:
                outcome["error"] = repr(exc)

        other = threading.Thread(target=other_request)
        other.start()
        simulator.wait_for_stats(lambda s: s["streams_active"] == 1)
        scope.cancel()  # late: the request it covered is long over
        other.join(10)
    assert outcome == {"chunks": 20}
    assert simulator.stats(records=False)["connections_accepted"] == 1


def test_http11_disconnect_storm_never_breaks_other_runs(make_client, stats, simulator):
    """HTTP/1.1 with more sections than pooled connections (8 request threads × 2 sections on
    4 connections): clients that go away must never fail another client's sections."""
    client = make_client(PoolSettings(http2=False, max_connections=4, max_keepalive_connections=4))
    executor = SectionExecutor(16)
    manager = ParallelStreamManager(client, executor=executor, stats=stats)
    fast = {"ttft_ms": 5, "itl_ms": 1, "tokens": 20}
    long = {"ttft_ms": 5, "itl_ms": 3, "tokens": 300}
    broken: list[str] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        rnd = random.Random(index)
        for i in range(15):
            tag = f"t{index}-{i}"
            if rnd.random() < 0.5:
                events = plain(
                    collect(manager.stream([section(f"{tag}-{n}", **fast) for n in "ab"]))
                )
                failed = [e for e in events if e.type == "error"]
                if failed:
                    with lock:
                        broken.extend(f"{e.section}: {e.code.value} {e.message}" for e in failed)
            else:
                events = manager.stream([section(f"{tag}-{n}", **long) for n in "ab"])
                wanted, seen = rnd.randint(1, 4), 0
                for event in events:
                    seen += isinstance(event, ContentChunk)
                    if seen >= wanted:
                        break
                events.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        assert not any(thread.is_alive() for thread in threads)
    finally:
        manager.close()
        executor.shutdown()
    assert broken == []
