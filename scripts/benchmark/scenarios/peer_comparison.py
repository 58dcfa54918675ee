"""The peers a user would otherwise pick, on the same simulator: a sequential loop, LangChain's
``RunnableParallel.stream``, an asyncio ``AsyncOpenAI`` fan-out, and the engine.

For N = 3 and 9: wall time against the ideal, first chunk, CPU per chunk at the model's pace;
and what each delivers when one of three sections fails.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from peers.asyncio_fanout import AsyncioFanout
from peers.base import Peer
from peers.engine import EnginePeer
from peers.harness import run_once, sim_sections
from peers.sequential import SequentialLoop

from ..session import Bench, medians

__all__ = ["peers"]


def peers(bench: Bench) -> dict[str, Any]:
    p = bench.profile
    contenders: list[Peer] = [
        bench.peer(SequentialLoop(bench.url)),
        bench.peer(EnginePeer(bench.url)),
        bench.peer(AsyncioFanout(bench.url)),
    ]
    if bench.langchain:
        from peers.langchain_parallel import LangChainParallel

        contenders.append(bench.peer(LangChainParallel(bench.url)))
    bench.warm(*contenders)
    out: dict[str, Any] = {
        "profile": p.section,
        "labels": {peer.name: peer.label for peer in contenders},
        "rows": {},
    }
    for n in (3, 9):
        sections = sim_sections(n, p.section, tag=f"peers{n}")
        reps: dict[str, list[dict[str, float | None]]] = {c.name: [] for c in contenders}
        for _ in range(p.repeats):
            results = {c.name: bench.complete(run_once(c, sections), sections) for c in contenders}
            ideal = max(results["sequential"].trace.section_walls().values())
            for name, result in results.items():
                reps[name].append(
                    {
                        "wall_s": result.wall_s,
                        "over_ideal": result.wall_s / ideal,
                        "first_chunk_s": result.trace.first_chunk_s,
                        "cpu_us_per_chunk_paced": result.cpu_us_per_chunk,
                    }
                )
        out["rows"][f"n{n}"] = {name: medians(values) for name, values in reps.items()}
    out["one_section_fails"] = _failure(bench, contenders)
    return out


def _failure(bench: Bench, contenders: Sequence[Peer]) -> dict[str, Any]:
    """Three sections, the middle one answered with HTTP 500: what does each peer deliver?"""
    p = bench.profile
    sections = sim_sections(3, p.section, tag="fail", overrides={1: {"status": 500}})
    out = {}
    for peer in contenders:
        bench.sim.reset()
        result = run_once(peer, sections)
        time.sleep(0.05 + 2 * p.section["ttft_ms"] / 1000)
        upstream = {
            r["tag"].split(":", 1)[1]: r["outcome"]
            for r in bench.sim.stats()["requests"]
            if r.get("tag", "").startswith("fail:")
        }
        trace = result.trace
        out[peer.name] = {
            "aborted": result.aborted,
            "sections_completed": len(trace.completed()),
            "sections": len(sections),
            "chunks_delivered": {n: s.chunks for n, s in trace.sections.items()},
            "errors": {n: s.error for n, s in trace.sections.items() if s.error},
            "upstream_outcomes": upstream,
        }
    return out
