"""CPU per chunk: the engine, the SDK's own stream and the peers on the same chunks.

Chunks come from the burst upstream (``scripts/peers/burst_upstream.py``), which writes a whole
completion at once, so what is measured is parsing, merging and encoding; and via the
simulator at ``itl_ms=0``, which includes the wake-ups of a client fed as fast as the
simulator writes.
"""

from __future__ import annotations

from typing import Any

from peers.asyncio_fanout import AsyncioFanout
from peers.base import Peer
from peers.engine import EnginePeer
from peers.harness import median, run_once, sim_sections, trace_overhead_us
from peers.sequential import SequentialLoop

from ..session import Bench, rounded

__all__ = ["merge_cost"]


def merge_cost(bench: Bench) -> dict[str, Any]:
    """CPU per chunk when chunks arrive in bursts (the burst upstream), and via the simulator.

    The burst upstream writes a whole completion at once, so what is measured is parsing,
    merging and encoding. Via the simulator at ``itl_ms=0`` the chunks come as fast as the
    simulator writes them, which is slower than the client parses: the client is woken
    every few chunks and those rows include the wake-ups (more on a busy machine).
    """
    from peers.burst_upstream import BurstUpstream

    p = bench.profile
    controls = {"ttft_ms": 0, "itl_ms": 0, "tokens": p.merge_tokens, "jitter": 0}
    repeats = max(3, p.repeats)
    with BurstUpstream() as burst:
        rows = _cpu_rows(bench, burst.base_url, controls, repeats, everyone=True)
    via_simulator = _cpu_rows(bench, bench.url, controls, repeats, everyone=False)
    raw = rows["sdk_raw"]["cpu_us_per_chunk"]
    for name, row in rows.items():
        if name.startswith("engine") and row["cpu_us_per_chunk"] is not None and raw:
            row["beyond_raw_us"] = rounded(row["cpu_us_per_chunk"] - raw, 2)
    return {
        "profile": controls,
        "upstream": "burst (scripts/peers/burst_upstream.py)",
        "repeats": repeats,
        "trace_call_us": rounded(trace_overhead_us(), 3),
        "rows": rows,
        "via_simulator": via_simulator,
    }


def _cpu_rows(
    bench: Bench, url: str, controls: dict[str, Any], repeats: int, *, everyone: bool
) -> dict[str, dict[str, Any]]:
    peers: list[Peer] = []

    def own(peer: Peer) -> Peer:
        peers.append(peer)
        return peer

    contenders: list[tuple[str, Peer, int]] = [
        ("sdk_raw", own(SequentialLoop.reference(url, raw=True)), 1)
    ]
    engine = own(EnginePeer(url))
    engine_sse = own(EnginePeer(url, sse=True))
    if everyone:
        contenders.insert(0, ("sdk_typed", own(SequentialLoop.reference(url, raw=False)), 1))
        contenders += [(f"engine_n{n}", engine, n) for n in (1, 3, 9)]
        contenders += [(f"engine_sse_n{n}", engine_sse, n) for n in (1, 3, 9)]
        contenders += [
            ("sequential_n3", own(SequentialLoop(url)), 3),
            ("asyncio_n3", own(AsyncioFanout(url)), 3),
        ]
        if bench.langchain:
            from peers.langchain_parallel import LangChainParallel

            contenders.append(("langchain_n3", own(LangChainParallel(url)), 3))
    else:
        contenders += [("engine_n9", engine, 9), ("engine_sse_n9", engine_sse, 9)]
    try:
        for peer in peers:
            run_once(peer, sim_sections(2, controls, tag="merge-warm"))
        samples: dict[str, list[float]] = {name: [] for name, _, _ in contenders}
        walls: dict[str, list[float]] = {name: [] for name, _, _ in contenders}
        for _ in range(repeats):
            for name, peer, n in contenders:
                sections = sim_sections(n, controls, tag=f"merge-{name}")
                result = run_once(peer, sections)
                if not name.startswith("engine_sse"):
                    bench.complete(result, sections)
                if result.cpu_us_per_chunk is not None:
                    samples[name].append(result.cpu_us_per_chunk)
                walls[name].append(result.wall_s)
    finally:
        for peer in peers:
            peer.close()
    return {
        name: {
            "sections": n,
            "chunks": n * controls["tokens"],
            "cpu_us_per_chunk": rounded(median(samples[name]), 2),
            "min_cpu_us_per_chunk": rounded(min(samples[name]), 2) if samples[name] else None,
            "wall_us_per_chunk": rounded(median(walls[name]) * 1e6 / (n * controls["tokens"]), 1),
        }
        for name, _, n in contenders
    }
