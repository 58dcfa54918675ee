"""Ordering modes with uneven sections: a slow first section and fast later ones.

"Live" is checked against the simulator, not a clock: when the consumer gets the slow head's
first chunk, the simulator must still be generating that section.
"""

from __future__ import annotations

import itertools

from backend_ai.streaming import RunOptions
from backend_ai.streaming.config import Mode
from backend_ai.streaming.events import (
    ContentChunk,
    ErrorCode,
    Heartbeat,
    SectionDone,
    SectionError,
)

from .helpers import assert_well_formed, collect, ends, expected_text, plain, section, texts

SLOW = {"ttft_ms": 300, "itl_ms": 20, "tokens": 20}  # ~0.7 s
FAST_1 = {"ttft_ms": 20, "itl_ms": 2, "tokens": 8}  # ~35 ms
FAST_2 = {"ttft_ms": 120, "itl_ms": 2, "tokens": 8}  # ~135 ms
NAMES = ("slow", "fast-1", "fast-2")


def _configs():
    return [section("slow", **SLOW), section("fast-1", **FAST_1), section("fast-2", **FAST_2)]


def _outcomes(simulator) -> dict[str, str]:
    return {r["tag"]: r["outcome"] for r in simulator.stats()["requests"]}


def _runs_of_sections(events) -> list[str]:
    """Section names in output order, consecutive repeats collapsed."""
    names = [e.section for e in events if hasattr(e, "section")]
    return [name for name, _ in itertools.groupby(names)]


def test_ordered_streams_the_head_live_and_flushes_the_rest_when_it_ends(
    make_manager, client, simulator
):
    manager = make_manager(options=RunOptions(mode=Mode.ORDERED))
    events = []
    outcomes_at_first_head_chunk = None
    for event in manager.stream(_configs()):
        events.append(event)
        if outcomes_at_first_head_chunk is None and isinstance(event, ContentChunk):
            assert event.section == "slow"
            outcomes_at_first_head_chunk = _outcomes(simulator)

    done = assert_well_formed(events, NAMES)
    assert events[0].mode == "ordered"
    # Output follows config order, each section whole.
    assert _runs_of_sections(events) == list(NAMES)
    # The head streamed live: its first chunk came while the upstream was still generating it,
    # and the fast sections had already finished upstream (so they were being buffered).
    assert outcomes_at_first_head_chunk == {
        "slow": "active",
        "fast-1": "completed",
        "fast-2": "completed",
    }
    # The buffered sections come out right behind the head's end.
    head_end = events.index(ends(events)["slow"])
    assert events[head_end + 1].section == "fast-1"
    assert events[head_end + 1].type == "section_start"
    assert set(done.completed) == set(NAMES)
    for config in _configs():
        assert texts(events)[config.section_name] == expected_text(client, config)


def test_ordered_next_section_goes_live_after_the_head(make_manager, simulator):
    manager = make_manager(options=RunOptions(mode=Mode.ORDERED))
    configs = [section("head", **FAST_1), section("second", **SLOW)]
    outcome_at_second_chunk = None
    events = []
    for event in manager.stream(configs):
        events.append(event)
        if isinstance(event, ContentChunk) and event.section == "second" and event.seq == 2:
            outcome_at_second_chunk = _outcomes(simulator)["second"]
    assert_well_formed(events, ["head", "second"])
    assert _runs_of_sections(events) == ["head", "second"]
    assert outcome_at_second_chunk == "active"


def test_ordered_head_failure_flushes_the_others(make_manager):
    manager = make_manager(options=RunOptions(mode=Mode.ORDERED))
    configs = [section("bad-head", ttft_ms=200, status=500), section("a"), section("b")]
    events = plain(collect(manager.stream(configs)))
    done = assert_well_formed(events, ["bad-head", "a", "b"])
    assert _runs_of_sections(events) == ["bad-head", "a", "b"]
    assert ends(events)["bad-head"].code is ErrorCode.UPSTREAM_ERROR
    assert set(done.completed) == {"a", "b"}


def test_as_completed_emits_whole_sections_in_completion_order(make_manager, simulator):
    manager = make_manager(options=RunOptions(mode=Mode.AS_COMPLETED))
    events = plain(collect(manager.stream(_configs())))
    assert_well_formed(events, NAMES)
    order = _runs_of_sections(events)
    assert order == ["fast-1", "fast-2", "slow"]
    # ... which is the order in which the upstream finished them.
    records = sorted(simulator.stats()["requests"], key=lambda r: r["t_end"])
    assert [r["tag"] for r in records] == order
    for name in NAMES:
        section_events = [e for e in events if getattr(e, "section", None) == name]
        assert section_events[0].type == "section_start"
        assert isinstance(section_events[-1], SectionDone)


def test_as_completed_includes_failed_sections(make_manager):
    manager = make_manager(options=RunOptions(mode=Mode.AS_COMPLETED))
    configs = [section("slow", **SLOW), section("broken", drop_after=2, ttft_ms=50)]
    events = plain(collect(manager.stream(configs)))
    assert_well_formed(events, ["slow", "broken"])
    assert _runs_of_sections(events) == ["broken", "slow"]
    error = ends(events)["broken"]
    assert isinstance(error, SectionError)
    assert [e.seq for e in events if isinstance(e, ContentChunk) and e.section == "broken"] == [
        0,
        1,
    ]


def test_interleaved_passes_fast_sections_ahead_of_the_slow_head(make_manager):
    manager = make_manager(options=RunOptions(mode=Mode.INTERLEAVED))
    events = plain(collect(manager.stream(_configs())))
    assert_well_formed(events, NAMES)
    chunk_sections = [e.section for e in events if isinstance(e, ContentChunk)]
    first_slow = chunk_sections.index("slow")
    assert set(chunk_sections[:first_slow]) == {"fast-1", "fast-2"}
    # Both fast sections were done before the slow one produced anything.
    done_positions = {name: events.index(ends(events)[name]) for name in NAMES}
    first_slow_event = next(
        i for i, e in enumerate(events) if isinstance(e, ContentChunk) and e.section == "slow"
    )
    assert done_positions["fast-1"] < first_slow_event
    assert done_positions["fast-2"] < first_slow_event


def test_every_mode_delivers_the_same_chunks(make_manager):
    per_mode = {}
    for mode in Mode:
        manager = make_manager(options=RunOptions(mode=mode))
        events = plain(collect(manager.stream(_configs())))
        assert_well_formed(events, NAMES)
        per_mode[mode] = {
            name: [
                (c.seq, c.content)
                for c in events
                if isinstance(c, ContentChunk) and c.section == name
            ]
            for name in NAMES
        }
    assert per_mode[Mode.ORDERED] == per_mode[Mode.INTERLEAVED] == per_mode[Mode.AS_COMPLETED]


def test_ordered_heartbeats_while_buffered_sections_produce(make_manager):
    """Heartbeats keep an idle connection open when nothing goes *out*; chunks that arrive but
    are buffered behind a slow head send nothing."""
    manager = make_manager(options=RunOptions(mode=Mode.ORDERED, heartbeat_s=0.1))
    configs = [
        section("slow-head", ttft_ms=800, itl_ms=2, tokens=5),
        section("busy-behind", ttft_ms=20, itl_ms=20, tokens=35),  # arrives for ~0.7 s
    ]
    events = plain(collect(manager.stream(configs)))
    names = [c.section_name for c in configs]
    assert_well_formed([e for e in events if not isinstance(e, Heartbeat)], names)
    first_chunk = next(i for i, e in enumerate(events) if isinstance(e, ContentChunk))
    beats_before = sum(isinstance(e, Heartbeat) for e in events[:first_chunk])
    # 0.8 s with nothing on the wire and a 0.1 s heartbeat: several beats.
    assert beats_before >= 4, f"{beats_before} heartbeats in 0.8 s of silence"
