"""Per-section statistics and PerformanceTimer: counts, averages, percentiles, window, reset."""

from __future__ import annotations

import logging
import threading

import pytest

from backend_ai.app.performance_monitor import PerformanceTimer
from backend_ai.streaming import get_stream_performance_stats
from backend_ai.streaming.stats import (
    SectionRecord,
    StreamStats,
    default_stats,
    reset_stream_performance_stats,
)


def test_empty_stats():
    assert StreamStats().snapshot() == {}


def test_snapshot_fields():
    stats = StreamStats()
    stats.record("summary", SectionRecord(100.0, ttft_ms=10.0, chars=50))
    stats.record("summary", SectionRecord(300.0, ttft_ms=30.0, chars=150))
    stats.record("summary", SectionRecord(200.0, ttft_ms=None, chars=100, ok=False))
    assert stats.snapshot() == {
        "summary": {
            "count": 3,
            "errors": 1,
            "avg_time_ms": 200.0,
            "p50_time_ms": 200.0,
            "p95_time_ms": 300.0,
            "avg_ttft_ms": 20.0,
            "avg_chars": 100.0,
        }
    }


def test_sections_are_kept_apart():
    stats = StreamStats()
    stats.record("a", SectionRecord(10.0))
    stats.record("b", SectionRecord(20.0))
    snapshot = stats.snapshot()
    assert snapshot["a"]["avg_time_ms"] == 10.0
    assert snapshot["b"]["avg_time_ms"] == 20.0


def test_ttft_is_none_when_no_record_had_one():
    stats = StreamStats()
    stats.record("a", SectionRecord(10.0))
    assert stats.snapshot()["a"]["avg_ttft_ms"] is None


@pytest.mark.parametrize(
    ("values", "p50", "p95"),
    [
        (range(1, 101), 50, 95),
        (range(1, 11), 5, 10),
        (range(1, 21), 10, 19),
        (range(1, 5), 2, 4),
        ([7], 7, 7),
        ([1, 2], 1, 2),
    ],
)
def test_percentiles_are_nearest_rank(values, p50, p95):
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    stats = StreamStats()
    for value in reversed(list(values)):
        stats.record("s", SectionRecord(float(value)))
    snapshot = stats.snapshot()["s"]
    assert (snapshot["p50_time_ms"], snapshot["p95_time_ms"]) == (p50, p95)


def test_window_bounds_memory_but_count_and_errors_are_totals():
    stats = StreamStats(window=5)
    for value in range(1, 11):
        stats.record("s", SectionRecord(float(value), ok=value % 2 == 0))
    snapshot = stats.snapshot()["s"]
    assert snapshot["count"] == 10
    assert snapshot["errors"] == 5
    # Only the last five (6..10) are in the averages.
    assert snapshot["avg_time_ms"] == 8.0
    assert snapshot["p50_time_ms"] == 8.0
    assert len(stats._series["s"].records) == 5


def test_window_must_be_positive():
    with pytest.raises(ValueError, match="window"):
        StreamStats(window=0)


def test_reset():
    stats = StreamStats()
    stats.record("s", SectionRecord(1.0))
    stats.reset()
    assert stats.snapshot() == {}
    stats.record("s", SectionRecord(2.0))
    assert stats.snapshot()["s"]["count"] == 1


def test_concurrent_records_are_all_counted():
    stats = StreamStats(window=64)
    barrier = threading.Barrier(8)

    def record(index: int) -> None:
        barrier.wait()
        for i in range(2000):
            stats.record(f"s{index % 2}", SectionRecord(float(i), ok=i % 10 != 0))
            if i % 100 == 0:
                stats.snapshot()

    threads = [threading.Thread(target=record, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snapshot = stats.snapshot()
    assert snapshot["s0"]["count"] == snapshot["s1"]["count"] == 8000
    assert snapshot["s0"]["errors"] == snapshot["s1"]["errors"] == 800


def test_module_functions_use_the_process_wide_stats():
    reset_stream_performance_stats()
    default_stats.record("module-level", SectionRecord(5.0))
    assert get_stream_performance_stats()["module-level"]["count"] == 1
    reset_stream_performance_stats()
    assert get_stream_performance_stats() == {}


# -- PerformanceTimer --------------------------------------------------------------------------


def test_timer_records_and_logs(caplog):
    stats = StreamStats()
    caplog.set_level(logging.INFO, logger="backend_ai.app.performance_monitor")
    with PerformanceTimer("openai_parallel_stream", stats=stats) as timer:
        sum(range(10_000))
    assert timer.elapsed_ms is not None
    assert timer.elapsed_ms > 0
    snapshot = stats.snapshot()["openai_parallel_stream"]
    assert snapshot["count"] == 1
    assert snapshot["errors"] == 0
    assert snapshot["avg_time_ms"] == round(timer.elapsed_ms, 3)
    (record,) = [r for r in caplog.records if r.name == "backend_ai.app.performance_monitor"]
    assert record.levelno == logging.INFO
    assert record.getMessage().startswith("openai_parallel_stream took ")
    assert "failed" not in record.getMessage()


def test_timer_counts_an_exception_as_an_error_and_lets_it_through(caplog):
    stats = StreamStats()
    caplog.set_level(logging.INFO, logger="backend_ai.app.performance_monitor")
    with pytest.raises(KeyError), PerformanceTimer("lookup", stats=stats):
        raise KeyError("missing")
    assert stats.snapshot()["lookup"]["errors"] == 1
    assert stats.snapshot()["lookup"]["count"] == 1
    assert "(failed)" in caplog.records[-1].getMessage()


def test_timer_counts_a_closed_generator_as_an_error():
    stats = StreamStats()

    def frames():
        with PerformanceTimer("stream", stats=stats):
            yield "a"
            yield "b"

    generator = frames()
    next(generator)
    generator.close()
    snapshot = stats.snapshot()["stream"]
    assert (snapshot["count"], snapshot["errors"]) == (1, 1)


def test_timer_records_into_the_process_wide_stats_by_default():
    reset_stream_performance_stats()
    with PerformanceTimer("default-sink"):
        pass
    assert get_stream_performance_stats()["default-sink"]["count"] == 1
    reset_stream_performance_stats()


def test_timer_needs_a_name():
    with pytest.raises(ValueError, match="name"):
        PerformanceTimer("")


def test_timer_is_reusable():
    stats = StreamStats()
    timer = PerformanceTimer("again", stats=stats)
    for _ in range(3):
        with timer:
            pass
    assert stats.snapshot()["again"]["count"] == 3
