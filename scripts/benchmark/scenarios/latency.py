"""First event and first content chunk: through the engine alone, and through the service.

The engine's figures are set against the simulator's fixed time to first token, and split
with the simulator's own records into the request's way there and the token's way back. The
service's come from the load test's client against ``GunicornProcess``, one request at a time,
and are set against the same records.
"""

from __future__ import annotations

import asyncio
from typing import Any

from load_test.client import ROUTES, run_load
from load_test.processes import spawn
from load_test.report import summarize
from load_test.sweep import Level, run_level
from peers.engine import EnginePeer
from peers.harness import percentile, run_once, sim_sections

from ..session import Bench, ms

__all__ = ["service", "ttfb"]


def stats(values: list[float | None]) -> dict[str, float | None]:
    """p50, p95, p99 and max in ms of the values present (None: not measured)."""
    present = [v for v in values if v is not None]
    return {
        "p50_ms": ms(percentile(present, 0.5)),
        "p95_ms": ms(percentile(present, 0.95)),
        "p99_ms": ms(percentile(present, 0.99)),
        "max_ms": ms(max(present) if present else None),
    }


def ttfb(bench: Bench) -> dict[str, Any]:
    p = bench.profile
    engine = bench.peer(EnginePeer(bench.url))
    bench.warm(engine)
    ttft_s = p.ttfb["ttft_ms"] / 1000
    first_event, first_chunk, overhead, ours, request_path, delivery = [], [], [], [], [], []
    for i in range(p.ttfb_runs):
        tag = f"ttfb{i}"
        sections = sim_sections(3, p.ttfb, tag=tag, seed=5000 + 10 * i)
        bench.sim.reset()
        result = bench.complete(run_once(engine, sections), sections)
        trace = result.trace
        first_event.append(trace.first_event - trace.t0 if trace.first_event else None)
        fc = trace.first_chunk_s
        first_chunk.append(fc)
        overhead.append(fc - ttft_s if fc is not None else None)
        # Which section delivered first, and what the simulator says about it.
        name, sec = min(
            ((n, s) for n, s in trace.sections.items() if s.first_chunk is not None),
            key=lambda item: item[1].first_chunk or 0.0,
        )
        record = bench.record(f"{tag}:{name}")
        if record and record.get("t_first_token") and sec.first_chunk is not None:
            client_first_wall = trace.t0_wall + (sec.first_chunk - trace.t0)
            slip = record["t_first_token"] - record["t_start"] - ttft_s
            request_path.append(record["t_start"] - trace.t0_wall)
            delivery.append(client_first_wall - record["t_first_token"])
            if fc is not None:
                ours.append(fc - ttft_s - slip)

    return {
        "profile": p.ttfb,
        "sections": 3,
        "runs": p.ttfb_runs,
        "first_event": stats(first_event),
        "first_chunk": stats(first_chunk),
        "first_chunk_overhead": stats(overhead),
        "first_chunk_overhead_ours": stats(list(ours)),
        "request_to_simulator": stats(list(request_path)),
        "simulator_to_consumer": stats(list(delivery)),
    }


def service(bench: Bench) -> dict[str, Any]:
    """The same, through the service under gunicorn, one HTTP client at a time.

    The first chunk's overhead is also given less the upstream's own lateness, as for the
    engine. The route's three sections carry the same controls, so the simulator's records do
    not say which section a chunk came from; each request is set against the records that
    started during it and sent their first token before the client saw one, and the quickest
    of those is taken as the upstream's time to first token. That over-states the overhead
    when another section delivered first, never under-states it.
    """
    p = bench.profile
    upstream = {"ttft_ms": p.service_ttft_ms, "itl_ms": 10, "tokens": 10, "jitter": 0}
    path, payload = ROUTES["dream"]
    with spawn(profile=upstream) as spawned:
        level = Level(
            url=spawned.url,
            path=path,
            payload=payload,
            requests=4,
            duration=None,
            timeout=60,
            progress=False,
            upstream_ttft_ms=upstream["ttft_ms"],
        )
        # Warm: the first request of a worker builds its HTTP client and connection.
        run_level(level, 1, spawned)
        spawned.simulator.reset()
        totals, wall, cpu = asyncio.run(
            run_load(
                spawned.url,
                path,
                payload,
                concurrent=1,
                requests=p.service_requests,
                duration=None,
                timeout=60,
                progress=False,
            )
        )
        records = spawned.simulator.stats()["requests"]
    summary = summarize(totals, wall, cpu, upstream_ttft_ms=upstream["ttft_ms"], concurrent=1)
    problems = summary["lost_chunks"] + summary["duplicate_chunks"] + summary["missing_done"]
    if problems:
        bench.problems.append(f"service: {problems} lost/duplicated chunks or missing done")
    ours: list[float | None] = []
    request_path: list[float | None] = []
    for result in totals.results:
        if result.first_chunk_s is None or result.total_s is None:
            continue
        start, end = result.started_at, result.started_at + result.total_s
        first_chunk_at = start + result.first_chunk_s
        mine = [r for r in records if r.get("t_first_token") and start <= r["t_start"] <= end]
        if not mine:
            continue
        request_path.append(min(r["t_start"] for r in mine) - start)
        delivered = [r for r in mine if r["t_first_token"] <= first_chunk_at]
        if delivered:
            upstream_ttft = min(r["t_first_token"] - r["t_start"] for r in delivered)
            ours.append(result.first_chunk_s - upstream_ttft)

    return {
        "profile": upstream,
        "route": "dream",
        "requests": summary["requests"],
        "first_byte": summary["first_byte"],
        "first_event": summary["first_event"],
        "first_chunk_overhead": summary["first_chunk_overhead"],
        "first_chunk_overhead_ours": stats(ours),
        "request_to_simulator": stats(request_path),
        "errors": summary["errors"],
    }
