"""CPU per chunk at near-zero upstream latency: the engine against the SDK's own parsing.

Chunks come from the burst upstream (``scripts/peers/burst_upstream.py``, its own process),
which writes a whole completion at once: with the paced simulator the client would be woken
every few chunks and measure wake-ups, more so on a busy machine.
Measured with ``time.process_time()`` of this process. The
bounds are ratios between figures taken in the same test, in turns, and generous ones; the
figures themselves come from ``scripts/benchmark_streaming_performance.py --only merge_cost``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from bench_support import BURST, ROUNDS
from peers.burst_upstream import BurstUpstream
from peers.engine import EnginePeer
from peers.harness import check_complete, median, run_once, sim_sections
from peers.sequential import SequentialLoop


def _interleaved_cpu_per_chunk(runs, repeats=5) -> list[float]:
    """Median CPU µs per chunk of each (peer, sections), measured in turns so that a busy
    machine weighs on every contender alike."""
    for peer, sections in runs:
        run_once(peer, sections)
    samples: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for i, (peer, sections) in enumerate(runs):
            result = run_once(peer, sections)
            assert check_complete(result, sections) == []
            samples[i].append(result.cpu_us_per_chunk)
    medians = [median(s) for s in samples]
    assert all(m is not None for m in medians)
    return medians  # type: ignore[return-value]


@pytest.fixture(scope="module")
def burst_url() -> Iterator[str]:
    with BurstUpstream() as upstream:
        yield upstream.base_url


@pytest.mark.parametrize("n", [1, 3, 9])
def test_engine_cpu_per_chunk_is_near_raw_lines(benchmark, burst_url, n):
    sections = sim_sections(n, BURST, tag=f"cpu{n}")
    with (
        EnginePeer(burst_url) as engine,
        SequentialLoop.reference(burst_url, raw=False) as typed,
        SequentialLoop.reference(burst_url, raw=True) as raw,
    ):
        typed_us, raw_us, engine_us = _interleaved_cpu_per_chunk(
            [(typed, sections[:1]), (raw, sections[:1]), (engine, sections)]
        )
        benchmark.extra_info.update(
            engine_us_per_chunk=engine_us, sdk_typed_us=typed_us, sdk_raw_us=raw_us
        )
        benchmark.pedantic(run_once, args=(engine, sections), rounds=ROUNDS, iterations=1)
    # Measured: engine 0.9-1.5x raw lines, typed chunks 8-15x raw lines. Generous bounds.
    assert engine_us < 0.5 * typed_us, (engine_us, typed_us, raw_us)
    assert engine_us < 3.0 * raw_us, (engine_us, typed_us, raw_us)


class _ResponsesEngine(EnginePeer):
    """The engine with every section on the Responses API instead of chat completions."""

    name = "engine_responses"

    def prepare(self, sections):
        return [replace(config, api="responses") for config in super().prepare(sections)]


def test_responses_api_costs_the_same_cpu_per_chunk_as_chat_completions(benchmark, burst_url):
    """The Responses-API parser reads raw lines with the C JSON scanner like the chat parser:
    CPU per chunk within 20 % of a chat-completions section, measured in turns, same run."""
    sections = sim_sections(3, BURST, tag="cpu-responses")
    with EnginePeer(burst_url) as chat, _ResponsesEngine(burst_url) as responses:
        chat_us, responses_us = _interleaved_cpu_per_chunk(
            [(chat, sections), (responses, sections)], repeats=7
        )
        benchmark.extra_info.update(chat_us_per_chunk=chat_us, responses_us_per_chunk=responses_us)
        benchmark.pedantic(run_once, args=(responses, sections), rounds=ROUNDS, iterations=1)
    assert responses_us < 1.2 * chat_us, (responses_us, chat_us)
