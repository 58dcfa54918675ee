"""The peers on the same simulator: each delivers everything; what one failing section does."""

from __future__ import annotations

import pytest
from bench_support import SECTION, fastest_run
from peers.asyncio_fanout import AsyncioFanout
from peers.harness import run_once, sim_sections

from backend_ai.simulator import SimulatorProcess


def _failing(tag: str):
    return sim_sections(3, SECTION, tag=tag, overrides={1: {"status": 500}})


def test_asyncio_fanout_delivers_every_section(benchmark, simulator: SimulatorProcess, sequential):
    sections = sim_sections(3, SECTION, tag="asyncio")
    with AsyncioFanout(simulator.base_url) as peer:
        run_once(peer, sections)
        result = fastest_run(benchmark, peer, sections)
    ideal = max(run_once(sequential, sections).trace.section_walls().values())
    assert result.wall_s / ideal < 1.6


@pytest.mark.parametrize("peer_name", ["engine", "asyncio", "sequential"])
def test_one_failing_section_leaves_the_others_whole(simulator, engine, sequential, peer_name):
    sections = _failing(f"fail-{peer_name}")
    if peer_name == "asyncio":
        with AsyncioFanout(simulator.base_url) as peer:
            result = run_once(peer, sections)
    else:
        result = run_once(engine if peer_name == "engine" else sequential, sections)
    assert result.aborted is None
    trace = result.trace
    assert trace.sections["section-2"].error is not None
    assert sorted(trace.completed()) == ["section-1", "section-3"]
    for name in ("section-1", "section-3"):
        assert trace.sections[name].chunks == SECTION["tokens"]


def test_langchain_runnable_parallel_streams_every_section(benchmark, simulator, sequential):
    pytest.importorskip("langchain_openai")
    from peers.langchain_parallel import LangChainParallel

    sections = sim_sections(3, SECTION, tag="langchain")
    peer = LangChainParallel(simulator.base_url)
    run_once(peer, sections)
    result = fastest_run(benchmark, peer, sections)
    ideal = max(run_once(sequential, sections).trace.section_walls().values())
    assert result.wall_s / ideal < 1.6


def test_langchain_aborts_the_whole_stream_when_one_section_fails(simulator):
    pytest.importorskip("langchain_openai")
    from peers.langchain_parallel import LangChainParallel

    sections = _failing("langchain-fail")
    result = run_once(LangChainParallel(simulator.base_url), sections)
    # The 500 of one branch is raised out of RunnableParallel.stream: the healthy sections'
    # remaining chunks never reach the caller.
    assert result.aborted is not None
    assert "500" in result.aborted
    delivered = [result.trace.sections[n].chunks for n in ("section-1", "section-3")]
    assert sum(delivered) < 2 * SECTION["tokens"]
