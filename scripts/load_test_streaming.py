#!/usr/bin/env python
"""Load test: many real SSE clients at once against the streaming service, every chunk checked.

Each of ``--concurrent`` virtual users opens an HTTP/1.1 connection (kept alive between its
requests unless ``--no-keepalive``), POSTs the route's JSON payload and reads the SSE stream to
its end. For every request it records the time to the first response byte, the first SSE event,
the first content chunk and the end, and it verifies the stream: within each section the chunk
``seq`` numbers must run 0, 1, 2, ... with no gap (loss) and no repeat (duplicate), each
section's ``section_done``/``error`` must agree with the number of chunks received, and the
stream must end with ``done`` (the checker the tests use, ``tests/support/protocol.py``). The
exit code is 1 on any loss, duplicate, missing ``done`` or other protocol violation.

The client is a small asyncio HTTP/1.1 + SSE reader on raw sockets (no HTTP library on the hot
path) so that it is not the bottleneck; its own CPU use is measured and reported.

``--spawn`` starts its own upstream simulator (fixed profile, no jitter, so the upstream TTFT is
known and the service's overhead is first chunk - TTFT) and ``backend-ai serve`` under gunicorn
pointed at it, and stops both at the end; ``--server asgi-peer`` spawns the asyncio peer app
(``scripts/peers/asgi_app.py``) under an ASGI server instead, for comparison.
``--upstream paced`` spawns ``scripts/peers/paced_upstream.py`` instead of the simulator: the
same profile at a fraction of the simulator's CPU per chunk (``--upstream-cpu N`` pins it to
core N), so that on a small machine the server's CPU per chunk is the server's, not a starved
upstream's. ``--engine-tree DIR`` runs the spawned server on the ``backend_ai`` package found in
``DIR`` (a checkout or a ``git archive`` of another commit), for A/B runs back to back with the
same script, client and upstream.

    python scripts/load_test_streaming.py --spawn --concurrent 50 --requests 200
    python scripts/load_test_streaming.py --url http://127.0.0.1:8000 --concurrent 10 --duration 30
    python scripts/load_test_streaming.py --spawn --upstream paced --sweep 20,40 --duration 20 \
        --engine-tree /tmp/tree-main --json /tmp/load-main.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
# The protocol checker, the percentile and the process helpers are shared with the tests.
sys.path.insert(0, str(SCRIPTS.parent))
from tests.support.process import free_port, process_tree_cpu_s  # noqa: E402
from tests.support.protocol import ProtocolChecker  # noqa: E402
from tests.support.stats import percentile  # noqa: E402

ROUTES: dict[str, tuple[str, dict[str, Any]]] = {
    "dream": (
        "/dream/interpret-stream",
        {"dream": "I walked through a lighthouse full of clocks that all ticked backwards."},
    ),
    "iching": ("/iching/reading-stream", {"question": "Should I take the new job abroad?"}),
    "tarot": ("/tarot/three-card-stream", {"question": "What should I focus on this month?"}),
    "compare": (
        "/compare/stream",
        {
            "prompt": "Explain backpressure in one paragraph.",
            "models": ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"],
        },
    ),
}

#: Upstream profile ``--spawn`` gives the simulator: the simulator's realistic default, no jitter.
SPAWN_PROFILE = {"ttft_ms": 300.0, "itl_ms": 30.0, "tokens": 60, "jitter": 0.0}


# -- one request -------------------------------------------------------------------------------
@dataclass
class Result:
    """One request, as the client saw it; times are seconds from the request's start."""

    status: int | None = None
    connect_s: float | None = None
    first_byte_s: float | None = None
    first_event_s: float | None = None
    first_chunk_s: float | None = None
    total_s: float | None = None
    chunks: int = 0
    lost: int = 0
    duplicates: int = 0
    done: bool = False
    events_after_done: int = 0
    violations: int = 0  # protocol problems of any kind (tests/support/protocol.py)
    section_errors: Counter[str] = field(default_factory=Counter)
    error: str | None = None  # transport or HTTP failure; None when the stream was read

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and self.done
            and not self.lost
            and not self.duplicates
            and not self.events_after_done
            and not self.violations
        )


class StreamChecker:
    """Follows one SSE stream's events: the shared protocol checker, plus the client's timings."""

    __slots__ = ("clock", "protocol", "result", "t0")

    def __init__(self, result: Result, t0: float) -> None:
        self.result = result
        self.t0 = t0
        self.protocol = ProtocolChecker()
        self.clock = time.perf_counter

    def event(self, obj: dict[str, Any]) -> None:
        r = self.result
        if r.first_event_s is None:
            r.first_event_s = self.clock() - self.t0
        kind = obj.get("type")
        if kind == "chunk" and r.first_chunk_s is None:
            r.first_chunk_s = self.clock() - self.t0
        protocol = self.protocol
        protocol.feed(obj)
        if kind == "error":
            r.section_errors[str(obj.get("code"))] += 1
        # Copied on every event, so a stream cut short by a timeout still counts what it got.
        r.done = protocol.done
        r.chunks = protocol.chunks
        r.lost = protocol.lost
        r.duplicates = protocol.duplicated
        r.events_after_done = protocol.events_after_done
        r.violations = len(protocol.problems)

    def finish(self) -> None:
        """The whole-stream checks, once the body has ended with ``done``."""
        if self.protocol.done:
            self.protocol.finish()
            self.result.violations = len(self.protocol.problems)


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> AsyncIterator[bytes]:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the end
                    pass
                return
            data = await reader.readexactly(size + 2)
            yield data[:-2]
    elif "content-length" in headers:
        remaining = int(headers["content-length"])
        while remaining > 0:
            data = await reader.read(min(remaining, 65536))
            if not data:
                raise ConnectionError("body ended before its content-length")
            remaining -= len(data)
            yield data
    else:
        while data := await reader.read(65536):
            yield data


class Connection:
    """One keep-alive HTTP/1.1 connection of a virtual user."""

    def __init__(self, host: str, port: int, keepalive: bool) -> None:
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def request(self, path: str, body: bytes, timeout: float) -> Result:
        result = Result()
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(self._request(path, body, result, t0), timeout)
        except TimeoutError:
            result.error = "timeout"
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as exc:
            result.error = f"connection:{type(exc).__name__}"
        except (ValueError, KeyError) as exc:
            result.error = f"protocol:{type(exc).__name__}"
        if result.error is not None or not self.keepalive:
            await self.close()
        result.total_s = time.perf_counter() - t0
        return result

    async def _request(self, path: str, body: bytes, result: Result, t0: float) -> None:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.get_extra_info("socket").setsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
            )
            result.connect_s = time.perf_counter() - t0
        reader, writer = self.reader, self.writer
        assert reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Connection: {'keep-alive' if self.keepalive else 'close'}\r\n\r\n"
        ).encode()
        writer.write(head + body)
        status_line = await reader.readuntil(b"\r\n")
        result.first_byte_s = time.perf_counter() - t0
        result.status = int(status_line.split(b" ", 2)[1])
        raw_headers = await reader.readuntil(b"\r\n\r\n")
        headers = {}
        for line in raw_headers.decode("latin-1").split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if headers.get("connection", "").lower() == "close":
            self.keepalive = False
        if result.status != 200:
            detail = b""
            async for data in _read_body(reader, headers):
                detail += data
            code = ""
            with contextlib.suppress(ValueError, AttributeError):
                code = ":" + str(json.loads(detail).get("error", {}).get("code", ""))
            result.error = f"http_{result.status}{code}"
            return
        checker = StreamChecker(result, t0)
        event = checker.event
        loads = json.loads
        buffer = b""
        async for data in _read_body(reader, headers):
            buffer = buffer + data if buffer else data
            while True:
                end = buffer.find(b"\n\n")
                if end < 0:
                    break
                frame, buffer = buffer[:end], buffer[end + 2 :]
                for line in frame.split(b"\n"):
                    if line.startswith(b"data:"):
                        event(loads(line[5:]))
        checker.finish()
        if not result.done:
            result.error = "missing_done"


# -- the run -----------------------------------------------------------------------------------
@dataclass
class Totals:
    results: list[Result] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    active: int = 0

    def add(self, result: Result) -> None:
        self.results.append(result)


def _progress(totals: Totals, target: str, final: bool = False) -> None:
    elapsed = time.perf_counter() - totals.started
    results = totals.results
    failed = sum(1 for r in results if not r.ok)
    firsts = [r.first_chunk_s for r in results[-200:] if r.first_chunk_s is not None]
    p50 = percentile(firsts, 0.5)
    line = (
        f"[{elapsed:6.1f}s] {len(results)}{target} done, {totals.active} active, "
        f"{len(results) / elapsed if elapsed else 0:6.1f} req/s, {failed} failed, "
        f"first chunk p50 {p50 * 1000 if p50 is not None else 0:6.0f} ms"
    )
    if sys.stderr.isatty():
        sys.stderr.write("\r" + line + ("\n" if final else ""))
    else:
        sys.stderr.write(line + "\n")
    sys.stderr.flush()


async def run_load(
    url: str,
    path: str,
    payload: dict[str, Any],
    *,
    concurrent: int,
    requests: int | None,
    duration: float | None,
    timeout: float,
    keepalive: bool = True,
    progress: bool = True,
) -> tuple[Totals, float, float]:
    """Run the load; returns the results, the wall time and this process's CPU seconds."""
    parsed = urllib.parse.urlsplit(url)
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or 80
    prefix = parsed.path.rstrip("/")
    body = json.dumps(payload).encode()
    totals = Totals()
    issued = 0
    deadline = None if duration is None else time.perf_counter() + duration

    def take() -> bool:
        nonlocal issued
        if requests is not None and issued >= requests:
            return False
        if deadline is not None and time.perf_counter() >= deadline:
            return False
        issued += 1
        return True

    async def user() -> None:
        connection = Connection(host, port, keepalive)
        try:
            while take():
                totals.active += 1
                try:
                    result = await connection.request(prefix + path, body, timeout)
                finally:
                    totals.active -= 1
                totals.add(result)
        finally:
            await connection.close()

    target = f"/{requests}" if requests is not None else ""

    async def reporter() -> None:
        interval = 0.5 if sys.stderr.isatty() else 5.0
        while True:
            await asyncio.sleep(interval)
            _progress(totals, target)

    cpu0 = time.process_time()
    totals.started = time.perf_counter()
    report = asyncio.create_task(reporter()) if progress else None
    await asyncio.gather(*(user() for _ in range(concurrent)))
    wall = time.perf_counter() - totals.started
    if report is not None:
        report.cancel()
        _progress(totals, target, final=True)
    return totals, wall, time.process_time() - cpu0


def summarize(
    totals: Totals,
    wall: float,
    cpu: float,
    *,
    upstream_ttft_ms: float | None,
    concurrent: int,
) -> dict[str, Any]:
    results = totals.results

    def dist(values: list[float]) -> dict[str, float | None]:
        return {
            f"p{int(q * 100)}_ms": None
            if (v := percentile(values, q)) is None
            else round(v * 1e3, 2)
            for q in (0.5, 0.95, 0.99)
        } | {"max_ms": round(max(values) * 1e3, 2) if values else None}

    first_chunk = [r.first_chunk_s for r in results if r.first_chunk_s is not None]
    summary: dict[str, Any] = {
        "concurrent": concurrent,
        "requests": len(results),
        "ok": sum(1 for r in results if r.ok),
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(results) / wall, 2) if wall else None,
        "chunks": sum(r.chunks for r in results),
        "chunks_per_s": round(sum(r.chunks for r in results) / wall, 1) if wall else None,
        "first_byte": dist([r.first_byte_s for r in results if r.first_byte_s is not None]),
        "first_event": dist([r.first_event_s for r in results if r.first_event_s is not None]),
        "first_chunk": dist(first_chunk),
        "total": dist([r.total_s for r in results if r.total_s is not None and r.done]),
        "lost_chunks": sum(r.lost for r in results),
        "duplicate_chunks": sum(r.duplicates for r in results),
        "missing_done": sum(1 for r in results if not r.done),
        "events_after_done": sum(r.events_after_done for r in results),
        "protocol_violations": sum(r.violations for r in results),
        "errors": dict(Counter(r.error for r in results if r.error)),
        "section_errors": dict(sum((r.section_errors for r in results), Counter())),
        "client_cpu_percent": round(100 * cpu / wall, 1) if wall else None,
    }
    if upstream_ttft_ms is not None:
        ttft = upstream_ttft_ms / 1000
        summary["upstream_ttft_ms"] = upstream_ttft_ms
        summary["first_chunk_overhead"] = dist([v - ttft for v in first_chunk])
    return summary


def _round(value: Any) -> Any:
    return round(value, 1) if isinstance(value, float) else value


def format_summary(s: dict[str, Any]) -> str:
    def row(name: str, d: dict[str, Any]) -> str:
        return (
            f"  {name:<22} p50 {d['p50_ms']!s:>9}  p95 {d['p95_ms']!s:>9}  "
            f"p99 {d['p99_ms']!s:>9}  max {d['max_ms']!s:>9} ms"
        )

    lines = [
        f"requests {s['requests']} ({s['ok']} ok) at --concurrent {s['concurrent']} "
        f"in {s['wall_s']} s: {s['requests_per_s']} req/s, {s['chunks_per_s']} chunks/s",
        row("first byte", s["first_byte"]),
        row("first event", s["first_event"]),
        row("first content chunk", s["first_chunk"]),
    ]
    if "first_chunk_overhead" in s:
        lines.append(row(f"  - TTFT {s['upstream_ttft_ms']:g} ms", s["first_chunk_overhead"]))
    lines += [
        row("total", s["total"]),
        f"  lost chunks {s['lost_chunks']}, duplicates {s['duplicate_chunks']}, "
        f"missing done {s['missing_done']}, events after done {s['events_after_done']}, "
        f"protocol violations {s['protocol_violations']}",
        f"  errors {s['errors'] or 'none'}; section errors {s['section_errors'] or 'none'}",
        f"  client CPU {s['client_cpu_percent']}% of one core",
    ]
    late = (s.get("upstream") or {}).get("chunk_lateness") or {}
    if late:
        lines.append(
            f"  simulator lateness against its schedule: p50 {_round(late.get('p50_ms'))} ms, "
            f"p99 {_round(late.get('p99_ms'))} ms (a starved upstream inflates the overhead above)"
        )
    per_chunk = s.get("cpu_us_per_chunk") or {}
    if per_chunk:
        lines.append(
            "  CPU per chunk, µs: " + ", ".join(f"{k} {v:g}" for k, v in per_chunk.items())
        )
    usage = s.get("cpu_percent_of_one_core") or {}
    if usage:
        lines.append(
            "  CPU, % of one core: "
            + ", ".join(f"{k} {v:g}" for k, v in usage.items() if k != "machine_capacity")
            + (
                f" (machine has {usage['machine_capacity']:g})"
                if "machine_capacity" in usage
                else ""
            )
        )
    return "\n".join(lines)


# -- where the CPU went ------------------------------------------------------------------------
def _cpu_snapshot(spawned: Spawned | None) -> dict[str, float]:
    snapshot = {}
    with contextlib.suppress(OSError, ValueError):
        snapshot["machine_busy"], snapshot["machine_total"] = machine_busy()
        if spawned is not None:
            snapshot["server"] = process_tree_cpu_s(spawned.server.pid)
            snapshot["simulator"] = process_tree_cpu_s(spawned.simulator.pid)
    return snapshot


def _cpu_usage(
    before: dict[str, float], after: dict[str, float], wall: float, client_cpu: float
) -> dict[str, float]:
    """Percent of one core used during the run by each party (and the machine as a whole)."""
    usage = {"client": round(100 * client_cpu / wall, 1)}
    for key in ("server", "simulator"):
        if key in before and key in after:
            usage[key] = round(100 * (after[key] - before[key]) / wall, 1)
    if "machine_busy" in before and "machine_busy" in after:
        usage["machine"] = round(100 * (after["machine_busy"] - before["machine_busy"]) / wall, 1)
        usage["machine_capacity"] = 100.0 * (os.cpu_count() or 1)
        ours = sum(usage.get(k, 0.0) for k in ("client", "server", "simulator"))
        # Anything else running on the machine at the same time (other test runs, say).
        usage["others"] = round(max(0.0, usage["machine"] - ours), 1)
    return usage


# -- --spawn -----------------------------------------------------------------------------------
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before it was ready")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server not healthy at {url} within {timeout:g} s")


@dataclass
class Spawned:
    url: str
    upstream_ttft_ms: float
    simulator: Any
    server: subprocess.Popen[bytes]
    log_path: Path

    def check_alive(self) -> None:
        """Stop the test if the server exited: every later request would only be refused."""
        if self.server.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"server exited with code {self.server.returncode}:\n{tail}")


@contextlib.contextmanager
def spawn(
    *,
    server: str = "backend",
    workers: int = 2,
    threads: int = 32,
    profile: dict[str, Any] | None = None,
    log_level: str = "info",
    asgi_server: str = "auto",
    log_file: Path | None = None,
    upstream_http1: bool = False,
    upstream: str = "simulator",
    upstream_cpu: int | None = None,
    engine_tree: Path | None = None,
) -> Iterator[Spawned]:
    """An upstream with a fixed profile and a server pointed at it; both stopped at the end."""
    profile = {**SPAWN_PROFILE, **(profile or {})}
    port = free_port()
    with (
        _spawn_upstream(upstream, profile, upstream_cpu) as sim,
        tempfile.TemporaryDirectory() as tmp,
    ):
        env = {
            **os.environ,
            **(_engine_tree_env(engine_tree) if engine_tree is not None else {}),
            "OPENAI_BASE_URL": sim.base_url,
            "OPENAI_API_KEY": "sk-loadtest-dummy",
            "BACKEND_AI_UPSTREAM_SIMULATOR": "1",
            # The simulator speaks h2c; --upstream-http1 compares the HTTP/1.1 pool.
            "BACKEND_AI_HTTP_HTTP2": "0" if upstream_http1 else "1",
            "BACKEND_AI_HTTP_HTTP2_PRIOR_KNOWLEDGE": "0" if upstream_http1 else "1",
            "BACKEND_AI_HISTORY_DB": str(Path(tmp) / "history.sqlite3"),
        }
        if server == "backend":
            command = [
                sys.executable,
                "-m",
                "backend_ai.cli",
                "serve",
                f"--port={port}",
                f"--workers={workers}",
                f"--threads={threads}",
                f"--log-level={log_level}",
            ]
            health = f"http://127.0.0.1:{port}/health"
        elif server == "asgi-peer":
            command = [
                sys.executable,
                str(SCRIPTS / "peers" / "asgi_app.py"),
                f"--port={port}",
                f"--workers={workers}",
                f"--log-level={log_level}",
                f"--server={asgi_server}",
            ]
            health = f"http://127.0.0.1:{port}/health"
        else:
            raise ValueError(f"unknown server {server!r}")
        # ``backend-ai serve`` needs gunicorn's info-level "Listening at" line to know it is up,
        # so the server logs at info, into a file (printed if it fails).
        log_path = log_file or Path(tmp) / "server.log"
        log = log_path.open("wb")
        proc = subprocess.Popen(
            command,
            env=env,
            # ``python -m`` puts the working directory first on sys.path, ahead of PYTHONPATH:
            # from elsewhere, --engine-tree's package is the one imported.
            cwd=tmp if engine_tree is not None else None,
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            try:
                _wait_healthy(health, proc, timeout=60.0)
            except RuntimeError:
                print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
                raise
            yield Spawned(
                url=f"http://127.0.0.1:{port}",
                upstream_ttft_ms=float(profile["ttft_ms"]),
                simulator=sim,
                server=proc,
                log_path=log_path,
            )
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            log.close()
            if proc.returncode not in (0, -signal.SIGTERM):
                print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)


@contextlib.contextmanager
def _spawn_upstream(kind: str, profile: dict[str, Any], cpu: int | None) -> Iterator[Any]:
    """The simulator, or the lean paced upstream; either has ``base_url``, ``pid``, ``reset()``
    and ``stats()``."""
    if kind == "paced":
        sys.path.insert(0, str(SCRIPTS))
        from peers.paced_upstream import PacedUpstream

        with PacedUpstream(
            ttft_ms=float(profile["ttft_ms"]),
            itl_ms=float(profile["itl_ms"]),
            tokens=int(profile["tokens"]),
            jitter=float(profile["jitter"]),
            cpu=cpu,
        ) as paced:
            yield paced
        return
    from backend_ai.simulator import SimulatorProcess

    with SimulatorProcess(profile="default", **profile) as sim:
        if cpu is not None:
            os.sched_setaffinity(sim.pid, {cpu})
        yield sim


def _engine_tree_env(tree: Path) -> dict[str, str]:
    """Environment that makes a child Python import ``backend_ai`` from ``tree`` first."""
    tree = tree.resolve()
    if not (tree / "backend_ai" / "__init__.py").is_file():
        raise SystemExit(f"--engine-tree: no backend_ai package in {tree}")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")]))}


def engine_path(tree: Path | None) -> str:
    """Where the spawned server's ``backend_ai`` comes from (recorded with the results)."""
    env = {**os.environ, **(_engine_tree_env(tree) if tree is not None else {})}
    out = subprocess.run(
        [sys.executable, "-c", "import backend_ai; print(backend_ai.__path__[0])"],
        env=env,
        cwd=tempfile.gettempdir() if tree is not None else None,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from ``/proc/stat``."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return (total - idle) / _CLOCK_TICKS, total / _CLOCK_TICKS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the service's base URL")
    parser.add_argument("--route", choices=sorted(ROUTES), default="dream")
    parser.add_argument(
        "--payload", help="JSON object merged over the route's default payload (e.g. sim controls)"
    )
    parser.add_argument("--concurrent", type=int, default=10, help="simultaneous streams")
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--requests", type=int, help="requests in total (default 5 × concurrent)")
    amount.add_argument("--duration", type=float, help="seconds to keep issuing requests")
    parser.add_argument("--timeout", type=float, default=120.0, help="per-request limit, s")
    parser.add_argument("--no-keepalive", action="store_true", help="a new connection per request")
    parser.add_argument(
        "--upstream-ttft-ms",
        type=float,
        help="upstream TTFT, to report first chunk overhead (set by --spawn)",
    )
    parser.add_argument("--spawn", action="store_true", help="start simulator + server, then stop")
    parser.add_argument("--server", choices=("backend", "asgi-peer"), default="backend")
    parser.add_argument("--workers", type=int, default=2, help="--spawn: server worker processes")
    parser.add_argument(
        "--asgi-server",
        choices=("auto", "uvicorn", "hypercorn"),
        default="auto",
        help="--server asgi-peer: which ASGI server (auto: uvicorn if installed)",
    )
    parser.add_argument("--threads", type=int, default=32, help="--spawn: gunicorn threads each")
    parser.add_argument(
        "--sim", help=f"--spawn: JSON simulator profile over {json.dumps(SPAWN_PROFILE)}"
    )
    parser.add_argument(
        "--sweep",
        help="comma-separated --concurrent levels run one after another on the same server "
        "(e.g. 5,10,20,50); prints a table and the capacity",
    )
    parser.add_argument(
        "--capacity-ms",
        type=float,
        default=50.0,
        help="--sweep: p99 first-chunk overhead limit for the capacity (default 50)",
    )
    parser.add_argument("--server-log", type=Path, help="--spawn: keep the server's log here")
    parser.add_argument(
        "--upstream-http1",
        action="store_true",
        help="--spawn: the server's upstream pool speaks HTTP/1.1 instead of HTTP/2",
    )
    parser.add_argument(
        "--upstream",
        choices=("simulator", "paced"),
        default="simulator",
        help="--spawn: the hypercorn simulator, or the lean paced upstream (far less CPU per "
        "chunk, so the server is what is measured)",
    )
    parser.add_argument("--upstream-cpu", type=int, help="--spawn: pin the upstream to this core")
    parser.add_argument(
        "--engine-tree",
        type=Path,
        help="--spawn: run the server on the backend_ai package in this directory (A/B runs)",
    )
    parser.add_argument("--json", type=Path, help="write the summary as JSON here")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    args = parser.parse_args(argv)
    if args.concurrent < 1:
        parser.error("--concurrent must be at least 1")

    path, payload = ROUTES[args.route]
    payload = dict(payload)
    if args.payload:
        payload.update(json.loads(args.payload))
    requests = args.requests
    if requests is None and args.duration is None:
        requests = 5 * args.concurrent

    levels = [int(v) for v in args.sweep.split(",")] if args.sweep else [args.concurrent]
    summaries = []
    with contextlib.ExitStack() as stack:
        url, ttft = args.url, args.upstream_ttft_ms
        spawned: Spawned | None = None
        if args.spawn:
            spawned = stack.enter_context(
                spawn(
                    server=args.server,
                    workers=args.workers,
                    threads=args.threads,
                    profile=json.loads(args.sim) if args.sim else None,
                    asgi_server=args.asgi_server,
                    log_file=args.server_log,
                    upstream_http1=args.upstream_http1,
                    upstream=args.upstream,
                    upstream_cpu=args.upstream_cpu,
                    engine_tree=args.engine_tree,
                )
            )
            url, ttft = spawned.url, spawned.upstream_ttft_ms
            print(f"# spawned {args.server} at {url}", file=sys.stderr)
        for concurrent in levels:
            if spawned is not None:
                spawned.check_alive()
                spawned.simulator.reset()
            per_level = requests
            if args.sweep and args.requests is None and args.duration is None:
                per_level = 5 * concurrent
            cpu_before = _cpu_snapshot(spawned)
            totals, wall, cpu = asyncio.run(
                run_load(
                    url,
                    path,
                    payload,
                    concurrent=concurrent,
                    requests=per_level,
                    duration=args.duration,
                    timeout=args.timeout,
                    keepalive=not args.no_keepalive,
                    progress=not args.quiet,
                )
            )
            summary = summarize(totals, wall, cpu, upstream_ttft_ms=ttft, concurrent=concurrent)
            if spawned is not None:
                summary["server_alive"] = spawned.server.poll() is None
            usage = _cpu_usage(cpu_before, _cpu_snapshot(spawned), wall, cpu)
            summary["cpu_percent_of_one_core"] = usage
            if summary["chunks"]:
                # CPU per delivered chunk: unlike latency, barely moved by other load on the box.
                summary["cpu_us_per_chunk"] = {
                    party: round(usage[party] / 100 * wall * 1e6 / summary["chunks"], 1)
                    for party in ("server", "simulator", "client")
                    if party in usage
                }
            summary.update(route=args.route, url=url, server=args.server if args.spawn else None)
            if spawned is not None:
                upstream = spawned.simulator.stats(records=False)
                upstream.pop("disconnects", None)
                summary["upstream"] = upstream
                summary["upstream_profile"] = {**SPAWN_PROFILE, **json.loads(args.sim or "{}")}
                summary["server_settings"] = {"workers": args.workers, "threads": args.threads}
                summary["upstream_kind"] = args.upstream
                summary["upstream_cpu"] = args.upstream_cpu
                if args.server == "backend":
                    summary["engine_path"] = engine_path(args.engine_tree)
            print(format_summary(summary), flush=True)
            summaries.append(summary)
    result: dict[str, Any] = summaries[0] if not args.sweep else {"levels": summaries}
    if args.sweep:
        result["capacity"] = capacity(summaries, args.capacity_ms)
        print(format_sweep(summaries, args.capacity_ms))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    broken = any(
        s["lost_chunks"]
        or s["duplicate_chunks"]
        or s["missing_done"]
        or s["events_after_done"]
        or s["protocol_violations"]
        for s in summaries
    )
    return 1 if broken else 0


def capacity(summaries: list[dict[str, Any]], limit_ms: float) -> int | None:
    """The highest level whose p99 first-chunk overhead stayed under ``limit_ms``, lossless."""
    best = None
    for s in summaries:
        p99 = (s.get("first_chunk_overhead") or {}).get("p99_ms")
        clean = not (s["lost_chunks"] or s["duplicate_chunks"] or s["missing_done"])
        if p99 is not None and p99 < limit_ms and clean:
            best = max(best or 0, s["concurrent"])
    return best


def format_sweep(summaries: list[dict[str, Any]], limit_ms: float) -> str:
    lines = [
        "",
        "| concurrent | req/s | chunks/s | first byte p99 ms "
        "| first chunk − TTFT p50 / p95 / p99 ms | lost / dup / no done "
        "| CPU % of a core: server / simulator / client / others | server CPU µs/chunk "
        "| simulator lateness p50 / p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        o = s.get("first_chunk_overhead") or {}
        u = s.get("cpu_percent_of_one_core") or {}
        # How late the simulator itself sent tokens against its schedule (CPU starved).
        late = (s.get("upstream") or {}).get("chunk_lateness") or {}
        lines.append(
            f"| {s['concurrent']} | {s['requests_per_s']} | {s['chunks_per_s']} "
            f"| {s['first_byte']['p99_ms']} | {o.get('p50_ms')} / {o.get('p95_ms')} / "
            f"{o.get('p99_ms')} | {s['lost_chunks']} / {s['duplicate_chunks']} / "
            f"{s['missing_done']} | {u.get('server')} / {u.get('simulator')} / "
            f"{u.get('client')} / {u.get('others')} "
            f"| {(s.get('cpu_us_per_chunk') or {}).get('server')} "
            f"| {_round(late.get('p50_ms'))} / {_round(late.get('p99_ms'))} |"
        )
    lines.append(
        f"\ncapacity (p99 first-chunk overhead < {limit_ms:g} ms, no loss): "
        f"{capacity(summaries, limit_ms)}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
