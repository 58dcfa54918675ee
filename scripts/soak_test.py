#!/usr/bin/env python
"""Soak test: steady concurrency with a mix of upstream and client faults, every chunk checked,
the gunicorn worker's threads, descriptors, connections and memory sampled over time.

It starts its own upstream simulator and one gunicorn worker (so ``/proc/<pid>`` is the process
that served every request), then keeps ``--concurrency`` clients busy for ``--duration``
seconds. Each request picks a route and a scenario at random (seeded): a clean run, a section
whose upstream resets, sends a malformed chunk, an error event, a 500/503, a truncated body, a
stall past the stall timeout, a 429 that the sequential fallback recovers from, or a client that
goes away mid-stream. Every stream read to its end is checked:

* the stream protocol, with the checker the tests use (``tests/support/protocol.py``): ``start``
  first, ``done`` last, each once; per section ``section_start`` once, chunk ``seq`` 0, 1, 2,
  ... with no gap (lost) and no repeat (duplicate), exactly one end agreeing with the chunks
  received;
* the faulty section ended with the error code of its fault (and the chunks before it), every
  other section with ``section_done`` and exactly the text of a fault-free run (the simulator's
  text is a function of the request).

At the end the service must settle (no open SSE response, no open upstream stream, every
upstream stream the simulator started accounted for) and the worker must not have grown beyond
the bounds below since the end of the warm-up. Exit code 0 when everything held, 1 otherwise.

    python scripts/soak_test.py                          # 3 minutes, 8 clients
    python scripts/soak_test.py --duration 600 --concurrency 16 --json soak.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from backend_ai.app.gunicorn_process import GunicornProcess
from backend_ai.simulator import SimulatorProcess, run_simulator

# The protocol checker, the SSE reader and the service's environment are shared with the tests
# (``tests/support``).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.protocol import ProtocolChecker
from tests.support.service import service_env
from tests.support.sse import iter_data_events

#: The upstream's timing: streams of about half a second, 20 % jitter (text does not depend
#: on timing). Kept well under the simulator's capacity on a 2-core machine (docs/SIMULATOR.md).
SIM_PROFILE = {"ttft_ms": 30, "itl_ms": 10, "tokens": 40, "jitter": 0.2}
STALL_TIMEOUT_S = 1.0
SERVICE_ENV = {
    "BACKEND_AI_HEARTBEAT_S": "0.5",
    "BACKEND_AI_STALL_TIMEOUT_S": str(STALL_TIMEOUT_S),
    "BACKEND_AI_DEADLINE_S": "30",
    "BACKEND_AI_MAX_RETRY_WAIT_S": "2",
}

ROUTES: dict[str, tuple[str, dict[str, Any], str]] = {
    # name: (path, body, the section a fault is aimed at)
    "dream": ("dream/interpret-stream", {"dream": "I was flying over a city of glass"}, "symbols"),
    "iching": (
        "iching/reading-stream",
        {"question": "Should I move?", "hexagram": 7},
        "interpretation",
    ),
    "tarot": ("tarot/three-card-stream", {"question": "What now?"}, "reading"),
    "compare": (
        "compare/stream",
        {"prompt": "Explain backpressure", "models": ["gpt-4o", "gpt-4o-mini", "gpt-4.1-mini"]},
        "gpt-4o-mini",
    ),
}
#: Tarot draws its cards on the server: its text differs per request, only its length is fixed.
NONDETERMINISTIC = {"tarot"}

#: name: (weight, sim controls for the faulty section or None, expected code or None)
SCENARIOS: dict[str, tuple[int, dict[str, Any] | None, str | None]] = {
    "clean": (30, None, None),
    "reset": (10, {"drop_after": 3}, "connection_error"),
    "malformed": (8, {"malformed_after": 2}, "malformed"),
    "error_event": (8, {"error_after": 4}, "upstream_error"),
    "status_500": (6, {"status": 500}, "upstream_error"),
    "status_503": (4, {"status": 503}, "upstream_error"),
    "truncated": (6, {"truncate_after": 5}, "incomplete"),
    "stall": (3, {"stall_after": 2, "stall_s": 3}, "timeout"),
    "rate_limit": (8, {"fail_first": 1, "retry_after_ms": 50}, None),
    "client_gone": (12, None, None),
}
#: Chunks the faulty section delivers before its fault.
FAULT_CHUNKS = {
    "reset": 3,
    "malformed": 2,
    "error_event": 4,
    "status_500": 0,
    "status_503": 0,
    "truncated": 5,
    "stall": 2,
}


# -- one stream ------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the clients saw, summed (guarded by a lock)."""

    requests: int = 0
    streams_checked: int = 0
    client_disconnects: int = 0
    chunks_checked: int = 0
    lost: int = 0
    duplicated: int = 0
    violations: int = 0
    scenarios: Counter[str] = field(default_factory=Counter)
    section_errors: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def violation(self, message: str) -> None:
        self.violations += 1
        if len(self.examples) < 20:
            self.examples.append(message)


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    requests: int
    threads: int
    fds: int
    sockets: int
    upstream_connections: int
    client_connections: int
    rss_kb: int


def sample_worker(pid: int, server_port: int, upstream_port: int, t: float, n: int) -> Sample:
    root = Path(f"/proc/{pid}")
    inodes = set()
    fds = 0
    for fd in (root / "fd").iterdir():
        fds += 1
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    upstream = client = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as handle:
            next(handle)
            for line in handle:
                cols = line.split()
                if int(cols[9]) not in inodes or cols[3] != "01":  # ESTABLISHED
                    continue
                local = int(cols[1].rsplit(":", 1)[1], 16)
                remote = int(cols[2].rsplit(":", 1)[1], 16)
                upstream += remote == upstream_port
                client += local == server_port
    rss = next(
        int(line.split()[1])
        for line in (root / "status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    threads = len(list((root / "task").iterdir()))
    return Sample(round(t, 1), n, threads, fds, len(inodes), upstream, client, rss)


class Soak:
    def __init__(self, args: argparse.Namespace, sim: SimulatorProcess, url: str) -> None:
        self.args = args
        self.sim = sim
        self.url = url
        self.tally = Tally()
        self.lock = threading.Lock()
        self.stop_at = 0.0
        self.references: dict[str, dict[str, str]] = {}
        self.reference_chunks: dict[str, dict[str, int]] = {}

    def fetch_references(self, http: httpx.Client) -> None:
        for name, (path, body, _) in ROUTES.items():
            stream = ProtocolChecker()
            with http.stream("POST", self.url + path, json=body) as response:
                for event in iter_data_events(response):
                    stream.feed(event)
            stream.finish()
            if stream.problems or any(s.end != "done" for s in stream.sections.values()):
                raise SystemExit(
                    f"the fault-free reference run of {name} failed: {stream.problems}"
                )
            self.references[name] = {n: s.text for n, s in stream.sections.items()}
            self.reference_chunks[name] = {n: s.chunks for n, s in stream.sections.items()}

    def client(self, index: int) -> None:
        rng = random.Random(self.args.seed * 1000 + index)
        names = list(SCENARIOS)
        weights = [SCENARIOS[n][0] for n in names]
        with httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0)) as http:
            n = 0
            while time.monotonic() < self.stop_at:
                n += 1
                route = rng.choice(list(ROUTES))
                scenario = rng.choices(names, weights)[0]
                try:
                    self.one(http, rng, route, scenario, f"{index}-{n}")
                except Exception as exc:  # a transport failure is a finding too
                    with self.lock:
                        self.tally.violation(f"{route}/{scenario}: {type(exc).__name__}: {exc}")

    def one(
        self, http: httpx.Client, rng: random.Random, route: str, scenario: str, key: str
    ) -> None:
        path, base, faulty = ROUTES[route]
        body = dict(base)
        sim = SCENARIOS[scenario][1]
        if sim is not None:
            sim = dict(sim)
            if "fail_first" in sim:
                sim["attempt_key"] = key  # the first attempt of this request only
            body["sim_sections"] = {faulty: sim}
        stream = ProtocolChecker()
        cut_after = rng.randint(1, 12) if scenario == "client_gone" else None
        with http.stream("POST", self.url + path, json=body) as response:
            if response.status_code != 200:
                raise AssertionError(f"HTTP {response.status_code}: {response.read()[:200]!r}")
            for event in iter_data_events(response):
                stream.feed(event)
                if cut_after is not None and event.get("type") == "chunk":
                    cut_after -= 1
                    if cut_after == 0:
                        break  # leaving the block closes the connection mid-stream
        with self.lock:
            self.record(route, scenario, stream, cut=cut_after == 0)

    def record(self, route: str, scenario: str, stream: ProtocolChecker, *, cut: bool) -> None:
        tally = self.tally
        tally.requests += 1
        tally.scenarios[scenario] += 1
        tally.chunks_checked += stream.chunks
        tally.lost += stream.lost
        tally.duplicated += stream.duplicated
        where = f"{route}/{scenario}"
        for problem in stream.problems:
            tally.violation(f"{where}: {problem}")
        if cut:
            tally.client_disconnects += 1
            return
        for problem in stream.finish():
            tally.violation(f"{where}: {problem}")
        if stream.problems:
            return
        tally.streams_checked += 1
        _, _, faulty = ROUTES[route]
        expected_code = SCENARIOS[scenario][2]
        for name, section in stream.sections.items():
            if section.code is not None:
                tally.section_errors[section.code] += 1
            if name == faulty and expected_code is not None:
                if (section.end, section.code) != ("error", expected_code):
                    tally.violation(f"{where}: {name} ended {section.end}/{section.code}")
                elif section.chunks != FAULT_CHUNKS[scenario]:
                    tally.violation(f"{where}: {name} sent {section.chunks} chunks before it")
                continue
            if section.end != "done":
                tally.violation(f"{where}: {name} ended {section.end}/{section.code}")
            elif route in NONDETERMINISTIC:
                if section.chunks != self.reference_chunks[route][name]:
                    tally.violation(f"{where}: {name} has {section.chunks} chunks")
            elif section.text != self.references[route][name]:
                tally.violation(f"{where}: {name}'s text differs from the fault-free run")
        if scenario == "rate_limit" and not any(e["type"] == "rate_limit" for e in stream.events):
            tally.violation(f"{where}: no rate_limit event")


def metrics(http: httpx.Client, url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(http.get(url + "metrics").text):
        for s in family.samples:
            if s.name in ("backend_ai_active_streams", "backend_ai_runs_total"):
                out[s.name] = out.get(s.name, 0.0) + s.value
            elif (
                s.name == "backend_ai_http_requests_total"
                and s.labels["status"] == "200"
                and s.labels["endpoint"].endswith("_stream")
            ):
                out["answered"] = out.get("answered", 0.0) + s.value
    return out


def settle(http: httpx.Client, url: str, sim: SimulatorProcess, timeout: float) -> dict[str, Any]:
    """Wait until every run has ended and nothing is open, stable for half a second."""
    deadline = time.monotonic() + timeout
    quiet_since = None
    while True:
        m = metrics(http, url)
        stats = sim.stats(records=False)
        quiet = (
            m.get("backend_ai_active_streams", 0) == 0
            and m.get("backend_ai_runs_total", 0) == m.get("answered", 0)
            and stats["streams_active"] == 0
        )
        now = time.monotonic()
        quiet_since = (quiet_since or now) if quiet else None
        if quiet_since is not None and now - quiet_since >= 0.5:
            return stats
        if now > deadline:
            raise SystemExit(f"the service did not settle within {timeout} s: {m}")
        time.sleep(0.05)


def run(args: argparse.Namespace) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="soak-") as tmp,
        run_simulator(**SIM_PROFILE) as sim,
    ):
        env = service_env(
            sim.base_url,
            api_key="sk-soak-not-a-real-key",
            **SERVICE_ENV,
            BACKEND_AI_HISTORY_DB=str(Path(tmp) / "history.sqlite3"),
        )
        log = open(Path(tmp) / "gunicorn.log", "w")  # noqa: SIM115 - closed below
        server = GunicornProcess(workers=1, threads=args.concurrency + 8, env=env, output=log)
        try:
            server.start()
            assert server.url is not None
            url = server.url
            port = int(url.rstrip("/").rsplit(":", 1)[1])
            pid = server.worker_pids[0]
            soak = Soak(args, sim, url)
            with httpx.Client(timeout=30.0) as http:
                soak.fetch_references(http)
                sim.reset()
                started = time.monotonic()
                soak.stop_at = started + args.duration
                clients = [
                    threading.Thread(target=soak.client, args=(i,), name=f"soak-client-{i}")
                    for i in range(args.concurrency)
                ]
                for thread in clients:
                    thread.start()
                samples: list[Sample] = []
                warm_at = started + min(args.warmup, args.duration / 2)
                warm: Sample | None = None
                while time.monotonic() < soak.stop_at:
                    now = time.monotonic()
                    sample = sample_worker(pid, port, sim.port, now - started, soak.tally.requests)
                    samples.append(sample)
                    if warm is None and now >= warm_at:
                        warm = sample
                    if not args.quiet:
                        print(_sample_line(sample), file=sys.stderr, flush=True)
                    time.sleep(max(0.0, min(args.sample_every, soak.stop_at - now)))
                for thread in clients:
                    thread.join()
                elapsed = time.monotonic() - started
                stats = settle(http, url, sim, timeout=30.0)
                end_metrics = metrics(http, url)
            # This client's own keep-alive connection is closed now: the worker should hold none.
            deadline = time.monotonic() + 5.0
            while True:
                final = sample_worker(pid, port, sim.port, time.monotonic() - started, 0)
                if not final.client_connections or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            final.requests = soak.tally.requests
            samples.append(final)
            if not args.quiet:
                print(_sample_line(final) + " (settled)", file=sys.stderr, flush=True)
        finally:
            server.stop()
            log.close()
    return report(args, soak.tally, samples, warm or samples[0], final, stats, elapsed, end_metrics)


def _sample_line(s: Sample) -> str:
    return (
        f"t={s.t:6.1f}s requests={s.requests:6d} threads={s.threads:3d} fds={s.fds:3d} "
        f"sockets={s.sockets:3d} upstream={s.upstream_connections} "
        f"clients={s.client_connections:3d} rss={s.rss_kb / 1024:6.1f} MB"
    )


def report(
    args: argparse.Namespace,
    tally: Tally,
    samples: list[Sample],
    warm: Sample,
    final: Sample,
    stats: dict[str, Any],
    elapsed: float,
    end_metrics: dict[str, float],
) -> dict[str, Any]:
    cut = sum(1 for d in stats["disconnects"] if d["stream_started"])
    accounted = stats["streams_completed"] + stats["streams_faulted"] + cut
    growth = {
        "threads": final.threads - warm.threads,
        "fds": final.fds - warm.fds,
        "sockets": final.sockets - warm.sockets,
        "rss_kb": final.rss_kb - warm.rss_kb,
    }
    leaks = []
    if growth["threads"] > args.max_thread_growth:
        leaks.append(f"threads grew by {growth['threads']}")
    if growth["fds"] > args.max_fd_growth:
        leaks.append(f"open files grew by {growth['fds']}")
    if growth["rss_kb"] > args.max_rss_growth_mb * 1024:
        leaks.append(f"RSS grew by {growth['rss_kb'] / 1024:.1f} MB")
    if final.client_connections:
        leaks.append(f"{final.client_connections} client connections still open")
    if final.upstream_connections > 2:
        leaks.append(f"{final.upstream_connections} upstream connections open")
    if stats["streams_started"] != accounted:
        leaks.append(f"upstream streams unaccounted: {stats['streams_started'] - accounted}")
    if end_metrics.get("backend_ai_active_streams", 0):
        leaks.append("SSE responses still open")
    ok = not (tally.violations or tally.lost or tally.duplicated or leaks) and tally.requests > 0
    return {
        "ok": ok,
        "duration_s": round(elapsed, 1),
        "concurrency": args.concurrency,
        "seed": args.seed,
        "requests": tally.requests,
        "streams_checked": tally.streams_checked,
        "client_disconnects": tally.client_disconnects,
        "chunks_checked": tally.chunks_checked,
        "lost": tally.lost,
        "duplicated": tally.duplicated,
        "violations": tally.violations,
        "violation_examples": tally.examples,
        "scenarios": dict(sorted(tally.scenarios.items())),
        "section_errors": dict(sorted(tally.section_errors.items())),
        "faults_injected": sum(
            n for s, n in tally.scenarios.items() if SCENARIOS[s][1] is not None
        ),
        "upstream": {
            "requests": stats["requests_total"],
            "status_counts": stats["status_counts"],
            "streams_started": stats["streams_started"],
            "streams_completed": stats["streams_completed"],
            "streams_faulted": stats["streams_faulted"],
            "streams_cut_by_client": cut,
            "streams_active": stats["streams_active"],
            "connections_accepted": stats["connections_accepted"],
            "chunk_lateness_p99_ms": stats["chunk_lateness"]["p99_ms"],
        },
        "worker": {
            "warm": asdict(warm),
            "final": asdict(final),
            "growth": growth,
            "max": {
                k: max(getattr(s, k) for s in samples)
                for k in ("threads", "fds", "sockets", "upstream_connections", "rss_kb")
            },
        },
        "samples": [asdict(s) for s in samples],
        "leaks": leaks,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of load")
    parser.add_argument("--concurrency", type=int, default=8, help="clients at once")
    parser.add_argument("--seed", type=int, default=1, help="seeds the routes and faults chosen")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before the baseline")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--max-thread-growth", type=int, default=8)
    parser.add_argument("--max-fd-growth", type=int, default=8)
    parser.add_argument("--max-rss-growth-mb", type=float, default=16.0)
    parser.add_argument("--json", type=Path, help="write the report as JSON here")
    parser.add_argument("--quiet", action="store_true", help="no sample lines on stderr")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.concurrency < 1:
        parser.error("--duration must be positive and --concurrency at least 1")
    result = run(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    summary = {k: v for k, v in result.items() if k not in ("samples", "worker")}
    summary["worker_growth"] = result["worker"]["growth"]
    print(json.dumps(summary, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
