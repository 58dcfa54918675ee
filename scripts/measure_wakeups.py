#!/usr/bin/env python
"""CPU and voluntary context switches per chunk of the engine at a model-like pace.

K concurrent runs (one consumer thread each, as gunicorn's gthread workers would hold them) of
3 sections x 60 tokens, chunks ``--itl-ms`` apart (default 30 ms, jitter 0.2), through
``ParallelStreamManager.stream_sse`` over the pooled HTTP/2 client and over the HTTP/1.1 pool,
against the simulator in its own process (so its CPU and context switches are not counted).
``getrusage(RUSAGE_SELF)`` around each level: user + system CPU, voluntary and involuntary
context switches of every thread of this process, divided by the content chunks delivered.
Each repeat runs every (K, pool) level once, in turn, so both pools see the same neighbours.

    python scripts/measure_wakeups.py                       # K = 1, 10, 20; 3 repeats
    python scripts/measure_wakeups.py --ks 20 --repeats 5 --json /tmp/wakeups.json

The machine may be shared: the JSON records the CPU used by other processes during each level
(``others_percent``, % of one core) from ``/proc/stat``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load_test_streaming import machine_busy, process_tree_cpu_s
from peers.base import section_configs
from peers.engine import EnginePeer
from peers.harness import sim_sections

from backend_ai.simulator import run_simulator

_CHUNK_FRAME = 'data: {"type":"chunk"'


def _level(peer: EnginePeer, configs: Any, k: int, sim_pid: int) -> dict[str, Any]:
    counts: list[int] = []
    lock = threading.Lock()

    def user() -> None:
        n = 0
        for frame in peer.manager.stream_sse(configs):
            if frame.startswith(_CHUNK_FRAME):
                n += 1
        with lock:
            counts.append(n)

    threads = [threading.Thread(target=user) for _ in range(k)]
    busy0, sim0 = machine_busy()[0], process_tree_cpu_s(sim_pid)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    busy1, sim1 = machine_busy()[0], process_tree_cpu_s(sim_pid)
    chunks = sum(counts)
    user_s = r1.ru_utime - r0.ru_utime
    sys_s = r1.ru_stime - r0.ru_stime
    machine_pct = 100 * (busy1 - busy0) / wall
    self_pct = 100 * (user_s + sys_s) / wall
    sim_pct = 100 * (sim1 - sim0) / wall
    return {
        "chunks": chunks,
        "wall_s": round(wall, 3),
        "cpu_us_per_chunk": round((user_s + sys_s) * 1e6 / chunks, 1),
        "user_us_per_chunk": round(user_s * 1e6 / chunks, 1),
        "sys_us_per_chunk": round(sys_s * 1e6 / chunks, 1),
        "voluntary_ctx_per_chunk": round((r1.ru_nvcsw - r0.ru_nvcsw) / chunks, 2),
        "involuntary_ctx_per_chunk": round((r1.ru_nivcsw - r0.ru_nivcsw) / chunks, 2),
        "self_percent": round(self_pct, 1),
        "simulator_percent": round(sim_pct, 1),
        "others_percent": round(max(0.0, machine_pct - self_pct - sim_pct), 1),
    }


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="1,10,20", help="concurrent runs per level")
    parser.add_argument("--pools", default="h2,h1", help="h2 (pooled HTTP/2), h1 (HTTP/1.1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--itl-ms", type=float, default=30.0)
    parser.add_argument("--tokens", type=int, default=60)
    parser.add_argument("--sections", type=int, default=3)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    ks = [int(v) for v in args.ks.split(",")]
    pools = args.pools.split(",")
    controls = {"ttft_ms": 50, "itl_ms": args.itl_ms, "tokens": args.tokens, "jitter": 0.2}
    configs = section_configs(sim_sections(args.sections, controls))
    import backend_ai

    results: dict[str, Any] = {
        "command": "python scripts/measure_wakeups.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "commit": _commit(),
        "engine_path": str(Path(backend_ai.__file__).resolve().parent),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "nproc": os.cpu_count(),
        "python": sys.version.split()[0],
        "controls": controls,
        "sections": args.sections,
        "runs": [],
    }
    print(f"engine from {results['engine_path']}", flush=True)
    with run_simulator(profile="fast") as sim:
        peers = {pool: EnginePeer(sim.base_url, http2=(pool == "h2"), sse=True) for pool in pools}
        try:
            for peer in peers.values():  # warm: connections, imports, thread pool
                list(peer.manager.stream_sse(configs))
            for repeat in range(args.repeats):
                for k in ks:
                    for pool, peer in peers.items():
                        row = {"repeat": repeat, "k": k, "pool": pool}
                        row.update(_level(peer, configs, k, sim.pid))
                        results["runs"].append(row)
                        print(json.dumps(row), flush=True)
        finally:
            for peer in peers.values():
                peer.close()
    summary = []
    for k in ks:
        for pool in pools:
            rows = [r for r in results["runs"] if r["k"] == k and r["pool"] == pool]
            entry: dict[str, Any] = {"k": k, "pool": pool, "repeats": len(rows)}
            for key in (
                "cpu_us_per_chunk",
                "user_us_per_chunk",
                "sys_us_per_chunk",
                "voluntary_ctx_per_chunk",
                "involuntary_ctx_per_chunk",
                "others_percent",
            ):
                values = [r[key] for r in rows]
                entry[key] = {
                    "median": round(statistics.median(values), 2),
                    "min": min(values),
                    "max": max(values),
                }
            summary.append(entry)
    results["summary"] = summary
    results["loadavg"] = os.getloadavg()
    print()
    print("| K runs | pool | CPU µs/chunk | user | sys | voluntary ctx/chunk | others % |")
    print("|---|---|---|---|---|---|---|")
    for e in summary:

        def fmt(key: str, e: dict[str, Any] = e) -> str:
            v = e[key]
            return f"{v['median']:g} ({v['min']:g}–{v['max']:g})"

        print(
            f"| {e['k']} | {e['pool']} | {fmt('cpu_us_per_chunk')} | "
            f"{e['user_us_per_chunk']['median']:g} | {e['sys_us_per_chunk']['median']:g} | "
            f"{fmt('voluntary_ctx_per_chunk')} | {fmt('others_percent')} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
