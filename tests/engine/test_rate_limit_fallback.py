"""HTTP 429: fall back to sequential, honour Retry-After (capped), retry a bounded number of times.

Waits are checked as ratios of the simulator's own timestamps (the 429's end to the retry's
start) against the header value, in one run.
"""

from __future__ import annotations

import time
import uuid

import pytest

from backend_ai.streaming import RunOptions
from backend_ai.streaming.events import ErrorCode, RateLimitFallback, SectionDone, SectionError

from .helpers import (
    assert_well_formed,
    collect,
    ends,
    expected_text,
    plain,
    records_by_tag,
    section,
    texts,
)


def _key() -> str:
    return uuid.uuid4().hex


def _retry_gap_s(records: list[dict]) -> float:
    """Seconds between the end of the first (refused) attempt and the start of the next."""
    first, second = sorted(records, key=lambda r: r["t_start"])[:2]
    assert first["status"] == 429
    return second["t_start"] - first["t_end"]


def test_one_section_429_falls_back_and_then_completes(manager, client, simulator):
    configs = [
        section("a", ttft_ms=30),
        section("b", fail_first=1, retry_after_ms=50, attempt_key=_key()),
        section("c", ttft_ms=30),
    ]
    events = plain(collect(manager.stream(configs)))
    done = assert_well_formed(events, ["a", "b", "c"])
    assert set(done.completed) == {"a", "b", "c"}

    fallbacks = [e for e in events if isinstance(e, RateLimitFallback)]
    assert len(fallbacks) == 1
    assert "b" in fallbacks[0].sections
    assert fallbacks[0].wait_ms == 50
    # The fallback is announced before the section it concerns ends.
    assert events.index(fallbacks[0]) < events.index(ends(events)["b"])
    assert texts(events)["b"] == expected_text(client, configs[1])

    by_tag = records_by_tag(simulator.stats())
    assert [r["status"] for r in sorted(by_tag["b"], key=lambda r: r["t_start"])] == [429, 200]
    assert len(by_tag["a"]) == len(by_tag["c"]) == 1


def test_concurrency_budget_of_one_gets_every_section_through(manager, client, simulator):
    simulator.configure(budget={"max_concurrent_per_key": 1})
    configs = [section(name, ttft_ms=20, itl_ms=2, tokens=20) for name in ("a", "b", "c")]
    events = plain(collect(manager.stream(configs)))

    done = assert_well_formed(events, ["a", "b", "c"])
    assert set(done.completed) == {"a", "b", "c"}
    assert any(isinstance(e, RateLimitFallback) for e in events)
    for config in configs:
        assert texts(events)[config.section_name] == expected_text(client, config)
    stats = simulator.stats()
    assert stats["status_counts"].get("429", 0) >= 1
    # The fallback really is sequential: never two streams at once.
    assert stats["streams_active_max"] == 1
    assert stats["streams_completed"] == 3


def test_sections_not_yet_started_join_the_fallback(make_manager, simulator):
    manager = make_manager(options=RunOptions(max_parallel=1))
    configs = [
        section("first", fail_first=1, retry_after_ms=20, attempt_key=_key()),
        section("second"),
        section("third"),
    ]
    events = plain(collect(manager.stream(configs)))
    done = assert_well_formed(events, ["first", "second", "third"])
    assert set(done.completed) == {"first", "second", "third"}
    (fallback,) = [e for e in events if isinstance(e, RateLimitFallback)]
    assert fallback.sections == ("first", "second", "third")
    assert simulator.stats()["streams_active_max"] == 1


@pytest.mark.parametrize("retries", [0, 1, 2])
def test_rate_limited_when_429s_outlast_the_retries(retries, make_manager, simulator):
    manager = make_manager(options=RunOptions(max_rate_limit_retries=retries))
    configs = [
        section("limited", fail_first=retries + 1, retry_after_ms=10, attempt_key=_key()),
        section("fine"),
    ]
    events = plain(collect(manager.stream(configs)))
    done = assert_well_formed(events, ["limited", "fine"])
    error = ends(events)["limited"]
    assert isinstance(error, SectionError)
    assert error.code is ErrorCode.RATE_LIMITED
    assert done.completed == ("fine",)
    assert done.failed == ("limited",)
    # Exactly one first attempt plus `retries` retries reached the upstream.
    assert len(records_by_tag(simulator.stats())["limited"]) == retries + 1


@pytest.mark.parametrize("retries", [1, 2])
def test_completes_when_429s_end_within_the_retries(retries, make_manager, simulator):
    manager = make_manager(options=RunOptions(max_rate_limit_retries=retries))
    config = section("limited", fail_first=retries, retry_after_ms=10, attempt_key=_key())
    events = plain(collect(manager.stream([config])))
    assert isinstance(ends(events)["limited"], SectionDone)
    assert sum(isinstance(e, RateLimitFallback) for e in events) == retries
    assert len(records_by_tag(simulator.stats())["limited"]) == retries + 1


@pytest.mark.parametrize(
    ("sim", "expected_s"),
    [({"retry_after_ms": 300}, 0.3), ({"retry_after": 0.3}, 0.3), ({"retry_after_ms": 120}, 0.12)],
    ids=["retry-after-ms", "retry-after-seconds", "short"],
)
def test_wait_honours_retry_after(sim, expected_s, manager, simulator):
    config = section("a", fail_first=1, tokens=1, attempt_key=_key(), **sim)
    events = plain(collect(manager.stream([config])))
    (fallback,) = [e for e in events if isinstance(e, RateLimitFallback)]
    assert fallback.wait_ms == pytest.approx(expected_s * 1000)
    gap = _retry_gap_s(records_by_tag(simulator.stats())["a"])
    assert 0.95 < gap / expected_s < 1.35, f"waited {gap:.3f}s for a {expected_s}s Retry-After"


def test_retry_after_ms_wins_over_retry_after(manager, simulator):
    config = section("a", fail_first=1, tokens=1, retry_after=30, retry_after_ms=100)
    events = plain(collect(manager.stream([config])))
    (fallback,) = [e for e in events if isinstance(e, RateLimitFallback)]
    assert fallback.wait_ms == 100
    assert isinstance(ends(events)["a"], SectionDone)


def test_wait_is_capped_by_max_retry_wait(make_manager, simulator):
    manager = make_manager(options=RunOptions(max_retry_wait_s=0.2))
    config = section("a", fail_first=1, tokens=1, retry_after_ms=5000, attempt_key=_key())
    events = plain(collect(manager.stream([config])))
    (fallback,) = [e for e in events if isinstance(e, RateLimitFallback)]
    assert fallback.wait_ms == 200
    gap = _retry_gap_s(records_by_tag(simulator.stats())["a"])
    assert 0.95 < gap / 0.2 < 2.0, f"waited {gap:.3f}s with a 0.2s cap on a 5s Retry-After"
    assert isinstance(ends(events)["a"], SectionDone)


def test_waiting_for_retry_after_does_not_spin(manager):
    """The consumer sleeps through the wait: its thread's CPU is a small fraction of the wall."""
    config = section("a", fail_first=1, tokens=1, retry_after_ms=400, attempt_key=_key())
    wall_0, cpu_0 = time.monotonic(), time.thread_time()
    events = plain(collect(manager.stream([config])))
    wall, cpu = time.monotonic() - wall_0, time.thread_time() - cpu_0
    assert isinstance(ends(events)["a"], SectionDone)
    assert cpu / wall < 0.1, f"consumer used {cpu:.3f}s CPU in {wall:.3f}s"


def test_sdk_retries_are_off_so_the_upstream_sees_only_engine_attempts(
    make_client, make_manager, simulator
):
    # A client configured with SDK retries: the engine must not let the SDK retry as well.
    client = make_client(max_retries=3)
    manager = make_manager(client)
    configs = [
        section("server-error", status=503, retry_after_ms=1),
        section("limited-once", fail_first=1, retry_after_ms=10, attempt_key=_key()),
    ]
    events = plain(collect(manager.stream(configs)))
    errors = ends(events)
    assert errors["server-error"].code is ErrorCode.UPSTREAM_ERROR
    assert isinstance(errors["limited-once"], SectionDone)
    # The engine saw the 429 itself (the SDK did not absorb it) ...
    assert any(isinstance(e, RateLimitFallback) for e in events)
    by_tag = records_by_tag(simulator.stats())
    # ... and the upstream saw one attempt for the 503 and exactly two for the 429.
    assert len(by_tag["server-error"]) == 1
    assert len(by_tag["limited-once"]) == 2
