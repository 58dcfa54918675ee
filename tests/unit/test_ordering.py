"""Ordering modes, driven with hand-made event sequences (no threads, no network)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from backend_ai.streaming.config import Mode
from backend_ai.streaming.events import (
    ContentChunk,
    ErrorCode,
    RateLimitFallback,
    SectionDone,
    SectionError,
    SectionStarted,
)
from backend_ai.streaming.ordering import make_orderer

SECTIONS = ("a", "b", "c")


def start(name):
    return SectionStarted(section=name, model="m")


def chunk(name, seq):
    return ContentChunk(name, seq, f"{name}{seq}")


def done(name):
    return SectionDone(
        section=name, finish_reason="stop", ttft_ms=1.0, duration_ms=1.0, chars=2, chunks=2
    )


def error(name):
    return SectionError(section=name, code=ErrorCode.UPSTREAM_ERROR, message="boom")


def run(mode, events, sections=SECTIONS):
    """Push events one at a time; return, per push, what came out."""
    orderer = make_orderer(Mode(mode), sections)
    return [list(orderer.push(event)) for event in events]


def flat(outputs):
    return [event for out in outputs for event in out]


# b and c finish while a (the slow head) is still streaming.
ARRIVALS = [
    start("a"),
    start("b"),
    start("c"),
    chunk("b", 0),
    chunk("a", 0),
    chunk("c", 0),
    chunk("b", 1),
    done("b"),
    chunk("c", 1),
    done("c"),
    chunk("a", 1),
    done("a"),
]


def test_interleaved_is_the_identity():
    outputs = run("interleaved", ARRIVALS)
    assert outputs == [[event] for event in ARRIVALS]


def test_ordered_streams_the_head_live_and_flushes_the_rest_when_it_ends():
    outputs = run("ordered", ARRIVALS)
    # The head's events go out the moment they arrive ...
    assert outputs[0] == [start("a")]
    assert outputs[4] == [chunk("a", 0)]
    assert outputs[10] == [chunk("a", 1)]
    # ... the others wait ...
    for index in (1, 2, 3, 5, 6, 7, 8, 9):
        assert outputs[index] == []
    # ... and come out, whole and in config order, when the head ends.
    assert outputs[11] == [
        done("a"),
        start("b"),
        chunk("b", 0),
        chunk("b", 1),
        done("b"),
        start("c"),
        chunk("c", 0),
        chunk("c", 1),
        done("c"),
    ]


def test_ordered_next_head_goes_live_after_the_flush():
    events = [
        start("a"),
        start("b"),
        chunk("b", 0),
        done("a"),  # flushes b's start and first chunk; b becomes the live head
        chunk("b", 1),
        chunk("c", 0),
        done("b"),  # c has not ended: its buffer is flushed, and it goes live
        chunk("c", 1),
        done("c"),
    ]
    outputs = run("ordered", events)
    assert outputs[3] == [done("a"), start("b"), chunk("b", 0)]
    assert outputs[4] == [chunk("b", 1)]
    assert outputs[5] == []
    assert outputs[6] == [done("b"), chunk("c", 0)]
    assert outputs[7] == [chunk("c", 1)]
    assert outputs[8] == [done("c")]


def test_ordered_errors_end_a_section_like_done():
    events = [chunk("b", 0), error("b"), start("a"), error("a"), done("c")]
    outputs = run("ordered", events)
    assert flat(outputs) == [start("a"), error("a"), chunk("b", 0), error("b"), done("c")]
    assert outputs[3] == [error("a"), chunk("b", 0), error("b")]


def _section_events(name, chunks, failed):
    return [
        start(name),
        *(chunk(name, i) for i in range(chunks)),
        error(name) if failed else done(name),
    ]


@settings(deadline=None)  # timing varies under a loaded 2-core machine
@given(
    st.lists(st.integers(min_value=0, max_value=4), min_size=3, max_size=3),
    st.lists(st.booleans(), min_size=3, max_size=3),
    st.randoms(use_true_random=False),
)
def test_any_arrival_order(chunk_counts, failures, rnd):
    per_section = {
        name: _section_events(name, n, failed)
        for name, n, failed in zip(SECTIONS, chunk_counts, failures, strict=True)
    }
    # A random merge that keeps each section's own order, as the workers produce it.
    queues = {name: list(events) for name, events in per_section.items()}
    arrivals = []
    while any(queues.values()):
        name = rnd.choice([n for n, q in queues.items() if q])
        arrivals.append(queues[name].pop(0))

    ordered = flat(run("ordered", arrivals))
    assert ordered == [e for name in SECTIONS for e in per_section[name]]

    completion_order = [e.section for e in arrivals if isinstance(e, SectionDone | SectionError)]
    as_completed = flat(run("as_completed", arrivals))
    assert as_completed == [e for name in completion_order for e in per_section[name]]

    assert flat(run("interleaved", arrivals)) == arrivals


def test_run_level_events_pass_straight_through_every_mode():
    fallback = RateLimitFallback(sections=("b",), wait_ms=5.0)
    for mode in ("interleaved", "ordered", "as_completed"):
        assert run(mode, [start("b"), fallback])[1] == [fallback]


def test_as_completed_sends_whole_sections_in_completion_order():
    outputs = run("as_completed", ARRIVALS)
    assert outputs[7] == [start("b"), chunk("b", 0), chunk("b", 1), done("b")]
    assert outputs[9] == [start("c"), chunk("c", 0), chunk("c", 1), done("c")]
    assert outputs[11] == [start("a"), chunk("a", 0), chunk("a", 1), done("a")]
    assert all(out == [] for i, out in enumerate(outputs) if i not in (7, 9, 11))


def test_as_completed_error_releases_its_section():
    outputs = run("as_completed", [start("a"), chunk("a", 0), error("a")])
    assert outputs[2] == [start("a"), chunk("a", 0), error("a")]


def test_no_event_is_lost_or_duplicated_in_any_mode():
    for mode in ("interleaved", "ordered", "as_completed"):
        out = flat(run(mode, ARRIVALS))
        assert sorted(map(repr, out)) == sorted(map(repr, ARRIVALS)), mode
        # Within each section the arrival order is kept.
        for name in SECTIONS:
            assert [e for e in out if e.section == name] == [
                e for e in ARRIVALS if e.section == name
            ]
