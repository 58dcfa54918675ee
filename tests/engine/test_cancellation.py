"""Closing a run (what a WSGI server does when the client goes) closes every upstream stream.

The simulator records when it saw each client go; those times are compared with the time of
``close()`` on the same machine's clock (the bound is 100 ms: a client that leaves must stop
the upstream spend at once). Right after ``close()`` returns, no thread may still be inside a
section worker.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Generator

import pytest

from backend_ai.errors import LifecycleError
from backend_ai.streaming import ParallelStreamManager, RunOptions
from backend_ai.streaming.events import (
    ContentChunk,
    ErrorCode,
    Event,
    Heartbeat,
    RunDone,
    SectionError,
    SectionStarted,
)
from backend_ai.streaming.executor import SectionExecutor

from .conftest import H1, H2
from .helpers import assert_well_formed, collect, ends, plain, section, threads_in_run_section

NAMES = ("a", "b", "c")
DISCONNECT_BOUND_S = 0.1

SCENARIOS = {
    # mid-stream: tokens keep coming every 20 ms
    "streaming": {"ttft_ms": 20, "itl_ms": 20, "tokens": 500},
    # the upstream stalls after two chunks, for far longer than the test
    "stalled": {"ttft_ms": 20, "itl_ms": 2, "tokens": 50, "stall_after": 2, "stall_s": 60},
    # the upstream has not even answered with headers yet
    "awaiting-headers": {"header_delay_ms": 60_000},
}


def _open_run(manager, simulator, scenario):
    """Start a run and bring it to the scenario's state; return the suspended generator."""
    configs = [section(name, **SCENARIOS[scenario]) for name in NAMES]
    events = manager.stream(configs)
    if scenario == "streaming":
        seen: Counter[str] = Counter()
        for event in events:
            if isinstance(event, ContentChunk):
                seen[event.section] += 1
            if len(seen) == len(NAMES) and min(seen.values()) >= 2:
                break
        assert simulator.stats(records=False)["disconnects"] == []
        return events
    started = 0
    for event in events:
        started += isinstance(event, SectionStarted)
        if started == len(NAMES):
            break
    # The consumer stays paused; the upstream side tells when the state is reached.
    if scenario == "stalled":
        simulator.wait_for_stats(lambda s: s["chunks_sent"] == 2 * len(NAMES))
    else:
        simulator.wait_for_stats(lambda s: s["requests_total"] == len(NAMES))
    assert simulator.stats(records=False)["disconnects"] == []
    return events


def _assert_upstream_saw_every_close(simulator, closed_at, count):
    stats = simulator.wait_for_stats(lambda s: len(s["disconnects"]) >= count, timeout=5.0)
    assert sorted(d["tag"] for d in stats["disconnects"]) == sorted(NAMES)[:count]
    for disconnect in stats["disconnects"]:
        lag = disconnect["t"] - closed_at
        assert -0.01 < lag < DISCONNECT_BOUND_S, f"{disconnect['tag']}: seen {lag * 1000:.0f} ms"
    return stats


@pytest.mark.parametrize("settings", [H2, H1], ids=["h2", "http1.1"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_close_cancels_every_upstream_stream(
    scenario, settings, make_client, make_manager, simulator
):
    manager = make_manager(make_client(settings))
    events = _open_run(manager, simulator, scenario)

    closed_at = time.time()
    events.close()
    # close() returns only once every worker has left its thread.
    assert threads_in_run_section() == []

    _assert_upstream_saw_every_close(simulator, closed_at, len(NAMES))
    stats = simulator.stats(records=False)
    assert stats["streams_active"] == 0
    # The pool is fine afterwards: a new run on the same client completes.
    after = plain(collect(manager.stream([section("after")])))
    assert assert_well_formed(after, ["after"]).completed == ("after",)
    if settings is H2:
        assert simulator.stats(records=False)["connections_accepted"] == 1


def test_closing_the_sse_frames_closes_the_run(manager, simulator):
    configs = [section(name, **SCENARIOS["streaming"]) for name in NAMES]
    frames = manager.stream_sse(configs)
    chunk_frames = 0
    for frame in frames:
        chunk_frames += '"type":"chunk"' in frame
        if chunk_frames >= 6:
            break
    closed_at = time.time()
    frames.close()  # what a WSGI server calls on the response iterable
    assert threads_in_run_section() == []
    _assert_upstream_saw_every_close(simulator, closed_at, len(NAMES))


def test_a_run_closed_before_it_started_sends_nothing(manager, simulator):
    events = manager.stream([section("a"), section("b")])
    events.close()
    assert simulator.stats(records=False)["requests_total"] == 0


def test_manager_close_winds_open_runs_down_with_done(manager, simulator):
    configs = [section(name, **SCENARIOS["streaming"]) for name in NAMES]
    received: list = []

    def consume() -> None:
        received.extend(plain(collect(manager.stream(configs))))

    consumer = threading.Thread(target=consume)
    consumer.start()
    simulator.wait_for_stats(lambda s: s["chunks_sent"] >= 2 * len(NAMES))

    closed_at = time.time()
    manager.close()
    consumer.join(5)
    assert not consumer.is_alive(), "the run did not end after manager.close()"
    assert threads_in_run_section() == []

    done = assert_well_formed(received, NAMES)
    assert isinstance(received[-1], RunDone)
    assert done.cancelled is True
    assert set(done.failed) == set(NAMES)
    for error in ends(received).values():
        assert isinstance(error, SectionError)
        assert error.code is ErrorCode.CANCELLED
    _assert_upstream_saw_every_close(simulator, closed_at, len(NAMES))

    with pytest.raises(LifecycleError):
        manager.stream([section("late")])
    manager.close()  # safe twice


def test_manager_close_ends_sections_that_never_started(make_manager, simulator):
    manager = make_manager(options=RunOptions(max_parallel=1))
    configs = [section(name, **SCENARIOS["streaming"]) for name in NAMES]
    events = manager.stream(configs)
    seen = []
    for event in events:
        seen.append(event)
        if isinstance(event, ContentChunk):
            break
    manager.close()
    seen.extend(events)
    done = assert_well_formed(seen, NAMES)
    assert done.cancelled is True
    assert {e.code for e in ends(seen).values()} == {ErrorCode.CANCELLED}
    # Only the first section ever reached the upstream.
    assert simulator.stats(records=False)["requests_total"] == 1


def _stream_while_the_only_thread_waits(
    manager: ParallelStreamManager, one_thread: SectionExecutor
) -> tuple[Generator[Event, None, None], threading.Event]:
    """A run streaming on a one-thread executor whose thread is then taken by a task that waits
    until the returned event is set: a section of the next run queues for that thread. (A
    section streaming over HTTP/2 gives its thread back once its request is sent.)"""
    busy = manager.stream([section("busy", **SCENARIOS["streaming"])])
    next(c for c in busy if isinstance(c, ContentChunk))
    release = threading.Event()
    one_thread.submit(release.wait, 30)
    return busy, release


def test_close_does_not_wait_for_sections_still_queued_for_a_thread(client, stats, simulator):
    """A section waiting for a pool thread has nothing to cancel upstream: closing its run
    must not block the request thread for the cancel grace period."""
    one_thread = SectionExecutor(1)
    try:
        manager = ParallelStreamManager(client, executor=one_thread, stats=stats)
        busy, release = _stream_while_the_only_thread_waits(manager, one_thread)

        queued = manager.stream(
            [section("queued", **SCENARIOS["streaming"])],
            options=RunOptions(heartbeat_s=0.02),
        )
        next(e for e in queued if isinstance(e, Heartbeat))  # scheduled, waiting for a thread
        started = time.monotonic()
        queued.close()
        queued_close_s = time.monotonic() - started

        started = time.monotonic()
        busy.close()
        busy_close_s = time.monotonic() - started
        # Closing the queued run costs no more than closing a running one (which must reset
        # an upstream stream and wait for its worker).
        assert queued_close_s < max(0.1, 3 * busy_close_s), (
            f"closing a queued run took {queued_close_s:.3f}s, a running one {busy_close_s:.3f}s"
        )
        release.set()
        records = simulator.stats()["requests"]
        assert [r["tag"] for r in records] == ["busy"]
    finally:
        one_thread.shutdown()


def test_executor_shut_down_under_a_queued_section_still_ends_its_run(client, stats, simulator):
    """App shutdown does ``manager.close()`` then ``executor.shutdown()``, which cancels the
    futures of sections still waiting for a thread. Their runs must still end with ``done``
    instead of waiting forever for a worker that will never run."""
    one_thread = SectionExecutor(1)
    manager = ParallelStreamManager(client, executor=one_thread, stats=stats)
    busy, release = _stream_while_the_only_thread_waits(manager, one_thread)
    queued = manager.stream(
        [section("queued", **SCENARIOS["streaming"])],
        options=RunOptions(heartbeat_s=0.02, deadline_s=1.0),
    )
    next(e for e in queued if isinstance(e, Heartbeat))  # scheduled, waiting for the thread

    one_thread.shutdown(wait=False)  # cancels the queued section's future
    release.set()
    busy.close()

    rest: list = []
    consumer = threading.Thread(target=lambda: rest.extend(queued), daemon=True)
    consumer.start()
    consumer.join(3)  # the run's deadline is 1 s: it must be over by then at the latest
    try:
        assert not consumer.is_alive(), "the run waits forever for a cancelled section"
        assert isinstance(rest[-1], RunDone)
        assert rest[-1].failed == ("queued",)
    finally:
        # A run stuck on a section that never ran leaves its consumer blocked: a daemon
        # thread, so the failed test still ends.
        one_thread.shutdown()


def test_a_shut_down_executor_refuses_new_runs_up_front(client, stats):
    closed = SectionExecutor(1)
    closed.shutdown()
    manager = ParallelStreamManager(client, executor=closed, stats=stats)
    with pytest.raises(LifecycleError):
        manager.stream([section("a"), section("b")])


def test_an_executor_shut_down_under_an_opened_run_ends_it_with_done(client, stats, simulator):
    """The executor may shut down between ``stream()`` and the first section's start (the app
    winding down while a request is being answered): the run must not raise out of its iterator
    after ``start``, but end every section with ``cancelled`` and send ``done``."""
    executor = SectionExecutor(1)
    manager = ParallelStreamManager(client, executor=executor, stats=stats)
    events = manager.stream([section("a"), section("b")])
    executor.shutdown()
    received = []
    try:
        for event in events:
            received.append(event)
    except Exception as exc:
        pytest.fail(f"raised {type(exc).__name__} after {[e.type for e in received]}: {exc}")
    done = assert_well_formed(received, ["a", "b"])
    assert set(done.failed) == {"a", "b"}
    errors = [e for e in received if isinstance(e, SectionError)]
    assert {e.code for e in errors} == {ErrorCode.CANCELLED}
    assert simulator.stats(records=False)["requests_total"] == 0
