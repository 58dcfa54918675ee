#!/usr/bin/env python
"""CPU per chunk of the engine at a model's pace, beside a single-thread ``h2`` floor, in one run.

K concurrent runs (one consumer thread each, as gunicorn's gthread workers would hold them) of
``--sections`` sections x ``--tokens`` chunks, ``--itl-ms`` apart with ``--jitter`` (default
25 ms +- 20%: 20-30 ms), through ``ParallelStreamManager.stream_sse`` over the pooled HTTP/2
client (and, with ``--pools h2,h1``, the HTTP/1.1 pool). In the same repeat, the *floor*
(``peers/h2_floor.py``) streams the same K x sections requests over one HTTP/2 connection in
one thread with the ``h2`` library, parsing every SSE line with ``json.loads`` and building
the outgoing SSE frame: ``engine ÷ floor`` is the cost of everything else. Every section of
every run has its own seed, so its own chunk schedule, as independent users' streams do
(``--shared-schedule``: one set of seeds for all runs, see ``_runs``). Last, the burst
figure: the engine's CPU per chunk when each completion arrives in one write
(``peers/burst_upstream.py``), and the same per-chunk work measured warm, in a tight loop
(``peers/warm_costs.py``): at a model's pace each read finds a thread that slept meanwhile.

``--flush-ms 0,15`` measures the engine once per flush interval (``RunOptions.flush_interval_s``),
each row against the same repeat's floor; ``--latency`` adds, per interval, an untimed level
that records each chunk's delay from its arrival at the HTTP/2 reader (when the engine's SSE
reader parses it) to the write that carries it (when the run's consumer hands its batch on),
as p50 / p99 — the price of the interval.

The upstream is ``peers/paced_upstream.py`` by default: one thread, a timer heap and
pre-encoded chunks, in its own process (``--upstream-cpu N`` pins it to core N), so that the
machine measures the engine rather than the upstream; ``--upstream simulator`` uses the
hypercorn simulator instead (several times the upstream CPU per chunk).

``--one-core N`` measures every level twice in each repeat: as the scheduler places its threads,
and with every thread of this process held on core N (``sched_setaffinity``; the upstream
belongs on another core, ``--upstream-cpu``). The floor is one thread, so it pays nothing for
threads that wake each other on different cores; the engine's reader and consumers do, and
the pinned rows show how much of ``engine ÷ floor`` is that rather than work.

``getrusage(RUSAGE_SELF)`` around each level: user + system CPU and voluntary / involuntary
context switches of every thread of this process, divided by the content chunks delivered;
for the engine also each kind of thread's own CPU and voluntary switches (its wake-ups: the
reader's are its reads that found nothing waiting, comparable with the floor's), and how many
chunks each of the consumers' writes carried. Each repeat
runs every level in turn, so engine and floor see the same neighbours; the ratio is taken
within a repeat. The machine may be shared: each row records the CPU used by other
processes during the level (``others_percent``, % of one core, from ``/proc/stat``) and by
the upstream (``upstream_percent``).

    python scripts/measure_wakeups.py                        # K = 10, 20; 3 repeats; burst
    python scripts/measure_wakeups.py --ks 10,20 --repeats 5 --json docs/benchmarks/wakeups.json
    python scripts/measure_wakeups.py --quick                # a few seconds: the smoke test
    python scripts/measure_wakeups.py --flush-ms 0,15 --latency  # the flush interval's effect
    python scripts/measure_wakeups.py --upstream-cpu 1 --one-core 0  # threads on one core too
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# The peers package sits beside this file; tests.support (the process helpers shared with the
# tests and the load test) under the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from peers.base import Section, section_configs
from peers.burst_upstream import BurstUpstream
from peers.engine import EnginePeer
from peers.h2_floor import read_streams
from peers.harness import percentile, run_once, sim_sections
from peers.paced_upstream import PacedUpstream
from peers.warm_costs import warm_costs

from backend_ai.streaming import RunOptions
from backend_ai.streaming.sse import encode_event
from tests.support.process import machine_busy, process_tree_cpu_s

_CHUNK_FRAME = 'data: {"type":"chunk"'


def _measured(work: Callable[[], int], upstream_pid: int) -> dict[str, Any]:
    """Run ``work`` (it returns the chunks delivered) and take this process's CPU around it."""
    busy0, up0 = machine_busy()[0], process_tree_cpu_s(upstream_pid)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    chunks = work()
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    busy1, up1 = machine_busy()[0], process_tree_cpu_s(upstream_pid)
    user_s = r1.ru_utime - r0.ru_utime
    sys_s = r1.ru_stime - r0.ru_stime
    machine_pct = 100 * (busy1 - busy0) / wall
    self_pct = 100 * (user_s + sys_s) / wall
    up_pct = 100 * (up1 - up0) / wall
    per = max(chunks, 1)
    return {
        "chunks": chunks,
        "wall_s": round(wall, 3),
        "cpu_us_per_chunk": round((user_s + sys_s) * 1e6 / per, 1),
        "user_us_per_chunk": round(user_s * 1e6 / per, 1),
        "sys_us_per_chunk": round(sys_s * 1e6 / per, 1),
        "voluntary_ctx_per_chunk": round((r1.ru_nvcsw - r0.ru_nvcsw) / per, 2),
        "involuntary_ctx_per_chunk": round((r1.ru_nivcsw - r0.ru_nivcsw) / per, 2),
        "self_percent": round(self_pct, 1),
        "upstream_percent": round(up_pct, 1),
        "others_percent": round(max(0.0, machine_pct - self_pct - up_pct), 1),
    }


#: The engine's threads by name prefix, for the per-thread CPU of a level.
_THREAD_KINDS = (
    ("h2-reader", "reader"),
    ("backend-ai-section", "section_pool"),
    ("h2-pool-housekeeper", "housekeeper"),
)


def _voluntary_switches(native_id: int | None = None) -> int:
    """Voluntary context switches so far of one thread of this process (this one: ``None``):
    each is a wait that ended in sleep, so one later wake-up."""
    where = "/proc/thread-self" if native_id is None else f"/proc/self/task/{native_id}"
    try:
        with open(f"{where}/status") as status:
            for line in status:
                if line.startswith("voluntary_ctxt_switches:"):
                    return int(line.split()[1])
    except OSError:  # it ended meanwhile, or no /proc
        pass
    return 0


def _engine_threads_cpu_s() -> dict[str, tuple[float, int]]:
    """CPU seconds and voluntary context switches so far of the engine's long-lived threads,
    summed by kind."""
    totals: dict[str, tuple[float, int]] = {}
    for thread in threading.enumerate():
        kind = next((k for prefix, k in _THREAD_KINDS if thread.name.startswith(prefix)), None)
        if kind is None or thread.ident is None:
            continue
        try:
            cpu = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        except (OSError, ProcessLookupError):  # it ended meanwhile
            continue
        switches = _voluntary_switches(thread.native_id)
        spent, woken = totals.get(kind, (0.0, 0))
        totals[kind] = (spent + cpu, woken + switches)
    return totals


@contextlib.contextmanager
def _threads_on_core(cpu: int | None) -> Iterator[None]:
    """Hold every thread of this process on ``cpu`` (threads started meanwhile inherit it);
    afterwards give them all back the affinity the process had. ``None``: leave them free."""
    if cpu is None:
        yield
        return
    free = os.sched_getaffinity(0)

    def place(cpus: set[int]) -> None:
        for task in os.listdir("/proc/self/task"):
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.sched_setaffinity(int(task), cpus)

    place({cpu})
    try:
        yield
    finally:
        place(free)


def _cores_in_use() -> list[int]:
    """Every core some thread of this process may run on now."""
    cores: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):
            cores |= os.sched_getaffinity(int(task))
    return sorted(cores)


def _engine_level(
    peer: EnginePeer, run_configs: list[Any], consumers_cpu_s: list[tuple[float, int, int]]
) -> Callable[[], int]:
    """K consumers at once; each adds its own thread's CPU, voluntary context switches and
    writes that carried chunks to ``consumers_cpu_s``."""

    def work() -> int:
        counts: list[int] = []
        lock = threading.Lock()

        def user(configs: Any) -> None:
            n = writes = 0
            for text in peer.manager.stream_sse(configs):
                frames = text.count(_CHUNK_FRAME)  # one write may carry several frames
                n += frames
                writes += frames > 0
            with lock:
                counts.append(n)
                consumers_cpu_s.append((time.thread_time(), _voluntary_switches(), writes))

        threads = [threading.Thread(target=user, args=(c,)) for c in run_configs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sum(counts)

    return work


def _latency_level(peer: EnginePeer, run_configs: list[Any]) -> list[float]:
    """Each chunk's delay in ms from its parse on the reader thread to its write.

    Stamps arrivals by wrapping the engine's chat parser (``parsers.ChatReader.read``) for
    this level only, so the timed levels run the unmodified engine.
    """
    from backend_ai.streaming import parsers

    arrived: dict[int, float] = {}
    original = parsers.ChatReader.read

    def stamped(reader: Any, received: bytes, batch: list[Any]) -> None:
        start = len(batch)
        original(reader, received, batch)
        now = time.monotonic()
        for chunk in batch[start:]:
            arrived[id(chunk)] = now

    delays: list[float] = []
    lock = threading.Lock()

    def user(configs: Any) -> None:
        mine: list[float] = []
        for events in peer.manager.stream_batches(configs):
            "".join([encode_event(event) for event in events])  # the write's own work
            now = time.monotonic()
            for event in events:
                at = arrived.pop(id(event), None)
                if at is not None:
                    mine.append((now - at) * 1000)
        with lock:
            delays.extend(mine)

    parsers.ChatReader.read = stamped  # type: ignore[method-assign,assignment]
    try:
        threads = [threading.Thread(target=user, args=(c,)) for c in run_configs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        parsers.ChatReader.read = original  # type: ignore[method-assign]
    return delays


def _floor_level(base_url: str, runs: list[list[Section]]) -> Callable[[], int]:
    def work() -> int:
        return read_streams(base_url, runs).chunks

    return work


def _runs(
    k: int, n: int, controls: dict[str, Any], *, shared_schedule: bool
) -> list[list[Section]]:
    """K runs of ``n`` sections; each run's sections get their own seeds (their own jitter).

    Independent users' streams are never in step. With one set of seeds for every run
    (``shared_schedule``) the K copies of a section follow one chunk schedule: the floor, which
    sends every request in one write, then receives K chunks in each read (about 0.15 reads per
    chunk), while the engine's runs start a little apart and read about 0.55 times per chunk —
    the ratio then measured how well the requests were aligned, not what the engine costs.
    """
    return [
        sim_sections(n, controls, seed=1000 + (0 if shared_schedule else 100 * run))
        for run in range(k)
    ]


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


@contextlib.contextmanager
def _upstream(kind: str, controls: dict[str, Any], cpu: int | None) -> Iterator[Any]:
    if kind == "paced":
        with PacedUpstream(
            ttft_ms=controls["ttft_ms"],
            itl_ms=controls["itl_ms"],
            tokens=controls["tokens"],
            jitter=controls["jitter"],
            cpu=cpu,
        ) as upstream:
            yield upstream
    else:
        from backend_ai.simulator import run_simulator

        with run_simulator(profile="fast") as sim:
            if cpu is not None:
                os.sched_setaffinity(sim.pid, {cpu})
            yield sim


def _burst(tokens: int, sections: int, repeats: int) -> dict[str, Any]:
    """Engine CPU per chunk with each completion in one write (the ≤ 15 µs target)."""
    burst_sections = sim_sections(sections, {"tokens": tokens}, tag="burst")
    values = []
    with BurstUpstream() as upstream:
        peer = EnginePeer(upstream.base_url, sse=True)
        try:
            run_once(peer, burst_sections)  # warm: connection, imports, thread pool
            for _ in range(repeats):
                result = run_once(peer, burst_sections)
                if result.aborted or not result.cpu_us_per_chunk:
                    raise RuntimeError(f"burst run failed: {result.aborted}")
                values.append(round(result.cpu_us_per_chunk, 2))
        finally:
            peer.close()
    return {
        "sections": sections,
        "tokens": tokens,
        "cpu_us_per_chunk": {
            "median": round(statistics.median(values), 2),
            "min": min(values),
            "max": max(values),
        },
    }


def _stat(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 2), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="10,20", help="concurrent runs per level")
    parser.add_argument("--pools", default="h2", help="h2 (pooled HTTP/2), h1 (HTTP/1.1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--itl-ms", type=float, default=25.0)
    parser.add_argument("--jitter", type=float, default=0.2)
    parser.add_argument("--ttft-ms", type=float, default=50.0)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--sections", type=int, default=3)
    parser.add_argument("--upstream", choices=("paced", "simulator"), default="paced")
    parser.add_argument("--upstream-cpu", type=int, help="pin the upstream to this core")
    parser.add_argument(
        "--burst-tokens", type=int, default=2000, help="chunks per section of the burst figure"
    )
    parser.add_argument("--no-floor", action="store_true", help="engine rows only")
    parser.add_argument(
        "--shared-schedule",
        action="store_true",
        help="every run's sections share one set of seeds (one chunk schedule); see _runs",
    )
    parser.add_argument(
        "--flush-ms",
        default=None,
        help="engine flush intervals to measure, comma-separated ms (default: RunOptions')",
    )
    parser.add_argument(
        "--latency", action="store_true", help="per interval: p50/p99 arrival-to-write delay"
    )
    parser.add_argument(
        "--one-core",
        type=int,
        metavar="CPU",
        help="also measure every level with all of this process's threads on this core",
    )
    parser.add_argument("--quick", action="store_true", help="K = 2, 10 tokens, 1 repeat")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.ks, args.repeats, args.tokens, args.burst_tokens = "2", 1, 10, 200
    ks = [int(v) for v in args.ks.split(",")]
    default_flush_ms = RunOptions().flush_interval_s * 1000
    flushes = [float(v) for v in args.flush_ms.split(",")] if args.flush_ms else [default_flush_ms]
    pools = [
        pool if len(flushes) == 1 else f"{pool}@{flush:g}ms"
        for pool in args.pools.split(",")
        for flush in flushes
    ]
    if args.one_core is not None and args.one_core not in os.sched_getaffinity(0):
        parser.error(f"--one-core {args.one_core}: not a core this process may run on")
    if args.one_core is not None and args.one_core == args.upstream_cpu:
        parser.error("--one-core and --upstream-cpu name the same core")
    placements: dict[str, int | None] = {"": None}
    if args.one_core is not None:
        placements[_on(args.one_core)] = args.one_core
    pool_specs = {
        name: (pool, flush)
        for name, (pool, flush) in zip(
            pools, [(p, f) for p in args.pools.split(",") for f in flushes], strict=True
        )
    }
    controls = {
        "ttft_ms": args.ttft_ms,
        "itl_ms": args.itl_ms,
        "tokens": args.tokens,
        "jitter": args.jitter,
    }
    runs_by_k = {
        k: _runs(k, args.sections, controls, shared_schedule=args.shared_schedule) for k in ks
    }
    configs_by_k = {k: [section_configs(run) for run in runs] for k, runs in runs_by_k.items()}
    warm = runs_by_k[ks[0]][0]
    import backend_ai

    results: dict[str, Any] = {
        "command": "python scripts/measure_wakeups.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "commit": _commit(),
        "engine_path": str(Path(backend_ai.__file__).resolve().parent),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "nproc": os.cpu_count(),
        "python": sys.version.split()[0],
        "upstream": args.upstream,
        "upstream_cpu": args.upstream_cpu,
        "one_core": args.one_core,
        "flush_interval_ms": {name: spec[1] for name, spec in pool_specs.items()},
        "controls": controls,
        "sections": args.sections,
        "shared_schedule": args.shared_schedule,
        "runs": [],
    }
    print(f"engine from {results['engine_path']}; upstream: {args.upstream}", flush=True)
    with _upstream(args.upstream, controls, args.upstream_cpu) as upstream:
        peers = {
            name: EnginePeer(
                upstream.base_url,
                http2=(pool == "h2"),
                sse=True,
                options=RunOptions(heartbeat_s=None, flush_interval_s=flush / 1000),
            )
            for name, (pool, flush) in pool_specs.items()
        }
        try:
            for peer in peers.values():  # warm: connections, imports, thread pool
                list(peer.manager.stream_sse(section_configs(warm)))
            if not args.no_floor:
                read_streams(upstream.base_url, [warm])
            for repeat in range(args.repeats):
                for k in ks:
                    consumers_cpu_s: dict[str, list[tuple[float, int, int]]] = {
                        pool: [] for pool in peers
                    }
                    levels: list[tuple[str, Callable[[], int]]] = [
                        (pool, _engine_level(peer, configs_by_k[k], consumers_cpu_s[pool]))
                        for pool, peer in peers.items()
                    ]
                    if not args.no_floor:
                        levels.append(("floor", _floor_level(upstream.base_url, runs_by_k[k])))
                    for (base, work), (suffix, cpu) in itertools.product(
                        levels, placements.items()
                    ):
                        name = base + suffix
                        row: dict[str, Any] = {"repeat": repeat, "k": k, "pool": name}
                        with _threads_on_core(cpu):
                            threads0 = _engine_threads_cpu_s()
                            row.update(_measured(work, upstream.pid))
                            row["cores"] = _cores_in_use()
                        if base in consumers_cpu_s:
                            # Each engine thread's own CPU per chunk: where the total goes.
                            threads1 = _engine_threads_cpu_s()
                            per = max(row["chunks"], 1)
                            by_thread = {
                                kind: round(
                                    (spent - threads0.get(kind, (0.0, 0))[0]) * 1e6 / per, 1
                                )
                                for kind, (spent, _) in threads1.items()
                            }
                            woken = {
                                kind: round((n - threads0.get(kind, (0.0, 0))[1]) / per, 3)
                                for kind, (_, n) in threads1.items()
                            }
                            consumers = consumers_cpu_s[base]
                            by_thread["consumers"] = round(
                                sum(c for c, _, _ in consumers) * 1e6 / per, 1
                            )
                            woken["consumers"] = round(sum(n for _, n, _ in consumers) / per, 3)
                            writes = max(sum(w for _, _, w in consumers), 1)
                            row["chunks_per_write"] = round(row["chunks"] / writes, 2)
                            consumers.clear()
                            row["thread_cpu_us_per_chunk"] = by_thread
                            row["thread_voluntary_ctx_per_chunk"] = woken
                        results["runs"].append(row)
                        print(json.dumps(row), flush=True)
                    if args.latency:
                        for name, peer in peers.items():
                            delays = _latency_level(peer, configs_by_k[k])
                            row = {"repeat": repeat, "k": k, "pool": name, "chunks": len(delays)}
                            for q in (50, 90, 99):
                                row[f"p{q}_ms"] = round(percentile(delays, q / 100) or 0.0, 2)
                            results.setdefault("latency", []).append(row)
                            print(json.dumps(row), flush=True)
        finally:
            for peer in peers.values():
                peer.close()
    results["warm"] = warm_costs(5_000 if args.quick else 40_000)
    if args.burst_tokens:
        results["burst"] = _burst(args.burst_tokens, args.sections, max(3, args.repeats))
    summary = []
    for k, suffix in itertools.product(ks, placements):
        for pool in [p + suffix for p in [*pools, *([] if args.no_floor else ["floor"])]]:
            rows = [r for r in results["runs"] if r["k"] == k and r["pool"] == pool]
            entry: dict[str, Any] = {"k": k, "pool": pool, "repeats": len(rows)}
            for key in (
                "cpu_us_per_chunk",
                "user_us_per_chunk",
                "sys_us_per_chunk",
                "voluntary_ctx_per_chunk",
                "involuntary_ctx_per_chunk",
                "upstream_percent",
                "others_percent",
            ):
                entry[key] = _stat([r[key] for r in rows])
            if pool != "floor" + suffix and not args.no_floor:
                # Ratio within each repeat (same neighbours, same placement), then the median.
                floors = {
                    r["repeat"]: r["cpu_us_per_chunk"]
                    for r in results["runs"]
                    if r["k"] == k and r["pool"] == "floor" + suffix
                }
                entry["engine_over_floor"] = _stat(
                    [round(r["cpu_us_per_chunk"] / floors[r["repeat"]], 2) for r in rows]
                )
            if any("chunks_per_write" in r for r in rows):
                entry["chunks_per_write"] = _stat([r["chunks_per_write"] for r in rows])
            for key in ("thread_cpu_us_per_chunk", "thread_voluntary_ctx_per_chunk"):
                kinds = sorted({kind for r in rows for kind in r.get(key, {})})
                if kinds:
                    entry[key] = {
                        kind: _stat([r[key].get(kind, 0.0) for r in rows]) for kind in kinds
                    }
            summary.append(entry)
    results["summary"] = summary
    if "latency" in results:
        results["latency_summary"] = [
            {
                "k": k,
                "pool": pool,
                **{
                    key: _stat(
                        [r[key] for r in results["latency"] if (r["k"], r["pool"]) == (k, pool)]
                    )
                    for key in ("p50_ms", "p90_ms", "p99_ms")
                },
            }
            for k in ks
            for pool in pools
        ]
    results["loadavg"] = os.getloadavg()
    print()
    print(
        "| K runs | pool | CPU µs/chunk | ÷ floor | user | sys | voluntary ctx/chunk "
        "| upstream % | others % |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for e in summary:

        def fmt(key: str, e: dict[str, Any] = e) -> str:
            v = e[key]
            return f"{v['median']:g} ({v['min']:g}–{v['max']:g})"

        ratio = fmt("engine_over_floor") if "engine_over_floor" in e else "–"
        print(
            f"| {e['k']} | {e['pool']} | {fmt('cpu_us_per_chunk')} | {ratio} | "
            f"{e['user_us_per_chunk']['median']:g} | {e['sys_us_per_chunk']['median']:g} | "
            f"{fmt('voluntary_ctx_per_chunk')} | {e['upstream_percent']['median']:g} | "
            f"{fmt('others_percent')} |"
        )
    for e in results.get("latency_summary", []):
        print(
            f"latency K={e['k']} {e['pool']}: arrival at the reader to write, ms "
            f"p50 {fmt_stat(e['p50_ms'])}, p90 {fmt_stat(e['p90_ms'])}, p99 {fmt_stat(e['p99_ms'])}"
        )
    for e in summary:
        if "thread_cpu_us_per_chunk" in e:
            parts = ", ".join(
                f"{kind} {fmt_stat(value)}" for kind, value in e["thread_cpu_us_per_chunk"].items()
            )
            print(f"K={e['k']} {e['pool']}, CPU µs per chunk by thread: {parts}")
        if "thread_voluntary_ctx_per_chunk" in e:
            parts = ", ".join(
                f"{kind} {fmt_stat(value)}"
                for kind, value in e["thread_voluntary_ctx_per_chunk"].items()
            )
            print(f"K={e['k']} {e['pool']}, wake-ups (voluntary switches) per chunk: {parts}")
        if "chunks_per_write" in e:
            print(
                f"K={e['k']} {e['pool']}, chunks per write that carried any: "
                f"{fmt_stat(e['chunks_per_write'])}"
            )
    w = results["warm"]
    print(
        f"warm, in a tight loop (peers/warm_costs.py), CPU µs per chunk: h2 {w['h2']:g}, "
        f"the floor's parse and encode {w['floor']:g}, the engine's reader side "
        f"{w['engine_reader_side']:g}"
    )
    if "burst" in results:
        b = results["burst"]
        print(
            f"\nburst ({b['sections']} sections x {b['tokens']} chunks, one write each): "
            f"{fmt_stat(b['cpu_us_per_chunk'])} µs CPU per chunk"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _on(cpu: int) -> str:
    """The suffix of a level measured with every thread on ``cpu``."""
    return f" on cpu{cpu}"


def fmt_stat(v: dict[str, float]) -> str:
    return f"{v['median']:g} ({v['min']:g}–{v['max']:g})"


if __name__ == "__main__":
    sys.exit(main())
