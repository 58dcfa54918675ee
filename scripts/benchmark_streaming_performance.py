#!/usr/bin/env python
"""Side-by-side performance of backend_ai's engine and its peers, on one seeded simulator.

Every figure comes from one run of this script against one simulator child process with fixed,
seeded per-section profiles, so the comparisons are between things measured minutes apart on the
same machine; ratios are medians over ``--repeats`` repeats (each repeat runs every contender
once, in turn). What it measures:

1. fan-out: N = 1, 3, 6, 9 sections, sequential loop vs ParallelStreamManager vs the ideal (the
   slowest single section, measured alone in the same repeat); uneven sections (one slow,
   several fast) in ``interleaved`` and ``ordered`` modes;
2. first event and first content chunk through the engine vs the simulator's TTFT, and first
   byte / first chunk through ``backend-ai serve`` under gunicorn (the load-test client);
3. CPU per chunk with chunks arriving in bursts (``scripts/peers/burst_upstream.py``) and via
   the simulator at ``itl_ms=0``: the engine for 1, 3, 9 sections, events and SSE frames,
   against the SDK's typed stream and its raw lines on the same client, and the peers;
4. HTTP/2 vs HTTP/1.1 pool: TCP connections and wall time for 9 sections; cancellation cost
   (generator closed -> every upstream stream seen disconnected by the simulator);
5. peers: sequential loop, LangChain ``RunnableParallel.stream``, asyncio ``AsyncOpenAI``
   fan-out: wall ÷ ideal, first chunk, CPU per chunk, and what one failing section does.

Output: markdown tables on stdout (and ``--markdown FILE``), everything as JSON (``--output``,
default ``docs/benchmarks/latest.json``; ``--quick`` defaults to ``docs/benchmarks/quick.json``)
and the chunk timeline picture (``--timeline``, default ``docs/timeline.png``; needs matplotlib;
``--quick`` draws it only when ``--timeline`` is given).

    python scripts/benchmark_streaming_performance.py            # full run, a few minutes
    python scripts/benchmark_streaming_performance.py --quick    # small profiles, < 1 minute
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

from peers.asyncio_fanout import AsyncioFanout  # noqa: E402
from peers.base import Peer, Section  # noqa: E402
from peers.engine import EnginePeer  # noqa: E402
from peers.harness import (  # noqa: E402
    RunResult,
    check_complete,
    median,
    percentile,
    run_once,
    sim_sections,
    trace_overhead_us,
)
from peers.sequential import SequentialLoop  # noqa: E402

from backend_ai.simulator import SimulatorProcess, run_simulator  # noqa: E402

logger = logging.getLogger("benchmark")

HAVE_LANGCHAIN = importlib.util.find_spec("langchain_openai") is not None
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None

DREAM = ("summary", "symbols", "recommendations")


@dataclass(frozen=True, kw_only=True)
class Profile:
    """Sizes of one benchmark run; ``quick`` and ``full`` are the two shipped ones."""

    name: str
    repeats: int
    fanout_ns: tuple[int, ...]
    #: Per-section timing of the fan-out and peer runs (each section gets its own seed).
    section: dict[str, Any]
    #: Uneven run: one slow section first, then ``uneven_fast`` fast ones.
    slow: dict[str, Any]
    fast: dict[str, Any]
    uneven_fast: int
    ttfb: dict[str, Any]
    ttfb_runs: int
    merge_tokens: int
    cancel_tokens: int
    service_ttft_ms: int
    service_requests: int


PROFILES = {
    "full": Profile(
        name="full",
        repeats=5,
        fanout_ns=(1, 3, 6, 9),
        section={"ttft_ms": 300, "itl_ms": 10, "tokens": 40, "jitter": 0.2},
        slow={"ttft_ms": 300, "itl_ms": 10, "tokens": 80, "jitter": 0.2},
        fast={"ttft_ms": 100, "itl_ms": 10, "tokens": 20, "jitter": 0.2},
        uneven_fast=3,
        ttfb={"ttft_ms": 50, "itl_ms": 2, "tokens": 5, "jitter": 0},
        ttfb_runs=40,
        merge_tokens=2000,
        cancel_tokens=2000,
        service_ttft_ms=300,
        service_requests=40,
    ),
    "quick": Profile(
        name="quick",
        repeats=2,
        fanout_ns=(1, 3, 6, 9),
        section={"ttft_ms": 60, "itl_ms": 4, "tokens": 20, "jitter": 0.2},
        slow={"ttft_ms": 80, "itl_ms": 4, "tokens": 40, "jitter": 0.2},
        fast={"ttft_ms": 25, "itl_ms": 4, "tokens": 10, "jitter": 0.2},
        uneven_fast=3,
        ttfb={"ttft_ms": 30, "itl_ms": 2, "tokens": 5, "jitter": 0},
        ttfb_runs=12,
        merge_tokens=400,
        cancel_tokens=500,
        service_ttft_ms=100,
        service_requests=10,
    ),
}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


class Bench:
    """One benchmark session: a simulator, the contenders, the results."""

    def __init__(self, sim: SimulatorProcess, profile: Profile, *, langchain: bool) -> None:
        self.sim = sim
        self.profile = profile
        self.url = sim.base_url
        self.langchain = langchain and HAVE_LANGCHAIN
        self.problems: list[str] = []
        self._peers: list[Peer] = []

    def peer(self, peer: Peer) -> Peer:
        self._peers.append(peer)
        return peer

    def close(self) -> None:
        for peer in self._peers:
            peer.close()

    def complete(self, result: RunResult, sections: Sequence[Section]) -> RunResult:
        """Record (not raise) any loss: a benchmark figure from a broken run is reported."""
        self.problems.extend(check_complete(result, sections))
        return result

    def warm(self, *peers: Peer) -> None:
        """One untimed run each: imports, connections and lazy SDK resources come first."""
        sections = sim_sections(2, {**self.profile.fast, "jitter": 0}, tag="warmup")
        for peer in peers:
            run_once(peer, sections)

    # -- 1. fan-out ------------------------------------------------------------------------
    def fanout(self) -> dict[str, Any]:
        p = self.profile
        sequential = self.peer(SequentialLoop(self.url))
        engine = self.peer(EnginePeer(self.url))
        self.warm(sequential, engine)
        rows = []
        for n in p.fanout_ns:
            sections = sim_sections(n, p.section, tag=f"fanout{n}")
            reps = []
            for _ in range(p.repeats):
                seq = self.complete(run_once(sequential, sections), sections)
                par = self.complete(run_once(engine, sections), sections)
                ideal = max(seq.trace.section_walls().values())
                reps.append(
                    {
                        "sequential_s": seq.wall_s,
                        "parallel_s": par.wall_s,
                        "ideal_s": ideal,
                        "parallel_over_ideal": par.wall_s / ideal,
                        "sequential_over_parallel": seq.wall_s / par.wall_s,
                        "parallel_first_chunk_s": par.trace.first_chunk_s,
                        "sequential_first_chunk_s": seq.trace.first_chunk_s,
                        "parallel_cpu_us_per_chunk": par.cpu_us_per_chunk,
                        "sequential_cpu_us_per_chunk": seq.cpu_us_per_chunk,
                    }
                )
            rows.append({"n": n, **_medians(reps), "repeats": len(reps)})
        uneven = self._uneven(sequential)
        return {"profile": p.section, "rows": rows, "uneven": uneven}

    def _uneven(self, sequential: Peer) -> dict[str, Any]:
        p = self.profile
        n = 1 + p.uneven_fast
        base = sim_sections(n, p.fast, tag="uneven")
        slow_controls = {**p.slow, "seed": base[0].sim["seed"], "tag": "uneven:slow"}
        sections = [
            Section("slow", base[0].prompt, slow_controls),
            *(Section(f"fast-{i}", s.prompt, s.sim) for i, s in enumerate(base[1:], 1)),
        ]
        engines = {
            mode: self.peer(EnginePeer(self.url, mode=mode)) for mode in ("interleaved", "ordered")
        }
        self.warm(*engines.values())
        out: dict[str, Any] = {"slow": p.slow, "fast": p.fast, "fast_sections": p.uneven_fast}
        reps: dict[str, list[dict[str, float | None]]] = {mode: [] for mode in engines}
        for _ in range(p.repeats):
            seq = self.complete(run_once(sequential, sections), sections)
            ideal = max(seq.trace.section_walls().values())
            for mode, engine in engines.items():
                par = self.complete(run_once(engine, sections), sections)
                fast = [par.trace.sections[s.name] for s in sections[1:]]
                reps[mode].append(
                    {
                        "wall_s": par.wall_s,
                        "ideal_s": ideal,
                        "parallel_over_ideal": par.wall_s / ideal,
                        "sequential_over_parallel": seq.wall_s / par.wall_s,
                        "first_chunk_s": par.trace.first_chunk_s,
                        "slow_first_chunk_s": _rel(par, "slow"),
                        "fast_first_chunk_s": min(
                            f.first_chunk - par.trace.t0 for f in fast if f.first_chunk
                        ),
                        "fast_all_delivered_s": max(
                            f.last_chunk - par.trace.t0 for f in fast if f.last_chunk
                        ),
                    }
                )
        for mode, values in reps.items():
            out[mode] = _medians(values)
        return out

    # -- 2. first event / first chunk --------------------------------------------------------
    def ttfb(self) -> dict[str, Any]:
        p = self.profile
        engine = self.peer(EnginePeer(self.url))
        self.warm(engine)
        ttft_s = p.ttfb["ttft_ms"] / 1000
        first_event, first_chunk, overhead, ours, request_path, delivery = [], [], [], [], [], []
        for i in range(p.ttfb_runs):
            tag = f"ttfb{i}"
            sections = sim_sections(3, p.ttfb, tag=tag, seed=5000 + 10 * i)
            self.sim.reset()
            result = self.complete(run_once(engine, sections), sections)
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
            record = self._record(f"{tag}:{name}")
            if record and record.get("t_first_token") and sec.first_chunk is not None:
                client_first_wall = trace.t0_wall + (sec.first_chunk - trace.t0)
                slip = record["t_first_token"] - record["t_start"] - ttft_s
                request_path.append(record["t_start"] - trace.t0_wall)
                delivery.append(client_first_wall - record["t_first_token"])
                if fc is not None:
                    ours.append(fc - ttft_s - slip)

        def stats(values: list[float | None]) -> dict[str, float | None]:
            present = [v for v in values if v is not None]
            return {
                "p50_ms": _ms(percentile(present, 0.5)),
                "p95_ms": _ms(percentile(present, 0.95)),
                "max_ms": _ms(max(present) if present else None),
            }

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

    def _record(self, tag: str) -> dict[str, Any] | None:
        for record in self.sim.stats()["requests"]:
            if record.get("tag") == tag:
                return dict(record)
        return None

    def service(self) -> dict[str, Any]:
        """The same, through ``backend-ai serve`` under gunicorn, one HTTP client at a time."""
        import asyncio

        import load_test_streaming as load

        p = self.profile
        upstream = {"ttft_ms": p.service_ttft_ms, "itl_ms": 10, "tokens": 10, "jitter": 0}
        path, payload = load.ROUTES["dream"]
        with load.spawn(profile=upstream) as spawned:
            # Warm: the first request of a worker builds its HTTP client and connection.
            asyncio.run(
                load.run_load(
                    spawned.url,
                    path,
                    payload,
                    concurrent=1,
                    requests=4,
                    duration=None,
                    timeout=60,
                    progress=False,
                )
            )
            totals, wall, cpu = asyncio.run(
                load.run_load(
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
        summary = load.summarize(
            totals, wall, cpu, upstream_ttft_ms=upstream["ttft_ms"], concurrent=1
        )
        problems = summary["lost_chunks"] + summary["duplicate_chunks"] + summary["missing_done"]
        if problems:
            self.problems.append(f"service: {problems} lost/duplicated chunks or missing done")
        return {
            "profile": upstream,
            "route": "dream",
            "requests": summary["requests"],
            "first_byte": summary["first_byte"],
            "first_event": summary["first_event"],
            "first_chunk_overhead": summary["first_chunk_overhead"],
            "errors": summary["errors"],
        }

    # -- 3. CPU per chunk ----------------------------------------------------------------------
    def merge_cost(self) -> dict[str, Any]:
        """CPU per chunk when chunks arrive in bursts (the burst upstream), and via the simulator.

        The burst upstream writes a whole completion at once, so what is measured is parsing,
        merging and encoding. Via the simulator at ``itl_ms=0`` the chunks come as fast as the
        simulator writes them, which is slower than the client parses: the client is woken
        every few chunks and those rows include the wake-ups (more on a busy machine).
        """
        from peers.burst_upstream import BurstUpstream

        p = self.profile
        controls = {"ttft_ms": 0, "itl_ms": 0, "tokens": p.merge_tokens, "jitter": 0}
        repeats = max(3, p.repeats)
        with BurstUpstream() as burst:
            rows = self._cpu_rows(burst.base_url, controls, repeats, everyone=True)
        via_simulator = self._cpu_rows(self.url, controls, repeats, everyone=False)
        raw = rows["sdk_raw"]["cpu_us_per_chunk"]
        for name, row in rows.items():
            if name.startswith("engine") and row["cpu_us_per_chunk"] is not None and raw:
                row["beyond_raw_us"] = _r(row["cpu_us_per_chunk"] - raw, 2)
        return {
            "profile": controls,
            "upstream": "burst (scripts/peers/burst_upstream.py)",
            "repeats": repeats,
            "trace_call_us": _r(trace_overhead_us(), 3),
            "rows": rows,
            "via_simulator": via_simulator,
        }

    def _cpu_rows(
        self, url: str, controls: dict[str, Any], repeats: int, *, everyone: bool
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
            if self.langchain:
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
                        self.complete(result, sections)
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
                "cpu_us_per_chunk": _r(median(samples[name]), 2),
                "min_cpu_us_per_chunk": _r(min(samples[name]), 2) if samples[name] else None,
                "wall_us_per_chunk": _r(median(walls[name]) * 1e6 / (n * controls["tokens"]), 1),
            }
            for name, _, n in contenders
        }

    # -- 4. HTTP/2 vs HTTP/1.1, cancellation -------------------------------------------------
    def http(self) -> dict[str, Any]:
        p = self.profile
        sections = sim_sections(9, p.section, tag="http")
        out: dict[str, Any] = {"profile": p.section, "sections": 9}
        for label, http2 in (("http2", True), ("http1", False)):
            connections, max_streams, cold, warm = [], [], [], []
            for _ in range(p.repeats):
                with _closing(EnginePeer(self.url, http2=http2)) as engine:
                    self.sim.reset()
                    cold.append(self.complete(run_once(engine, sections), sections).wall_s)
                    stats = self.sim.stats(records=False)
                    connections.append(stats["connections_accepted"])
                    max_streams.append(max(c["max_active"] for c in stats["connections"]))
                    warm.append(self.complete(run_once(engine, sections), sections).wall_s)
            out[label] = {
                "tcp_connections": median(connections),
                "max_streams_per_connection": median(max_streams),
                "cold_wall_s": _r(median(cold), 4),
                "warm_wall_s": _r(median(warm), 4),
                "cancel": self._cancel(http2),
            }
        return out

    def _cancel(self, http2: bool) -> dict[str, Any]:
        """Close a run of 9 live sections; time until the simulator saw all 9 disconnect."""
        p = self.profile
        controls = {"ttft_ms": 20, "itl_ms": 10, "tokens": p.cancel_tokens, "jitter": 0}
        latencies, close_calls, leftovers = [], [], []
        with _closing(EnginePeer(self.url, http2=http2)) as engine:
            self.warm(engine)
            for i in range(p.repeats):
                sections = sim_sections(9, controls, tag=f"cancel{i}")
                self.sim.reset()
                events = engine.open_stream(sections)
                seen: set[str] = set()
                for event in events:
                    if event.type == "chunk":
                        seen.add(event.section)
                        if len(seen) == len(sections):
                            break
                t_close = time.time()
                events.close()
                close_calls.append(time.time() - t_close)
                want = len(sections)
                stats = self.sim.wait_for_stats(
                    lambda s, want=want: len(s["disconnects"]) >= want, timeout=5.0
                )
                latencies.append(max(d["t"] for d in stats["disconnects"]) - t_close)
                leftovers.append(stats["streams_active"])
        return {
            "sections": 9,
            "disconnect_all_ms_p50": _ms(median(latencies)),
            "disconnect_all_ms_max": _ms(max(latencies)),
            "close_call_ms_p50": _ms(median(close_calls)),
            "streams_left_active": max(leftovers),
        }

    # -- 5. peers --------------------------------------------------------------------------
    def peers(self) -> dict[str, Any]:
        p = self.profile
        contenders: list[Peer] = [
            self.peer(SequentialLoop(self.url)),
            self.peer(EnginePeer(self.url)),
            self.peer(AsyncioFanout(self.url)),
        ]
        if self.langchain:
            from peers.langchain_parallel import LangChainParallel

            contenders.append(self.peer(LangChainParallel(self.url)))
        self.warm(*contenders)
        out: dict[str, Any] = {
            "profile": p.section,
            "labels": {peer.name: peer.label for peer in contenders},
            "rows": {},
        }
        for n in (3, 9):
            sections = sim_sections(n, p.section, tag=f"peers{n}")
            reps: dict[str, list[dict[str, float | None]]] = {c.name: [] for c in contenders}
            for _ in range(p.repeats):
                results = {
                    c.name: self.complete(run_once(c, sections), sections) for c in contenders
                }
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
            out["rows"][f"n{n}"] = {name: _medians(values) for name, values in reps.items()}
        out["one_section_fails"] = self._failure(contenders)
        return out

    def _failure(self, contenders: Sequence[Peer]) -> dict[str, Any]:
        """Three sections, the middle one answered with HTTP 500: what does each peer deliver?"""
        p = self.profile
        sections = sim_sections(3, p.section, tag="fail", overrides={1: {"status": 500}})
        out = {}
        for peer in contenders:
            self.sim.reset()
            result = run_once(peer, sections)
            time.sleep(0.05 + 2 * p.section["ttft_ms"] / 1000)
            upstream = {
                r["tag"].split(":", 1)[1]: r["outcome"]
                for r in self.sim.stats()["requests"]
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

    # -- the timeline picture ------------------------------------------------------------------
    def timeline(self, path: Path) -> dict[str, Any]:
        p = self.profile
        sections = sim_sections(3, p.section, names=DREAM, tag="timeline")
        sequential = self.peer(SequentialLoop(self.url))
        engine = self.peer(EnginePeer(self.url))
        self.warm(sequential, engine)
        runs = {
            "sequential loop": run_once(sequential, sections, keep_times=True),
            "ParallelStreamManager": run_once(engine, sections, keep_times=True),
        }
        data = {
            label: {
                name: {
                    "requested_ms": _ms(s.started - r.trace.t0) if s.started is not None else None,
                    "chunk_ms": [_ms(t - r.trace.t0) for t in s.times],
                }
                for name, s in r.trace.sections.items()
            }
            for label, r in runs.items()
        }
        walls = {label: _ms(r.wall_s) for label, r in runs.items()}
        if HAVE_MATPLOTLIB:
            _plot_timeline(data, walls, p.section, path)
        return {"profile": p.section, "wall_ms": walls, "sections": data}


def _rel(result: RunResult, name: str) -> float | None:
    first = result.trace.sections[name].first_chunk
    return None if first is None else first - result.trace.t0


def _medians(rows: list[dict[str, float | None]]) -> dict[str, float | None]:
    keys = rows[0].keys() if rows else ()
    out: dict[str, float | None] = {}
    for key in keys:
        value = median(row[key] for row in rows)
        out[key] = _r(value, 4)
    return out


@contextlib.contextmanager
def _closing(peer: Peer) -> Iterator[Any]:
    try:
        yield peer
    finally:
        peer.close()


def _plot_timeline(
    data: dict[str, dict[str, dict[str, Any]]],
    walls: dict[str, float | None],
    profile: dict[str, Any],
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(data), 1, figsize=(9, 4.2), sharex=True)
    colors = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
    for ax, (label, sections) in zip(axes, data.items(), strict=True):
        names = list(sections)
        for row, name in enumerate(names):
            color = colors[row % len(colors)]
            times = [t for t in sections[name]["chunk_ms"] if t is not None]
            requested = sections[name]["requested_ms"]
            if requested is not None and times:
                # Waiting for the first token: from the section's request to its first chunk.
                ax.hlines(row, requested, times[0], color=color, lw=1, alpha=0.35, ls="--")
            ax.vlines(times, row - 0.35, row + 0.35, color=color, lw=0.8)
        ax.set_yticks(range(len(names)), names)
        ax.set_ylim(-0.6, len(names) - 0.4)
        ax.set_xlim(left=0)
        ax.invert_yaxis()
        ax.set_title(
            f"{label}: all sections done at {walls[label]:.0f} ms", fontsize=10, loc="left"
        )
        ax.grid(axis="x", alpha=0.3)
    axes[-1].set_xlabel(
        "ms since the request; tick: a chunk reaches the consumer; dashes: awaiting a first token"
    )
    fig.suptitle(
        "Chunk arrival per section, same seeded upstream "
        f"(TTFT {profile['ttft_ms']} ms, {profile['tokens']} tokens at {profile['itl_ms']} ms, "
        f"jitter {profile['jitter']})",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- reporting -------------------------------------------------------------------------------
def _f(value: Any, fmt: str = "{:.2f}") -> str:
    if value is None:
        return "–"
    return fmt.format(value)


def markdown(results: dict[str, Any]) -> str:
    out: list[str] = []
    add = out.append
    if "fanout" in results:
        fan = results["fanout"]
        add("### Fan-out: sequential vs ParallelStreamManager vs ideal (medians)\n")
        add(f"Per-section profile: `{json.dumps(fan['profile'])}`, each section its own seed.\n")
        add(
            "| N | ideal ms | parallel ms | sequential ms "
            "| parallel ÷ ideal | sequential ÷ parallel |"
        )
        add("|---|---|---|---|---|---|")
        for row in fan["rows"]:
            add(
                f"| {row['n']} | {_f(_ms(row['ideal_s']), '{:.0f}')} "
                f"| {_f(_ms(row['parallel_s']), '{:.0f}')} "
                f"| {_f(_ms(row['sequential_s']), '{:.0f}')} "
                f"| {_f(row['parallel_over_ideal'], '{:.3f}')} "
                f"| {_f(row['sequential_over_parallel'], '{:.2f}')} |"
            )
        un = fan["uneven"]
        add("")
        add(
            f"Uneven: one slow section first (`{json.dumps(un['slow'])}`), "
            f"{un['fast_sections']} fast ones (`{json.dumps(un['fast'])}`).\n"
        )
        add(
            "| mode | parallel ÷ ideal | sequential ÷ parallel | first chunk ms "
            "| fast sections: first chunk ms | fast sections: all delivered ms |"
        )
        add("|---|---|---|---|---|---|")
        for mode in ("interleaved", "ordered"):
            row = un[mode]
            add(
                f"| {mode} | {_f(row['parallel_over_ideal'], '{:.3f}')} "
                f"| {_f(row['sequential_over_parallel'])} "
                f"| {_f(_ms(row['first_chunk_s']), '{:.0f}')} "
                f"| {_f(_ms(row['fast_first_chunk_s']), '{:.0f}')} "
                f"| {_f(_ms(row['fast_all_delivered_s']), '{:.0f}')} |"
            )
        add("")
    if "ttfb" in results:
        tt = results["ttfb"]
        add("### First event and first content chunk, engine alone\n")
        add(
            f"{tt['runs']} runs of {tt['sections']} sections, upstream "
            f"`{json.dumps(tt['profile'])}` (TTFT fixed, no jitter).\n"
        )
        add("| measure | p50 ms | p95 ms | max ms |")
        add("|---|---|---|---|")
        labels = {
            "first_event": "first event (`start`) after `stream()`",
            "first_chunk": "first content chunk after `stream()`",
            "first_chunk_overhead": "first chunk − upstream TTFT",
            "first_chunk_overhead_ours": "same, less the simulator's own lateness",
            "request_to_simulator": "`stream()` → request reaches the simulator",
            "simulator_to_consumer": "simulator sends token → consumer has it",
        }
        for key, label in labels.items():
            s = tt[key]
            add(f"| {label} | {_f(s['p50_ms'])} | {_f(s['p95_ms'])} | {_f(s['max_ms'])} |")
        add("")
    if "service" in results:
        sv = results["service"]
        add("### Through the service (`backend-ai serve`, gunicorn), one client at a time\n")
        add(
            f"{sv['requests']} requests to `/dream/interpret-stream`, upstream "
            f"`{json.dumps(sv['profile'])}`.\n"
        )
        add("| measure, seen by the HTTP client | p50 ms | p95 ms | p99 ms |")
        add("|---|---|---|---|")
        for key, label in (
            ("first_byte", "first response byte"),
            ("first_event", "first SSE event (`start`)"),
            ("first_chunk_overhead", "first content chunk − upstream TTFT"),
        ):
            d = sv[key]
            add(f"| {label} | {_f(d['p50_ms'])} | {_f(d['p95_ms'])} | {_f(d['p99_ms'])} |")
        add("")
    if "merge_cost" in results:
        mc = results["merge_cost"]
        add("### CPU per chunk, chunks arriving in bursts (medians, this process only)\n")
        add(
            f"{mc['rows']['sdk_raw']['chunks']} chunks per section from the burst upstream; the "
            f"recording call every row pays costs {mc['trace_call_us']} µs per chunk.\n"
        )
        add("| contender | sections | chunks | CPU µs/chunk | beyond SDK raw lines µs |")
        add("|---|---|---|---|---|")
        for name, row in mc["rows"].items():
            add(
                f"| {name} | {row['sections']} | {row['chunks']} "
                f"| {_f(row['cpu_us_per_chunk'], '{:.1f}')} "
                f"| {_f(row.get('beyond_raw_us'), '{:+.1f}')} |"
            )
        add("")
        add("Via the simulator at `itl_ms=0` (paced by how fast it writes; includes wake-ups):\n")
        add("| contender | sections | CPU µs/chunk | wall µs/chunk |")
        add("|---|---|---|---|")
        for name, row in mc["via_simulator"].items():
            add(
                f"| {name} | {row['sections']} | {_f(row['cpu_us_per_chunk'], '{:.1f}')} "
                f"| {_f(row['wall_us_per_chunk'], '{:.1f}')} |"
            )
        add("")
    if "http" in results:
        ht = results["http"]
        add("### HTTP/2 vs HTTP/1.1 pool, 9 parallel sections (medians)\n")
        add(
            "| pool | TCP connections | max streams on one connection | cold wall ms "
            "| warm wall ms | cancel: all 9 upstream closed, p50 ms | max ms | close() ms |"
        )
        add("|---|---|---|---|---|---|---|---|")
        for label in ("http2", "http1"):
            row = ht[label]
            c = row["cancel"]
            add(
                f"| {label} | {_f(row['tcp_connections'], '{:.0f}')} "
                f"| {_f(row['max_streams_per_connection'], '{:.0f}')} "
                f"| {_f(_ms(row['cold_wall_s']), '{:.0f}')} "
                f"| {_f(_ms(row['warm_wall_s']), '{:.0f}')} "
                f"| {_f(c['disconnect_all_ms_p50'])} | {_f(c['disconnect_all_ms_max'])} "
                f"| {_f(c['close_call_ms_p50'])} |"
            )
        add("")
    if "peers" in results:
        pe = results["peers"]
        mc_rows = results.get("merge_cost", {}).get("rows", {})
        add("### Peers on the same simulator (medians)\n")
        add(
            "| peer | ÷ ideal N=3 | ÷ ideal N=9 | first chunk ms N=3 | CPU µs/chunk, burst, N=3 "
            "| CPU µs/chunk paced, N=9 | one section fails |"
        )
        add("|---|---|---|---|---|---|---|")
        merge_key = {
            "sequential": "sequential_n3",
            "engine": "engine_n3",
            "asyncio": "asyncio_n3",
            "langchain": "langchain_n3",
        }
        for name, label in pe["labels"].items():
            n3 = pe["rows"]["n3"][name]
            n9 = pe["rows"]["n9"][name]
            fail = pe["one_section_fails"][name]
            if fail["aborted"]:
                behaviour = f"whole stream aborted ({fail['aborted'].split(':')[0]})"
            else:
                behaviour = f"{fail['sections_completed']}/{fail['sections']} sections delivered"
            cpu0 = mc_rows.get(merge_key.get(name, ""), {}).get("cpu_us_per_chunk")
            add(
                f"| {label} | {_f(n3['over_ideal'], '{:.3f}')} | {_f(n9['over_ideal'], '{:.3f}')} "
                f"| {_f(_ms(n3['first_chunk_s']), '{:.0f}')} | {_f(cpu0, '{:.1f}')} "
                f"| {_f(n9['cpu_us_per_chunk_paced'], '{:.0f}')} | {behaviour} |"
            )
        add("")
    return "\n".join(out)


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("openai", "httpx", "httpcore", "h2", "langchain-openai", "langchain-core"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[package] = version(package)
    info["packages"] = versions
    return info


def _load_snapshot(sim_pid: int) -> dict[str, float]:
    """CPU seconds so far: the machine, this process, the simulator (for ``machine_load``)."""
    from load_test_streaming import machine_busy, process_tree_cpu_s

    snapshot = {"wall": time.perf_counter(), "self": time.process_time()}
    with contextlib.suppress(OSError, ValueError):
        snapshot["machine"] = machine_busy()[0]
        snapshot["simulator"] = process_tree_cpu_s(sim_pid)
    return snapshot


def _load_usage(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Average CPU use during the run, in % of one core: ours, the simulator's, everyone else's.

    The machine is shared; a large ``others`` figure means the run competed for the cores.
    """
    wall = after["wall"] - before["wall"]
    usage: dict[str, Any] = {"wall_s": round(wall, 1)}
    for key in ("self", "simulator", "machine"):
        if key in before and key in after:
            usage[f"{key}_percent"] = round(100 * (after[key] - before[key]) / wall, 1)
    if "machine_percent" in usage:
        ours = usage["self_percent"] + usage.get("simulator_percent", 0.0)
        usage["others_percent"] = round(max(0.0, usage["machine_percent"] - ours), 1)
    usage["loadavg"] = os.getloadavg()
    return usage


SCENARIOS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "fanout": Bench.fanout,
    "ttfb": Bench.ttfb,
    "service": Bench.service,
    "merge_cost": Bench.merge_cost,
    "http": Bench.http,
    "peers": Bench.peers,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small profiles, under a minute")
    parser.add_argument("--repeats", type=int, help="repeats per figure (default: per profile)")
    parser.add_argument(
        "--only",
        action="append",
        choices=[*SCENARIOS, "timeline"],
        help="run only these parts (repeatable)",
    )
    parser.add_argument("--output", type=Path, help="JSON results file")
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    parser.add_argument("--timeline", type=Path, help="timeline PNG (default docs/timeline.png)")
    parser.add_argument("--no-langchain", action="store_true", help="leave the LangChain peer out")
    parser.add_argument("--no-write", action="store_true", help="print only; write no file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    profile = PROFILES["quick" if args.quick else "full"]
    if args.repeats:
        profile = Profile(**{**profile.__dict__, "repeats": args.repeats})
    output = (
        args.output or ROOT / "docs" / "benchmarks" / f"{'quick' if args.quick else 'latest'}.json"
    )
    timeline_path = args.timeline or ROOT / "docs" / "timeline.png"
    # --quick draws no picture unless asked to: docs/timeline.png is the full run's.
    default_parts = [*SCENARIOS] if args.quick and not args.timeline else [*SCENARIOS, "timeline"]
    parts = args.only or default_parts

    started = time.perf_counter()
    results: dict[str, Any] = {
        "command": " ".join(
            ["python", "scripts/benchmark_streaming_performance.py", *(argv or sys.argv[1:])]
        ),
        "profile": profile.name,
        "repeats": profile.repeats,
        "machine": machine(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with run_simulator(profile="fast", jitter=0) as sim:
        bench = Bench(sim, profile, langchain=not args.no_langchain)
        load0 = _load_snapshot(sim.pid)
        try:
            for part in parts:
                t0 = time.perf_counter()
                if part == "timeline":
                    if args.no_write:
                        continue
                    results["timeline"] = bench.timeline(timeline_path)
                else:
                    results[part] = SCENARIOS[part](bench)
                print(f"# {part}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        finally:
            bench.close()
        results["machine_load"] = _load_usage(load0, _load_snapshot(sim.pid))
    results["problems"] = bench.problems
    results["duration_s"] = round(time.perf_counter() - started, 1)

    table = markdown(results)
    print(table)
    load = results.get("machine_load", {})
    print(
        f"# machine: {load.get('machine_percent')}% of one core busy on average, of which "
        f"this process {load.get('self_percent')}%, the simulator {load.get('simulator_percent')}%,"
        f" others {load.get('others_percent')}%",
        file=sys.stderr,
    )
    if bench.problems:
        print("PROBLEMS (lost, duplicated or failed sections):", file=sys.stderr)
        for problem in bench.problems:
            print("  " + problem, file=sys.stderr)
    if not args.no_write:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=1, default=str) + "\n")
        if args.markdown:
            args.markdown.write_text(table + "\n")
    print(f"# total {results['duration_s']} s", file=sys.stderr)
    return 1 if bench.problems else 0


if __name__ == "__main__":
    sys.exit(main())
