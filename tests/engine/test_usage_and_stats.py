"""Performance statistics fed by real runs, and PerformanceTimer around a run."""

from __future__ import annotations

import logging
import statistics
import threading

import pytest

from backend_ai.app.performance_monitor import PerformanceTimer
from backend_ai.streaming import ParallelStreamManager, get_stream_performance_stats
from backend_ai.streaming.events import SectionDone, SectionError
from backend_ai.streaming.stats import StreamStats, reset_stream_performance_stats

from .helpers import collect, ends, plain, section, texts


@pytest.fixture
def process_stats():
    reset_stream_performance_stats()
    yield get_stream_performance_stats
    reset_stream_performance_stats()


def test_stats_after_runs(client, executor, process_stats):
    manager = ParallelStreamManager(client, executor=executor)  # records process-wide
    dones: list[SectionDone] = []
    chars = []
    for _ in range(3):
        events = plain(collect(manager.stream([section("summary"), section("bad", status=500)])))
        done = ends(events)["summary"]
        assert isinstance(done, SectionDone)
        assert isinstance(ends(events)["bad"], SectionError)
        dones.append(done)
        chars.append(len(texts(events)["summary"]))

    stats = process_stats()
    summary = stats["summary"]
    durations = sorted(d.duration_ms for d in dones)
    assert summary["count"] == 3
    assert summary["errors"] == 0
    assert summary["avg_time_ms"] == pytest.approx(statistics.mean(durations), abs=0.01)
    assert summary["p50_time_ms"] == pytest.approx(durations[1], abs=0.001)
    assert summary["p95_time_ms"] == pytest.approx(durations[2], abs=0.001)
    ttfts = [d.ttft_ms for d in dones if d.ttft_ms is not None]
    assert summary["avg_ttft_ms"] == pytest.approx(statistics.mean(ttfts), abs=0.01)
    assert summary["avg_chars"] == pytest.approx(statistics.mean(chars), abs=0.1)

    bad = stats["bad"]
    assert (bad["count"], bad["errors"]) == (3, 3)
    assert bad["avg_ttft_ms"] is None

    reset_stream_performance_stats()
    assert get_stream_performance_stats() == {}


def test_a_managers_own_stats_are_kept_apart(manager, stats, process_stats):
    plain(collect(manager.stream([section("own")])))
    assert stats.snapshot()["own"]["count"] == 1
    assert "own" not in process_stats()


def test_stats_window_is_bounded(client, executor):
    stats = StreamStats(window=4)
    manager = ParallelStreamManager(client, executor=executor, stats=stats)
    durations = []
    for _ in range(6):
        events = plain(collect(manager.stream([section("s", tokens=3)])))
        durations.append(ends(events)["s"].duration_ms)
    snapshot = stats.snapshot()["s"]
    assert snapshot["count"] == 6
    assert snapshot["avg_time_ms"] == pytest.approx(statistics.mean(durations[-4:]), abs=0.01)


def test_concurrent_runs_record_every_section(client, executor, stats):
    manager = ParallelStreamManager(client, executor=executor, stats=stats)
    errors: list[BaseException] = []

    def runs() -> None:
        try:
            for _ in range(2):
                plain(collect(manager.stream([section("shared"), section("other", status=503)])))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=runs) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    snapshot = stats.snapshot()
    assert (snapshot["shared"]["count"], snapshot["shared"]["errors"]) == (16, 0)
    assert (snapshot["other"]["count"], snapshot["other"]["errors"]) == (16, 16)


def test_performance_timer_around_a_run(manager, stats, caplog):
    caplog.set_level(logging.INFO, logger="backend_ai.app.performance_monitor")
    with PerformanceTimer("openai_parallel_stream", stats=stats) as timer:
        text = "".join(manager.stream_sse([section("a"), section("b")]))
    assert text.rstrip("\n").split("\n\n")[-1].startswith('data: {"type":"done"')
    snapshot = stats.snapshot()
    assert snapshot["openai_parallel_stream"]["count"] == 1
    assert snapshot["openai_parallel_stream"]["errors"] == 0
    # The whole run takes at least as long as its longest section.
    longest = max(snapshot[name]["avg_time_ms"] for name in ("a", "b"))
    assert timer.elapsed_ms is not None
    assert timer.elapsed_ms >= longest
    assert any(r.getMessage().startswith("openai_parallel_stream took ") for r in caplog.records)


def test_performance_timer_counts_a_client_that_left_as_an_error(manager, stats):
    def route():
        with PerformanceTimer("route", stats=stats):
            yield from manager.stream_sse([section("a", itl_ms=20, tokens=50)])

    frames = route()
    for frame in frames:
        if '"type":"chunk"' in frame:
            break
    frames.close()
    assert stats.snapshot()["route"]["errors"] == 1
