"""The consumer's flush interval: fewer, fuller writes at a model's pace, and nothing else waits.

Each test compares a run with the interval on against the same run with it off (or a much
shorter one), in the same test against the same simulator, as ratios: the machine is shared.
"""

from __future__ import annotations

import time

import pytest

from backend_ai.errors import ConfigError
from backend_ai.streaming import RunOptions
from backend_ai.streaming.events import ContentChunk, SectionDone
from tests.support.protocol import check_stream
from tests.support.sse import parse_sse_body

from .helpers import assert_well_formed, expected_text, section, texts

NAMES = ("summary", "symbols", "advice")
#: Long enough that a delay by it would stand out from any scheduling noise.
LONG_S = 0.4


def _timed_batches(manager, configs, options):
    """Every list ``stream_batches`` yields, with the monotonic time it was handed on."""
    started = time.monotonic()
    return [
        (time.monotonic() - started, batch)
        for batch in manager.stream_batches(configs, options=options)
    ]


def _chunk_writes(batches) -> tuple[int, int]:
    """(writes that carried chunks, chunks)."""
    writes = [b for _, b in batches if any(type(e) is ContentChunk for e in b)]
    return len(writes), sum(type(e) is ContentChunk for b in writes for e in b)


def test_chunks_per_write_rise_with_the_interval(manager, client):
    # Three sections at a model's pace: each chunk arrives alone.
    configs = [
        section(name, ttft_ms=20, itl_ms=10, tokens=40, seed=i) for i, name in enumerate(NAMES)
    ]
    off = _timed_batches(manager, configs, RunOptions(flush_interval_s=0))
    on = _timed_batches(manager, configs, RunOptions(flush_interval_s=0.05))
    for batches in (off, on):
        events = [e for _, b in batches for e in b]
        assert_well_formed(events, NAMES)
        assert texts(events) == {c.section_name: expected_text(client, c) for c in configs}
    writes_off, chunks_off = _chunk_writes(off)
    writes_on, chunks_on = _chunk_writes(on)
    assert chunks_off == chunks_on == 120
    # Off: about one chunk per write. On: 3 sections x 10 ms pace in 50 ms, several per write.
    assert chunks_on / writes_on >= 3 * (chunks_off / writes_off), (writes_off, writes_on)


def test_the_first_chunk_is_not_held_back(manager):
    configs = [section(name, ttft_ms=30, itl_ms=20, tokens=30) for name in NAMES]

    def first_chunk_s(options: RunOptions) -> float:
        for at, batch in _timed_batches(manager, configs, options):
            if any(type(e) is ContentChunk for e in batch):
                return at
        raise AssertionError("no chunk")

    # The section starts are written before the first chunk; a pause after that write would
    # hold the first chunk back by up to the interval.
    off = min(first_chunk_s(RunOptions(flush_interval_s=0)) for _ in range(2))
    on = min(first_chunk_s(RunOptions(flush_interval_s=LONG_S)) for _ in range(2))
    # Held back, ``on`` would come at the consumer's next timer tick (0.25 s) or the end of
    # the interval, against ``off``'s 0.03 s; noise moves both alike.
    assert on - off <= 0.25 * LONG_S, (off, on)


def test_a_section_end_is_not_held_back(manager):
    # "quick" ends while "slow" keeps the consumer writing chunks (and so pausing).
    configs = [
        section("slow", ttft_ms=0, itl_ms=10, tokens=150),
        section("quick", ttft_ms=0, itl_ms=10, tokens=8),
    ]

    def quick_done_s(options: RunOptions) -> float:
        for at, batch in _timed_batches(manager, configs, options):
            if any(type(e) is SectionDone and e.section == "quick" for e in batch):
                return at
        raise AssertionError("quick never ended")

    off = quick_done_s(RunOptions(flush_interval_s=0.001))
    on = quick_done_s(RunOptions(flush_interval_s=LONG_S))
    # Held to the next write, the end would wait up to 0.4 s after the last write of chunks;
    # it comes at once instead (well within one chunk's pace of the run without a pause).
    assert on <= off + 0.25 * LONG_S, (off, on)


def test_a_full_channel_ends_the_pause(manager):
    # A burst into a queue of 4: without the bell, each refill would wait out the interval.
    configs = [section(name, ttft_ms=0, itl_ms=0, tokens=300, max_tokens=300) for name in NAMES]

    def wall_s(options: RunOptions) -> float:
        started = time.monotonic()
        events = [e for _, b in _timed_batches(manager, configs, options) for e in b]
        assert_well_formed(events, NAMES)
        assert sum(type(e) is ContentChunk for e in events) == 900
        return time.monotonic() - started

    off = wall_s(RunOptions(queue_size=4, flush_interval_s=0))
    on = wall_s(RunOptions(queue_size=4, flush_interval_s=LONG_S))
    # Each of 900 / 4 refills waiting out even part of 0.4 s would take minutes.
    assert on <= 3 * off + 0.5, (off, on)


def test_sse_frames_keep_the_protocol_with_the_interval(manager, client):
    configs = [
        section(name, ttft_ms=5, itl_ms=5, tokens=20, seed=i) for i, name in enumerate(NAMES)
    ]
    body = "".join(manager.stream_sse(configs, options=RunOptions(flush_interval_s=0.03)))
    events, _comments = parse_sse_body(body)
    outcomes = check_stream(events)
    assert {name: out.text for name, out in outcomes.items()} == {
        c.section_name: expected_text(client, c) for c in configs
    }
    assert events[-1]["type"] == "done"


@pytest.mark.parametrize("value", [-0.01, 1.5, float("nan"), True, "0.02"])
def test_the_interval_is_validated(value):
    with pytest.raises(ConfigError, match="flush_interval_s"):
        RunOptions(flush_interval_s=value)


def test_the_interval_may_be_off():
    assert RunOptions(flush_interval_s=0).flush_interval_s == 0
