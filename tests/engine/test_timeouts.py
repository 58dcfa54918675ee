"""Stall timeout and run deadline: the affected sections end ``timeout``, the rest go on."""

from __future__ import annotations

import time

import openai

from backend_ai.streaming import ParallelStreamManager, RunOptions
from backend_ai.streaming.events import ErrorCode, Heartbeat, RunDone, SectionDone, SectionError
from backend_ai.streaming.executor import SectionExecutor
from backend_ai.streaming.sse import encode_event

from .helpers import (
    API_KEY,
    assert_well_formed,
    chunks_of,
    collect,
    ends,
    expected_text,
    plain,
    records_by_tag,
    section,
    texts,
)

STALL_S = 0.3


def test_stall_timeout_ends_only_the_stalled_section(make_manager, client, simulator):
    manager = make_manager(options=RunOptions(stall_timeout_s=STALL_S))
    configs = [
        section("stalled", ttft_ms=20, itl_ms=2, tokens=20, stall_after=3, stall_s=30),
        section("a", ttft_ms=20, itl_ms=20, tokens=20),  # ~400 ms: outlives the stall timeout
        section("b"),
    ]
    started = time.monotonic()
    events = plain(collect(manager.stream(configs)))
    wall = time.monotonic() - started

    done = assert_well_formed(events, ["stalled", "a", "b"])
    assert set(done.completed) == {"a", "b"}
    error = ends(events)["stalled"]
    assert isinstance(error, SectionError)
    assert error.code is ErrorCode.TIMEOUT
    assert error.chunks == 3
    assert len(chunks_of(events, "stalled")) == 3
    for config in configs[1:]:
        assert texts(events)[config.section_name] == expected_text(client, config)
    # Ended by the stall timeout, not by the upstream's 30 s stall.
    assert wall / STALL_S < 4
    disconnects = simulator.wait_for_stats(lambda s: s["disconnects"])["disconnects"]
    assert [d["tag"] for d in disconnects] == ["stalled"]


def test_stall_timeout_counts_from_the_last_chunk_not_the_start(make_manager):
    # 15 chunks 60 ms apart: three times the stall timeout in all, never 0.3 s without data.
    manager = make_manager(options=RunOptions(stall_timeout_s=STALL_S))
    events = plain(collect(manager.stream([section("slow-but-steady", itl_ms=60, tokens=15)])))
    assert isinstance(ends(events)["slow-but-steady"], SectionDone)


def test_stall_timeout_applies_while_waiting_for_the_first_token(make_manager):
    manager = make_manager(options=RunOptions(stall_timeout_s=STALL_S))
    events = plain(collect(manager.stream([section("late", ttft_ms=5000), section("ok")])))
    assert ends(events)["late"].code is ErrorCode.TIMEOUT
    assert isinstance(ends(events)["ok"], SectionDone)


def test_deadline_ends_open_and_waiting_sections(make_manager, simulator):
    deadline = 0.6
    manager = make_manager(options=RunOptions(deadline_s=deadline, max_parallel=2))
    long = {"ttft_ms": 20, "itl_ms": 20, "tokens": 1000}
    configs = [
        section("short", tokens=5),
        section("long-a", **long),
        section("long-b", **long),  # starts when "short" ends
        section("never", **long),  # still waiting for a slot at the deadline
    ]
    started = time.monotonic()
    events = plain(collect(manager.stream(configs)))
    wall = time.monotonic() - started

    done = assert_well_formed(events, [c.section_name for c in configs])
    assert isinstance(events[-1], RunDone)
    assert done.completed == ("short",)
    assert set(done.failed) == {"long-a", "long-b", "never"}
    for name in ("long-a", "long-b", "never"):
        error = ends(events)[name]
        assert isinstance(error, SectionError)
        assert error.code is ErrorCode.TIMEOUT
    assert chunks_of(events, "never") == []
    assert 1.0 <= wall / deadline < 1.6, f"run took {wall:.3f}s with a {deadline}s deadline"

    stats = simulator.wait_for_stats(lambda s: len(s["disconnects"]) == 2, records=True)
    assert sorted(d["tag"] for d in stats["disconnects"]) == ["long-a", "long-b"]
    assert "never" not in records_by_tag(stats)


def test_deadline_done_is_last_even_if_nothing_finished(make_manager):
    manager = make_manager(options=RunOptions(deadline_s=0.2))
    configs = [section(name, header_delay_ms=10_000) for name in ("a", "b")]
    events = plain(collect(manager.stream(configs)))
    done = assert_well_formed(events, ["a", "b"])
    assert done.completed == ()
    assert {e.code for e in ends(events).values()} == {ErrorCode.TIMEOUT}


def test_heartbeats_while_nothing_else_goes_out(make_manager):
    manager = make_manager(options=RunOptions(heartbeat_s=0.05))
    events = plain(collect(manager.stream([section("slow-start", ttft_ms=400, tokens=3)])))
    beats = [i for i, e in enumerate(events) if isinstance(e, Heartbeat)]
    first_chunk = next(i for i, e in enumerate(events) if e.type == "chunk")
    # 400 ms to the first token with a 50 ms heartbeat: several beats before it.
    assert len([i for i in beats if i < first_chunk]) >= 3
    assert encode_event(events[beats[0]]) == ": ping\n\n"
    assert_well_formed([e for e in events if not isinstance(e, Heartbeat)], ["slow-start"])


#: How long after the deadline every upstream stream must be closed (the engine's promise: at
#: most 100 ms, so a missed deadline does not keep paying for tokens nobody will read).
DEADLINE_BOUND_S = 0.1


def test_deadline_closes_upstream_streams_promptly(make_manager, simulator):
    """The deadline is not rounded up to the consumer's timer tick."""
    deadline = 0.35
    manager = make_manager(options=RunOptions(deadline_s=deadline))
    configs = [section(name, ttft_ms=20, itl_ms=10, tokens=1000) for name in ("a", "b")]
    started = time.time()
    events = plain(collect(manager.stream(configs)))
    assert {e.code for e in ends(events).values()} == {ErrorCode.TIMEOUT}
    stats = simulator.wait_for_stats(lambda s: len(s["disconnects"]) == 2)
    for disconnect in stats["disconnects"]:
        late = disconnect["t"] - (started + deadline)
        assert late < DEADLINE_BOUND_S, f"{disconnect['tag']} closed {late * 1000:.0f} ms late"


def test_deadline_during_a_rate_limit_wait(make_manager, simulator):
    deadline = 0.3
    manager = make_manager(options=RunOptions(deadline_s=deadline, max_retry_wait_s=5))
    config = section("limited", fail_first=1, retry_after_ms=3000, attempt_key="deadline-wait")
    started = time.monotonic()
    events = plain(collect(manager.stream([config])))
    wall = time.monotonic() - started
    assert_well_formed(events, ["limited"])
    assert ends(events)["limited"].code is ErrorCode.TIMEOUT
    assert wall - deadline < DEADLINE_BOUND_S, f"deadline {deadline}s, run took {wall:.2f}s"
    # Only the refused attempt reached the upstream.
    assert simulator.stats(records=False)["requests_total"] == 1


def test_waiting_for_a_pool_thread_is_not_a_stall(client, stats, simulator):
    """A section queued behind a busy pool has not stalled: its clock starts when it runs."""
    one_thread = SectionExecutor(1)
    try:
        manager = ParallelStreamManager(
            client, executor=one_thread, stats=stats, options=RunOptions(stall_timeout_s=0.3)
        )
        # The only thread is busy for longer than the stall timeout before either section runs.
        one_thread.submit(time.sleep, 1.0)
        configs = [section(name, ttft_ms=20, itl_ms=40, tokens=12) for name in ("a", "b")]
        events = plain(collect(manager.stream(configs)))
        done = assert_well_formed(events, ["a", "b"])
        assert set(done.completed) == {"a", "b"}
    finally:
        one_thread.shutdown()


def test_stall_timeout_with_the_sdks_default_client(simulator, executor, stats):
    """``create_parallel_stream(openai_client, ...)`` is also used with a plain ``OpenAI()``
    (httpx2, no cancellable transport): its stall timeout must still end the section."""
    with openai.OpenAI(api_key=API_KEY, base_url=simulator.base_url, max_retries=0) as sdk:
        manager = ParallelStreamManager(
            sdk, executor=executor, stats=stats, options=RunOptions(stall_timeout_s=STALL_S)
        )
        configs = [section("stalled", stall_after=3, stall_s=2.5), section("ok")]
        started = time.monotonic()
        events = plain(collect(manager.stream(configs)))
        wall = time.monotonic() - started
    assert ends(events)["stalled"].code is ErrorCode.TIMEOUT
    assert isinstance(ends(events)["ok"], SectionDone)
    assert wall / STALL_S < 4, f"stall timeout {STALL_S}s, the run took {wall:.2f}s"
