"""Backpressure: a consumer that stops reading pauses its workers; one that never resumes ends
its sections with ``slow_consumer``; nothing is lost or reordered on the way.

The simulator counts the chunks it has sent. While the consumer is paused, that count must stop
growing well before the end of a long text: what the sockets and the HTTP/2 window hold is
finite, and the worker holds at most the run's buffer (that bound is tested on the channel
itself, in ``tests/unit/test_channel.py``).
"""

from __future__ import annotations

import time

import pytest

from backend_ai.streaming import RunOptions
from backend_ai.streaming.events import ContentChunk, ErrorCode, SectionDone, SectionError

from .conftest import H1, H2
from .helpers import assert_well_formed, chunks_of, ends, section

QUEUE_SIZE = 8
TOKENS = 30_000  # ~7.5 MB of SSE: more than the loopback socket buffers hold


def _long(name: str):
    return section(name, ttft_ms=0, itl_ms=0, tokens=TOKENS, max_tokens=TOKENS)


def _wait_until_sent_stops_growing(simulator, *, polls: int = 10, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    last, unchanged = -1, 0
    while unchanged < polls:
        assert time.monotonic() < deadline, f"the upstream kept sending: {last} chunks"
        sent = simulator.stats(records=False)["chunks_sent"]
        unchanged = unchanged + 1 if sent == last else 0
        last = sent
        time.sleep(0.02)
    return last


@pytest.mark.parametrize("settings", [H2, H1], ids=["h2", "http1.1"])
def test_paused_consumer_pauses_the_upstream_and_loses_nothing(
    settings, make_client, make_manager, simulator
):
    options = RunOptions(queue_size=QUEUE_SIZE, stall_timeout_s=None)
    manager = make_manager(make_client(settings), options=options)
    events = manager.stream([_long("long")])
    received = []
    for event in events:
        received.append(event)
        if isinstance(event, ContentChunk):
            break

    sent = _wait_until_sent_stops_growing(simulator)
    # The worker stopped reading, so the upstream stopped long before the end of the text.
    assert sent < TOKENS * 0.8, f"upstream sent {sent} of {TOKENS} chunks to a paused consumer"

    # Resuming delivers everything, once and in order.
    received.extend(events)
    assert_well_formed(received, ["long"])
    assert isinstance(ends(received)["long"], SectionDone)
    assert len(chunks_of(received, "long")) == TOKENS


def test_consumer_that_never_resumes_ends_the_section_slow_consumer(make_manager, simulator):
    options = RunOptions(queue_size=4, backpressure_timeout_s=0.2, stall_timeout_s=None)
    manager = make_manager(options=options)
    # itl_ms=1, not 0: a stream loop that never sleeps gives the simulator's disconnect
    # watcher no turn, so the reset could go unseen (see test_sim_raw_h2's regression test).
    events = manager.stream([section("long", ttft_ms=0, itl_ms=1, tokens=2000, max_tokens=2000)])
    received = []
    for event in events:
        received.append(event)
        if isinstance(event, ContentChunk):
            break

    # The worker gives up on its own and closes its upstream stream: no consumer needed.
    disconnects = simulator.wait_for_stats(lambda s: s["disconnects"], timeout=10)["disconnects"]
    assert [d["tag"] for d in disconnects] == ["long"]

    received.extend(events)
    done = assert_well_formed(received, ["long"])
    assert done.failed == ("long",)
    error = ends(received)["long"]
    assert isinstance(error, SectionError)
    assert error.code is ErrorCode.SLOW_CONSUMER
    # The chunks that did get through stay valid, and the error says how many there were.
    assert error.chunks == len(chunks_of(received, "long"))


def test_a_pause_shorter_than_the_backpressure_timeout_is_not_a_stall(make_manager):
    """The stall timeout is about the upstream; a consumer's pause must not trigger it."""
    options = RunOptions(queue_size=4, stall_timeout_s=0.3, backpressure_timeout_s=30)
    manager = make_manager(options=options)
    events = manager.stream([section("steady", ttft_ms=0, itl_ms=1, tokens=200)])
    received = []
    for event in events:
        received.append(event)
        if isinstance(event, ContentChunk):
            break
    time.sleep(1.0)  # the pause under test: three stall timeouts long
    received.extend(events)
    end = ends(received)["steady"]
    assert isinstance(end, SectionDone), end
    assert len(chunks_of(received, "steady")) == 200
