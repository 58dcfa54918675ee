"""One load level; a sweep runs several, one after another, on the same server.

Each level is measured the same way: the upstream's counters reset, the CPU of every party
read before and after, the load run, the results summarised. CPU per delivered chunk is
reported beside the latencies because, unlike latency, other load on the machine barely moves
it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .client import run_load
from .processes import Spawned, cpu_snapshot, cpu_usage
from .report import summarize

__all__ = ["Level", "broken", "run_level"]


@dataclass(frozen=True, kw_only=True)
class Level:
    """What a level runs: the target, the request, how much of it, and how."""

    url: str
    path: str
    payload: dict[str, Any]
    requests: int | None
    duration: float | None
    timeout: float
    keepalive: bool = True
    #: The clients' first requests spread evenly over this many seconds.
    ramp_s: float = 0.0
    progress: bool = True
    upstream_ttft_ms: float | None = None


def run_level(level: Level, concurrent: int, spawned: Spawned | None) -> dict[str, Any]:
    """Run one level against ``level.url``; its summary with where the CPU went."""
    if spawned is not None:
        spawned.check_alive()
        spawned.simulator.reset()
    before = cpu_snapshot(spawned)
    totals, wall, cpu = asyncio.run(
        run_load(
            level.url,
            level.path,
            level.payload,
            concurrent=concurrent,
            requests=level.requests,
            duration=level.duration,
            timeout=level.timeout,
            keepalive=level.keepalive,
            ramp_s=level.ramp_s,
            progress=level.progress,
        )
    )
    summary = summarize(
        totals, wall, cpu, upstream_ttft_ms=level.upstream_ttft_ms, concurrent=concurrent
    )
    if spawned is not None:
        summary["server_alive"] = spawned.server.returncode is None
    usage = cpu_usage(before, cpu_snapshot(spawned), wall, cpu)
    summary["cpu_percent_of_one_core"] = usage
    if summary["chunks"]:
        summary["cpu_us_per_chunk"] = {
            party: round(usage[party] / 100 * wall * 1e6 / summary["chunks"], 1)
            for party in ("server", "simulator", "client")
            if party in usage
        }
    return summary


def broken(summaries: Sequence[dict[str, Any]]) -> bool:
    """Whether any level lost, repeated or mis-ended a stream (the exit status is 1 then)."""
    return any(
        s["lost_chunks"]
        or s["duplicate_chunks"]
        or s["missing_done"]
        or s["events_after_done"]
        or s["protocol_violations"]
        for s in summaries
    )
