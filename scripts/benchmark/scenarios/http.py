"""The HTTP/2 pool against the HTTP/1.1 pool: TCP connections and wall time for 9 sections,
and what cancelling costs (the generator closed until the simulator saw every stream go).
"""

from __future__ import annotations

import time
from typing import Any

from peers.engine import EnginePeer
from peers.harness import median, run_once, sim_sections

from ..session import Bench, closing, ms, rounded

__all__ = ["http"]


def http(bench: Bench) -> dict[str, Any]:
    p = bench.profile
    sections = sim_sections(9, p.section, tag="http")
    out: dict[str, Any] = {"profile": p.section, "sections": 9}
    for label, http2 in (("http2", True), ("http1", False)):
        connections, max_streams, cold, warm = [], [], [], []
        for _ in range(p.repeats):
            with closing(EnginePeer(bench.url, http2=http2)) as engine:
                bench.sim.reset()
                cold.append(bench.complete(run_once(engine, sections), sections).wall_s)
                stats = bench.sim.stats(records=False)
                connections.append(stats["connections_accepted"])
                max_streams.append(max(c["max_active"] for c in stats["connections"]))
                warm.append(bench.complete(run_once(engine, sections), sections).wall_s)
        out[label] = {
            "tcp_connections": median(connections),
            "max_streams_per_connection": median(max_streams),
            "cold_wall_s": rounded(median(cold), 4),
            "warm_wall_s": rounded(median(warm), 4),
            "cancel": _cancel(bench, http2),
        }
    return out


def _cancel(bench: Bench, http2: bool) -> dict[str, Any]:
    """Close a run of 9 live sections; time until the simulator saw all 9 disconnect."""
    p = bench.profile
    controls = {"ttft_ms": 20, "itl_ms": 10, "tokens": p.cancel_tokens, "jitter": 0}
    latencies, close_calls, leftovers = [], [], []
    with closing(EnginePeer(bench.url, http2=http2)) as engine:
        bench.warm(engine)
        for i in range(p.repeats):
            sections = sim_sections(9, controls, tag=f"cancel{i}")
            bench.sim.reset()
            events = engine.open_live(sections)
            t_close = time.time()
            events.close()
            close_calls.append(time.time() - t_close)
            want = len(sections)
            stats = bench.sim.wait_for_stats(
                lambda s, want=want: len(s["disconnects"]) >= want, timeout=5.0
            )
            latencies.append(max(d["t"] for d in stats["disconnects"]) - t_close)
            leftovers.append(stats["streams_active"])
    return {
        "sections": 9,
        "disconnect_all_ms_p50": ms(median(latencies)),
        "disconnect_all_ms_max": ms(max(latencies)),
        "close_call_ms_p50": ms(median(close_calls)),
        "streams_left_active": max(leftovers),
    }
