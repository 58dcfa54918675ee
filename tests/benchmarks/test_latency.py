"""First event at once, first chunk right behind the upstream's, cancellation reaches upstream."""

from __future__ import annotations

import time

import pytest
from bench_support import ROUNDS
from peers.engine import EnginePeer
from peers.harness import check_complete, run_once, sim_sections

from backend_ai.simulator import SimulatorProcess

TTFT_MS = 100


def test_first_event_comes_before_any_upstream_token(benchmark, engine):
    sections = sim_sections(3, {"ttft_ms": TTFT_MS, "itl_ms": 2, "tokens": 5, "jitter": 0})
    run_once(engine, sections)

    result = benchmark.pedantic(run_once, args=(engine, sections), rounds=ROUNDS, iterations=1)

    assert check_complete(result, sections) == []
    trace = result.trace
    assert trace.first_event is not None
    first_event = trace.first_event - trace.t0
    first_chunk = trace.first_chunk_s
    assert first_chunk is not None
    benchmark.extra_info.update(first_event_ms=first_event * 1e3, first_chunk_ms=first_chunk * 1e3)
    # Ratios only: the start event lands in a small part of the upstream's TTFT, and the
    # first chunk within a generous factor of it.
    assert first_event < 0.5 * TTFT_MS / 1000
    assert first_chunk < 2.5 * TTFT_MS / 1000


@pytest.mark.parametrize("http2", [True, False], ids=["http2", "http1"])
def test_closing_the_run_closes_every_upstream_stream(simulator: SimulatorProcess, http2):
    sections = sim_sections(9, {"ttft_ms": 10, "itl_ms": 10, "tokens": 2000, "jitter": 0})
    with EnginePeer(simulator.base_url, http2=http2) as peer:
        events = peer.open_live(sections)
        closed_at = time.time()
        events.close()
        stats = simulator.wait_for_stats(lambda s: len(s["disconnects"]) >= 9, timeout=10.0)
    assert stats["streams_active"] == 0
    assert len(stats["disconnects"]) == 9
    # Every stream went away after the close and long before it would have ended by itself.
    assert all(d["t"] >= closed_at - 0.001 for d in stats["disconnects"])
    assert all(d["chunks_sent"] < 2000 for d in stats["disconnects"])
