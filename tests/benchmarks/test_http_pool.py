"""HTTP/2: a run's parallel streams share one TCP connection; HTTP/1.1 needs one each."""

from __future__ import annotations

import pytest
from bench_support import ROUNDS, SECTION
from peers.engine import EnginePeer
from peers.harness import check_complete, run_once, sim_sections

from backend_ai.simulator import SimulatorProcess


@pytest.mark.parametrize(("http2", "connections"), [(True, 1), (False, 9)], ids=["http2", "http1"])
def test_nine_sections_connections(benchmark, simulator: SimulatorProcess, http2, connections):
    sections = sim_sections(9, SECTION, tag="pool")
    with EnginePeer(simulator.base_url, http2=http2) as peer:
        cold = run_once(peer, sections)
        stats = simulator.stats(records=False)
        warm = benchmark.pedantic(run_once, args=(peer, sections), rounds=ROUNDS, iterations=1)
    assert check_complete(cold, sections) == []
    assert check_complete(warm, sections) == []
    assert stats["connections_accepted"] == connections
    assert max(c["max_active"] for c in stats["connections"]) == 9 // connections
