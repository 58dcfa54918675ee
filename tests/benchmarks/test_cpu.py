"""CPU per chunk at near-zero upstream latency: the engine against the SDK's own parsing.

Measured with ``time.process_time()`` of this process (the simulator is another process). The
bounds are ratios between figures taken in the same test, and generous ones.
"""

from __future__ import annotations

import pytest
from bench_support import BURST, ROUNDS
from peers.engine import EnginePeer
from peers.harness import check_complete, median, run_once, sim_sections
from peers.sequential import SequentialLoop

from backend_ai.simulator import SimulatorProcess


def _cpu_per_chunk(peer, sections, repeats=3) -> float:
    run_once(peer, sections)
    samples = []
    for _ in range(repeats):
        result = run_once(peer, sections)
        assert check_complete(result, sections) == []
        samples.append(result.cpu_us_per_chunk)
    value = median(samples)
    assert value is not None
    return value


@pytest.mark.parametrize("n", [1, 3, 9])
def test_engine_cpu_per_chunk_is_near_raw_lines(benchmark, simulator: SimulatorProcess, n):
    sections = sim_sections(n, BURST, tag=f"cpu{n}")
    with (
        EnginePeer(simulator.base_url) as engine,
        SequentialLoop.reference(simulator.base_url, raw=False) as typed,
        SequentialLoop.reference(simulator.base_url, raw=True) as raw,
    ):
        typed_us = _cpu_per_chunk(typed, sections[:1])
        raw_us = _cpu_per_chunk(raw, sections[:1])
        engine_us = _cpu_per_chunk(engine, sections)
        benchmark.extra_info.update(
            engine_us_per_chunk=engine_us, sdk_typed_us=typed_us, sdk_raw_us=raw_us
        )
        benchmark.pedantic(run_once, args=(engine, sections), rounds=ROUNDS, iterations=1)
    # Measured: engine ~1.0-1.2x raw lines, typed chunks ~10x raw lines.
    assert engine_us < 0.6 * typed_us
    assert engine_us < 3.0 * raw_us
